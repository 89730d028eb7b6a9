"""Which two candidates a trainer sees in phase 2: the predicted best, then the most uncertain."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain.selection import choose_two


@dataclass(frozen=True)
class Cand:
    name: str
    predicted: float | None
    uncertainty: float | None
    rendered: bool = True


def names(shown: list[Cand]) -> list[str]:
    return [c.name for c in shown]


CANDIDATES = [
    Cand("fair", 3.5, 0.2),
    Cand("best", 4.4, 0.1),
    Cand("second", 4.1, 0.3),
    Cand("unsure", 2.9, 0.9),
    Cand("failed", 5.0, 1.5, rendered=False),
]


def test_a_is_the_predicted_best_and_b_the_most_uncertain_of_the_rest() -> None:
    assert names(choose_two(CANDIDATES, "best_and_uncertain")) == ["best", "unsure"]


def test_top2_shows_the_two_best_predictions() -> None:
    assert names(choose_two(CANDIDATES, "top2")) == ["best", "second"]


def test_a_failed_render_is_never_shown_however_good_its_prediction() -> None:
    for selection in ("best_and_uncertain", "top2"):
        assert "failed" not in names(choose_two(CANDIDATES, selection))


def test_one_rendered_candidate_is_shown_alone_and_none_gives_nothing() -> None:
    lone = [Cand("only", 2.0, 0.5), Cand("broken", 4.0, 0.5, rendered=False)]
    assert names(choose_two(lone, "best_and_uncertain")) == ["only"]
    assert choose_two([Cand("broken", 4.0, 0.5, rendered=False)], "top2") == []


def test_unscored_candidates_keep_their_order_behind_scored_ones() -> None:
    unscored = [Cand("first", None, None), Cand("second", None, None), Cand("third", None, None)]
    assert names(choose_two(unscored, "top2")) == ["first", "second"]
    assert names(choose_two(unscored, "best_and_uncertain")) == ["first", "second"]
    mixed = [Cand("unscored", None, None), Cand("scored", 1.5, 0.2)]
    assert names(choose_two(mixed, "top2")) == ["scored", "unscored"]
