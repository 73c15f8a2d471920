"""``tierwatch demo``: the Pareto trap, simulated, replayed through the monitor, reported.

It prints a short timeline of what tierwatch saw and, beside it, what the single
aggregate dashboard showed on those days, then writes the HTML report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bootstrap import build_monitor
from pipeline.core.monitor import Monitor
from pipeline.replay import Replay, read_alerts
from pipeline.report.build import report_data
from pipeline.report.render import write_report
from pipeline.schemas import Alert, Baseline
from pipeline.settings import Settings
from pipeline.sim import Simulator
from pipeline.sim.io import write_baseline, write_jsonl, write_truth

DAY = 86400.0


@dataclass(frozen=True)
class DemoResult:
    out_dir: Path
    report: Path
    timeline: list[str]
    alerts: list[Alert]
    summary: dict[str, Any]


def simulate(scenario: str, out_dir: Path, *, days: float, rate: float, seed: int,
             gzip: bool = False) -> tuple[Path, Path, list[Baseline], dict[str, Any]]:
    """Write ``routing.jsonl``, ``feedback.jsonl``, ``baseline.json`` and ``truth.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sim = Simulator(scenario, rate=rate, seed=seed)
    baseline = sim.baseline()
    ext = ".jsonl.gz" if gzip else ".jsonl"
    routing, feedback = out_dir / f"routing{ext}", out_dir / f"feedback{ext}"
    retrains = out_dir / "baselines.jsonl"
    write_jsonl(sim.run(days), routing, feedback, gzip=gzip, baselines_path=retrains)
    write_baseline(out_dir / "baseline.json", baseline)
    truth = sim.truth()
    write_truth(out_dir / "truth.json", truth)
    return routing, feedback, [baseline], truth


def onset(truth: dict[str, Any]) -> tuple[float | None, str]:
    changes = truth.get("changes") or []
    if not changes:
        return None, "onset"
    first = min(changes, key=lambda c: c["onset_epoch"])
    return float(first["onset_epoch"]), f"onset: {first.get('description', first.get('kind'))}"


def _day(ts: float, start: float) -> int:
    return int((ts - start) // DAY) + 1


def story(monitor: Monitor, router_id: str, alerts: list[Alert], start: float,
          onset_ts: float | None) -> Iterator[str]:
    """Timeline lines: tierwatch's view beside the aggregate dashboard's, by day."""
    series = {int(s["ts"] // DAY): s for s in monitor.history.get(router_id, [])}
    pre = [s["aggregate"]["value"] for s in monitor.history.get(router_id, [])
           if s.get("aggregate") and (onset_ts is None or s["ts"] < onset_ts)
           and s["ts"] > start + 7 * DAY]
    lo, hi = (min(pre), max(pre)) if pre else (None, None)

    def dashboard(ts: float) -> str:
        snap = series.get(int(ts // DAY))
        agg = snap.get("aggregate") if snap else None
        if not agg:
            return "dashboard: no data"
        inside = lo is not None and hi is not None and lo <= agg["value"] <= hi
        return (f"dashboard: {agg['value']:.1%} satisfied"
                + (" (inside its usual band)" if inside else " (outside its usual band)"))

    lines: list[tuple[float, str]] = []
    if onset_ts is not None:
        lines.append((onset_ts, f"day {_day(onset_ts, start):>3}: the change begins "
                                "(ground truth)"))
    seen: set[tuple[str, str | None]] = set()
    for a in sorted(alerts, key=lambda a: a.ts):
        k = (a.kind, a.tier)
        if a.state != "firing" or k in seen:
            continue
        seen.add(k)
        ts = a.ts.timestamp()
        tier = f" [{a.tier}]" if a.tier else ""
        lines.append((ts, f"day {_day(ts, start):>3}: {a.kind.replace('_', ' ')}{tier} — "
                          f"{a.summary}  |  {dashboard(ts)}"))
    for rec in monitor.recommendations.values():
        ts = rec.issued_at.timestamp()
        lines.append((ts, f"day {_day(ts, start):>3}: last recommendation #{rec.seq} "
                          f"cheap_above {rec.previous.cheap_above:.2f}→"
                          f"{rec.thresholds.cheap_above:.2f} ({rec.mode})"))
    for _, line in sorted(lines, key=lambda t: t[0]):  # stable: ties keep this order
        yield line


def run_demo(settings: Settings, out_dir: Path, *, scenario: str = "pareto-trap",
             days: float = 120.0, rate: float = 0.1, seed: int = 7,
             progress: bool | None = None) -> DemoResult:
    """Simulate, replay and report; return what was written.

    The simulated support desk is priced at $3 a contact unless configured: at that
    price the router is net positive before the drift and deep in the trap after it,
    the shape of the incident (savings of $100k/month, hidden cost 4–5× that).
    """
    if "support_contact_cost_usd" not in settings.model_fields_set:
        settings = settings.model_copy(update={"support_contact_cost_usd": 3.0})
    data_dir = out_dir / "data"
    routing, feedback, baselines, truth = simulate(scenario, data_dir, days=days, rate=rate,
                                                   seed=seed)
    monitor = build_monitor(settings, record=True)
    replay = Replay(settings, monitor, out_dir)
    result = replay.run(routing, feedback, baselines, progress=progress)
    alerts = read_alerts(out_dir / "alerts.jsonl")
    router_id = baselines[0].router_id
    onset_ts, label = onset(truth)
    data = report_data(monitor, router_id, alerts, onset_ts=onset_ts,
                       generated_from=str(routing), onset_label=label,
                       title=f"{router_id} router · {days:g}-day {scenario} replay")
    if "://" in settings.runbook_base_url:  # a link anyone can click (a path stays relative)
        data = data.model_copy(update={"runbook_base": settings.runbook_base_url})
    report = write_report(data, out_dir / "report.html")
    start = min((s["ts"] for s in monitor.history.get(router_id, [])), default=0.0) - 3600
    timeline = list(story(monitor, router_id, alerts, start, onset_ts))
    summary = {"scenario": scenario, "days": days, "rate": rate, "seed": seed,
               "events": result.events, "seconds": round(result.seconds, 3),
               "outputs": result.outputs, "counts": result.counts,
               "headline": data.headline, "report": data.to_dict()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    return DemoResult(out_dir, report, timeline, alerts, summary)
