"""What a rating request must hold, with the error codes the API documents.

On its own: each option at most once, a known option, a rating from 1 to 5, comments of at
most ``MAX_COMMENT`` characters. Against its experiment: exactly the options that were
generated, each with its own image when the request names one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from gateway.domain.arms import OPTIONS
from shared.errors import InvalidInput
from shared.wire.gateway import OptionRating

MAX_COMMENT = 2000
MIN_RATING, MAX_RATING = 1, 5


class GivenRating(NamedTuple):
    rating: int
    comments: str  # stripped
    image_id: int | None  # the image the trainer rated, when the request says


def check_ratings(ratings: Sequence[OptionRating]) -> dict[str, GivenRating]:
    """The request's ratings by option. Raises ``InvalidInput`` (``unknown_option``,
    ``duplicate_option``, ``rating_out_of_range``, ``comment_too_long``)."""
    given: dict[str, GivenRating] = {}
    for r in ratings:
        if r.option not in OPTIONS:
            raise InvalidInput(
                f"unknown option {r.option!r}; options are {' and '.join(OPTIONS)}",
                code="unknown_option",
                details={"option": r.option},
            )
        if r.option in given:
            raise InvalidInput(f"option {r.option} is rated twice", code="duplicate_option")
        if not MIN_RATING <= r.rating <= MAX_RATING:
            raise InvalidInput(
                f"rating must be an integer from {MIN_RATING} to {MAX_RATING}",
                code="rating_out_of_range",
                details={"option": r.option, "rating": r.rating},
            )
        if len(r.comments) > MAX_COMMENT:
            raise InvalidInput(
                f"comments may be at most {MAX_COMMENT} characters",
                code="comment_too_long",
                details={"option": r.option, "length": len(r.comments)},
            )
        given[r.option] = GivenRating(r.rating, r.comments.strip(), r.image_id)
    return given


def check_against(given: Mapping[str, GivenRating], generated: Mapping[str, int]) -> None:
    """Every option ``generated`` for the experiment (option -> its image id) is rated, and
    nothing else. Raises ``InvalidInput`` (``unknown_option``, ``missing_option``,
    ``image_mismatch``)."""
    for option in given:
        if option not in generated:
            raise InvalidInput(
                f"option {option} was not generated for this experiment",
                code="unknown_option",
                details={"option": option, "generated": sorted(generated)},
            )
    missing = sorted(set(generated) - set(given))
    if missing:
        raise InvalidInput(
            "every generated option must be rated in one request",
            code="missing_option",
            details={"missing": missing},
        )
    for option, rated in given.items():
        if rated.image_id is not None and rated.image_id != generated[option]:
            raise InvalidInput(
                f"image {rated.image_id} is not option {option} of this experiment",
                code="image_mismatch",
                details={"option": option, "image_id": rated.image_id},
            )
