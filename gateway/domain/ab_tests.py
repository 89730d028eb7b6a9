"""A/B tests of two prompt versions: which version a slot renders with, when a test is
complete, the decision (means, the winner, how sure we are) and whether the new version is
promoted.

Slot k of a test is the k-th upload after the new version was created: odd slots render with
the old version, even slots with the new one. A test is complete once as many slot experiments
are rated as were planned. The new version wins, and is promoted, only if its mean rating over
every rated option is strictly higher (a tie keeps the old one); otherwise it is rejected.
``p_new_better`` is the posterior probability that the new version's true mean rating is higher:
each arm's mean has a Student-t posterior around its sample mean, with the variance pooled over
both arms and shrunk towards one rating point squared (a weak prior worth two ratings, so that
three identical ratings do not read as certainty).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

PRIOR_VARIANCE = 1.0
PRIOR_WEIGHT = 2.0

Arm = Literal["old", "new"]


def arm_of(slot: int) -> Arm:
    """The version slot ``slot`` (from 1) renders with."""
    return "old" if slot % 2 == 1 else "new"


@dataclass(frozen=True)
class Decision:
    old_mean: float
    new_mean: float
    winner: Literal["old", "new"]
    p_new_better: float


def p_new_better(old: Sequence[int], new: Sequence[int]) -> float:
    """P(mean rating of new > mean rating of old | the ratings), each arm needing one rating."""
    if not old or not new:
        raise ValueError("both arms need at least one rating")
    mean_old, mean_new = statistics.fmean(old), statistics.fmean(new)
    squares = sum((x - mean_old) ** 2 for x in old) + sum((x - mean_new) ** 2 for x in new)
    dof = len(old) + len(new) - 2 + PRIOR_WEIGHT
    variance = (squares + PRIOR_VARIANCE * PRIOR_WEIGHT) / dof
    scale = math.sqrt(variance / len(old) + variance / len(new))
    return student_t_cdf((mean_new - mean_old) / scale, dof)


def student_t_cdf(x: float, dof: float) -> float:
    """P(T <= x) for Student's t with ``dof`` degrees of freedom (dof > 0).

    Written out (the regularized incomplete beta function, by Lentz's continued fraction) so the
    gateway's Lambda package does without scipy; tests compare it with scipy's.
    """
    if dof <= 0:
        raise ValueError("dof must be positive")
    tail = 0.5 * _incomplete_beta(dof / 2.0, 0.5, dof / (dof + x * x))
    return 1.0 - tail if x > 0 else tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return result


def decide(old: Sequence[int], new: Sequence[int]) -> Decision:
    mean_old, mean_new = statistics.fmean(old), statistics.fmean(new)
    return Decision(
        old_mean=round(mean_old, 4),
        new_mean=round(mean_new, 4),
        winner="new" if mean_new > mean_old else "old",
        p_new_better=round(p_new_better(old, new), 4),
    )


@dataclass(frozen=True)
class Verdict:
    """A complete test's outcome: the decision, the rated experiments of each arm, and whether
    the new version is promoted (else it is rejected)."""

    decision: Decision
    old_samples: int
    new_samples: int
    promote: bool


def judge(ratings: Mapping[Arm, Mapping[str, Sequence[int]]], planned: int) -> Verdict | None:
    """Decide a test once ``planned`` of its slot experiments are rated; None before that.

    Args:
        ratings: For each arm, the rated slot experiments: experiment id -> its options'
            ratings.
        planned: The test's number of slots.
    """
    old, new = ratings.get("old", {}), ratings.get("new", {})
    if len(old) + len(new) < planned:
        return None
    decision = decide(
        [x for options in old.values() for x in options],
        [x for options in new.values() for x in options],
    )
    return Verdict(decision, len(old), len(new), promote=decision.winner == "new")
