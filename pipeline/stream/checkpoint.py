"""Durable snapshots of the worker's state together with the input offsets it includes.

The Flink model, on a local (or shared) directory: a snapshot is the processor's whole
state plus, for every input partition, the next offset it has not yet counted. It is
written atomically (temporary file, fsync, rename, fsync of the directory) and checked
by a digest when read; the previous snapshot is kept, so a torn or corrupt latest file
falls back to the one before. The consumer group's committed offsets never run ahead of
the latest durable snapshot (see :mod:`pipeline.stream.app`), so after any crash the
worker restores the snapshot, re-reads from at or before its offsets, and skips what the
snapshot already counts: every event counts exactly once.

A snapshot is written by a forked child, as Redis writes its RDB files: the fork is a
copy-on-write image of the state at that instant, so the worker goes on processing
while the child pickles and writes it. The child dies with its parent (Linux
``PR_SET_PDEATHSIG``), so a killed worker leaves no writer behind.

Snapshots are pickles of the worker's own objects. Each file starts with a header: a
magic, the format version and an HMAC-SHA256 of the pickle, keyed by
``TIERWATCH_CHECKPOINT_KEY`` (a public built-in key when unset: then it checks integrity
only, and the directory must be as trusted as the worker's code). A file is unpickled only
after its HMAC verifies. The control signing key is never written (the signer is
re-attached from the settings on restore).

State too large to pickle lives in a store on disk (the join's decisions:
:class:`~pipeline.store.rocks.RocksDecisionStore`). Such a store is a
:class:`DurableStore`: the state lists it (``state.stores()``), the snapshot asks it for a
checkpoint of itself just before the fork (:meth:`DurableStore.checkpoint`, in the
parent, between messages), and it pickles as a reference to that checkpoint. So the
snapshot file and the store's checkpoint are one state at one set of offsets; restoring
the file rebuilds the store from its checkpoint, and the writes the crashed worker made
after it are discarded and done again from the re-read inputs. Once a snapshot is
durable, the store deletes the checkpoints that neither it nor the previous snapshot
file refers to (:meth:`DurableStore.retain`).

A snapshot that cannot be used is never silently replaced by an empty state:
:meth:`CheckpointStore.load` falls back from a corrupt latest file to the previous one
(the caller then seeks every input partition back to *that* snapshot's offsets), and
raises :class:`CheckpointError` when neither is readable or when a file was written in
another format version. Starting over is the operator's decision (``--reset-state``).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import hmac
import io
import logging
import os
import pickle
import signal
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

log = logging.getLogger("tierwatch.checkpoint")

MAGIC = b"TWCP"
#: bump whenever a pickled class of the state changes shape (see "Upgrading tierwatch" in
#: deploy/runbook.md): a snapshot of another version is refused, never half-restored
FORMAT_VERSION = 4  # 3: the join's decisions behind a store; 4: RouterState.delayed
HEADER = struct.Struct(">4sH32s")  # magic, format version, HMAC-SHA256 of the body
#: the key when none is configured: the HMAC then guards integrity only
DEFAULT_KEY = b"tierwatch-checkpoint-integrity-only"
_V1_MAGIC = b"TWCP1\n"  # format 1 (until 2026-12): magic with the version, SHA-256 digest


class _FormerThresholds:
    """``pipeline.core.drift.Thresholds``, merged into ``pipeline.schemas.Thresholds``
    on 2026-12-05. Format-4 snapshots written before then hold instances only as keys of
    ``DriftStream``'s cache, which the stream drops as it is restored."""


#: classes that moved or went, by the (module, name) older snapshots pickled them under
_MOVED: dict[tuple[str, str], type] = {("pipeline.core.drift", "Thresholds"): _FormerThresholds}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _MOVED.get((module, name)) or super().find_class(module, name)


class CheckpointError(Exception):
    """A checkpoint exists but cannot be used; the worker must not start on a guess."""


class CorruptCheckpoint(CheckpointError):
    """Torn, truncated, tampered with, or written under another checkpoint key."""


class IncompatibleCheckpoint(CheckpointError):
    """Written by a tierwatch with another snapshot format version."""

    def __init__(self, message: str, version: int | None) -> None:
        super().__init__(message)
        self.version = version


@runtime_checkable
class DurableStore(Protocol):
    """A part of the state kept on disk and checkpointed with the snapshot."""

    def checkpoint(self) -> int:
        """Make a durable checkpoint of the current state; returns its generation. The
        store then pickles as a reference to it."""
        ...

    def retain(self, gen: int) -> None:
        """The snapshot referring to ``gen`` is durable: drop checkpoints no longer needed."""
        ...


def durable_stores(state: Any) -> list[DurableStore]:
    """The on-disk stores of ``state`` (what its ``stores()`` lists, if it has one)."""
    stores = getattr(state, "stores", None)
    if not callable(stores):
        return []
    return [s for s in stores() if isinstance(s, DurableStore)]


@dataclass
class Snapshot:
    """The state a worker resumes from: positions (next offset per input partition)."""

    positions: dict[tuple[str, int], int]
    state: Any
    taken_at: float = field(default_factory=time.time)
    messages: int = 0
    version: int = FORMAT_VERSION


class CheckpointStore:
    """Atomic, verified snapshot files in one directory, held by one worker at a time.

    >>> import tempfile
    >>> store = CheckpointStore(Path(tempfile.mkdtemp()))
    >>> store.load() is None
    True
    >>> n = store.save(Snapshot({("tierwatch.routing", 0): 42}, {"counts": 1}))
    >>> store.load().positions
    {('tierwatch.routing', 0): 42}
    >>> (store.directory / store.LATEST).write_bytes(b"TWCP") and None  # torn
    >>> store.load()
    Traceback (most recent call last):
    ...
    pipeline.stream.checkpoint.CorruptCheckpoint: no usable checkpoint in ...
    >>> store.close()
    """

    LATEST, PREVIOUS = "snapshot.bin", "snapshot.prev.bin"

    def __init__(self, directory: Path, key: bytes = DEFAULT_KEY) -> None:
        self.directory = directory
        self.key = key
        #: which file :meth:`load` restored: "latest", "previous" or "none"
        self.loaded_from = "none"
        directory.mkdir(parents=True, exist_ok=True)
        #: per forked writer: the store checkpoints its snapshot refers to
        self._checkpoints: dict[int, list[tuple[DurableStore, int]]] = {}
        self._lock: IO[bytes] | None = (directory / "lock").open("ab")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            self._lock.close()
            self._lock = None
            raise RuntimeError(f"another worker holds the checkpoint directory {directory}; "
                               "give each worker its own TIERWATCH_CHECKPOINT_DIR") from err
        for stale in directory.glob(f".{self.LATEST}.*.tmp"):  # writers killed mid-write
            stale.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @staticmethod
    def encode(snapshot: Snapshot, key: bytes = DEFAULT_KEY) -> bytes:
        body = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        mac = hmac.new(key, body, hashlib.sha256).digest()
        return HEADER.pack(MAGIC, snapshot.version, mac) + body

    @staticmethod
    def decode(blob: bytes, key: bytes = DEFAULT_KEY) -> Snapshot:
        """The snapshot in ``blob``; raises :class:`CheckpointError` when unusable."""
        if blob.startswith(_V1_MAGIC):
            raise IncompatibleCheckpoint(
                f"snapshot format 1 (an older tierwatch); this tierwatch reads format "
                f"{FORMAT_VERSION}", 1)
        if len(blob) < HEADER.size or not blob.startswith(MAGIC):
            raise CorruptCheckpoint("not a tierwatch snapshot (truncated or overwritten)")
        _, version, mac = HEADER.unpack_from(blob)
        if version != FORMAT_VERSION:
            raise IncompatibleCheckpoint(
                f"snapshot format {version}; this tierwatch reads format {FORMAT_VERSION}",
                version)
        body = blob[HEADER.size:]
        if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), mac):
            raise CorruptCheckpoint("HMAC mismatch: torn or corrupt file, or written with "
                                    "another TIERWATCH_CHECKPOINT_KEY")
        try:
            # authenticated above: see the module docstring
            snapshot = _Unpickler(io.BytesIO(body)).load()
        except (AttributeError, ImportError, TypeError) as err:  # a class that moved
            raise IncompatibleCheckpoint(
                f"snapshot of format {version} names code this tierwatch lacks ({err})",
                version) from err
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise CorruptCheckpoint(f"unreadable pickle ({err})") from err
        if not isinstance(snapshot, Snapshot) or snapshot.version != FORMAT_VERSION:
            raise IncompatibleCheckpoint("not a snapshot of this format", version)
        return snapshot

    def save(self, snapshot: Snapshot) -> int:
        """Write ``snapshot`` (and its stores' checkpoints) durably; returns its size."""
        gens = [(s, s.checkpoint()) for s in durable_stores(snapshot.state)]
        size = self.write(self.encode(snapshot, self.key))
        for s, gen in gens:
            s.retain(gen)
        return size

    def write(self, blob: bytes) -> int:
        """Durably replace the latest snapshot with ``blob`` (from :meth:`encode`)."""
        latest, previous = self.directory / self.LATEST, self.directory / self.PREVIOUS
        tmp = self.directory / f".{self.LATEST}.{os.getpid()}.tmp"
        with tmp.open("wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if latest.exists():
            os.replace(latest, previous)
        os.replace(tmp, latest)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return len(blob)

    def fork_save(self, snapshot: Snapshot) -> int:
        """Write ``snapshot`` from a forked child; returns its pid (see :meth:`reap`).

        Call it between messages: the child sees the state as it is at the fork. The
        state's on-disk stores are checkpointed first, here in the parent: the child only
        pickles references to those checkpoints, and never touches a database.
        """
        gens = [(s, s.checkpoint()) for s in durable_stores(snapshot.state)]
        pid = os.fork()
        if pid:
            self._checkpoints[pid] = gens
            return pid
        code = 1
        try:  # the child: no logging, no event loop, no cleanup handlers
            _die_with_parent()
            if self._lock is not None:
                os.close(self._lock.fileno())  # the lock stays with the parent
            self.save(snapshot)
            code = 0
        finally:
            os._exit(code)

    def reap(self, pid: int) -> int:
        """Wait for a :meth:`fork_save` child; returns the snapshot's size or raises."""
        _, status = os.waitpid(pid, 0)
        gens = self._checkpoints.pop(pid, [])
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise RuntimeError(f"checkpoint writer {pid} failed (wait status {status})")
        for s, gen in gens:
            s.retain(gen)
        return (self.directory / self.LATEST).stat().st_size

    def load(self) -> Snapshot | None:
        """The newest usable snapshot, or ``None`` when the directory has none at all.

        A corrupt latest file falls back to the previous one (``loaded_from`` says which;
        its offsets are older, so the caller must seek back to them). Raises
        :class:`CorruptCheckpoint` when snapshot files exist but none is readable, and
        :class:`IncompatibleCheckpoint` on another format version: a version change is
        never skipped by falling back to an older file.
        """
        problems = []
        for source, name in (("latest", self.LATEST), ("previous", self.PREVIOUS)):
            path = self.directory / name
            if not path.exists():
                continue
            try:
                snapshot = self.decode(path.read_bytes(), self.key)
            except IncompatibleCheckpoint as err:
                raise IncompatibleCheckpoint(f"checkpoint {path}: {err}", err.version) from err
            except CorruptCheckpoint as err:
                log.error("checkpoint %s is unusable: %s", path, err)
                problems.append(f"{path}: {err}")
                continue
            if problems:
                log.error("restoring the previous checkpoint %s instead; every input "
                          "partition is read again from its offsets", path)
            self.loaded_from = source
            return snapshot
        if problems:
            raise CorruptCheckpoint(f"no usable checkpoint in {self.directory} "
                                    f"({'; '.join(problems)})")
        self.loaded_from = "none"
        return None

    def set_aside(self) -> list[Path]:
        """Rename the snapshot files out of the way (``--reset-state``); returns the new
        paths, kept for a post-mortem and never loaded again."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        moved = []
        for name in (self.LATEST, self.PREVIOUS):
            path = self.directory / name
            if path.exists():
                target = self.directory / f"{name}.unusable-{stamp}"
                os.replace(path, target)
                moved.append(target)
        return moved


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned writer still writes a consistent snapshot
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
