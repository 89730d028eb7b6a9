"""A rated experiment's images for the ML service's image features (phase 2).

They travel apart from the rating: the rating's transaction enqueues an ``ml_features`` job
(``gateway.jobs``) and answers once the image-less update is delivered; the worker then reads the
images, downscales them and sends the same observations again with their images, which the ML
service takes as repeats that add features. Reading and downscaling three images is the
slowest part of a rating, and nothing the trainer waits for needs it: the downscaling runs in a
thread of its own at a lower CPU priority (``shared.priority``), so that a burst of ratings,
uploads and page views is served first when the cores are short.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gateway.domain.images import downscaled_jpeg
from gateway.errors import LatinaError
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.priority import lower_thread_priority
from shared.storage import ObjectStore
from shared.wire.ml import ObservationIn

log = logging.getLogger("latina.pictures")


@functools.cache
def background_thread() -> ThreadPoolExecutor:
    """The process's one thread for downscaling images in the background, at low priority."""
    return ThreadPoolExecutor(
        1, thread_name_prefix="latina-pictures", initializer=lower_thread_priority
    )


@dataclass(frozen=True)
class Pictures:
    uows: UnitOfWorkFactory
    store: ObjectStore

    async def of(self, experiment_id: str) -> dict[str, str]:
        """The experiment's images (options and "original"), downscaled and base64-encoded;
        empty when the original cannot be read."""
        async with self.uows.read() as uow:
            keys = await uow.experiments.image_keys(experiment_id)
        out: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        for name, (bucket, key) in keys.items():
            data = await self.store.get(bucket, key)
            small = await loop.run_in_executor(background_thread(), downscaled_jpeg, data)
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
