"""Task identity and ownership: which Fragment task belongs to which ticket, and to us at all.

A task's uid is `uuid5(namespace, "{source}:{ticket_id}")`, the namespace derived from a project
constant and the configured instance name. The same ticket always maps to the same task, so every
write is a retry-safe PUT/PATCH; and a task is ours only when its marker fields name a source and a
ticket id whose uid is the task's own uid, so foreign tasks can never be taken for ours.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from connector.models import Task

PROJECT_NAMESPACE: Final = uuid.UUID("6f1b2c1e-4a57-5d43-9b0e-3c6a8f9e2d10")
CLOSED_BY_CONNECTOR: Final = "connector"


def instance_namespace(instance: str) -> uuid.UUID:
    """The uid namespace of one deployment (`connector.instance`)."""
    return uuid.uuid5(PROJECT_NAMESPACE, instance)


@functools.lru_cache(maxsize=64)
def _namespace_bytes(namespace: uuid.UUID) -> bytes:
    return namespace.bytes


def task_uid(namespace: uuid.UUID, source: str, ticket_id: str) -> str:
    """The stable uid of a ticket's task: `str(uuid5(namespace, f"{source}:{ticket_id}"))`."""
    # uuid.uuid5 written out: the UUID object costs more than the hash, for every ticket and
    # every task of every cycle. tests/unit checks both give the same uid.
    name = _namespace_bytes(namespace) + f"{source}:{ticket_id}".encode()
    digest = bytearray(hashlib.sha1(name).digest()[:16])  # noqa: S324 - uuid5 is SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Markers:
    """Names of the custom fields that mark a task as the connector's."""

    source: str = "fc_source"
    ticket_id: str = "fc_ticket_id"
    closed_by: str = "fc_closed_by"
    # When the connector told the back-office of an operator's DONE (write-back), ISO time.
    written_back: str = "fc_written_back"

    @property
    def names(self) -> frozenset[str]:
        """All marker field names."""
        return frozenset((self.source, self.ticket_id, self.closed_by, self.written_back))


def owned_ticket_id(
    task: Task,
    *,
    source: str,
    namespace: uuid.UUID,
    markers: Markers,
    uids: Mapping[str, str] | None = None,
) -> str | None:
    """The ticket id a task belongs to, or None when the task is not this source's.

    `uids` are the uids this cycle computed already (ticket id -> uid): not hashed again.
    """
    if task.fields.get(markers.source) != source:
        return None
    ticket_id = task.fields.get(markers.ticket_id)
    if not isinstance(ticket_id, str) or not ticket_id:
        return None
    expected = uids.get(ticket_id) if uids else None
    if (expected or task_uid(namespace, source, ticket_id)) != task.uid:
        return None
    return ticket_id


def closed_by_connector(task: Task, markers: Markers) -> bool:
    """Whether a DONE task was closed by the connector (rather than by an operator)."""
    return task.fields.get(markers.closed_by) == CLOSED_BY_CONNECTOR
