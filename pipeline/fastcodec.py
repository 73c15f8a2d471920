"""The hot-path decoder of routing events: msgspec Structs checked against the contract.

The pydantic models in :mod:`pipeline.schemas` stay the contract (and the source of the
JSON Schemas). This module decodes the common case of ``tierwatch.routing`` batches
about three times faster with msgspec, and hands everything else to the contract's own
decoder, so that what is accepted, what is rejected and every reason stay exactly those
of :func:`pipeline.codec.decode_message`:

- :class:`FastRouting` and :class:`FastThresholds` declare the same fields, defaults and
  constraints as :class:`~pipeline.schemas.RoutingEvent` and
  :class:`~pipeline.schemas.Thresholds` (``tests/unit/test_fastcodec.py`` fails when they
  drift apart), and forbid unknown fields;
- what msgspec cannot state is checked on the decoded batch: ``capable_below <=
  cheap_above``, ``policy_seq`` at most 2**64 - 1 (orjson reads a larger integer as a
  float, which the contract refuses), the timestamp's instant in [2000, 2100), and its spelling
  (pydantic truncates digits past the microsecond where msgspec rounds, so a timestamp
  with more than six fraction digits is left to pydantic);
- an event msgspec refuses, or one that fails a check, is validated by pydantic alone
  (``validate_event``), which names the field, drops and counts unknown fields (or
  rejects them in strict mode) and accepts the lax spellings the contract accepts
  (numeric timestamps, for one); a message that is not a plain JSON object or array,
  or is oversized, goes to :func:`~pipeline.codec.decode_message` whole.

So the fast decoder accepts and rejects exactly what the contract does, by
construction, and the differential tests check that msgspec never accepts what pydantic
refuses, with equal values when both accept.

>>> b = decode_routing(b'[{"event_id": "e", "request_id": "r", "router_id": "a", '
...     b'"tier": "cheap", "ts": "2026-01-01T00:00:00Z", "score": 0.9, '
...     b'"route_reason": "confident_cheap", '
...     b'"thresholds": {"cheap_above": 0.7, "capable_below": 0.5}}, {"event_id": ""}]')
>>> len(b.events), b.epochs.tolist(), [(r.index, r.field) for r in b.decoded.rejections]
(1, [1767225600.0], [(1, 'event_id')])
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter, le
from typing import Annotated, Any, Final, Literal

import msgspec
import numpy as np
import orjson

from pipeline.codec import Decoded, decode_message, split_wire_format
from pipeline.schemas import (
    EARLIEST,
    LATEST,
    MAX_EVENT_BYTES,
    MAX_MAP_ITEMS,
    MAX_MESSAGE_BYTES,
    SUBJECT_ID_PATTERN,
    UNPARSED,
    Rejection,
    RoutingEvent,
    validate_event,
)

__all__ = ["FastRouting", "FastThresholds", "RoutingBatch", "decode_line", "decode_routing"]

#: the largest integer orjson reads as one (a larger one becomes a float, which the
#: contract's strict integers refuse); msgspec reads any size, so it is checked after
JSON_INT_MAX: Final = 2**64 - 1
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Label = Annotated[str, msgspec.Meta(max_length=128)]
_TzDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
_Reason = Literal["confident_cheap", "confident_capable", "uncertain_default", "exploration",
                  "escalated", "fallback", "override"]


class FastThresholds(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`~pipeline.schemas.Thresholds` for msgspec (the order check is separate)."""

    cheap_above: _Unit
    capable_below: _Unit
    exploration_rate: _Unit = 0.0
    escalate_below: _Unit | None = None

    @property
    def key(self) -> tuple[float, float, float]:
        return (self.cheap_above, self.capable_below, self.exploration_rate)


class FastRouting(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`~pipeline.schemas.RoutingEvent` for msgspec; ``ts`` stays text here and is
    parsed for the whole batch at once (see :func:`decode_routing`)."""

    event_id: _Id
    request_id: _Id
    ts: str
    router_id: _Name
    tier: _Name
    score: _Unit
    route_reason: _Reason
    thresholds: FastThresholds
    schema_version: Literal["1"] = "1"
    model: _Id | None = None
    propensity: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    policy_seq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    classifier_version: _Id | None = None
    cost_usd: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    segment: Annotated[dict[_Name, _Label], msgspec.Meta(max_length=MAX_MAP_ITEMS)] | None = None
    signals: Annotated[dict[_Name, float], msgspec.Meta(max_length=MAX_MAP_ITEMS)] | None = None
    #: one msgspec refuses goes to pydantic, whose reason names the PII it looks like
    subject_id: Annotated[str, msgspec.Meta(pattern=SUBJECT_ID_PATTERN, min_length=16,
                                            max_length=128)] | None = None


_ONE_DECODER: Final = msgspec.json.Decoder(FastRouting)
_LIST_DECODER: Final = msgspec.json.Decoder(list[FastRouting])
_RAW_DECODER: Final = msgspec.json.Decoder(list[msgspec.Raw])
_TS_DECODER: Final = msgspec.json.Decoder(list[_TzDatetime])
#: more than six fraction digits: pydantic truncates them, msgspec rounds
_SUB_MICRO: Final = re.compile(r"\.[0-9]{7}")
_LO, _HI = EARLIEST.timestamp(), LATEST.timestamp()
_THRESHOLDS, _SEQ = attrgetter("thresholds"), attrgetter("policy_seq")
_CHEAP, _CAPABLE = attrgetter("cheap_above"), attrgetter("capable_below")
#: what msgspec raises on input it will not take; a deeply nested array exhausts its
#: recursion limit (RecursionError), and the contract's decoder then names the problem
_REFUSED: Final = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)


@dataclass(slots=True)
class RoutingBatch:
    """One decoded routing message, with its valid events also as columns.

    ``decoded`` is what :func:`pipeline.codec.decode_message` returns for the message,
    except that its events may be :class:`FastRouting` (whose ``ts`` is text):
    ``times[i]`` and ``epochs[i]`` are event ``i``'s parsed timestamp and epoch seconds.
    """

    decoded: Decoded[Any]
    times: list[datetime]
    epochs: np.ndarray

    @property
    def events(self) -> list[Any]:
        return self.decoded.events


def _from_model(events: list[RoutingEvent], decoded: Decoded[Any]) -> RoutingBatch:
    times = [ev.ts for ev in events]
    return RoutingBatch(decoded, times,
                        np.fromiter((t.timestamp() for t in times), np.float64, len(times)))


def _fallback(raw: bytes, strict: bool, max_event_bytes: int,
              max_message_bytes: int) -> RoutingBatch:
    decoded: Decoded[Any] = decode_message(raw, RoutingEvent, strict=strict,
                                           max_event_bytes=max_event_bytes,
                                           max_message_bytes=max_message_bytes)
    return _from_model(decoded.events, decoded)


def _times(events: list[FastRouting]) -> tuple[list[datetime], np.ndarray] | None:
    """The batch's timestamps parsed at once, or ``None`` if any needs pydantic."""
    if not events:
        return [], np.empty(0, np.float64)
    stamps = [ev.ts for ev in events]
    text = '","'.join(stamps)
    if (_SUB_MICRO.search(text) is not None or "\\" in text
            or text.count('"') != 2 * (len(stamps) - 1)):
        return None  # more than six fraction digits, or a quote or backslash in a ts
    try:
        times = _TS_DECODER.decode(f'["{text}"]'.encode())
    except _REFUSED:
        return None
    if len(times) != len(events):  # cannot happen after the check above; kept as a guard
        return None
    epochs = np.array(list(map(datetime.timestamp, times)), dtype=np.float64)
    if epochs.min() < _LO or epochs.max() >= _HI:
        return None
    return times, epochs


def _ordered(events: list[FastRouting]) -> bool:
    """The rules msgspec is not told: thresholds in order, integers orjson reads whole."""
    ths = list(map(_THRESHOLDS, events))
    if not all(map(le, map(_CAPABLE, ths), map(_CHEAP, ths))):
        return False
    seqs = [s for s in map(_SEQ, events) if s is not None]
    return not seqs or max(seqs) <= JSON_INT_MAX


def decode_routing(raw: bytes, *, strict: bool = False, max_event_bytes: int = MAX_EVENT_BYTES,
                   max_message_bytes: int = MAX_MESSAGE_BYTES,
                   parsed: Any = UNPARSED) -> RoutingBatch:
    """Decode one routing message as :func:`pipeline.codec.decode_message` would.

    The same events (as :class:`FastRouting` or :class:`~pipeline.schemas.RoutingEvent`),
    the same rejections with the same reasons, the same schema id and unknown-field
    counts; see the module notes. ``parsed``: a batch's elements already decoded by the
    caller, each a :class:`FastRouting` (from :func:`decode_line`) or the JSON object
    (``orjson.loads`` of the element), so the bytes are not decoded twice.
    """
    schema_id, payload = split_wire_format(raw)
    head = payload[:1]
    if isinstance(parsed, list) and schema_id is None and head == b"[":
        return _predecoded(raw, payload, parsed, strict, max_event_bytes, max_message_bytes)
    if (len(payload) > max_message_bytes or head not in (b"[", b"{")
            or (head == b"{" and len(payload) > max_event_bytes)):
        return _fallback(raw, strict, max_event_bytes, max_message_bytes)
    try:
        events = ([_ONE_DECODER.decode(payload)] if head == b"{"
                  else _LIST_DECODER.decode(payload))
    except _REFUSED:
        events = None
    if events is not None:
        if head == b"[" and len(payload) > max_event_bytes * max(len(events), 1):
            return _fallback(raw, strict, max_event_bytes, max_message_bytes)
        parsed = _times(events) if _ordered(events) else None
        if parsed is not None:
            return RoutingBatch(Decoded(events, [], schema_id), *parsed)
    if head == b"{":
        return _fallback(raw, strict, max_event_bytes, max_message_bytes)
    return _elementwise(raw, payload, schema_id, strict, max_event_bytes, max_message_bytes)


class _Elements:
    """A batch decided event by event: msgspec's events kept, the rest through pydantic."""

    def __init__(self, strict: bool) -> None:
        self.unknown: Counter[str] | None = None if strict else Counter()
        self.events: list[Any] = []
        self.times: list[datetime] = []
        self.epochs: list[float] = []
        self.rejections: list[Rejection] = []

    def take_fast(self, event: FastRouting) -> bool:
        """Keep ``event`` if it passes the batch checks; ``False`` leaves it to pydantic."""
        got = _times([event]) if _ordered([event]) else None
        if got is None:
            return False
        self.events.append(event)
        self.times.append(got[0][0])
        self.epochs.append(float(got[1][0]))
        return True

    def validate(self, obj: Any, index: int) -> None:
        out = validate_event(obj, RoutingEvent, index, unknown=self.unknown)
        if isinstance(out, Rejection):
            self.rejections.append(out)
        else:
            self.events.append(out)
            self.times.append(out.ts)
            self.epochs.append(out.ts.timestamp())

    def batch(self, schema_id: int | None) -> RoutingBatch:
        unknown = self.unknown
        decoded: Decoded[Any] = Decoded(self.events, self.rejections, schema_id,
                                        dict(unknown) if unknown else {})
        return RoutingBatch(decoded, self.times, np.asarray(self.epochs, np.float64))


def _elementwise(raw: bytes, payload: bytes, schema_id: int | None, strict: bool,
                 max_event_bytes: int, max_message_bytes: int) -> RoutingBatch:
    """A batch with some event msgspec refused: each such event through pydantic."""
    try:
        doc = orjson.loads(payload)
        items = _RAW_DECODER.decode(payload)
    except (orjson.JSONDecodeError, *_REFUSED):
        return _fallback(raw, strict, max_event_bytes, max_message_bytes)
    if (not isinstance(doc, list) or len(items) != len(doc)
            or len(payload) > max_event_bytes * max(len(doc), 1)):
        return _fallback(raw, strict, max_event_bytes, max_message_bytes)
    out = _Elements(strict)
    for i, (item, obj) in enumerate(zip(items, doc, strict=True)):
        try:
            fast: FastRouting | None = _ONE_DECODER.decode(item)
        except _REFUSED:
            fast = None
        if fast is None or not out.take_fast(fast):
            out.validate(obj, i)
    return out.batch(schema_id)


def decode_line(raw: bytes) -> FastRouting | None:
    """One routing event (a JSON object) as msgspec decodes it, or ``None`` if msgspec
    refuses it (pydantic then has the last word: see :func:`decode_routing`)."""
    try:
        return _ONE_DECODER.decode(raw)
    except _REFUSED:
        return None


def _predecoded(raw: bytes, payload: bytes, parsed: list[Any], strict: bool,
                max_event_bytes: int, max_message_bytes: int) -> RoutingBatch:
    """A batch whose elements the caller decoded already (see :func:`decode_routing`)."""
    if (len(raw) > max_message_bytes
            or len(payload) > max_event_bytes * max(len(parsed), 1)):
        return _fallback(raw, strict, max_event_bytes, max_message_bytes)
    fast = [p for p in parsed if isinstance(p, FastRouting)]
    if len(fast) == len(parsed) and _ordered(fast):
        got = _times(fast)
        if got is not None:
            return RoutingBatch(Decoded(fast, [], None), *got)
    items: list[msgspec.Raw] | None = None
    out = _Elements(strict)
    for i, obj in enumerate(parsed):
        if isinstance(obj, FastRouting):
            if out.take_fast(obj):
                continue
            if items is None:
                try:
                    items = _RAW_DECODER.decode(payload)
                except _REFUSED:  # another element nested past msgspec's limit
                    return _fallback(raw, strict, max_event_bytes, max_message_bytes)
            obj = orjson.loads(bytes(items[i]))
        out.validate(obj, i)
    return out.batch(None)
