"""Output digests of ``tierwatch demo`` and ``tierwatch replay``: a restructure changes none.

A refactoring that claims "no output change" is checked by running the two commands
as a user would (the CLI, in subprocesses) and comparing the SHA-256 of every output
file with the digests recorded before the change (``tests/digests.json``):

- the demo (120 days of the Pareto trap, the defaults of ``make demo``): alerts,
  control, review, DLQ, ``summary.json`` (the report's data, without the run's
  ``seconds``) and the simulated inputs;
- a replay of two routers at once (``retrain`` and ``cascade``, merged by event time)
  with a few broken lines added to each input, so that the DLQ and both routers'
  reports are covered: alerts, control, review, DLQ and ``summary.json``.

Every command runs in a scratch directory with relative paths, because the input
file's path is part of the outputs (a dead letter's ``topic``, the report's
``generated_from``). Usage (from the repository root, with the project's venv)::

    .venv/bin/python -m tests.digests check            # compare with tests/digests.json
    .venv/bin/python -m tests.digests record           # rewrite tests/digests.json
    .venv/bin/python -m tests.digests check --keep DIR # keep the outputs in DIR

It takes about 3 minutes of CPU (20 min wall on the shared 2-core machine). Not collected
by pytest (no ``test_`` name):
it is a tool for a refactoring's before/after, not a regression test of values.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "tests" / "digests.json"
TIERWATCH = [sys.executable, "-m", "pipeline.cli"]
#: keys of summary.json that measure the run, not its output
RUN_KEYS = ("seconds",)
OUTPUTS = ("alerts.jsonl", "control.jsonl", "review.jsonl", "dlq.jsonl")
#: broken lines added to each replay input (each must reach the DLQ with its reason)
BROKEN = (b"not json", b'{"ts": "2026-01-01T00:00:00Z"}', b"[1, 2]",
          b'{"router_id": "retrain-router", "ts": "yesterday"}')


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run([*TIERWATCH, *args], cwd=cwd, capture_output=True, text=True,
                          check=False, env=_env())
    if proc.returncode != 0:
        raise SystemExit(f"tierwatch {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout}\n{proc.stderr}")


def _env() -> dict[str, str]:
    # the run's environment must not change its outputs: no TIERWATCH_* from the shell;
    # this checkout's pipeline whatever the working directory
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TIERWATCH_") and k != "PYTHONPATH"}
    return {**env, "PYTHONPATH": str(ROOT)}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _summary_digest(path: Path) -> str:
    doc = json.loads(path.read_text())
    for key in RUN_KEYS:
        doc.pop(key, None)
    return _sha(json.dumps(doc, sort_keys=True).encode())


def _digests(out: Path, prefix: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    found = {f"{prefix}/{name}": _sha((out / name).read_bytes()) for name in (*OUTPUTS, *extra)}
    found[f"{prefix}/summary.json"] = _summary_digest(out / "summary.json")
    return found


def _merge_by_ts(paths: list[Path], dest: Path) -> None:
    """One file of the lines of ``paths``, in event-time order (stable), broken lines added."""
    rows: list[tuple[str, int, bytes]] = []
    for i, path in enumerate(paths):
        for line in path.read_bytes().splitlines():
            if line.strip():
                rows.append((orjson.loads(line)["ts"], i, line))
    rows.sort(key=lambda r: (r[0], r[1]))
    lines = [r[2] for r in rows]
    step = max(1, len(lines) // (len(BROKEN) + 1))
    for k, bad in enumerate(BROKEN, start=1):  # spread out, so each lands mid-stream
        lines.insert(k * step + k - 1, bad)
    dest.write_bytes(b"\n".join(lines) + b"\n")


def demo(work: Path) -> dict[str, str]:
    out = work / "demo"
    _run("demo", "--out", "demo", cwd=work)
    found = _digests(out, "demo")
    for name in ("routing.jsonl", "feedback.jsonl", "baseline.json"):
        found[f"demo/data/{name}"] = _sha((out / "data" / name).read_bytes())
    return found


def replay(work: Path) -> dict[str, str]:
    sims = []
    for scenario, seed in (("retrain", 11), ("cascade", 12)):
        d = work / f"sim-{scenario}"
        _run("simulate", "--scenario", scenario, "--days", "21", "--rate", "0.1", "--seed",
             str(seed), "--out", d.name, cwd=work)
        sims.append(d)
    routing, feedback = work / "routing.jsonl", work / "feedback.jsonl"
    _merge_by_ts([d / "routing.jsonl" for d in sims], routing)
    _merge_by_ts([d / "feedback.jsonl" for d in sims], feedback)
    out = work / "replay"
    args = ["replay", "--routing", routing.name, "--feedback", feedback.name, "--out", out.name]
    for d in sims:
        args += ["--baseline", f"{d.name}/baseline.json"]
    _run(*args, cwd=work)
    found = _digests(out, "replay")
    found["replay/input/routing.jsonl"] = _sha(routing.read_bytes())
    found["replay/input/feedback.jsonl"] = _sha(feedback.read_bytes())
    return found


def _check_checkout(work: Path) -> None:
    """The subprocesses must run this checkout's ``pipeline``, not an installed one."""
    where = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
                           cwd=work, env=_env(), capture_output=True, text=True,
                           check=True).stdout.strip()
    if Path(where).resolve().parent.parent != ROOT:
        raise SystemExit(f"the commands would run {where}, not this checkout ({ROOT})")


def collect(work: Path) -> dict[str, str]:
    _check_checkout(work)
    return {**demo(work), **replay(work)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.digests", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("check", "record"))
    p.add_argument("--keep", metavar="DIR", help="write the outputs here and keep them")
    ns = p.parse_args(argv)
    if ns.keep:
        work = Path(ns.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
        found = collect(work)
    else:
        with tempfile.TemporaryDirectory(prefix="tierwatch-digests-") as tmp:
            found = collect(Path(tmp))
    if ns.action == "record":
        RECORD.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(found)} digests in {RECORD.relative_to(ROOT)}")
        return 0
    want: dict[str, Any] = json.loads(RECORD.read_text())
    bad = sorted(k for k in want.keys() | found.keys() if want.get(k) != found.get(k))
    for k in sorted(want.keys() | found.keys()):
        print(f"{'ok  ' if k not in bad else 'DIFF'} {k}")
    if bad:
        print(f"{len(bad)} of {len(want)} outputs differ from {RECORD.relative_to(ROOT)}")
        return 1
    print(f"all {len(want)} outputs match {RECORD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
