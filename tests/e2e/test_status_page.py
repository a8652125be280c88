"""The status page in a real browser: `fragment-connector run` against the sandbox, the page in
headless Chromium (the distribution's package, driven by Playwright), and `GET /api/status`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import IN_CI, TOKEN, Workspace, make_tickets
from tests.e2e.test_run import free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BASE = "/ops/connector"
HOSTILE_TITLE = f'<script>document.title="pwned"</script><img src=x> leaks {TOKEN}'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian (`.ci/run` installs it; Playwright downloads none)."""
    if shutil.which(CHROMIUM) is None:
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing and CI=true: .ci/run installs Debian's chromium")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def tickets() -> list[dict[str, Any]]:
    rows = make_tickets(24)
    rows.append({"id": "T-hostile", "title": HOSTILE_TITLE, "url": "javascript:alert(1)"})
    rows.append({"id": "T-blank", "title": "   "})  # invalid: no task, shown with its reason
    return rows


@pytest.fixture
def daemon(workspace: Workspace) -> Iterator[str]:
    """The real daemon, its token planted in the config file; yields the page's URL."""
    port = free_port()
    workspace.write_tickets(tickets())
    config = workspace.write_config(
        schedule={"full_refresh": "3s", "jitter": None, "grace_period": "5s"},
        server={"host": "127.0.0.1", "port": port, "base_path": BASE},
    )
    text = config.read_text().replace("fragment:\n", f"fragment:\n  token: {TOKEN}\n", 1)
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run", "--config", str(config)],
        cwd=workspace.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}{BASE}/"

    def planned() -> bool:
        try:
            sources = httpx.get(f"{url}api/status").json()["sources"]
        except (httpx.TransportError, ValueError):
            return False
        return sources[0]["plan"] is not None

    try:
        wait_until(planned, timeout=60)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 0, output


def test_the_page_shows_sources_and_plan_updates_itself_and_filters(
    daemon: str, workspace: Workspace, browser: Browser
) -> None:
    """The per-source table and the plan's actions; the next cycle's refusal appears without a
    reload (scroll kept); the kind filter; hostile ticket text is inert and no secret shows."""
    page: Page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
    response = page.goto(daemon)
    assert response is not None and response.ok, page.content()
    assert page.title() == "fragment-connector · tests"

    row = page.locator('#sources tr[data-source="backoffice"]')
    assert "held here" in row.locator("td.held").inner_text()
    full = row.locator("td.last-full").inner_text()
    assert "ok" in full and "create 25" in full
    waiting = row.locator("td.waiting").inner_text()
    assert "1 invalid record" in waiting and "T-blank" in waiting
    assert "the title is empty" in waiting

    plan = page.locator('section.plan[data-source="backoffice"]')
    creates = plan.locator('tr.action[data-kind="create"]')
    assert creates.count() == 25
    first = plan.locator("tr.action", has=page.get_by_role("link", name="T-0", exact=True))
    assert first.count() == 1 and "new ticket" in first.inner_text()
    assert first.locator("a").get_attribute("href") == "https://backoffice.example/t/0"
    hostile = plan.locator("tr.action", has_text="T-hostile")
    assert hostile.locator("a").count() == 0  # a javascript: url is no link
    assert "<script>" in hostile.inner_text()  # shown as text, never run
    assert page.locator("script").count() == 1 and page.locator("img").count() == 0
    assert page.locator("#chart rect").count() >= 1
    assert TOKEN not in page.content()
    assert "[REDACTED]" in hostile.inner_text()  # the token in the hostile title was masked

    # The next cycles: most tickets leave, so the mass-close guard refuses the closes.
    workspace.write_tickets(make_tickets(2))
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0
    waiting_cell = page.locator('#sources tr[data-source="backoffice"] td.waiting')
    waiting_cell.filter(has_text="mass_close").wait_for(timeout=45_000)  # no reload: in place
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.evaluate("window.scrollY") > 0
    assert "--allow-mass-close" in waiting_cell.inner_text()
    assert "fragment-connector reconcile --source backoffice --allow-mass-close" in (
        waiting_cell.locator("code").inner_text()
    )

    page.get_by_role("link", name="close", exact=True).click()
    page.wait_for_url("**/?kind=close")
    actions = page.locator('section.plan[data-source="backoffice"] tr.action')
    assert actions.count() == 23
    assert {actions.nth(n).get_attribute("data-kind") for n in range(actions.count())} == {"close"}
    assert "refused" in actions.first.inner_text()
    page.get_by_role("link", name="create", exact=True).click()
    page.wait_for_url("**/?kind=create")
    assert page.locator("section.plan tr.action").count() == 0
    assert "no create actions" in page.locator("section.plan").inner_text()

    assert TOKEN not in page.content()
    assert page.title() == "fragment-connector · tests"  # the title's script never ran
    page.close()


def test_api_status_is_the_versioned_document(daemon: str) -> None:
    """`GET /api/status` under the base path: version 1, the sources, the plan, no secret."""
    response = httpx.get(f"{daemon}api/status")
    assert response.status_code == 200
    assert TOKEN not in response.text
    document = response.json()
    assert document["version"] == 1 and document["instance"] == "tests"
    source = document["sources"][0]
    assert source["name"] == "backoffice" and source["held"] == "here"
    assert source["last_full"]["outcome"] == "ok"
    assert source["plan"]["kind"] == "full"
    kinds = {action["kind"] for action in source["plan"]["actions"]}
    assert kinds <= {"create", "update", "close", "reopen"}
    assert document["budget"]["limit_per_minute"] == 100000
    assert document["budget"]["per_cycle"][0]["requests"] > 0
    page = httpx.get(daemon)
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'sha256-" in page.headers["content-security-policy"]
    redirect = httpx.get(daemon.rstrip("/"))
    assert redirect.status_code == 308 and redirect.headers["location"].endswith(f"{BASE}/")
    root = daemon.removesuffix(f"{BASE}/")
    assert httpx.get(f"{root}/").status_code == 404  # only under the base path
    assert httpx.get(f"{root}/metrics").status_code == 200  # the probes stay at the root
