"""The names the HTTP contract fixes: the two image APIs the optimizer learns about (its arms),
the two options a trainer rates, and which API each option shows in mode ``ab``.

The search space (``shared/search_space.json``) lists the parameters of each of these APIs; a
unit test keeps the two in step.
"""

from __future__ import annotations

from typing import Literal, get_args

from shared.wire.gateway import Option

ApiName = Literal["leonardo", "stable_diffusion"]

APIS: tuple[ApiName, ...] = get_args(ApiName)
OPTIONS: tuple[Option, ...] = get_args(Option)
# In mode ``ab`` option A is always the Leonardo arm and option B the Stable Diffusion arm.
AB_ARMS: tuple[tuple[Option, ApiName], ...] = (("A", "leonardo"), ("B", "stable_diffusion"))
