"""The mirror's watermark: when a drift check or a full listing is due, at the time it is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connector.config import Settings
from connector.mirror import Watermark

LISTED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def test_the_checks_fall_due_exactly_at_their_intervals() -> None:
    """A count check `drift_check_every` after the last one (or the last full listing), a full
    listing `full_listing_every` after the last one; never before."""
    settings = Settings()
    every_check = settings.fragment.drift_check_every
    every_full = settings.fragment.full_listing_every
    mark = Watermark().after_listing(LISTED - timedelta(minutes=2), now=LISTED, full=True)
    assert (mark.seen, mark.full_at, mark.checked_at) == (
        LISTED - timedelta(minutes=2),
        LISTED,
        LISTED,
    )
    assert not mark.drift_check_due(settings, now=LISTED + every_check - TICK)
    assert mark.drift_check_due(settings, now=LISTED + every_check)
    assert not mark.full_listing_due(settings, now=LISTED + every_full - TICK)
    assert mark.full_listing_due(settings, now=LISTED + every_full)

    later = LISTED + every_check
    checked = mark.after_listing(later, now=later, full=False, checked=True)
    assert (checked.full_at, checked.checked_at) == (LISTED, later)
    assert not checked.drift_check_due(settings, now=later + every_check - TICK)
    delta = mark.after_listing(later, now=later, full=False)
    assert (delta.seen, delta.full_at, delta.checked_at) == (later, LISTED, LISTED)


def test_an_unknown_source_is_listed_in_full() -> None:
    """No watermark yet (a first import, a lost store): a full listing and a check are due."""
    assert Watermark().full_listing_due(Settings(), now=LISTED)
    assert Watermark().drift_check_due(Settings(), now=LISTED)
