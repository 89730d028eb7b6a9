"""A simulated trainer who rates images from their parameters, for optimizer benchmarks.

Per API, the true (noise-free) rating is a smooth function over the API's search space: a floor
plus Gaussian bumps in the unit-normalised cube, one main bump whose centre lies strictly inside
the bounds and one lower decoy bump, so that a greedy search can settle on the wrong hill. The
APIs peak at different heights (about 4.0 and 4.6) so an optimizer that mixes them up shows.
A rating is the true value plus N(0, 0.5) noise, rounded and clipped to 1..5, like a person's
star rating. Everything random comes from the caller's ``numpy`` generator: same seed, same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy.optimize import minimize  # type: ignore[import-untyped]

from shared.search_space import Parameter, load_search_space

FLOOR = 1.2
NOISE_SD = 0.5
Params = dict[str, float | int]


@dataclass(frozen=True)
class Bump:
    height: float  # above the floor
    centre: dict[str, float]  # unit-cube coordinate per parameter
    width: dict[str, float]  # standard deviation per parameter, in unit-cube units


# Centres sit at plausible settings (e.g. guidance 7.5, 38 steps) and away from every bound, so
# the true optimum is an interior point that rounding the integer parameter cannot move. Widths
# differ per parameter: some settings matter more than others.
_BUMPS: dict[str, tuple[Bump, ...]] = {
    "leonardo": (
        Bump(
            2.8,
            {"init_strength": 0.50, "guidance_scale": 0.375, "controlnet_weight": 0.60},
            {"init_strength": 0.18, "guidance_scale": 0.25, "controlnet_weight": 0.22},
        ),
        Bump(
            1.3,
            {"init_strength": 0.15, "guidance_scale": 0.85, "controlnet_weight": 0.20},
            {"init_strength": 0.15, "guidance_scale": 0.15, "controlnet_weight": 0.15},
        ),
    ),
    "stable_diffusion": (
        Bump(
            3.4,
            {
                "prompt_strength": 0.40,
                "guidance_scale": 0.50,
                "num_inference_steps": 0.45,  # 38 steps
                "controlnet_conditioning_scale": 0.40,
            },
            {
                "prompt_strength": 0.20,
                "guidance_scale": 0.22,
                "num_inference_steps": 0.30,
                "controlnet_conditioning_scale": 0.20,
            },
        ),
        Bump(
            1.5,
            {
                "prompt_strength": 0.80,
                "guidance_scale": 0.20,
                "num_inference_steps": 0.85,
                "controlnet_conditioning_scale": 0.90,
            },
            {
                "prompt_strength": 0.15,
                "guidance_scale": 0.15,
                "num_inference_steps": 0.20,
                "controlnet_conditioning_scale": 0.15,
            },
        ),
    ),
}


@cache
def _parameters(api: str) -> tuple[Parameter, ...]:
    return tuple(load_search_space().parameters(api))


def apis() -> list[str]:
    return list(_BUMPS)


def _unit(api: str, params: Params) -> np.ndarray:
    return np.array([(float(params[p.name]) - p.low) / (p.high - p.low) for p in _parameters(api)])


def _from_unit(api: str, unit: np.ndarray) -> Params:
    out: Params = {}
    for p, u in zip(_parameters(api), np.clip(unit, 0.0, 1.0), strict=True):
        value = p.low + float(u) * (p.high - p.low)
        out[p.name] = round(value) if p.type == "int" else value
    return out


def _value_unit(api: str, unit: np.ndarray) -> float:
    names = [p.name for p in _parameters(api)]
    total = FLOOR
    for bump in _BUMPS[api]:
        centre = np.array([bump.centre[n] for n in names])
        width = np.array([bump.width[n] for n in names])
        total += bump.height * float(np.exp(-0.5 * np.sum(((unit - centre) / width) ** 2)))
    return total


def true_value(api: str, params: Params) -> float:
    """The noise-free rating of ``params`` (integers are rounded, as the service sends them)."""
    return _value_unit(api, _unit(api, _from_unit(api, _unit(api, params))))


def rate(api: str, params: Params, rng: np.random.Generator) -> int:
    """A star rating: true value + N(0, ``NOISE_SD``), rounded and clipped to 1..5."""
    noisy = true_value(api, params) + rng.normal(0.0, NOISE_SD)
    return int(np.clip(np.rint(noisy), 1, 5))


def random_parameters(api: str, rng: np.random.Generator) -> Params:
    """A uniform random point of ``api``'s space (integer parameters rounded)."""
    return _from_unit(api, rng.uniform(0.0, 1.0, size=len(_parameters(api))))


@cache
def true_optimum(api: str) -> tuple[Params, float]:
    """The best feasible parameters and their true value, found numerically.

    Dense random search first (the decoy bump must not trap the local step), then L-BFGS-B over
    the float parameters from the best few starts, with each integer parameter held at its
    rounded value and its neighbours; rounding makes the objective flat in those directions.
    """
    params = _parameters(api)
    int_dims = [i for i, p in enumerate(params) if p.type == "int"]
    float_dims = [i for i, p in enumerate(params) if p.type == "float"]
    steps = np.array([1.0 / (p.high - p.low) for p in params])
    rng = np.random.default_rng(12345)
    starts = rng.uniform(0.0, 1.0, size=(20_000, len(params)))
    values = np.array([_value_unit(api, _snap(api, u)) for u in starts])
    best_unit, best_value = starts[0], -np.inf
    for start in starts[np.argsort(values)[-8:]]:
        for shift in (-1, 0, 1):
            fixed = _snap(api, start)
            fixed[int_dims] = np.clip(fixed[int_dims] + shift * steps[int_dims], 0.0, 1.0)

            def negative(x: np.ndarray, fixed: np.ndarray = fixed) -> float:
                unit = fixed.copy()
                unit[float_dims] = x
                return -_value_unit(api, unit)

            result = minimize(
                negative,
                fixed[float_dims],
                method="L-BFGS-B",
                bounds=[(0.0, 1.0)] * len(float_dims),
            )
            if -result.fun > best_value:
                best_value = float(-result.fun)
                best_unit = fixed.copy()
                best_unit[float_dims] = result.x
    best = _from_unit(api, best_unit)
    return best, true_value(api, best)


def _snap(api: str, unit: np.ndarray) -> np.ndarray:
    """``unit`` with its integer parameters moved to the nearest whole value."""
    return _unit(api, _from_unit(api, unit))
