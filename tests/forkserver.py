"""`python -m connector` for the tests, without paying for the third-party imports each time.

The end-to-end tests run the real command line a few hundred times, and each run spent most
of its CPU importing SQLAlchemy, psycopg, pydantic, rich, starlette... before the connector's
first line ran (about 1.3 s of a 1.5 s `reconcile` on this 2-core machine). A fork server
(`python -m tests.forkserver`, one per test process) imports those libraries once; for each
run it forks a child that takes the run's stdin/stdout/stderr, working directory, environment
and argv, then runs the `connector` package as `python -m connector` does (`runpy`, as
`__main__`), and ends as that interpreter would (its exit code, or the signal that killed it).
The server also imports the connector itself (`connector.cli` and the built-in adapters, which
every command that reads a config loads): after the libraries, those imports were most of a
run's remaining CPU. None of these modules reads the environment, the working directory or
argv at import, except structlog, which reads NO_COLOR and FORCE_COLOR: a run whose environment
differs from the server's in those drops the connector's modules and structlog and imports them
anew, as a new interpreter would; and `connector`'s check that no other `adapters` package comes
first on the path runs again from the run's own directory. `start` gives a run to signal and wait
for, its output discarded (the SIGKILL scenarios); tests that need the process itself (a daemon
whose output they read, a terminal, /proc) still start `python -m connector` with `subprocess`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import locale
import os
import random
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The libraries `connector` and its adapters import, heaviest first (none reads, at import, an
# environment variable that a test sets).
PRELOAD = (
    "sqlalchemy",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.mysql.aiomysql",
    "psycopg",
    "asyncpg",
    "aiomysql",
    "aiosqlite",
    "pydantic",
    "pydantic_settings",
    "rich.console",
    "rich.progress",
    "rich.traceback",
    "rich.panel",
    "rich.pretty",
    "rich.columns",
    "attr",
    "tenacity",
    "yaml",
    "starlette.applications",
    "starlette.responses",
    "uvicorn",
    "httpx",
    "click",
    "jinja2",
    "jmespath",
    "apscheduler.schedulers.asyncio",
    "prometheus_client",
)
# Then the connector: its command line and the built-in adapters (see the module's docstring).
PRELOAD_CONNECTOR = (
    "connector.cli",
    "adapters.file",
    "adapters.rest",
    "adapters.sql",
    "adapters.zendesk",
    "adapters.jira",
    "adapters.github",
    "adapters.hubspot",
)
# The variables a module of PRELOAD_CONNECTOR's imports reads at import (structlog's colours).
READ_AT_IMPORT = ("NO_COLOR", "FORCE_COLOR")
MAX_REQUEST = 1 << 20
_connector_modules: frozenset[str] = frozenset()


# --- the server --------------------------------------------------------------------------------


def serve(path: str) -> tuple[dict[str, Any], list[int]] | None:
    """Fork a child per request until stdin closes; in a child, return its request."""
    global _connector_modules
    for name in PRELOAD:
        importlib.import_module(name)
    libraries = set(sys.modules)
    for name in PRELOAD_CONNECTOR:
        importlib.import_module(name)
    _connector_modules = frozenset(sys.modules) - libraries
    # Everything imported so far out of the collector's sight: a child's collections (and the
    # last one, at exit) would otherwise walk all of it, writing to every page the child shares
    # with this process, which then copies them; that made up two thirds of a run's CPU.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)  # EOF: the test process is gone
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:  # the socket goes with the server
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
                return None
            if key.fileobj is listener:
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
                pid = os.fork()
                if pid == 0:  # the child keeps none of the server's sockets
                    for other in selector.get_map().values():
                        if other.fileobj is not sys.stdin:
                            os.close(other.fd)
                    selector.close()
                    conn.close()
                    return json.loads(message), fds
                for fd in fds:
                    os.close(fd)
                conn.send(str(pid).encode())
                # A pidfd turns readable when the child ends.
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))
            else:
                pid, conn = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                conn.close()


def become(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the run's stdio, directory, environment and argv, and run
    `connector` as `python -m connector` does (an exception or SystemExit ends the interpreter
    as it would end that one)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    imported_with = {name: os.environ.get(name) for name in READ_AT_IMPORT}
    os.environ.clear()
    os.environ.update(request["env"])
    if any(os.environ.get(name) != value for name, value in imported_with.items()):
        for name in _connector_modules:
            del sys.modules[name]
    random.seed()  # a new interpreter's own seed, not the server's
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    encoding = os.environ.get("PYTHONIOENCODING") or locale.getencoding()
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        open(1, "wb", buffering=0 if unbuffered else -1, closefd=False),  # noqa: SIM115
        encoding=encoding,
        line_buffering=os.isatty(1),
        write_through=unbuffered,
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        open(2, "wb", buffering=0 if unbuffered else -1, closefd=False),  # noqa: SIM115
        encoding=encoding,
        errors="backslashreplace",
        line_buffering=True,
        write_through=unbuffered,
    )
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = os.getcwd()  # where `python -m` looks first
    for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
        del sys.modules[name]
    if "connector" in sys.modules:  # the check its import made, from the run's directory
        sys.modules["connector"]._check_adapters_package()
    runpy.run_module("connector", run_name="__main__", alter_sys=True)


# --- the client ------------------------------------------------------------------------------


class ForkServer:
    """One fork server for this process, started on first use, stopped at exit (or when this
    process dies: its stdin, a pipe from here, then closes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._path = ""

    def _started(self) -> str:
        with self._lock:
            if self._process is None:
                self._path = os.path.join(tempfile.mkdtemp(prefix="fc-forkserver-"), "socket")
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "tests.forkserver", self._path],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
                assert self._process.stdout is not None
                ready = self._process.stdout.readline()
                assert ready == b"ready\n", f"the fork server did not start: {ready!r}"
                atexit.register(self.stop)
        return self._path

    def stop(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.close()
            process.wait(timeout=10)
            process.stdout.close()

    def run(
        self, args: list[str], *, cwd: Path | str, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """Like `subprocess.run([sys.executable, "-m", "connector", *args], cwd=, env=,
        capture_output=True, text=True, timeout=, check=False)`, stdin from /dev/null."""
        command = [sys.executable, "-m", "connector", *args]
        request = json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            try:
                conn.connect(self._started())
                socket.send_fds(conn, [request], [stdin, out_w, err_w])
            finally:
                for fd in (stdin, out_w, err_w):
                    os.close(fd)
            pid = int(conn.recv(64))
            deadline = time.monotonic() + timeout
            stdout, stderr, timed_out = _read_until_closed(out_r, err_r, deadline)
            if timed_out:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            returncode = int(conn.recv(64))
        output, errors = _text(stdout), _text(stderr)
        if timed_out:
            raise subprocess.TimeoutExpired(command, timeout, output, errors)
        return subprocess.CompletedProcess(command, returncode, output, errors)

    def start(self, args: list[str], *, cwd: Path | str, env: dict[str, str]) -> ForkedRun:
        """Like `subprocess.Popen([sys.executable, "-m", "connector", *args], cwd=, env=)` with
        stdin, stdout and stderr on /dev/null: a run to watch and kill (`ForkedRun`)."""
        request = json.dumps({"args": args, "cwd": str(cwd), "env": env}).encode()
        null_in = os.open(os.devnull, os.O_RDONLY)
        null_out = os.open(os.devnull, os.O_WRONLY)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self._started())
            socket.send_fds(conn, [request], [null_in, null_out, null_out])
            pid = int(conn.recv(64))
        except BaseException:
            conn.close()
            raise
        finally:
            os.close(null_in)
            os.close(null_out)
        return ForkedRun(pid, conn)


class ForkedRun:
    """A run started by `ForkServer.start`, with what tests use of `subprocess.Popen`: `pid`,
    `poll`, `wait`, `send_signal`, `kill` and `returncode` (negative: the signal that ended it).
    Its parent is the fork server, which reaps it and sends its exit code on `conn`."""

    def __init__(self, pid: int, conn: socket.socket) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._conn = conn

    def poll(self) -> int | None:
        if self.returncode is None:
            self._conn.settimeout(None)  # a blocking socket: MSG_DONTWAIT answers at once
            try:
                answer = self._conn.recv(64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            self._ended(answer)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                answer = self._conn.recv(64)
            except TimeoutError:
                raise subprocess.TimeoutExpired(["connector", str(self.pid)], timeout) from None
            self._ended(answer)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # as Popen: never signal a pid that may have been reused
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _ended(self, answer: bytes) -> None:
        self.returncode = int(answer)
        self._conn.close()


def _read_until_closed(out_r: int, err_r: int, deadline: float) -> tuple[bytes, bytes, bool]:
    """Both pipes to their end (or to the deadline); whether the deadline came first."""
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    selector.unregister(key.fd)
        timed_out = bool(selector.get_map())
    for fd in chunks:
        os.close(fd)
    return b"".join(chunks[out_r]), b"".join(chunks[err_r]), timed_out


def _text(data: bytes) -> str:
    """Decoded as `subprocess` decodes text mode (locale encoding, universal newlines)."""
    return data.decode(locale.getencoding()).replace("\r\n", "\n").replace("\r", "\n")


FORK_SERVER = ForkServer()


if __name__ == "__main__":
    job = serve(sys.argv[1])
    if job is not None:
        become(*job)
