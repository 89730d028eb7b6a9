"""Invoke a Lambda handler the way the Lambda runtime does: one thread, one event loop, reused.

Mangum runs each invocation on ``asyncio.get_event_loop()`` of the calling thread, and our
handlers keep their database pool on that loop between invocations, so tests must not call a
handler from the test's own (running) loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _install_loop() -> None:
    asyncio.set_event_loop(asyncio.new_event_loop())


class LambdaRuntime:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, initializer=_install_loop)

    async def invoke(self, handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, handler, event, None)

    async def invoke_with_context(
        self, handler: Handler, event: dict[str, Any], context: Any
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, handler, event, context)

    async def run(self, coro_factory: Callable[[], Any]) -> Any:
        """Run a coroutine on the runtime's loop (e.g. to close a pool at the end)."""

        def target() -> Any:
            return asyncio.get_event_loop().run_until_complete(coro_factory())

        return await asyncio.get_running_loop().run_in_executor(self._thread, target)

    async def close(self) -> None:
        def shutdown() -> None:
            asyncio.get_event_loop().close()

        await asyncio.get_running_loop().run_in_executor(self._thread, shutdown)
        self._thread.shutdown(wait=True)


def new_container() -> None:
    """Make the next invocation a cold start again for powertools (its flag is per process)."""
    from aws_lambda_powertools.metrics.provider import cold_start

    cold_start.reset_cold_start_flag()
