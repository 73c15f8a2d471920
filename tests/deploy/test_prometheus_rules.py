"""The Prometheus alert rules: promtool checks them and runs their unit tests.

``deploy/prometheus/tests.yml`` holds the ``promtool test rules`` cases; the tests here
also hold it to having, for every rule, a case where the rule fires and one where it
stays silent, and hold the rules to the alert kinds and severities of the worker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.core.alerts import SEVERITY
from pipeline.schemas import AlertKind

REPO = Path(__file__).resolve().parents[2]
PROM = REPO / "deploy" / "prometheus"
RULES = PROM / "rules.yml"
TESTS = PROM / "tests.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
STACK = REPO / "deploy" / "stack.sh"


def _tool(name: str, *, required_in_ci: bool) -> str:
    """The path of ``name``; CI (CI=true) fails without it, elsewhere the test skips."""
    path = shutil.which(name)
    if path is None:
        if required_in_ci and os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed (`make system-deps` installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def _run(*argv: str | Path) -> str:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120,
                          check=False, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{' '.join(map(str, argv))}` failed:\n{out}"
    return out


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _camel(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


# ---------------------------------------------------------------- promtool
def test_promtool_accepts_the_rules() -> None:
    promtool = _tool("promtool", required_in_ci=True)
    assert "SUCCESS" in _run(promtool, "check", "rules", RULES)


def test_promtool_unit_tests_pass() -> None:
    promtool = _tool("promtool", required_in_ci=True)
    assert "SUCCESS" in _run(promtool, "test", "rules", TESTS)


def test_promtool_accepts_the_compose_config() -> None:
    promtool = _tool("promtool", required_in_ci=True)
    _run(promtool, "check", "config", PROM / "prometheus.yml")


def test_promtool_accepts_the_stack_config(tmp_path: Path) -> None:
    promtool = _tool("promtool", required_in_ci=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(_run("bash", STACK, "prometheus-config"))
    _run(promtool, "check", "config", config)


def test_amtool_accepts_the_alertmanager_config() -> None:
    # Debian's prometheus-alertmanager ships amtool; the suite does not install it.
    amtool = _tool("amtool", required_in_ci=False)
    _run(amtool, "check-config", ALERTMANAGER)


# ---------------------------------------------------------------- rule contents
def test_every_rule_has_a_severity_a_summary_a_description_and_a_runbook() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"page", "ticket", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert re.fullmatch(r"deploy/runbook\.md#[a-z_]+", rule["annotations"]["runbook_url"])


def test_descriptions_carry_figures() -> None:
    """The worker's alerts read their figures; the health alerts print ``$value``."""
    for rule in _rules():
        text = rule["annotations"]["description"]
        if rule["expr"].startswith("tierwatch_alert_firing"):
            for needle in ("tierwatch_alert_observed", "tierwatch_alert_reference",
                           "$labels.tier", ".Labels.signal", ".Labels.window", ".Value"):
                assert needle in text, f"{rule['alert']}: no {needle} in its description"
        elif rule["alert"] != "TierwatchWorkerDown":  # a missing target has no value
            assert "$value" in text, f"{rule['alert']}: its description shows no $value"


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in _rules()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("kind", typing.get_args(AlertKind))
def test_every_alert_kind_has_its_rule(kind: str) -> None:
    """`TierwatchConfidenceDrift` forwards kind="confidence_drift" at the worker's severity."""
    by_name = {rule["alert"]: rule for rule in _rules()}
    rule = by_name.get(f"Tierwatch{_camel(kind)}")
    assert rule is not None, f"no rule for alert kind {kind}"
    # drift kinds leave their below-floor `info` level to TierwatchDriftBelowFloor
    assert re.search(rf'tierwatch_alert_firing\{{kind="{kind}"(, severity!="info")?\}}\s*==\s*1',
                     rule["expr"])
    assert rule["labels"]["severity"] == SEVERITY[kind]
    assert rule["annotations"]["runbook_url"] == f"deploy/runbook.md#{kind}"


# ---------------------------------------------------------------- test coverage
def _cases() -> dict[str, dict[str, int]]:
    """Per alert name, how many test cases expect it to fire and how many to stay silent."""
    doc = yaml.safe_load(TESTS.read_text())
    assert doc["rule_files"] == [RULES.name]
    cases: dict[str, dict[str, int]] = {}
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            counts = cases.setdefault(case["alertname"], {"fires": 0, "silent": 0})
            counts["fires" if case.get("exp_alerts") else "silent"] += 1
    return cases


@pytest.mark.parametrize("alert", [rule["alert"] for rule in _rules()])
def test_every_rule_is_tested_firing_and_silent(alert: str) -> None:
    counts = _cases().get(alert, {"fires": 0, "silent": 0})
    assert counts["fires"] >= 1, f"no promtool case where {alert} fires"
    assert counts["silent"] >= 1, f"no promtool case where {alert} stays silent"


def test_the_tests_name_no_unknown_rule() -> None:
    assert set(_cases()) <= {rule["alert"] for rule in _rules()}


# ---------------------------------------------------------------- rendered for an install
BASE = "https://runbooks.example.com/llm/tierwatch-runbook.md"
JOB = "llm-router-monitor"


def _render_tests(text: str, rules_name: str) -> str:
    """tests.yml as it reads for rules rendered with BASE and JOB."""
    text = text.replace("deploy/runbook.md#", BASE + "#")
    text = text.replace('job="tierwatch"', f'job="{JOB}"').replace("job tierwatch", f"job {JOB}")
    text = text.replace("job: tierwatch", f"job: {JOB}")
    return text.replace("  - rules.yml", f"  - {rules_name}")


def test_rendered_rules_pass_the_unit_tests_with_links_and_values(tmp_path: Path) -> None:
    """Acceptance: with a runbook base URL and a job label of an installation, the rules
    still pass every promtool case, and those cases expect descriptions with the figures
    and runbook links built from the base URL."""
    from pipeline.rules import render_rules

    promtool = _tool("promtool", required_in_ci=True)
    rendered = tmp_path / "rules.rendered.yml"
    rendered.write_text(render_rules(RULES.read_text(), runbook_base=BASE, job=JOB))
    tests = _render_tests(TESTS.read_text(), rendered.name)
    (tmp_path / "tests.yml").write_text(tests)
    assert "SUCCESS" in _run(promtool, "check", "rules", rendered)
    assert "SUCCESS" in _run(promtool, "test", "rules", tmp_path / "tests.yml")

    doc = yaml.safe_load(rendered.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert all(r["annotations"]["runbook_url"].startswith(BASE + "#") for r in rules)
    assert f'up{{job="{JOB}"}}' in next(r["expr"] for r in rules
                                       if r["alert"] == "TierwatchWorkerDown")
    # what promtool just checked: a description with values, a link from the base URL
    expected = [a for t in yaml.safe_load(tests)["tests"] for c in t.get("alert_rule_test", [])
                for a in c.get("exp_alerts") or []
                if a["exp_labels"].get("kind") == "confidence_drift"
                and "against" in a["exp_annotations"]["description"]]
    assert expected and expected[0]["exp_annotations"] == {
        **expected[0]["exp_annotations"],
        "description": "confidence_drift on router support, tier all: score over 1h, "
                       "ks_distance 0.1692 against 0.05.",
        "runbook_url": f"{BASE}#confidence_drift"}


def test_render_refuses_what_it_cannot_render() -> None:
    from pipeline.rules import render_rules

    with pytest.raises(ValueError, match="job label"):
        render_rules(RULES.read_text(), runbook_base=BASE, job='a"b')
    with pytest.raises(ValueError, match="was not rendered"):
        render_rules("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n"
                     "    annotations:\n      runbook_url: docs/other.md#a\n",
                     runbook_base=BASE, job=JOB)


def test_rules_render_command_writes_the_rendered_rules(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from pipeline.cli import main

    monkeypatch.setenv("TIERWATCH_RUNBOOK_BASE_URL", BASE)
    out = tmp_path / "rules.yml"
    assert main(["rules", "render", "--prometheus-job", JOB, "-o", str(out)]) == 0
    urls = {r["alert"]: r["annotations"]["runbook_url"]
            for g in yaml.safe_load(out.read_text())["groups"] for r in g["rules"]}
    assert urls["TierwatchParetoTrap"] == f"{BASE}#pareto_trap"
    assert f'job="{JOB}"' in out.read_text() and 'job="tierwatch"' not in out.read_text()
    assert "warning" not in capsys.readouterr().err
    # the repository path still renders, with a warning that it is not a link
    monkeypatch.delenv("TIERWATCH_RUNBOOK_BASE_URL")
    assert main(["rules", "render", "-o", str(out)]) == 0
    assert "not a URL" in capsys.readouterr().err
