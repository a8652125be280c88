"""Issue 15, items 6, 7 and 8: a hostile Fragment (or a proxy before it) never stalls the connector.

The sandbox behind `FragmentProxy`, through the real command line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Workspace, make_tickets
from tests.fakes.fragment_proxy import FragmentProxy


@pytest.fixture
def proxy(workspace: Workspace) -> Iterator[FragmentProxy]:
    with FragmentProxy(workspace.sandbox.base_url) as server:
        workspace.write_config(fragment={"base_url": server.base_url, "retry_deadline": "30s"})
        yield server


def test_a_body_limit_splits_batches_and_names_the_batch_size_that_fits(
    workspace: Workspace, proxy: FragmentProxy
) -> None:
    """Item 7: a 413 is a batch too large: split, applied, and the fitting batch_size is named."""
    workspace.write_tickets(make_tickets(100))
    proxy.max_body = 12_000  # about 30 tasks of make_tickets
    result = workspace.reconcile()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(workspace.tasks()) == 100
    assert "set fragment.batch_size to" in result.stderr
    assert max(proxy.bodies) <= 12_000
    # The later batches were split up front: few 413s, not one per batch and level.
    refused = [h for h in proxy.hits() if h.status == 413]
    assert 1 <= len(refused) <= 3, len(refused)


def test_a_listing_with_fresh_cursors_forever_is_stopped(
    workspace: Workspace, proxy: FragmentProxy
) -> None:
    """Item 6: the same tasks under a new cursor each time: stopped at once, a Fragment error."""
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    proxy.endless = True
    began = time.monotonic()
    result = workspace.reconcile()
    assert result.returncode == 1
    assert "brought no task not already listed" in result.stdout, result.stdout
    assert proxy.listing_pages() < 10
    assert time.monotonic() - began < 30


def test_a_listing_of_fresh_tasks_forever_is_stopped_by_the_total_count(
    workspace: Workspace, proxy: FragmentProxy
) -> None:
    """Item 6: new uids on every page: stopped past the bound meta.total_count allows."""
    workspace.write_tickets(make_tickets(5))
    assert workspace.reconcile().returncode == 0
    proxy.endless = proxy.fresh_uids = True
    result = workspace.reconcile("--dry-run")
    assert result.returncode == 1
    assert "where meta.total_count said 5" in result.stdout, result.stdout
    assert proxy.listing_pages() < 100


def test_a_retry_after_past_the_deadline_gives_up_at_once(
    workspace: Workspace, proxy: FragmentProxy
) -> None:
    """Item 8: Retry-After 3600 with 30 s of deadline: no wait, a message saying why."""
    workspace.write_tickets(make_tickets(2))
    proxy.retry_after = "3600"
    began = time.monotonic()
    result = workspace.reconcile()
    took = time.monotonic() - began
    assert result.returncode == 1
    assert "Retry-After asked for 3600s" in result.stdout, result.stdout
    assert "fragment.retry_deadline: not retried" in result.stdout
    assert took < 20, took
