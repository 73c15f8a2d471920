"""``tierwatch demo`` as a user runs it: a subprocess, no broker, a real report.

A 30-day demo (the Pareto trap begins on day 22) prints its timeline, writes the report,
``summary.json`` and ``alerts.jsonl``, and the report it wrote renders in headless
Chromium with every plot drawn and no console errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

DAYS, RATE = 30, 0.05


def _command() -> list[str]:
    """The installed ``tierwatch`` script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("tierwatch")
    if script.exists():
        return [str(script)]
    found = shutil.which("tierwatch")
    return [found] if found else [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    run = subprocess.run([*_command(), "demo", "--days", str(DAYS), "--rate", str(RATE),
                          "--out", str(out)], capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"out": out, "stdout": run.stdout, "stderr": run.stderr,
            "seconds": time.monotonic() - started}


def test_demo_writes_the_report_summary_and_alerts(demo: dict[str, Any]) -> None:
    out: Path = demo["out"]
    report = out / "report.html"
    assert report.stat().st_size > 10_000 and b"<svg" in report.read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["days"] == DAYS and summary["rate"] == RATE
    assert summary["events"] > DAYS * 86400 * RATE * 0.9
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    kinds = {a["kind"] for a in alerts if a["state"] == "firing"}
    assert "confidence_drift" in kinds
    assert summary["outputs"]["alerts"] == len(alerts)
    assert f"report: {report}" in demo["stdout"]


def test_the_timeline_shows_confidence_drift_after_the_change(demo: dict[str, Any]) -> None:
    lines = [line.strip() for line in demo["stdout"].splitlines()]
    timeline = [line for line in lines if line.startswith("day ")]
    assert any("the change begins" in line for line in timeline)
    drift = [line for line in timeline if ": confidence drift" in line]
    assert drift, demo["stdout"]
    onset = next(int(line.split(":")[0].split()[1]) for line in timeline
                 if "the change begins" in line)
    assert int(drift[0].split(":")[0].split()[1]) >= onset
    # beside it, what the single aggregate dashboard showed on that day
    assert "dashboard:" in drift[0]
    days = [int(line.split(":")[0].split()[1]) for line in timeline]
    assert days == sorted(days), "the timeline is in day order"


def test_the_real_report_renders_in_chromium(demo: dict[str, Any], tmp_path: Path) -> None:
    # imported here: that module skips itself (or fails under CI) without Chromium
    from tests.integration.test_report_browser import PLOTS, _look

    look = _look((demo["out"] / "report.html").as_uri(), tmp_path / "profile",
                 tmp_path / "chromium.log")
    assert look.errors == []
    assert [p["name"] for p in look.plots] == PLOTS
    for p in look.plots:
        assert p["child"] == "svg", p
        assert p["width"] > 300 and p["height"] > 100, p
        assert p["paths"] > 0, p
    assert look.png.startswith(b"\x89PNG")
