"""Regenerate docs/status-page.png: the status page after the demo's cycles, in headless Chromium.

    .venv/bin/python scripts/status_screenshot.py [docs/status-page.png]

Runs `fragment-connector demo` into a temporary directory, builds the status document from the
demo's state store exactly as the daemon does, serves it with the daemon's headers (its
Content-Security-Policy included) to Debian's chromium through Playwright, and saves the page.
Run it again whenever the page changes.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Route, sync_playwright
from rich.console import Console

from connector.clock import SYSTEM_CLOCK
from connector.demo import INSTANCE, SOURCE, demo_settings, run_demo
from connector.state import StateStore
from connector.status import status_document
from connector.statuspage import PAGE_HEADERS, render_page

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
URL = "http://connector.internal:8080/"


def main(out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="fragment-status-") as tmp:
        workdir = Path(tmp)
        if run_demo(workdir, Console(file=io.StringIO())) != 0:
            print("the demo failed: no screenshot", file=sys.stderr)
            return 1
        settings = demo_settings(workdir, "http://127.0.0.1:9", "sandbox-token")
        store = StateStore(settings.state.url, instance=INSTANCE)
        try:
            document = status_document(
                settings,
                store,
                holdings={SOURCE: "held"},
                replica="connector-7d9f-x2:1",
                now=SYSTEM_CLOCK.now(),
            )
        finally:
            store.close()
    html = render_page(document)

    def serve(route: Route) -> None:
        route.fulfill(status=200, body=html, content_type="text/html", headers=PAGE_HEADERS)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.route(URL, serve)
        page.goto(URL)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/status-page.png")))
