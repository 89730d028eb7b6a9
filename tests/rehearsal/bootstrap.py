"""The Lambda runtime's bootstrap, as the rehearsal runs it: the standard library only.

Run as ``python -I -S bootstrap.py`` (no site-packages, no script folder, no PYTHON* variables),
so the function's code and packages come from ``REHEARSAL_PATH`` alone (the unzipped package, or
the ML image's task root), as on Lambda where ``/var/task`` is all there is. It speaks the Lambda
Runtime API (``AWS_LAMBDA_RUNTIME_API``): import the ``_HANDLER`` once (an import error goes to
``/runtime/init/error``), then take invocations one at a time and post each answer or error.
"""

import importlib
import json
import os
import sys
import time
import traceback
import urllib.request
from typing import Any


class Context:
    """What Lambda hands a handler as ``context`` (the attributes powertools reads)."""

    def __init__(self, request_id: str, deadline_ms: int, arn: str) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = "/aws/lambda/" + self.function_name
        self.log_stream_name = "rehearsal"
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _post(url: str, body: Any) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (the Runtime API: http on loopback)
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http only)
        response.read()


def _error(exc: BaseException) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_exception(exc),
    }


def main() -> None:
    for entry in reversed(os.environ["REHEARSAL_PATH"].split(os.pathsep)):
        sys.path.insert(0, entry)
    runtime = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"
    module_name, _, function_name = os.environ["_HANDLER"].rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as exc:
        traceback.print_exc()
        _post(f"{runtime}/init/error", _error(exc))
        sys.exit(1)
    while True:
        next_event = f"{runtime}/invocation/next"
        with urllib.request.urlopen(next_event, timeout=3600) as response:  # noqa: S310
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            deadline_ms = int(response.headers["Lambda-Runtime-Deadline-Ms"])
            arn = response.headers["Lambda-Runtime-Invoked-Function-Arn"]
            event = json.loads(response.read())
        try:
            result = handler(event, Context(request_id, deadline_ms, arn))
        except Exception as exc:
            traceback.print_exc()
            _post(f"{runtime}/invocation/{request_id}/error", _error(exc))
            continue
        _post(f"{runtime}/invocation/{request_id}/response", result)


if __name__ == "__main__":
    main()
