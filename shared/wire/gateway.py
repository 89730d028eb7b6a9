"""The gateway's JSON request bodies (``../shared/API.md``, "Gateway")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

# The options a trainer rates (the gateway reads its list of options from here).
Option = Literal["A", "B"]


class OptionRating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # not ``Option``: the option, the rating's range and the comment's length are checked by the
    # gateway's rules, which answer with their own error codes (unknown_option, ...)
    option: str
    image_id: StrictInt | None = None
    rating: StrictInt
    comments: str = ""


class RateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment_id: str = Field(min_length=1, max_length=64)
    ratings: list[OptionRating] = Field(min_length=1, max_length=10)
