"""The command line as a user meets it: the installed ``tierwatch`` executable in a process
of its own, so stderr and the exit status are exactly what a user sees.

The in-process checks of the same errors and of the help are in
``tests/unit/test_cli.py``; these start a Python interpreter each (about a second), so
they are here. No broker is needed: an unreachable one is a closed port on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.demo import simulate
from tests.unit.test_cli import REAL, _cases, assert_one_line_error, files

__all__ = ["files"]  # the fixture, shared with the in-process tests

REPO = Path(__file__).resolve().parents[2]
TIERWATCH = Path(sys.executable).with_name("tierwatch")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("TIERWATCH_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([str(TIERWATCH), *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("case", sorted(REAL))
def test_a_user_error_is_one_line_and_exit_2(case: str, files: dict[str, Path],
                                             tmp_path: Path) -> None:
    argv, env, phrase = _cases(files, tmp_path)[case]
    assert_one_line_error(_run(argv, cwd=tmp_path, env=env), phrase, tmp_path)


def test_replay_ends_with_a_human_summary(tmp_path: Path) -> None:
    routing = tmp_path / "routing.jsonl"
    good = ('{"schema_version": "1", "event_id": "e%d", "request_id": "q%d", '
            '"router_id": "support", "ts": "2026-01-01T00:0%d:00+00:00", "tier": "cheap", '
            '"score": 0.9, "route_reason": "confident_cheap", "thresholds": '
            '{"cheap_above": 0.7, "capable_below": 0.5, "exploration_rate": 0.0}}')
    routing.write_text("\n".join([good % (i, i, i) for i in range(3)]
                                 + ["{not json", '{"event_id": "x"}', "[1]"]) + "\n")
    proc = _run(["replay", "--routing", str(routing), "--out", str(tmp_path / "audit")],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "{'" not in proc.stdout  # no Python dict
    assert proc.stdout.splitlines()[0].startswith("6 events in ")
    assert "alerts: none" in proc.stdout and "routers: support (3 routing events)" in proc.stdout
    warning = next(line for line in proc.stderr.splitlines() if "dead letters" in line)
    assert warning.startswith("warning: 3 dead letters (50.00% of events); top reasons: ")
    assert "invalid_json ×1" in warning and "dlq.jsonl" in warning


def test_the_worker_refuses_to_enforce_with_the_development_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERWATCH_")}
    env.update({"TIERWATCH_CONTROL_MODE": "enforce",
                "TIERWATCH_BOOTSTRAP_SERVERS": "127.0.0.1:1"})  # never reached
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    # exit 2 with one line once the CLI maps bad settings to user errors
    assert proc.returncode != 0
    assert "control_mode enforce refuses the built-in development key" in proc.stderr
    assert "tierwatch control keygen" in proc.stderr


def test_the_replay_writes_nothing_to_a_piped_stderr(tmp_path: Path) -> None:
    """No progress bar, no warning: stderr that is not a terminal stays empty."""
    routing, _, _, _ = simulate("pareto-trap", tmp_path / "sim", days=1, rate=0.05, seed=11)
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "replay", "--routing", str(routing),
         "--baseline", str(tmp_path / "sim" / "baseline.json"), "--out", str(tmp_path / "out")],
        capture_output=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert run.stderr == b""
    assert b"events in" in run.stdout
