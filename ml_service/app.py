"""The ML service's composition root: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Router

from ml_service.api.routes import ROUTES
from ml_service.errors import STATUS_TABLE
from ml_service.resources import Resources
from ml_service.telemetry import enable_lambda_metrics
from shared.aws.lambda_entry import use_lambda_log_format
from shared.observability import HttpMetrics, RequestContextMiddleware, configure_logging
from shared.settings import Settings, get_settings
from shared.web_errors import exception_handlers
from shared.web_json import BodyLimit

SERVICE = "latina-ml"


def create_app(settings: Settings) -> Starlette:
    """Build the ML service; resources open lazily so the app also runs under Mangum."""
    resources = Resources(settings)
    metrics = HttpMetrics("latina_ml")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await resources.gp.start()  # worker processes up before the first request
        await resources.images.start()
        try:
            yield
        finally:
            await resources.close()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers=dict(exception_handlers(STATUS_TABLE)),
        middleware=[
            Middleware(BodyLimit, limit_for=lambda scope: settings.ml_request_max_bytes),
            Middleware(RequestContextMiddleware, metrics=metrics, router=Router(routes=ROUTES)),
        ],
    )
    app.state.resources = resources
    return app


def on_lambda() -> bool:
    return get_settings().aws_lambda_function_name is not None


def app_from_environment() -> Starlette:
    """Uvicorn factory (``--factory``) and the Lambda handler's app."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if on_lambda():
        use_lambda_log_format(SERVICE)
        enable_lambda_metrics(SERVICE)
    return create_app(settings)
