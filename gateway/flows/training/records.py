"""Persistence of an upload: the stored objects (removed again when the upload fails), the
image rows, and the experiment with its options and candidates in one unit of work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.domain.images import ValidatedImage
from gateway.errors import LatinaError
from gateway.flows.training.candidates import Candidate
from gateway.flows.training.rendering import Pick
from gateway.flows.training.uploads import extension_for
from gateway.flows.unit_of_work import UnitOfWork
from gateway.providers.base import RenderResult
from gateway.repositories.experiments import NewImage, RenderedOption
from shared.storage import ObjectStore, new_object_key

log = logging.getLogger("latina.training")


class StoredObjects:
    """The objects one upload wrote, so that a failed upload leaves none behind."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.written: list[tuple[str, str]] = []

    async def original(self, bucket: str, image: ValidatedImage) -> str:
        """Store the upload; return its key."""
        key = new_object_key("originals", image.extension)
        await self._put(bucket, key, image.data, image.content_type)
        return key

    async def rendered(self, bucket: str, result: RenderResult) -> str:
        """Store a rendered image; return its key."""
        key = new_object_key("enhanced", extension_for(result.content_type))
        await self._put(bucket, key, result.image, result.content_type)
        return key

    async def _put(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        await self.store.put(bucket, key, data, content_type)
        self.written.append((bucket, key))

    async def remove(self) -> None:
        for bucket, key in self.written:
            try:
                await self.store.delete(bucket, key)
            except LatinaError:
                log.warning("could not remove orphan object", extra={"key": key})


@asynccontextmanager
async def all_or_nothing(store: ObjectStore) -> AsyncIterator[StoredObjects]:
    """Objects written inside the block are removed again when it raises."""
    objects = StoredObjects(store)
    try:
        yield objects
    except BaseException:
        await objects.remove()
        raise


def original_row(
    project: str, bucket: str, key: str, image: ValidatedImage, **metadata: Any
) -> NewImage:
    """The image row of an upload."""
    return NewImage(
        project,
        "original",
        bucket,
        key,
        image.content_type,
        len(image.data),
        image.width,
        image.height,
        {"format": image.format, **metadata},
    )


def rendered_row(
    project: str, bucket: str, key: str, result: RenderResult, **metadata: Any
) -> NewImage:
    """The image row of a rendered image."""
    return NewImage(
        project,
        "enhanced",
        bucket,
        key,
        result.content_type,
        len(result.image),
        result.width,
        result.height,
        {"provider": result.metadata, **metadata},
    )


def rendered_option(pick: Pick, result: RenderResult, image: NewImage) -> RenderedOption:
    return RenderedOption(
        option=pick.option,
        api=pick.api,
        provider=result.provider,
        image=image,
        parameters=dict(pick.suggestion.parameters),
        suggestion_id=pick.suggestion.suggestion_id,
        strategy=pick.suggestion.strategy,
    )


async def record_experiment(
    uow: UnitOfWork,
    *,
    experiment_id: str,
    project: str,
    mode: str,
    prompt_version_id: int,
    user_id: int,
    original: NewImage,
    rendered: dict[str, RenderedOption],
    candidates: list[Candidate],
) -> tuple[int, dict[str, int]]:
    """The upload's rows; returns the original's image id and each rendered option's."""
    original_id = await uow.experiments.insert_image(original, None, user_id)
    await uow.experiments.insert_experiment(
        experiment_id, project, mode, original_id, prompt_version_id, user_id
    )
    image_ids: dict[str, int] = {}
    for option, chosen in rendered.items():
        image_ids[option] = await uow.experiments.insert_image(chosen.image, original_id, user_id)
        await uow.experiments.insert_option(
            experiment_id, image_ids[option], chosen, prompt_version_id
        )
    for c in candidates:
        await uow.experiments.insert_candidate(
            experiment_id,
            api=c.api,
            parameters=dict(c.suggestion.parameters),
            suggestion_id=c.suggestion.suggestion_id,
            predicted=c.predicted,
            uncertainty=c.uncertainty,
            shown_as=c.shown_as,
            error=c.result.code if isinstance(c.result, LatinaError) else None,
        )
    return original_id, image_ids
