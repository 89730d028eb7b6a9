"""The answer to ``POST /api/enhance/train`` (API.md): the experiment, the original and both
options, each with its image's URL or the error that stopped its render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import LatinaError
from gateway.flows.training.deps import TrainingDeps
from gateway.flows.training.rendering import Pick
from gateway.repositories.ab_tests import SlotClaim
from gateway.repositories.experiments import RenderedOption
from gateway.repositories.prompts import PromptVersion
from shared.wire.gateway import TrainOption, TrainResponse


@dataclass(frozen=True)
class Recorded:
    """What an upload left behind: its experiment, its objects and their image rows."""

    experiment_id: str
    project: str
    mode: str
    original_key: str
    original_id: int
    rendered: dict[str, RenderedOption]
    image_ids: dict[str, int]
    candidates: int


async def training_reply(
    deps: TrainingDeps,
    recorded: Recorded,
    picks: list[Pick],
    prompt: PromptVersion,
    claim: SlotClaim | None,
) -> TrainResponse:
    active = recorded.mode == "active"
    options = []
    for pick in picks:
        # keys that are absent in some answers are only set when present (exclude_unset)
        entry: dict[str, Any] = {
            "option": pick.option,
            "api": pick.api,
            "prompt_version": prompt.version,
            "parameters": pick.suggestion.parameters,
            "strategy": pick.suggestion.strategy,
        }
        if active:
            entry["predicted_rating"] = pick.predicted
            entry["uncertainty"] = pick.uncertainty
        if isinstance(pick.result, LatinaError):
            entry["provider"] = deps.providers[pick.api].name
            entry["error"] = pick.result.to_body()["error"]
        else:
            chosen = recorded.rendered[pick.option]
            entry["image_id"] = recorded.image_ids[pick.option]
            entry["provider"] = pick.result.provider
            entry["url"] = await deps.store.url(
                deps.enhanced_bucket, chosen.image.key, deps.url_ttl
            )
        options.append(TrainOption.model_validate(entry))
    body: dict[str, Any] = {
        "experiment_id": recorded.experiment_id,
        "project_id": recorded.project,
        "mode": recorded.mode,
        "prompt_version": prompt.version,
        "ab_test": (
            {"id": claim.ab_test_id, "slot": claim.slot, "arm": claim.arm} if claim else None
        ),
        "original": {
            "image_id": recorded.original_id,
            "url": await deps.store.url(deps.uploads_bucket, recorded.original_key, deps.url_ttl),
        },
        "options": options,
    }
    if active:
        body["candidates"] = recorded.candidates
    return TrainResponse.model_validate(body)
