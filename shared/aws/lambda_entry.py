"""Wrappers every Lambda handler of the project shares: metrics flushed per invocation, logs.

On Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) aws-lambda-powertools' Metrics publishes in the
embedded metric format, flushed after each invocation, with a cold-start metric; its formatter adds
the Lambda context (request id, cold start, function) to the JSON logs. Elsewhere the handler is
returned unchanged and the logs stay the project's own JSON lines.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Metrics

NAMESPACE = "Latina"
Handler = Callable[[dict[str, Any], Any], Any]


def lambda_metrics(service: str) -> Metrics:
    """The powertools metrics of ``service`` (instances share one buffer per process)."""
    return Metrics(namespace=NAMESPACE, service=service)


def use_lambda_log_format(service: str) -> None:
    """Log through powertools' formatter, which adds the Lambda context to every line."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(LambdaPowertoolsFormatter(service=service))


def lambda_entry(handler: Handler, *, on_lambda: bool, service: str) -> Handler:
    """Flush metrics (and count cold starts) around each invocation when on Lambda."""
    if not on_lambda:
        return handler
    flushed: Handler = lambda_metrics(service).log_metrics(
        handler, capture_cold_start_metric=True, raise_on_empty_metrics=False
    )

    def invoke(event: dict[str, Any], context: Any) -> Any:
        with warnings.catch_warnings():
            # Most invocations (health, updates, precomputed hits) time nothing: not news.
            warnings.filterwarnings("ignore", message="No application metrics to publish")
            return flushed(event, context)

    return invoke
