"""Input messages as producers send them: the Schema Registry wire format, one event or a
batch, unknown fields accepted and counted (or rejected, in strict mode).

A message on ``tierwatch.routing`` or ``tierwatch.feedback`` is JSON text, optionally in
Confluent's Schema Registry wire format: the magic byte ``0x00``, the schema id as a
4-byte big-endian unsigned integer, then the JSON. No JSON text starts with ``0x00``, so
the two are told apart by the first byte. The schema id is recorded, never trusted: the
payload is validated against tierwatch's own models either way.

>>> split_wire_format(b"\\x00\\x00\\x00\\x01\\x2a" + b'{"a": 1}')
(298, b'{"a": 1}')
>>> split_wire_format(b'{"a": 1}')
(None, b'{"a": 1}')
>>> from pipeline.schemas import FeedbackEvent
>>> d = decode_message(b"\\x00\\x00\\x00\\x00\\x07" + b'[{"event_id": "f", "request_id": "r",'
...     b' "kind": "thumbs", "value": 0, "ts": "2026-01-01T00:00:00Z", "trace_id": "x"}]',
...     FeedbackEvent)
>>> len(d.events), d.schema_id, d.unknown_fields
(1, 7, {'trace_id': 1})
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, Generic

from pipeline.schemas import (
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    UNPARSED,
    E,
    Rejection,
    decode_events,
)

#: Confluent's wire format: magic byte 0x00, then a 4-byte big-endian schema id
WIRE_HEADER_BYTES: Final = 5


def split_wire_format(raw: bytes) -> tuple[int | None, bytes]:
    """``(schema id, payload)`` of a message in the Schema Registry wire format, else
    ``(None, raw)`` unchanged."""
    if len(raw) >= WIRE_HEADER_BYTES and raw[0] == 0:
        return int.from_bytes(raw[1:WIRE_HEADER_BYTES], "big"), raw[WIRE_HEADER_BYTES:]
    return None, raw


@dataclass(slots=True)
class Decoded(Generic[E]):
    """One decoded message: its valid events, its rejections, and what was noticed."""

    events: list[E]
    rejections: list[Rejection]
    #: the Schema Registry schema id, when the message came in the wire format
    schema_id: int | None = None
    #: dotted names of fields the schema does not know → accepted events carrying them
    unknown_fields: dict[str, int] = field(default_factory=dict)


def decode_message(raw: bytes, model: type[E], *, strict: bool = False,
                   max_event_bytes: int = MAX_EVENT_BYTES,
                   max_message_bytes: int = MAX_MESSAGE_BYTES,
                   parsed: Any = UNPARSED) -> Decoded[E]:
    """Decode one input message (see the module notes).

    ``strict``: reject events with unknown fields (``invalid_field``, naming the field)
    instead of dropping and counting them. ``parsed``: the JSON already parsed by the
    caller, as for :func:`~pipeline.schemas.decode_events` (not with a wire header).
    """
    schema_id, payload = split_wire_format(raw)
    unknown: Counter[str] | None = None if strict else Counter()
    events, rejections = decode_events(
        payload, model, max_event_bytes=max_event_bytes, max_message_bytes=max_message_bytes,
        parsed=parsed if schema_id is None else UNPARSED, unknown=unknown)
    return Decoded(events, rejections, schema_id, dict(unknown) if unknown else {})
