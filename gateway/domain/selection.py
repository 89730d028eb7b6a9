"""Active learning (phase 2): which two of the rendered candidates a trainer is shown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar

Selection = Literal["best_and_uncertain", "top2"]


class Scored(Protocol):
    """A candidate as the selection sees it: whether it rendered, and what the reward model
    predicted for it (None when it could not score it)."""

    @property
    def rendered(self) -> bool: ...

    @property
    def predicted(self) -> float | None: ...

    @property
    def uncertainty(self) -> float | None: ...


C = TypeVar("C", bound=Scored)


def choose_two(candidates: Sequence[C], selection: Selection) -> list[C]:
    """Option A: the predicted best. Option B: the most informative (highest uncertainty) of
    the rest, or the second best with ``selection == "top2"``. Failed renders are never shown.

    Unscored candidates count as predicted 0 and uncertainty 0; among equals the earlier one
    wins. Returns one candidate when only one rendered, none when none did.
    """
    ok = [c for c in candidates if c.rendered]
    ranked = sorted(ok, key=lambda c: -(c.predicted if c.predicted is not None else 0.0))
    if not ranked:
        return []
    best, rest = ranked[0], ranked[1:]
    if not rest:
        return [best]
    if selection == "top2":
        return [best, rest[0]]
    return [best, max(rest, key=lambda c: c.uncertainty or 0.0)]
