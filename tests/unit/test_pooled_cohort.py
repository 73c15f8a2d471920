"""A hard cohort of 5 % of traffic, wrong half the time on the cheap tier (issue 14,
acceptance 3), seen by the pooled bad-outcome test (``tier_quality_drop``/``pooled``).

Traffic from ``tests.lagged_traffic`` (independent of ``pipeline.sim``): weekly and
diurnal cycles, votes minutes and contacts hours after their requests. The onset is the
day after the 14-day reference period, to keep the runs short.

The acceptance asks for 12 h at 0.3 events/s. That is not reachable at the configured
budget: in the 12 h after the onset the band's pooled evidence is a median of about
6 nats (even with the onset and the ratio known), against a threshold of about 11
(``tests/benchmarks/README.md``, quality-delay section). What is pinned here: no alert
before the onset, the cohort caught within 30 h at 0.3 events/s (9–25 h on these
seeds), and within 12 h at 1 event/s (slow).
"""

from __future__ import annotations

import pytest

from tests.lagged_traffic import CohortScenario, quality_alerts, run_cohort

HOUR = 3600.0


def _delay(rate: float, seed: int, onset_hour: int, after_h: float) -> tuple[float, list]:
    onset_day = 15 + onset_hour / 24
    sc = CohortScenario(rate=rate, onset_day=onset_day, days=onset_day + after_h / 24)
    feed, onset = run_cohort(sc, seed)
    alerts = quality_alerts(feed)
    pre = [a for a in alerts if a[0] < onset]
    post = [a for a in alerts if a[0] >= onset and a[2] == "cheap"]
    return ((post[0][0] - onset) / HOUR if post else float("inf")), pre


@pytest.mark.parametrize(("seed", "onset_hour"), [(1, 0), (2, 9), (3, 14)])
def test_cohort_caught_within_30_hours_at_0_3_events_per_second(seed: int,
                                                             onset_hour: int) -> None:
    delay, pre = _delay(0.3, seed, onset_hour, 26)
    assert pre == []
    assert delay <= 30, delay


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cohort_caught_within_12_hours_at_1_event_per_second(seed: int) -> None:
    delay, pre = _delay(1.0, seed, 9, 14)
    assert pre == []
    assert delay <= 12, delay
