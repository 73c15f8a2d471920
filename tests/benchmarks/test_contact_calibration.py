"""Calibration of the attributed support-contact test under a weekly cycle (issue #14).

The null matrix's weekly-cycle case once paged ``support_contact_rise`` (seed 2, the
cheap tier's band scan, 1d window, p = 1.78e-05 against a per-test level of 1.85e-05).
This benchmark asks whether that was a biased estimator or chance, with the project's
own pieces and nothing else: :class:`~pipeline.core.lagged.LaggedCounts` and
:class:`~pipeline.core.lagged.DelayDistribution` (the life table learnt from the data),
:func:`~pipeline.core.quality.power.conditional_drop_p_value` (the test the monitor
runs), the simulator's :class:`~pipeline.sim.params.Seasonality` (weekend 0.3/0.4/0.5×,
diurnal ×4) and its support-contact delay (log-normal, median 8 h). Contacts are
independent Bernoulli draws at a constant probability, so every small p-value is a
false one.

For each seed, 28 days of hourly buckets; from day 14 on, every hour, the cheap tier's
1d window is compared with the reference period (days 0-14), as the monitor does.
Reported per traffic shape: the mean of observed/expected, the variance of the
standardized excess (1 when ``E``'s estimation error is negligible), and the share of
looks with ``p`` below 1e-2, 1e-3 and 1e-4 against the nominal levels, plus the share of
seeds whose smallest ``p`` falls below the quality family's per-test level.

Asserted: observed/expected within 2 % of 1 and the standardized variance within
0.1 of 1 (or three standard errors, if wider, when few seeds are run); the share of
looks below 1e-2 and 1e-3 at most 1.5× nominal plus three standard errors. Looks are
autocorrelated over a day, so all errors are those of looks / 24 independent looks;
1e-4 is reported, not asserted. ``TIERWATCH_CC_SEEDS`` (default 200).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.lagged import DelayDistribution, LaggedCounts
from pipeline.core.quality.power import conditional_drop_p_value
from pipeline.sim.params import Delays, Seasonality

pytestmark = pytest.mark.benchmark

SEEDS = int(os.environ.get("TIERWATCH_CC_SEEDS", "200"))
START = 1767225600.0  # 2026-01-01 00:00 UTC, a Thursday (as the null matrix)
LEVEL = 1.0 / (720 * 87)  # the quality family's per-test level (87 tests, hourly looks)


def run(seed: int, weekly: bool, *, days: int = 28, rate_h: float = 1080.0,
        share: float = 0.5, p_cheap: float = 0.02, p_other: float = 0.01) -> np.ndarray:
    """Rows ``(hour, E, C, E_ref, C_ref, p)`` of the cheap tier's 1d window, one per look."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    t = (np.arange(hours, dtype=np.float64) + 0.5) * 3600.0 + START
    if weekly:
        sea = Seasonality(daily_amplitude=0.6, peak_hour_utc=15.0,
                          weekend_factor=(0.3, 0.4, 0.5)[seed % 3])
        lam = rate_h * sea.factor(t)
    else:
        lam = np.full(hours, rate_h)
    routed = rng.poisson(lam)
    cheap = rng.binomial(routed, share)
    counts = {"cheap": cheap, "capable": routed - cheap}
    delay = Delays().support_contact
    arrivals: dict[int, list[tuple[str, int]]] = {}
    for tier, p in (("cheap", p_cheap), ("capable", p_other)):
        decided = np.repeat(np.arange(hours), rng.binomial(counts[tier], p))
        # decision time uniform in its hour; the delay in seconds, as the simulator's
        arrived = decided + np.floor(rng.random(decided.size)
                                     + delay.draw(rng, decided.size) / 3600).astype(int)
        for a, d in zip(arrived.tolist(), decided.tolist(), strict=True):
            arrivals.setdefault(a, []).append((tier, d))
    lag = LaggedCounts(24 * 8, reference=(0, 14 * 24))
    dist = DelayDistribution(168, history_days=14)
    out = []
    for k in range(hours):
        for tier, n in counts.items():
            lag.update_routed(tier, 0, k, float(n[k]))
        dist.add_exposure(k, float(routed[k]))
        for tier, d in arrivals.get(k, ()):
            lag.update_event(tier, 0, d, k)
            dist.add_delay(d, k)
        if k >= 14 * 24:
            est = dist.estimate(k)
            assert est is not None
            cur = lag.window(k, 24, est.cdf, tier="cheap")
            ref = lag.reference_totals(k, est.cdf, tier="cheap")
            p_value = conditional_drop_p_value(cur.wy, cur.n, ref.wy, ref.n)
            out.append((k, cur.n, cur.n - cur.wy, ref.n, ref.n - ref.wy, p_value))
    return np.array(out)


def summary(runs: Sequence[np.ndarray]) -> dict[str, float]:
    """Calibration figures over all looks of ``runs``."""
    rows = np.concatenate(runs)
    e, c, e_ref, c_ref, p = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
    r0 = c_ref / e_ref
    z = (c - e * r0) / np.sqrt(e * r0 * (1 + e / e_ref))
    ratio = c / e / r0
    out = {"looks": float(p.size), "obs_over_exp": float(np.mean(ratio)),
           "ratio_sd": float(ratio.std()), "z_var": float(z.var())}
    for x in (1e-2, 1e-3, 1e-4):
        out[f"p<{x:g}"] = float((p < x).mean())
    out["seeds_min_p<level"] = float(np.mean([r[:, 5].min() < LEVEL for r in runs]))
    return out


@pytest.mark.timeout(3600)
def test_contact_calibration(write_report: Callable[[str, str], Path],
                             markdown_table: Callable[[Sequence[str], Sequence[Sequence[object]]],
                                                      str]) -> None:
    shapes = {"steady": False, "weekly-cycle": True}
    results = {name: summary([run(s, weekly) for s in range(SEEDS)])
               for name, weekly in shapes.items()}
    cols = ["obs_over_exp", "z_var", "p<0.01", "p<0.001", "p<0.0001", "seeds_min_p<level"]
    text = (f"Attributed contact window (cheap tier, 1d) under the null, {SEEDS} seeds × 336 "
            f"hourly looks per shape; level {LEVEL:.3g}.\n\n"
            + markdown_table(["shape", *cols],
                             [[n, *(f"{r[c]:.3g}" for c in cols)] for n, r in results.items()]))
    write_report("contact_calibration.md", text)
    for name, r in results.items():
        # a 24 h window looked at hourly: excursions come in runs of about a day's
        # looks, so every share's or mean's noise is that of looks / 24 independent ones
        n_eff = r["looks"] / 24.0
        assert abs(r["obs_over_exp"] - 1.0) < max(0.02, 3.0 * r["ratio_sd"] / n_eff ** 0.5), \
            (name, r)
        assert abs(r["z_var"] - 1.0) <= max(0.1, 3.0 * (2.0 / n_eff) ** 0.5), (name, r)
        for x in (1e-2, 1e-3):
            noise = 3.0 * (x * 24.0 / r["looks"]) ** 0.5
            assert r[f"p<{x:g}"] <= 1.5 * x + noise, (name, x, r)
