"""``tierwatch replay``: deterministic outputs, any input format, bad lines, quiet when piped.

One small pareto-trap simulation is replayed through the command line several times,
over the same events as JSON lines, gzipped JSON lines and Parquet. It is 9 days long, so
that ``feedback_starvation`` fires and a recommendation is published; evaluations every 3
hours and a 2-day join TTL keep it quick and make unjoined feedback expire to the DLQ.
The tests of bad lines and of the progress bar replay the first day only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.bootstrap import build_monitor
from pipeline.cli import main
from pipeline.demo import simulate
from pipeline.replay import BATCH, Replay, messages
from pipeline.schemas import DeadLetter
from pipeline.settings import Settings

DAYS, RATE, SEED = 9.0, 0.05, 11
FLAGS = ["--eval-every-s", "10800", "--join-ttl-s", "172800"]
DAY_LINES = 4000  # about 22 hours of routing at RATE
OUTPUTS = ("alerts.jsonl", "control.jsonl", "review.jsonl", "dlq.jsonl")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sim")
    routing, feedback, _, _ = simulate("pareto-trap", d, days=DAYS, rate=RATE, seed=SEED)
    day = d / "day.jsonl"
    day.write_bytes(b"\n".join(routing.read_bytes().splitlines()[:DAY_LINES]) + b"\n")
    return {"routing": routing, "feedback": feedback, "baseline": d / "baseline.json",
            "day": day}


def replay(data: dict[str, Path], out: Path, **inputs: Path) -> dict[str, bytes]:
    """``tierwatch replay`` in process; every output file's bytes (summary without timing)."""
    files = {**data, **inputs}
    assert main(["replay", "--routing", str(files["routing"]), "--feedback",
                 str(files["feedback"]), "--baseline", str(files["baseline"]),
                 "--out", str(out), *FLAGS]) == 0
    got = {name: (out / name).read_bytes() for name in (*OUTPUTS, "report.html")}
    summary = json.loads((out / "summary.json").read_bytes())
    assert summary.pop("seconds") >= 0
    got["summary.json"] = json.dumps(summary, sort_keys=True).encode()
    return got


@pytest.fixture(scope="module")
def reference(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
              ) -> dict[str, bytes]:
    return replay(data, tmp_path_factory.mktemp("ref"))


def test_the_reference_run_has_something_in_every_output(reference: dict[str, bytes]) -> None:
    alerts = [orjson.loads(line) for line in reference["alerts.jsonl"].splitlines()]
    assert {a["kind"] for a in alerts} >= {"feedback_starvation"}
    assert reference["control.jsonl"] and reference["review.jsonl"]
    assert reference["dlq.jsonl"], "expected unjoined feedback to expire"
    assert b"<svg" in reference["report.html"]


def test_two_replays_of_the_same_input_are_byte_identical(
        data: dict[str, Path], reference: dict[str, bytes], tmp_path: Path) -> None:
    again = replay(data, tmp_path / "again")
    for name, content in reference.items():
        assert again[name] == content, name


def _unpathed(outputs: dict[str, bytes], path: Path, ref_path: Path) -> dict[str, bytes]:
    """The report and summary name the input file; put the reference's name in."""
    return {k: v.replace(str(path).encode(), str(ref_path).encode()) for k, v in outputs.items()}


def test_gzipped_json_lines_give_the_same_outputs(
        data: dict[str, Path], reference: dict[str, bytes], tmp_path: Path) -> None:
    gz = {}
    for kind in ("routing", "feedback"):
        gz[kind] = tmp_path / f"{kind}.jsonl.gz"
        gz[kind].write_bytes(gzip.compress(data[kind].read_bytes()))
    got = _unpathed(replay(data, tmp_path / "out", **gz), gz["routing"], data["routing"])
    # unjoined feedback's dead letters name the feedback file they came from
    got = _unpathed(got, gz["feedback"], data["feedback"])
    for name, content in reference.items():
        assert got[name] == content, name


def test_parquet_gives_the_same_outputs(
        data: dict[str, Path], reference: dict[str, bytes], tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    files = {}
    for kind in ("routing", "feedback"):
        rows = [orjson.loads(line) for line in data[kind].read_bytes().splitlines()]
        # a column for every key of any row (from_pylist would take the first row's keys);
        # an event without a key is a null in that column
        keys = list(dict.fromkeys(k for row in rows for k in row))
        table = pa.table({k: pa.array([row.get(k) for row in rows]) for k in keys})
        files[kind] = tmp_path / f"{kind}.parquet"
        # several row groups, so that reading crosses their boundaries
        pq.write_table(table, files[kind], row_group_size=1_000)
    assert pq.ParquetFile(files["routing"]).metadata.num_row_groups > 1
    got = _unpathed(replay(data, tmp_path / "out", **files), files["routing"], data["routing"])
    got = _unpathed(got, files["feedback"], data["feedback"])
    for name, content in reference.items():
        assert got[name] == content, name


# --- bad lines --------------------------------------------------------------------------


def _event(line: bytes, **change: Any) -> dict[str, Any]:
    ev: dict[str, Any] = orjson.loads(line)
    ev.update(change)
    return ev


def test_malformed_lines_go_to_the_dlq_with_their_line_number(
        data: dict[str, Path], tmp_path: Path) -> None:
    lines = data["day"].read_bytes().splitlines()
    good = len(lines)
    first = lines[0]
    nan = orjson.dumps(_event(first, event_id="x-nan", request_id="x-nan", score=0.123456))
    bad: dict[int, tuple[bytes, str]] = {  # position in the clean file → line, reason mark
        10: (b'{"event_id": "broken", ', "invalid_json"),
        200: (orjson.dumps(_event(first, event_id="x-score", request_id="x-score",
                                  score=1.5)), "score"),
        201: (nan.replace(b"0.123456", b"NaN"), "score"),
        700: (b"[1, 2", "invalid_json"),
        900: (orjson.dumps(_event(first, event_id="x-a", request_id="x-a")) + b"," +
              orjson.dumps(_event(first, event_id="x-b", request_id="x-b")), "invalid_json"),
        1500: (orjson.dumps(_event(first, event_id="x-big", request_id="x-big",
                                   model="m" * 70_000)), "oversized"),
        2000: (orjson.dumps(_event(first, event_id="x-reason", request_id="x-reason",
                                   route_reason="vibes")), "route_reason"),
        2600: (b'"just a string"', "not_an_object"),
    }
    out_lines: list[bytes] = []
    expected: dict[int, str] = {}
    for i, line in enumerate(lines):
        if i in bad:
            raw, mark = bad[i]
            out_lines.append(raw)
            expected[len(out_lines)] = mark
        if i == 300:
            out_lines.append(b"")  # a blank line still counts in the numbering
        out_lines.append(line)
    path = tmp_path / "routing.jsonl"
    path.write_bytes(b"\n".join(out_lines) + b"\n")

    settings = Settings()
    monitor = build_monitor(settings)
    result = Replay(settings, monitor, tmp_path / "out").run(path, progress=False)
    records = [DeadLetter.model_validate_json(line) for line in
               (tmp_path / "out" / "dlq.jsonl").read_bytes().splitlines()]
    from_lines = {r.offset: r for r in records if r.topic == str(path)}
    assert set(from_lines) == set(expected) and len(from_lines) == len(records)
    for line_no, mark in expected.items():
        r = from_lines[line_no]
        assert (r.field or r.reason_class) == mark, (line_no, r)
        assert r.index is None
        line = out_lines[line_no - 1].strip()
        if r.payload_bytes is None:
            assert r.payload.encode() == line, r
        else:  # a huge line: its first 64 KiB, its size and its digest
            assert line.startswith(r.payload.encode()) and len(r.payload) == 64 * 1024
            assert r.payload_bytes == len(line)
            assert r.payload_sha256 == hashlib.sha256(line).hexdigest()
    # every good line was counted, and nothing of the bad ones
    assert sum(monitor.counts.routed.values()) == good
    assert result.events == good + len(bad)


def test_a_late_event_is_dead_lettered_at_its_line(data: dict[str, Path], tmp_path: Path) -> None:
    lines = data["day"].read_bytes().splitlines()
    settings = Settings(allowed_lateness_s=3600)
    late = orjson.dumps(_event(lines[0], event_id="x-late", request_id="x-late"))
    path = tmp_path / "routing.jsonl"
    # far behind its neighbours: it sorts by its own time in the merge, so a file that is
    # out of order by more than the allowed lateness loses it, with its line named
    path.write_bytes(b"\n".join([*lines[:3000], late, *lines[3000:]]) + b"\n")
    Replay(settings, build_monitor(settings), tmp_path / "out").run(path, progress=False)
    records = [DeadLetter.model_validate_json(line) for line in
               (tmp_path / "out" / "dlq.jsonl").read_bytes().splitlines()]
    late_records = [r for r in records if r.reason_class == "late"]
    assert [(r.offset, r.topic) for r in late_records] == [(3001, str(path))]
    assert b'"x-late"' in late_records[0].payload.encode()


# --- the messages -------------------------------------------------------------------------


def test_messages_close_at_evaluation_boundaries_and_batch_size(data: dict[str, Path]) -> None:
    step = 3600.0
    seen = 0
    last_hour = -math.inf
    for m in messages(data["routing"], data["feedback"], eval_every_s=step, batch=BATCH):
        assert m.batch and 1 <= len(m.lines) <= BATCH
        hours = {math.floor(line.ts / step) for line in m.lines}
        assert len(hours) == 1, "a message spans an evaluation boundary"
        (hour,) = hours
        assert hour >= last_hour
        last_hour = hour
        assert {line.kind for line in m.lines} == {m.kind}
        doc = orjson.loads(m.value)
        assert isinstance(doc, list) and len(doc) == len(m.lines)
        seen += len(m.lines)
    total = sum(1 for kind in ("routing", "feedback")
                for line in data[kind].read_bytes().splitlines() if line)
    assert seen == total


def test_messages_reject_bad_arguments(data: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="batch"):
        next(messages(data["routing"], batch=0))
    with pytest.raises(ValueError, match="eval_every_s"):
        next(messages(data["routing"], eval_every_s=0))


# --- progress -----------------------------------------------------------------------------


def test_progress_bar_is_quiet_when_stderr_is_not_a_tty(
        data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings()
    Replay(settings, build_monitor(settings), tmp_path / "a").run(
        data["day"])  # progress=None: only on a TTY
    assert capsys.readouterr().err == ""
    Replay(settings, build_monitor(settings), tmp_path / "b").run(data["day"], progress=True)
    assert "events" in capsys.readouterr().err  # the bar itself works
