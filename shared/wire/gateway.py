"""The gateway's JSON request bodies (``../shared/API.md``, "Gateway")."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Option = Literal["A", "B"]


class OptionRating(BaseModel):
    model_config = ConfigDict(extra="forbid")

    option: str
    image_id: StrictInt | None = None
    # range and length are checked by the flow, which answers with its own error codes
    rating: StrictInt
    comments: str = ""


class RateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment_id: str = Field(min_length=1, max_length=64)
    ratings: list[OptionRating] = Field(min_length=1, max_length=10)
