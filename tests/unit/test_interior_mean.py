"""The GP's prior mean falls towards the bounds, and gives way when the data say otherwise."""

from __future__ import annotations

import torch

from ml_service.optimizer.gp import InteriorMean, fit_model, posterior_best

BOUNDS = torch.tensor([[0.0, 10.0], [1.0, 30.0]], dtype=torch.float64)


def grid() -> torch.Tensor:
    a, b = torch.meshgrid(
        torch.linspace(0, 1, 21, dtype=torch.float64),
        torch.linspace(10, 30, 21, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=-1)


def rising(unit: torch.Tensor) -> torch.Tensor:
    """Ratings that rise steadily with the first parameter: a 5 only above 0.875 of its range."""
    return torch.clamp(torch.round(1 + 4 * unit[..., :1]), 1, 5)


def peaked(unit: torch.Tensor) -> torch.Tensor:
    """Ratings that peak mid-range of the first parameter: 5 within about 0.18 of the middle."""
    return torch.clamp(torch.round(5 - 16 * (unit[..., :1] - 0.5) ** 2), 1, 5)


def test_interior_mean_is_highest_mid_range_and_falls_per_parameter() -> None:
    mean = InteriorMean(2)
    mean._set_curvature(torch.tensor([4.0, 0.0], dtype=torch.float64))
    x = torch.tensor([[0.5, 0.5], [0.0, 0.5], [1.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    values = mean(x).detach()
    assert values[0] == mean.constant.detach()[0]
    assert torch.allclose(values[1:3], values[0] - 1.0)  # 4 * 0.5^2 below the middle
    assert torch.allclose(values[3], values[0])  # no curvature along the second parameter


def test_fitted_model_uses_it_and_still_finds_an_optimum_at_a_bound() -> None:
    # A space-filling design: among 30 uniform random points one seed in 100 had no 5 at all.
    unit = torch.quasirandom.SobolEngine(2, scramble=True, seed=3).draw(32, dtype=torch.float64)
    x = BOUNDS[0] + unit * (BOUNDS[1] - BOUNDS[0])
    at_grid = (grid() - BOUNDS[0]) / (BOUNDS[1] - BOUNDS[0])
    fitted = fit_model(x, rising(unit), BOUNDS)
    assert isinstance(fitted.model.mean_module, InteriorMean)
    index, _, _ = posterior_best(fitted, grid())
    assert rising(at_grid[index]) == 5  # a top-rated setting: near the upper bound only

    # A peak in the middle of the first parameter: the fit finds curvature there, more than on
    # the rising data, whose trend the prior gives way to.
    peaked_fit = fit_model(x, peaked(unit), BOUNDS)
    curvature = peaked_fit.model.mean_module.curvature.detach()
    assert curvature[0] > fitted.model.mean_module.curvature.detach()[0]
    index, _, _ = posterior_best(peaked_fit, grid())
    assert peaked(at_grid[index]) == 5
