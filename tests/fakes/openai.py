"""A fake OpenAI-compatible chat-completions API (``shared/REFERENCE.md``, "OpenAI").

Route: ``POST /v1/chat/completions`` (serve, then use ``<base>/v1`` as the client's
``base_url``). Each request takes the next queued ``Reply`` (``queue``), or ``default`` when
the queue is empty, so a test scripts the answers call by call: a structured answer, malformed
JSON, a refusal, an error status (with OpenAI's error body and retry headers), a finish reason
of ``length``, or any of them held for ``delay`` seconds to provoke client timeouts. Requests
are recorded before anything else (``seen(CHAT)``), refused ones included.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import FakeApi

API_KEY = "sk-test-openai"  # the bearer token the fake requires by default
CHAT = "POST /v1/chat/completions"

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer: a completion (``status`` 200) or an error."""

    content: str | None = None
    refusal: str | None = None
    finish_reason: str = "stop"
    status: int = 200
    message: str = ""  # the error message of an error reply
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


def structured(answer: Mapping[str, Any]) -> Reply:
    """A normal structured-output completion whose content is ``answer`` as JSON."""
    return Reply(content=json.dumps(answer))


def malformed(content: str = '{"improved_prompt": "unfinished') -> Reply:
    """A completion whose content is not the JSON asked for."""
    return Reply(content=content)


def refusal(text: str = "I can't help") -> Reply:
    """A structured-output refusal: ``refusal`` set, ``content`` null."""
    return Reply(refusal=text)


def cut_off(answer: Mapping[str, Any]) -> Reply:
    """A completion stopped at the token limit (``finish_reason: length``)."""
    return Reply(content=json.dumps(answer)[:40], finish_reason="length")


def failure(status: int, message: str, *, retry_after_ms: int | None = None) -> Reply:
    """An error status with OpenAI's error body (and ``retry-after-ms`` when given)."""
    headers = {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}
    return Reply(status=status, message=message, headers=headers)


def slow(seconds: float, then: Reply) -> Reply:
    """``then``, held for ``seconds`` first (or until the client hangs up)."""
    return replace(then, delay=seconds)


class FakeOpenAI(FakeApi):
    """Chat completions with scripted answers (see the module docstring).

    Attributes:
        replies: Answers still to give, in order.
        default: The answer once ``replies`` is empty (a 500 unless set).
    """

    def __init__(self, *, token: str | None = API_KEY, default: Reply | None = None) -> None:
        super().__init__(token)
        self.replies: list[Reply] = []
        self.default = default or failure(500, "The fake has no reply scripted")
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])

    def queue(self, *replies: Reply) -> None:
        """Script the next answers."""
        self.replies.extend(replies)

    def bodies(self) -> list[Any]:
        """The JSON bodies of the chat requests received, in order."""
        return [r.json() for r in self.seen(CHAT)]

    def refusal(self, status: int, retry_after: str | None) -> str:
        if status == 429:
            return "Rate limit reached for requests. Please try again later."
        return "The server had an error while processing your request."

    def error(self, status: int, message: str) -> Response:
        kind, code = _ERROR_TYPES.get(status, ("server_error", None))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status)

    async def _chat(self, request: Request) -> Response:
        if early := await self.gate(request, CHAT):
            return early
        reply = self.replies.pop(0) if self.replies else self.default
        await _hold(request, reply.delay)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self.error(400, "you must provide a model parameter")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(400, "'messages' must be a non-empty array")
        if reply.status != 200:
            response = self.error(reply.status, reply.message)
            response.headers.update(reply.headers)
            return response
        message = {"role": "assistant", "content": reply.content, "refusal": reply.refusal}
        return JSONResponse(
            {
                "id": f"chatcmpl-fake-{next(self._ids)}",
                "object": "chat.completion",
                "created": 1_795_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": reply.finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
            headers=dict(reply.headers),
        )


async def _hold(request: Request, seconds: float) -> None:
    """Wait ``seconds``, or less when the client hangs up (a timed-out client does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        await asyncio.sleep(min(0.02, max(deadline - loop.time(), 0)))
