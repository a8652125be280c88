"""The sandbox's HTTP face: a Starlette app, fragment-api.md under /api/v1, admin under /_sandbox.

/api/v1 is one plain ASGI callable rather than Starlette routes, for two reasons: the fault knobs
need the raw connection (to close it without an answer, which httpx must see as a transport
error), and benchmarks need a small cost per request (headers scanned once, bodies encoded once
by the store). Each request goes through the checks in the order a real gateway would apply
them: User-Agent, bearer token, rate limit, route, JSON body, then the faults, then the store.
The admin API (test mode only) is ordinary Starlette routes and is never rate limited, faulted
or logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector.sandbox.errors import InvalidCursor, TaskNotFound, ValidationFailed
from connector.sandbox.faults import Faults
from connector.sandbox.store import SandboxStore
from connector.sandbox.tasks import ACCOUNT
from connector.sandbox.wire import dumps, format_instant, loads, retry_after_header

API_PREFIX: Final = "/api/v1"
ADMIN_PREFIX: Final = "/_sandbox"

_Handler = Callable[[SandboxStore, Any, str, str], bytes]
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_JSON: Final = (b"content-type", b"application/json")
_ACCOUNT_JSON: Final = dumps(ACCOUNT)
_UNKNOWN_ROUTE: Final = "<unknown>"


def _detail(message: str) -> bytes:
    return dumps({"detail": message})


# Handlers take (store, parsed body, uid from the path, raw query string) and return the 200 body.
_ROUTES: Final[dict[str, dict[str, _Handler]]] = {
    "/accounts/me": {"GET": lambda store, body, uid, query: _ACCOUNT_JSON},
    "/tasks": {
        "GET": lambda store, body, uid, query: store.list_tasks(
            parse_qsl(query, keep_blank_values=True)
        ),
        "POST": lambda store, body, uid, query: store.create_task(body),
    },
    "/tasks/query": {"POST": lambda store, body, uid, query: store.query_tasks(body)},
    "/tasks/batch": {
        "PUT": lambda store, body, uid, query: store.replace_tasks(body),
        "PATCH": lambda store, body, uid, query: store.patch_tasks(body),
        "POST": lambda store, body, uid, query: store.create_tasks(body),
    },
    "/tasks/{uid}": {
        "GET": lambda store, body, uid, query: store.get_task(uid),
        "PUT": lambda store, body, uid, query: store.replace_task(uid, body),
        "PATCH": lambda store, body, uid, query: store.patch_task(uid, body),
    },
    "/tasks/{uid}/comments": {"POST": lambda store, body, uid, query: store.add_comment(uid, body)},
}


def _resolve(path: str) -> tuple[str, str] | None:
    """The route template of `path` and the uid it carries (empty if none); None if unknown."""
    if path in _ROUTES and "{" not in path:
        return path, ""
    parts = path.split("/")
    if len(parts) >= 3 and parts[1] == "tasks" and parts[2]:
        if len(parts) == 3:
            return "/tasks/{uid}", parts[2]
        if len(parts) == 4 and parts[3] == "comments":
            return "/tasks/{uid}/comments", parts[2]
    return None


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: tuple[bytes, bytes] = _JSON,
) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                content_type,
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


class ConnectionDropped(Exception):
    """Raised to make the server close a connection when the transport cannot be reached."""


async def drop_connection(receive: Receive, send: Send) -> None:
    """Close the client's connection without answering, so that its HTTP client sees an error."""
    # uvicorn's receive is a bound method of the request cycle, which holds the transport.
    # Closing it makes uvicorn see a disconnected client and stay silent when we return.
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None and callable(getattr(transport, "close", None)):
        transport.close()
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)
        return
    # Other servers: promise a body, then fail; the server closes a half-sent response.
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]}
    )
    raise ConnectionDropped


class _Api:
    """The /api/v1 ASGI callable."""

    def __init__(self, store: SandboxStore) -> None:
        self._store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        full: str = scope["path"]
        root: str = scope.get("root_path", "")
        path = full[len(root) :] if root and full.startswith(root) else full
        user_agent: str | None = None
        authorization = b""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        resolved = _resolve(path)
        route = resolved[0] if resolved else _UNKNOWN_ROUTE
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        auth_ok = scheme.lower() == "bearer" and bool(token) and self._store.check_token(token)
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "route": route,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": None,
            "items": None,
            "at": format_instant(time.time_ns() // 1_000_000),
            "user_agent": user_agent,
            "auth_ok": auth_ok,
        }
        logged = False

        def settle(outcome: int | str) -> None:
            # Logged before the client can see the outcome, so a test reading the log right
            # after a response (or a dropped connection) always finds this request in it.
            nonlocal logged
            if not logged:
                logged = True
                entry["status"] = outcome
                self._store.log_request(entry, route)

        async def send_settled(message: Message) -> None:
            if message["type"] == "http.response.start":
                settle(message["status"])
            await send(message)

        outcome: int | str = "error"
        try:
            outcome = await self._serve(
                entry, resolved, token if auth_ok else None, scope, receive, send_settled, settle
            )
        finally:
            settle(outcome)

    async def _serve(
        self,
        entry: dict[str, Any],
        resolved: tuple[str, str] | None,
        token: str | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        settle: Callable[[int | str], None],
    ) -> int | str:
        store = self._store
        method: str = entry["method"]
        if not entry["user_agent"]:
            return await _reply(send, 403, _detail("User-Agent required"))
        if token is None:
            return await _reply(
                send,
                401,
                _detail("missing or invalid bearer token"),
                [(b"www-authenticate", b"Bearer")],
            )
        wait = store.take_request_token(token)
        if wait is not None:
            return await _reply(
                send,
                429,
                _detail("rate limit exceeded"),
                [(b"retry-after", retry_after_header(wait).encode())],
            )
        if resolved is None:
            return await _reply(send, 404, _detail("Not Found"))
        route, uid = resolved
        handler = _ROUTES[route].get(method)
        if handler is None:
            allow = ", ".join(_ROUTES[route]).encode()
            return await _reply(send, 405, _detail("Method Not Allowed"), [(b"allow", allow)])
        body: Any = None
        if method in _BODY_METHODS:
            raw = await _read_body(receive)
            if raw is None:
                return "client disconnected"
            try:
                body = loads(raw)
            except ValueError:
                return await _reply(send, 400, _detail("request body is not valid JSON"))
            if isinstance(body, dict) and isinstance(body.get("items"), list):
                entry["items"] = len(body["items"])
        write = method in _BODY_METHODS and route != "/tasks/query"
        decision = store.draw_faults(method, entry["path"], route, write=write)
        sources = store.writers_enter(body, uid or None) if write else ()
        try:
            if decision is not None:
                if decision.latency_s:
                    await asyncio.sleep(decision.latency_s)
                if decision.drop:
                    settle("drop")
                    await drop_connection(receive, send)
                    return "drop"
                if decision.status is not None:
                    headers = []
                    if decision.retry_after_s is not None:
                        headers.append((b"retry-after", str(decision.retry_after_s).encode()))
                    if decision.status == 502:
                        # A gateway's error page, not JSON: clients must parse errors defensively.
                        page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
                        return await _reply(
                            send, 502, page, headers, (b"content-type", b"text/html")
                        )
                    return await _reply(send, decision.status, _detail("injected fault"), headers)
            if decision is not None and decision.partial and isinstance(body, dict):
                items = body.get("items")
                if isinstance(items, list) and items:
                    body = {**body, "items": items[:-1]}
            status, payload = _call(handler, store, body, uid, entry["query"])
            if decision is not None and decision.lose_response:
                settle("lost")
                await drop_connection(receive, send)
                return "lost"
            return await _reply(send, status, payload)
        finally:
            store.writers_exit(sources)


def _call(
    handler: _Handler, store: SandboxStore, body: Any, uid: str, query: str
) -> tuple[int, bytes]:
    try:
        return 200, handler(store, body, uid, query)
    except ValidationFailed as exc:
        return 422, dumps({"detail": exc.errors})
    except TaskNotFound:
        return 404, _detail("task not found")
    except InvalidCursor:
        return 400, _detail("invalid or expired cursor")


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


# --- admin -------------------------------------------------------------------------------------


def _json_response(payload: object, status: int = 200) -> Response:
    body = payload if isinstance(payload, bytes) else dumps(payload)
    return Response(body, status_code=status, media_type="application/json")


async def _json_body(request: Request) -> Any:
    try:
        return loads(await request.body())
    except ValueError:
        raise HTTPException(400, "request body is not valid JSON") from None


def _validation_error(exc: ValidationFailed) -> Response:
    return _json_response({"detail": exc.errors}, 422)


class _Admin:
    """Endpoints under /_sandbox: reset, tasks (dump, seed, operator edits), faults, config, log."""

    def __init__(self, store: SandboxStore) -> None:
        self._store = store

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/reset", self.reset, methods=["POST"]),
            Route("/tasks", self.dump_tasks, methods=["GET"]),
            Route("/tasks", self.seed_tasks, methods=["POST"]),
            Route("/tasks/{uid}/operator", self.operator_edit, methods=["POST"]),
            Route("/tasks/{uid}", self.delete_task, methods=["DELETE"]),
            Route("/faults", self.get_faults, methods=["GET"]),
            Route("/faults", self.put_faults, methods=["PUT"]),
            Route("/config", self.get_config, methods=["GET"]),
            Route("/config", self.put_config, methods=["PUT"]),
            Route("/requests", self.get_requests, methods=["GET"]),
            Route("/requests", self.clear_requests, methods=["DELETE"]),
            Route("/stats", self.stats, methods=["GET"]),
        ]

    async def reset(self, request: Request) -> Response:
        self._store.reset()
        return _json_response({"ok": True})

    async def dump_tasks(self, request: Request) -> Response:
        return _json_response(self._store.all_tasks_json())

    async def seed_tasks(self, request: Request) -> Response:
        body = await _json_body(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            detail = [
                {"loc": ["body", "items"], "msg": "items must be a list", "type": "list_type"}
            ]
            return _json_response({"detail": detail}, 422)
        try:
            seeded = self._store.seed(items)
        except ValidationFailed as exc:
            return _validation_error(exc)
        return _json_response({"items": seeded})

    async def operator_edit(self, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict) or set(body) - {"status", "fields"}:
            raise HTTPException(422, 'body is {"status": ..., "fields": {...}}')
        try:
            task = self._store.operator_edit(
                request.path_params["uid"], status=body.get("status"), fields=body.get("fields")
            )
        except TaskNotFound:
            raise HTTPException(404, "task not found") from None
        except ValidationFailed as exc:
            return _validation_error(exc)
        return _json_response(task)

    async def delete_task(self, request: Request) -> Response:
        if not self._store.delete([request.path_params["uid"]]):
            raise HTTPException(404, "task not found")
        return _json_response({"ok": True})

    async def get_faults(self, request: Request) -> Response:
        return _json_response(self._store.faults().to_json())

    async def put_faults(self, request: Request) -> Response:
        try:
            faults = Faults.from_json(await _json_body(request))
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from None
        self._store.set_faults(faults)
        return _json_response(self._store.faults().to_json())

    async def get_config(self, request: Request) -> Response:
        return _json_response(self._store.tunables())

    async def put_config(self, request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise HTTPException(422, "body must be an object")
        try:
            self._store.update_config(**body)
        except (ValueError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from None
        return _json_response(self._store.tunables())

    async def get_requests(self, request: Request) -> Response:
        items = self._store.requests()
        last = request.query_params.get("last")
        if last is not None and last.isdigit():
            items = items[-int(last) :] if int(last) else []
        return _json_response(
            {"items": items, "counts": self._store.request_counts(), "total": len(items)}
        )

    async def clear_requests(self, request: Request) -> Response:
        self._store.clear_requests()
        return _json_response({"ok": True})

    async def stats(self, request: Request) -> Response:
        return _json_response(self._store.stats())


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return Response(dumps({"detail": detail}), status, headers, media_type="application/json")


class _FreshDate:
    """A `Date` header of the second each answer starts in (served with uvicorn's turned off).

    uvicorn renews its own about once a second, from its main loop (later on a loaded
    machine), so it can lag the tasks an answer lists by more than a second, which no real
    server does; the connector anchors its listing watermark on this header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"date"]
                headers.append((b"date", formatdate(time.time(), usegmt=True).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, dated)


def create_app(store: SandboxStore) -> Starlette:
    """The sandbox's ASGI app over `store`: /api/v1 always, /_sandbox only in test mode.

    Serve it with uvicorn's `date_header=False`: it sends its own (`_FreshDate`).
    """
    routes: list[BaseRoute] = [Mount(API_PREFIX, app=_Api(store))]
    if store.config.test_mode:
        routes.append(Mount(ADMIN_PREFIX, routes=_Admin(store).routes()))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(_FreshDate)],
    )
    app.state.store = store
    return app
