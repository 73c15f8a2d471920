"""The router side: emit routing events, and apply signed threshold recommendations safely.

A router trusts nobody who can write to Kafka. :class:`ThresholdSubscriber` applies a
recommendation only when it is signed by a known key, newer than the last one applied,
not expired, meant for this router, inside the owner's bounds and in ``enforce`` mode
(unless told to accept advisories). On expiry or lost contact it falls back to safe
thresholds that favour the capable tier. Contact means a broker round trip that
succeeded: an empty poll proves nothing, since kafka-python's ``poll`` returns empty
while the broker is down. "Newer" survives restarts and compaction when the subscriber
keeps a state file (:class:`AppliedState`).

Both classes take the Kafka connection settings (TLS, SASL, OAuth:
:mod:`pipeline.kafka_clients`) or a ready client. This module and what it imports need
only pydantic, pydantic-settings, kafka-python and orjson: routers install it as
``tierwatch-router`` (``deploy/router-client``), without the worker's dependencies.

>>> decide(0.9, Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1), u=0.5)
Decision(tier='cheap', route_reason='confident_cheap', propensity=1.0)
>>> decide(0.6, Thresholds(cheap_above=0.7, capable_below=0.5, exploration_rate=0.1), u=0.05)
Decision(tier='cheap', route_reason='exploration', propensity=0.1)
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from pydantic import ValidationError

from pipeline import kafka_clients
from pipeline.core.signing import Keyring
from pipeline.schemas import RouteReason, RoutingEvent, ThresholdRecommendation, Thresholds
from pipeline.settings import DEV_CONTROL_KEY

DEV_KEY = DEV_CONTROL_KEY.encode()  # the key parse_key makes of the built-in text

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


class AppliedState:
    """The last recommendation a subscriber applied, kept in a small JSON file so that a
    restarted router still rejects anything older, even once compaction has removed the
    newer message from the control topic (which it does when an old one is re-published).

    Writes are atomic (a temporary file, fsync, rename), so a crash leaves the old state
    or the new one. The file is re-verified on load: its recommendation must carry a valid
    signature from a trusted key, or only its ``seq`` is kept, as the floor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self, router_id: str) -> tuple[int, dict[str, Any] | None]:
        """``(last applied seq, its recommendation)``, or ``(0, None)`` without a file."""
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return 0, None
        except (OSError, orjson.JSONDecodeError) as exc:
            # refusing to start is safer than forgetting what was applied
            raise ValueError(f"control state file {self.path} is unreadable ({exc}); "
                             "restore it, or delete it to accept any seq again") from exc
        if not isinstance(doc, dict) or doc.get("router_id") != router_id \
                or not isinstance(doc.get("seq"), int):
            raise ValueError(f"control state file {self.path} is not router {router_id!r}'s; "
                             "give each router (and each subscriber) its own file")
        rec = doc.get("recommendation")
        return doc["seq"], rec if isinstance(rec, dict) else None

    def save(self, rec: ThresholdRecommendation) -> None:
        body = orjson.dumps({"router_id": rec.router_id, "seq": rec.seq,
                             "recommendation": rec.model_dump(mode="json", exclude_none=True)})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


class ThresholdSubscriber:
    """Background consumer of the control topic; :meth:`current` gives the thresholds to use.

    Parameters
    ----------
    connection, router_id, keyring, bounds, fallback
        Where to read (the :class:`~pipeline.settings.Settings`, with their Kafka security
        settings, or a bootstrap string for a PLAINTEXT broker), whose thresholds, which
        keys to trust, the owner's bounds and the safe thresholds used before the first
        valid message, after expiry or lost contact.
    topic
        The control topic (default: the settings' control topic, or ``tierwatch.control``).
    accept_advisory
        Apply ``advisory`` messages too (default: only ``enforce``).
    contact_timeout_s
        Fall back when no broker round trip has succeeded for this long.
    clock
        Seconds since the epoch: expiry and contact are judged by it.
    state_file
        Where the last applied recommendation is kept (:class:`AppliedState`): without
        it, a restarted subscriber accepts an older, re-published recommendation once
        compaction has dropped the newer one. One file per router and process.
    consumer
        A ready ``KafkaConsumer`` to read with (not closed here) instead of one made from
        ``connection``.
    max_validity_s
        Reject a recommendation whose validity (``valid_until - issued_at``) is longer.

    Rejections are counted by reason in ``rejections``: ``malformed``,
    ``other_router``, ``unknown_key``, ``bad_signature``, ``dev_key`` (an ``enforce``
    message signed with the public development key, which the worker never does),
    ``replay``, ``expired``, ``too_long``, ``out_of_bounds`` and ``advisory``. Why the
    broker cannot be read (wrong password, untrusted certificate…) is in ``last_error``.
    """

    def __init__(self, connection: Any, router_id: str, keyring: Keyring, bounds: Bounds,
                 fallback: Thresholds, *, topic: str | None = None,
                 accept_advisory: bool = False, contact_timeout_s: float = 300.0,
                 clock: Callable[[], float] = time.time,
                 state_file: str | Path | None = None, consumer: KafkaConsumer | None = None,
                 max_validity_s: float = 31 * 86400) -> None:
        if not contact_timeout_s > 0:
            raise ValueError("contact_timeout_s must be > 0")
        self.connection, self.router_id = connection, router_id
        self.topic = topic or _topic(connection, "control")
        self.keyring, self.bounds, self.fallback = keyring, bounds, fallback
        self.accept_advisory = accept_advisory
        self.contact_timeout_s = contact_timeout_s
        self.max_validity_s = max_validity_s
        # probe the broker often enough that one lost probe never looks like lost contact
        self.probe_every_s = min(5.0, contact_timeout_s / 3)
        self.clock = clock
        self.rejections: Counter[str] = Counter()
        self.applied: ThresholdRecommendation | None = None
        self.last_contact: float | None = None
        self.last_error: str | None = None
        self._consumer = consumer
        self._positions: dict[int, int] = {}  # partition → next offset, kept across reconnects
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._caught_up = threading.Event()
        self._settled = threading.Event()  # caught up, or the broker refused us
        self._state = AppliedState(state_file) if state_file is not None else None
        self._floor = 0  # the highest seq applied, this run or (from the state file) before
        if self._state is not None:
            self._restore(self._state)
        if DEV_KEY in keyring.keys.values():
            log.warning("router %s trusts the public development key: enforce messages "
                        "signed with it are rejected", router_id)

    def _restore(self, state: AppliedState) -> None:
        seq, doc = state.load(self.router_id)
        self._floor = seq
        if doc is None:
            return
        try:
            rec = ThresholdRecommendation.model_validate(doc)
        except ValidationError:
            rec = None
        if rec is None or rec.seq != seq or self._verdict(rec, restoring=True) != "applied":
            log.warning("control state of %s: the stored recommendation no longer verifies; "
                        "keeping only its seq %d as the floor", self.router_id, seq)
            return
        self.applied = rec
        log.info("restored control seq=%d for %s from %s", seq, self.router_id, state.path)

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
        return self._verdict(rec)

    def _verdict(self, rec: ThresholdRecommendation, restoring: bool = False) -> str:
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
        if rec.mode == "enforce" and self.keyring.keys[rec.key_id] == DEV_KEY:
            return "dev_key"  # the worker refuses to enforce with it: anyone could sign this
        if restoring:
            return "applied"
        with self._lock:
            if rec.seq <= self._floor:
                return "replay"
            if rec.valid_until.timestamp() <= self.clock():
                return "expired"
            if (rec.valid_until - rec.issued_at).total_seconds() > self.max_validity_s:
                return "too_long"
            if not self.bounds.admits(rec.thresholds):
                return "out_of_bounds"
            if rec.mode == "advisory" and not self.accept_advisory:
                return "advisory"
            self.applied, self._floor = rec, rec.seq
            if self._state is not None:
                try:
                    self._state.save(rec)
                except OSError:
                    log.exception("could not save the control state of %s to %s: after a "
                                  "restart an older seq could be applied", self.router_id,
                                  self._state.path)
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
        """Start the background consumer; wait until it has read the compacted history,
        or until the broker cannot be read (then ``last_error`` says why)."""
        self._thread = threading.Thread(target=self._run, name="tierwatch-control",
                                        daemon=True)
        self._thread.start()
        self._settled.wait(wait_caught_up)
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
            except kafka_clients.KafkaConnectError as exc:  # refused, untrusted, unreachable
                if str(exc) != self.last_error:
                    log.error("control consumer for %s: %s", self.router_id, exc)
                self.last_error = str(exc)
                self._settled.set()
                self._stop.wait(1.0)
            except KafkaError as exc:  # broker unreachable: retry, contact ages meanwhile
                log.warning("control consumer for %s: %s; retrying", self.router_id, exc)
                self._stop.wait(1.0)
            except Exception:  # a broken broker must not kill the router's thread
                log.exception("control consumer failed; retrying")
                self._stop.wait(1.0)

    def _consume(self) -> None:
        # No consumer group: every router replica reads the whole compacted history.
        consumer = self._consumer or kafka_clients.consumer(
            self.connection, enable_auto_commit=False, group_id=None,
            client_id=f"tierwatch-sub-{uuid.uuid4().hex[:6]}")
        try:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                # no topic, no history: nothing to catch up on; look again shortly
                log.warning("control topic %s not found; waiting", self.topic)
                self._caught_up.set()
                self._settled.set()
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
            self.last_error = None
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
                    self._settled.set()
        finally:
            if consumer is not self._consumer:
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

    def __init__(self, connection: Any, router_id: str, *, topic: str | None = None,
                 max_batch: int = 100, max_bytes: int = 256 * 1024, linger_s: float = 0.2,
                 producer: KafkaProducer | None = None) -> None:
        self.router_id = router_id
        self.topic = topic or _topic(connection, "routing")
        self.max_batch, self.max_bytes, self.linger_s = max_batch, max_bytes, linger_s
        # a ready producer, or one from the settings (connection may then be None)
        self.producer = producer or kafka_clients.producer(connection, linger_ms=5,
                                                           acks="all")
        self.failed = 0  # batches the broker did not take (see last_error)
        self.last_error: str | None = None
        self._batch: list[bytes] = []
        self._keys: list[str] = []
        self._bytes = 0
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # linger is honoured when traffic stops too: a quiet router's last events would
        # otherwise wait for the next emit, and the worker's watermark with them
        self._flusher = threading.Thread(target=self._linger, name="tierwatch-emitter",
                                         daemon=True)
        self._flusher.start()

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
        for key, group in self._by_partition(batch, keys):
            future = self.producer.send(self.topic, key=key, value=b"[" + b",".join(group) + b"]")
            future.add_errback(self._failed, len(group))
        if wait:
            self.producer.flush()

    def _by_partition(self, batch: list[bytes],
                      keys: list[str]) -> list[tuple[bytes, list[bytes]]]:
        """One array per partition, keyed by one of its own request_ids, so that every
        event lands where a message keyed by its own request_id would: with its feedback.
        """
        if not batch:
            return []
        try:
            partitions = sorted(self.producer.partitions_for(self.topic) or ())
        except KafkaError:
            partitions = []
        if len(partitions) <= 1:
            return [(keys[0].encode(), batch)]
        groups: dict[int, tuple[bytes, list[bytes]]] = {}
        for key, raw in zip(keys, batch, strict=True):
            k = key.encode()
            partition = (murmur2(k) & 0x7FFFFFFF) % len(partitions)  # Kafka's default
            groups.setdefault(partition, (k, []))[1].append(raw)
        return list(groups.values())

    def _failed(self, n: int, exc: BaseException) -> None:
        # a router keeps routing when monitoring fails; it is logged and counted
        self.failed += 1
        if str(exc) != self.last_error:
            log.error("routing events of %s not delivered to %s (%d in this batch): %s",
                      self.router_id, self.topic, n, exc)
        self.last_error = str(exc)

    def _linger(self) -> None:
        while not self._closed.wait(self.linger_s / 2):
            with self._lock:
                due = bool(self._batch) and time.monotonic() - self._oldest >= self.linger_s
            if due:
                self.flush(wait=False)

    def close(self) -> None:
        """Send what is queued and close the producer; call it when the router stops."""
        self._closed.set()
        self.flush()
        self.producer.close()


def _topic(connection: Any, name: str) -> str:
    """The settings' name for topic ``name``, or the default prefix's."""
    topic = getattr(connection, "topic", None)
    return topic(name) if callable(topic) else f"tierwatch.{name}"


def watch(settings: Any, router_id: str, *, max_messages: int | None = None) -> int:
    """``tierwatch control watch``: print every control message and whether it verifies."""
    from pipeline.core.signing import parse_key

    keyring = Keyring({settings.control_key_id: parse_key(settings.control_key)})
    checker = ThresholdSubscriber(settings, router_id, keyring, Bounds(),
                                  Thresholds(cheap_above=1.0, capable_below=1.0),
                                  accept_advisory=True)
    consumer = kafka_clients.consumer(settings, settings.topic("control"),
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
