"""The connector's local memory: task index, mirror watermarks, cursors and run history (SQL).

The index is a cache of Fragment, never the truth (`index.py`); each source's incremental cursor
is written only once its changes were applied; the history of runs, the last plans and the
running cycles' progress are what `status` and the status page read. Losing any of it is
harmless: the next cycle lists Fragment again.
"""

from connector.state.census import Census
from connector.state.cursors import Cursors, StoredWatermark, Watermarks
from connector.state.database import (
    database_url,
    is_postgres,
    missing_sqlite_file,
)
from connector.state.history import HISTORY_PER_SOURCE, ProgressTable, RunHistory, RunRecord
from connector.state.index import UNSEEN, IndexEntry, TaskIndex
from connector.state.schema import SCHEMA_VERSION
from connector.state.session import Session, close_session, open_session
from connector.state.store import StateStore

__all__ = [
    "HISTORY_PER_SOURCE",
    "SCHEMA_VERSION",
    "UNSEEN",
    "Census",
    "Cursors",
    "IndexEntry",
    "ProgressTable",
    "RunHistory",
    "RunRecord",
    "Session",
    "StateStore",
    "StoredWatermark",
    "TaskIndex",
    "Watermarks",
    "close_session",
    "database_url",
    "is_postgres",
    "missing_sqlite_file",
    "open_session",
]
