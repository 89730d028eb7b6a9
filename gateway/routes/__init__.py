"""Every gateway route, in one table."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from gateway.routes import accounts, objects, ops, prompts, training
from gateway.web import pages, session

ROUTES: list[BaseRoute] = [
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/readyz", ops.readyz, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/objects/{bucket}/{key:path}", objects.signed_object, methods=["GET", "HEAD"]),
    Route("/", pages.root, methods=["GET"]),
    Route("/login", pages.login_page, methods=["GET"]),
    Route("/login", session.login_submit, methods=["POST"]),
    Route("/logout", session.logout, methods=["POST"]),
    Route("/train", pages.train_page, methods=["GET"]),
    Route("/dashboard", pages.dashboard_page, methods=["GET"]),
    Route("/history", pages.history_page, methods=["GET"]),
    pages.static_mount(),
    Route("/api/me", accounts.me, methods=["GET"]),
    Route("/api/users", accounts.list_users, methods=["GET"]),
    Route("/api/train/status", training.status, methods=["GET"]),
    Route("/api/train/history", training.history, methods=["GET"]),
    Route("/api/train/rate", training.rate, methods=["POST"]),
    Route("/api/enhance/train", training.enhance_train, methods=["POST"]),
    Route("/api/enhance", training.enhance_production, methods=["POST"]),
    Route("/api/prompts", prompts.list_versions, methods=["GET"]),
    Route("/api/prompts/{version}", prompts.show_version, methods=["GET"]),
    Route("/api/prompts/{version}/promote", prompts.promote, methods=["POST"]),
    Route("/api/ab_tests", prompts.list_ab_tests, methods=["GET"]),
]
