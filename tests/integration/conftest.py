"""Integration fixtures: the real S3 server (SeaweedFS), started once per session on first use."""

from __future__ import annotations

from tests.s3_server import s3_server

__all__ = ["s3_server"]
