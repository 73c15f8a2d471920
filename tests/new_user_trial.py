"""Runs a :class:`~tests.new_user_traffic.Traffic` through the README's two commands."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tests.new_user_traffic import ROUTER, Traffic

QUALITY_KINDS = frozenset({"tier_quality_drop", "tier_quality_gap", "boundary_degradation",
                           "support_contact_rise", "pareto_trap"})
TIERWATCH = str(Path(sys.executable).with_name("tierwatch"))


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> None:
    path.write_bytes(gzip.compress(b"\n".join(map(orjson.dumps, events)) + b"\n", 1))


def run_trial(traffic: Traffic, d: Path) -> list[dict[str, Any]]:
    """The firing alerts of ``baseline fit`` → ``replay`` over the traffic, each with its
    event time as ``t`` (epoch seconds)."""
    d.mkdir(parents=True)
    routing, feedback = traffic.events()
    write_jsonl(d / "routing.jsonl.gz", routing)
    write_jsonl(d / "feedback.jsonl.gz", feedback)
    pq.write_table(pa.table({"score": traffic.training_scores()}),
                   d / "training_scores.parquet")
    for argv in (["baseline", "fit", "--scores", "training_scores.parquet",
                  "--router-id", ROUTER, "-o", "baseline.json"],
                 ["replay", "--routing", "routing.jsonl.gz", "--feedback",
                  "feedback.jsonl.gz", "--baseline", "baseline.json", "--out", "out/audit"]):
        proc = subprocess.run([TIERWATCH, *argv], cwd=d, capture_output=True, text=True,
                              check=False, env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
    alerts = [orjson.loads(line) for line in
              (d / "out/audit/alerts.jsonl").read_bytes().splitlines() if line.strip()]
    firing = [a for a in alerts if a["state"] == "firing"]
    for a in firing:
        a["t"] = datetime.fromisoformat(a["ts"]).timestamp()
    return firing
