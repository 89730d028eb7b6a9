"""Migration 0002 is exactly the schema pgqueuer installs, for the pinned version."""

from __future__ import annotations

from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

from shared.db.migrations import GATEWAY_MIGRATIONS


def test_job_queue_migration_matches_the_installed_pgqueuer() -> None:
    migration = (GATEWAY_MIGRATIONS / "0002_job_queue_pgqueuer.sql").read_text()
    expected = QueryBuilderEnvironment().build_install_query()
    assert expected.strip() in migration, (
        "pgqueuer's schema changed: add a migration with its upgrade plan"
    )
