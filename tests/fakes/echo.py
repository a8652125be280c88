"""A hostile server that quotes every request back in its error: URL, headers, basic-auth pair.

Careless back-offices and proxies do this; the connector must not pass what they quote to any
output. Every request gets `status` (400 by default: refused, no retries) and a JSON body whose
`detail` and `message` hold the quote. Used as Fragment and as a back-office by the secrets tests.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes import FakeServer


class EchoServer(FakeServer):
    """Answers every path and method with an error quoting the request."""

    def __init__(self, status: int = 400) -> None:
        super().__init__()
        self.status = status

    def routes(self) -> list[BaseRoute]:
        async def echo(request: Request) -> Response:
            headers = dict(request.headers)
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            decoded = ""
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(credential).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    decoded = ""
            # What matters first: error texts are cut at a few hundred characters.
            headers.pop("authorization", None)
            quote = (
                f"credential={credential} basic={decoded} {request.method} {request.url} "
                f"headers={json.dumps(headers)}"
            )
            body = {"detail": f"refused: {quote}", "message": f"refused: {quote}"}
            return JSONResponse(body, status_code=self.status)

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [Route("/{path:path}", echo, methods=methods)]


class Redirector(FakeServer):
    """Answers every request with a `302` to the same path on `target` (another origin, or
    `<its own url>/landed` for a move on the same origin, answered with the headers it got)."""

    def __init__(self, target: str, status: int = 302) -> None:
        super().__init__()
        self.target = target
        self.status = status

    def routes(self) -> list[BaseRoute]:
        async def redirect(request: Request) -> Response:
            if request.url.path.startswith("/landed"):  # where a same-origin move arrives
                return JSONResponse({"headers": dict(request.headers)})
            location = f"{self.target}{request.url.path}?{request.url.query}"
            return Response(status_code=self.status, headers={"Location": location})

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return [Route("/{path:path}", redirect, methods=methods)]
