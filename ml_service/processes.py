"""The service's worker processes (GP work, image features): spawned, at a lower CPU priority
than serving, and ending with the service."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any

from shared.priority import lower_process_priority


def background_worker() -> None:
    """In a worker process of the service (GP or image work): a lower CPU priority, and an end
    when the service is gone."""
    lower_process_priority()
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()


def spawn_pool(
    workers: int, initializer: Callable[..., None], initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    # spawn: a forked copy of a process that has run torch threads can deadlock
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=initializer,
        initargs=initargs,
    )


async def shut_down(executor: Executor | None) -> None:
    if executor is not None:
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)


def _exit_with(parent: int) -> None:
    """End this worker when the service that started it is gone, however it ended (a killed
    service cannot shut its pool down, and the pool's pipes do not tell its workers)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def default_workers(configured: int | None, on_lambda: bool) -> int:
    """``ML_GP_WORKERS`` (or ``ML_IMAGE_WORKERS``) unset: inline on Lambda, else one process
    per core (at most 4)."""
    if configured is not None:
        return configured
    return 0 if on_lambda else max(1, min(4, os.cpu_count() or 1))
