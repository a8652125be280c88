"""Adapter discovery: built-ins, plug-ins by entry point, and broken plug-ins reported by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from connector.config import SourceSection
from connector.errors import ConfigError
from connector.registry import adapter_class, adapters_name_clash, build_adapter, discover


def install_fake_distribution(
    root: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]
) -> None:
    """A distribution on sys.path, as pip would leave it: modules plus dist-info metadata."""
    dist = root / f"{name}-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[fragment_connector.adapters]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source)


GOOD = """
from typing import ClassVar
from adapters.base import AdapterConfig
class Options(AdapterConfig):
    url: str
class GoodAdapter:
    name: ClassVar[str] = "good"
    Config = Options
    def __init__(self, config): self.config = config
    async def list_open(self):
        return
        yield
    async def check(self): pass
    async def aclose(self): pass
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_fake_distribution(
        tmp_path,
        "fc-plugins-demo",
        {
            "good": "fcdemo_good:GoodAdapter",
            "crashes": "fcdemo_crash:Adapter",
            "notaclass": "fcdemo_good:Options.model_config",
            "nomodel": "fcdemo_nomodel:Adapter",
        },
        {
            "fcdemo_good": GOOD,
            "fcdemo_crash": "raise RuntimeError('plug-in bug at import')\n",
            "fcdemo_nomodel": "class Adapter:\n    name = 'nomodel'\n",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("fcdemo_good", "fcdemo_crash", "fcdemo_nomodel"):
        sys.modules.pop(module, None)
    return tmp_path


def test_builtin_file_adapter_is_found() -> None:
    """The file adapter is registered by entry point like any plug-in."""
    info = discover()["file"]
    assert info.adapter is not None and info.distribution == "fragment-connector"
    assert "path" in info.config_schema()["properties"]


def test_broken_plugins_are_reported_by_name_without_hiding_the_good(plugins: Path) -> None:
    """A plug-in that fails to import or breaks the contract is listed with its reason."""
    installed = discover()
    assert installed["good"].adapter is not None
    assert installed["good"].version == "1.2.3"
    assert "cannot be imported" in (installed["crashes"].error or "")
    assert "plug-in bug at import" in (installed["crashes"].error or "")
    assert installed["notaclass"].error == "entry point does not name a class (got dict)"
    assert "no pydantic `Config` model" in (installed["nomodel"].error or "")
    assert installed["file"].adapter is not None


def test_unusable_adapter_is_a_config_error(plugins: Path) -> None:
    """Naming a broken or unknown adapter in the config is a ConfigError with the reason."""
    with pytest.raises(ConfigError, match="'crashes' from fc-plugins-demo is unusable"):
        adapter_class("crashes")
    with pytest.raises(ConfigError, match=r"unknown adapter 'nope' \(installed: ") as caught:
        adapter_class("nope")
    assert "good" in str(caught.value) and "file" in str(caught.value)
    assert "crashes" not in str(caught.value)  # only usable adapters are offered


def test_options_are_validated_by_the_adapter_model(plugins: Path) -> None:
    """Options go through the adapter's own model; errors name sources[NAME].options.KEY."""
    adapter = build_adapter(SourceSection(name="s", adapter="good", options={"url": "http://x"}))
    assert adapter.__class__.__name__ == "GoodAdapter"
    with pytest.raises(ConfigError, match=r"sources\[s\]\.options\.ur: unknown key"):
        build_adapter(SourceSection(name="s", adapter="good", options={"ur": "http://x"}))


def test_cli_lists_adapters_and_broken_ones(plugins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fragment-connector adapters` shows each adapter and each broken plug-in by name."""
    from click.testing import CliRunner

    from connector.cli import cli

    result = CliRunner().invoke(cli, ["adapters"])
    assert result.exit_code == 0, result.output
    assert "ok      good         fc-plugins-demo 1.2.3  options: url" in result.output
    assert "BROKEN  crashes" in result.output


def test_another_distribution_installing_adapters_is_named_in_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unrelated `adapters` distribution (files merged into ours) is a listed warning."""
    from click.testing import CliRunner

    from connector.cli import cli

    dist = tmp_path / "adapters_toolkit-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: adapters-toolkit\nVersion: 0.3\n")
    (dist / "top_level.txt").write_text("adapters\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = CliRunner().invoke(cli, ["adapters"])
    assert text.exit_code == 0, text.output
    assert text.output.startswith(
        "WARNING the top-level package `adapters` is also installed by adapters-toolkit:"
    )
    document = json.loads(CliRunner().invoke(cli, ["adapters", "--output", "json"]).output)
    assert "adapters-toolkit" in document["warnings"][0]


def test_no_warning_without_another_adapters_distribution() -> None:
    """The project's own install is not a clash."""
    assert adapters_name_clash() is None


def test_a_shadowing_adapters_package_is_refused_at_import(tmp_path: Path) -> None:
    """Another `adapters` package first on the path: `connector` refuses to load, saying why."""
    (tmp_path / "adapters").mkdir()
    (tmp_path / "adapters" / "__init__.py").write_text("# someone else's adapters\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", "import connector.cli"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "the `adapters` package found first" in result.stderr
    assert f"({tmp_path / 'adapters'}) is not fragment-connector's" in result.stderr
