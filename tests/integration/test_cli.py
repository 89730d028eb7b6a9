"""The ``latina`` command line against a real database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from argon2 import PasswordHasher

from gateway.flows.accounts import authenticate_token
from gateway.flows.unit_of_work import UnitOfWorkFactory


def latina(
    *args: str, database_url: str, data_dir: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LATINA_DATA_DIR": str(data_dir),
        "PROMPT_EXPORT_DIR": str(data_dir / "prompt-library"),
        "MIGRATE_ON_START": "false",
    }
    return subprocess.run(
        [sys.executable, "-m", "latina_cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrate_twice_changes_nothing_the_second_time(
    database_url: str, tmp_path: Path
) -> None:
    first = latina("migrate", database_url=database_url, data_dir=tmp_path)
    second = latina("migrate", database_url=database_url, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "0 applied" in second.stdout
    assert "applied gateway/" not in second.stdout


async def test_users_create_prints_a_token_that_authenticates(
    database_url: str, db_pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    result = latina(
        "users", "create", "maria", "--role", "admin", database_url=database_url, data_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    user = await authenticate_token(UnitOfWorkFactory(db_pool), token)
    assert user is not None and user.name == "maria" and user.role == "admin"
    async with db_pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token_hash FROM api_tokens")
    assert token.encode() not in bytes(stored)
    assert len(stored) == 32


async def test_creating_an_existing_user_fails_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    assert (
        latina("users", "create", "sam", database_url=database_url, data_dir=tmp_path).returncode
        == 0
    )
    again = latina("users", "create", "sam", database_url=database_url, data_dir=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr


async def test_invalid_role_is_refused(database_url: str, tmp_path: Path) -> None:
    result = latina(
        "users", "create", "x", "--role", "root", database_url=database_url, data_dir=tmp_path
    )
    assert result.returncode == 2
    assert "trainer or admin" in result.stderr


async def test_users_get_an_argon2_password_for_the_browser_login(
    database_url: str, db_pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    created = latina(
        "users",
        "create",
        "ana",
        "--password",
        "first-password",
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    short = latina(
        "users",
        "password",
        "ana",
        "--password",
        "short",
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    reset = latina(
        "users",
        "password",
        "ana",
        "--password",
        "second-password",
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert reset.returncode == 0, reset.stderr
    async with db_pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE name = 'ana'")
    assert stored.startswith("$argon2id$")
    assert PasswordHasher().verify(stored, "second-password")
    missing = latina(
        "users",
        "password",
        "nobody",
        "--password",
        "whatever-123",
        database_url=database_url,
        data_dir=tmp_path,
    )
    assert missing.returncode == 1 and "no user named" in missing.stderr


def test_latina_has_the_gateway_commands_and_the_ml_service_under_ml(tmp_path: Path) -> None:
    top = latina("--help", database_url="", data_dir=tmp_path)
    ml = latina("ml", "--help", database_url="", data_dir=tmp_path)
    assert top.returncode == 0 and ml.returncode == 0, top.stderr + ml.stderr
    for command in ("migrate", "users", "worker", "run", "ml"):
        assert f" {command} " in top.stdout
    assert " serve " in ml.stdout and " train-reward " in ml.stdout


def test_the_command_line_starts_without_torch() -> None:
    """``latina users ...`` must not pay for PyTorch: only ``latina ml train-reward`` loads it."""
    probe = "import sys, latina_cli.cli; print(sorted({'torch', 'botorch'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


async def test_ml_train_reward_without_data_says_why(database_url: str, tmp_path: Path) -> None:
    result = latina("ml", "train-reward", database_url=database_url, data_dir=tmp_path)
    assert result.returncode == 1
    assert "cannot train the reward model yet" in result.stderr


async def test_a_password_flag_without_a_value_is_asked_for_hidden(
    database_url: str, db_pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """So a password need not be in the shell's history."""
    created = latina(
        "users",
        "create",
        "bea",
        "--password",
        database_url=database_url,
        data_dir=tmp_path,
        stdin="typed-password\ntyped-password\n",
    )
    assert created.returncode == 0, created.stderr
    assert "typed-password" not in created.stdout  # hidden: not echoed
    async with db_pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE name = 'bea'")
    assert PasswordHasher().verify(stored, "typed-password")


def test_settings_mask_the_database_password(tmp_path: Path) -> None:
    shown = latina(
        "settings",
        database_url="postgresql://latina:hunter2-secret@db.internal:5432/latina",
        data_dir=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "hunter2-secret" not in shown.stdout
    assert "DATABASE_URL=postgresql://latina:***@db.internal:5432/latina" in shown.stdout


def test_the_ml_service_refuses_to_serve_beyond_loopback_on_the_dev_token(tmp_path: Path) -> None:
    served = latina(
        "ml",
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 (what is refused)
        database_url="postgresql://127.0.0.1:9/nothing",
        data_dir=tmp_path,
    )
    assert served.returncode == 2
    assert "ML_SERVICE_TOKEN" in served.stderr
