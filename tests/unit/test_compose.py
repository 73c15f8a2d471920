"""The Docker Compose stack and its script twin, deploy/stack.sh, checked without running them.

`docker compose config` validates the file where the compose plugin is installed (no
engine is needed); the rest reads the files: what the services run, mount and scrape.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
STACK = DEPLOY / "stack.sh"
SIMULATE = ["simulate", "--scenario", "pareto-trap", "--kafka", "--speedup", "3600"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _docker_compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker client is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    return [docker, "compose", "-f", str(COMPOSE)]


@pytest.mark.parametrize("profiles", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_docker_compose_accepts_the_file(profiles: list[str]) -> None:
    proc = subprocess.run([*_docker_compose(), *profiles, "config", "-q"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


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


def test_compose_and_the_stack_script_run_the_same_simulation(compose: dict[str, Any]) -> None:
    assert compose["services"]["simulator"]["command"] == SIMULATE
    assert f'"$TIERWATCH" {" ".join(SIMULATE)}' in STACK.read_text()


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
