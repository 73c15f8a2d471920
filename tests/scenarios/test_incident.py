"""The incident, reproduced: a Pareto trap the aggregate dashboard cannot see.

The ``pareto-trap`` scenario is the incident's mechanism: about 65 % of traffic goes to
the cheap model, which is as good as the capable one on about 94 % of its queries;
thumbs-down run at about 3 per 1,000 requests. From day 21 a cohort that looks simple
but is hard ramps in (0 → 12 % of traffic over 7 days); the classifier sends it cheap,
and its users mostly call support instead of voting.

The simulated events are validated and fed to the pure core in event-time order, in
batches, with the production defaults (``Settings()``) except the price of a support
contact, set to the $3 the scenario is calibrated for (as ``tierwatch demo`` does): at
the default $8 this router is already in a Pareto trap before the drift, and the
``pareto_trap`` alert is then right to fire before the onset.

What it shows: the aggregate satisfaction stays inside its historical band, while
tierwatch pages for the cheap tier (support contacts in the top score band first),
with no quality alert in the 20 days before the onset. The detection delay is printed.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from pipeline.core.quality import wilson_interval
from pipeline.schemas import Alert
from pipeline.settings import Settings
from tests.sim_feed import QUALITY_KINDS, monitored

pytestmark = pytest.mark.slow  # the incident simulated and replayed: 47 s on 2026-12-04

DAY = 86400.0
HOUR = 3600.0
RATE = 0.2  # routing events per second: 17,280 requests a day
SEED = 7
ONSET_DAY = 21.0
DAYS = ONSET_DAY + 10
# Defended bound on the delay to the first cheap-tier quality alert at RATE: 44 h for
# this seed (34-51 h over seeds 1-3). At this rate the cohort's first day brings only a
# few dozen extra support contacts, too few for the hourly contact CUSUM to page before
# the 1-day window does. With more traffic it pages first: at 2 events/s (172,800
# requests a day) the first alert comes 22 h after the onset (19-26 h over seeds 7, 1, 2),
# from the CUSUM. tests/benchmarks/test_quality_delay_benchmark.py measures the delay by
# rate, with the false alarms before the onset and over 60 no-change days.
MAX_DELAY_H = 60.0


@pytest.fixture(scope="module")
def incident() -> dict[str, Any]:
    started = time.perf_counter()
    monitor, sim, alerts = monitored("pareto-trap", Settings(support_contact_cost_usd=3.0),
                                     rate=RATE, seed=SEED, days=DAYS)
    truth = sim.truth()
    return {"monitor": monitor, "alerts": alerts, "truth": truth,
            "router": truth["router_id"], "onset": float(truth["changes"][0]["onset_epoch"]),
            "start": float(truth["start_epoch"]), "seconds": time.perf_counter() - started,
            "events": sum(monitor.counts.routed.values())
            + sum(monitor.counts.feedback.values())}


def _firing(alerts: list[Alert]) -> list[Alert]:
    return sorted((a for a in alerts if a.state == "firing"), key=lambda a: a.ts)


def test_scenario_is_the_incident(incident: dict[str, Any]) -> None:
    truth = incident["truth"]
    assert truth["changes"][0]["onset_day"] == ONSET_DAY
    pre = [d for d in truth["daily"] if d["day"] < ONSET_DAY]
    cheap_share = sum(d["cheap_share"] for d in pre) / len(pre)
    down_per_1000 = sum(d["thumbs_down_per_1000"] for d in pre) / len(pre)
    equivalent = sum(d["tiers"]["cheap"]["equivalent_rate"] for d in pre) / len(pre)
    print(f"\npre-onset: cheap share {cheap_share:.1%}, thumbs-down {down_per_1000:.2f}/1000 "
          f"requests, cheap equivalent on {equivalent:.1%}")
    assert 0.60 < cheap_share < 0.70
    assert 2.0 < down_per_1000 < 4.0
    assert 0.92 < equivalent < 0.96


def test_aggregate_satisfaction_stays_in_its_historical_band(incident: dict[str, Any]) -> None:
    """The dashboard's view: thumbs over 7 days, all tiers together."""
    history = incident["monitor"].history[incident["router"]]
    onset, start = incident["onset"], incident["start"]
    pre = [s["aggregate"] for s in history
           if s["aggregate"] and start + 7 * DAY < s["ts"] < onset]
    post = [(s["ts"], s["aggregate"]) for s in history if s["aggregate"] and s["ts"] >= onset]
    assert len(pre) > 24 * 10 and len(post) > 24 * 9
    # its 99 % interval band: what the dashboard's own error bars spanned before the onset
    bounds = [wilson_interval(a["value"] * a["n"], a["n"], 0.99) for a in pre]
    lo, hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
    values = [a["value"] for a in pre]
    low_post = min(post, key=lambda p: p[1]["value"])
    print(f"\naggregate 7d thumbs satisfaction before the onset {min(values):.4f}–"
          f"{max(values):.4f} (99% band {lo:.4f}–{hi:.4f}); after it "
          f"{low_post[1]['value']:.4f}–{max(a['value'] for _, a in post):.4f} "
          f"(lowest {(low_post[0] - onset) / HOUR:+.0f} h)")
    outside = [(ts, a["value"]) for ts, a in post if not lo <= a["value"] <= hi]
    assert not outside, f"the aggregate left its 99% band: {outside[:3]}"


def test_no_quality_alert_in_the_20_days_before_the_onset(incident: dict[str, Any]) -> None:
    onset = incident["onset"]
    before = [a for a in _firing(incident["alerts"])
              if onset - 20 * DAY <= a.ts.timestamp() < onset]
    quality = [a for a in before if a.kind in QUALITY_KINDS]
    others = sorted({(a.kind, a.tier) for a in before} - {(a.kind, a.tier) for a in quality})
    print(f"\nbefore the onset: {len(quality)} quality alerts; other alerts firing: {others}")
    assert not quality, [(a.kind, a.tier, a.ts.isoformat(), a.summary) for a in quality]


def test_cheap_tier_pages_and_detection_delay(incident: dict[str, Any]) -> None:
    onset = incident["onset"]
    after = [a for a in _firing(incident["alerts"]) if a.ts.timestamp() >= onset]
    first: dict[tuple[str, str | None, str], Alert] = {}
    for a in after:
        first.setdefault((a.kind, a.tier, a.window), a)
    per_day = RATE * DAY
    print(f"\npareto-trap, seed {SEED}, {RATE} routing events/s ({per_day:,.0f} requests/day), "
          f"{incident['events']:,} events in {incident['seconds']:.0f} s; onset "
          f"{incident['truth']['changes'][0]['onset_ts']}")
    print(f"{'alert':<24} {'tier':<8} {'window':<6} {'delay (h)':>9}  summary")
    for (kind, tier, window), a in first.items():
        print(f"{kind:<24} {tier or '-':<8} {window:<6} "
              f"{(a.ts.timestamp() - onset) / HOUR:>9.0f}  {a.summary}")

    cheap = [a for a in after if a.tier == "cheap"]
    kinds = {a.kind for a in cheap}
    assert kinds & {"tier_quality_drop", "boundary_degradation"}, kinds
    assert "support_contact_rise" in kinds, kinds
    quality = [a for a in cheap if a.kind in QUALITY_KINDS]
    delay_h = (quality[0].ts.timestamp() - onset) / HOUR
    contacts = next(a for a in cheap if a.kind == "support_contact_rise")
    print(f"detection delay: {delay_h:.0f} h to the first cheap-tier quality alert "
          f"({quality[0].kind}, {quality[0].window}); a tier-aware daily dashboard needs "
          "≥ 24 h, the incident team needed ~13 weeks (~2,200 h)")
    assert delay_h <= MAX_DELAY_H
    assert (contacts.ts.timestamp() - onset) / HOUR <= MAX_DELAY_H
    # the page names the score band where the cohort lands (it looks simple: top scores)
    # and says the aggregate hides it
    band = contacts.statistics["test"]["band"]
    assert band is not None and band >= 8, contacts.summary
    assert contacts.statistics["aggregate_hides_it"]
