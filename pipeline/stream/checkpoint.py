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

Snapshots are pickles of the worker's own objects: the directory must be as trusted as
the worker's code. The control signing key is never written (the signer is re-attached
from the settings on restore).
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import os
import pickle
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("tierwatch.checkpoint")

MAGIC = b"TWCP1\n"
FORMAT_VERSION = 1


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
    >>> store.close()
    """

    LATEST, PREVIOUS = "snapshot.bin", "snapshot.prev.bin"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
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
    def encode(snapshot: Snapshot) -> bytes:
        body = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
        return MAGIC + hashlib.sha256(body).digest() + body

    @staticmethod
    def decode(blob: bytes) -> Snapshot:
        if not blob.startswith(MAGIC):
            raise ValueError("not a tierwatch snapshot")
        digest, body = blob[len(MAGIC):len(MAGIC) + 32], blob[len(MAGIC) + 32:]
        if hashlib.sha256(body).digest() != digest:
            raise ValueError("snapshot digest mismatch (torn or corrupt file)")
        snapshot = pickle.loads(body)  # our own file: see the module docstring
        if not isinstance(snapshot, Snapshot) or snapshot.version != FORMAT_VERSION:
            raise ValueError("unsupported snapshot version")
        return snapshot

    def save(self, snapshot: Snapshot) -> int:
        """Write ``snapshot`` durably; returns its size in bytes."""
        return self.write(self.encode(snapshot))

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

        Call it between messages: the child sees the state as it is at the fork.
        """
        pid = os.fork()
        if pid:
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
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            raise RuntimeError(f"checkpoint writer {pid} failed (wait status {status})")
        return (self.directory / self.LATEST).stat().st_size

    def load(self) -> Snapshot | None:
        """The newest readable snapshot, or ``None`` when there is none."""
        for name in (self.LATEST, self.PREVIOUS):
            path = self.directory / name
            if not path.exists():
                continue
            try:
                return self.decode(path.read_bytes())
            except (ValueError, pickle.UnpicklingError, EOFError, AttributeError) as err:
                log.error("checkpoint %s unreadable (%s); trying the previous one", path, err)
        return None


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: an orphaned writer still writes a consistent snapshot
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
