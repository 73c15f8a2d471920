"""The figures an alert fired on reach Prometheus: tierwatch_alert_observed / _reference.

A real monitor drifts and fires; the worker's metrics then carry, for each firing alert,
the observed value and its reference as the Alert payload states them, and drop them
when the alert resolves.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from prometheus_client import CollectorRegistry

from pipeline.bootstrap import build_monitor
from pipeline.core.baseline import fit_baseline
from pipeline.core.figures import alert_figures
from pipeline.settings import Settings
from pipeline.stream.metrics import WorkerMetrics
from tests.unit.test_router_isolation import START, _events


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for m in registry.collect()
            for s in m.samples if s.name == name}


def test_firing_alerts_expose_their_figures_and_lose_them_when_resolved() -> None:
    monitor = build_monitor(Settings())
    monitor.set_baseline(fit_baseline("b", "v1", datetime(2026, 2, 1, tzinfo=UTC),
                                      np.random.default_rng(0).beta(3, 2, 50_000)))
    events = _events("b", 1.0, 1, START + 2 * 3600 + 600)
    for lo in range(0, len(events), 2000):
        monitor.observe_routing(events[lo: lo + 2000])
        monitor.drain()
    assert monitor.firing, "the drift should fire"
    registry = CollectorRegistry()
    WorkerMetrics(registry).read_from(lambda: monitor)  # read at each scrape

    observed = _samples(registry, "tierwatch_alert_observed")
    reference = _samples(registry, "tierwatch_alert_reference")
    expected = {}
    for alert in monitor.firing.values():
        for f in alert_figures(alert.kind, alert.window, alert.statistics):
            labels = (("kind", alert.kind), ("quantity", f.quantity), ("router_id", "b"),
                      ("signal", f.signal), ("tier", alert.tier or ""), ("window", f.window))
            expected[labels] = (f.observed, f.reference)
    assert expected and set(observed) == set(expected)
    quoted = 0
    for labels, (obs, ref) in expected.items():
        assert observed[labels] == obs
        assert reference.get(labels) == ref
        # the figures are the ones the alert's summary quotes
        summaries = {a.summary for a in monitor.firing.values()
                     if a.kind == dict(labels)["kind"] and (a.tier or "") == dict(labels)["tier"]}
        if dict(labels)["quantity"] == "cusum":
            assert ref is not None and obs >= ref
            # the sequential test's statistic against its threshold, as the summary says
            assert any(f"statistic {obs:.1f} vs thresholds" in t and f"/ {ref:.1f}" in t
                       for t in summaries), summaries
            quoted += 1
        elif dict(labels)["quantity"] == "ks_distance":
            assert ref is not None and obs >= ref
            assert any(f"KS {obs:.3f}" in t for t in summaries), summaries
            quoted += 1
    assert quoted

    for state in monitor.routers.values():  # everything resolves
        for s in state.alerts.states.values():
            s.firing = False
    monitor.firing.clear()
    assert not _samples(registry, "tierwatch_alert_observed")
    assert not _samples(registry, "tierwatch_alert_reference")
