"""Per source: the adapter's incremental cursor, and how far the mirror has read Fragment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa

from connector.state.database import Database
from connector.state.schema import cursors, watermarks
from connector.values import parse_timestamp


class Cursors:
    """Each source's incremental cursor (`fc_cursors`): opaque text its adapter gave."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, source: str) -> str | None:
        """The incremental cursor stored for a source, if any."""
        async with self._db.read(f"read the cursor of {source!r}") as conn:
            row = await conn.execute(sa.select(cursors.c.cursor).where(cursors.c.source == source))
            value = row.scalar_one_or_none()
        return value if isinstance(value, str) else None

    async def set(self, source: str, cursor: str | None) -> None:
        """Store (or, with None, drop) a source's incremental cursor."""
        async with self._db.write(f"write the cursor of {source!r}") as conn:
            await conn.execute(sa.delete(cursors).where(cursors.c.source == source))
            if cursor is not None:
                now = datetime.now(UTC).isoformat()
                await conn.execute(
                    sa.insert(cursors), [{"source": source, "cursor": cursor, "updated_at": now}]
                )


class StoredWatermark(NamedTuple):
    """A source's watermark as stored (its meaning: `connector.mirror.Watermark`)."""

    seen: datetime | None = None
    full_at: datetime | None = None
    checked_at: datetime | None = None


class Watermarks:
    """Each source's watermark (`fc_watermarks`): when its last listing of Fragment started, and
    when its last full listing and count check were."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, source: str) -> StoredWatermark:
        """The source's watermark (all None: Fragment not read yet)."""
        columns = watermarks.c
        query = sa.select(columns.seen, columns.full_at, columns.checked_at).where(
            columns.source == source
        )
        async with self._db.read(f"read the watermark of {source!r}") as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return StoredWatermark()
        return StoredWatermark(*(parse_timestamp(stamp) for stamp in row))

    async def set(self, source: str, mark: StoredWatermark) -> None:
        """Replace the source's watermark."""
        row = {
            "source": source,
            **{key: stamp.isoformat() if stamp else None for key, stamp in mark._asdict().items()},
        }
        async with self._db.write(f"write the watermark of {source!r}") as conn:
            await conn.execute(sa.delete(watermarks).where(watermarks.c.source == source))
            await conn.execute(sa.insert(watermarks), [row])
