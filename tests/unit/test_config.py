"""Loading the configuration: file, environment overlay, strictness and messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_example_config_is_valid() -> None:
    """config.example.yaml, which documents every key, loads as it is."""
    settings = load_settings(Path(__file__).parents[2] / "config.example.yaml")
    assert settings.sources


def test_defaults_and_durations(tmp_path: Path) -> None:
    """Durations accept 30s/5m/1h or seconds; unspecified keys take their defaults."""
    settings = load_settings(write(tmp_path, "schedule: {full_refresh: 2m, incremental: 30}\n"))
    assert settings.schedule.full_refresh == timedelta(minutes=2)
    assert settings.schedule.incremental == timedelta(seconds=30)
    assert settings.fragment.batch_size == 100
    assert settings.fragment.requests_per_minute == 60


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FRAGMENT_CONNECTOR__SECTION__KEY wins over the file, merging into the section."""
    path = write(tmp_path, "fragment: {base_url: 'http://f.example/api/v1', batch_size: 50}\n")
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__TOKEN", "s3cret-token")
    monkeypatch.setenv("FRAGMENT_CONNECTOR__FRAGMENT__BATCH_SIZE", "20")
    settings = load_settings(path)
    assert settings.fragment.token is not None
    assert settings.fragment.token.get_secret_value() == "s3cret-token"
    assert settings.fragment.batch_size == 20
    assert settings.fragment.base_url == "http://f.example/api/v1"
    assert "s3cret" not in repr(settings)


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --config, FRAGMENT_CONNECTOR_CONFIG names the file."""
    path = write(tmp_path, "connector: {instance: from-env}\n")
    monkeypatch.setenv("FRAGMENT_CONNECTOR_CONFIG", str(path))
    assert load_settings(None).connector.instance == "from-env"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("fragment: {tokn: x}\n", "fragment.tokn: unknown key"),
        (
            "sources: [{name: a, adapter: file, task: {feilds: {}}}]\n",
            "sources.0.task.feilds: unknown key",
        ),
        ("bogus: 1\n", "bogus: unknown key"),
        ("fragment: {batch_size: lots}\n", "fragment.batch_size: Input should be a valid integer"),
        (
            "fragment: {batch_size: 500}\n",
            "fragment.batch_size: Input should be less than or equal to 100",
        ),
        (
            "schedule: {full_refresh: soon}\n",
            "schedule.full_refresh: expected a duration",
        ),
        ("sources: [{name: a, adapter: file}, {name: a, adapter: file}]\n", "repeated: a"),
        ("sources: [{name: 'bad name', adapter: file}]\n", "sources.0.name"),
        ("fragment: {base_url: 'ftp://x'}\n", "fragment.base_url"),
    ],
)
def test_invalid_config_names_the_key_path(tmp_path: Path, text: str, expected: str) -> None:
    """Unknown keys at any depth and wrong values are errors naming the key path."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))
    assert expected in str(caught.value)
    assert "Value error" not in str(caught.value)  # pydantic's prefix says nothing to people


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    """A config file given explicitly must exist."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    """A YAML syntax error names the line."""
    with pytest.raises(ConfigError, match="line 2"):
        load_settings(write(tmp_path, "fragment:\n\ttoken: x\n"))


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    """A YAML list at the top level is refused with a clear message."""
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_environment_references_in_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that is exactly ${NAME} is read from the environment; a missing one is an error."""
    path = write(
        tmp_path,
        "sources: [{name: s, adapter: file, "
        "options: {path: '${TICKETS}', note: 'a ${TICKETS}'}}]\n",
    )
    monkeypatch.setenv("TICKETS", "/data/tickets.json")
    options = load_settings(path).sources[0].options
    assert options == {"path": "/data/tickets.json", "note": "a ${TICKETS}"}
    monkeypatch.delenv("TICKETS")
    with pytest.raises(
        ConfigError, match=r"sources\.0\.options\.path: environment variable TICKETS is not set"
    ):
        load_settings(path)


def test_example_config_documents_every_built_in_adapter_option() -> None:
    """Every option of every built-in adapter appears in config.example.yaml (`key:`)."""
    import re

    from connector.registry import discover

    text = (Path(__file__).parents[2] / "config.example.yaml").read_text(encoding="utf-8")
    missing = {
        name: [key for key in info.config_schema().get("properties", {}) if f"{key}:" not in text]
        for name, info in discover().items()
        if info.distribution == "fragment-connector"
    }
    assert not any(missing.values()), missing
    assert re.search(r"^\s+progress_interval: 10s", text, re.M)
