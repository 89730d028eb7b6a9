"""Migrations and the integrity the schema enforces."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db.migrations import ALL_SETS, MigrationError, apply_migrations, load_migrations
from shared.db.pool import connect


async def test_rerunning_migrations_changes_nothing(database_url: str) -> None:
    conn = await connect(database_url)
    try:
        before = await conn.fetch("SELECT component, version, applied_at FROM schema_migrations")
        report = await apply_migrations(conn)
        after = await conn.fetch("SELECT component, version, applied_at FROM schema_migrations")
    finally:
        await conn.close()
    assert report.applied == []
    assert report.already_applied == len(before) > 0
    assert before == after


async def test_concurrent_runners_apply_each_file_once(pg_admin_dsn: str, tmp_path: Path) -> None:
    from tests import pg

    name = f"latina_fresh_{tmp_path.name[-8:].lower()}".replace("-", "_")
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        dsn = pg.with_database(pg_admin_dsn, name)
        conns = [await connect(dsn) for _ in range(3)]
        reports = await asyncio.gather(*(apply_migrations(c) for c in conns))
        n_files = sum(len(load_migrations(k, v)) for k, v in ALL_SETS.items())
        assert sorted(len(r.applied) for r in reports) == [0, 0, n_files]
        for c in conns:
            await c.close()
    finally:
        await pg.drop_database(pg_admin_dsn, name)


async def test_changed_migration_is_reported_not_reapplied(
    database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "0001_table.sql").write_text("CREATE TABLE extra_t (id int);")
    conn = await connect(database_url)
    try:
        first = await apply_migrations(conn, {"extra": folder})
        (folder / "0001_table.sql").write_text("CREATE TABLE extra_t (id int, x int);")
        second = await apply_migrations(conn, {"extra": folder})
    finally:
        await conn.close()
    assert first.applied == ["extra/0001_table.sql"]
    assert second.applied == [] and second.changed == ["extra/0001_table.sql"]


def test_badly_named_migration_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations("x", tmp_path)


async def _seed(conn: asyncpg.Connection[Any]) -> dict[str, Any]:
    pv = await conn.fetchval(
        "INSERT INTO prompt_versions (version, prompt, origin, is_current)"
        " VALUES ('v1.0.0', 'photo', 'seed', true) RETURNING id"
    )
    original = await conn.fetchval(
        "INSERT INTO images (project_id, image_type, s3_bucket, s3_key, content_type, byte_size,"
        " width, height) VALUES ('default', 'original', 'b', 'o.png', 'image/png', 10, 4, 4)"
        " RETURNING id"
    )
    enhanced = []
    for key in ("a.png", "b.png"):
        enhanced.append(
            await conn.fetchval(
                "INSERT INTO images (project_id, image_type, s3_bucket, s3_key, content_type,"
                " byte_size, width, height, parent_image_id)"
                " VALUES ('default', 'enhanced', 'b', $1, 'image/png', 10, 4, 4, $2) RETURNING id",
                key,
                original,
            )
        )
    await conn.execute(
        "INSERT INTO experiments (id, project_id, mode, original_image_id, prompt_version_id)"
        " VALUES ('exp_0123456789AB', 'default', 'ab', $1, $2)",
        original,
        pv,
    )
    for option, api, image in (
        ("A", "leonardo", enhanced[0]),
        ("B", "stable_diffusion", enhanced[1]),
    ):
        await conn.execute(
            "INSERT INTO parameter_experiments (experiment_id, image_id, option, api, provider,"
            " prompt_version_id, parameters) VALUES ('exp_0123456789AB', $1, $2, $3, 'local',"
            " $4, $5)",
            image,
            option,
            api,
            pv,
            {"guidance_scale": 7.0},
        )
    return {"pv": pv, "original": original, "a": enhanced[0], "b": enhanced[1]}


async def test_schema_enforces_ratings_options_and_uniqueness(
    db_pool: asyncpg.Pool[Any],
) -> None:
    async with db_pool.acquire() as conn:
        ids = await _seed(conn)
        insert = (
            "INSERT INTO enhancement_ratings (experiment_id, image_id, option, rating)"
            " VALUES ('exp_0123456789AB', $1, $2, $3)"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, ids["a"], "A", 6)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, ids["a"], "A", 0)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, ids["a"], "C", 3)
        # the rated image must be the one rendered for that option
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(insert, ids["b"], "A", 3)
        await conn.execute(insert, ids["a"], "A", 3)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(insert, ids["a"], "A", 4)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO prompt_versions (version, prompt, origin)"
                " VALUES ('v1.0.0', 'again', 'manual')"
            )
        # only one current prompt version
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO prompt_versions (version, prompt, origin, is_current)"
                " VALUES ('v1.0.1', 'new', 'manual', true)"
            )
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO images (project_id, image_type, s3_bucket, s3_key, content_type,"
                " byte_size, width, height, parent_image_id)"
                " VALUES ('default', 'enhanced', 'b', 'c.png', 'image/png', 1, 1, 1, 999999)"
            )
        params = await conn.fetchval(
            "SELECT parameters FROM parameter_experiments WHERE option = 'A'"
        )
        assert params == {"guidance_scale": 7.0}


async def test_prompt_score_sums_are_backfilled_from_the_ratings_already_stored(
    pg_admin_dsn: str, tmp_path: Path
) -> None:
    """A database rated before the running sums existed gets them from its ratings."""
    from shared.db.migrations import GATEWAY_MIGRATIONS
    from tests import pg

    folder = tmp_path / "gateway"
    folder.mkdir()
    later = sorted(GATEWAY_MIGRATIONS.glob("*.sql"))
    sums = next(f for f in later if f.name.endswith("_prompt_score_sums.sql"))
    for f in later[: later.index(sums)]:
        (folder / f.name).write_text(f.read_text())
    name = f"latina_sums_{tmp_path.name[-8:].lower()}".replace("-", "_")
    admin = await asyncpg.connect(pg_admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        conn = await connect(pg.with_database(pg_admin_dsn, name))
        try:
            await apply_migrations(conn, {"gateway": folder})
            versions = [
                await conn.fetchval(
                    "INSERT INTO prompt_versions (version, prompt, negative_prompt, origin)"
                    " VALUES ($1, 'p', 'n', 'manual') RETURNING id",
                    v,
                )
                for v in ("v1.0.0", "v2.0.0", "v3.0.0")
            ]

            async def image(key: str) -> int:
                return int(
                    await conn.fetchval(
                        "INSERT INTO images (project_id, image_type, s3_bucket, s3_key,"
                        " content_type, byte_size, width, height) VALUES ('p', 'original', 'b',"
                        " $1, 'image/png', 1, 1, 1) RETURNING id",
                        key,
                    )
                )

            rated = {versions[0]: [[4, 2], [5, 5]], versions[1]: [[1, None]]}
            for n, (version, experiments) in enumerate(rated.items()):
                for m, ratings in enumerate(experiments):
                    experiment = f"exp_{n}{m}abcdefghij"
                    await conn.execute(
                        "INSERT INTO experiments (id, project_id, mode, original_image_id,"
                        " prompt_version_id) VALUES ($1, 'p', 'ab', $2, $3)",
                        experiment,
                        await image(experiment),
                        version,
                    )
                    for option, rating in zip("AB", ratings, strict=True):
                        await conn.execute(
                            "INSERT INTO parameter_experiments (experiment_id, image_id, option,"
                            " api, provider, prompt_version_id, parameters, rating) VALUES"
                            " ($1, $2, $3, 'leonardo', 'local', $4, '{}', $5)",
                            experiment,
                            await image(f"{experiment}/{option}"),
                            option,
                            version,
                            rating,
                        )
            (folder / sums.name).write_text(sums.read_text())
            report = await apply_migrations(conn, {"gateway": folder})
            got = {
                r["id"]: (r["rating_sum"], r["rating_count"])
                for r in await conn.fetch(
                    "SELECT id, rating_sum, rating_count FROM prompt_versions"
                )
            }
        finally:
            await conn.close()
    finally:
        await pg.drop_database(pg_admin_dsn, name)
    assert report.applied == [f"gateway/{sums.name}"]
    assert got == {versions[0]: (16, 4), versions[1]: (1, 1), versions[2]: (0, 0)}
