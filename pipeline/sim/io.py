"""Writing simulator output to files: JSON lines (optionally gzip), truth and baselines.

Output is deterministic byte for byte: orjson for the events, and gzip with a zero mtime
and no file name in its header.

>>> import tempfile, pathlib
>>> from pipeline.sim import Simulator
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> sim = Simulator("steady", rate=0.5, seed=3)
>>> n_routing, n_feedback = write_jsonl(sim.run(days=0.2), d / "r.jsonl", d / "f.jsonl")
>>> n_routing == len((d / "r.jsonl").read_bytes().splitlines())
True
>>> write_truth(d / "truth.json", sim.truth())
>>> write_baseline(d / "baseline.json", sim.baseline(n_samples=5_000, bins=20))
"""

from __future__ import annotations

import gzip as gz
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from pipeline.schemas import Baseline
from pipeline.sim.simulator import Chunk

_LINE = orjson.OPT_APPEND_NEWLINE


@contextmanager
def _open(path: Path, gzip: bool) -> Iterator[IO[bytes]]:
    with path.open("wb") as raw:
        if not gzip:
            yield raw
            return
        # mtime=0 and an empty name keep the .gz bytes a pure function of the content.
        with gz.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                         compresslevel=6) as zipped:
            yield zipped  # type: ignore[misc]


def _lines(events: list[dict[str, Any]]) -> bytes:
    return b"".join([orjson.dumps(e, option=_LINE) for e in events])


def write_jsonl(
    chunks: Iterable[Chunk], routing_path: str | Path, feedback_path: str | Path,
    gzip: bool = False, baselines_path: str | Path | None = None,
) -> tuple[int, int]:
    """Write every chunk's routing and feedback events, one JSON object per line.

    Events are written in chunk order, so each file is sorted by ``ts``. Baselines emitted
    by the chunks (classifier retrains) go to ``baselines_path`` when given, one per line.
    Returns the number of routing and feedback events written.
    """
    routing_path, feedback_path = Path(routing_path), Path(feedback_path)
    n_routing = n_feedback = 0
    with ExitStack() as stack:
        r_out = stack.enter_context(_open(routing_path, gzip))
        f_out = stack.enter_context(_open(feedback_path, gzip))
        b_out = (None if baselines_path is None
                 else stack.enter_context(Path(baselines_path).open("wb")))
        for chunk in chunks:
            r_out.write(_lines(chunk.routing))
            f_out.write(_lines(chunk.feedback))
            n_routing += len(chunk.routing)
            n_feedback += len(chunk.feedback)
            if b_out is not None:
                for b in chunk.baselines:
                    b_out.write(b.model_dump_json().encode() + b"\n")
    return n_routing, n_feedback


def write_truth(path: str | Path, truth: dict[str, Any]) -> None:
    """Write ``Simulator.truth()`` as indented JSON with sorted keys."""
    Path(path).write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2
                                        | orjson.OPT_SORT_KEYS | _LINE))


def write_baseline(path: str | Path, baseline: Baseline) -> None:
    """Write one Baseline payload as JSON (the shape published on ``tierwatch.baselines``)."""
    Path(path).write_bytes(baseline.model_dump_json().encode() + b"\n")
