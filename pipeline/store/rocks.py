"""The join's decisions on disk, in RocksDB (``rocksdict``), checkpointed with the worker.

A :class:`RocksDecisionStore` is a :class:`~pipeline.core.decision_store.DecisionStore`:
the join's decisions and seen feedback ids live in one RocksDB database, so a 90 to
180-day join horizon costs disk, not memory (RocksDB's memtables and block cache stay at
a fixed size whatever the number of decisions). It behaves exactly as the in-memory store
(``tests/unit/test_decision_store.py`` runs both on the same operations).

Layout (one column family, raw bytes keys; ``T(x)`` is a float's order-preserving 8 bytes)
-----------------------------------------------------------------------------------------
``d`` + request_id
    the decision record (below)
``b`` + T(ts) + request_id
    the expiry index, one entry per batch of decisions written together: the times and
    request_ids of the batch, keyed by its earliest decision. :meth:`pop_expired` scans
    the entries from the last cutoff to the new one, deletes their decisions below the
    cutoff and writes the rest of each batch again under its new earliest decision. One
    index write per batch, not per decision, halves the keys RocksDB inserts and deletes.
    (``t`` + T(ts) + request_id, one per decision, is the index of stores written before
    2026-12-05: still expired, never written)
``s`` + event_id → T(ts), and ``u`` + T(ts) + event_id
    seen feedback ids and their expiry index
``g`` + T(day start) + hash
    the segment dictionary, one entry per (UTC day, distinct segment): a record holds the
    8-byte BLAKE2b hash of its canonical segment, resolved through the entry of its own
    day, and whole days are dropped (range tombstone) once every decision of theirs has
    expired. A collision of two segments of one day has probability about n²/2⁶⁵ for n
    distinct segments that day (3·10⁻⁸ at a million)

A record is ``<ddiB`` (ts, score, band, flags), the propensity as a float only when it is
not 1, then router_id and tier (length-prefixed UTF-8), the segment hash (8 bytes) and
the subject key (length-prefixed), each when present: about 40 bytes, and with its key,
its share of an index entry and RocksDB's own overhead about 145-160 bytes per live
decision on disk after LZ4 block compression (``tests/benchmarks/test_join_store_benchmark.py``).

Checkpoints
-----------
The store's files live in ``root``: ``live/`` is the database in use, ``ckpt-<gen>/`` are
RocksDB checkpoints (SST files hard-linked, so a checkpoint costs a memtable flush and a
few links, not a copy). The worker's snapshot (:mod:`pipeline.stream.checkpoint`) calls
:meth:`checkpoint` just before it forks its writer; the store then pickles as a reference
to that checkpoint (``root`` and ``gen``) and the counters that go with it. Unpickling
checks that the checkpoint exists (else it raises ``ValueError``, which the checkpoint
loader treats as a corrupt snapshot and falls back to the previous one); the first use
rebuilds ``live/`` from it. So the decisions always match the snapshot's offsets,
whatever the crash: the writes after the snapshot are thrown away with ``live/`` and done
again as the inputs are re-read. Checkpoints no retained snapshot refers to are deleted
(:meth:`retain`). A store that is not restored starts with an empty ``live/``.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import struct
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rocksdict import (
    BlockBasedIndexType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBCompressionType,
    Options,
    Rdict,
    ReadOptions,
    WriteBatch,
)

from pipeline.core.decision_store import DecisionRecord, Segment

__all__ = ["RocksDecisionStore"]

_REC = struct.Struct("<ddiB")
_F64 = struct.Struct("<d")
_BE64 = struct.Struct(">Q")
_LEN = struct.Struct("<H")
_FLAGS_MASK = 0x0F  # the join's flags (in band, exploration)
_HAS_PROP, _HAS_SEG, _HAS_SUBJECT = 0x10, 0x20, 0x40
_DAY = 86400.0
_CACHE = 65536  # segments kept decoded, and (day, segment) entries known written
_HASHES = 4096  # segments whose hash is kept: a batch repeats a few values many times
_SIGN = 1 << 63
_ALL = (1 << 64) - 1

# one open instance per live directory: a newer one (a restore in the same process)
# closes the older, which RocksDB's file lock would otherwise refuse
_OPEN: weakref.WeakValueDictionary[str, RocksDecisionStore] = weakref.WeakValueDictionary()


def _t(x: float) -> bytes:
    """8 bytes whose byte order is the float order (negative times included).

    >>> _t(-1.0) < _t(0.0) < _t(1.5) < _t(1e9)
    True
    """
    (bits,) = _BE64.unpack(struct.pack(">d", x))
    return _BE64.pack(bits ^ _ALL if bits & _SIGN else bits | _SIGN)


_COUNT = struct.Struct("<I")


def _batch(ts: Sequence[float], rids: Sequence[bytes]) -> bytes:
    """An expiry index entry: the count, the times, the id lengths, the ids.

    >>> _entries(_batch([5.0, 2.5], [b"r1", b"req-2"]))
    ([5.0, 2.5], [b'r1', b'req-2'])
    """
    n = len(rids)
    return b"".join((_COUNT.pack(n), np.asarray(ts, dtype="<f8").tobytes(),
                     np.fromiter(map(len, rids), dtype="<u2", count=n).tobytes(), *rids))


def _entries(value: bytes) -> tuple[list[float], list[bytes]]:
    """The times and request_ids of an expiry index entry (:func:`_batch`)."""
    (n,) = _COUNT.unpack_from(value)
    ts: list[float] = np.frombuffer(value, dtype="<f8", count=n, offset=4).tolist()
    lengths = np.frombuffer(value, dtype="<u2", count=n, offset=4 + 8 * n)
    ends = np.cumsum(lengths, dtype=np.int64) + (4 + 10 * n)
    return ts, list(map(value.__getitem__, map(slice, (ends - lengths).tolist(),
                                                ends.tolist())))


def _batch_key(ts: Sequence[float], rids: Sequence[bytes]) -> bytes:
    """``b`` + T(earliest ts) + its request_id: unique, as a live id is in one batch."""
    i = min(range(len(ts)), key=ts.__getitem__)
    return b"b" + _t(ts[i]) + rids[i]


def _segment_bytes(segment: Segment) -> bytes:
    return orjson.dumps(segment)


def _day(ts: float) -> bytes:
    return _t(math.floor(ts / _DAY) * _DAY)


def _copy_db(source: Path, target: Path) -> None:
    """A copy of a closed RocksDB directory: SST files (immutable) hard-linked, the rest
    (manifest, options, logs) copied, since RocksDB may append to those."""
    target.mkdir(parents=True)
    for f in source.iterdir():
        if f.suffix == ".sst":
            os.link(f, target / f.name)
        else:
            shutil.copy2(f, target / f.name)


class RocksDecisionStore:
    """A :class:`~pipeline.core.decision_store.DecisionStore` in RocksDB under ``root``.

    Parameters
    ----------
    root
        A directory of its own (the worker uses ``<checkpoint dir>/join-store``).
    memtable_bytes
        Size of each of RocksDB's (two) write buffers.
    cache_bytes
        The block cache, which also holds the index and filter blocks. With 16 and 32 MB
        the worker's memory is at its steady size after a million events, and inserts and
        lookups cost what they did with 32 and 64 MB (``test_join_store_benchmark.py``,
        5M decisions, alternated: 45 MB less RSS).

    >>> import tempfile
    >>> s = RocksDecisionStore(Path(tempfile.mkdtemp()))
    >>> s.put(DecisionRecord(100.0, "r1", "router-a", "cheap", 0.9, 1.0, 3, 1,
    ...                      (("intent", "billing"),)))
    >>> s.add_seen("f1", 150.0)
    >>> rec = s.get("r1")
    >>> (rec.tier, rec.segment, rec.in_band, s.seen("f1"), len(s))
    ('cheap', (('intent', 'billing'),), True, 150.0, 1)
    >>> s.pop_expired(120.0), len(s), s.n_seen, s.get("r1")
    (1, 0, 1, None)
    >>> s.close()
    """

    def __init__(self, root: Path, *, memtable_bytes: int = 16 << 20,
                 cache_bytes: int = 32 << 20) -> None:
        self.root = Path(root)
        self.memtable_bytes = memtable_bytes
        self.cache_bytes = cache_bytes
        self._n = 0
        self._n_seen = 0
        self._low = -math.inf  # everything below was expired (and its index dropped)
        self._late = math.inf  # the earliest ts put below _low since (TTL < lateness)
        self._dropped_day = b""  # segment dictionary days before this one are dropped
        self._gen: int | None = None  # the checkpoint the state is (to be) rebuilt from
        self._dirty = False  # written since the last checkpoint
        self._db: Rdict | None = None
        self._closed = False
        self._segments: dict[bytes, Segment] = {}
        self._written: set[bytes] = set()
        # encodings that repeat from one decision to the next (not state: rebuilt on use)
        self._names: dict[tuple[str, str], bytes] = {}
        self._hashes: dict[Segment, bytes] = {}
        self._day_of: tuple[int, bytes] = (0, _t(0.0))  # the last day number and its key
        self._kept: list[int] = []  # checkpoints referenced by retained snapshots

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def live(self) -> Path:
        return self.root / "live"

    def _checkpoint_dir(self, gen: int) -> Path:
        return self.root / f"ckpt-{gen}"

    def _options(self) -> Options:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_write_buffer_size(self.memtable_bytes)
        opts.set_max_write_buffer_number(2)
        opts.set_keep_log_file_num(2)
        # memory stays bounded whatever the number of keys: index and bloom filter blocks
        # live in the block cache, not beside it
        table = BlockBasedOptions()
        table.set_block_cache(Cache(self.cache_bytes))
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        # partitioned: a compacted file's whole filter (megabytes) outgrows a cache shard,
        # is evicted at once and re-read on every lookup (200 µs a miss at 2M keys, 3 µs
        # with partitions); its 4 KiB partitions stay cached, and the top level is pinned
        table.set_index_type(BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_metadata_block_size(4096)
        table.set_pin_top_level_index_and_filter(True)
        opts.set_block_based_table_factory(table)
        return opts

    @property
    def db(self) -> Rdict:
        """The open database; opened (and, for a restored store, rebuilt) on first use."""
        if self._db is None:
            if self._closed:
                raise RuntimeError(f"the decision store in {self.root} was closed (another "
                                   "instance opened it since)")
            key = str(self.live.resolve())
            other = _OPEN.get(key)
            if other is not None and other is not self:
                other.close()
            if self.live.exists():
                Rdict.destroy(str(self.live), self._options())
                shutil.rmtree(self.live, ignore_errors=True)
            if self._gen is not None:
                _copy_db(self._checkpoint_dir(self._gen), self.live)
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(self.live), self._options())
            _OPEN[key] = self
        return self._db

    def close(self) -> None:
        """Close the database (the files stay); this instance cannot be used again."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._closed = True

    def checkpoint(self) -> int:
        """Make a RocksDB checkpoint of the current state; returns its generation.

        Called by the worker between messages, just before its snapshot is forked, so the
        snapshot pickles as a reference to exactly this state.
        """
        if self._gen is not None and not self._dirty and self._checkpoint_dir(self._gen).exists():
            return self._gen
        db = self.db
        gen = time.time_ns()
        target = self._checkpoint_dir(gen)
        db.flush_wal(True)
        Checkpoint(db).create_checkpoint(str(target))
        self._gen, self._dirty = gen, False
        return gen

    def retain(self, gen: int) -> None:
        """The snapshot referring to checkpoint ``gen`` is durable: keep it and the one
        before (the previous snapshot file's), delete every other checkpoint."""
        if not self._kept or self._kept[-1] != gen:
            self._kept = [*self._kept[-1:], gen]
        keep = {f"ckpt-{g}" for g in self._kept}
        for d in self.root.glob("ckpt-*"):
            if d.name not in keep and d.name != f"ckpt-{self._gen}":
                shutil.rmtree(d, ignore_errors=True)

    def __deepcopy__(self, memo: dict[int, Any]) -> RocksDecisionStore:
        # a copy would open the same live directory and take it over from this one
        raise TypeError("an on-disk decision store cannot be copied (merge joins whose "
                        "stores are in memory)")

    def __getstate__(self) -> dict[str, Any]:
        if self._dirty or self._gen is None:
            raise ValueError("a RocksDecisionStore pickles as a reference to a checkpoint: "
                             "call checkpoint() first (pipeline.stream.checkpoint does)")
        return {"root": str(self.root), "gen": self._gen, "n": self._n,
                "n_seen": self._n_seen, "low": self._low, "late": self._late,
                "dropped_day": self._dropped_day,
                "memtable_bytes": self.memtable_bytes, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Path(state["root"]),  # type: ignore[misc]
                      memtable_bytes=state["memtable_bytes"], cache_bytes=state["cache_bytes"])
        self._gen = int(state["gen"])
        if not (self._checkpoint_dir(self._gen).is_dir()
                and (self._checkpoint_dir(self._gen) / "CURRENT").exists()):
            raise ValueError(f"the join store's checkpoint {self._checkpoint_dir(self._gen)} "
                             "is missing")
        self._n, self._n_seen = int(state["n"]), int(state["n_seen"])
        self._low, self._late = float(state["low"]), float(state["late"])
        self._dropped_day = bytes(state["dropped_day"])
        self._kept = [self._gen]

    # -- records -------------------------------------------------------------------------
    def _encode(self, r: DecisionRecord) -> bytes:
        flags = r.flags & _FLAGS_MASK
        prop = b""
        if r.propensity != 1.0:
            flags |= _HAS_PROP
            prop = _F64.pack(r.propensity)
        names = self._names.get((r.router_id, r.tier))
        if names is None:
            names = b"".join(_LEN.pack(len(b)) + b for b in (r.router_id.encode(),
                                                             r.tier.encode()))
            if len(self._names) >= _CACHE:
                self._names.clear()
            self._names[(r.router_id, r.tier)] = names
        rest = b""
        if r.segment is not None:
            flags |= _HAS_SEG
            rest = self._segment_key(r.ts, r.segment)
        if r.subject is not None:
            flags |= _HAS_SUBJECT
            rest += _LEN.pack(len(r.subject)) + r.subject
        return _REC.pack(r.ts, r.score, r.band, flags) + prop + names + rest

    def _segment_key(self, ts: float, segment: Segment) -> bytes:
        """Write the segment's dictionary entry for the day of ``ts``; returns its hash."""
        h = self._hashes.get(segment)
        raw = None
        if h is None:
            raw = _segment_bytes(segment)
            h = hashlib.blake2b(raw, digest_size=8).digest()
            if len(self._hashes) >= _HASHES:
                self._hashes.clear()
            # the hash only: orjson's bytes keep their whole buffer (4 KB each, measured)
            self._hashes[segment] = h
        number = math.floor(ts / _DAY)  # _day(ts), its key kept: a batch is in one day
        if number != self._day_of[0]:
            self._day_of = (number, _t(number * _DAY))
        key = b"g" + self._day_of[1] + h
        if key not in self._written or ts < self._low:  # its day may be dropped
            if len(self._written) >= _CACHE:
                self._written.clear()
            self._written.add(key)
            self.db.put(key, raw if raw is not None else _segment_bytes(segment))
        return h

    def _decode(self, request_id: str, v: bytes) -> DecisionRecord:
        ts, score, band, flags = _REC.unpack_from(v)
        i = _REC.size
        prop = 1.0
        if flags & _HAS_PROP:
            (prop,) = _F64.unpack_from(v, i)
            i += 8
        strings = []
        for _ in range(2):
            (n,) = _LEN.unpack_from(v, i)
            strings.append(v[i + 2:i + 2 + n].decode())
            i += 2 + n
        segment = None
        if flags & _HAS_SEG:
            segment = self._segment(ts, v[i:i + 8])
            i += 8
        subject = None
        if flags & _HAS_SUBJECT:
            (n,) = _LEN.unpack_from(v, i)
            subject = bytes(v[i + 2:i + 2 + n])
        return DecisionRecord(ts, request_id, strings[0], strings[1], score, prop, band,
                              flags & _FLAGS_MASK, segment, subject)

    def _segment(self, ts: float, h: bytes) -> Segment:
        key = b"g" + _day(ts) + h
        seg = self._segments.get(key)
        if seg is None:
            raw = self.db.get(key)
            if raw is None:
                raise KeyError(f"segment {h.hex()} of day {ts // _DAY:.0f} is missing")
            seg = tuple((str(a), str(b)) for a, b in orjson.loads(raw))
            if len(self._segments) >= _CACHE:
                self._segments.clear()
            self._segments[key] = seg
        return seg

    # -- the DecisionStore protocol --------------------------------------------------------
    def get(self, request_id: str) -> DecisionRecord | None:
        v = self.db.get(b"d" + request_id.encode())
        return None if v is None else self._decode(request_id, v)

    def __contains__(self, request_id: object) -> bool:
        if not isinstance(request_id, str):
            return False
        return self.db.get(b"d" + request_id.encode()) is not None

    def contains_any(self, request_ids: Sequence[str]) -> bool:
        # one MultiGet: the bloom filter and index lookups of a batch share their work
        keys: list[str | int | float | bytes | bool] = [b"d" + rid.encode()
                                                        for rid in request_ids]
        found: list[bytes | None] = self.db.get(keys)  # type: ignore[assignment]
        return any(v is not None for v in found)

    def memory(self) -> dict[str, int]:
        # RocksDB's own figures: each part has a fixed budget (see _options), which it
        # fills as the data grows past it, then holds
        if self._db is None:
            return {}
        prop = self._db.property_int_value
        return {"block_cache": prop("rocksdb.block-cache-usage") or 0,
                "memtables": prop("rocksdb.size-all-mem-tables") or 0,
                "table_readers": prop("rocksdb.estimate-table-readers-mem") or 0}

    def __len__(self) -> int:
        return self._n

    def put(self, record: DecisionRecord) -> None:
        self.put_many((record,))

    def put_many(self, records: Sequence[DecisionRecord]) -> None:
        if not records:
            return
        wb = WriteBatch(raw_mode=True)
        put, encode = wb.put, self._encode
        rids = [r.request_id.encode() for r in records]
        for record, rid in zip(records, rids, strict=True):
            put(b"d" + rid, encode(record))
        ts = [r.ts for r in records]
        put(_batch_key(ts, rids), _batch(ts, rids))
        late = min(ts)
        if late < self._low:  # below the scanned index: the next scan starts there
            self._late = min(self._late, late)
        self.db.write(wb)
        self._n += len(records)
        self._dirty = True

    def pop_expired(self, cutoff: float) -> int:
        if cutoff <= self._low:
            return 0
        db = self.db
        start = min(self._low, self._late)
        lo, hi = _t(start) if start > -math.inf else b"", _t(cutoff)
        wb = WriteBatch(raw_mode=True)
        n = seen = 0
        # point deletes: a range tombstone per evaluation would pile up by the thousand
        # and every read would have to step over them
        for key, value in self._scan_items(b"b" + lo, b"b" + hi):
            ts, rids = _entries(value)
            wb.delete(key)
            if max(ts) < cutoff:  # the whole batch, as a rule
                gone = rids
            else:
                gone, k_ts, k_rids = [], [], []
                for t, r in zip(ts, rids, strict=True):
                    if t < cutoff:
                        gone.append(r)
                    else:
                        k_ts.append(t)
                        k_rids.append(r)
                wb.put(_batch_key(k_ts, k_rids), _batch(k_ts, k_rids))
            for rid in gone:
                wb.delete(b"d" + rid)
            n += len(gone)
        for key in self._scan(b"t" + lo, b"t" + hi):  # stores written before 2026-12-05
            wb.delete(b"d" + key[9:])
            wb.delete(key)
            n += 1
        for key in self._scan(b"u" + lo, b"u" + hi):
            sk = b"s" + key[9:]
            if db.get(sk) == key[1:9]:  # not replaced by a later ts
                wb.delete(sk)
                seen += 1
            wb.delete(key)
        day = _day(cutoff)
        if day > self._dropped_day:  # whole days of the segment dictionary: once a day
            wb.delete_range(b"g", b"g" + day)
            self._dropped_day = day
        if len(wb):
            db.write(wb)
            self._dirty = True
        self._low = cutoff
        self._late = math.inf
        self._n -= n
        self._n_seen -= seen
        return n

    def _scan(self, lo: bytes, hi: bytes) -> Iterator[bytes]:
        for key, _ in self._scan_items(lo, hi):
            yield key

    def _scan_items(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, bytes]]:
        opts = ReadOptions()
        opts.set_iterate_upper_bound(hi)
        it = self.db.iter(opts)
        it.seek(lo)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def records(self) -> Iterator[DecisionRecord]:
        index = [(t, rid) for _, value in self._scan_items(b"b", b"c")
                 for t, rid in zip(*_entries(value), strict=True)]
        index += [(_from_t(key[1:9]), key[9:]) for key in self._scan(b"t", b"u")]
        # (ts, request_id) order: the ids' UTF-8 bytes sort as the strings do
        for _, rid in sorted(index):
            rec = self.get(rid.decode())
            if rec is not None:
                yield rec

    def seen(self, event_id: str) -> float | None:
        v = self.db.get(b"s" + event_id.encode())
        return None if v is None else _from_t(v)

    def add_seen(self, event_id: str, ts: float) -> None:
        eid = event_id.encode()
        wb = WriteBatch(raw_mode=True)
        key = b"s" + eid
        if self.db.get(key) is None:
            self._n_seen += 1
        wb.put(key, _t(ts))
        wb.put(b"u" + _t(ts) + eid, b"")
        self.db.write(wb)
        self._dirty = True
        if ts < self._low:
            self._late = min(self._late, ts)

    @property
    def n_seen(self) -> int:
        return self._n_seen

    def seen_items(self) -> Iterator[tuple[str, float]]:
        for key, value in self._scan_items(b"s", b"t"):
            yield key[1:].decode(), _from_t(value)

    def disk_bytes(self) -> int:
        """Bytes of the live database's files (SST, logs, manifest)."""
        return sum(f.stat().st_size for f in self.live.iterdir() if f.is_file())

    def __repr__(self) -> str:
        return f"RocksDecisionStore({str(self.root)!r}, decisions={self._n})"


def _from_t(b: bytes) -> float:
    (bits,) = _BE64.unpack(b)
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL
    (x,) = struct.unpack(">d", _BE64.pack(bits))
    return float(x)
