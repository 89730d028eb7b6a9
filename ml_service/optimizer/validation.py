"""Observations and requests checked against the search space in use."""

from __future__ import annotations

from ml_service.errors import InvalidInput
from shared.search_space import SearchSpace
from shared.wire.ml import ObservationIn


def check_api(space: SearchSpace, api: str) -> None:
    if api not in space.apis:
        raise InvalidInput(
            f"unknown api {api!r}",
            code="unknown_api",
            details={"api": api, "known": space.apis},
        )


def check_observation(space: SearchSpace, obs: ObservationIn) -> None:
    """Raise ``InvalidInput`` naming the first thing wrong with ``obs``."""
    where = {"observation_id": obs.observation_id}
    check_api(space, obs.api)
    if not 1 <= obs.rating <= 5:
        raise InvalidInput(
            "rating must be an integer from 1 to 5",
            code="rating_out_of_range",
            details={**where, "rating": obs.rating},
        )
    params = space.parameters(obs.api)
    names = {p.name for p in params}
    unknown = sorted(set(obs.parameters) - names)
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s) for {obs.api}: {', '.join(unknown)}",
            code="unknown_parameter",
            details={**where, "unknown": unknown},
        )
    missing = sorted(names - set(obs.parameters))
    if missing:
        raise InvalidInput(
            f"missing parameter(s) for {obs.api}: {', '.join(missing)}",
            code="missing_parameter",
            details={**where, "missing": missing},
        )
    for p in params:
        value = obs.parameters[p.name]
        if p.type == "int" and float(value) != int(value):
            raise InvalidInput(
                f"{p.name} must be an integer",
                code="parameter_not_integer",
                details={**where, "parameter": p.name, "value": value},
            )
        if not p.low <= float(value) <= p.high:
            raise InvalidInput(
                f"{p.name}={value} is outside [{p.low}, {p.high}]",
                code="parameter_out_of_bounds",
                details={**where, "parameter": p.name, "value": value, "bounds": [p.low, p.high]},
            )
