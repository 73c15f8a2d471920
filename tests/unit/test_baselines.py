"""`tierwatch baseline fit`: training scores in CSV, JSONL or Parquet → equal-mass bins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.baselines import fit_file
from pipeline.cli import main
from pipeline.core.baseline import quantile_bins
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
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
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
