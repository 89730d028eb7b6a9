"""The rules of a rating request and of the training schedule, without a database."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.domain.ratings import MAX_COMMENT, GivenRating, check_against, check_ratings
from gateway.domain.schedule import (
    current_best_rating,
    evolution_due,
    phase_1_complete,
    reward_retrain_due,
)
from shared.errors import InvalidInput
from shared.wire.gateway import OptionRating


def rating(
    option: str, stars: int = 4, comments: str = "", image_id: int | None = None
) -> OptionRating:
    return OptionRating(option=option, rating=stars, comments=comments, image_id=image_id)


def refused(call: Callable[..., object], *args: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)
    return caught.value


def test_valid_ratings_come_back_by_option_with_comments_stripped() -> None:
    given = check_ratings([rating("A", 5, "  too dark \n", 12), rating("B", 1)])
    assert given == {"A": GivenRating(5, "too dark", 12), "B": GivenRating(1, "", None)}


@pytest.mark.parametrize("option", ["C", "a", ""])
def test_an_option_other_than_a_or_b_is_unknown(option: str) -> None:
    error = refused(check_ratings, [rating(option)])
    assert error.code == "unknown_option" and error.details == {"option": option}


def test_an_option_rated_twice_is_refused() -> None:
    assert refused(check_ratings, [rating("A"), rating("A", 3)]).code == "duplicate_option"


@pytest.mark.parametrize("stars", [0, 6, -1])
def test_ratings_outside_one_to_five_are_refused(stars: int) -> None:
    error = refused(check_ratings, [rating("B", stars)])
    assert error.code == "rating_out_of_range"
    assert error.details == {"option": "B", "rating": stars}


def test_one_and_five_are_the_bounds_of_a_rating() -> None:
    assert [g.rating for g in check_ratings([rating("A", 1), rating("B", 5)]).values()] == [1, 5]


def test_comments_may_be_as_long_as_the_limit_and_no_longer() -> None:
    assert check_ratings([rating("A", comments="x" * MAX_COMMENT)])["A"].comments
    error = refused(check_ratings, [rating("A", comments="x" * (MAX_COMMENT + 1))])
    assert error.code == "comment_too_long"
    assert error.details == {"option": "A", "length": MAX_COMMENT + 1}


def test_every_generated_option_and_nothing_else_must_be_rated() -> None:
    both = check_ratings([rating("A", image_id=7), rating("B")])
    check_against(both, {"A": 7, "B": 8})  # B names no image: any is fine
    only_a = check_ratings([rating("A")])
    error = refused(check_against, only_a, {"A": 7, "B": 8})
    assert error.code == "missing_option" and error.details == {"missing": ["B"]}
    error = refused(check_against, both, {"A": 7})  # an upload where B failed to render
    assert error.code == "unknown_option"
    assert error.details == {"option": "B", "generated": ["A"]}


def test_a_rating_naming_another_options_image_is_refused() -> None:
    given = check_ratings([rating("A", image_id=8), rating("B", image_id=8)])
    error = refused(check_against, given, {"A": 7, "B": 8})
    assert error.code == "image_mismatch" and error.details == {"option": "A", "image_id": 8}


def test_phase_1_ends_at_its_target_sample() -> None:
    assert not phase_1_complete(49, 50)
    assert phase_1_complete(50, 50) and phase_1_complete(51, 50)


def test_the_reward_model_is_retrained_at_the_end_of_phase_1_and_every_n_after() -> None:
    due = [n for n in range(1, 131) if reward_retrain_due(n, 50, 25)]
    assert due == [50, 75, 100, 125]


def test_every_nth_sample_opens_an_evolution_round() -> None:
    assert [n for n in range(1, 31) if evolution_due(n, 10)] == [10, 20, 30]


def test_the_current_best_rating_is_the_best_apis_mean_to_three_decimals() -> None:
    assert current_best_rating({}) is None
    assert current_best_rating({"leonardo": 3.5, "stable_diffusion": 4.12345}) == 4.123
