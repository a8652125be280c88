"""Assembling a running connector from its settings: adapters, Fragment client, state store.

`open_runtime` builds everything a cycle needs, validating each source's options with its
adapter's model first (so a bad option is a config error before any request), starts the embedded
sandbox when `fragment.base_url` is `sandbox`, and closes it all again, also after errors. The CLI
commands and the daemon share it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from adapters.base import SourceAdapter, can_write_back
from connector.budget import pacer_for
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings
from connector.cycle import Reconciler
from connector.errors import ConfigError
from connector.fragment import FragmentClient, RequestListener
from connector.progress import ProgressBoard
from connector.redaction import REDACTOR, secrets_in
from connector.registry import (
    AdapterInfo,
    build_adapter,
    deprecated_options,
    discover_for,
    validate_options,
)
from connector.sandbox import SandboxConfig, SandboxServer
from connector.state import StateStore

SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the embedded fake's well-known token
SANDBOX_DATA = Path("fragment-sandbox.json")


def build_adapters(settings: Settings, only: str | None = None) -> dict[str, SourceAdapter]:
    """One adapter per configured source (or just `only`), options validated."""
    if not settings.sources:
        raise ConfigError("no sources configured: add at least one under `sources:`")
    chosen = [settings.source(only)] if only else settings.sources
    installed = discover_for(chosen)
    adapters = {
        source.name: build_adapter(source, installed, config_dir=settings.config_dir)
        for source in chosen
    }
    for source in chosen:
        if source.write_back.enabled and not can_write_back(adapters[source.name]):
            raise ConfigError(
                f"sources[{source.name}].write_back: adapter {source.adapter!r} cannot write "
                "back with these options (`fragment-connector adapters` lists those that can)"
            )
    return adapters


def option_deprecations(settings: Settings) -> list[str]:
    """One line per source option given under a deprecated key, naming the key to write."""
    installed = discover_for(settings.sources)
    return [
        line
        for source in settings.sources
        for line in deprecated_options(
            source, validate_options(source, installed, config_dir=settings.config_dir)
        )
    ]


def fragment_token(settings: Settings) -> str:
    """The Fragment token, or a ConfigError saying how to provide it."""
    token = settings.fragment.token
    if token is not None and token.get_secret_value():
        return token.get_secret_value()
    if settings.fragment.is_sandbox:
        return SANDBOX_TOKEN
    raise ConfigError(
        "fragment.token is not set: put it in FRAGMENT_CONNECTOR__FRAGMENT__TOKEN "
        "(or fragment.token in the config file)"
    )


def remember_secrets(
    settings: Settings, installed: dict[str, AdapterInfo] | None = None
) -> list[str]:
    """Teach the one redactor every secret of the configuration; return them.

    The Fragment token, the password of `state.url`, and for each source every secret of its
    options as its adapter's model types them (`SecretStr`) and as they are written (a DSN's
    password, a value under a credential-named key such as a `headers:` API key).
    """
    found = list(secrets_in(settings))
    if installed is None:
        installed = discover_for(settings.sources)
    for source in settings.sources:
        found.extend(secrets_in(source.options))
        info = installed.get(source.adapter)
        if info is None or info.adapter is None:
            continue
        try:
            options = info.adapter.Config.model_validate(source.options)
        except Exception:  # noqa: S112 - invalid options are reported by build_adapters
            continue
        found.extend(secrets_in(options))
    REDACTOR.remember(found)
    return found


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    only_source: str | None = None,
    board: ProgressBoard | None = None,
    listener: RequestListener | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Clock = SYSTEM_CLOCK,
) -> AsyncIterator[Reconciler]:
    """A Reconciler wired to Fragment (or the embedded sandbox), the state store and adapters,
    all timed by `clock`."""
    adapters = build_adapters(settings, only_source)
    token = fragment_token(settings)
    REDACTOR.add(token)
    fragment = settings.fragment
    async with contextlib.AsyncExitStack() as stack:
        for adapter in adapters.values():
            stack.push_async_callback(adapter.aclose)
        base_url = fragment.base_url
        if fragment.is_sandbox:
            sandbox = SandboxServer(SandboxConfig(token=token, data_path=SANDBOX_DATA))
            sandbox.start()
            stack.callback(sandbox.stop)
            base_url = sandbox.base_url
        store = await StateStore.open(settings.state.url, instance=settings.connector.instance)
        stack.push_async_callback(store.aclose)
        pacer, budget = pacer_for(
            settings.state.url,
            base_url=base_url,
            token=token,
            requests_per_minute=fragment.requests_per_minute,
            burst=fragment.burst,
            clock=clock,
        )
        if budget is not None:
            stack.push_async_callback(budget.aclose)
        client = FragmentClient(
            base_url,
            token,
            pacer=pacer,
            timeout=fragment.timeout.total_seconds(),
            retry_deadline=fragment.retry_deadline.total_seconds(),
            page_size=fragment.page_size,
            listener=listener,
            clock=clock,
        )
        stack.push_async_callback(client.aclose)
        yield Reconciler(
            settings,
            client=client,
            store=store,
            adapters=adapters,
            board=board,
            should_stop=should_stop,
            clock=clock,
        )
