"""The example Alertmanager config: Slack and PagerDuty receivers that link and say.

amtool (Debian's prometheus-alertmanager) checks it when installed; the structure is
checked here in any case: every severity reaches a real integration, every message carries
the figures (``description``) and the runbook link, and no secret is written in the file.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AM = REPO / "deploy" / "alertmanager"
EXAMPLE = AM / "alertmanager.example.yml"
TEMPLATE = AM / "tierwatch.tmpl"
SECRET_KEYS = {"api_url", "slack_api_url", "routing_key", "service_key", "url"}


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return doc


def _receivers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in config["receivers"]}


def _route_for(config: dict[str, Any], severity: str) -> str:
    """The receiver Alertmanager picks for an alert of this severity (first match)."""
    for route in config["route"].get("routes", []):
        if f'severity="{severity}"' in route.get("matchers", []):
            return str(route["receiver"])
    return str(config["route"]["receiver"])


def _walk(node: Any) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [(k, v) for k, v in node.items()] + [kv for v in node.values() for kv in _walk(v)]
    if isinstance(node, list):
        return [kv for v in node for kv in _walk(v)]
    return []


def test_every_route_names_a_receiver(config: dict[str, Any]) -> None:
    names = _receivers(config)
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(r["receiver"] in names for r in routes)


@pytest.mark.parametrize("severity", ["page", "ticket", "info"])
def test_every_severity_reaches_an_integration(config: dict[str, Any], severity: str) -> None:
    receiver = _receivers(config)[_route_for(config, severity)]
    integrations = {k for k in receiver if k.endswith("_configs")}
    assert integrations, f"{severity} alerts go to {receiver['name']}, which sends nothing"
    if severity == "page":
        assert {"pagerduty_configs", "slack_configs"} <= integrations


def test_messages_link_the_runbook_and_carry_the_figures(config: dict[str, Any]) -> None:
    template = TEMPLATE.read_text()
    text_template = template.split('define "tierwatch.slack.text"', 1)[1]
    assert ".Annotations.runbook_url" in text_template
    assert ".Annotations.description" in text_template
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "runbook_url" in slack["title_link"]
            assert 'template "tierwatch.slack.text"' in slack["text"]
        for pd in receiver.get("pagerduty_configs", []):
            assert "runbook_url" in pd["links"][0]["href"]
            assert ".Annotations.description" in pd["description"]


def test_no_secret_is_written_in_the_file(config: dict[str, Any]) -> None:
    written = sorted(k for k, _ in _walk(config) if k in SECRET_KEYS)
    assert not written, f"secrets belong in *_file settings: {written}"
    files = [v for k, v in _walk(config) if k.endswith("_file")]
    assert any("slack" in f for f in files) and any("pagerduty" in f for f in files)


def _amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.skip("amtool is not installed (Debian: prometheus-alertmanager)")
    return path


def test_amtool_accepts_the_example(tmp_path: Path) -> None:
    amtool = _amtool()
    # the template path as mounted in a container, pointed at the repository's file
    config = tmp_path / "alertmanager.yml"
    config.write_text(EXAMPLE.read_text().replace("/etc/alertmanager/templates/tierwatch.tmpl",
                                                  str(TEMPLATE)))
    proc = subprocess.run([amtool, "check-config", str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_amtool_renders_the_slack_templates() -> None:
    amtool = _amtool()
    proc = subprocess.run(
        [amtool, "template", "render", f"--template.glob={TEMPLATE}",
         '--template.text={{ template "tierwatch.slack.title" . }}|'
         '{{ template "tierwatch.slack.text" . }}'],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "|runbook>" in proc.stdout
