"""What the upload flows need: their collaborators and the active-learning policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.adapters.ml_client import MLClient
from gateway.domain.limits import NO_LIMITS, RenderLimits
from gateway.domain.selection import Selection
from gateway.flows.unit_of_work import UnitOfWorkFactory
from gateway.providers.base import ImageProvider
from shared.search_space import SearchSpace
from shared.storage import ObjectStore


@dataclass(frozen=True)
class ActivePolicy:
    """Active learning (phase 2): how many candidates, the cost guard, what to show."""

    candidates: int = 10
    max_paid: int = 2
    concurrency: int = 2
    selection: Selection = "best_and_uncertain"
    phase_1_target: int = 50


@dataclass(frozen=True)
class TrainingDeps:
    uows: UnitOfWorkFactory
    store: ObjectStore
    ml: MLClient
    providers: Mapping[str, ImageProvider]  # by api
    space: SearchSpace
    uploads_bucket: str
    enhanced_bucket: str
    max_bytes: int
    max_pixels: int
    url_ttl: int
    ab_slot_ttl: float = 3600.0
    active: ActivePolicy = ActivePolicy()
    limits: RenderLimits = NO_LIMITS
