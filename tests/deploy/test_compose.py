"""The Docker Compose stack and its script twin, deploy/stack.sh, checked without running them.

`docker compose config` (v2, the Docker CLI plugin) validates the file; without the plugin,
Debian's `docker-compose` (v1, installed by deploy/system-deps.sh) does. Neither needs an
engine. Compose v1 does not know the Compose Specification's top-level `name` key (the
project name, v2 only), so v1 validates the file with that one key left out; everything else
in the file is valid for both. The rest reads the files: what the services run, mount and
scrape. tests/integration/test_stack.py runs deploy/stack.sh for real.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.settings import DEV_CONTROL_KEY

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
STACK = DEPLOY / "stack.sh"
SIMULATE = ["simulate", "--scenario", "pareto-trap", "--kafka", "--speedup", "3600"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


# The top-level key of the Compose Specification that Compose v1 rejects: the project name.
V2_ONLY = re.compile(r"^name:.*\n", re.M)
PROFILES = [[], ["--profile", "demo"]]


def _v1(docker_compose: str, tmp_path: Path) -> list[str]:
    """`docker-compose` v1 on the file less its v2-only keys."""
    v1_file = tmp_path / "docker-compose.v1.yml"
    v1_file.write_text(V2_ONLY.sub("", COMPOSE.read_text()))
    # Relative paths and .env resolve against deploy/, as they do for the real file.
    return [docker_compose, "--project-directory", str(DEPLOY), "-f", str(v1_file)]


def _docker_compose(tmp_path: Path) -> list[str]:
    """`docker compose -f <file>` (v2) or else `docker-compose` (v1, see `_v1`).

    Without either: a skip, but a failure under CI=true, where system-deps installs v1.
    """
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True,
                               timeout=60, check=False)
        if probe.returncode == 0:
            return [docker, "compose", "-f", str(COMPOSE)]
    v1 = shutil.which("docker-compose")
    if v1 is None:
        reason = "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; `make system-deps` installs docker-compose", pytrace=False)
        pytest.skip(reason)
    return _v1(v1, tmp_path)


# The control key has no default in compose (#15): every `config` run is given one.
KEY_ENV = {**os.environ, "TIERWATCH_CONTROL_KEY": "00" * 32}


def _config_q(command: list[str], env: dict[str, str] = KEY_ENV) -> None:
    proc = subprocess.run([*command, "config", "-q"], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    assert proc.returncode == 0, f"{shlex.join(command)} config -q:\n{proc.stderr}"


def test_docker_compose_requires_a_control_key(tmp_path: Path) -> None:
    """Without TIERWATCH_CONTROL_KEY compose refuses the file, naming the variable."""
    env = {k: v for k, v in os.environ.items() if k != "TIERWATCH_CONTROL_KEY"}
    proc = subprocess.run([*_docker_compose(tmp_path), "config", "-q"], capture_output=True,
                          text=True, timeout=60, check=False, env=env)
    assert proc.returncode != 0
    assert "TIERWATCH_CONTROL_KEY" in proc.stderr


def test_compose_has_no_default_signing_key(compose: dict[str, Any]) -> None:
    env = compose["x-tierwatch"]["environment"]
    assert env["TIERWATCH_CONTROL_KEY"].startswith("${TIERWATCH_CONTROL_KEY:?")
    assert DEV_CONTROL_KEY not in COMPOSE.read_text()
    for name in ("topics", "worker", "simulator"):  # every tierwatch service gets it
        assert compose["services"][name]["environment"] == env


@pytest.mark.parametrize("profiles", PROFILES, ids=["default", "demo"])
def test_docker_compose_accepts_the_file(profiles: list[str], tmp_path: Path) -> None:
    _config_q([*_docker_compose(tmp_path), *profiles])


@pytest.mark.parametrize("profiles", PROFILES, ids=["default", "demo"])
def test_docker_compose_v1_accepts_the_file(profiles: list[str], tmp_path: Path) -> None:
    """Debian's docker-compose 1.29 too, where it is installed next to the v2 plugin."""
    v1 = shutil.which("docker-compose")
    if v1 is None:
        pytest.skip("docker-compose (v1) is not installed")
    version = subprocess.run([v1, "version", "--short"], capture_output=True, text=True,
                             timeout=60, check=False).stdout.strip()
    if not version.startswith("1."):
        pytest.skip(f"docker-compose is {version or 'unknown'}, not v1")
    _config_q([*_v1(v1, tmp_path), *profiles])


def test_only_the_project_name_is_v2_only(compose: dict[str, Any]) -> None:
    """What v1 is spared is the top-level `name` and nothing else."""
    assert "version" not in compose  # so that v1 reads the file as the Compose Specification
    stripped = yaml.safe_load(V2_ONLY.sub("", COMPOSE.read_text()))
    assert stripped == {k: v for k, v in compose.items() if k != "name"}


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "topics", "worker", "simulator", "prometheus",
                                        "alertmanager", "grafana"}
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert compose["services"]["simulator"]["profiles"] == ["demo"]


def test_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_the_image_is_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    build = compose["x-tierwatch"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert 'ENTRYPOINT ["tierwatch"]' in dockerfile


@pytest.mark.parametrize("service", ["topics", "worker", "simulator"])
def test_tierwatch_services_run_cli_commands(compose: dict[str, Any], service: str) -> None:
    """The commands parse with the CLI; `simulate` is the lead's, pending."""
    command = compose["services"][service]["command"]
    try:
        ns = build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"`tierwatch {shlex.join(command)}` does not parse (see stderr)")
    assert callable(ns.handler)


FAKE_TIERWATCH = """#!/usr/bin/env bash
# `tierwatch` for stack.sh: records its arguments; `worker` serves /metrics from a file.
echo "$*" >>"$FAKE_LOG"
case "$1" in
    worker) echo ok >metrics; exec python3 -m http.server "$TIERWATCH_WEB_PORT" --bind 127.0.0.1 ;;
    simulate) exec sleep 600 ;;
esac
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("sim_args", [None, "--days 30 --rate 0.05 --speedup 0"],
                         ids=["default", "override"])
def test_stack_script_up_and_down_with_a_fake_tierwatch(
        compose: dict[str, Any], tmp_path: Path, sim_args: str | None) -> None:
    """`up` runs what compose runs (or TIERWATCH_STACK_SIM_ARGS), in TIERWATCH_STACK_DIR;
    `down` stops it. No broker (an outside cluster is named) and no Prometheus."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    fake = tmp_path / "tierwatch"
    fake.write_text(FAKE_TIERWATCH)
    fake.chmod(0o755)
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWATCH_")}
    env.update({"TIERWATCH": str(fake), "FAKE_LOG": str(tmp_path / "calls.log"),
                "TIERWATCH_STACK_DIR": str(run), "TIERWATCH_WEB_PORT": str(_free_port()),
                "TIERWATCH_BOOTSTRAP_SERVERS": "127.0.0.1:1", "PROMETHEUS": "no-such-prometheus"})
    if sim_args is not None:
        env["TIERWATCH_STACK_SIM_ARGS"] = sim_args

    def stack(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(STACK), command], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    try:
        up = stack("up")
        assert up.returncode == 0, up.stdout + up.stderr
        pids = {name: int((run / f"{name}.pid").read_text().split()[0])
                for name in ("worker", "simulator")}
        assert stack("status").returncode == 0
    finally:
        down = stack("down")
    assert down.returncode == 0, down.stdout + down.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    expected = compose["services"]["simulator"]["command"]
    if sim_args is not None:
        expected = [*SIMULATE[:4], *shlex.split(sim_args)]
    assert calls == ["topics create", "worker", shlex.join(expected)]
    assert "no `no-such-prometheus` on PATH" in up.stdout
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z", f"{name} runs"
    assert not list(run.glob("*.pid"))
    assert stack("status").returncode == 3


def test_compose_and_the_stack_script_run_the_same_simulation(compose: dict[str, Any]) -> None:
    """The script's default simulator is compose's (run for real in the test above)."""
    assert compose["services"]["simulator"]["command"] == SIMULATE
    text = STACK.read_text()
    assert f'"$TIERWATCH" {" ".join(SIMULATE[:4])} "${{SIM_ARGS[@]}}"' in text
    assert f'TIERWATCH_STACK_SIM_ARGS:-{" ".join(SIMULATE[4:])}}}' in text


def test_stack_script_prometheus_config(tmp_path: Path) -> None:
    """The generated config scrapes the worker's port at PROMETHEUS_INTERVAL, and
    promtool accepts it with the rules (CI=true: promtool must be there)."""
    env = {**os.environ, "TIERWATCH_WEB_PORT": "16066", "PROMETHEUS_INTERVAL": "2s"}
    proc = subprocess.run(["bash", str(STACK), "prometheus-config"], env=env,
                          capture_output=True, text=True, timeout=30, check=True)
    config = yaml.safe_load(proc.stdout)
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    assert config["rule_files"] == [str(DEPLOY / "prometheus" / "rules.yml")]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "tierwatch"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:16066"]}]
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (`make system-deps`)", pytrace=False)
        pytest.skip("promtool is not installed")
    path = tmp_path / "prometheus.yml"
    path.write_text(proc.stdout)
    check = subprocess.run([promtool, "check", "config", str(path)], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_worker_and_alerts_alertmanager(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "tierwatch"  # the rules' up{job="tierwatch"}
    worker_port = compose["services"]["worker"]["ports"][0].rsplit(":", 1)[1]
    assert job["static_configs"][0]["targets"] == [f"worker:{worker_port}"]
    (am,) = config["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_grafana_reads_the_compose_prometheus() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_stack_script_prints_usage() -> None:
    proc = subprocess.run(["bash", str(STACK)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: stack.sh up|down")


def test_stack_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run([shellcheck, str(STACK)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout
