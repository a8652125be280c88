"""A hostile proxy in front of the sandbox Fragment: a body limit, endless cursors, long waits.

Every request is forwarded to the sandbox (`upstream`, its `/api/v1` base URL) unless a knob says
otherwise: `max_body` answers 413 to a larger body (nginx's `client_max_body_size`), `endless`
gives every `GET /tasks` answer a fresh `next_cursor` (and `fresh_uids` also fresh task uids),
`retry_after` answers the next `GET /tasks` with 429 and that `Retry-After`.
"""

from __future__ import annotations

import itertools
import uuid

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer


class FragmentProxy(FakeServer):
    """Forwards /api/v1/... to the sandbox, with hostile knobs."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.max_body: int | None = None
        self.endless = False
        self.fresh_uids = False
        self.retry_after: str | None = None
        self.bodies: list[int] = []  # sizes of the write bodies that reached the sandbox
        self._counter = itertools.count()

    @property
    def base_url(self) -> str:
        return f"{self.url}/api/v1"

    def listing_pages(self) -> int:
        return sum(1 for h in self.hits() if h.path == "/api/v1/tasks")

    def routes(self) -> list[BaseRoute]:
        async def forward(request: Request) -> Response:
            body = await request.body()
            path = request.url.path.removeprefix("/api/v1")
            if self.max_body is not None and len(body) > self.max_body:
                return Response("<html>413 Request Entity Too Large</html>", status_code=413)
            if path == "/tasks" and request.method == "GET" and self.retry_after is not None:
                wait, self.retry_after = self.retry_after, None
                return JSONResponse({"detail": "slow down"}, 429, headers={"Retry-After": wait})
            if body:
                self.bodies.append(len(body))
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "content-type")
            }
            params = list(request.query_params.multi_items())
            if self.endless:  # the sandbox does not know our cursors: always its first page
                params = [(k, v) for k, v in params if k != "cursor"]
            async with httpx.AsyncClient() as client:
                answer = await client.request(
                    request.method,
                    f"{self.upstream}{path}",
                    params=params,
                    content=body,
                    headers=headers,
                )
            if path == "/tasks" and request.method == "GET" and self.endless:
                document = answer.json()
                document.setdefault("meta", {})["next_cursor"] = f"c{next(self._counter)}"
                if self.fresh_uids:
                    for item in document["items"]:
                        item["uid"] = str(uuid.uuid4())
                return JSONResponse(document)
            return Response(
                answer.content,
                answer.status_code,
                media_type=answer.headers.get("content-type", "application/json"),
            )

        return [Route("/api/v1/{path:path}", forward, methods=["GET", "POST", "PUT", "PATCH"])]


__all__ = ["FragmentProxy"]
