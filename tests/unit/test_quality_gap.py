"""Comparison (b), cheap vs capable in the uncertain band: it pages when the gap widens.

A router sends its uncertain band to the cheap model knowing it is a little worse there:
that gap exists from day 0, and with enough exploration traffic it is significant in every
window. ``tier_quality_gap`` must stay quiet for it, however much traffic there is, and
page when the gap grows relative to the reference period, as comparison (a) does for a
tier's own rates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.quality import SequentialDropTest, Totals, gap_change_p_value
from pipeline.core.router_state import MonitorConfig, RouterState

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01
EXPLORATION = 0.1  # propensity of the cheap arm in the band; capable has 1 - EXPLORATION


def _run(
    seed: int, p_cheap: float, p_capable: float, days: int, widen_from: float | None = None,
    widen_by: float = 0.0, per_day: int = 2400,
) -> tuple[RouterState, list[tuple[float, str]]]:
    """Thumbs on in-band exploration traffic, evaluated every 3 hours from the end of the
    reference period; returns the state and its (day, state) transitions of the gap."""
    rng = np.random.default_rng(seed)
    state = RouterState("r", MonitorConfig(), T0)
    transitions: list[tuple[float, str]] = []
    step = 3 * 3600.0
    for k in range(int(days * DAY / step)):
        t0 = T0 + k * step
        day = k * step / DAY
        n = rng.poisson(per_day * step / DAY)
        cheap = rng.random(n) < EXPLORATION
        p = np.where(cheap, p_cheap, p_capable)
        if widen_from is not None and day >= widen_from:
            p = np.where(cheap, p - widen_by, p)
        good = rng.random(n) < p
        for i, ts in enumerate(np.sort(rng.uniform(t0, t0 + step, n))):
            tier = "cheap" if cheap[i] else "capable"
            state.observe_feedback(tier=tier, score=0.35, kind="thumbs", value=float(good[i]),
                                   ts=float(ts), decision_ts=float(ts), weight=None,
                                   propensity=EXPLORATION if cheap[i] else 1 - EXPLORATION,
                                   in_band=True)
        now = t0 + step
        if now >= T0 + 14 * DAY:
            for tr in state.evaluate(now).transitions:
                if tr.key.kind == "tier_quality_gap":
                    transitions.append(((now - T0) / DAY, tr.state))
    return state, transitions


def _inband(state: RouterState, tier: str, now: float) -> tuple[Totals, Totals]:
    return (state.quality_watch.inband.window(now - 1e-6, 7 * DAY, signal="thumbs", tier=tier),
            state.quality_watch.inband.reference_totals("thumbs", tier=tier))


def test_constant_structural_gap_does_not_page() -> None:
    """Cheap 0.85 vs capable 0.90 from day 0: a gap the old test called significant in
    every window (it paged on the gap itself), which is not a change."""
    state, transitions = _run(1, 0.85, 0.90, days=35)
    now = T0 + 35 * DAY
    cheap, cheap_ref = _inband(state, "cheap", now)
    capable, capable_ref = _inband(state, "capable", now)
    old = state.quality_watch.gap_test.test_gap(cheap, capable)
    assert old.alarm, "the structural gap should be significant: the test below would be moot"
    assert not [t for t in transitions if t[1] == "firing"], transitions
    new = state.quality_watch.gap_test.test_gap_change(cheap, capable, cheap_ref, capable_ref)
    assert not new.alarm and new.reference_gap == pytest.approx(0.05, abs=0.03)


def test_widening_gap_pages_after_it_widens() -> None:
    """Same structural gap; from day 21 the cheap arm loses 0.10 more: paged within the
    7-day window that sees it, and the page says how far the gap moved."""
    state, transitions = _run(2, 0.85, 0.90, days=28, widen_from=21.0, widen_by=0.10)
    firing = [day for day, s in transitions if s == "firing"]
    assert firing and 21.0 < firing[0] <= 28.0, transitions
    now = T0 + 28 * DAY
    cheap, cheap_ref = _inband(state, "cheap", now)
    capable, capable_ref = _inband(state, "capable", now)
    r = state.quality_watch.gap_test.test_gap_change(cheap, capable, cheap_ref, capable_ref)
    assert r.alarm and r.widening == pytest.approx(0.10, abs=0.04)


def test_gap_change_p_value_holds_its_level_under_a_constant_gap() -> None:
    """Same structural gap in both periods, IPW weights as in the band: the widening test
    rejects at most alpha (measured at alpha = 1 %, small arms, rare bad outcomes)."""
    rng = np.random.default_rng(8)
    alpha, replicates = 0.01, 4000

    def arm(n: int, p: float, propensity: float) -> Totals:
        return Totals.from_arrays(rng.random(n) < p, np.full(n, 1 / propensity))

    rejected = 0
    for _ in range(replicates):
        _, _, p = gap_change_p_value(arm(40, 0.92, 0.1), arm(300, 0.97, 0.9),
                                     arm(80, 0.92, 0.1), arm(600, 0.97, 0.9))
        rejected += p <= alpha
    assert rejected / replicates <= alpha


def test_gap_change_needs_evidence_in_every_arm() -> None:
    test = SequentialDropTest(floor=0.03, min_effective_n=30)
    big = Totals.from_arrays([1.0] * 900 + [0.0] * 100)
    small_bad = Totals.from_arrays([1.0] * 5 + [0.0] * 5)
    r = test.test_gap_change(small_bad, big, big, big)
    assert r.practical and not r.sufficient and not r.alarm
    empty = test.test_gap_change(Totals(), big, big, big)
    assert not empty.alarm and math.isnan(empty.widening or math.nan)
