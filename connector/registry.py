"""Adapter discovery: the built-in adapters plus every plug-in under `fragment_connector.adapters`.

Adapters are found by entry point (the built-ins register themselves the same way, in
pyproject.toml), loaded only when a source needs them, and checked against the contract in
`adapters.base`. A plug-in that fails to import or does not fit the contract is reported by
name, with the reason, and never prevents the others from loading.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import timedelta
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError

from adapters.base import CONFIG_DIR_CONTEXT, RenamedOption, SourceAdapter
from connector.config import SourceSection, format_validation_error
from connector.errors import ConfigError
from connector.values import format_duration

ENTRY_POINT_GROUP = "fragment_connector.adapters"

log = structlog.get_logger(__name__)

# The deprecated options already logged: once per process is enough, although `check` and the
# runtime each build a source's adapter.
_told_deprecated: set[str] = set()


@dataclass(frozen=True, slots=True)
class AdapterInfo:
    """One installed adapter: where it comes from, and either its class or why it is unusable."""

    name: str
    distribution: str
    version: str
    adapter: type[SourceAdapter] | None
    error: str | None = None

    def write_back(self) -> str:
        """Whether the adapter can write an operator's DONE back: yes, no, or with_options
        (only with some of its options: `writes_back` tells for a configured source)."""
        if self.adapter is None or not callable(getattr(self.adapter, "write_back", None)):
            return "no"
        return "with_options" if hasattr(self.adapter, "writes_back") else "yes"

    def config_schema(self) -> dict[str, Any]:
        """The JSON schema of the adapter's `options`."""
        if self.adapter is None:
            return {}
        schema: dict[str, Any] = _config_durations(self.adapter.Config.model_json_schema())
        return schema


_ISO_DURATION = re.compile(r"^P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?$")


def _config_default(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 1 and _ISO_DURATION.match(value):
        seconds = TypeAdapter(timedelta).validate_python(value).total_seconds()
        return format_duration(seconds)
    if isinstance(value, dict):
        return {key: _config_default(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_config_default(item) for item in value]
    return value


def _config_durations(node: Any) -> Any:
    """The schema with duration defaults written as the config takes them (`1m`, not pydantic's
    ISO 8601 `PT1M`, which the config rejects), in nested defaults too."""
    if isinstance(node, list):
        return [_config_durations(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _config_default(value) if key == "default" else _config_durations(value)
        for key, value in node.items()
    }


def _contract_problem(obj: object) -> str | None:
    if not inspect.isclass(obj):
        return f"entry point does not name a class (got {type(obj).__name__})"
    config = getattr(obj, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, BaseModel)):
        return "has no pydantic `Config` model for its options"
    for method in ("list_open", "check", "aclose"):
        if not callable(getattr(obj, method, None)):
            return f"does not implement `{method}`"
    if not isinstance(getattr(obj, "name", None), str):
        return "has no `name`"
    return None


def _load(entry: EntryPoint) -> AdapterInfo:
    dist = entry.dist
    # The metadata read once: `dist.name` and `dist.version` would each parse the whole file.
    metadata = dist.metadata if dist is not None else None
    distribution = metadata["Name"] if metadata is not None else "unknown"
    version = metadata["Version"] if metadata is not None else "unknown"
    try:
        obj = entry.load()
    except Exception as exc:  # a broken plug-in must not break the others
        return AdapterInfo(entry.name, distribution, version, None, f"cannot be imported: {exc!r}")
    problem = _contract_problem(obj)
    if problem:
        return AdapterInfo(entry.name, distribution, version, None, problem)
    return AdapterInfo(entry.name, distribution, version, obj)


def discover(names: Collection[str] | None = None) -> dict[str, AdapterInfo]:
    """Every installed adapter by name (a later duplicate name is reported as broken); with
    `names`, only the adapters of those names are imported and returned."""
    found: dict[str, AdapterInfo] = {}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if names is not None and entry.name not in names:
            continue
        info = _load(entry)
        if entry.name in found:
            dist = info.distribution
            info = AdapterInfo(entry.name, dist, info.version, None, "duplicate adapter name")
            found[f"{entry.name} ({dist})"] = info
            continue
        found[entry.name] = info
    return found


def discover_for(sources: Iterable[SourceSection]) -> dict[str, AdapterInfo]:
    """The adapters these sources name, imported alone (a command needs no other); every
    installed one when a name is not installed, for the error to list what is."""
    names = {source.adapter for source in sources}
    found = discover(names)
    return found if names <= found.keys() else discover()


def adapters_name_clash() -> str | None:
    """A warning when another distribution also installs the top-level package `adapters`.

    The SDK's import name is generic: a distribution of the same name merges its files into
    ours (or shadows it, which `connector` refuses at import). Scanning every installed
    distribution takes a while, so only `fragment-connector adapters` asks.
    """
    owners = set(packages_distributions().get("adapters", ()))
    others = sorted(owners - {"fragment-connector"})
    if not others:
        return None
    return (
        f"the top-level package `adapters` is also installed by {', '.join(others)}: its files "
        "and fragment-connector's adapter SDK share one import name and may overwrite each "
        f"other; uninstall {others[0]} or use a separate environment (docs/adapters.md)"
    )


def adapter_class(
    name: str, installed: dict[str, AdapterInfo] | None = None
) -> type[SourceAdapter]:
    """The adapter class registered under `name`, or a ConfigError saying why there is none."""
    installed = installed if installed is not None else discover()
    info = installed.get(name)
    if info is None:
        usable = ", ".join(sorted(n for n, i in installed.items() if i.adapter)) or "none"
        raise ConfigError(f"unknown adapter {name!r} (installed: {usable})")
    if info.adapter is None:
        raise ConfigError(f"adapter {name!r} from {info.distribution} is unusable: {info.error}")
    return info.adapter


def validate_options(
    source: SourceSection,
    installed: dict[str, AdapterInfo] | None = None,
    *,
    config_dir: Path | None = None,
) -> Any:
    """A source's options validated by its adapter's Config model, or a ConfigError."""
    cls = adapter_class(source.adapter, installed)
    try:
        # Relative file paths in the options resolve against the config file's directory.
        context = {CONFIG_DIR_CONTEXT: config_dir} if config_dir is not None else None
        return cls.Config.model_validate(source.options, context=context)
    except ValidationError as exc:
        prefix = f"sources[{source.name}].options."
        raise ConfigError(
            f"invalid options for source {source.name!r}:\n"
            + format_validation_error(exc, prefix=prefix)
        ) from None


def deprecated_options(source: SourceSection, options: object) -> list[str]:
    """One line per option `source` gives under a deprecated key, naming the key to write."""
    renamed: tuple[RenamedOption, ...] = getattr(options, "deprecated_options", ())
    prefix = f"sources[{source.name}].options."
    return [f"{prefix}{r.old} is deprecated: write {prefix}{r.new}" for r in renamed]


def build_adapter(
    source: SourceSection,
    installed: dict[str, AdapterInfo] | None = None,
    *,
    config_dir: Path | None = None,
) -> SourceAdapter:
    """An adapter instance for a configured source, its options validated by its Config model.

    Each option given under a deprecated key is logged once per process
    (`config.deprecated_option`).
    """
    cls = adapter_class(source.adapter, installed)
    options = validate_options(source, installed, config_dir=config_dir)
    for line in deprecated_options(source, options):
        if line not in _told_deprecated:
            _told_deprecated.add(line)
            log.warning("config.deprecated_option", source=source.name, detail=line)
    return cls(options)
