"""What the services' command lines share: settings read once and checked (invalid settings end
the command with exit code 2), and async work whose errors are messages (exit code 1)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer
from pydantic import ValidationError

from shared.errors import LatinaError
from shared.settings import Settings, get_settings

T = TypeVar("T")


def settings_or_exit() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        typer.secho(f"invalid settings:\n{exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def run_or_exit(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """``work(settings)`` to completion; a ``LatinaError`` is printed with its hint."""
    settings = settings_or_exit()
    try:
        return asyncio.run(work(settings))
    except LatinaError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            typer.secho(f"hint: {exc.hint}", err=True)
        raise typer.Exit(1) from exc


# ``--password`` given without a value (last, or followed by another option) becomes this, and
# the command asks for the password, hidden: it stays out of the shell's history. (Typer's
# parser has no optional option values.)
ASK_PASSWORD = "\0ask"  # noqa: S105 (a marker, not a password)


def with_password_questions(argv: list[str]) -> list[str]:
    """``argv`` with every bare ``--password`` given ``ASK_PASSWORD`` as its value."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--password" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append(ASK_PASSWORD)
    return out


def password_or_ask(given: str | None) -> str | None:
    """The password given, or asked for (hidden, twice) when ``--password`` came bare."""
    if given != ASK_PASSWORD:
        return given
    asked: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return asked
