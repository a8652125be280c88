"""The `fragment-connector` command line: one group, one subcommand per user task.

Every error reaches `main`, which is the only place that turns errors into messages and exit
codes (through `errors.classify`): usage and config problems exit 4, runtime failures 1, guard
refusals 3, pending dry-run changes 2. No command prints a traceback unless asked with `-vv`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from connector import __version__
from connector.clock import SYSTEM_CLOCK
from connector.config import Settings, load_settings
from connector.cycle import CycleOptions, Reconciler, cycle_exit_code
from connector.display import ProgressDisplay
from connector.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConnectorError, exit_code_for
from connector.leases import leases_for
from connector.logging import configure_logging
from connector.models import CycleReport, Explanation
from connector.printable import visible
from connector.progress import Heartbeat, ProgressBoard
from connector.redaction import REDACTOR, ScrubbingStream
from connector.render import write_error_json, write_json, write_text
from connector.render_explain import write_explain_json, write_explain_text
from connector.render_status import write_status_json, write_status_text
from connector.runtime import (
    build_adapters,
    fragment_token,
    open_runtime,
    option_deprecations,
    remember_secrets,
)
from connector.source import read_snapshot
from connector.state import StateStore, missing_sqlite_file
from connector.status import RunsOverview, runs_overview

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """Options given to the group, shared with the subcommands."""

    config_path: Path | None = None
    verbose: int = 0

    def settings(self) -> Settings:
        """The validated settings; every secret in them is masked in all output from now on."""
        settings = load_settings(self.config_path)
        remember_secrets(settings)
        return settings


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(CliState).config_path = value


_CONFIG_HELP = "Config file (default: $FRAGMENT_CONNECTOR_CONFIG, then ./config.yaml)."
_UNUSED_CONFIG_HELP = "Accepted like on every command (so scripts can always pass it); unused."


def config_option(func: F, *, used: bool = True) -> F:
    """`--config PATH`, accepted after the subcommand as well as before it."""
    return click.option(
        "--config",
        type=click.Path(path_type=Path, dir_okay=False),
        callback=_remember_config,
        expose_value=False,
        is_eager=True,
        help=_CONFIG_HELP if used else _UNUSED_CONFIG_HELP,
    )(func)


def unused_config_option(func: F) -> F:
    """`--config PATH` on a command that reads no config (adapters, demo, sandbox)."""
    return config_option(func, used=False)


@contextmanager
def _progress_display(board: ProgressBoard, enabled: bool) -> Iterator[bool]:
    """Rich progress bars on stderr when it is a terminal; yields whether they are shown."""
    if not enabled:
        yield False
        return
    with ProgressDisplay(Console(stderr=True)) as display:
        board.add(display)
        yield True


def _say(line: str) -> None:
    """Print one line of text that quotes the outside world, its control characters visible."""
    click.echo(visible(line))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $FRAGMENT_CONNECTOR_CONFIG, then ./config.yaml).",
)
@click.option("-v", "--verbose", count=True, help="More logs (-v: info, -vv: debug).")
@click.version_option(__version__, prog_name="fragment-connector")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, verbose: int) -> None:
    """Keep Fragment's backlog equal to a back-office's open tickets."""
    state = ctx.ensure_object(CliState)
    state.config_path = state.config_path or config_path
    state.verbose = verbose
    level = {0: "WARNING", 1: "INFO"}.get(verbose, "DEBUG")
    configure_logging(level, quiet_reported_errors=verbose == 0)


@cli.command()
@config_option
@click.option(
    "--dry-run", is_flag=True, help="Print the plan, write nothing; exit 2 if changes are pending."
)
@click.option("--source", "only_source", metavar="NAME", help="Reconcile this source only.")
@click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for programs (documented in docs/output.md).",
)
@click.option(
    "--allow-mass-close", is_flag=True, help="Apply closes even past the mass-close guard."
)
@click.option(
    "--allow-mass-write-back",
    is_flag=True,
    help="Make write-backs even past guards.write_back_max.",
)
@click.option(
    "--full",
    "full_listing",
    is_flag=True,
    help="List every open task in Fragment rather than what changed since the last listing.",
)
@click.pass_obj
def reconcile(
    state: CliState,
    dry_run: bool,
    only_source: str | None,
    output: str,
    allow_mass_close: bool,
    allow_mass_write_back: bool,
    full_listing: bool,
) -> int:
    """Run one reconciliation cycle and print what it did (or would do)."""
    options = CycleOptions(
        dry_run=dry_run,
        only_source=only_source,
        allow_mass_close=allow_mass_close,
        allow_mass_write_back=allow_mass_write_back,
        full_listing=full_listing,
    )
    board = ProgressBoard()

    async def run(settings: Settings) -> Any:
        # On a terminal, bars; off it (cron, CI, a container) a `cycle.progress` log line every
        # connector.progress_interval, so a long first import is never silent.
        with _progress_display(board, sys.stderr.isatty()) as shown:
            async with open_runtime(settings, only_source=only_source, board=board) as rec:
                heartbeat = Heartbeat(
                    board,
                    interval=settings.connector.progress_interval.total_seconds(),
                    log_lines=not shown,
                    # A dry-run writes no local state, not even its progress.
                    store=None if dry_run else rec.store,
                )
                async with heartbeat.running():
                    return await _run_cycle(rec, settings, options)

    async def run_and_render(settings: Settings) -> int:
        # Rendered inside the coroutine, which returns only the exit code: on CPython < 3.11.8
        # asyncio.run computes the repr of the coroutine's result (gh-112559), and the repr of
        # a report of 100k actions alone added ~100 MB to the process's peak.
        report = await run(settings)
        if output == "json":
            write_json(report, sys.stdout)
        else:
            write_text(report, sys.stdout)
        return cycle_exit_code(report)

    try:
        return asyncio.run(run_and_render(state.settings()))
    except ConnectorError as exc:
        if output == "json":
            # Programs always get the versioned document, with the error in it.
            write_error_json(exc, sys.stdout)
        raise


async def _run_cycle(rec: Reconciler, settings: Settings, options: CycleOptions) -> CycleReport:
    if options.dry_run:
        return await rec.run(options)
    # A real run writes only the sources no running daemon holds.
    names = list(rec.adapters)
    leases = leases_for(
        settings.state.url,
        instance=settings.connector.instance,
        sources=names,
        replica=False,
    )
    await leases.start()
    try:
        return await rec.run(options, leases)
    finally:
        await leases.close()


@cli.command()
@config_option
@click.pass_obj
def check(state: CliState) -> int:
    """Validate the config, Fragment's token and every source; exit 1 if anything fails."""
    settings = state.settings()
    adapters = build_adapters(settings)
    fragment_token(settings)

    async def run() -> int:
        code = EXIT_OK
        async with open_runtime(settings) as rec:
            try:
                account = await rec.client.me()
                name = account.get("name") or account.get("id") or "?"
                _say(f"ok      fragment: token accepted (account {name})")
            except ConnectorError as exc:
                _say(f"FAILED  fragment: {exc}")
                code = EXIT_FAILURE
            for source_name, adapter in rec.adapters.items():
                # The whole source is read (nothing is written), so a malformed file or a
                # record that would be skipped fails `check`, not the first real run.
                try:
                    await adapter.check()
                    snapshot = await read_snapshot(source_name, adapter, rec.namespace)
                except ConnectorError as exc:
                    _say(f"FAILED  source {source_name}: {exc}")
                    code = EXIT_FAILURE
                    continue
                tickets = len(snapshot.tickets)
                read = (
                    f"{tickets:,} ticket(s) read, {sum(t.is_open for t in snapshot.tickets):,} open"
                )
                if not snapshot.invalid:
                    click.echo(f"ok      source {source_name}: {read}")
                    continue
                code = EXIT_FAILURE
                click.echo(
                    f"FAILED  source {source_name}: {read}, "
                    f"{len(snapshot.invalid):,} record(s) would be skipped:"
                )
                for record in snapshot.invalid[:10]:
                    ident = f" ticket {record.ticket_id}" if record.ticket_id else ""
                    click.echo(f"          {record.position}{ident}: {record.reason}")
                if len(snapshot.invalid) > 10:
                    click.echo(f"          … and {len(snapshot.invalid) - 10:,} more")
        return code

    click.echo(f"ok      config: {len(adapters)} source(s)")
    for line in option_deprecations(settings):
        _say(f"note    {line}")
    return asyncio.run(run())


@cli.command()
@config_option
@click.pass_obj
def run(state: CliState) -> int:
    """Run as a daemon: cycles on schedule, /healthz /readyz /metrics, drains on SIGTERM."""
    from connector.scheduler import run_daemon

    settings = state.settings()
    if state.verbose == 0:
        configure_logging("INFO")
    return asyncio.run(run_daemon(settings))


@cli.command()
@config_option
@click.argument("source")
@click.argument("ticket_id")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def explain(state: CliState, source: str, ticket_id: str, output: str) -> int:
    """Why a ticket's task is as it is, and what the next cycle would do with it."""
    settings = state.settings()
    section = settings.source(source)

    async def run() -> Explanation:
        async with open_runtime(settings, only_source=source) as reconciler:
            return await reconciler.explain(section, ticket_id)

    found = asyncio.run(run())
    if output == "json":
        write_explain_json(found, sys.stdout)
    else:
        write_explain_text(found, sys.stdout)
    return EXIT_OK


@cli.command()
@config_option
@click.option("--limit", default=20, show_default=True, help="How many recent runs to show.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_obj
def status(state: CliState, limit: int, output: str) -> int:
    """Show the recent runs and incremental cursors kept in the state store."""
    # status reads the store only: no source secret is needed, and none is created.
    settings = load_settings(state.config_path, require_env=False)
    missing = missing_sqlite_file(settings.state.url)
    if missing is not None:
        overview = RunsOverview(missing_store=str(missing))
    else:
        store = StateStore(settings.state.url, instance=settings.connector.instance)
        try:
            overview = runs_overview(settings, store, limit=limit, now=SYSTEM_CLOCK.now())
        finally:
            store.close()
    if output == "json":
        write_status_json(overview, sys.stdout)
    else:
        write_status_text(overview, sys.stdout)
    return EXIT_OK


@cli.command()
@config_option
@click.pass_obj
def healthcheck(state: CliState) -> int:
    """Probe the running daemon's /healthz on the configured server.port; exit 0 if healthy.

    The container's HEALTHCHECK: it follows the config (file and environment), so moving
    `server.port` never turns a working container unhealthy.
    """
    import httpx

    settings = load_settings(state.config_path, require_env=False)
    host = settings.server.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    url = (
        f"http://[{host}]:{settings.server.port}/healthz"
        if ":" in host
        else (f"http://{host}:{settings.server.port}/healthz")
    )
    try:
        answer = httpx.get(url, timeout=3, trust_env=False)
    except httpx.HTTPError as exc:
        click.echo(f"unhealthy: {url}: {exc}", err=True)
        return EXIT_FAILURE
    if answer.status_code != 200:
        click.echo(f"unhealthy: {url} answered {answer.status_code}", err=True)
        return EXIT_FAILURE
    click.echo(f"healthy: {url}")
    return EXIT_OK


@cli.command()
@unused_config_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--schema", is_flag=True, help="Also print each adapter's options schema.")
def adapters(output: str, schema: bool) -> int:
    """List the installed adapters (built-in and plug-ins), their versions and options."""
    from connector.registry import adapters_name_clash, discover

    installed = discover()
    clash = adapters_name_clash()
    if output == "json":
        document = {
            "version": 1,
            "warnings": [clash] if clash else [],
            "adapters": [
                {
                    "name": name,
                    "distribution": info.distribution,
                    "version": info.version,
                    "usable": info.adapter is not None,
                    "write_back": info.write_back(),
                    "error": info.error,
                    "options_schema": info.config_schema(),
                }
                for name, info in installed.items()
            ],
        }
        click.echo(json.dumps(document))
        return EXIT_OK
    if clash:
        click.echo(f"WARNING {clash}")
    for name, info in installed.items():
        where = f"{info.distribution} {info.version}"
        if info.adapter is None:
            click.echo(f"BROKEN  {name:<12} {where}: {info.error}")
            continue
        options = ", ".join(info.config_schema().get("properties", {})) or "none"
        write_back = {"yes": "yes", "no": "no", "with_options": "with its write options"}
        click.echo(
            f"ok      {name:<12} {where}  options: {options}  "
            f"write-back: {write_back[info.write_back()]}"
        )
        if schema:
            click.echo(json.dumps(info.config_schema(), indent=2))
    return EXIT_OK


@cli.command()
@unused_config_option
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo's files here.",
)
def demo(workdir: Path | None) -> int:
    """See the connector work: an embedded sandbox Fragment and a sample back-office."""
    from connector.demo import run_demo

    return run_demo(workdir, Console())


@cli.command()
@unused_config_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--token", default="sandbox-token", show_default=True)
@click.option("--test-mode", is_flag=True, help="Enable the /_sandbox admin API and fault knobs.")
@click.option(
    "--rate-limit",
    type=float,
    default=60.0,
    show_default=True,
    help="Requests per minute; 0 = none.",
)
@click.option(
    "--data", type=click.Path(path_type=Path, dir_okay=False), help="Keep tasks in this JSON file."
)
@click.option(
    "--profile",
    type=click.Choice(["strict", "lenient"]),
    default="strict",
    show_default=True,
    help="strict: 422 for undocumented keys; lenient: ignore them and undocumented filters.",
)
def sandbox(
    host: str,
    port: int,
    token: str,
    test_mode: bool,
    rate_limit: float,
    data: Path | None,
    profile: str,
) -> int:
    """Serve the embedded fake Fragment API (for adapter writers and tests)."""
    from connector.sandbox import SandboxConfig, serve

    config = SandboxConfig(
        token=token,
        test_mode=test_mode,
        requests_per_minute=rate_limit or None,
        data_path=data,
        profile=profile,
    )
    click.echo(
        f"sandbox Fragment API ({profile}) on http://{host}:{port}/api/v1 (token: {token})",
        err=True,
    )
    serve(config, host=host, port=port)
    return EXIT_OK


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and exit with its code."""
    state = CliState()
    # Every byte the commands print passes the redactor, whichever code printed it.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(stdout), ScrubbingStream(stderr)
    try:
        code = cli.main(args=argv, prog_name="fragment-connector", standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        code = EXIT_USAGE
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        code = 130
    except ConnectorError as exc:
        click.echo(visible(REDACTOR.mask(f"error: {exc}"), newlines=True), err=True)
        code = exit_code_for(exc)
    except Exception as exc:
        if state.verbose >= 2:
            raise
        click.echo(
            REDACTOR.mask(f"internal error: {exc!r} (rerun with -vv for the traceback)"), err=True
        )
        code = EXIT_FAILURE
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = stdout, stderr
    sys.exit(code if isinstance(code, int) else EXIT_OK)
