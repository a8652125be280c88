"""The configuration: one YAML file, every key overridable from the environment, strict everywhere.

`load_settings` finds the file (`--config`, then `FRAGMENT_CONNECTOR_CONFIG`, then `./config.yaml`),
reads it, overlays `FRAGMENT_CONNECTOR__SECTION__KEY` environment variables and validates the
result. Unknown keys at any depth, wrong types and a missing explicit file are `ConfigError`s whose
message names the key path, never a traceback. The adapter-specific `sources[].options` are
validated later, by each adapter's own `Config` model (see `registry`).
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector.errors import ConfigError
from connector.identity import Markers
from connector.values import parse_duration

CONFIG_ENV = "FRAGMENT_CONNECTOR_CONFIG"
ENV_PREFIX = "FRAGMENT_CONNECTOR__"
DEFAULT_CONFIG = Path("config.yaml")
DEFAULT_BASE_URL = "https://api.onfragment.com/api/v1"
SANDBOX = "sandbox"
FRAGMENT_MAX_BATCH = 100


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be longer than zero")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MarkersSection(Section):
    """Names of the custom fields that mark the connector's tasks."""

    source: str = "fc_source"
    ticket_id: str = "fc_ticket_id"
    closed_by: str = "fc_closed_by"
    written_back: str = "fc_written_back"

    def to_markers(self) -> Markers:
        """The markers as the core uses them."""
        return Markers(
            source=self.source,
            ticket_id=self.ticket_id,
            closed_by=self.closed_by,
            written_back=self.written_back,
        )


class ConnectorSection(Section):
    """Identity of this deployment."""

    instance: str = Field("default", min_length=1)
    markers: MarkersSection = MarkersSection()
    # How often a running cycle logs a `cycle.progress` line (off a terminal) and stores its
    # figures for `status` and `/readyz`.
    progress_interval: Duration = timedelta(seconds=10)


class FragmentSection(Section):
    """How to reach Fragment and how hard to use it."""

    base_url: str = DEFAULT_BASE_URL
    token: SecretStr | None = None
    batch_size: int = Field(FRAGMENT_MAX_BATCH, ge=1, le=FRAGMENT_MAX_BATCH)
    page_size: int = Field(100, ge=1, le=100)
    requests_per_minute: float = Field(60.0, gt=0)
    burst: int = Field(5, ge=1)
    timeout: Duration = timedelta(seconds=30)
    retry_deadline: Duration = timedelta(seconds=120)
    drift_check_every: Duration = timedelta(hours=1)
    full_listing_every: Duration = timedelta(days=1)
    listing_overlap: Duration = timedelta(minutes=2)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value != SANDBOX and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL or 'sandbox'")
        return value.rstrip("/")

    @property
    def is_sandbox(self) -> bool:
        """Whether the embedded sandbox stands in for Fragment."""
        return self.base_url == SANDBOX


class ScheduleSection(Section):
    """When the daemon reconciles."""

    full_refresh: Duration = timedelta(minutes=5)
    incremental: Duration | None = None
    jitter: Duration | None = timedelta(seconds=10)
    grace_period: Duration = timedelta(seconds=20)


class GuardsSection(Section):
    """Safety limits on closes."""

    close_ratio: float = Field(0.3, ge=0, le=1)
    close_min: int = Field(20, ge=0)
    close_after_misses: int = Field(1, ge=1)
    # Write-backs one source may make in one cycle; more are all refused (exit 3).
    write_back_max: int = Field(20, ge=0)


class StateSection(Section):
    """Where the task index lives."""

    url: str = "sqlite:///./fragment-connector.db"


class ServerSection(Section):
    """The daemon's HTTP endpoint (health, readiness, metrics, the status page)."""

    host: str = "0.0.0.0"  # noqa: S104 - a container must listen on all interfaces
    port: int = Field(8080, ge=0, le=65535)
    # The path prefix an ingress forwards the status page under (`/connector`); the probes and
    # /metrics stay at the root, where the kubelet and Prometheus reach the pod directly.
    base_path: str = ""

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("must be a URL path such as /connector (letters, digits, ._~-)")
        return value


class TaskTemplate(Section):
    """What every task of a source gets besides the ticket's own data."""

    fields: dict[str, Any] = Field(default_factory=dict)


WRITE_BACK_PLACEHOLDERS = frozenset({"ticket_id", "title", "done_at", "uid", "source"})


class WriteBackSection(Section):
    """What an operator's DONE in Fragment does to the ticket in the back-office (opt-in)."""

    on_done: Literal["none", "close", "comment"] = "none"
    # The note: `$title`, `$ticket_id`, `$done_at`, `$uid`, `$source` are replaced.
    comment: str | None = Field(None, min_length=1, max_length=5000)

    @field_validator("comment")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = set(string.Template(value).get_identifiers())
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        unknown = names - WRITE_BACK_PLACEHOLDERS
        if unknown or not string.Template(value).is_valid():
            known = ", ".join(f"${n}" for n in sorted(WRITE_BACK_PLACEHOLDERS))
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; known: {known}")
        return value

    @model_validator(mode="after")
    def _comment_needs_a_note(self) -> WriteBackSection:
        if self.on_done == "comment" and self.comment is None:
            raise ValueError("on_done: comment needs a `comment` template")
        return self

    @property
    def enabled(self) -> bool:
        """Whether an operator's DONE is written back at all."""
        return self.on_done != "none"


class SourceSection(Section):
    """One back-office and how its tickets become tasks."""

    name: SourceName
    adapter: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    task: TaskTemplate = TaskTemplate()
    reopen: Literal["never", "on_activity"] = "never"
    write_back: WriteBackSection = WriteBackSection()
    # An empty snapshot may close every open task of the source (otherwise refused, exit 3).
    allow_empty: bool = False


class Settings(BaseSettings):
    """The whole configuration of one deployment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    connector: ConnectorSection = ConnectorSection()
    fragment: FragmentSection = FragmentSection()
    schedule: ScheduleSection = ScheduleSection()
    guards: GuardsSection = GuardsSection()
    state: StateSection = StateSection()
    server: ServerSection = ServerSection()
    sources: list[SourceSection] = Field(default_factory=list)
    # The config file's directory (None without a file): what relative paths written in the file
    # resolve against.
    _config_dir: Path | None = PrivateAttr(default=None)

    @property
    def config_dir(self) -> Path | None:
        """The directory of the config file these settings came from, if any."""
        return self._config_dir

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceSection]) -> list[SourceSection]:
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return sources

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML document arrives as init kwargs under one private key so that the environment
        # wins over the file (first source wins).
        return (env_settings, _FileSource(settings_cls, init_settings))

    def source(self, name: str) -> SourceSection:
        """The source of that name, or a ConfigError listing the configured ones."""
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise ConfigError(f"no source named {name!r} in the config (configured: {known})")


class _FileSource(PydanticBaseSettingsSource):
    """The parsed YAML document, passed in through the init settings."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._data = init()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def resolve_config_path(explicit: Path | None) -> Path | None:
    """The config file to read: --config, then $FRAGMENT_CONNECTOR_CONFIG, then ./config.yaml."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def read_config_file(path: Path, *, require_env: bool = True) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, or raise ConfigError naming the problem.

    `require_env=False` leaves a `${NAME}` whose variable is unset as it is (for commands that
    use no source's secrets, like `status`).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    expanded: dict[str, Any] = expand_environment(data, where="", require=require_env)
    return expanded


_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def expand_environment(value: Any, *, where: str, require: bool = True) -> Any:
    """Replace every string value that is exactly `${NAME}` by that environment variable.

    This is how an adapter's secrets (`sources[].options`) stay out of the file: the
    FRAGMENT_CONNECTOR__... overlay cannot address items of the `sources` list.
    """
    if isinstance(value, str):
        match = _ENV_REFERENCE.match(value)
        if match is None:
            return value
        name = match.group(1)
        if name not in os.environ and not require:
            return value
        if name not in os.environ:
            raise ConfigError(f"{where or '(top level)'}: environment variable {name} is not set")
        return os.environ[name]
    if isinstance(value, dict):
        return {
            k: expand_environment(v, where=f"{where}.{k}" if where else str(k), require=require)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            expand_environment(v, where=f"{where}.{n}", require=require)
            for n, v in enumerate(value)
        ]
    return value


def format_validation_error(error: ValidationError, *, prefix: str = "") -> str:
    """One line per problem, each naming its key path, without echoing secret values."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        path = prefix + ".".join(str(part) for part in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        # pydantic prefixes the messages of our own validators; the key path says enough.
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        lines.append(f"{path or '(top level)'}: {message}")
    return "\n".join(lines)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per `FRAGMENT_CONNECTOR__*` variable that names no key, like unknown keys in
    the file: a typo (`..._GAURDS__CLOSE_MIN`) must not be silently ignored."""
    environ = os.environ if environ is None else environ
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] = Settings
        for depth, part in enumerate(parts):
            field = model.model_fields.get(part)
            if field is None:
                where = ".".join(parts[:depth]) or "(top level)"
                known = ", ".join(model.model_fields)
                problems.append(f"{name}: {where} has no key {part!r} (known: {known})")
                break
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                model = kind
                continue
            if depth < len(parts) - 1 and not (isinstance(kind, type) and issubclass(kind, dict)):
                problems.append(f"{name}: {'.'.join(parts[: depth + 1])} has no sub-keys")
            break
        else:
            problems.append(f"{name}: names a whole section; name one of its keys")
    return problems


def load_settings(
    path: Path | None = None, *, require_env: bool = True, **overrides: Any
) -> Settings:
    """Read, overlay and validate the configuration; raise ConfigError with every problem."""
    unknown = unknown_environment()
    if unknown:
        raise ConfigError(
            "unknown environment variable(s), which would be ignored:\n" + "\n".join(unknown)
        )
    config_path = resolve_config_path(path)
    data = read_config_file(config_path, require_env=require_env) if config_path else {}
    config_dir = config_path.resolve().parent if config_path else None
    if config_dir is not None:
        _resolve_state_url(data, config_dir)
    data.update(overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        origin = f" in {config_path}" if config_path else ""
        raise ConfigError(
            f"invalid configuration{origin}:\n{format_validation_error(exc)}"
        ) from None
    settings._config_dir = config_dir
    return settings


_SQLITE_FILE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$")


def _resolve_state_url(data: dict[str, Any], config_dir: Path) -> None:
    """A relative SQLite file written in the config file (`sqlite:///./state.db`) lives next to
    that file, wherever the command runs from; defaults and environment values keep the
    current directory."""
    state = data.get("state")
    if not isinstance(state, dict):
        return
    url = state.get("url")
    if not isinstance(url, str):
        return
    match = _SQLITE_FILE.match(url)
    if match is None or match.group(2).startswith(":memory:"):
        return
    head, rest = match.groups()
    data["state"] = {**state, "url": f"{head}{config_dir / rest}"}
