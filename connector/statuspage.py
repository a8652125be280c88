"""The status page: the status document (`connector.status`) as one self-contained HTML page.

Jinja2 renders it with autoescaping on, since ticket titles, reasons and errors are hostile text;
ticket links are http(s) only (checked when recorded). No asset comes from outside the process:
the style, the chart (an SVG drawn here) and the small script that refreshes the page's content
in place (so the reader keeps their scroll) are inline, and the Content-Security-Policy allows
exactly those two inline blocks by hash, so even an escaping slip could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

import jinja2

from connector.models import ActionKind

REFRESH_S = 5
KINDS = tuple(kind.value for kind in ActionKind)
CHART_WIDTH = 600
CHART_HEIGHT = 100
CHART_SLOTS = 30  # bars keep one width whether the history holds 3 cycles or 30

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("connector", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

STYLE = _ENV.get_template("status.css").render()
SCRIPT = _ENV.get_template("refresh.js").render(refresh_ms=REFRESH_S * 1000)


def _sha256(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
    return f"'sha256-{digest}'"


PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; "
        f"style-src {_sha256(STYLE)}; script-src {_sha256(SCRIPT)}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _when(value: str | None, now: datetime) -> str:
    """`12:03:04 UTC (3m ago)` or `(in 2m)`."""
    if not value:
        return "—"
    moment = datetime.fromisoformat(value)
    seconds = int((moment - now).total_seconds())
    ahead, seconds = seconds > 0, abs(seconds)
    if seconds < 90:
        span = f"{seconds}s"
    elif seconds < 5400:
        span = f"{seconds // 60}m"
    elif seconds < 172800:
        span = f"{seconds // 3600}h"
    else:
        span = f"{seconds // 86400}d"
    relative = f"in {span}" if ahead else f"{span} ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({relative})"


def chart(per_cycle: list[dict[str, Any]]) -> dict[str, Any]:
    """The bars of the requests-per-cycle chart, in SVG user units."""
    top = max((int(run["requests"]) for run in per_cycle), default=0) or 1
    slot = CHART_WIDTH / max(len(per_cycle), CHART_SLOTS)
    bars = []
    for n, run in enumerate(per_cycle):
        height = round((CHART_HEIGHT - 2) * int(run["requests"]) / top, 1)
        bars.append(
            {
                "x": round(n * slot + slot * 0.1, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(slot * 0.8, 1),
                "height": height,
                "kind": run["kind"],
                "label": f"{run['source']} {run['kind']} cycle, {run['requests']} requests, "
                f"finished {run['finished_at']}",
            }
        )
    return {"bars": bars, "top": top, "width": CHART_WIDTH, "height": CHART_HEIGHT}


def render_page(document: dict[str, Any], *, kind: str | None = None) -> str:
    """The page of one status document; `kind` shows only the plan's actions of that kind."""
    selected = kind if kind in KINDS else None
    now = datetime.fromisoformat(document["generated_at"])
    template = _ENV.get_template("status.html")
    return template.render(
        doc=document,
        kind=selected,
        kinds=KINDS,
        chart=chart(document["budget"]["per_cycle"]),
        when=lambda value: _when(value, now),
        style=STYLE,
        script=SCRIPT,
        refresh_s=REFRESH_S,
    )
