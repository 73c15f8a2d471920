"""Shared helpers of the benchmarks (``make bench``; deselected from the default run).

Benchmarks print their tables and write them as markdown under ``out/bench/`` (gitignored),
so a run leaves a record that can be pasted into an issue or a PR.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (cells are ``str()``-ed; ``|`` inside a cell is escaped)."""

    def cell(x: object) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@pytest.fixture(scope="session")
def bench_dir() -> Path:
    """``out/bench`` under the repository root (``TIERWATCH_BENCH_DIR`` overrides it)."""
    d = Path(os.environ.get("TIERWATCH_BENCH_DIR", ROOT / "out" / "bench"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def write_report(bench_dir: Path) -> Callable[[str, str], Path]:
    """Write ``text`` to ``out/bench/<name>`` and print it; return the path."""

    def write(name: str, text: str) -> Path:
        path = bench_dir / name
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        print(f"\n{text}\n[written to {path}]")
        return path

    return write


@pytest.fixture(scope="session")
def markdown_table() -> Callable[[Sequence[str], Sequence[Sequence[object]]], str]:
    """The markdown table formatter (a fixture: benchmark modules do not import conftest)."""
    return _markdown_table


# The real broker of the integration tests (a session fixture), for the worker benchmark.
from tests.integration.conftest import kafka_bootstrap  # noqa: E402, F401
