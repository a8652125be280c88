"""The state store: the connector's local memory, one async component behind narrow doors."""

from __future__ import annotations

from connector.state.cursors import Cursors, Watermarks
from connector.state.database import Database
from connector.state.history import ProgressTable, RunHistory
from connector.state.index import TaskIndex


class StateStore:
    """The task index, the mirror's watermarks, the cursors and the history, in one database.

    Open it with `await StateStore.open(url, instance=...)`, close it with `aclose()`. Each door
    is one concept and every call is one short transaction on SQLAlchemy's asyncio engine.

    A store belongs to one `connector.instance`: the task index is keyed by source name, so two
    instances sharing one would read each other's tasks. Opening another instance's store is a
    configuration error.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.instance = db.instance
        self.index = TaskIndex(db)
        self.watermarks = Watermarks(db)
        self.cursors = Cursors(db)
        self.runs = RunHistory(db)
        self.progress = ProgressTable(db)

    @classmethod
    async def open(cls, url: str, *, instance: str) -> StateStore:
        """Open (and create, migrate or claim) the store at `state.url`."""
        db = Database(url, instance=instance)
        await db.open()
        return cls(db)

    async def aclose(self) -> None:
        """Release the database connections."""
        await self._db.close()
