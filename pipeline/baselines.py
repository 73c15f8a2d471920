"""``tierwatch baseline fit|publish``: training-set scores → a Baseline on the compacted topic.

A baseline file is read the same way everywhere (``replay --baseline``, ``baseline
publish``): one JSON document holding a Baseline or a list of them (what ``baseline fit``
writes, indented), or JSON Lines with one Baseline per line; ``.gz`` is decompressed.
``baseline publish`` sends each Baseline as a message of its own, compact, keyed by its
``router_id``: the form the worker reads from the topic.
"""

from __future__ import annotations

import csv
import gzip
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
from pydantic import ValidationError

from pipeline import kafka_clients
from pipeline.core.baseline import fit_baseline
from pipeline.errors import UserError
from pipeline.schemas import Baseline
from pipeline.settings import Settings


def read_columns(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV, JSONL(.gz) or Parquet file; rows missing a value are skipped
    for that column only."""
    values: dict[str, list[float]] = {c: [] for c in columns}
    if not path.is_file():
        raise UserError(f"{path}: no such scores file",
                        "pass a CSV, JSONL(.gz) or Parquet file of training-set scores")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=columns)
        except (pa.ArrowException, KeyError) as err:
            raise UserError(f"{path}: cannot read columns {columns} ({err})",
                            "name the score column with --column") from None
        for c in columns:
            values[c] = [float(v) for v in table.column(c).to_pylist() if v is not None]
    elif path.suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                for c in columns:
                    if row.get(c) not in (None, ""):
                        try:
                            values[c].append(float(row[c]))
                        except ValueError:
                            raise UserError(f"{path} line {reader.line_num}: {c}={row[c]!r} "
                                            "is not a number", "fix or drop the row") from None
    else:
        from pipeline.replay import read_lines

        for n, line in enumerate(read_lines(path), start=1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UserError(f"{path}: record {n} is not JSON",
                                "give a CSV, JSON Lines(.gz) or Parquet file") from None
            src = {**obj, **(obj.get("signals") or {})} if isinstance(obj, dict) else {}
            for c in columns:
                if isinstance(src.get(c), int | float):
                    values[c].append(float(src[c]))
    out = {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}
    for c, arr in out.items():
        if arr.size == 0:
            raise UserError(f"{path}: column {c!r} has no numeric values",
                            "name the score column with --column, signals with --signal")
        if not np.all(np.isfinite(arr)):
            raise UserError(f"{path}: column {c!r} holds NaN or infinite values",
                            "drop those rows")
    return out


def fit_file(path: Path, *, router_id: str, column: str = "score", bins: int = 200,
             signals: list[str] | None = None, version: str | None = None) -> Baseline:
    """Fit a Baseline from a file of training-set scores (and signal columns)."""
    cols = read_columns(path, [column, *(signals or [])])
    scores = cols.pop(column)
    if scores.min() < 0 or scores.max() > 1:
        raise UserError(f"{path}: scores must lie in [0, 1], these span "
                        f"[{scores.min():g}, {scores.max():g}]",
                        "pass the classifier's probability, not a logit or a label")
    now = datetime.now(UTC).replace(microsecond=0)
    return fit_baseline(router_id, version or f"{router_id}:{now:%Y%m%dT%H%M%SZ}", now, scores,
                        cols, bins=bins)


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "the document"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {e['msg']}{more}"


def parse_baselines(data: bytes, name: str = "<bytes>") -> list[Baseline]:
    r"""Every Baseline in ``data``: one JSON document (a Baseline or a list of them) or
    JSON Lines. A :class:`~pipeline.errors.UserError` names the file and what is wrong.

    >>> from pipeline.core.baseline import fit_baseline
    >>> from datetime import UTC, datetime
    >>> b = fit_baseline("r", "v1", datetime(2026, 1, 1, tzinfo=UTC),
    ...                  np.linspace(0, 1, 101), {}, bins=4)
    >>> one, lines = b.model_dump_json(indent=1), b.model_dump_json()
    >>> [len(parse_baselines(d.encode())) for d in (one, f"[{one}, {one}]",
    ...                                               f"{lines}\n{lines}\n")]
    [1, 2, 2]
    """
    try:
        docs = orjson.loads(data)
        items: list[tuple[str, object]] = [
            (f"item {i}", d) for i, d in enumerate(docs, start=1)] if isinstance(
            docs, list) else [("", docs)]
    except orjson.JSONDecodeError:
        items = []
        for n, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"line {n}", orjson.loads(line)))
            except orjson.JSONDecodeError as err:
                raise UserError(f"{name} line {n}: not JSON ({err})",
                                "a baseline file holds the JSON `tierwatch baseline fit` "
                                "writes, or one Baseline per line") from None
    if not items:
        raise UserError(f"{name}: holds no baseline", "fit one with `tierwatch baseline fit`")
    out = []
    for where, doc in items:
        try:
            out.append(Baseline.model_validate(doc))
        except ValidationError as err:
            at = f" {where}" if where else ""
            raise UserError(f"{name}{at}: not a valid Baseline: {_first_error(err)}",
                            "refit it with `tierwatch baseline fit`") from None
    return out


def read_baselines(path: Path) -> list[Baseline]:
    """Every Baseline in a baseline file (see :func:`parse_baselines`)."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise UserError(f"{path}: no such baseline file",
                        "check the path, or write one with `tierwatch baseline fit`") from None
    except (OSError, EOFError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"{path}: cannot read the baseline file ({reason})",
                        "check the path and its permissions") from None
    return parse_baselines(data, str(path))


def publish(settings: Settings, path: Path) -> list[Baseline]:
    """Send every Baseline in ``path`` to the compacted topic, one message each (compact
    JSON keyed by ``router_id``); return them."""
    baselines = read_baselines(path)  # before connecting: a bad file sends nothing
    producer = kafka_clients.producer(settings, acks="all", max_request_size=8 * 1024 * 1024)
    try:
        sent = [producer.send(settings.topic("baselines"), key=b.router_id.encode(),
                              value=b.model_dump_json().encode()) for b in baselines]
        producer.flush()
        kafka_clients.delivered(sent, settings.topic("baselines"))
    finally:
        producer.close()
    return baselines
