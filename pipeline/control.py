"""The router side: emit routing events, and apply signed threshold recommendations safely.

A router trusts nobody who can write to Kafka. :class:`ThresholdSubscriber` applies a
recommendation only when it is signed by a known key, newer than the last one applied,
not expired, meant for this router, inside the owner's bounds and in ``enforce`` mode
(unless told to accept advisories). On expiry or lost contact it falls back to safe
thresholds that favour the capable tier. Contact means a broker round trip that
succeeded: an empty poll proves nothing, since kafka-python's ``poll`` returns empty
while the broker is down.

>>> decide(0.9, Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1), u=0.5)
Decision(tier='cheap', route_reason='confident_cheap', propensity=1.0)
>>> decide(0.6, Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1), u=0.05)
Decision(tier='cheap', route_reason='exploration', propensity=0.1)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.core.signing import Keyring
from pipeline.schemas import RouteReason, RoutingEvent, ThresholdRecommendation, Thresholds

log = logging.getLogger("tierwatch.control")


@dataclass(frozen=True, slots=True)
class Decision:
    tier: str
    route_reason: RouteReason
    propensity: float


def decide(score: float, thresholds: Thresholds, u: float, *, cheap: str = "cheap",
           capable: str = "capable") -> Decision:
    """Route one request: ``u`` is a uniform draw in [0,1) for exploration."""
    if score >= thresholds.cheap_above:
        return Decision(cheap, "confident_cheap", 1.0)
    if score < thresholds.capable_below:
        return Decision(capable, "confident_capable", 1.0)
    rate = thresholds.exploration_rate
    if u < rate:
        return Decision(cheap, "exploration", rate)
    return Decision(capable, "uncertain_default", 1.0 - rate)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The router owner's limits; a recommendation outside them is rejected whole."""

    cheap_above: tuple[float, float] = (0.0, 1.0)
    capable_below: tuple[float, float] = (0.0, 1.0)
    exploration_rate: tuple[float, float] = (0.0, 0.5)

    def admits(self, t: Thresholds) -> bool:
        return all(lo <= getattr(t, name) <= hi for name, (lo, hi) in (
            ("cheap_above", self.cheap_above), ("capable_below", self.capable_below),
            ("exploration_rate", self.exploration_rate)))


class ThresholdSubscriber:
    """Background consumer of the control topic; :meth:`current` gives the thresholds to use.

    Parameters
    ----------
    bootstrap, router_id, keyring, bounds, fallback
        Where to read, whose thresholds, which keys to trust, the owner's bounds and the
        safe thresholds used before the first valid message, after expiry or lost contact.
    topic
        The control topic (``tierwatch.control``).
    accept_advisory
        Apply ``advisory`` messages too (default: only ``enforce``).
    contact_timeout_s
        Fall back when no broker round trip has succeeded for this long.
    clock
        Seconds since the epoch: expiry and contact are judged by it.

    Rejections are counted by reason in ``rejections``: ``malformed``,
    ``other_router``, ``unknown_key``, ``bad_signature``, ``replay``, ``expired``,
    ``out_of_bounds`` and ``advisory``.
    """

    def __init__(self, bootstrap: str, router_id: str, keyring: Keyring, bounds: Bounds,
                 fallback: Thresholds, *, topic: str = "tierwatch.control",
                 accept_advisory: bool = False, contact_timeout_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        if not contact_timeout_s > 0:
            raise ValueError("contact_timeout_s must be > 0")
        self.bootstrap, self.router_id, self.topic = bootstrap, router_id, topic
        self.keyring, self.bounds, self.fallback = keyring, bounds, fallback
        self.accept_advisory = accept_advisory
        self.contact_timeout_s = contact_timeout_s
        # probe the broker often enough that one lost probe never looks like lost contact
        self.probe_every_s = min(5.0, contact_timeout_s / 3)
        self.clock = clock
        self.rejections: Counter[str] = Counter()
        self.applied: ThresholdRecommendation | None = None
        self.last_contact: float | None = None
        self._positions: dict[int, int] = {}  # partition → next offset, kept across reconnects
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._caught_up = threading.Event()

    # -- the decision ---------------------------------------------------------------------
    def offer(self, raw: bytes | None) -> str:
        """Consider one control message; return ``"applied"`` or the rejection reason."""
        reason = self._check(raw)
        if reason == "applied":
            log.info("applied control seq=%s for %s", self.applied and self.applied.seq,
                     self.router_id)
        else:
            self.rejections[reason] += 1
            log.warning("rejected control message for %s: %s", self.router_id, reason)
        return reason

    def _check(self, raw: bytes | None) -> str:
        try:
            doc: Any = orjson.loads(raw or b"")
            rec = ThresholdRecommendation.model_validate(doc)
        except (orjson.JSONDecodeError, ValidationError):
            return "malformed"
        if rec.router_id != self.router_id:
            return "other_router"
        if rec.key_id not in self.keyring:
            return "unknown_key"
        # The signed body is the parsed model's canonical JSON, as the signer computed it:
        # how a producer formatted the bytes can neither break a valid message nor pass a
        # forged one (every field the model holds is covered).
        signed = rec.model_dump(mode="json", exclude_none=True)
        if not self.keyring.verify(rec.key_id, signed, rec.signature):
            return "bad_signature"
        with self._lock:
            if self.applied is not None and rec.seq <= self.applied.seq:
                return "replay"
            if rec.valid_until.timestamp() <= self.clock():
                return "expired"
            if not self.bounds.admits(rec.thresholds):
                return "out_of_bounds"
            if rec.mode == "advisory" and not self.accept_advisory:
                return "advisory"
            self.applied = rec
        return "applied"

    def mark_contact(self) -> None:
        """Record a successful round trip with the control topic (the consumer calls it;
        offline drivers, e.g. a closed-loop simulation, call it themselves)."""
        now = self.clock()
        with self._lock:
            self.last_contact = now

    def current(self) -> Thresholds:
        """The thresholds to route with now: the applied recommendation while it is valid
        and the control topic is in contact, else the fallback."""
        now = self.clock()
        with self._lock:
            rec, contact = self.applied, self.last_contact
        if rec is None or rec.valid_until.timestamp() <= now:
            return self.fallback
        if contact is None or now - contact > self.contact_timeout_s:
            return self.fallback
        return rec.thresholds

    @property
    def in_contact(self) -> bool:
        """Whether a broker round trip succeeded within ``contact_timeout_s``."""
        contact = self.last_contact
        return contact is not None and self.clock() - contact <= self.contact_timeout_s

    # -- the consumer ---------------------------------------------------------------------
    def start(self, wait_caught_up: float = 30.0) -> ThresholdSubscriber:
        """Start the background consumer; wait until it has read the compacted history."""
        self._thread = threading.Thread(target=self._run, name="tierwatch-control",
                                        daemon=True)
        self._thread.start()
        self._caught_up.wait(wait_caught_up)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ThresholdSubscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except KafkaError as exc:  # broker unreachable: retry, contact ages meanwhile
                log.warning("control consumer for %s: %s; retrying", self.router_id, exc)
                self._stop.wait(1.0)
            except Exception:  # a broken broker must not kill the router's thread
                log.exception("control consumer failed; retrying")
                self._stop.wait(1.0)

    def _consume(self) -> None:
        # No consumer group: every router replica reads the whole compacted history.
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 group_id=None, client_id=f"tierwatch-sub-{uuid.uuid4().hex[:6]}")
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                # no topic, no history: nothing to catch up on; look again shortly
                log.warning("control topic %s not found; waiting", self.topic)
                self._caught_up.set()
                self._stop.wait(2.0)
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            for tp in tps:  # after a reconnect, resume where we were: no false replays
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
                else:
                    consumer.seek_to_beginning(tp)
            end = consumer.end_offsets(tps, timeout_ms=self._probe_timeout_ms)
            self.mark_contact()
            probed = time.monotonic()
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=500)
                for tp, records in batches.items():
                    for r in records:
                        self._position(tp.partition, r.offset + 1)
                        key = None if r.key is None else r.key.decode("utf-8", "replace")
                        if key is None or key == self.router_id:
                            self.offer(r.value)
                        else:  # the key is the router_id: this one is another router's
                            self.rejections["other_router"] += 1
                if batches:
                    self.mark_contact()  # records arrived: the broker answered
                if time.monotonic() - probed >= self.probe_every_s:
                    probed = time.monotonic()
                    try:
                        end = consumer.end_offsets(tps, timeout_ms=self._probe_timeout_ms)
                    except KafkaError as exc:
                        log.warning("control topic %s unreachable: %s", self.topic, exc)
                    else:
                        self.mark_contact()
                if not self._caught_up.is_set() and all(
                        consumer.position(tp) >= end[tp] for tp in tps):
                    self._caught_up.set()
        finally:
            consumer.close()

    @property
    def _probe_timeout_ms(self) -> int:
        return int(max(1.0, min(10.0, self.contact_timeout_s / 3)) * 1000)

    def _position(self, partition: int, offset: int) -> None:
        self._positions[partition] = max(offset, self._positions.get(partition, 0))


class RoutingEventEmitter:
    """Emit RoutingEvents, valid by construction, batched by count, bytes and linger.

    >>> import inspect; "router_id" in inspect.signature(RoutingEventEmitter).parameters
    True
    """

    def __init__(self, bootstrap: str, router_id: str, *, topic: str = "tierwatch.routing",
                 max_batch: int = 100, max_bytes: int = 256 * 1024, linger_s: float = 0.2,
                 producer: KafkaProducer | None = None) -> None:
        self.router_id, self.topic = router_id, topic
        self.max_batch, self.max_bytes, self.linger_s = max_batch, max_bytes, linger_s
        self.producer = producer or KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                                  acks="all")
        self._batch: list[bytes] = []
        self._keys: list[str] = []
        self._bytes = 0
        self._oldest = 0.0
        self._lock = threading.Lock()

    def emit(self, *, request_id: str, score: float, decision: Decision,
             thresholds: Thresholds, ts: datetime | None = None, **fields: Any) -> RoutingEvent:
        """Validate and queue one event; raises ``ValidationError`` on a bad field."""
        ev = RoutingEvent(
            event_id=fields.pop("event_id", None) or uuid.uuid4().hex, request_id=request_id,
            router_id=self.router_id, ts=ts or datetime.now(UTC), tier=decision.tier,
            score=score, route_reason=decision.route_reason, propensity=decision.propensity,
            thresholds=thresholds, **fields)
        raw = ev.model_dump_json(exclude_none=True).encode()
        with self._lock:
            if not self._batch:
                self._oldest = time.monotonic()
            self._batch.append(raw)
            self._keys.append(request_id)
            self._bytes += len(raw)
            due = (len(self._batch) >= self.max_batch or self._bytes >= self.max_bytes
                   or time.monotonic() - self._oldest >= self.linger_s)
        if due:
            self.flush(wait=False)
        return ev

    def flush(self, wait: bool = True) -> None:
        with self._lock:
            batch, keys = self._batch, self._keys
            self._batch, self._keys, self._bytes = [], [], 0
        if batch:
            # the key is the first event's request_id: consumers join on each event's own id
            self.producer.send(self.topic, key=keys[0].encode(),
                               value=b"[" + b",".join(batch) + b"]")
        if wait:
            self.producer.flush()

    def close(self) -> None:
        self.flush()
        self.producer.close()


def watch(settings: Any, router_id: str, *, max_messages: int | None = None) -> int:
    """``tierwatch control watch``: print every control message and whether it verifies."""
    from pipeline.core.signing import parse_key

    keyring = Keyring({settings.control_key_id: parse_key(settings.control_key)})
    checker = ThresholdSubscriber(settings.bootstrap_servers, router_id, keyring, Bounds(),
                                  Thresholds(cheap_above=1.0, capable_below=1.0),
                                  topic=settings.topic("control"), accept_advisory=True)
    consumer = KafkaConsumer(settings.topic("control"),
                             bootstrap_servers=settings.bootstrap_servers,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             group_id=None)
    seen = 0
    try:
        for m in consumer:
            verdict = checker.offer(m.value)
            try:
                doc = orjson.loads(m.value)
                what = (f"seq={doc.get('seq')} mode={doc.get('mode')} thresholds="
                        f"{doc.get('thresholds')} reasons={doc.get('reasons', [])[:1]}")
            except orjson.JSONDecodeError:
                what = repr(m.value[:80])
            print(f"offset {m.offset}: {verdict:<13} {what}", flush=True)
            seen += 1
            if max_messages is not None and seen >= max_messages:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0
