"""The runbook: every link into it, from the rules, the Alert payloads and itself, lands.

Anchors are computed as GitHub computes them from headings, so the links work where the
runbook is read.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml

from pipeline.schemas import AlertKind

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "deploy" / "runbook.md"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
KINDS = typing.get_args(AlertKind)
HEALTH = ("worker_down", "consumer_lag", "checkpoint_stale", "dead_letter_rate",
          "silent_router", "baseline_stale", "control_stale")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to ``-``.

    >>> github_anchor("confidence_drift")
    'confidence_drift'
    >>> github_anchor("Messages on `tierwatch.alerts`")
    'messages-on-tierwatchalerts'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[str]:
    """ATX headings outside fenced code blocks, without their ``#`` marks.

    >>> headings("# a\\n```\\n# not one\\n```\\n## b ##")
    ['a', 'b']
    """
    found, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.append(m.group(1))
    return found


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor; GitHub suffixes repeats with ``-1``, ``-2``, …"""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(markdown):
        anchor = github_anchor(heading)
        n = seen.get(anchor, 0)
        seen[anchor] = n + 1
        result.add(anchor if n == 0 else f"{anchor}-{n}")
    return result


@pytest.fixture(scope="module")
def text() -> str:
    return RUNBOOK.read_text()


@pytest.fixture(scope="module")
def runbook_anchors(text: str) -> set[str]:
    return anchors(text)


def _rule_urls() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(rule["alert"], rule["annotations"]["runbook_url"])
            for group in doc["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(("alert", "url"), _rule_urls())
def test_rule_runbook_url_lands_on_a_heading(alert: str, url: str,
                                              runbook_anchors: set[str]) -> None:
    path, _, anchor = url.partition("#")
    assert path == "deploy/runbook.md", alert
    assert anchor in runbook_anchors, f"{alert}: no heading for #{anchor}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_alert_kind_has_its_own_heading(kind: str, text: str) -> None:
    assert kind in headings(text)


@pytest.mark.parametrize("kind", KINDS)
def test_alert_payload_runbook_link_resolves(kind: str, runbook_anchors: set[str]) -> None:
    """The monitor's Alert payloads carry ``runbook="deploy/runbook.md#<kind>"``."""
    from pipeline.core.monitor import RUNBOOK

    path, _, anchor = (RUNBOOK + kind).partition("#")
    assert path == "deploy/runbook.md"
    assert anchor in runbook_anchors


@pytest.mark.parametrize("section", HEALTH)
def test_every_worker_health_alert_has_a_heading(section: str, text: str) -> None:
    assert section in headings(text)


@pytest.mark.parametrize("section", KINDS + HEALTH)
def test_every_alert_section_says_what_to_do(section: str, text: str) -> None:
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    for part in ("**What it means.**", "**Look first.**", "**Mitigate.**", "**Resolved when**"):
        assert part in body, f"## {section} has no {part}"
    assert re.search(r"^1\. .*\n(?:.*\n)*?2\. .*\n(?:.*\n)*?3\. ", body, re.M), (
        f"## {section}: list the first three things to look at")


def test_internal_links_resolve(text: str, runbook_anchors: set[str]) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path, _, anchor = target.partition("#")
        if path:
            assert (RUNBOOK.parent / path).is_file(), target
        else:
            assert anchor in runbook_anchors, target


def test_the_alerts_topic_is_documented(text: str) -> None:
    from pipeline.schemas import Alert

    body = text.split("\n## Messages on tierwatch.alerts\n", 1)[1]
    for field in Alert.model_fields:
        assert f"| `{field}` |" in body, f"Alert field {field} is not described"


# ---------------------------------------------------------------- the runbook base URL
def test_alerts_and_the_report_link_the_configured_runbook(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """TIERWATCH_RUNBOOK_BASE_URL: the Alert payloads and the report link there."""
    from datetime import UTC, datetime

    import numpy as np
    import orjson

    from pipeline.cli import main
    from pipeline.core.baseline import fit_baseline
    from tests.unit.test_router_isolation import START, _events

    base = "https://wiki.example.com/sre/tierwatch-runbook"
    routing = tmp_path / "routing.jsonl"
    routing.write_bytes(b"".join(e.model_dump_json().encode() + b"\n"
                                 for e in _events("b", 1.0, 1, START + 2 * 3600 + 600)))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(fit_baseline("b", "v1", datetime(2026, 2, 1, tzinfo=UTC),
                                     np.random.default_rng(0).beta(3, 2, 50_000)
                                     ).model_dump_json(indent=1))
    monkeypatch.setenv("TIERWATCH_RUNBOOK_BASE_URL", base)
    out = tmp_path / "audit"
    assert main(["replay", "--routing", str(routing), "--baseline", str(baseline),
                 "--out", str(out)]) == 0
    alerts = [orjson.loads(line) for line in (out / "alerts.jsonl").read_bytes().splitlines()]
    assert alerts
    assert {a["runbook"] for a in alerts} == {f"{base}#{a['kind']}" for a in alerts}
    report = (out / "report.html").read_text()
    assert f'href="{base}#confidence_drift"' in report
