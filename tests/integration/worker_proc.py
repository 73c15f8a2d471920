"""Run ``tierwatch worker`` as a real subprocess for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


@contextlib.contextmanager
def running_worker(env: dict[str, str], log_path: Path,
                   ready_timeout: float = 60.0) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Start the worker with ``env`` (TIERWATCH_* settings); yield it and its base URL."""
    port = free_port()
    full_env = {**os.environ, **env, "TIERWATCH_WEB_PORT": str(port)}
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"],
                            env=full_env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log_path.read_text()[-3000:]}")
            try:
                http_get(base + "/metrics", timeout=1)
                break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker not ready: {log_path.read_text()[-3000:]}") from err
                time.sleep(0.3)
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30.0,
               every: float = 0.1) -> T:
    """Poll ``check`` until it returns something other than ``None`` or ``False``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
