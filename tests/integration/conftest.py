"""Fixtures for the real-broker integration tests."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ holds kafka_broker.py, a plain helper module shared by the test tiers.
_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from kafka_broker import broker_bootstrap  # noqa: E402


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap ``host:port`` of a real broker shared by the session.

    Without a broker the tests skip locally, but fail under ``CI=true``: CI must never
    pass by skipping them.
    """
    with contextlib.ExitStack() as stack:
        try:
            bootstrap = stack.enter_context(broker_bootstrap())
        except RuntimeError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(str(exc), pytrace=False)
            pytest.skip(str(exc))
        yield bootstrap
