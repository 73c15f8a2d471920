"""`tierwatch baseline fit`: training scores in CSV, JSONL or Parquet → equal-mass bins."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.baselines import fit_file, parse_baselines, read_baselines
from pipeline.cli import main
from pipeline.core.baseline import quantile_bins
from pipeline.errors import UserError
from pipeline.schemas import Baseline


def _scores(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.beta(2, 3, n), rng.gamma(2.0, 1.0, n)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_fit_reads_every_format_the_same(tmp_path: Path, fmt: str) -> None:
    score, ood = _scores()
    path = tmp_path / f"train.{fmt}"
    if fmt == "csv":
        path.write_text("score,ood_distance\n" + "".join(
            f"{float(s)!r},{float(o)!r}\n" for s, o in zip(score, ood, strict=True)))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"score": float(s), "signals": {"ood_distance":
                        float(o)}}) + "\n" for s, o in zip(score, ood, strict=True)))
    else:
        pq.write_table(pa.table({"score": score, "ood_distance": ood}), path)
    b = fit_file(path, router_id="r", signals=["ood_distance"], bins=50)
    assert b.score.n == score.size and len(b.score.probs) == 50
    np.testing.assert_allclose(b.score.probs, 1 / 50, atol=1e-3)
    # the bins index the training scores back into (near) equal mass
    counts = np.bincount(quantile_bins(b.score).index(score), minlength=50) / score.size
    np.testing.assert_allclose(counts, b.score.probs, atol=1e-9)
    assert set(b.signals) == {"ood_distance"}


def test_fit_rejects_scores_outside_unit_interval(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("score\n0.5\n1.5\n")
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        fit_file(path, router_id="r")


def test_cli_writes_a_valid_baseline(tmp_path: Path) -> None:
    score, _ = _scores(5_000)
    src = tmp_path / "s.csv"
    src.write_text("score\n" + "".join(f"{float(s)!r}\n" for s in score))
    out = tmp_path / "baseline.json"
    assert main(["baseline", "fit", "--scores", str(src), "--router-id", "support",
                 "--bins", "40", "-o", str(out)]) == 0
    b = Baseline.model_validate_json(out.read_text())
    assert b.router_id == "support" and len(b.score.edges) == 41


# ---------------------------------------------------------------- one reader, every form
def _two() -> list[Baseline]:
    score, ood = _scores(2_000)
    return [fit_baseline_for(router, score, ood) for router in ("support", "sales")]


def fit_baseline_for(router: str, score: np.ndarray, ood: np.ndarray) -> Baseline:
    from datetime import UTC, datetime

    from pipeline.core.baseline import fit_baseline

    return fit_baseline(router, f"{router}:v1", datetime(2026, 1, 1, tzinfo=UTC), score,
                        {"ood_distance": ood}, bins=20)


@pytest.mark.parametrize("form", ["fit", "list", "jsonl", "jsonl.gz", "compact"])
def test_every_baseline_file_form_reads_the_same(tmp_path: Path, form: str) -> None:
    baselines = _two()
    path = tmp_path / f"b.{form}"
    if form == "fit":  # what `baseline fit` writes: one indented document
        baselines = baselines[:1]
        path.write_text(baselines[0].model_dump_json(indent=1) + "\n")
    elif form == "list":
        path.write_text("[" + ",\n".join(b.model_dump_json(indent=2) for b in baselines) + "]")
    elif form == "compact":
        baselines = baselines[:1]
        path.write_text(baselines[0].model_dump_json())
    else:
        text = "".join(b.model_dump_json() + "\n\n" for b in baselines)
        path.write_bytes(gzip.compress(text.encode()) if form.endswith("gz") else text.encode())
    assert read_baselines(path) == baselines


@pytest.mark.parametrize(("content", "says"), [
    (b"", "holds no baseline"),
    (b"[]", "holds no baseline"),
    (b'{"router_id": "r"}', "not a valid Baseline: version: Field required"),
    (b'[{"router_id": "r"}]', "item 1: not a valid Baseline"),
    (b"{not json", "line 1: not JSON"),
    (b'{"a": 1}\n{oops\n', "line 2: not JSON"),
    (b"42", "not a valid Baseline"),
])
def test_a_bad_baseline_file_is_named_with_what_is_wrong(content: bytes, says: str) -> None:
    with pytest.raises(UserError, match=r"^b\.json") as err:
        parse_baselines(content, "b.json")
    assert says in str(err.value)


def test_the_file_fit_writes_replays(tmp_path: Path) -> None:
    """The observed crash: `baseline fit -o b.json` then `replay --baseline b.json`."""
    score, _ = _scores(5_000)
    src = tmp_path / "s.csv"
    src.write_text("score\n" + "".join(f"{float(s)!r}\n" for s in score))
    out = tmp_path / "baseline.json"
    assert main(["baseline", "fit", "--scores", str(src), "--router-id", "support",
                 "--bins", "40", "-o", str(out)]) == 0
    routing = tmp_path / "routing.jsonl"
    routing.write_text(json.dumps({"schema_version": "1", "event_id": "e1", "request_id": "q1",
                                   "router_id": "support", "ts": "2026-01-01T00:00:00+00:00",
                                   "tier": "cheap", "score": 0.9,
                                   "route_reason": "confident_cheap",
                                   "thresholds": {"cheap_above": 0.7, "capable_below": 0.5,
                                                  "exploration_rate": 0.0}}) + "\n")
    assert main(["replay", "--routing", str(routing), "--baseline", str(out),
                 "--out", str(tmp_path / "audit")]) == 0
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["events"] == 1 and summary["counts"] == {"support/cheap": 1}
