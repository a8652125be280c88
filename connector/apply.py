"""Applying a plan: its actions sent to Fragment in full batches, each item's outcome reported.

Creates go in `PUT /tasks/batch` chunks, everything else (updates, reopens, closes) in
`PATCH /tasks/batch` chunks, `batch_size` items each, so a cycle's writes are ceil(changes / batch).
A 422 names the bad items: they are reported and the rest of the chunk is sent again (a 422
without item positions is bisected). A 413 (a proxy's body limit) splits the chunk in halves until
it fits, later chunks are split to that size up front, and a warning names the
`fragment.batch_size` that fits. A 200 is checked item by item: each uid sent must come back
holding what was written, and not be named in the answer's `errors`; an item that does not is a
failed action (planned again next cycle, from what Fragment shows then). Any other failure
(Fragment down past the retry deadline, token refused) stops the run: the unsent actions are
reported as failed and the next cycle, planned afresh from Fragment, picks them up. Nothing is
ever half-trusted. The tasks Fragment returns are handed over chunk by chunk (`on_applied`), not
kept: a 100k initial sync would hold them all otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from connector.errors import FragmentError, FragmentPayloadTooLarge, FragmentValidationError
from connector.fragment import BatchAnswer, FragmentClient
from connector.models import Action, ActionFailure, ActionKind, JSONValue, Task
from connector.values import parse_timestamp, same

log = structlog.get_logger(__name__)

Send = Callable[[Sequence[Mapping[str, JSONValue]]], Awaitable[BatchAnswer]]
Progress = Callable[[int], None]
Applied = Callable[[list[tuple[Action, Task | None]]], Awaitable[None]]


@dataclass
class ApplyResult:
    """What was applied and what failed."""

    applied: list[Action] = field(default_factory=list)
    failures: list[ActionFailure] = field(default_factory=list)
    fatal: FragmentError | None = None


def _chunks(actions: Sequence[Action], size: int) -> list[list[Action]]:
    return [list(actions[i : i + size]) for i in range(0, len(actions), size)]


@dataclass
class _Fit:
    """What 413s taught about the body size Fragment (or a proxy before it) accepts."""

    refused: int | None = None  # the smallest batch refused as too large
    accepted: int = 0  # the largest batch accepted since

    def advice(self, batch_size: int) -> str | None:
        if self.refused is None:
            return None
        fits = self.accepted or 1
        return (
            f"batches of {self.refused} were refused as too large (413) and split; batches of "
            f"{fits} went through: set fragment.batch_size to {fits} (it is {batch_size})"
        )


async def _send_isolating(
    send: Send,
    chunk: list[Action],
    result: ApplyResult,
    on_applied: Applied | None,
    fit: _Fit | None = None,
) -> None:
    """Send a chunk; on a 422, report the bad items and send the rest again; on a 413, split."""
    fit = fit if fit is not None else _Fit()
    if fit.refused is not None and len(chunk) >= fit.refused and len(chunk) > 1:
        # Known to be too large: split without sending it again.
        middle = len(chunk) // 2
        await _send_isolating(send, chunk[:middle], result, on_applied, fit)
        await _send_isolating(send, chunk[middle:], result, on_applied, fit)
        return
    try:
        returned = await send([a.payload for a in chunk])
    except FragmentPayloadTooLarge as exc:
        if len(chunk) == 1:
            result.failures.append(ActionFailure(chunk[0], f"refused by Fragment: {exc}"))
            return
        fit.refused = min(fit.refused or len(chunk), len(chunk))
        log.warning("apply.batch_too_large", size=len(chunk), error=str(exc))
        await _send_isolating(send, chunk, result, on_applied, fit)
        return
    except FragmentValidationError as exc:
        bad = {i: msg for i, msg in exc.item_errors.items() if 0 <= i < len(chunk)}
        if bad:
            for index, message in sorted(bad.items()):
                result.failures.append(
                    ActionFailure(chunk[index], f"refused by Fragment: {message}")
                )
                log.warning(
                    "apply.item_refused",
                    uid=chunk[index].uid,
                    ticket_id=chunk[index].ticket_id,
                    error=message,
                )
            rest = [a for i, a in enumerate(chunk) if i not in bad]
            if rest:
                await _send_isolating(send, rest, result, on_applied, fit)
        elif len(chunk) > 1:
            middle = len(chunk) // 2
            await _send_isolating(send, chunk[:middle], result, on_applied, fit)
            await _send_isolating(send, chunk[middle:], result, on_applied, fit)
        else:
            result.failures.append(ActionFailure(chunk[0], f"refused by Fragment: {exc}"))
        return
    if fit.refused is not None:
        fit.accepted = max(fit.accepted, len(chunk))
    by_uid = {task.uid: task for task in returned.tasks}
    done: list[tuple[Action, Task | None]] = []
    for index, action in enumerate(chunk):
        task = by_uid.get(action.uid)
        problem = returned.errors.get(action.uid) or returned.errors.get(f"#{index}")
        if problem is None:
            problem = not_honoured(action.payload, task)
        if problem is not None:
            result.failures.append(ActionFailure(action, f"not applied: {problem}"))
            log.warning(
                "apply.item_not_applied", uid=action.uid, ticket_id=action.ticket_id, error=problem
            )
            continue
        result.applied.append(action)
        done.append((action, task))
    if on_applied is not None and done:
        await on_applied(done)


def not_honoured(payload: Mapping[str, JSONValue], task: Task | None) -> str | None:
    """Why a task in a batch answer does not show the write `payload` (None: it does)."""
    if task is None:
        return "Fragment's answer did not include the task"
    status = payload.get("status")
    if status is not None and task.status.value != status:
        return f"Fragment answered status {task.status.value}, not {status}"
    fields = payload.get("fields")
    for key, value in fields.items() if isinstance(fields, Mapping) else ():
        if not same(task.fields.get(key), value):
            return f"Fragment answered field {key!r} without the value written"
    due = payload.get("due_at")
    if isinstance(due, str) and task.due_at != parse_timestamp(due):
        return "Fragment answered another due_at than the one written"
    return None


async def apply_actions(
    client: FragmentClient,
    actions: Sequence[Action],
    *,
    batch_size: int,
    may_send: Callable[[], Awaitable[bool]] | None = None,
    progress: Progress | None = None,
    on_applied: Applied | None = None,
) -> ApplyResult:
    """Send `actions` in batches; creates by PUT, the rest by PATCH.

    `may_send` is asked before every batch; False leaves that batch and the rest unsent.
    `on_applied` gets each applied chunk with the tasks Fragment returned (None when it did not).
    """
    creates = [a for a in actions if a.kind is ActionKind.CREATE]
    patches = [a for a in actions if a.kind is not ActionKind.CREATE]
    batches: list[tuple[Send, list[Action]]] = [
        *((client.put_batch, chunk) for chunk in _chunks(creates, batch_size)),
        *((client.patch_batch, chunk) for chunk in _chunks(patches, batch_size)),
    ]
    result = ApplyResult()
    fit = _Fit()
    for position, (send, chunk) in enumerate(batches):
        if may_send is not None and not await may_send():
            _fail_rest(result, batches[position:], "not sent: the cycle stopped")
            break
        try:
            await _send_isolating(send, chunk, result, on_applied, fit)
        except FragmentError as exc:
            result.fatal = exc
            # This chunk went out, and Fragment may have applied it (an answer lost): sent.
            _fail_rest(result, batches[position:], f"not applied: {exc}", sent_first=True)
            break
        if progress is not None:
            progress(len(chunk))
    advice = fit.advice(batch_size)
    if advice is not None:
        log.warning("apply.batch_size_too_large", advice=advice)
    return result


def _fail_rest(
    result: ApplyResult,
    batches: list[tuple[Send, list[Action]]],
    why: str,
    *,
    sent_first: bool = False,
) -> None:
    # Part of the current chunk may already be settled (a 422 isolated before the failure).
    settled = {a.uid for a in result.applied} | {f.action.uid for f in result.failures}
    for position, (_, chunk) in enumerate(batches):
        sent = sent_first and position == 0
        result.failures.extend(
            ActionFailure(a, why, sent=sent) for a in chunk if a.uid not in settled
        )
