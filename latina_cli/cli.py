"""``latina``: the gateway's commands, and the ML service's under ``latina ml``.

The one place that imports both services, so that neither has to import the other (the
import-linter contracts in pyproject.toml check it). Not shipped in either service's package.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from gateway.cli import app as gateway_app
from ml_service.cli import app as ml_app
from shared.cli import with_password_questions

commands = typer.Typer(
    help="Latina operations: database, users, local stack, ML service.", no_args_is_help=True
)
commands.add_typer(gateway_app)  # migrate, users, settings, worker, run: at the top level
commands.add_typer(ml_app, name="ml")


class _Latina:
    """The ``latina`` command: the Typer app, with a bare ``--password`` turned into a question
    (``shared.cli.with_password_questions``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "args" not in kwargs:
            kwargs["args"] = with_password_questions(sys.argv[1:])
        return commands(*args, **kwargs)


app = _Latina()

if __name__ == "__main__":
    app()
