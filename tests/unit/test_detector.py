"""Drift streams: the thresholds mix is counted exactly, and a threshold move is not drift."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.detector import DriftConfig, DriftStream
from pipeline.core.drift import tier_probability
from pipeline.core.histogram import QuantileBins
from pipeline.schemas import Thresholds

BINS = QuantileBins.from_sample(np.random.default_rng(0).beta(2, 2, 20_000), n_bins=40)
KEYS = [(0.6, 0.5, 0.1), (0.7, 0.6, 0.1), (0.8, 0.7, 0.2)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3 * 86400), st.floats(0, 1), st.sampled_from(KEYS)),
                min_size=1, max_size=300))
def test_mix_counts_equal_a_direct_count(
        rows: list[tuple[float, float, tuple[float, ...]]]) -> None:
    rows.sort()
    s = DriftStream(BINS, DriftConfig(alpha=1e-6), tier="cheap")
    ts = np.array([r[0] for r in rows])
    s.update_many(ts, np.array([r[1] for r in rows]), [r[2] for r in rows])  # type: ignore[misc]
    direct = Counter((int(t // 3600), k) for t, _, k in rows)
    got = Counter({(b, k): n for b, per in s.mix.items() for k, n in per.items()})
    assert got == direct


def test_moving_the_threshold_is_not_drift() -> None:
    rng = np.random.default_rng(5)
    s = DriftStream(BINS, DriftConfig(alpha=1e-4, seq_threshold=13.0), tier="cheap")
    policies = [Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.1),
                Thresholds(cheap_above=0.75, capable_below=0.65, exploration_rate=0.1)]
    for day, th in enumerate(policies):
        scores = rng.beta(2, 2, 40_000)
        p = tier_probability(scores, th, "cheap")
        cheap = scores[rng.random(scores.size) < p]
        ts = np.sort(rng.uniform(day * 86400, (day + 1) * 86400, cheap.size))
        s.update_many(ts, cheap, [(th.cheap_above, th.capable_below, th.exploration_rate)]
                      * cheap.size)
    result = s.evaluate(2 * 86400 - 1)
    assert result.windows and not result.alarm, result.statistics()
    # the sequential tests score each event against its own thresholds' truncation
    assert s.seq is not None and not s.seq.advance(2 * 86400), s.seq.worst()


def test_a_shift_in_the_tier_fires_the_sequential_test_within_the_hour() -> None:
    rng = np.random.default_rng(6)
    th = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.1)
    key = (th.cheap_above, th.capable_below, th.exploration_rate)
    s = DriftStream(BINS, DriftConfig(alpha=1e-4, seq_threshold=13.0), tier="cheap")
    for hour, a in enumerate([2.0] * 24 + [4.0]):  # the cheap tier: KS 0.12 from 0
        scores = rng.beta(a, 2, 2_000)
        cheap = scores[rng.random(scores.size) < tier_probability(scores, th, "cheap")]
        ts = np.sort(rng.uniform(hour * 3600, (hour + 1) * 3600, cheap.size))
        s.update_many(ts, cheap, [key] * cheap.size)
        assert s.seq is not None
        alarm = s.seq.advance((hour + 1) * 3600)
        assert alarm == (hour == 24), (hour, s.seq.worst())
