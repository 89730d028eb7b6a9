"""The A/B decision between two prompt versions: means, the winner, and how sure we are.

The new version wins only if its mean rating is strictly higher (a tie keeps the old one).
``p_new_better`` is the posterior probability that the new version's true mean rating is higher:
each arm's mean has a Student-t posterior around its sample mean, with the variance pooled over
both arms and shrunk towards one rating point squared (a weak prior worth two ratings, so that
three identical ratings do not read as certainty).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PRIOR_VARIANCE = 1.0
PRIOR_WEIGHT = 2.0


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
