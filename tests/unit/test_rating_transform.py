"""The GP sees normal scores of the ratings; its predictions come back in rating units."""

from __future__ import annotations

import pytest
import torch

from ml_service.optimizer.gp import normal_scores, to_rating


def ratings(*values: int) -> torch.Tensor:
    return torch.tensor([[float(v)] for v in values], dtype=torch.float64)


def test_normal_scores_follow_rank_with_ties_sharing_their_average() -> None:
    scores = normal_scores(ratings(1, 1, 1, 2, 5)).squeeze(-1)
    assert scores.shape == (5,)
    assert scores[0] == scores[1] == scores[2] < scores[3] < scores[4]
    # one 5 among four lower ratings stands out by its rank, not by the three-star gap
    assert float(scores[4]) == pytest.approx(float(torch.special.ndtri(torch.tensor(0.9))))
    assert float(normal_scores(ratings(3, 3, 3)).abs().max()) == 0.0


def test_scores_map_back_to_the_ratings_seen_and_clamp_beyond_them() -> None:
    y = ratings(1, 1, 2, 4, 5)
    scores = normal_scores(y).squeeze(-1)
    for score, rating in zip(scores.tolist(), y.squeeze(-1).tolist(), strict=True):
        assert to_rating(y, score) == pytest.approx(rating)
    halfway = (scores[2] + scores[3]).item() / 2
    assert 2.0 < to_rating(y, halfway) < 4.0
    assert to_rating(y, 10.0) == 5.0 and to_rating(y, -10.0) == 1.0
