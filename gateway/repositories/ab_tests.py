"""A/B tests of prompt versions: slots claimed by uploads, the ratings and the recorded
decision (``gateway.domain.ab_tests`` decides), the views of the API.

Slot k of a test (k = 1 .. ``samples_planned``) is the k-th upload after the new version was
created (``arm_of``: samples 11, 13, 15 old and 12, 14 new after an evolution at sample 10).
The version is fixed when the slot is claimed, before rendering. Claims take the running test's
row lock, so concurrent uploads get distinct slots and the split stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.domain.ab_tests import Arm, Verdict, arm_of
from gateway.repositories import prompts
from shared.db.pool import Conn
from shared.wire.gateway import ABTestArmView, ABTestView


@dataclass(frozen=True)
class SlotClaim:
    ab_test_id: int
    slot: int
    arm: Arm
    version: prompts.PromptVersion


async def running(conn: Conn, *, lock: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM ab_tests WHERE status = 'running'" + (" FOR UPDATE" if lock else "")
    )
    return dict(row) if row else None


async def create(
    conn: Conn, *, evolution_sample: int | None, old_id: int, new_id: int, planned: int
) -> int:
    value = await conn.fetchval(
        """
        INSERT INTO ab_tests (evolution_sample, old_version_id, new_version_id, samples_planned)
        VALUES ($1, $2, $3, $4) RETURNING id
        """,
        evolution_sample,
        old_id,
        new_id,
        planned,
    )
    return int(value)


async def claim_slot(conn: Conn, experiment_id: str, ttl_seconds: float) -> SlotClaim | None:
    """Give ``experiment_id`` the next free slot of the running test (inside a transaction).

    A slot is free when never claimed, released, or claimed longer than ``ttl_seconds`` ago by
    an experiment that is still unrated (an abandoned upload). None: no test needs an upload.
    """
    test = await running(conn, lock=True)
    if test is None:
        return None
    slot = await conn.fetchval(
        """
        SELECT k FROM generate_series(1, $2::int) AS k
        WHERE NOT EXISTS (SELECT 1 FROM ab_slots s WHERE s.ab_test_id = $1 AND s.slot = k)
        ORDER BY k LIMIT 1
        """,
        test["id"],
        test["samples_planned"],
    )
    if slot is not None:
        await conn.execute(
            "INSERT INTO ab_slots (ab_test_id, slot, arm, experiment_id) VALUES ($1, $2, $3, $4)",
            test["id"],
            slot,
            arm_of(slot),
            experiment_id,
        )
    else:
        slot = await conn.fetchval(
            """
            UPDATE ab_slots SET experiment_id = $3, claimed_at = now()
            WHERE (ab_test_id, slot) = (
                SELECT s.ab_test_id, s.slot FROM ab_slots s
                LEFT JOIN experiments e ON e.id = s.experiment_id
                WHERE s.ab_test_id = $1
                  AND s.claimed_at < now() - make_interval(secs => $2)
                  AND (e.id IS NULL OR e.sample_number IS NULL)
                ORDER BY s.slot LIMIT 1
                FOR UPDATE OF s SKIP LOCKED)
            RETURNING slot
            """,
            test["id"],
            ttl_seconds,
            experiment_id,
        )
        if slot is None:
            return None
    arm = arm_of(slot)
    version_id = test["old_version_id"] if arm == "old" else test["new_version_id"]
    return SlotClaim(test["id"], slot, arm, await prompts.by_id(conn, version_id))


async def release_slot(conn: Conn, experiment_id: str) -> None:
    """The upload failed before its experiment existed: the slot goes to the next one."""
    await conn.execute("DELETE FROM ab_slots WHERE experiment_id = $1", experiment_id)


async def test_of(conn: Conn, experiment_id: str) -> int | None:
    value = await conn.fetchval(
        "SELECT ab_test_id FROM ab_slots WHERE experiment_id = $1", experiment_id
    )
    return int(value) if value is not None else None


async def rated(conn: Conn, ab_test_id: int) -> dict[Arm, dict[str, list[int]]]:
    """arm -> experiment id -> the ratings of its options, for rated slot experiments (ratings
    are written only by the transaction that numbers their sample, so those of the rating in
    progress count before its number is drawn)."""
    rows = await conn.fetch(
        """
        SELECT s.arm, s.experiment_id, r.rating
        FROM ab_slots s
        JOIN enhancement_ratings r ON r.experiment_id = s.experiment_id
        WHERE s.ab_test_id = $1
        ORDER BY s.slot, r.option
        """,
        ab_test_id,
    )
    out: dict[Arm, dict[str, list[int]]] = {"old": {}, "new": {}}
    for r in rows:
        out[r["arm"]].setdefault(r["experiment_id"], []).append(int(r["rating"]))
    return out


async def lock_if_running(conn: Conn, ab_test_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM ab_tests WHERE id = $1 AND status = 'running' FOR UPDATE", ab_test_id
    )
    return dict(row) if row else None


async def record_verdict(conn: Conn, ab_test_id: int, verdict: Verdict) -> None:
    decision = verdict.decision
    await conn.execute(
        """
        UPDATE ab_tests SET status = 'decided', decided_at = now(), winner = $2,
            old_n = $3, old_mean = $4, new_n = $5, new_mean = $6, p_new_better = $7,
            promoted = $8
        WHERE id = $1
        """,
        ab_test_id,
        decision.winner,
        verdict.old_samples,
        decision.old_mean,
        verdict.new_samples,
        decision.new_mean,
        decision.p_new_better,
        verdict.promote,
    )


async def cancel_running(conn: Conn, note: str) -> int | None:
    """Stop the running test without a decision (a manual promotion overrides it)."""
    test = await running(conn, lock=True)
    if test is None:
        return None
    await conn.execute(
        "UPDATE ab_tests SET status = 'cancelled', note = $2, decided_at = NULL WHERE id = $1",
        test["id"],
        note,
    )
    await prompts.set_status(conn, test["new_version_id"], "candidate")
    return int(test["id"])


_VIEW_SQL = """
    SELECT t.*, o.version AS old_version, n.version AS new_version
    FROM ab_tests t
    JOIN prompt_versions o ON o.id = t.old_version_id
    JOIN prompt_versions n ON n.id = t.new_version_id
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def _view(conn: Conn, row: Any) -> ABTestView:
    by_arm = await rated(conn, row["id"])
    names = {"old": row["old_version"], "new": row["new_version"]}
    versions: dict[str, ABTestArmView] = {}
    for arm, experiments in by_arm.items():  # old, then new
        ratings = [x for rs in experiments.values() for x in rs]
        versions[names[arm]] = ABTestArmView(
            n=len(experiments),
            ratings=len(ratings),
            mean=round(sum(ratings) / len(ratings), 3) if ratings else None,
        )
    return ABTestView(
        id=row["id"],
        old=names["old"],
        new=names["new"],
        status=row["status"],
        samples=sum(len(v) for v in by_arm.values()),
        of=row["samples_planned"],
        avg={name: v.mean for name, v in versions.items()},
        versions=versions,
        winner=names[row["winner"]] if row["winner"] else None,
        p_new_better=row["p_new_better"],
        promoted=row["promoted"],
        evolution_sample=row["evolution_sample"],
        note=row["note"],
        created_at=_iso(row["created_at"]),
        decided_at=_iso(row["decided_at"]),
    )


async def view(conn: Conn, ab_test_id: int) -> ABTestView:
    row = await conn.fetchrow(_VIEW_SQL + " WHERE t.id = $1", ab_test_id)
    assert row is not None, ab_test_id
    return await _view(conn, row)


async def running_view(conn: Conn) -> ABTestView | None:
    row = await conn.fetchrow(_VIEW_SQL + " WHERE t.status = 'running'")
    return await _view(conn, row) if row else None


async def list_views(conn: Conn) -> list[ABTestView]:
    rows = await conn.fetch(_VIEW_SQL + " ORDER BY t.id DESC")
    return [await _view(conn, r) for r in rows]


async def export_record(conn: Conn, ab_test_id: int) -> dict[str, Any]:
    """What ``experiments/experiment_NNN.json`` holds: the view plus every slot's sample."""
    record = (await view(conn, ab_test_id)).model_dump(mode="json")
    rows = await conn.fetch(
        """
        SELECT s.slot, s.arm, s.experiment_id, e.sample_number,
               coalesce(array_agg(r.rating ORDER BY r.option)
                        FILTER (WHERE r.rating IS NOT NULL), '{}') AS ratings
        FROM ab_slots s
        LEFT JOIN experiments e ON e.id = s.experiment_id
        LEFT JOIN enhancement_ratings r ON r.experiment_id = e.id
        WHERE s.ab_test_id = $1
        GROUP BY s.slot, s.arm, s.experiment_id, e.sample_number
        ORDER BY s.slot
        """,
        ab_test_id,
    )
    record["slots"] = [
        {
            "slot": r["slot"],
            "arm": r["arm"],
            "version": record[r["arm"]],
            "experiment_id": r["experiment_id"],
            "sample_number": r["sample_number"],
            "ratings": list(r["ratings"]),
        }
        for r in rows
    ]
    return record
