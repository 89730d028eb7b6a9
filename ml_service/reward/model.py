"""The reward model, a PyTorch ensemble rating a candidate 1-5 (long: one format, fit and use).

The encoder, the batched ensemble weights, training, held-out evaluation and the stored format
share private tensors and change together (a saved model must load in the code that made it).

Inputs per candidate (``1 x d``): the image features standardized with the training split's mean
and std, each API's parameters scaled to [0, 1] by the search-space bounds (the other APIs'
columns are zeros) and a one-hot of the API. ``members`` MLPs are trained at once as batched
weight tensors (Adam is element-wise, so this is the same as training them one by one), each
from its own seed and on its own bootstrap resample of the training *groups*. The loss is the
MSE on absolute ratings plus ``pairwise_weight`` x a Bradley-Terry (logistic) loss on the pairs
inside a group whose ratings differ: the two options of one upload share the original image, so
their difference is the cleanest signal there is. The ensemble mean is the prediction and the
spread between members is the uncertainty.

Everything here is synchronous CPU work that leaves the torch thread count to the caller.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from shared.search_space import SearchSpace

FORMAT = 1
RATING_LOW, RATING_HIGH = 1.0, 5.0
PROGRESS_EVERY = 10
MAX_ACROSS_GROUP_PAIRS = 5000
ENUMERATED_PAIRS_LIMIT = 2_000_000
MIN_SAMPLES = 10
DTYPE = torch.float32

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Candidate:
    """What the model scores: an image's feature vector (length F), its API and parameters."""

    features: np.ndarray
    api: str
    parameters: Mapping[str, float | int]


@dataclass(frozen=True)
class Sample(Candidate):
    """A rated candidate; ``group`` is the experiment id the two options of one upload share."""

    rating: float
    group: str


@dataclass(frozen=True)
class Prediction:
    rating: float  # ensemble mean, clipped to 1..5
    uncertainty: float  # std over the ensemble members


@dataclass(frozen=True)
class Metrics:
    """Held-out quality; ``None`` when the held-out split had nothing to measure."""

    n_train: int
    n_test: int
    pairwise_accuracy: float | None
    mae: float | None
    pairs_tested: int


@dataclass(frozen=True)
class TrainConfig:
    members: int = 5
    hidden: int = 64
    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pairwise_weight: float = 1.0
    test_fraction: float = 0.2
    seed: int = 0
    min_pair_gap: float = 1.0
    use_features: bool = True  # False: the parameters-only baseline (features read as zeros)

    def __post_init__(self) -> None:
        if min(self.members, self.hidden, self.epochs) < 1:
            raise ValueError("members, hidden and epochs must be at least 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError("test_fraction must be in [0, 1)")
        if self.min_pair_gap <= 0:
            raise ValueError("min_pair_gap must be positive")


@dataclass(frozen=True)
class _Encoder:
    """Dicts and arrays -> the model's input matrix (``n x d``)."""

    n_features: int
    apis: list[str]
    parameters: list[tuple[str, str, float, float]]  # (api, name, low, high)
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    use_features: bool

    def raw_features(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        rows = []
        for c in candidates:
            f = np.asarray(c.features, dtype=np.float32).reshape(-1)
            if f.shape[0] != self.n_features:
                raise ValueError(f"expected {self.n_features} image features, got {f.shape[0]}")
            if not np.all(np.isfinite(f)):
                raise ValueError("image features must be finite")
            rows.append(f)
        return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, self.n_features)

    def encode(self, candidates: Sequence[Candidate]) -> torch.Tensor:
        features = (self.raw_features(candidates) - self.feature_mean) / self.feature_std
        if not self.use_features:
            features = torch.zeros_like(features)
        params = torch.zeros(len(candidates), len(self.parameters) + len(self.apis), dtype=DTYPE)
        for row, c in enumerate(candidates):
            if c.api not in self.apis:
                raise ValueError(f"unknown API {c.api!r}; expected one of {self.apis}")
            for col, (api, name, low, high) in enumerate(self.parameters):
                if api != c.api:
                    continue
                if name not in c.parameters:
                    raise ValueError(f"{c.api}: missing parameter {name!r}")
                value = float(c.parameters[name])
                if not math.isfinite(value):
                    raise ValueError(f"{c.api}: parameter {name!r} must be finite")
                params[row, col] = (value - low) / (high - low)
            params[row, len(self.parameters) + self.apis.index(c.api)] = 1.0
        return torch.cat([features, params], dim=1)


def _init_weights(members: int, n_in: int, hidden: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-member ``torch.nn.Linear``-style init, member ``m`` from seed ``(seed, m)``."""
    shapes = [(n_in, hidden), (hidden, hidden), (hidden, 1)]
    weights: dict[str, list[torch.Tensor]] = {}
    for m in range(members):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + m)
        for layer, (fan_in, fan_out) in enumerate(shapes):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound
            b = (torch.rand(1, fan_out, generator=gen) * 2 - 1) * bound
            weights.setdefault(f"w{layer}", []).append(w)
            weights.setdefault(f"b{layer}", []).append(b)
    return {k: torch.stack(v) for k, v in weights.items()}


def _forward(weights: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``n x d`` inputs -> ``members x n`` ratings."""
    h = functional.silu(x @ weights["w0"] + weights["b0"])
    h = functional.silu(h @ weights["w1"] + weights["b1"])
    return (h @ weights["w2"] + weights["b2"]).squeeze(-1)


def _predict(
    encoder: _Encoder, weights: Mapping[str, torch.Tensor], candidates: Sequence[Candidate]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ensemble mean (clipped to 1..5) and std, each of length n."""
    with torch.no_grad():
        out = _forward(weights, encoder.encode(candidates))
    return out.mean(dim=0).clamp(RATING_LOW, RATING_HIGH), out.std(dim=0, correction=0)


class RewardModel:
    """A trained ensemble with its input encoding; ``to_bytes``/``from_bytes`` round-trip it."""

    def __init__(
        self,
        encoder: _Encoder,
        weights: dict[str, torch.Tensor],
        metrics: Metrics,
        n_samples: int,
        config: TrainConfig,
        trained_at: str,
    ) -> None:
        self._encoder = encoder
        self._weights = {k: v.detach().clone() for k, v in weights.items()}
        self.metrics = metrics
        self.n_samples = n_samples
        self.config = config
        self.trained_at = trained_at
        self.version = "rm-" + hashlib.sha256(self._payload(with_time=False)).hexdigest()[:12]

    @property
    def n_features(self) -> int:
        return self._encoder.n_features

    @property
    def apis(self) -> list[str]:
        return list(self._encoder.apis)

    def predict(self, samples: Sequence[Candidate]) -> list[Prediction]:
        """Ensemble mean (clipped to 1..5) and std for each candidate."""
        if not samples:
            return []
        mean, std = _predict(self._encoder, self._weights, samples)
        return [Prediction(float(m), float(s)) for m, s in zip(mean, std, strict=True)]

    def to_bytes(self) -> bytes:
        return self._payload(with_time=True)

    def _payload(self, *, with_time: bool) -> bytes:
        enc = self._encoder
        meta: dict[str, Any] = {
            "format": FORMAT,
            "n_features": enc.n_features,
            "apis": list(enc.apis),
            "parameters": [list(p) for p in enc.parameters],
            "use_features": enc.use_features,
            "metrics": asdict(self.metrics),
            "n_samples": self.n_samples,
            "config": asdict(self.config),
        }
        if with_time:
            meta |= {"version": self.version, "trained_at": self.trained_at}
        state = {
            "meta": meta,
            "weights": self._weights,
            "feature_mean": enc.feature_mean,
            "feature_std": enc.feature_std,
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> RewardModel:
        try:
            state = torch.load(io.BytesIO(data), weights_only=True)
            meta = state["meta"]
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, TypeError) as e:
            raise ValueError(f"not a reward model: {e}") from e
        if meta.get("format") != FORMAT:
            raise ValueError(f"unsupported reward model format {meta.get('format')!r}")
        encoder = _Encoder(
            n_features=meta["n_features"],
            apis=list(meta["apis"]),
            parameters=[(a, n, float(lo), float(hi)) for a, n, lo, hi in meta["parameters"]],
            feature_mean=state["feature_mean"],
            feature_std=state["feature_std"],
            use_features=meta["use_features"],
        )
        model = cls(
            encoder,
            dict(state["weights"]),
            Metrics(**meta["metrics"]),
            meta["n_samples"],
            TrainConfig(**meta["config"]),
            meta["trained_at"],
        )
        if model.version != meta["version"]:
            raise ValueError("reward model bytes do not match their version")
        return model


def _check(samples: Sequence[Sample], space: SearchSpace) -> None:
    if len(samples) < MIN_SAMPLES:
        raise ValueError(f"need at least {MIN_SAMPLES} rated samples, got {len(samples)}")
    sizes: dict[str, int] = {}
    for s in samples:
        sizes[s.group] = sizes.get(s.group, 0) + 1
        if not math.isfinite(s.rating):
            raise ValueError(f"rating must be finite, got {s.rating!r}")
    if max(sizes.values()) < 2:
        raise ValueError("need at least one group (experiment) with two rated options")


def _split_groups(groups: list[str], test_fraction: float, seed: int) -> set[str]:
    """The held-out groups: a seeded shuffle of the distinct groups, ``test_fraction`` of them."""
    distinct = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_test = min(round(test_fraction * len(distinct)), len(distinct) - 1)
    return {distinct[i] for i in order[:n_test]}


def _within_group_pairs(ratings: np.ndarray, groups: list[str]) -> np.ndarray:
    """``p x 2`` index pairs (better, worse) inside each group whose ratings differ."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    pairs = [
        (i, j) if ratings[i] > ratings[j] else (j, i)
        for idx in members.values()
        for a, i in enumerate(idx)
        for j in idx[a + 1 :]
        if ratings[i] != ratings[j]
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _evaluation_pairs(ratings: np.ndarray, groups: list[str], gap: float, seed: int) -> np.ndarray:
    """Held-out pairs whose ratings differ by >= ``gap``: all within groups, and across groups
    all of them or a seeded sample of ``MAX_ACROSS_GROUP_PAIRS``."""
    within = _within_group_pairs(ratings, groups)
    within = within[np.abs(ratings[within[:, 0]] - ratings[within[:, 1]]) >= gap]
    n = len(ratings)
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= ENUMERATED_PAIRS_LIMIT:
        i, j = np.triu_indices(n, k=1)
    else:  # too many to list: draw candidates, far more than the cap, without duplicates
        drawn = np.unique(rng.integers(0, n, size=(20 * MAX_ACROSS_GROUP_PAIRS, 2)), axis=0)
        i, j = drawn[drawn[:, 0] < drawn[:, 1]].T
    group_ids = np.unique(np.array(groups), return_inverse=True)[1]
    keep = (group_ids[i] != group_ids[j]) & (np.abs(ratings[i] - ratings[j]) >= gap)
    across = np.stack([i[keep], j[keep]], axis=1)
    if len(across) > MAX_ACROSS_GROUP_PAIRS:
        across = across[np.sort(rng.choice(len(across), MAX_ACROSS_GROUP_PAIRS, replace=False))]
    return np.concatenate([within, across])


def _fit(
    x: torch.Tensor,
    y: torch.Tensor,
    groups: list[str],
    config: TrainConfig,
    progress: Progress | None,
) -> dict[str, torch.Tensor]:
    """Full-batch Adam on all members at once; returns the ``members x ...`` weight tensors."""
    index = {g: i for i, g in enumerate(sorted(set(groups)))}
    group_ids = torch.tensor([index[g] for g in groups])
    rng = np.random.default_rng(config.seed + 1)
    # A bootstrap over groups as per-group counts: a group drawn twice weighs twice.
    draws = rng.integers(0, len(index), size=(config.members, len(index)))
    counts = torch.stack([torch.bincount(torch.from_numpy(d), minlength=len(index)) for d in draws])
    sample_w = counts[:, group_ids].to(DTYPE)  # members x n
    pairs = torch.from_numpy(_within_group_pairs(y.numpy(), groups))
    pair_w = sample_w[:, pairs[:, 0]] if len(pairs) else torch.zeros(config.members, 0)

    weights = _init_weights(config.members, x.shape[1], config.hidden, config.seed)
    with torch.no_grad():  # start every member at the mean rating
        weights["b2"] += y.mean()
    params = [w.requires_grad_() for w in weights.values()]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    for epoch in range(1, config.epochs + 1):
        optimizer.zero_grad()
        out = _forward(weights, x)
        mse = (sample_w * (out - y) ** 2).sum(dim=1) / sample_w.sum(dim=1)
        loss = mse
        if len(pairs):
            diff = out[:, pairs[:, 0]] - out[:, pairs[:, 1]]
            bt = (pair_w * functional.softplus(-diff)).sum(dim=1) / pair_w.sum(dim=1).clamp(min=1)
            loss = mse + config.pairwise_weight * bt
        total = loss.sum()
        total.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if progress is not None and (epoch % PROGRESS_EVERY == 0 or epoch == config.epochs):
            progress(epoch, config.epochs, float(loss.detach().mean()))
    return {k: w.detach() for k, w in weights.items()}


def _evaluate(
    encoder: _Encoder,
    weights: Mapping[str, torch.Tensor],
    test: Sequence[Sample],
    n_train: int,
    config: TrainConfig,
) -> Metrics:
    if not test:
        return Metrics(n_train, 0, None, None, 0)
    ratings = np.array([s.rating for s in test], dtype=np.float64)
    predicted = _predict(encoder, weights, test)[0].double().numpy()
    pairs = _evaluation_pairs(ratings, [s.group for s in test], config.min_pair_gap, config.seed)
    accuracy = None
    if len(pairs):
        true_sign = np.sign(ratings[pairs[:, 0]] - ratings[pairs[:, 1]])
        pred_diff = predicted[pairs[:, 0]] - predicted[pairs[:, 1]]
        # A predicted tie is half right.
        accuracy = float(np.mean(np.where(pred_diff == 0, 0.5, np.sign(pred_diff) == true_sign)))
    mae = float(np.mean(np.abs(predicted - ratings)))
    return Metrics(n_train, len(test), accuracy, mae, len(pairs))


def train(
    samples: Sequence[Sample],
    space: SearchSpace,
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
) -> RewardModel:
    """Train an ensemble on a group-wise split of ``samples`` and report held-out metrics.

    Args:
        samples: rated candidates; the APIs are those of ``space``, F is taken from the data.
        space: the search space whose bounds scale the parameters to [0, 1].
        config: hyperparameters, split and seed; the same seed gives the same model.
        progress: called as ``progress(epoch, epochs, loss)`` every ``PROGRESS_EVERY`` epochs.

    Raises:
        ValueError: fewer than ``MIN_SAMPLES`` samples, no group with two options, unknown API,
            a missing parameter, non-finite values or feature vectors of different lengths.
    """
    _check(samples, space)
    held_out = _split_groups([s.group for s in samples], config.test_fraction, config.seed)
    train_set = [s for s in samples if s.group not in held_out]
    test_set = [s for s in samples if s.group in held_out]

    parameters = [(api, p.name, p.low, p.high) for api in space.apis for p in space.parameters(api)]
    n_features = int(np.asarray(samples[0].features).size)
    unscaled = _Encoder(
        n_features, space.apis, parameters, torch.zeros(n_features), torch.ones(n_features), True
    )
    raw = unscaled.raw_features(train_set)
    std = raw.std(dim=0, correction=0)
    encoder = replace(
        unscaled,
        feature_mean=raw.mean(dim=0),
        feature_std=torch.where(std > 1e-8, std, torch.ones_like(std)),
        use_features=config.use_features,
    )
    x = encoder.encode(train_set)
    y = torch.tensor([s.rating for s in train_set], dtype=DTYPE)
    weights = _fit(x, y, [s.group for s in train_set], config, progress)
    metrics = _evaluate(encoder, weights, test_set, len(train_set), config)
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    return RewardModel(encoder, weights, metrics, len(samples), config, trained_at)


def train_parameters_only(
    samples: Sequence[Sample],
    space: SearchSpace,
    config: TrainConfig = TrainConfig(),
    progress: Progress | None = None,
) -> RewardModel:
    """The baseline that ignores the image: ``train`` with ``use_features=False``."""
    return train(samples, space, replace(config, use_features=False), progress)
