"""A plausible, seeded 120-day :class:`ReportData` of a router falling into the Pareto trap.

The story: a cost-saving router runs fine for ten weeks. Then the classifier's inputs
drift (a product launch brings new kinds of questions) and its scores inflate: more,
harder queries go to the cheap tier. Savings go up; the aggregate satisfaction the team
watches barely moves (unhappy cheap-tier users call support instead of voting), while
the cheap tier's own satisfaction falls and support contacts climb. tierwatch flags the
drift within days, the cheap tier's quality drop and the trap, and recommends raising
``cheap_above``; once applied, the cheap tier recovers. Early on, a feedback-widget outage
starves the capable tier's feedback for a while.

Used by the tests and the docs; nothing here is measured.

Examples
--------
>>> data = example_report_data()
>>> len(data.series), data.tier_names, data.router_id
(120, ['cheap', 'capable'], 'support')
>>> example_report_data() == data
True
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from pipeline.report.data import (
    BandQuality,
    CohortCurve,
    CohortPanel,
    CohortReport,
    DriftPoint,
    EconomicsPoint,
    HistogramSnapshot,
    Rate,
    ReportData,
    SegmentReport,
    SegmentRow,
    Snapshot,
    ThresholdPoint,
    TierSnapshot,
)
from pipeline.report.summary import fmt_ts, headline_from, timeline_from
from pipeline.schemas import Alert

START = 1767225600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
ROUTER = "support"
REQUESTS_PER_DAY = 1.2e6
COST = {"cheap": 0.0015, "capable": 0.012}
USD_PER_SUPPORT_CONTACT = 2.5
USD_PER_QUALITY_POINT = 0.02
Z_POWER = 1.96 + 0.84  # two-sided 5% test, 80% power
MDD_TARGET = 0.05

Array = np.ndarray


def wilson(successes: float, n: float, z: float = 1.96) -> Rate:
    """Wilson score interval of a binomial proportion.

    >>> r = wilson(80, 100)
    >>> round(r.lo, 3), round(r.hi, 3)
    (0.711, 0.867)
    """
    if n <= 0:
        return Rate(value=0.0, lo=0.0, hi=1.0, n=0.0)
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return Rate(value=float(p), lo=float(max(c - h, 0.0)), hi=float(min(c + h, 1.0)), n=float(n))


def _ramp(t: Array, start: float, days: float) -> Array:
    return np.clip((t - start) / (days * DAY), 0.0, 1.0)


def _episodes(ts: Array, values: Array, fire: float, clear: float,
              ) -> list[tuple[int, int | None]]:
    """Index spans where ``values`` rose to ``fire`` until they fell below ``clear``."""
    out: list[tuple[int, int | None]] = []
    start: int | None = None
    for i, v in enumerate(values):
        if start is None and v >= fire:
            start = i
        elif start is not None and v < clear:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, None))
    return out


@dataclass(frozen=True)
class _Spec:
    kind: str
    severity: str
    tier: str | None
    window: str
    stat: str


def _alerts(spec: _Spec, ts: Array, values: Array, fire: float, clear: float) -> list[Alert]:
    key = f"{ROUTER}|{spec.kind}|{spec.tier}|{spec.window}".encode()
    alert_id = hashlib.sha256(key).hexdigest()[:16]
    where = f"{spec.tier} tier" if spec.tier else "router"
    out = []
    for start, end in _episodes(ts, values, fire, clear):
        for i, state in ((start, "firing"), (end, "resolved")):
            if i is None:
                continue
            verb = "crossed" if state == "firing" else "back under"
            out.append(Alert(
                alert_id=alert_id, kind=spec.kind, state=state,  # type: ignore[arg-type]
                severity=spec.severity,  # type: ignore[arg-type]
                router_id=ROUTER, tier=spec.tier, window=spec.window,
                ts=datetime.fromtimestamp(float(ts[i]), UTC),
                statistics={spec.stat: round(float(values[i]), 4), "fire_at": fire,
                            "clear_below": clear},
                summary=f"{where}: {spec.stat} {_num(values[i])} {verb} "
                        f"{_num(fire if state == 'firing' else clear)} ({spec.window})",
                runbook=f"deploy/runbook.md#{spec.kind.replace('_', '-')}"))
    return out


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _rolling(x: Array, k: int = 7) -> Array:
    """Mean over the last ``k`` values (fewer at the start)."""
    return _wsum(x, k) / np.minimum(np.arange(1, len(x) + 1), k)


def _wsum(x: Array, k: int = 7) -> Array:
    """Sum over the last ``k`` values: a ``k``-evaluation window."""
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    return c[idx] - c[np.maximum(idx - k, 0)]


def _thresholds(days: Array) -> tuple[list[ThresholdPoint], list[ThresholdPoint]]:
    steps_rec = [(0, 0.70, 0.50), (80, 0.75, 0.52), (85, 0.80, 0.55)]
    steps_app = [(0, 0.70, 0.50), (86, 0.75, 0.52), (92, 0.80, 0.55)]

    def at(steps: list[tuple[int, float, float]], d: float) -> ThresholdPoint:
        _, hi, lo = [s for s in steps if s[0] <= d][-1]
        return ThresholdPoint(cheap_above=hi, capable_below=lo, exploration_rate=0.10)

    return [at(steps_rec, d) for d in days], [at(steps_app, d) for d in days]


def _drift_scores(u: Array, m: float) -> Array:
    """Scores under drift of magnitude ``m``: mid-range queries look simpler than they are."""
    return np.clip(u + 0.16 * m * np.sin(np.pi * u), 0.0, 1.0)


def _signals(rng: np.random.Generator, d: Array, onset: float) -> dict[str, Array]:
    """Daily truth and observations of the story (see the module docstring)."""
    n = len(d)
    ts = START + d * DAY
    m = _ramp(ts, onset, 5.0)
    fix1, fix2 = _ramp(ts, START + 86 * DAY, 2.0), _ramp(ts, START + 92 * DAY, 2.0)
    week = 0.006 * np.sin(2 * np.pi * d / 7.0)
    share = 0.58 + 0.12 * m - 0.06 * fix1 - 0.06 * fix2 + rng.normal(0, 0.004, n)
    p = {"cheap": 0.865 - 0.125 * m + 0.05 * fix1 + 0.065 * fix2 + week,
         "capable": 0.905 - 0.012 * m + week,
         "aggregate": 0.888 - 0.010 * m + 0.004 * fix2 + week}
    outage = (d >= 15) & (d < 27)  # feedback widget down for the capable tier's app
    votes = {"cheap": rng.poisson(380, n), "capable": rng.poisson(np.where(outage, 28, 300)),
             "aggregate": rng.poisson(1500, n)}
    out = {"ts": ts, "m": m, "share": share,
           "req_cheap": REQUESTS_PER_DAY * share, "req_capable": REQUESTS_PER_DAY * (1 - share)}
    for t in p:
        out[f"n_{t}"] = _wsum(votes[t])
        out[f"k_{t}"] = _wsum(rng.binomial(votes[t], p[t]))
        out[f"p_{t}"] = p[t]
    support = {"cheap": 0.0021 + 0.0036 * m - 0.0015 * fix1 - 0.0017 * fix2,
               "capable": 0.0014 + 0.0001 * m}
    for t, rate in support.items():
        daily = rng.binomial(out[f"req_{t}"].astype(int), rate)
        out[f"s_{t}"], out[f"r_{t}"] = _wsum(daily), _wsum(out[f"req_{t}"])
    for t in ("cheap", "capable"):
        q = p[t]
        out[f"mdd_{t}"] = Z_POWER * np.sqrt(2 * q * (1 - q) / np.maximum(out[f"n_{t}"], 1))
    for key, size in (("router", 0.17), ("cheap", 0.11), ("capable", 0.05)):
        out[f"psi_{key}"] = 0.004 + size * m + np.abs(rng.normal(0, 0.003, n))
        out[f"ks_{key}"] = 0.012 + 0.45 * size * m + np.abs(rng.normal(0, 0.004, n))
    sat = {t: out[f"k_{t}"] / np.maximum(out[f"n_{t}"], 1) for t in ("cheap", "capable")}
    rate_cap = out["s_capable"] / out["r_capable"]
    out["savings"] = out["req_cheap"] * (COST["capable"] - COST["cheap"])
    out["hidden"] = (USD_PER_SUPPORT_CONTACT * (out["s_cheap"] - out["r_cheap"] * rate_cap) / 7
                     + USD_PER_QUALITY_POINT * out["req_cheap"] * (sat["capable"] - sat["cheap"]))
    out["net"] = out["savings"] - out["hidden"]
    out["cost"] = out["req_cheap"] * COST["cheap"] + out["req_capable"] * COST["capable"]
    out["sat_cheap"] = sat["cheap"]
    out["support_ratio"] = (out["s_cheap"] / out["r_cheap"]) / rate_cap
    return out


def _series(sig: dict[str, Array], rec: list[ThresholdPoint], app: list[ThresholdPoint],
            ) -> list[Snapshot]:
    def tier(t: str, i: int, share: float) -> TierSnapshot:
        return TierSnapshot(satisfaction=wilson(sig[f"k_{t}"][i], sig[f"n_{t}"][i]),
                            support_rate=wilson(sig[f"s_{t}"][i], sig[f"r_{t}"][i]),
                            mdd=float(sig[f"mdd_{t}"][i]), share=share)

    def r2(x: float) -> float:
        return round(float(x), 2)

    return [
        Snapshot(
            ts=float(sig["ts"][i]),
            aggregate=wilson(sig["k_aggregate"][i], sig["n_aggregate"][i]),
            tiers={"cheap": tier("cheap", i, float(sig["share"][i])),
                   "capable": tier("capable", i, float(1 - sig["share"][i]))},
            drift={k: DriftPoint(psi=round(float(sig[f"psi_{k}"][i]), 5),
                                 ks=round(float(sig[f"ks_{k}"][i]), 5), window="1d")
                   for k in ("router", "cheap", "capable")},
            recommended=rec[i], applied=app[i],
            economics=EconomicsPoint(savings_per_day=r2(sig["savings"][i]),
                                     hidden_cost_per_day=r2(sig["hidden"][i]),
                                     net_value_per_day=r2(sig["net"][i]),
                                     cost_per_day=r2(sig["cost"][i])),
        )
        for i in range(len(sig["ts"]))
    ]


def _all_alerts(sig: dict[str, Array]) -> list[Alert]:
    ts = sig["ts"]
    ref = float(np.mean(sig["sat_cheap"][:60]))
    alerts = [
        *_alerts(_Spec("confidence_drift", "page", None, "1d", "psi"), ts, sig["psi_router"],
                 0.045, 0.03),
        *_alerts(_Spec("tier_confidence_drift", "ticket", "cheap", "1d", "psi"), ts,
                 sig["psi_cheap"], 0.045, 0.03),
        *_alerts(_Spec("tier_quality_drop", "page", "cheap", "7d", "drop"), ts,
                 ref - sig["sat_cheap"], 0.035, 0.02),
        *_alerts(_Spec("support_contact_rise", "ticket", "cheap", "7d", "ratio"), ts,
                 sig["support_ratio"], 2.1, 1.9),
        *_alerts(_Spec("pareto_trap", "page", None, "7d", "net_loss_per_day"), ts,
                 -_rolling(sig["net"]), 0.0, -500.0),
        *_alerts(_Spec("feedback_starvation", "info", "capable", "7d", "mdd"), ts,
                 sig["mdd_capable"], MDD_TARGET, MDD_TARGET * 0.9),
    ]
    return sorted(alerts, key=lambda a: (a.ts, a.alert_id))


# segment values of the cheap tier: (key, value, share of the tier, reference contacts
# per request, rate multiplier reached after the onset, share of the excess)
_SEGMENTS = (("intent", "billing", 0.21, 0.0042, 3.9, 0.68),
             ("plan", "free", 0.48, 0.0051, 1.5, 0.17),
             ("locale", "en-US", 0.52, 0.0047, 1.3, 0.09),
             ("intent", "how_to", 0.31, 0.0038, 1.05, 0.04),
             ("product", "invoices", 0.12, 0.0044, 1.2, 0.02),
             ("intent", "account", 0.19, 0.0049, 1.0, 0.0))


def _segments(rng: np.random.Generator, ts: Array, onset: float,
              requests_per_week: float) -> SegmentReport:
    ramp = _ramp(ts, onset, 5.0)
    rows = []
    series: dict[str, list[tuple[float, float | None]]] = {}
    for key, value, share, ref, top, excess in _SEGMENTS:
        n = share * requests_per_week
        rate = ref * (1 + (top - 1) * ramp)
        noisy = rng.poisson(rate * n) / n
        series[f"{key}={value}"] = [(float(t), round(float(r), 6)) for t, r in zip(ts, noisy,
                                                                                  strict=True)]
        rows.append(SegmentRow(key=key, value=value, requests=round(n), share=share,
                               rate=round(float(noisy[-1]), 6), reference_rate=ref,
                               excess_share=excess, rate_ratio=round(float(noisy[-1]) / ref, 2),
                               significant=excess >= 0.05))
    return SegmentReport(tier="cheap", source="attribution of the first support_contact_rise "
                         "on the cheap tier (synthetic example)", rows=rows, series=series)


def _cohorts(rng: np.random.Generator, onset: float, end: float) -> CohortReport:
    """Weekly cohorts whose 90-day surveys come in 84-96 days later; those after the
    onset (the rollout) get more bad surveys. No cohort is six months old yet."""
    first = START - 3 * DAY  # a Monday
    change_ts = onset
    curves = []
    for k in range(int((end - first) // (7 * DAY))):
        ws = first + k * 7 * DAY
        maturity = int((end - ws - 7 * DAY) // DAY)
        if maturity < 0:
            continue
        after = ws + 7 * DAY > change_ts
        rate = 0.10 + (0.05 if after else 0.0)
        pts: list[tuple[float, float]] = []
        n = 0
        bad = 0
        for age in range(84, min(maturity, 120) + 1):
            got = int(rng.poisson(150)) if age <= 96 else 0
            n += got
            bad += int(rng.binomial(got, rate)) if got else 0
            if n and (age % 2 == 0 or age == min(maturity, 120)):
                pts.append((float(age), round(bad / n, 4)))
        flagged = "ticket" if after and maturity >= 88 else None
        curves.append(CohortCurve(week_start=ws, maturity_days=maturity, requests=84_000.0,
                                  cheap_share=0.62 if after else 0.55, points=pts,
                                  flagged=flagged, before_change=not after))
    survey = CohortPanel(outcome="survey", cohorts=curves,
                         ipw={"cheap": 0.16, "capable": 0.10, "effect": 0.06, "se": 0.012,
                              "n_cheap": 900.0, "n_capable": 4100.0})
    retention = CohortPanel(outcome="retention", cohorts=[
        CohortCurve(week_start=c.week_start, maturity_days=c.maturity_days,
                    requests=c.requests, cheap_share=c.cheap_share,
                    before_change=c.before_change) for c in curves])
    return CohortReport(panels=[survey, retention], change_ts=change_ts,
                        change="thresholds cheap_above=0.35 capable_below=0.33 "
                               "exploration_rate=0.1, classifier v2 (synthetic example)")


def _histogram(u: Array, h_ts: float, onset: float) -> HistogramSnapshot:
    edges = np.quantile(u, np.linspace(0, 1, 11))
    edges[0], edges[-1] = 0.0, 1.0
    live_u = _drift_scores(u, float(_ramp(np.array([h_ts]), onset, 5.0)[0]))
    base_p = np.histogram(u, edges)[0] / len(u)
    live_p = np.histogram(live_u, edges)[0] / len(u)
    return HistogramSnapshot(
        ts=h_ts, edges=[round(float(e), 4) for e in edges],
        baseline=[round(float(p), 5) for p in base_p],
        live=[round(float(p), 5) for p in live_p],
        label=f"first drift alert, {fmt_ts(h_ts)} UTC (1d window)")


def _band_quality(rng: np.random.Generator, u: Array, th: ThresholdPoint) -> BandQuality:
    bands = np.quantile(u, np.linspace(0, 1, 9))
    bands[0], bands[-1] = 0.0, 1.0
    rates: dict[str, list[Rate | None]] = {"cheap": [], "capable": []}
    for lo, hi in itertools.pairwise(bands):
        mid = (lo + hi) / 2
        cheap_n = 900 if lo >= th.cheap_above else (70 if hi > th.capable_below else 0)
        cap_n = 0 if lo >= th.cheap_above else (700 if hi <= th.capable_below else 420)
        p_c = float(np.clip(0.42 + 0.50 * mid, 0, 1))
        p_k = float(np.clip(0.92 - 0.03 * mid, 0, 1))
        rates["cheap"].append(wilson(rng.binomial(cheap_n, p_c), cheap_n) if cheap_n else None)
        rates["capable"].append(wilson(rng.binomial(cap_n, p_k), cap_n) if cap_n else None)
    return BandQuality(edges=[round(float(b), 4) for b in bands], tiers=rates, thresholds=th)


def example_report_data(seed: int = 7, days: int = 120, onset_day: float = 70.375,
                        ) -> ReportData:
    """Synthetic but plausible report data; same seed, same data.

    Evaluations are daily; satisfaction, support and economics over 7-day windows,
    drift over 1-day windows.

    Parameters
    ----------
    seed
        Seed of the numpy generator.
    days
        Number of daily evaluations (at least ``onset_day + 10``).
    onset_day
        Days after 2026-01-01 at which the drift starts.
    """
    rng = np.random.default_rng(seed)
    warm = 6  # a week of history before the first evaluation, so windows start full
    d = np.arange(-warm, days, dtype=float) + 1.0
    onset = START + onset_day * DAY
    sig = {k: v[warm:] for k, v in _signals(rng, d, onset).items()}
    d = d[warm:]
    rec, app = _thresholds(d)
    series = _series(sig, rec, app)
    alerts = _all_alerts(sig)
    first_drift = next(a for a in alerts if a.kind == "confidence_drift")
    u = rng.beta(2.3, 1.7, 40_000)
    return ReportData(
        title="Support router · 120-day replay",
        router_id=ROUTER,
        generated_from=f"pipeline.report.example.example_report_data(seed={seed})",
        onset_ts=onset,
        timeline=timeline_from(series, alerts, onset,
                               "onset: product launch, classifier inputs start to drift"),
        headline=headline_from(series, alerts, onset),
        series=series,
        alerts=alerts,
        drift_histogram=_histogram(u, first_drift.ts.timestamp(), onset),
        band_quality=_band_quality(rng, u, app[int(onset_day) + 8]),
        segments=_segments(rng, sig["ts"], onset, 7 * 12_000.0 * 0.6),
        delayed=_cohorts(rng, START + (onset_day - 49) * DAY, START + days * DAY),
    )
