"""Background image work in the gateway yields the cores to serving."""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

from gateway.flows.pictures import background_thread
from shared.priority import BACKGROUND_NICE


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread niceness is Linux's")
async def test_images_are_downscaled_in_a_thread_of_lower_priority_only() -> None:
    serving = _niceness()
    loop = asyncio.get_running_loop()
    background = await loop.run_in_executor(background_thread(), _niceness)
    assert background == min(19, serving + BACKGROUND_NICE)
    assert _niceness() == serving  # the event loop's thread, and so the process, keeps its own
    assert os.getpriority(os.PRIO_PROCESS, 0) == serving
