"""``latina``: the gateway's commands, and the ML service's under ``latina ml``.

The one place that imports both services, so that neither has to import the other (the
import-linter contracts in pyproject.toml check it). Not shipped in either service's package.
"""

from __future__ import annotations

import typer

from gateway.cli import app as gateway_app
from ml_service.cli import app as ml_app

app = typer.Typer(
    help="Latina operations: database, users, local stack, ML service.", no_args_is_help=True
)
app.add_typer(gateway_app)  # migrate, users, settings, worker, run: at the top level
app.add_typer(ml_app, name="ml")

if __name__ == "__main__":
    app()
