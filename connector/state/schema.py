"""The state store's tables, and the version of their shape."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

task_index = sa.Table(
    "fc_task_index",
    metadata,
    sa.Column("uid", sa.String(36), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("ticket_id", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("closed_by_connector", sa.Boolean, nullable=False, default=False),
    sa.Column("done_at", sa.String(32)),
    sa.Column("updated_at", sa.String(32)),
    # Fragment's view of the task's fields (canonical JSON), their digest and its due date: the
    # mirror that lets a cycle read only what changed in Fragment since the last one, and plan an
    # unchanged task from its digest alone.
    sa.Column("fields", sa.Text),
    sa.Column("digest", sa.LargeBinary(16)),
    sa.Column("due_at", sa.String(32)),
    # Consecutive complete snapshots the task's ticket was missing from (guards.close_after_misses).
    sa.Column("misses", sa.Integer, nullable=False, default=0),
    # The keys the connector last wrote to the task (a JSON list, `due_at` included when it wrote
    # one): those the ticket no longer has are cleared, the operators' own fields never.
    sa.Column("managed", sa.Text),
)

meta = sa.Table(
    "fc_meta",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)

# Bumped when a table changes shape; an older store is dropped and rebuilt (it is a cache).
SCHEMA_VERSION = "5"

cursors = sa.Table(
    "fc_cursors",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
)

# How far the mirror has read Fragment, per source (connector.mirror.Watermark). Added, like
# fc_plans, without a bump of SCHEMA_VERSION: earlier releases kept it in fc_cursors under the
# name `fragment:{source}`, which opening the store moves here (`database.move_watermarks`).
watermarks = sa.Table(
    "fc_watermarks",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("seen", sa.String(32)),
    sa.Column("full_at", sa.String(32)),
    sa.Column("checked_at", sa.String(32)),
)

# The proof that a source's task index is complete (connector.state.census): every task of the
# source that Fragment held before `complete` (Fragment's clock) has a row, and `rows` is how many
# rows the connector's own writes left there, to tell a hand-edited or partly restored index.
# Added, like fc_plans, without a bump of SCHEMA_VERSION: an older store simply has no proof yet.
index_census = sa.Table(
    "fc_index_census",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("complete", sa.String(32), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
)

runs = sa.Table(
    "fc_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("source", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("finished_at", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(48), nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("replica", sa.String(128)),
)

# The running cycle of each source, as its process last reported it (connector.progress): what
# `status` and `/readyz` show while a long first import runs. One row per source; a row whose
# `updated_at` stops moving belongs to a process that died mid-cycle.
progress = sa.Table(
    "fc_progress",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
)

# The last plan of each source and kind of cycle, as the daemon recorded it (connector.status):
# its actions with their reasons, the refusals waiting for a human, the skipped records. Every
# replica reads it, so the status page shows the same picture whichever replica serves it. A
# table added in place of a bump of SCHEMA_VERSION: `create_all` adds it to an older store, whose
# task index (a full re-listing to rebuild) stays, and an older release ignores it.
plans = sa.Table(
    "fc_plans",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("recorded_at", sa.String(32), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
)
