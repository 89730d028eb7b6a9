"""Lambda, as far as a function's code can tell: a container per function, the Runtime API it
polls, and a function URL in front.

- ``LambdaFunction`` starts the function's container on its first invocation, as Lambda does:
  a separate interpreter running
  ``bootstrap.py`` with only the function's code on ``sys.path``, the environment Lambda would give
  it, and a working directory it cannot write to (``/var/task`` is read-only on Lambda). It serves
  the Runtime API that the bootstrap polls and hands it one event at a time, as Lambda does. It
  measures the cold start: the import (process start to the first poll) and the first invocation.
- ``FunctionUrl`` turns HTTP requests into function-URL events (payload format 2.0) and the
  function's answers back into HTTP, with ``AWS_IAM`` auth checked as AWS checks it (SigV4) where
  the function's URL asks for it, and the 6 MB request limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.servers import serve
from tests.sigv4_verifier import Principal, sigv4_problem

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
ACCOUNT = "123456789012"
# A function URL takes at most 6 MB of request payload (AWS's documented quota).
URL_PAYLOAD_LIMIT = 6 * 1024 * 1024
TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


class InvocationError(RuntimeError):
    """The function failed: its init or handler error, or its container died; the message
    carries the error and the tail of the container's log."""


@dataclass
class ColdStart:
    init_seconds: float | None = None  # interpreter start to the first poll: the imports
    first_invocation_seconds: float | None = None


@dataclass
class _Pending:
    event: Any
    answer: asyncio.Future[Any]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class LambdaFunction:
    """One warm container of a function (Lambda reuses it between invocations)."""

    def __init__(
        self,
        name: str,
        handler: str,
        code: list[Path],
        environment: dict[str, str],
        python: Path,
        workdir: Path,
        *,
        timeout: float = 120.0,
        memory_mb: int = 1024,
        runtime_version: str = "3.12",
    ) -> None:
        self.name, self.handler, self.code = name, handler, code
        self.environment, self.python, self.workdir = environment, python, workdir
        self.timeout, self.memory_mb = timeout, memory_mb
        self.runtime_version = runtime_version  # the Lambda runtime's Python it stands for
        self.log = workdir / f"{name}.log"
        self.cold_start = ColdStart()
        self.invocations = 0
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._running: dict[str, _Pending] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._init_error: str | None = None
        self._started_at = 0.0
        self._closing = asyncio.Event()
        self._starting = asyncio.Lock()
        self._runtime_url: str | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def arn(self) -> str:
        region = self.environment.get("AWS_REGION", "eu-west-1")
        return f"arn:aws:lambda:{region}:{ACCOUNT}:function:{self.name}"

    def _runtime_app(self) -> Starlette:
        async def next_invocation(request: Request) -> Response:
            if self.cold_start.init_seconds is None:
                self.cold_start.init_seconds = time.perf_counter() - self._started_at
            # the bootstrap's long poll; ended (410) when the container stops, so the server can
            waiting = asyncio.ensure_future(self._queue.get())
            closing = asyncio.ensure_future(self._closing.wait())  # this container's
            await asyncio.wait({waiting, closing}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                waiting.cancel()
                return JSONResponse({"errorType": "Gone"}, 410)
            closing.cancel()
            pending = waiting.result()
            self._running[pending.request_id] = pending
            deadline_ms = int((time.time() + self.timeout) * 1000)
            return JSONResponse(
                pending.event,
                headers={
                    "Lambda-Runtime-Aws-Request-Id": pending.request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": self.arn,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:24]}",
                },
            )

        async def answer(request: Request) -> Response:
            pending = self._running.pop(request.path_params["request_id"])
            body = json.loads(await request.body())
            if request.path_params["outcome"] == "response":
                pending.answer.set_result(body)
            else:
                pending.answer.set_exception(InvocationError(self._failure(body)))
            return JSONResponse({"status": "OK"}, status_code=202)

        async def init_error(request: Request) -> Response:
            self._init_error = self._failure(json.loads(await request.body()))
            return JSONResponse({"status": "OK"}, status_code=202)

        return Starlette(
            routes=[
                Route("/2018-06-01/runtime/invocation/next", next_invocation, methods=["GET"]),
                Route(
                    "/2018-06-01/runtime/invocation/{request_id}/{outcome:str}",
                    answer,
                    methods=["POST"],
                ),
                Route("/2018-06-01/runtime/init/error", init_error, methods=["POST"]),
            ]
        )

    def _failure(self, error: dict[str, Any]) -> str:
        return f"{self.name}: {error.get('errorType')}: {error.get('errorMessage')}"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def start(self) -> None:
        if self._runtime_url is None:
            self._runtime_url = await self._stack.enter_async_context(serve(self._runtime_app()))
        runtime_url = self._runtime_url
        environment = {
            **self.environment,
            "AWS_LAMBDA_RUNTIME_API": runtime_url.removeprefix("http://"),
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{self.runtime_version}",
            "LAMBDA_TASK_ROOT": str(self.code[0]),
            "_HANDLER": self.handler,
            "REHEARSAL_PATH": os.pathsep.join(str(p) for p in self.code),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
        }
        log = self.log.open("ab")
        self._started_at = time.perf_counter()
        self._process = await asyncio.create_subprocess_exec(
            str(self.python),
            "-I",
            "-S",
            str(BOOTSTRAP),
            cwd=self.code[0],
            env=environment,
            stdout=log,
            stderr=log,
        )
        log.close()

    async def invoke(self, event: Any) -> Any:
        """The handler's answer to ``event``, as the Lambda Invoke API gives it; the first
        invocation starts the container (a cold start)."""
        async with self._starting:
            if self._process is None:
                await self.start()
        assert self._process is not None
        pending = _Pending(event, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        started = time.perf_counter()
        exited = asyncio.ensure_future(self._process.wait())
        try:
            done, _ = await asyncio.wait(
                {pending.answer, exited},
                timeout=self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if not exited.done():
                exited.cancel()
        if pending.answer in done:
            self.invocations += 1
            if self.cold_start.first_invocation_seconds is None:
                self.cold_start.first_invocation_seconds = time.perf_counter() - started
            return pending.answer.result()
        reason = self._init_error or (
            f"{self.name}: container exited ({self._process.returncode})"
            if exited in done
            else f"{self.name}: timed out after {self.timeout:.0f} s"
        )
        raise InvocationError(f"{reason}\n--- {self.log.name} ---\n{self.log_tail()}")

    async def recycle(self) -> None:
        """End this container; the next invocation starts a fresh one (which reads SSM again),
        as any configuration change does on Lambda."""
        async with self._starting:
            await self._end_container()
            self._closing = asyncio.Event()
            self._process = None

    async def stop(self) -> None:
        await self._end_container()
        await self._stack.aclose()

    async def _end_container(self) -> None:
        self._closing.set()
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()


class FunctionUrl:
    """A function URL in front of ``function`` (an ASGI app to serve on loopback)."""

    def __init__(self, function: LambdaFunction, *, iam: Principal | None = None) -> None:
        self.function = function
        self.iam = iam  # AWS_IAM auth: only requests signed with this principal's keys
        self.refused = 0
        self.accepted = 0
        self.throttled = False  # answer 429 as Lambda does when the function is throttled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        response = self._refusal(request, headers, body) or await self._invoke(
            request, headers, body
        )
        await response(scope, receive, send)

    def _refusal(self, request: Request, headers: dict[str, str], body: bytes) -> Response | None:
        if self.throttled:
            return JSONResponse({"Message": "Rate Exceeded."}, 429)
        if len(body) > URL_PAYLOAD_LIMIT:
            self.refused += 1
            return JSONResponse({"Message": "Request must be smaller than 6291456 bytes"}, 413)
        if self.iam is None:
            return None
        problem = sigv4_problem(
            self.iam,
            request.method,
            request.url.path,
            request.url.query,
            headers,
            body,
        )
        if problem is None:
            self.accepted += 1
            return None
        self.refused += 1
        return JSONResponse({"Message": f"Forbidden: {problem}"}, 403)

    async def _invoke(self, request: Request, headers: dict[str, str], body: bytes) -> Response:
        content_type = headers.get("content-type", "")
        text = not body or content_type.startswith(TEXT_TYPES)
        cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
        query: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            query[key] = f"{query[key]},{value}" if key in query else value
        url_id = f"rehearsal{abs(hash(self.function.name)) % 10**8:08d}"
        event = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": request.url.path,
            "rawQueryString": request.url.query,
            "cookies": cookies or None,
            "headers": headers,
            "queryStringParameters": query or None,
            "requestContext": {
                "accountId": ACCOUNT if self.iam else "anonymous",
                "apiId": url_id,
                "domainName": f"{url_id}.lambda-url.eu-west-1.on.aws",
                "domainPrefix": url_id,
                "http": {
                    "method": request.method,
                    "path": request.url.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": request.client.host if request.client else "127.0.0.1",
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
                "timeEpoch": int(time.time() * 1000),
            },
            "body": body.decode() if text else base64.b64encode(body).decode(),
            "isBase64Encoded": not text,
        }
        if not cookies:
            del event["cookies"]
        try:
            answer = await self.function.invoke(event)
        except InvocationError:
            # what a caller of a failing function URL sees; the test reads the container's log
            return JSONResponse({"Message": "Internal Server Error"}, 502)
        return _http_response(answer)


def _http_response(answer: dict[str, Any]) -> Response:
    raw = answer.get("body") or ""
    body = base64.b64decode(raw) if answer.get("isBase64Encoded") else raw.encode()
    response = Response(body, status_code=int(answer.get("statusCode", 200)))
    del response.headers["content-length"]
    for key, value in (answer.get("headers") or {}).items():
        response.headers[key] = value
    for key, values in (answer.get("multiValueHeaders") or {}).items():
        for value in values:
            response.headers.append(key, value)
    for cookie in answer.get("cookies") or []:
        response.headers.append("set-cookie", cookie)
    response.headers["content-length"] = str(len(body))
    return response


@contextlib.asynccontextmanager
async def function_url(
    function: LambdaFunction, *, iam: Principal | None = None
) -> AsyncIterator[tuple[str, FunctionUrl]]:
    """Serve ``function`` behind a function URL on loopback; yield its URL and the front."""
    front = FunctionUrl(function, iam=iam)
    async with serve(front) as url:
        yield url, front
