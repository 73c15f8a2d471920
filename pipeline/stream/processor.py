"""Turns raw Kafka messages into monitor calls and output messages; knows no faust.

The faust agents, the replay command and the tests all drive this one object, so the
decode → dead-letter → core → publish path is the same everywhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ValidationError

from pipeline.codec import Decoded, decode_message, split_wire_format
from pipeline.core.monitor import Monitor, Output
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
    outputs depend on the input alone.
    """

    def __init__(self, settings: Settings, monitor: Monitor, metrics: WorkerMetrics,
                 clock: Callable[[], float] | None = time.time) -> None:
        self.settings = settings
        self.monitor = monitor
        self.metrics = metrics
        self.clock = clock
        self._evaluations_seen = 0
        #: next offset not yet counted, per input (topic, partition): the snapshot's fence
        self.positions: dict[tuple[str, int], int] = {}
        self.messages = 0

    def counted(self, msg: InMessage) -> bool:
        """Whether the state already includes this message (re-read after a restore)."""
        if msg.partition is None or msg.offset is None:
            return False
        return msg.offset < self.positions.get((msg.topic, msg.partition), 0)

    def handle(self, kind: str, msg: InMessage, parsed: Any = UNPARSED) -> list[OutMessage]:
        """Process one input message; a message the state already counts is skipped.

        ``parsed``: the message's JSON, when the caller has parsed it already.
        """
        if self.counted(msg):
            self.metrics.fenced.labels(kind).inc()
            return []
        if msg.partition is not None and msg.offset is not None:
            self.positions[(msg.topic, msg.partition)] = msg.offset + 1
        self.messages += 1
        started = time.perf_counter()
        raw = msg.value if msg.value is not None else b""
        if kind == "baselines":
            out = self._baseline(msg, raw)
        else:
            model = RoutingEvent if kind == "routing" else FeedbackEvent
            decoded: Decoded[RoutingEvent] | Decoded[FeedbackEvent]
            decoded = decode_message(  # type: ignore[assignment]
                raw, model, strict=self.settings.strict,
                max_event_bytes=self.settings.max_event_bytes,
                max_message_bytes=self.settings.max_message_bytes, parsed=parsed)
            self.metrics.decoded(kind, decoded.schema_id, decoded.unknown_fields)
            out = self._rejections(msg, decoded.rejections, raw)
            out.extend(self._observe(msg, decoded.events))
        self.metrics.processing.labels(kind).observe(time.perf_counter() - started)
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
        for baseline in monitor.baselines.values():
            self.metrics.baseline_info(baseline)
        self._evaluations_seen = monitor.evaluations
        self.metrics.update_from(monitor)

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
        self.metrics.baseline_info(baseline)
        return []

    def _observe(self, msg: InMessage,
                 events: list[RoutingEvent] | list[FeedbackEvent]) -> list[OutMessage]:
        out: list[OutMessage] = []
        accepted: list[RoutingEvent | FeedbackEvent] = list(events)
        if self.clock is not None:  # in event time (replay) nothing is from the future
            horizon = self.clock() + self.settings.max_future_s
            accepted = []
            for ev in events:
                if ev.epoch > horizon:
                    rejection = Rejection("future", f"ts: {ev.ts.isoformat()} is more than "
                                          f"{self.settings.max_future_s:g}s ahead of now", "ts")
                    out.append(self._dead_letter(msg, rejection, encode(ev)))
                else:
                    accepted.append(ev)
        routing = [e for e in accepted if isinstance(e, RoutingEvent)]
        feedback = [e for e in accepted if isinstance(e, FeedbackEvent)]
        counts = self.monitor.counts
        outputs = []
        # metrics count what the monitor took: late and duplicate events are not valid
        if routing:
            before, dups = dict(counts.routed), counts.duplicates
            outputs = self.monitor.observe_routing(routing)
            self.metrics.observed_routing(_delta(before, counts.routed),
                                          counts.duplicates - dups)
        if feedback:
            # one at a time (feedback is sparse): counts.feedback grows only as feedback
            # joins its decision, and the metric counts what was taken, joined or not
            taken: dict[tuple[str, str], int] = {}
            dups = counts.duplicates
            for ev in feedback:
                seen, late = counts.duplicates, self.monitor.observe_feedback([ev])
                outputs += late
                if not late and counts.duplicates == seen:
                    key = (ev.router_id or "unknown", ev.kind)
                    taken[key] = taken.get(key, 0) + 1
            self.metrics.observed_feedback(taken, counts.duplicates - dups)
        out.extend(self._output(msg, o) for o in outputs)
        return out

    def flush(self) -> list[OutMessage]:
        """Outputs of evaluations that are due; call after each batch."""
        out = [self._output(None, o) for o in self.monitor.drain()]
        if self.monitor.evaluations != self._evaluations_seen:
            self._evaluations_seen = self.monitor.evaluations
            self.metrics.update_from(self.monitor)
        return out

    def _output(self, msg: InMessage | None, o: Output) -> OutMessage:
        if o.topic == "dlq":
            assert isinstance(o.payload, Rejection)
            raw = encode(o.event) if o.event is not None else b""
            return self._dead_letter(msg, o.payload, raw)
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
        out = [self._dead_letter(msg, r, _item(raw, items, r.index))
               for r in rejections[:MAX_DEAD_LETTERS]]
        rest = rejections[MAX_DEAD_LETTERS:]
        if rest:
            indexes = [r.index for r in rest if r.index is not None]
            summary = Rejection(
                "too_many_invalid",
                f"{len(rest)} more invalid events in this message (indexes {min(indexes)}"
                f"..{max(indexes)}); the next one: {rest[0].reason}", rest[0].field)
            out.append(self._dead_letter(msg, summary, raw, events=len(rest)))
        return out

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


def _delta(before: dict[tuple[str, str], int],
           after: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
