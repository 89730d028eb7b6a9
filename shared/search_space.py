"""The search space: per API, each parameter's name, type and bounds, read from a JSON file.

Adding a parameter or an API is an edit of the file (default: ``search_space.json`` beside this
module; the ML service's ``SEARCH_SPACE_FILE`` setting points elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator

DEFAULT_SEARCH_SPACE_FILE = Path(__file__).with_name("search_space.json")


class Parameter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: Literal["float", "int"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds_ordered(self) -> Parameter:
        if not self.low < self.high:
            raise ValueError(f"{self.name}: low must be below high")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError(f"{self.name}: integer bounds must be whole numbers")
        return self


class SearchSpace(RootModel[dict[str, list[Parameter]]]):
    """``{api: [Parameter, ...]}``."""

    @model_validator(mode="after")
    def _names_unique(self) -> SearchSpace:
        for api, params in self.root.items():
            names = [p.name for p in params]
            if not params or len(set(names)) != len(names):
                raise ValueError(f"{api}: parameters must be a non-empty list of unique names")
        return self

    @property
    def apis(self) -> list[str]:
        return list(self.root)

    def parameters(self, api: str) -> list[Parameter]:
        return self.root[api]

    def to_json(self) -> dict[str, list[dict[str, object]]]:
        return {
            api: [
                {
                    "name": p.name,
                    "type": p.type,
                    "bounds": [int(p.low), int(p.high)] if p.type == "int" else [p.low, p.high],
                }
                for p in params
            ]
            for api, params in self.root.items()
        }


def load_search_space(path: Path | None = None) -> SearchSpace:
    source = path or DEFAULT_SEARCH_SPACE_FILE
    return SearchSpace.model_validate(json.loads(source.read_text()))
