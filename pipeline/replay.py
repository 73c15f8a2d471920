"""``tierwatch replay``: the streaming pipeline over files, in event order, without Kafka.

Routing and feedback files (JSON lines, optionally gzipped, or Parquet) are merged by
event time and fed through the same :class:`~pipeline.stream.processor.Processor` and
:class:`~pipeline.core.monitor.Monitor` as the worker, in batches of consecutive events
of one kind (the batch envelope the worker reads). Every output line is the exact
message value the worker would publish on the matching topic. Memory does not grow
with the input: files are streamed, and each file is expected in time order (disorder
within the allowed lateness is fine).
"""

from __future__ import annotations

import gzip
import heapq
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson
from prometheus_client import CollectorRegistry

from pipeline.core.economics import Prices
from pipeline.core.monitor import Monitor, MonitorConfig, Signer
from pipeline.core.signing import Keyring, parse_key
from pipeline.schemas import Alert, Baseline
from pipeline.settings import Settings
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import InMessage, OutMessage, Processor

OUTPUT_FILES = {"alerts": "alerts.jsonl", "control": "control.jsonl", "review": "review.jsonl",
                "dlq": "dlq.jsonl"}
_TS = re.compile(rb'"ts"\s*:\s*"([^"]{10,64})"')
BATCH = 512


def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def read_lines(path: Path) -> Iterator[bytes]:
    """Raw JSON objects of a JSONL(.gz) or Parquet file, one per event."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                yield orjson.dumps({k: v for k, v in row.items() if v is not None})
        return
    with _open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                yield line


def _event_time(line: bytes) -> float:
    """Event time for the merge; lines without a readable ``ts`` sort first (and fail
    validation with a precise reason later)."""
    m = _TS.search(line)
    if m is None:
        return float("-inf")
    try:
        return datetime.fromisoformat(m.group(1).decode()).timestamp()
    except ValueError:
        return float("-inf")


def merged(sources: dict[str, Path]) -> Iterator[tuple[float, str, int, bytes]]:
    """``(ts, kind, line_no, line)`` of every file, merged by event time (stable)."""
    def tagged(kind: str, path: Path) -> Iterator[tuple[float, str, int, bytes]]:
        for i, line in enumerate(read_lines(path), start=1):
            yield _event_time(line), kind, i, line
    order = {k: n for n, k in enumerate(sources)}
    return heapq.merge(*(tagged(k, p) for k, p in sources.items()),
                       key=lambda t: (t[0], order[t[1]]))


@dataclass
class ReplayResult:
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    events: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def build_monitor(settings: Settings, config: MonitorConfig | None = None,
                  record: bool = False) -> Monitor:
    """The monitor of these settings, signing with the configured control key."""
    keyring = Keyring({settings.control_key_id: parse_key(settings.control_key)})
    return Monitor(config or monitor_config(settings),
                   signer=Signer(keyring, settings.control_key_id, settings.control_mode),
                   record=record)


def monitor_config(settings: Settings) -> MonitorConfig:
    """The monitor configuration these settings describe."""
    return MonitorConfig(
        allowed_lateness_s=settings.allowed_lateness_s, eval_every_s=settings.eval_every_s,
        false_alarms_per_30d=settings.false_alarms_per_30d, join_ttl_s=settings.join_ttl_s,
        prices=Prices(cost_per_support_contact=settings.support_contact_cost_usd,
                      cost_per_bad_outcome=settings.bad_outcome_cost_usd))


class Replay:
    """Drive a monitor over files; write what each output topic would have received."""

    def __init__(self, settings: Settings, monitor: Monitor, out_dir: Path) -> None:
        self.settings = settings
        self.monitor = monitor
        self.out_dir = out_dir
        # event time only: outputs depend on the input, never on the wall clock
        self.processor = Processor(settings, monitor, WorkerMetrics(CollectorRegistry()),
                                   clock=None)
        self.result = ReplayResult()

    def run(self, routing: Path, feedback: Path | None = None,
            baselines: Iterable[Baseline] = (), progress: bool | None = None,
            on_output: Callable[[OutMessage], None] | None = None) -> ReplayResult:
        """Replay ``routing`` (and ``feedback``) into ``out_dir``; return the counts."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for b in baselines:
            self.monitor.set_baseline(b)
        sources = {"routing": routing}
        if feedback is not None:
            sources["feedback"] = feedback
        files: dict[str, IO[bytes]] = {k: (self.out_dir / name).open("wb")
                                       for k, name in OUTPUT_FILES.items()}
        bar = _progress(progress)
        started = time.perf_counter()
        try:
            pending: dict[str, list[tuple[int, bytes]]] = {k: [] for k in sources}

            def flush() -> None:
                out: list[OutMessage] = []
                for kind, rows in pending.items():
                    if rows:
                        out += self._handle(kind, str(sources[kind]), rows)
                        self.result.events += len(rows)
                        if bar is not None:
                            bar.update(len(rows))
                        rows.clear()
                out += self.processor.flush()
                self._write(files, out, on_output)

            for n, (_, kind, line_no, line) in enumerate(merged(sources), start=1):
                pending[kind].append((line_no, line))
                if n % BATCH == 0:
                    flush()
            flush()
        finally:
            for f in files.values():
                f.close()
            if bar is not None:
                bar.close()
        self.result.seconds = time.perf_counter() - started
        self.result.counts = {f"{r}/{t}": n for (r, t), n in
                              sorted(self.monitor.counts.routed.items())}
        return self.result

    def _handle(self, kind: str, source: str, rows: list[tuple[int, bytes]]) -> list[OutMessage]:
        """One batch message of consecutive lines; a batch that is not JSON as a whole
        (a broken line) is retried line by line, so only the broken line is rejected."""
        first = rows[0][0]
        msg = InMessage(source, None, first, None, b"[" + b",".join(r for _, r in rows) + b"]")
        out = self.processor.handle(kind, msg)
        if _is_whole_batch_reject(out):
            out = [m for line_no, raw in rows
                   for m in self.processor.handle(kind, InMessage(source, None, line_no, None,
                                                                  raw))]
        return out

    def _write(self, files: dict[str, IO[bytes]], out: list[OutMessage],
               on_output: Callable[[OutMessage], None] | None) -> None:
        for m in out:
            files[m.topic].write(m.value + b"\n")
            self.result.outputs[m.topic] = self.result.outputs.get(m.topic, 0) + 1
            if on_output is not None:
                on_output(m)


def _is_whole_batch_reject(out: list[OutMessage]) -> bool:
    """A batch whose JSON failed as a whole: its lines are retried one by one."""
    return len(out) == 1 and out[0].topic == "dlq" and b'"index"' not in out[0].value


def _progress(enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" events", unit_scale=True, file=sys.stderr, smoothing=0.1)


def read_alerts(path: Path) -> list[Alert]:
    return [Alert.model_validate_json(line) for line in path.read_bytes().splitlines() if line]
