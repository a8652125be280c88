"""Issue 15, item 2: no credential follows a redirect to another origin."""

from __future__ import annotations

import pytest

from adapters.base import AdapterConfigError
from adapters.http import get_json, make_client
from tests.conftest import Workspace
from tests.fakes.echo import EchoServer, Redirector

KEY = "redirect-api-key-6d1f0a"
HEADER = "redirect-header-3b7e22"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_rest_source_refuses_a_redirect_to_another_origin(
    workspace: Workspace, status: int
) -> None:
    """Through the CLI: the source fails with a clear message; the other host sees nothing."""
    with EchoServer() as elsewhere, Redirector(elsewhere.url, status) as backoffice:
        options = {
            "base_url": backoffice.url,
            "auth": {"type": "api_key", "in": "header", "name": "X-Api-Key", "key": KEY},
            "headers": {"X-Tenant-Token": HEADER},
            "mapping": {"id": "id", "title": "title"},
            "retry": {"attempts": 1},
        }
        workspace.write_config(sources=[{"name": "api", "adapter": "rest", "options": options}])
        result = workspace.reconcile()
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"answered {status} to another origin" in result.stdout
        assert "not followed" in result.stdout
        assert backoffice.hits() and not elsewhere.hits()
    assert KEY not in result.stdout + result.stderr and HEADER not in result.stdout


async def test_every_adapter_client_stays_on_its_origin() -> None:
    """`make_client` (every built-in adapter's client) follows same-origin redirects only."""
    with EchoServer(status=200) as elsewhere, Redirector(elsewhere.url) as first:
        async with make_client(first.url, headers={"X-Api-Key": KEY}) as client:
            with pytest.raises(AdapterConfigError, match="to another origin"):
                await get_json(client, "/tickets")
        assert not elsewhere.hits()
    with Redirector("") as moved:
        moved.target = f"{moved.url}/landed"
        async with make_client(moved.url, headers={"X-Api-Key": KEY}) as client:
            answer = await get_json(client, "/tickets")
        assert answer["headers"]["x-api-key"] == KEY
