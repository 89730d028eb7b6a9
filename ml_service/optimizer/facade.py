"""The facade over the tensor core: parameters as dicts, observations in, suggestions out.

(Just over 300 lines: one class, the model cache and every question asked of it.)

Fitted models are a per-process cache keyed by the data they were fitted on; a refit starts
from the previous hyperparameters. Everything here is synchronous CPU work: callers run it in a
worker thread so the event loop keeps answering.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ml_service.optimizer import gp as core
from shared.search_space import SearchSpace


@dataclass(frozen=True)
class ApiSpace:
    names: list[str]
    bounds: torch.Tensor  # 2 x d
    integer_dims: list[int]

    @classmethod
    def of(cls, space: SearchSpace, api: str) -> ApiSpace:
        params = space.parameters(api)
        bounds = torch.tensor([[p.low for p in params], [p.high for p in params]], dtype=core.DTYPE)
        ints = [i for i, p in enumerate(params) if p.type == "int"]
        return cls([p.name for p in params], bounds, ints)

    def to_tensor(self, rows: Sequence[dict[str, Any]]) -> torch.Tensor:
        return torch.tensor([[float(r[n]) for n in self.names] for r in rows], dtype=core.DTYPE)

    def to_parameters(self, x: torch.Tensor) -> dict[str, float | int]:
        out: dict[str, float | int] = {}
        for i, name in enumerate(self.names):
            value = float(x[i].item())
            out[name] = round(value) if i in self.integer_dims else round(value, 4)
        return out


@dataclass(frozen=True)
class Proposal:
    parameters: dict[str, float | int]
    strategy: str
    fit_seconds: float = 0.0
    acquisition_seconds: float = 0.0


@dataclass(frozen=True)
class Best:
    parameters: dict[str, float | int] | None
    predicted_rating: float | None
    uncertainty: float | None
    source: str
    importance: dict[str, float] | None = None


# gpytorch/botorch keep settings (e.g. ``lazily_evaluate_kernels``), warning filters and the
# torch RNG in process-wide state that their context managers save and restore; two threads
# doing GP work at once interleave those and can leave a setting wrong for good (acquisition
# at 1,000 points became 20-30x slower). All GP work in the process runs under this lock.
_GP_LOCK = threading.Lock()


def _seed(study: str, api: str, salt: int = 0) -> int:
    digest = hashlib.sha256(f"{study}:{api}:{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class BayesianOptimizer:
    """Suggests parameters per (study, api) and remembers fitted GPs between calls."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        n_initial: int = 5,
        acquisition: core.AcquisitionConfig | None = None,
    ) -> None:
        self.space = space
        self.n_initial = n_initial
        self.acquisition = acquisition or core.AcquisitionConfig()
        self._spaces = {api: ApiSpace.of(space, api) for api in space.apis}
        self._models: dict[tuple[str, str], tuple[tuple[Any, ...], core.FittedModel]] = {}
        self._hyper: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def api_space(self, api: str) -> ApiSpace:
        return self._spaces[api]

    def forget(self, study: str) -> None:
        with self._lock:
            for key in [k for k in self._models if k[0] == study]:
                del self._models[key]
            for key in [k for k in self._hyper if k[0] == study]:
                del self._hyper[key]

    def model_state(self) -> dict[str, int]:
        with self._lock:
            return {f"{s}/{a}": key[0] for (s, a), (key, _) in self._models.items()}

    def _is_cached(
        self, study: str, api: str, observations: Sequence[tuple[dict[str, Any], int]]
    ) -> bool:
        with self._lock:
            cached = self._models.get((study, api))
        return bool(cached and cached[0] == (len(observations), repr(observations[-1])))

    def _fitted(
        self, study: str, api: str, observations: Sequence[tuple[dict[str, Any], int]]
    ) -> core.FittedModel:
        space = self._spaces[api]
        data_key = (len(observations), repr(observations[-1]))
        with self._lock:
            cached = self._models.get((study, api))
            warm = self._hyper.get((study, api))
        if cached and cached[0] == data_key:
            return cached[1]
        train_x = space.to_tensor([p for p, _ in observations])
        train_y = torch.tensor([[float(r)] for _, r in observations], dtype=core.DTYPE)
        fitted = core.fit_model(train_x, train_y, space.bounds, warm)
        with self._lock:
            self._models[(study, api)] = (data_key, fitted)
            self._hyper[(study, api)] = fitted.hyperparameters
        return fitted

    def propose(
        self,
        study: str,
        api: str,
        observations: Sequence[tuple[dict[str, Any], int]],
        pending: Sequence[dict[str, Any]],
        sequence_index: int,
    ) -> Proposal:
        """The next parameters for ``api``: Sobol first, then GP + log-EI given ``pending``."""
        space = self._spaces[api]
        explore = core.round_integers(
            core.sobol_point(space.bounds, sequence_index, _seed(study, api)),
            space.integer_dims,
            space.bounds,
        )
        if len(observations) < self.n_initial:
            return Proposal(space.to_parameters(explore), "sobol")
        if not self.uses_gp(observations):
            return Proposal(space.to_parameters(explore), "explore")
        pending_x = space.to_tensor(pending) if pending else None
        with _GP_LOCK:
            cached_before = self._is_cached(study, api, observations)
            fitted = self._fitted(study, api, observations)
            x, seconds = core.propose(
                fitted,
                space.bounds,
                space.integer_dims,
                pending_x,
                self.acquisition,
                seed=_seed(study, api, sequence_index),
            )
        fit_seconds = 0.0 if cached_before else fitted.fit_seconds
        if core.too_close(x, pending_x, space.bounds):
            # Distinct parameters for concurrent trainers even when EI has one sharp peak.
            return Proposal(space.to_parameters(explore), "explore", fit_seconds, seconds)
        return Proposal(space.to_parameters(x), "gp", fit_seconds, seconds)

    def uses_gp(self, observations: Sequence[tuple[dict[str, Any], int]]) -> bool:
        """Whether suggestions come from the GP: past the Sobol start, and the ratings differ
        (while they are all equal the GP has nothing to learn)."""
        ratings = torch.tensor([float(r) for _, r in observations], dtype=core.DTYPE)
        return len(observations) >= self.n_initial and not core.is_flat(ratings)

    def explore(self, study: str, api: str, sequence_index: int) -> dict[str, float | int]:
        """The Sobol point of ``sequence_index``: where a suggestion goes when the model's
        would repeat a pending one."""
        space = self._spaces[api]
        x = core.sobol_point(space.bounds, sequence_index, _seed(study, api))
        return space.to_parameters(core.round_integers(x, space.integer_dims, space.bounds))

    def repeats(
        self, api: str, parameters: dict[str, Any], others: Sequence[dict[str, Any]]
    ) -> bool:
        """Whether ``parameters`` repeat one of ``others`` (in the unit cube, 1e-3)."""
        if not others:
            return False
        space = self._spaces[api]
        return core.too_close(
            space.to_tensor([parameters])[0], space.to_tensor(others), space.bounds
        )

    def propose_batch(
        self,
        study: str,
        api: str,
        observations: Sequence[tuple[dict[str, Any], int]],
        pending: Sequence[dict[str, Any]],
        sequence_index: int,
        k: int,
        *,
        thompson: bool = False,
    ) -> list[Proposal]:
        """``k`` distinct proposals for ``k`` callers at once (indices ``sequence_index`` on):
        the first as ``propose`` gives it, the others by Thompson sampling from the same fitted
        model, each apart from ``pending`` and from each other (Sobol points make up any
        shortfall). ``thompson``: the first too (parallel Thompson sampling, without the
        acquisition optimisation: what a crowd of waiting callers gets, at a tenth of the
        cost)."""
        space = self._spaces[api]
        modelled = self.uses_gp(observations)
        out: list[Proposal] = []
        if not (thompson and modelled):
            out.append(self.propose(study, api, observations, pending, sequence_index))
            modelled = out[0].strategy not in ("sobol", "explore")
        chosen = [*pending, *(p.parameters for p in out)]
        if k > len(out) and modelled:
            with _GP_LOCK:
                cached_before = self._is_cached(study, api, observations)
                fitted = self._fitted(study, api, observations)
                started = time.perf_counter()
                points = core.thompson_batch(
                    fitted,
                    space.bounds,
                    space.integer_dims,
                    k - len(out),
                    space.to_tensor(chosen) if chosen else None,
                    seed=_seed(study, api, sequence_index),
                )
                seconds = time.perf_counter() - started
            fit_seconds = 0.0 if cached_before or out else fitted.fit_seconds
            out += [
                Proposal(space.to_parameters(x), "gp", fit_seconds if i == 0 else 0.0, seconds)
                for i, x in enumerate(points)
            ]
        index = sequence_index + 1
        while len(out) < k:
            parameters = self.explore(study, api, index)
            if not self.repeats(api, parameters, [*chosen, *(p.parameters for p in out)]):
                strategy = "sobol" if len(observations) < self.n_initial else "explore"
                out.append(Proposal(parameters, strategy))
            index += 1
        return out

    def propose_with_best(
        self,
        study: str,
        api: str,
        observations: Sequence[tuple[dict[str, Any], int]],
        pending: Sequence[dict[str, Any]],
        sequence_index: int,
        k: int,
        thompson: bool = False,
    ) -> tuple[list[Proposal], Best | None]:
        """``propose_batch`` and, when it fitted a model, ``best`` from that model (None before:
        a fit only for ``best`` would also change the warm start of the fits that follow)."""
        proposals = self.propose_batch(
            study, api, observations, pending, sequence_index, k, thompson=thompson
        )
        fitted = self._is_cached(study, api, observations) if observations else False
        return proposals, self.best(study, api, observations) if fitted else None

    def best(
        self, study: str, api: str, observations: Sequence[tuple[dict[str, Any], int]]
    ) -> Best:
        """Among the parameters tried, the one with the highest posterior mean rating."""
        if not observations:
            return Best(None, None, None, "none")
        if not needs_model(observations):
            return observed_best(observations)
        space = self._spaces[api]
        with _GP_LOCK:
            fitted = self._fitted(study, api, observations)
            index, mean, sd = core.posterior_best(fitted, fitted.train_x)
            weights = core.importance(fitted)
        return Best(
            space.to_parameters(fitted.train_x[index]),
            round(mean, 3),
            round(sd, 3),
            "model",
            dict(zip(space.names, weights, strict=True)),
        )


def data_key(observations: Sequence[tuple[dict[str, Any], int]]) -> tuple[int, str]:
    """What a fitted model is valid for: the count and the latest observation."""
    return len(observations), repr(observations[-1]) if observations else ""


def needs_model(observations: Sequence[tuple[dict[str, Any], int]]) -> bool:
    """Whether ``best`` fits a GP for these observations (else it reads them directly)."""
    return len(observations) >= 2 and len({r for _, r in observations}) > 1


def observed_best(observations: Sequence[tuple[dict[str, Any], int]]) -> Best:
    """The tried parameters with the highest mean rating (the latest among ties)."""
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for params, rating in observations:
        key = repr(sorted(params.items()))
        groups.setdefault(key, (params, []))[1].append(rating)
        groups[key] = groups.pop(key)  # keep insertion order = most recent last
    best_params, best_ratings = max(
        reversed(list(groups.values())), key=lambda g: sum(g[1]) / len(g[1])
    )
    return Best(
        dict(best_params), round(sum(best_ratings) / len(best_ratings), 3), None, "observed"
    )
