"""Fit and acquisition timings: JSON log lines everywhere, CloudWatch metrics on Lambda.

On Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) aws-lambda-powertools' Metrics publishes cold
starts, fit seconds and acquisition seconds in the embedded metric format, flushed after each
invocation by the handler wrapper; elsewhere the same figures go to the JSON logs.
"""

from __future__ import annotations

import logging

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from shared.aws.lambda_entry import lambda_metrics

log = logging.getLogger("latina.ml.timing")
_metrics: Metrics | None = None


def enable_lambda_metrics(service: str = "latina-ml") -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = lambda_metrics(service)
    return _metrics


def record_timings(fit_seconds: float, acquisition_seconds: float) -> None:
    if fit_seconds == 0 and acquisition_seconds == 0:
        return
    log.info(
        "suggestion computed",
        extra={
            "fit_seconds": round(fit_seconds, 4),
            "acquisition_seconds": round(acquisition_seconds, 4),
        },
    )
    if _metrics is not None:
        _metrics.add_metric(name="FitSeconds", unit=MetricUnit.Seconds, value=fit_seconds)
        _metrics.add_metric(
            name="AcquisitionSeconds", unit=MetricUnit.Seconds, value=acquisition_seconds
        )
