"""The gateway's unit of work against the real database: all or nothing, and the pool gets its
connection back either way."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from gateway.flows.unit_of_work import UnitOfWorkFactory


class Boom(Exception):
    pass


async def test_an_exception_inside_the_block_rolls_back_everything_written_in_it(
    db_pool: asyncpg.Pool[Any],
) -> None:
    uows = UnitOfWorkFactory(db_pool)
    with pytest.raises(Boom):
        async with uows() as uow:
            user = await uow.users.insert_user("rolf", "trainer", None)
            await uow.users.insert_token(user.id, b"h" * 32, "lat_rolf", "cli")
            await uow.jobs.enqueue_reward_training(50)
            raise Boom
    async with uows.read() as uow:
        assert await uow.users.get_user_by_name("rolf") is None
        assert await uow.jobs.queued_by_entrypoint() == {}
    assert db_pool.get_size() - db_pool.get_idle_size() == 0  # the connection went back


async def test_a_normal_exit_commits_everything_written_in_the_block(
    db_pool: asyncpg.Pool[Any],
) -> None:
    uows = UnitOfWorkFactory(db_pool)
    async with uows() as uow:
        user = await uow.users.insert_user("cora", "admin", None)
        await uow.users.insert_token(user.id, b"c" * 32, "lat_cora", "cli")
        await uow.jobs.enqueue_reward_training(50)
    async with uows.read() as uow:
        stored = await uow.users.get_user_by_name("cora")
        assert stored is not None and stored.role == "admin"
        assert await uow.users.find_user_by_token_hash(b"c" * 32) == stored
        assert await uow.jobs.queued_by_entrypoint() == {"reward_train": 1}
    assert db_pool.get_size() - db_pool.get_idle_size() == 0


async def test_a_read_unit_runs_outside_a_transaction(db_pool: asyncpg.Pool[Any]) -> None:
    async with UnitOfWorkFactory(db_pool).read() as uow:
        assert not uow.users.conn.is_in_transaction()
    async with UnitOfWorkFactory(db_pool)() as uow:
        assert uow.users.conn.is_in_transaction()
