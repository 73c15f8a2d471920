"""``tierwatch baseline fit|publish``: training-set scores → a Baseline on the compacted topic."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from pipeline import kafka_clients
from pipeline.core.baseline import fit_baseline
from pipeline.replay import read_lines
from pipeline.schemas import Baseline
from pipeline.settings import Settings


def read_columns(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV, JSONL(.gz) or Parquet file; rows missing a value are skipped
    for that column only."""
    values: dict[str, list[float]] = {c: [] for c in columns}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=columns)
        for c in columns:
            values[c] = [float(v) for v in table.column(c).to_pylist() if v is not None]
    elif path.suffix == ".csv":
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for c in columns:
                    if row.get(c) not in (None, ""):
                        values[c].append(float(row[c]))
    else:
        for line in read_lines(path):
            obj = orjson.loads(line)
            src = {**obj, **(obj.get("signals") or {})} if isinstance(obj, dict) else {}
            for c in columns:
                if isinstance(src.get(c), int | float):
                    values[c].append(float(src[c]))
    out = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
    for c, arr in out.items():
        if arr.size == 0:
            raise ValueError(f"column {c!r} has no numeric values in {path}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"column {c!r} holds NaN or infinite values")
    return out


def fit_file(path: Path, *, router_id: str, column: str = "score", bins: int = 200,
             signals: list[str] | None = None, version: str | None = None) -> Baseline:
    """Fit a Baseline from a file of training-set scores (and signal columns)."""
    cols = read_columns(path, [column, *(signals or [])])
    scores = cols.pop(column)
    if scores.min() < 0 or scores.max() > 1:
        raise ValueError(f"scores must lie in [0, 1]; {path} has [{scores.min()}, {scores.max()}]")
    now = datetime.now(UTC).replace(microsecond=0)
    return fit_baseline(router_id, version or f"{router_id}:{now:%Y%m%dT%H%M%SZ}", now, scores,
                        cols, bins=bins)


def publish(settings: Settings, path: Path) -> None:
    """Send every Baseline in ``path`` (one JSON per line) to the compacted topic."""
    producer = kafka_clients.producer(settings, acks="all", max_request_size=8 * 1024 * 1024)
    try:
        sent = []
        for line in path.read_bytes().splitlines():
            if line.strip():
                b = Baseline.model_validate_json(line)
                sent.append(producer.send(settings.topic("baselines"), key=b.router_id.encode(),
                                          value=b.model_dump_json().encode()))
        producer.flush()
        kafka_clients.delivered(sent, settings.topic("baselines"))
    finally:
        producer.close()
