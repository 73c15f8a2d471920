"""The README's ``baseline fit`` → ``replay`` on a new user's traffic (a small cut of
``tests/benchmarks/test_new_user_trial.py``): weekly and diurnal cycles, a holiday,
support contacts hours late and a threshold move, with nothing about quality changing.
No quality or contact alert may page.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.schemas import Thresholds
from tests.new_user_traffic import Traffic
from tests.new_user_trial import QUALITY_KINDS, run_trial


def test_a_new_users_null_traffic_pages_nobody(tmp_path: Path) -> None:
    moved = Thresholds(cheap_above=0.80, capable_below=0.65, exploration_rate=0.05)
    traffic = Traffic(seed=7, days=24, per_hour=300, move=(17.0, moved))
    alerts = run_trial(traffic, tmp_path / "trial")
    pages = [(a["kind"], a["ts"], a.get("tier")) for a in alerts
             if a["severity"] == "page" and a["kind"] in QUALITY_KINDS]
    assert not pages
    assert sum(a["severity"] == "ticket" for a in alerts) <= 1
