"""A lower CPU priority for background work: when the cores are short, serving goes first.

Background work (GP fits, image features, downscaling images for the ML service) runs niced by
``BACKGROUND_NICE``: both services' event loops and PostgreSQL take the cores they need and the
background takes what is left, instead of sharing them equally with every request in flight.
Where the platform has no niceness (or refuses it) the work runs at the default priority.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Final

BACKGROUND_NICE: Final = 10  # added to the niceness (Linux: 0 is normal, 19 the lowest)


def lower_process_priority() -> None:
    """Lower the priority of this whole process (a worker process)."""
    with contextlib.suppress(AttributeError, OSError):
        os.nice(BACKGROUND_NICE)


def lower_thread_priority() -> None:
    """Lower the priority of the calling thread only (an executor thread's initializer).

    Linux gives each thread its own niceness, set through its thread id; elsewhere the thread
    keeps the process's priority rather than lowering every thread of the process.
    """
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(
            os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE
        )
