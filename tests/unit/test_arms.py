"""The API names and options have one source, and it agrees with the search space."""

from __future__ import annotations

from gateway.domain.arms import AB_ARMS, APIS, OPTIONS
from shared.search_space import load_search_space


def test_the_search_space_has_parameters_for_exactly_the_contracts_apis() -> None:
    assert sorted(load_search_space().apis) == sorted(APIS) == ["leonardo", "stable_diffusion"]


def test_in_ab_mode_option_a_is_leonardo_and_option_b_stable_diffusion() -> None:
    assert dict(AB_ARMS) == {"A": "leonardo", "B": "stable_diffusion"}
    assert tuple(option for option, _ in AB_ARMS) == OPTIONS == ("A", "B")
