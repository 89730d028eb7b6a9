"""What happens at which sample number, and what "current" means for the best rating.

Samples are numbered from 1 as they are rated. Phase 1 (one option per API) ends at the
``phase_1_target``-th sample; from then on the reward model is retrained at that sample and
every ``reward_retrain_every`` samples after it. Every ``evolution_every``-th sample opens a
prompt-evolution round.
"""

from __future__ import annotations

from collections.abc import Mapping

# "Current best rating": the higher of the APIs' mean ratings over their last 10 samples, so it
# moves with what the system produces now.
CURRENT_WINDOW = 10


def phase_1_complete(samples: int, phase_1_target: int) -> bool:
    return samples >= phase_1_target


def evolution_due(sample: int, every: int) -> bool:
    return sample % every == 0


def reward_retrain_due(sample: int, phase_1_target: int, every: int) -> bool:
    return phase_1_complete(sample, phase_1_target) and (sample - phase_1_target) % every == 0


def current_best_rating(api_means: Mapping[str, float]) -> float | None:
    """The best of the APIs' means over their last ``CURRENT_WINDOW`` samples (3 decimals);
    None before any rating."""
    return round(max(api_means.values()), 3) if api_means else None
