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

from scipy.stats import t as student_t

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
    return float(student_t.cdf((mean_new - mean_old) / scale, dof))


def decide(old: Sequence[int], new: Sequence[int]) -> Decision:
    mean_old, mean_new = statistics.fmean(old), statistics.fmean(new)
    return Decision(
        old_mean=round(mean_old, 4),
        new_mean=round(mean_new, 4),
        winner="new" if mean_new > mean_old else "old",
        p_new_better=round(p_new_better(old, new), 4),
    )
