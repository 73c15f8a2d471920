"""Turns raw Kafka messages into monitor calls and output messages; knows no faust.

The faust agents, the replay command and the tests all drive this one object, so the
decode → dead-letter → core → publish path is the same everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from pipeline.codec import Decoded, decode_message, split_wire_format
from pipeline.core.columns import any_late, as_model
from pipeline.core.join import Origin
from pipeline.core.monitor import Monitor, Output
from pipeline.fastcodec import RoutingBatch, decode_routing
from pipeline.schemas import (
    UNPARSED,
    Baseline,
    DeadLetter,
    FeedbackEvent,
    Rejection,
    RoutingEvent,
)
from pipeline.settings import Settings
from pipeline.stream.checkpoint import Snapshot
from pipeline.stream.metrics import WorkerMetrics

#: a dead letter carries at most this much of the rejected bytes (then their size and
#: SHA-256), so that it always fits in a Kafka message whatever the input was
DEAD_LETTER_PAYLOAD_BYTES = 64 * 1024
#: dead letters per input message; the rest of a hostile batch is summed up in one more
MAX_DEAD_LETTERS = 100
#: consecutive messages that raise inside the monitor before the worker calls itself broken
MAX_CONSECUTIVE_ERRORS = 20
#: tests only: ``message:<event_id>`` makes the message holding that event raise inside
#: the monitor; ``flush:<event_id>`` makes the evaluations after it raise
FAULT_ENV = "TIERWATCH_TEST_FAULT"

log = logging.getLogger("tierwatch.processor")


class ProcessingError(RuntimeError):
    """The processor cannot go on: evaluations fail, or every message fails.

    The worker exits non-zero on it, so that its supervisor restarts it (and says so).
    """


@dataclass(frozen=True, slots=True)
class OutMessage:
    """One message to publish: a topic short name (see ``Settings.topic``), key, value."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class InMessage:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


def encode(model: BaseModel) -> bytes:
    """Canonical bytes of a payload: the same model always gives the same bytes."""
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True),
                        option=orjson.OPT_SORT_KEYS)


def _payload_text(raw: bytes) -> tuple[str, Literal["utf-8", "base64"]]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


class Processor:
    """Decode, validate and dead-letter messages, feed the monitor, collect outputs.

    ``kind`` of an input message is its short topic name: ``routing``, ``feedback``
    or ``baselines``. ``clock`` is wall time; ``None`` runs in event time (replay):
    no "from the future" check, and dead letters are stamped with the watermark, so
    outputs depend on the input alone. ``columnar``: routing messages are decoded by
    the hot-path decoder (``pipeline/fastcodec.py``) and counted on columns
    (``core/columns.py``); ``False`` keeps the per-event path (the same outputs, slower).
    """

    def __init__(self, settings: Settings, monitor: Monitor, metrics: WorkerMetrics,
                 clock: Callable[[], float] | None = time.time, *,
                 columnar: bool = True) -> None:
        self.columnar = columnar
        #: the routing message being handled, decoded as columns (columnar only)
        self._batch: RoutingBatch | None = None
        self.settings = settings
        self.monitor = monitor
        self.metrics = metrics
        self.clock = clock
        # the monitor's figures are read at scrape time, from whichever monitor is current
        metrics.read_from(lambda: self.monitor)
        #: next offset not yet counted, per input (topic, partition): the snapshot's fence
        self.positions: dict[tuple[str, int], int] = {}
        self.messages = 0
        self.consecutive_errors = 0
        #: the message being handled: each valid event's index in its batch, by id()
        self._index = _Indexes()
        self._spans: list[tuple[int, int]] | None = None
        self._fault = os.environ.get(FAULT_ENV, "")
        #: seconds spent decoding messages ahead of their handling, by id() of the message
        self._decode_s: dict[int, float] = {}
        self._fail_flush = False

    def counted(self, msg: InMessage) -> bool:
        """Whether the state already includes this message (re-read after a restore)."""
        if msg.partition is None or msg.offset is None:
            return False
        return msg.offset < self.positions.get((msg.topic, msg.partition), 0)

    def handle(self, kind: str, msg: InMessage, parsed: Any = UNPARSED, *,
               batch: RoutingBatch | None = None) -> list[OutMessage]:
        """Process one input message; a message the state already counts is skipped.

        ``parsed``: the message's JSON, when the caller has parsed it already; ``batch``:
        a routing message already decoded as columns (columnar only).
        """
        if self.counted(msg):
            self.metrics.fenced.labels(kind).inc()
            return []
        if msg.partition is not None and msg.offset is not None:
            self.positions[(msg.topic, msg.partition)] = msg.offset + 1
        self.messages += 1
        # a message decoded ahead (handle_many) counts its decoding time here too
        started = time.perf_counter() - self._decode_s.pop(id(msg), 0.0)
        raw = msg.value if msg.value is not None else b""
        self._spans = None
        try:
            if kind == "baselines":
                out = self._baseline(msg, raw)
            else:
                model = RoutingEvent if kind == "routing" else FeedbackEvent
                decoded: Decoded[Any]
                if kind == "routing" and self.columnar:
                    self._batch = batch or decode_routing(
                        raw, strict=self.settings.strict,
                        max_event_bytes=self.settings.max_event_bytes,
                        max_message_bytes=self.settings.max_message_bytes, parsed=parsed)
                    decoded = self._batch.decoded
                else:
                    decoded = decode_message(
                        raw, model, strict=self.settings.strict,
                        max_event_bytes=self.settings.max_event_bytes,
                        max_message_bytes=self.settings.max_message_bytes, parsed=parsed)
                self.metrics.decoded(kind, decoded.schema_id, decoded.unknown_fields)
                out = self._rejections(msg, decoded.rejections, raw)
                out.extend(self._observe(msg, raw, decoded.events, decoded.rejections))
            self.consecutive_errors = 0
        except Exception as err:  # a bug must cost one message, not the worker
            out = self._internal_error(kind, msg, raw, err)
        finally:
            self._index = _Indexes()
            self._batch = None
            self._evaluation_errors()
        self.metrics.processing.labels(kind).observe(time.perf_counter() - started)
        return out

    def handle_many(self, messages: Sequence[tuple[str, InMessage]]) -> list[OutMessage]:
        """:meth:`handle` then :meth:`flush` for each ``(kind, message)`` in turn: the same
        outputs in the same order, and the same state.

        A run of clean routing messages (no rejections, nothing late or from the future,
        no jump past a whole evaluation interval) is counted as one columnar batch. Every
        message of a run but the last keeps the watermark below :attr:`Monitor.due_at`,
        so a flush after it would only hand back its review requests; the flush after the
        run is the flush after its last message, with those review requests put back in
        per-message order first. At a hundred events a message the per-batch cost of the
        columnar path is most of the cost.
        """
        out: list[OutMessage] = []
        run: list[tuple[InMessage, RoutingBatch]] = []
        wm = self.monitor.watermark
        for kind, msg in messages:
            batch = None
            if kind == "routing" and self.columnar and not self._fault and not self.counted(msg):
                decoding = time.perf_counter()
                batch = self._decode(msg)
                self._decode_s[id(msg)] = time.perf_counter() - decoding
                joined = self._joinable(batch, wm)
                if joined is not None:
                    run.append((msg, batch))
                    wm, last = joined
                    if last:
                        out += self._count_run(run)
                        run = []
                        wm = self.monitor.watermark
                    continue
            out += self._count_run(run)
            run = []
            out += self.handle(kind, msg, batch=batch)
            out += self.flush()
            wm = self.monitor.watermark
        out += self._count_run(run)
        return out

    def _decode(self, msg: InMessage) -> RoutingBatch:
        s = self.settings
        return decode_routing(msg.value if msg.value is not None else b"", strict=s.strict,
                              max_event_bytes=s.max_event_bytes,
                              max_message_bytes=s.max_message_bytes)

    def _joinable(self, batch: RoutingBatch, wm: float | None) -> tuple[float, bool] | None:
        """If ``batch`` may join a run counted from watermark ``wm`` (see
        :meth:`handle_many`): the watermark after it, and whether it must end the run."""
        monitor = self.monitor
        due = monitor.due_at
        epochs = batch.epochs
        if (due is None or monitor.next_eval is None or wm is None
                or batch.decoded.rejections or not len(epochs)):
            return None
        running = np.maximum.accumulate(epochs)
        top = max(wm, float(running[-1]))
        if top >= monitor.next_eval + monitor.config.eval_every_s:
            return None  # a jump: the evaluations it skips run between two of its events
        if any_late(epochs, running, wm, monitor.config.allowed_lateness_s):
            return None
        if self.clock is not None and top > self.clock() + self.settings.max_future_s:
            return None
        return top, top >= due

    def _count_run(self, run: list[tuple[InMessage, RoutingBatch]]) -> list[OutMessage]:
        """Count a run of joinable routing messages as one batch, then flush."""
        if len(run) <= 1:
            return [o for msg, batch in run
                    for o in self.handle("routing", msg, batch=batch) + self.flush()]
        started = time.perf_counter() - sum(self._decode_s.pop(id(msg), 0.0) for msg, _ in run)
        for msg, batch in run:
            if msg.partition is not None and msg.offset is not None:
                self.positions[(msg.topic, msg.partition)] = msg.offset + 1
            self.metrics.decoded("routing", batch.decoded.schema_id,
                                 batch.decoded.unknown_fields)
        self.messages += len(run)
        events = [ev for _, batch in run for ev in batch.events]
        counts = self.monitor.counts
        before, dups = dict(counts.routed), counts.duplicates
        try:
            late = self.monitor.observe_routing(events, np.concatenate(
                [batch.epochs for _, batch in run]))
            if late:  # screened out by _joinable: a bug if it happens
                raise RuntimeError(f"{len(late)} outputs from a run of clean messages")
            self.consecutive_errors = 0
        except Exception as err:  # a bug must cost its messages, not the worker
            return [o for msg, _ in run for o in self._internal_error(
                "routing", msg, msg.value or b"", err)] + self.flush()
        finally:
            self._evaluation_errors()
        self.metrics.observed_routing(_delta(before, counts.routed), counts.duplicates - dups)
        share = (time.perf_counter() - started) / len(run)
        for _ in run:
            self.metrics.processing.labels("routing").observe(share)
        reviews = self.monitor.pending  # then what the evaluations due now add
        out = self.flush()
        return _in_message_order(out[:reviews], run) + out[reviews:]

    def _internal_error(self, kind: str, msg: InMessage, raw: bytes,
                        err: Exception) -> list[OutMessage]:
        """Dead-letter a message whose processing raised; count it; log the traceback.

        The monitor is not transactional: events of the message taken before the error
        stay counted. The replay runs this same code on the same bytes, so it fails at
        the same event and the worker's outputs still equal the replay's; the dead letter
        (with the whole message, and ``internal_error``) says which message to look at.
        """
        self.consecutive_errors += 1
        self.metrics.processing_errors.labels(kind, "message").inc()
        where = f"{msg.topic}[{msg.partition}]@{msg.offset}"
        log.error("internal error processing %s: %s: %s", where, type(err).__name__, err,
                  exc_info=err)
        text = f"{type(err).__name__}: {err}"[:500]
        rejection = Rejection("internal_error", f"internal_error: {text}")
        out = [self._dead_letter(msg, rejection, raw)]
        if self.consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
            raise ProcessingError(f"{self.consecutive_errors} consecutive messages failed; "
                                  f"the last: {text}") from err
        return out

    def snapshot(self) -> Snapshot:
        """The state and the offsets it includes, without the signing key.

        Call between messages; the result shares the live objects, so encode it before
        the next message is handled.
        """
        return Snapshot(dict(self.positions), self.monitor, messages=self.messages)

    def restore(self, snapshot: Snapshot) -> None:
        """Resume from ``snapshot``: its monitor, with this processor's signer and metrics."""
        monitor: Monitor = snapshot.state
        monitor.signer = self.monitor.signer
        self.monitor = monitor
        self.positions = dict(snapshot.positions)
        self.messages = snapshot.messages

    def _baseline(self, msg: InMessage, raw: bytes) -> list[OutMessage]:
        schema_id, payload = split_wire_format(raw)
        self.metrics.decoded("baselines", schema_id, {})
        try:
            baseline = Baseline.model_validate_json(payload)
        except ValidationError as err:
            e = err.errors(include_url=False)[0]
            field = ".".join(str(p) for p in e["loc"]) or None
            return [self._dead_letter(msg, Rejection("invalid_field", f"{field}: {e['msg']}",
                                                     field), raw)]
        self.monitor.set_baseline(baseline)
        return []

    def _observe(self, msg: InMessage, raw: bytes,
                 events: list[RoutingEvent] | list[FeedbackEvent],
                 rejections: list[Rejection]) -> list[OutMessage]:
        out: list[OutMessage] = []
        self._index = _Indexes(raw, events, rejections)
        if self._fault:
            self._inject(events)
        batch = self._batch
        accepted: list[Any] = list(events)
        epochs = None if batch is None else batch.epochs
        if self.clock is not None:  # in event time (replay) nothing is from the future
            horizon = self.clock() + self.settings.max_future_s
            accepted = []
            kept: list[int] = []
            for i, ev in enumerate(events):
                epoch = ev.epoch if batch is None else float(batch.epochs[i])
                if epoch > horizon:
                    ts = ev.ts if batch is None else batch.times[i]
                    rejection = Rejection("future", f"ts: {ts.isoformat()} is more than "
                                          f"{self.settings.max_future_s:g}s ahead of now", "ts",
                                          self._index.get(id(ev)))
                    out.append(self._dead_letter(msg, rejection, self._event_bytes(raw, ev)))
                else:
                    accepted.append(ev)
                    kept.append(i)
            if batch is not None and len(kept) < len(events):
                epochs = batch.epochs[kept]
        if batch is not None:  # a routing message, decoded as columns
            routing, feedback = accepted, []
        else:
            routing = [e for e in accepted if not isinstance(e, FeedbackEvent)]
            feedback = [e for e in accepted if isinstance(e, FeedbackEvent)]
        counts = self.monitor.counts
        outputs = []
        # metrics count what the monitor took: late and duplicate events are not valid
        if routing:
            before, dups = dict(counts.routed), counts.duplicates
            outputs = self.monitor.observe_routing(routing, epochs)
            self.metrics.observed_routing(_delta(before, counts.routed),
                                          counts.duplicates - dups)
        if feedback:
            # one at a time (feedback is sparse): counts.feedback grows only as feedback
            # joins its decision, and the metric counts what was taken, joined or not
            taken: dict[tuple[str, str], int] = {}
            dups = counts.duplicates
            for ev in feedback:
                seen = counts.duplicates
                # where it came from, sliced out of the batch only if it has to wait
                origin = functools.partial(self._origin, msg, raw, ev)
                late = self.monitor.observe_feedback([ev], origins=[origin])
                outputs += late
                if not late and counts.duplicates == seen:
                    key = (ev.router_id or "unknown", ev.kind)
                    taken[key] = taken.get(key, 0) + 1
            self.metrics.observed_feedback(taken, counts.duplicates - dups)
        out.extend(self._output(msg, o, raw) for o in outputs)
        return out

    def _inject(self, events: list[RoutingEvent] | list[FeedbackEvent]) -> None:
        """Tests only (``TIERWATCH_TEST_FAULT``): fail as a bug in the monitor would."""
        where, _, event_id = self._fault.partition(":")
        if any(ev.event_id == event_id for ev in events):
            if where == "flush":
                self._fail_flush = True
            elif where == "message":
                raise RuntimeError(f"injected fault at event {event_id}")

    def flush(self) -> list[OutMessage]:
        """Outputs of evaluations that are due; call after each batch.

        Raises
        ------
        ProcessingError
            If the evaluations raise: they are not tied to one message that could be
            dead-lettered, and skipping them would silently change every later output.
        """
        try:
            if self._fail_flush:
                self._fail_flush = False
                raise RuntimeError("injected fault in the evaluations")
            out = [self._output(None, o) for o in self.monitor.drain()]
            self._evaluation_errors()
        except Exception as err:
            self.metrics.processing_errors.labels("evaluations", "evaluate").inc()
            log.critical("the evaluations failed at watermark %s: %s: %s",
                         self.monitor.watermark, type(err).__name__, err, exc_info=err)
            raise ProcessingError(f"evaluations failed: {type(err).__name__}: {err}") from err
        return out

    def _evaluation_errors(self) -> None:
        """Log and count the router evaluations that raised (the monitor skipped them)."""
        errors = self.monitor.errors
        if not errors:
            return
        for router_id, now, err in errors:
            self.metrics.processing_errors.labels("evaluations", "evaluate").inc()
            log.error("evaluation of router %r at %s failed and was skipped: %s: %s",
                      router_id, datetime.fromtimestamp(now, UTC).isoformat(),
                      type(err).__name__, err, exc_info=err)
        errors.clear()

    def _origin(self, msg: InMessage, raw: bytes, ev: FeedbackEvent) -> Origin:
        return Origin(msg.topic, msg.partition, msg.offset, self._index.get(id(ev)), msg.key,
                      self._event_bytes(raw, ev))

    def _event_bytes(self, raw: bytes, ev: Any) -> bytes:
        """The original bytes of one event of the current message.

        The whole message for a single event (a Schema Registry header included); for a
        batch, the element's own bytes, sliced from the JSON payload (re-encoded only if
        the slicing fails).
        """
        index = self._index.get(id(ev))
        if index is None:
            return raw
        sliced = self._element(raw, index)
        if sliced is None:
            return encode(ev if isinstance(ev, BaseModel) else as_model(ev))
        return sliced

    def _element(self, raw: bytes, index: int) -> bytes | None:
        """Element ``index`` of the current batch as sent, sliced from the JSON payload
        (after any Schema Registry header); ``None`` if the slicing fails."""
        payload = split_wire_format(raw)[1]
        if self._spans is None:
            self._spans = _element_spans(payload) or []
        if 0 <= index < len(self._spans):
            a, b = self._spans[index]
            return payload[a:b]
        return None

    def _output(self, msg: InMessage | None, o: Output, raw: bytes = b"") -> OutMessage:
        if o.topic == "dlq":
            assert isinstance(o.payload, Rejection)
            rejection = o.payload
            if isinstance(o.origin, Origin):  # feedback that waited for its decision
                origin = o.origin
                msg = InMessage(origin.topic, origin.partition, origin.offset, origin.key,
                                origin.raw)
                rejection = Rejection(rejection.reason_class, rejection.reason,
                                      rejection.field, origin.position)
                # the event was counted valid when it arrived: a record, not a new event
                return self._dead_letter(msg, rejection, origin.raw, events=0)
            if o.event is None:
                return self._dead_letter(msg, rejection, b"")
            rejection = Rejection(rejection.reason_class, rejection.reason, rejection.field,
                                  self._index.get(id(o.event)))
            return self._dead_letter(msg, rejection, self._event_bytes(raw, o.event))
        assert isinstance(o.payload, BaseModel)
        self.metrics.published(o)
        return OutMessage(o.topic, o.key.encode(), encode(o.payload))

    def _now(self) -> float:
        if self.clock is not None:
            return self.clock()
        return self.monitor.watermark or 0.0

    def _rejections(self, msg: InMessage, rejections: list[Rejection],
                    raw: bytes) -> list[OutMessage]:
        """Dead letters for one message: its events parsed once, at most
        :data:`MAX_DEAD_LETTERS` of them, the rest summed up in one more."""
        if not rejections:
            return []
        items: list[object] | None = None
        if any(r.index is not None for r in rejections):
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(split_wire_format(raw)[1])
                items = doc if isinstance(doc, list) else None
        out = [self._dead_letter(msg, r, self._item(raw, items, r.index))
               for r in rejections[:MAX_DEAD_LETTERS]]
        rest = rejections[MAX_DEAD_LETTERS:]
        if rest:
            indexes = [r.index for r in rest if r.index is not None]
            summary = Rejection(
                "too_many_invalid",
                f"{len(rest)} more invalid events in this message (indexes {min(indexes)}"
                f"..{max(indexes)}); the next one: {rest[0].reason}", rest[0].field)
            # one record, one dead-letter count; tierwatch_events_total still counts
            # every event it stands for
            out.append(self._dead_letter(msg, summary, raw, events=len(rest)))
        return out

    def _item(self, raw: bytes, items: list[object] | None, index: int | None) -> bytes:
        """The original bytes of element ``index`` of a batch, or the whole message."""
        if index is None or index < 0:
            return raw
        sliced = self._element(raw, index)
        return _item(raw, items, index) if sliced is None else sliced

    def _dead_letter(self, msg: InMessage | None, r: Rejection, raw: bytes,
                     events: int = 1) -> OutMessage:
        size = len(raw)
        truncated = size > DEAD_LETTER_PAYLOAD_BYTES
        text, encoding = _payload_text(raw[:DEAD_LETTER_PAYLOAD_BYTES] if truncated else raw)
        key = msg.key.decode("utf-8", "replace")[:256] if msg and msg.key else None
        record = DeadLetter(
            topic=msg.topic if msg else "", partition=msg.partition if msg else None,
            offset=msg.offset if msg else None, index=r.index, key=key,
            reason=r.reason, reason_class=r.reason_class, field=r.field, payload=text,
            payload_encoding=encoding, rejected_at=datetime.fromtimestamp(self._now(), UTC),
            payload_bytes=size if truncated else None,
            payload_sha256=hashlib.sha256(raw).hexdigest() if truncated else None)
        self.metrics.dead_letter(record, events)
        return OutMessage("dlq", msg.key if msg else None, encode(record))


def _item(raw: bytes, items: list[object] | None, index: int | None) -> bytes:
    """The bytes of one event of a batch (re-encoded), or the whole message."""
    if index is None or items is None or not 0 <= index < len(items):
        return raw
    try:
        return orjson.dumps(items[index])
    except TypeError:
        return raw


#: a JSON string (whole, escapes included) or a structural character
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)
_JSON_WS = b" \t\n\r"


def _element_spans(raw: bytes) -> list[tuple[int, int]] | None:
    """Byte spans ``[start, end)`` of the elements of a JSON array message.

    A scan of strings and brackets (no recursion, so the answer is the same whatever
    the nesting and the caller's stack); ``None`` when ``raw`` is not an array.

    >>> raw = '[ {"a": "],"} ,{"é":[2,3]}, 7 ]'.encode()
    >>> [raw[a:b].decode() for a, b in _element_spans(raw)]
    ['{"a": "],"}', '{"é":[2,3]}', '7']
    >>> _element_spans(b"[]"), _element_spans(b'{"a": 1}')
    ([], None)
    """
    spans: list[tuple[int, int]] = []
    depth, start = 0, 0

    def add(a: int, b: int) -> None:
        while a < b and raw[a] in _JSON_WS:
            a += 1
        while b > a and raw[b - 1] in _JSON_WS:
            b -= 1
        if a < b:
            spans.append((a, b))

    for m in _TOKEN.finditer(raw):
        c = raw[m.start()]
        if c == 0x22:  # a string: nothing structural inside
            if depth == 0:
                return None
        elif c in b"[{":
            depth += 1
            if depth == 1:
                if c != 0x5B:
                    return None
                start = m.end()
        elif c in b"]}":
            depth -= 1
            if depth == 0:
                add(start, m.start())
                return spans
        elif depth == 1:  # a comma between elements
            add(start, m.start())
            start = m.end()
    return None


class _Indexes:
    """Each valid event's index in the message's batch, by ``id()`` of the event; worked
    out only if something asks (a dead letter, feedback that waits for its decision)."""

    __slots__ = ("_by_id", "_message")

    def __init__(self, raw: bytes = b"", events: list[Any] | None = None,
                 rejections: list[Rejection] | None = None) -> None:
        self._message = (raw, events or [], rejections or [])
        self._by_id: dict[int, int | None] | None = None

    def get(self, key: int) -> int | None:
        if self._by_id is None:
            raw, events, rejections = self._message
            # batch elements are found in the JSON payload, after any Schema Registry header
            self._by_id = _indexes(split_wire_format(raw)[1], events, rejections)
        return self._by_id.get(key)


def _indexes(raw: bytes, events: list[Any], rejections: list[Rejection]) -> dict[int, int | None]:
    """Each valid event's index in its batch (``None`` for a message of one event)."""
    if not events:
        return {}
    rejected = {r.index for r in rejections}
    if len(events) == 1 and not rejections and raw.lstrip()[:1] != b"[":
        return {id(events[0]): None}
    valid = (i for i in range(len(events) + len(rejections)) if i not in rejected)
    return {id(ev): i for ev, i in zip(events, valid, strict=False)}


def _in_message_order(out: list[OutMessage],
                      run: list[tuple[InMessage, RoutingBatch]]) -> list[OutMessage]:
    """The review requests of a run as flushes after each of its messages would order
    them: by message, then by router in order of first appearance in the message (the
    monitor counts a batch router by router), then as they came."""
    if len(out) < 2:
        return out
    rank: dict[bytes, tuple[int, int]] = {}
    for i, (_, batch) in enumerate(run):
        routers: dict[str, int] = {}
        for ev in batch.events:
            rank.setdefault(ev.request_id.encode(),
                            (i, routers.setdefault(ev.router_id, len(routers))))
    last = (len(run), 0)
    return sorted(out, key=lambda m: rank.get(m.key, last) if m.key is not None else last)


def _delta(before: dict[tuple[str, str], int],
           after: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
