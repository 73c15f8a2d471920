"""``tierwatch replay``: the streaming pipeline over files, in event order, without Kafka.

Routing and feedback files (JSON lines, optionally gzipped, or Parquet) are merged by
event time and fed through the same :class:`~pipeline.stream.processor.Processor` and
:class:`~pipeline.core.monitor.Monitor` as the worker. Every output line is the exact
message value the worker would publish on the matching topic.

How the events are cut into messages (:func:`messages`) is part of the contract, because
the evaluations run at event-time boundaries when the watermark crosses them, and what an
evaluation sees is what was processed before it:

- a *window* of merged lines closes at ``batch`` lines, and before the first line at or
  past the next evaluation boundary (``eval_every_s``), so an evaluation at ``B`` sees
  every event before ``B``;
- each window becomes one batch message of its routing lines, then one of its feedback
  lines (the JSON-array envelope the worker reads);
- after every message the due evaluations run (``Processor.flush``), as in a worker
  taking one message per batch.

A worker fed these messages in this order, one after the other, publishes the same bytes
(``tests/integration/test_recovery.py``).

Bad input never stops a replay. A line that is not one JSON object, or is larger than
``max_event_bytes``, is sent as a message of its own, so it is rejected alone. Every
dead letter written by a replay names the input file in ``topic`` and the 1-based line
number (the row for Parquet) in ``offset``.

Memory does not grow with the input: files are streamed, each file is expected in time
order (disorder within the allowed lateness is fine), and a window holds at most
``batch`` lines.
"""

from __future__ import annotations

import gc
import gzip
import heapq
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

import orjson

# build_monitor and monitor_config live in the composition root; still importable from
# here for code written before it existed
from pipeline.bootstrap import GC_THRESHOLDS, bootstrap, build_monitor, monitor_config
from pipeline.core.monitor import Monitor
from pipeline.fastcodec import decode_line
from pipeline.schemas import MAX_EVENT_BYTES, UNPARSED, Alert, Baseline, DeadLetter
from pipeline.settings import Settings
from pipeline.stream.processor import InMessage, OutMessage, encode

__all__ = ["BATCH", "Line", "Message", "Replay", "ReplayResult", "build_monitor", "merged",
           "messages", "monitor_config", "read_alerts", "read_lines"]

OUTPUT_FILES = {"alerts": "alerts.jsonl", "control": "control.jsonl", "review": "review.jsonl",
                "dlq": "dlq.jsonl"}
BATCH = 512
PARQUET_ROWS = 10_000


# -- reading ---------------------------------------------------------------------------------
def _open(path: Path) -> IO[bytes]:
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _plain(value: Any) -> Any:
    """A Parquet value as JSON would carry it: nulls inside structs dropped (a struct
    column has every key of every row), maps as objects, timestamps as RFC 3339."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {k: _plain(v) for k, v in value if v is not None}  # a map column
        return [_plain(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _numbered(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw JSON)`` of every non-blank line, or every Parquet row."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_ROWS):
            for row in batch.to_pylist():
                n += 1
                yield n, orjson.dumps(_plain(row))
        return
    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if line:
                yield n, line


def read_lines(path: Path) -> Iterator[bytes]:
    """Raw JSON objects of a JSONL(.gz) or Parquet file, one per event."""
    for _, line in _numbered(path):
        yield line


class Line(NamedTuple):
    """One input line. ``ok``: a JSON object small enough to ride in a batch message."""

    ts: float
    kind: str
    line_no: int
    raw: bytes
    ok: bool
    #: the parsed line, when ``ok``: its JSON, or a routing event already decoded
    #: (:func:`~pipeline.fastcodec.decode_line`)
    doc: Any = None


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _lines(kind: str, path: Path, max_event_bytes: int, fast: bool = True) -> Iterator[Line]:
    """The lines of one file with their event time. A line without a readable ``ts`` takes
    the time of the line before it, so it keeps its place in the merge (and fails
    validation later with a precise reason)."""
    last = -math.inf
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    # routing lines are decoded once, by the hot-path decoder, for the merge and the batch
    fast_decode = decode_line if fast and kind == "routing" else None
    parse, new = datetime.fromisoformat, tuple.__new__  # new: Line(...) built in C
    for n, raw in _numbered(path):
        event = fast_decode(raw) if fast_decode is not None else None
        if event is not None:  # as _parse_ts, for the text msgspec found in "ts"
            ok = len(raw) <= max_event_bytes
            try:
                ts = last = parse(event.ts).timestamp()
            except ValueError:
                ts = last
            yield new(Line, (ts, kind, n, raw, ok, event if ok else None))
            continue
        try:
            doc = loads(raw)
        except decode_error:
            doc = None
        ok = isinstance(doc, dict) and len(raw) <= max_event_bytes
        parsed = _parse_ts(doc.get("ts")) if isinstance(doc, dict) else None
        if parsed is None:
            ts = last
        else:
            ts = last = parsed
        yield Line(ts, kind, n, raw, ok, doc if ok else None)


def merged(sources: dict[str, Path], max_event_bytes: int = MAX_EVENT_BYTES,
           fast: bool = True) -> Iterator[Line]:
    """Every line of every file, merged by event time; ties keep file order, then
    ``sources`` order (stable). ``fast``: routing lines are decoded by the hot-path
    decoder (``Line.doc`` is then a :class:`~pipeline.fastcodec.FastRouting`)."""
    # heapq.merge breaks ties between its inputs by their order: sources order
    return heapq.merge(*(_lines(k, p, max_event_bytes, fast) for k, p in sources.items()),
                       key=attrgetter("ts"))


@dataclass(frozen=True, slots=True)
class Message:
    """One input message: a batch of lines of one kind, or a single line (``batch=False``)."""

    kind: str
    source: str
    lines: list[Line]
    batch: bool = True

    @property
    def value(self) -> bytes:
        """The message bytes: a JSON array of the lines, or the single line as it is."""
        if not self.batch:
            return self.lines[0].raw
        return b"[" + b",".join([line.raw for line in self.lines]) + b"]"

    @property
    def parsed(self) -> Any:
        """The JSON of :attr:`value`, from the lines already parsed (batches only)."""
        return [line.doc for line in self.lines] if self.batch else UNPARSED

    @property
    def key(self) -> bytes | None:
        """The key a producer would give it: the first event's ``request_id``."""
        try:
            doc = orjson.loads(self.lines[0].raw)
            rid = doc.get("request_id") if isinstance(doc, dict) else None
        except orjson.JSONDecodeError:
            rid = None
        return rid.encode() if isinstance(rid, str) else None


def messages(routing: Path, feedback: Path | None = None, *, eval_every_s: float = 3600.0,
             batch: int = BATCH, max_event_bytes: int = MAX_EVENT_BYTES,
             fast: bool = True) -> Iterator[Message]:
    """The messages a replay sends, in order (see the module notes); ``fast``: see
    :func:`merged` (the messages' bytes are the same either way)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    if not eval_every_s > 0:
        raise ValueError(f"eval_every_s must be > 0, got {eval_every_s!r}")
    sources = {"routing": routing}
    if feedback is not None:
        sources["feedback"] = feedback
    names = {k: str(p) for k, p in sources.items()}
    pending: dict[str, list[Line]] = {k: [] for k in sources}
    n = 0
    boundary = math.inf

    def window() -> Iterator[Message]:
        nonlocal n
        for kind, rows in pending.items():
            if rows:
                yield Message(kind, names[kind], rows)
                pending[kind] = []
        n = 0

    for line in merged(sources, max_event_bytes, fast):
        if n and (n >= batch or line.ts >= boundary):
            yield from window()
        if line.ts >= boundary or (boundary == math.inf and line.ts > -math.inf):
            boundary = (math.floor(line.ts / eval_every_s) + 1) * eval_every_s
        if not line.ok:
            yield from window()
            yield Message(line.kind, names[line.kind], [line], batch=False)
            continue
        pending[line.kind].append(line)
        n += 1
    yield from window()


# -- the replay ------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    counts: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    events: int = 0
    messages: int = 0
    #: dead letters by reason (``reason_class`` and the field it names)
    dead_letters: dict[str, int] = field(default_factory=dict)
    #: alert messages by ``(kind, state)``
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def tally(self, m: OutMessage) -> None:
        """Count one output message (the summary's dead-letter reasons and alert kinds)."""
        self.outputs[m.topic] = self.outputs.get(m.topic, 0) + 1
        if m.topic == "dlq":
            doc = orjson.loads(m.value)
            reason = doc.get("reason_class", "?") + (f" ({doc['field']})" if doc.get("field")
                                                     else "")
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        elif m.topic == "alerts":
            doc = orjson.loads(m.value)
            key = (doc.get("kind", "?"), doc.get("state", "?"))
            self.alerts[key] = self.alerts.get(key, 0) + 1

    def summary(self, top: int = 3) -> list[str]:
        """A short human summary: events, alerts by kind, outputs, and dead letters (a
        line starting ``warning:``, with their top reasons).

        >>> r = ReplayResult(events=1000, seconds=2.0, outputs={"dlq": 3, "alerts": 2},
        ...                  dead_letters={"late": 2, "invalid_json": 1},
        ...                  alerts={("pareto_trap", "firing"): 1,
        ...                          ("pareto_trap", "resolved"): 1})
        >>> for line in r.summary():
        ...     print(line)
        1,000 events in 2.0s (500/s)
        alerts: pareto_trap 1 fired, 1 resolved
        outputs: 2 alerts, 0 recommendations, 0 review requests
        warning: 3 dead letters (0.30% of events); top reasons: late ×2, invalid_json ×1
        """
        lines = [f"{self.events:,} events in {self.seconds:.1f}s ({self.rate:,.0f}/s)"]
        kinds: dict[str, dict[str, int]] = {}
        for (kind, state), n in sorted(self.alerts.items()):
            kinds.setdefault(kind, {})[state] = n
        if kinds:
            lines.append("alerts: " + "; ".join(
                f"{kind} {by.get('firing', 0)} fired"
                + (f", {by['resolved']} resolved" if by.get("resolved") else "")
                for kind, by in kinds.items()))
        else:
            lines.append("alerts: none")
        out = self.outputs
        lines.append(f"outputs: {out.get('alerts', 0):,} alerts, "
                     f"{out.get('control', 0):,} recommendations, "
                     f"{out.get('review', 0):,} review requests")
        n_dlq = out.get("dlq", 0)
        if n_dlq:
            reasons = sorted(self.dead_letters.items(), key=lambda kv: (-kv[1], kv[0]))
            share = n_dlq / self.events if self.events else 1.0
            lines.append(f"warning: {n_dlq:,} dead letters ({share:.2%} of events); top "
                         "reasons: " + ", ".join(f"{r} ×{n:,}" for r, n in reasons[:top]))
        return lines


class Replay:
    """Drive a monitor over files; write what each output topic would have received.

    ``batch`` caps the lines of a window (see :func:`messages`).
    """

    def __init__(self, settings: Settings, monitor: Monitor, out_dir: Path, *,
                 batch: int = BATCH) -> None:
        self.settings = settings
        self.monitor = monitor
        self.out_dir = out_dir
        self.batch = batch
        # event time only: outputs depend on the input, never on the wall clock
        self.processor = bootstrap(settings, monitor=monitor, clock=None)
        self.result = ReplayResult()

    def messages(self, routing: Path, feedback: Path | None = None) -> Iterator[Message]:
        """The messages :meth:`run` sends for these files, in order."""
        return messages(routing, feedback, eval_every_s=self.settings.eval_every_s,
                        batch=self.batch, max_event_bytes=self.settings.max_event_bytes,
                        fast=self.processor.columnar)

    def run(self, routing: Path, feedback: Path | None = None,
            baselines: Iterable[Baseline] = (), progress: bool | None = None,
            on_output: Callable[[OutMessage], None] | None = None) -> ReplayResult:
        """Replay ``routing`` (and ``feedback``) into ``out_dir``; return the counts.

        ``progress``: a progress bar on stderr; by default only when stderr is a TTY.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for b in baselines:
            self.monitor.set_baseline(b)
        files: dict[str, IO[bytes]] = {k: (self.out_dir / name).open("wb")
                                       for k, name in OUTPUT_FILES.items()}
        bar = _progress(progress)
        started = time.perf_counter()
        collector = gc.get_threshold()  # put back after: a replay may run inside a program
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            for msg in self.messages(routing, feedback):
                out = self.handle(msg)
                out += self.processor.flush()
                self._write(files, out, on_output)
                self.result.messages += 1
                self.result.events += len(msg.lines)
                if bar is not None:
                    bar.update(len(msg.lines))
        finally:
            gc.set_threshold(*collector)
            for f in files.values():
                f.close()
            if bar is not None:
                bar.close()
        self.result.seconds = time.perf_counter() - started
        self.result.counts = {f"{r}/{t}": n for (r, t), n in
                              sorted(self.monitor.counts.routed.items())}
        return self.result

    def handle(self, msg: Message) -> list[OutMessage]:
        """Process one message (without the evaluations: see ``Processor.flush``)."""
        first = msg.lines[0].line_no
        out = self.processor.handle(msg.kind, InMessage(msg.source, None, first, None,
                                                        msg.value), msg.parsed)
        if msg.batch and any(m.topic == "dlq" for m in out):
            lines = _Lines(msg)
            out = [_locate(m, lines) if m.topic == "dlq" else m for m in out]
        return out

    def _write(self, files: dict[str, IO[bytes]], out: list[OutMessage],
               on_output: Callable[[OutMessage], None] | None) -> None:
        for m in out:
            files[m.topic].write(m.value + b"\n")
            self.result.tally(m)
            if on_output is not None:
                on_output(m)


class _Lines:
    """The line numbers of a batch message, by index and (built when asked) by event_id."""

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self._by_id: dict[Any, int] | None = None

    def at(self, index: int) -> int | None:
        lines = self.msg.lines
        return lines[index].line_no if 0 <= index < len(lines) else None

    def of(self, event_id: Any) -> int | None:
        if self._by_id is None:
            self._by_id = {}
            for line in self.msg.lines:
                self._by_id.setdefault(orjson.loads(line.raw).get("event_id"), line.line_no)
        return self._by_id.get(event_id) if event_id is not None else None


def _locate(m: OutMessage, lines: _Lines) -> OutMessage:
    """Point a dead letter of a batch message at its line: ``offset`` is the line number.

    A rejection inside the batch carries the event's ``index``; one the monitor makes (a
    late event) carries the event, found again by ``event_id``. Dead letters of no line
    (unjoined feedback expiring at an evaluation) are left as they are.
    """
    record = DeadLetter.model_validate_json(m.value)
    if record.offset is None:
        return m
    if record.index is not None:
        line_no = lines.at(record.index)
    else:
        try:
            payload = orjson.loads(record.payload)
        except orjson.JSONDecodeError:
            payload = None
        line_no = lines.of(payload.get("event_id") if isinstance(payload, dict) else None)
    if line_no is None:
        return m
    return OutMessage(m.topic, m.key, encode(record.model_copy(
        update={"offset": line_no, "index": None})))


def _progress(enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(unit=" events", unit_scale=True, file=sys.stderr, smoothing=0.1)


def read_alerts(path: Path) -> list[Alert]:
    return [Alert.model_validate_json(line) for line in path.read_bytes().splitlines() if line]
