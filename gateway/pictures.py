"""A rated experiment's images for the ML service's image features (phase 2).

They travel apart from the rating: the rating's transaction enqueues an ``ml_features`` job
(``gateway.jobs``) and answers once the image-less update is delivered; the worker then reads the
images, downscales them and sends the same observations again with their images, which the ML
service takes as repeats that add features. Reading and downscaling three images is the
slowest part of a rating, and nothing the trainer waits for needs it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.errors import LatinaError
from gateway.images import downscaled_jpeg
from gateway.repositories import experiments as repo
from shared.storage import ObjectStore
from shared.wire.ml import ObservationIn

log = logging.getLogger("latina.pictures")


@dataclass(frozen=True)
class Pictures:
    pool: asyncpg.Pool[Any]
    store: ObjectStore

    async def of(self, experiment_id: str) -> dict[str, str]:
        """The experiment's images (options and "original"), downscaled and base64-encoded;
        empty when the original cannot be read."""
        async with self.pool.acquire() as conn:
            keys = await repo.image_keys(conn, experiment_id)
        out: dict[str, str] = {}
        for name, (bucket, key) in keys.items():
            small = await asyncio.to_thread(downscaled_jpeg, await self.store.get(bucket, key))
            out[name] = base64.b64encode(small).decode()
        return out if "original" in out else {}

    async def attach(
        self, experiment_id: str, observations: list[ObservationIn]
    ) -> list[ObservationIn]:
        """The observations of ``experiment_id`` (ids ``<experiment>:<option>``) with their
        images; those whose image is missing are left out (best effort: never an error)."""
        try:
            pictures = await self.of(experiment_id)
        except (LatinaError, OSError, ValueError) as exc:
            log.warning(
                "image features skipped", extra={"experiment": experiment_id, "reason": str(exc)}
            )
            return []
        out = []
        for obs in observations:
            option = obs.observation_id.rsplit(":", 1)[-1]
            if option in pictures:
                out.append(
                    obs.model_copy(
                        update={
                            "image_b64": pictures[option],
                            "original_b64": pictures["original"],
                            "group_id": experiment_id,
                        }
                    )
                )
        return out
