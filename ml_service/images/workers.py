"""Image features apart from serving: worker processes at a lower CPU priority, or inline.

Decoding and comparing images is CPU work in NumPy and Pillow with much Python between the
array operations; in a thread of the service it holds the interpreter lock often enough to slow
every request on the event loop (an ML update without images waited behind the features of
another one). So, like GP work (``optimizer.workers``), it runs in worker
processes (``ML_IMAGE_WORKERS``; one per core, at most 4, when unset) at the GP workers' lower
priority, each taking a contiguous share of a request's images (an upload's candidates share
their original, prepared once per share). On Lambda (``ML_IMAGE_WORKERS=0``) it runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from PIL import Image

from ml_service.images import features as fx
from ml_service.processes import background_worker, shut_down, spawn_pool
from shared.errors import InvalidInput, LatinaError


@dataclass(frozen=True)
class Failure:
    """Why one image's features could not be computed (errors cross processes as data)."""

    code: str
    message: str

    def error(self, details: dict[str, object]) -> InvalidInput:
        return InvalidInput(self.message, code=self.code, details=details)


Item = tuple[bytes, bytes | None]  # an image and the original it was made from, encoded


def features_of(items: Sequence[Item]) -> list[fx.F32 | Failure]:
    """Each item's feature vector (``features.extract``) or why not; an original
    shared by several items is prepared once."""
    originals: dict[bytes, fx.Reference] = {}
    out: list[fx.F32 | Failure] = []
    for image, original in items:
        try:
            against = None
            if original is not None:
                if original not in originals:
                    originals[original] = fx.reference_bytes(original)
                against = originals[original]
            out.append(fx.extract(fx.decode(image), against=against))
        except LatinaError as exc:
            out.append(Failure(exc.code, exc.message))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            out.append(Failure("invalid_image", f"the image could not be read: {exc}"))
    return out


def _ready() -> int:
    return os.getpid()


class ImageWork:
    def __init__(self, workers: int) -> None:
        self.mode = "processes" if workers > 0 else "inline"
        self.workers = max(1, workers)
        self._executor: Executor | None = None

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = spawn_pool(self.workers, background_worker)
        return self._executor

    async def start(self) -> None:
        """Start the worker processes (their imports) before the first request."""
        if self.mode == "processes":
            loop = asyncio.get_running_loop()
            pool = self._pool()
            await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(self.workers)))

    async def features(self, items: Sequence[Item]) -> list[fx.F32 | Failure]:
        """``features_of(items)``, in order, spread over the workers."""
        if not items:
            return []
        if self.mode == "inline":
            return await asyncio.to_thread(features_of, list(items))
        shares = min(self.workers, len(items))
        size = -(-len(items) // shares)
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool(), features_of, list(items[i : i + size]))
                for i in range(0, len(items), size)
            )
        )
        return [vector for share in done for vector in share]

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        await shut_down(executor)
