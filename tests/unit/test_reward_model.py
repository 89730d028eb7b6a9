"""The reward model on synthetic ratings driven by a few image-feature columns."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from ml_service.reward.model import (
    Candidate,
    Metrics,
    RewardModel,
    Sample,
    TrainConfig,
    _evaluation_pairs,
    _split_groups,
    train,
    train_parameters_only,
)
from shared.search_space import SearchSpace, load_search_space

N_FEATURES = 12
FAST = TrainConfig(members=3, hidden=32, epochs=120, lr=1e-2, seed=3)


def synthetic_samples(space: SearchSpace, n_groups: int, seed: int = 0) -> list[Sample]:
    """Two options per upload: a shared base image plus per-option variation; the rating is a
    latent quality from features 0-2 (and a little from one parameter) plus noise."""
    rng = np.random.default_rng(seed)
    samples = []
    for g in range(n_groups):
        base = rng.normal(size=N_FEATURES)
        api = space.apis[g % len(space.apis)]
        for _ in range(2):
            features = (base + rng.normal(scale=0.8, size=N_FEATURES)).astype(np.float32)
            parameters = {p.name: float(rng.uniform(p.low, p.high)) for p in space.parameters(api)}
            guidance = next(p for p in space.parameters(api) if p.name == "guidance_scale")
            g_norm = (parameters["guidance_scale"] - guidance.low) / (guidance.high - guidance.low)
            quality = 0.9 * features[0] - 0.7 * features[1] + 0.5 * features[2] + 0.4 * g_norm
            rating = float(np.clip(np.round(3 + quality + rng.normal(scale=0.25)), 1, 5))
            samples.append(Sample(features, api, parameters, rating, f"exp-{seed}-{g}"))
    return samples


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return load_search_space()


@pytest.fixture(scope="module")
def samples(space: SearchSpace) -> list[Sample]:
    return synthetic_samples(space, n_groups=200)


@pytest.fixture(scope="module")
def model(samples: list[Sample], space: SearchSpace) -> RewardModel:
    return train(samples, space, FAST)


def test_held_out_pairs_are_ranked_well_and_better_than_from_parameters_alone(
    model: RewardModel, samples: list[Sample], space: SearchSpace
) -> None:
    baseline = train_parameters_only(samples, space, FAST)
    assert model.metrics.pairs_tested > 100
    assert model.metrics.pairwise_accuracy is not None
    assert baseline.metrics.pairwise_accuracy is not None
    assert model.metrics.pairwise_accuracy > 0.8
    assert model.metrics.pairwise_accuracy > baseline.metrics.pairwise_accuracy + 0.1
    assert model.metrics.mae is not None and model.metrics.mae < 0.8
    assert model.metrics.n_train + model.metrics.n_test == model.n_samples == len(samples)


def test_predictions_stay_within_the_rating_scale(model: RewardModel, space: SearchSpace) -> None:
    extreme = [replace(s, features=s.features * 50) for s in synthetic_samples(space, 20, seed=9)]
    ratings = [p.rating for p in model.predict(extreme)]
    assert all(1.0 <= r <= 5.0 for r in ratings)
    assert min(ratings) == 1.0 and max(ratings) == 5.0  # the clip is what held them


def test_uncertainty_is_larger_far_outside_the_training_data(
    model: RewardModel, space: SearchSpace
) -> None:
    inside = synthetic_samples(space, 50, seed=11)
    outside = [replace(s, features=s.features * 8 + 20) for s in inside]
    spread_inside = np.mean([p.uncertainty for p in model.predict(inside)])
    spread_outside = np.mean([p.uncertainty for p in model.predict(outside)])
    assert spread_outside > 3 * spread_inside


def test_bytes_round_trip_to_identical_predictions_and_load_without_pickled_code(
    model: RewardModel, space: SearchSpace
) -> None:
    data = model.to_bytes()
    torch.load(io.BytesIO(data), weights_only=True)  # raises on anything but tensors/primitives
    loaded = RewardModel.from_bytes(data)
    candidates = synthetic_samples(space, 30, seed=5)
    assert loaded.predict(candidates) == model.predict(candidates)
    assert (loaded.version, loaded.metrics, loaded.n_samples) == (
        model.version,
        model.metrics,
        model.n_samples,
    )


def test_a_candidate_without_a_rating_is_scored(model: RewardModel, samples: list[Sample]) -> None:
    s = samples[0]
    [prediction] = model.predict([Candidate(s.features, s.api, dict(s.parameters))])
    assert prediction == model.predict([s])[0]


def test_the_two_options_of_an_upload_never_straddle_the_split(
    samples: list[Sample], space: SearchSpace
) -> None:
    groups = [s.group for s in samples]
    held_out = _split_groups(groups, 0.2, seed=FAST.seed)
    train_groups = {g for g in groups if g not in held_out}
    assert held_out and train_groups and not held_out & train_groups
    assert len(held_out) == 40
    assert _split_groups(groups, 0.2, seed=FAST.seed + 1) != held_out  # the seed picks them


@pytest.mark.parametrize("n", [400, 2500])  # pairs listed in full / drawn at random
def test_held_out_pairs_are_all_within_group_ones_and_a_capped_set_across_groups(n: int) -> None:
    rng = np.random.default_rng(0)
    ratings = rng.integers(1, 6, size=n).astype(np.float64)
    groups = [f"g{i // 2}" for i in range(n)]
    pairs = _evaluation_pairs(ratings, groups, gap=1.0, seed=0)
    same_group = np.array([groups[i] == groups[j] for i, j in pairs])
    expected_within = sum(abs(ratings[i] - ratings[i + 1]) >= 1 for i in range(0, n, 2))
    assert same_group.sum() == expected_within
    assert (~same_group).sum() == 5000
    assert np.all(np.abs(ratings[pairs[:, 0]] - ratings[pairs[:, 1]]) >= 1)
    assert len({(int(i), int(j)) for i, j in pairs}) == len(pairs)
    assert np.array_equal(pairs, _evaluation_pairs(ratings, groups, gap=1.0, seed=0))


def test_bytes_that_are_not_a_model_are_refused() -> None:
    with pytest.raises(ValueError, match="not a reward model"):
        RewardModel.from_bytes(b"not a model")


def test_the_same_seed_gives_the_same_model_and_another_seed_does_not(
    model: RewardModel, samples: list[Sample], space: SearchSpace
) -> None:
    again = train(samples, space, FAST)
    other = train(samples, space, replace(FAST, seed=FAST.seed + 1))
    assert again.version == model.version
    assert again.predict(samples[:20]) == model.predict(samples[:20])
    assert other.version != model.version


def test_progress_is_reported_every_ten_epochs_with_a_falling_loss(
    samples: list[Sample], space: SearchSpace
) -> None:
    calls: list[tuple[int, int, float]] = []
    train(samples[:100], space, replace(FAST, epochs=45), progress=lambda *a: calls.append(a))
    assert [(e, n) for e, n, _ in calls] == [(10, 45), (20, 45), (30, 45), (40, 45), (45, 45)]
    assert calls[-1][2] < calls[0][2]


def test_without_a_held_out_split_the_metrics_are_empty(
    samples: list[Sample], space: SearchSpace
) -> None:
    model = train(samples[:40], space, replace(FAST, test_fraction=0.0, epochs=10))
    assert model.metrics == Metrics(40, 0, None, None, 0)


def test_too_few_samples_are_refused(samples: list[Sample], space: SearchSpace) -> None:
    with pytest.raises(ValueError, match="at least 10 rated samples"):
        train(samples[:9], space, FAST)


def test_samples_without_a_group_of_two_are_refused(
    samples: list[Sample], space: SearchSpace
) -> None:
    singletons = [replace(s, group=f"solo-{i}") for i, s in enumerate(samples[:30])]
    with pytest.raises(ValueError, match=r"one group \(experiment\) with two rated options"):
        train(singletons, space, FAST)


def test_inconsistent_inputs_are_refused_with_the_reason(
    model: RewardModel, samples: list[Sample], space: SearchSpace
) -> None:
    s = samples[0]
    with pytest.raises(ValueError, match="expected 12 image features, got 5"):
        model.predict([replace(s, features=s.features[:5])])
    with pytest.raises(ValueError, match="unknown API 'midjourney'"):
        model.predict([replace(s, api="midjourney")])
    with pytest.raises(ValueError, match="missing parameter 'guidance_scale'"):
        params = {k: v for k, v in s.parameters.items() if k != "guidance_scale"}
        model.predict([replace(s, parameters=params)])
    mixed = [*samples[:20], replace(samples[20], features=np.zeros(3, dtype=np.float32))]
    with pytest.raises(ValueError, match="image features"):
        train(mixed, space, FAST)
