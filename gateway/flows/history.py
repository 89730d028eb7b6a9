"""``GET /api/train/history``: experiments newest first, keyset-paginated."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from gateway.errors import InvalidInput
from gateway.flows.unit_of_work import UnitOfWorkFactory
from shared.storage import ObjectStore
from shared.wire.gateway import HistoryItem, HistoryOption, HistoryPage, ImageRef


def encode_cursor(created_at: datetime, experiment_id: str) -> str:
    raw = f"{created_at.isoformat()}|{experiment_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, experiment_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), experiment_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("cursor is not one this API issued", code="invalid_cursor") from exc


async def training_history(
    uows: UnitOfWorkFactory,
    store: ObjectStore,
    *,
    limit: int,
    cursor: str | None,
    project_id: str | None,
    url_ttl: int,
    trainer: str | None = None,
    min_rating: int | None = None,
    max_rating: int | None = None,
) -> HistoryPage:
    after = decode_cursor(cursor) if cursor else None
    async with uows.read() as uow:
        rows = await uow.history.page(
            limit=limit + 1,
            after=after,
            project_id=project_id,
            trainer=trainer,
            min_rating=min_rating,
            max_rating=max_rating,
        )
        options = await uow.history.options_for([r["id"] for r in rows[:limit]])
    items = []
    for row in rows[:limit]:
        item_options = []
        for o in options.get(row["id"], []):
            item_options.append(
                HistoryOption(
                    option=o["option"],
                    api=o["api"],
                    provider=o["provider"],
                    image_id=o["image_id"],
                    url=await store.url(o["s3_bucket"], o["s3_key"], url_ttl),
                    parameters=o["parameters"],
                    strategy=o["strategy"],
                    rating=o["rating"],
                    comments=o["comments"],
                )
            )
        items.append(
            HistoryItem(
                experiment_id=row["id"],
                project_id=row["project_id"],
                mode=row["mode"],
                prompt_version=row["prompt_version"],
                created_at=row["created_at"].isoformat(),
                created_by=row["created_by"],
                sample_number=row["sample_number"],
                rated_at=row["rated_at"].isoformat() if row["rated_at"] else None,
                rated_by=row["rated_by"],
                rated_by_name=row["rated_by"],
                original=ImageRef(
                    image_id=row["original_image_id"],
                    url=await store.url(row["o_bucket"], row["o_key"], url_ttl),
                ),
                options=item_options,
            )
        )
    last = rows[limit - 1] if len(rows) > limit else None
    return HistoryPage(
        items=items,
        next_cursor=encode_cursor(last["created_at"], last["id"]) if last else None,
    )
