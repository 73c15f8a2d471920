"""What the monitor knows reaches Prometheus at scrape time, and nothing stale does.

:class:`~pipeline.stream.metrics.MonitorCollector` reads the current monitor at every
scrape, so a router, a label set or a whole monitor that is gone is no longer exported
(a ``Gauge`` child would keep showing its last value until removed by hand).
"""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.bootstrap import bootstrap
from pipeline.core.monitor import Monitor
from pipeline.settings import Settings
from pipeline.stream.processor import Processor

PSI = {"tier": "cheap", "window": "1h", "signal": "confidence"}


def _series(p: Processor) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(p.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("tierwatch_drift_psi")
            or s.name.startswith("tierwatch_support_contact_ratio")}


def _routers(series: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {dict(labels)["router_id"] for _, labels in series}


def _monitor_with(*routers: str) -> Monitor:
    monitor = Monitor()
    for i, r in enumerate(routers):
        monitor.router(r, 0.0).gauges = [
            ("drift_psi", dict(PSI), 0.1 * (i + 1)),
            ("support_contact_ratio", {"tier": "cheap", "window": "1d"}, 0.01 * (i + 1))]
    return monitor


def test_a_router_that_vanishes_is_no_longer_exported() -> None:
    monitor = _monitor_with("a", "b")
    p = bootstrap(Settings(), monitor=monitor, clock=None)
    series = _series(p)
    assert _routers(series) == {"a", "b"}
    assert series[("tierwatch_drift_psi", tuple(sorted({**PSI, "router_id": "b"}.items())))] \
        == 0.2

    del monitor.routers["b"]
    series = _series(p)
    assert _routers(series) == {"a"}, "router b's last values are still exported"
    assert len(series) == 2


def test_a_label_set_that_vanishes_is_no_longer_exported_and_values_are_live() -> None:
    monitor = _monitor_with("a")
    p = bootstrap(Settings(), monitor=monitor, clock=None)
    state = monitor.routers["a"]
    state.gauges = [g for g in state.gauges if g[0] != "support_contact_ratio"]
    state.gauges = [(name, labels, 0.7) for name, labels, _ in state.gauges]
    series = _series(p)
    assert list(series.values()) == [0.7]
    assert {name for name, _ in series} == {"tierwatch_drift_psi"}


def test_the_current_monitor_is_read_after_it_is_replaced() -> None:
    """A restore replaces the processor's monitor: the old one's series go with it."""
    p = bootstrap(Settings(), monitor=_monitor_with("old"), clock=None)
    assert _routers(_series(p)) == {"old"}
    p.monitor = _monitor_with("new")
    assert _routers(_series(p)) == {"new"}


def test_routers_over_the_cap_share_other_with_one_sample_per_series() -> None:
    """Folded routers must not export the same series twice (a scrape would fail)."""
    p = bootstrap(Settings(), monitor=_monitor_with("a", "b", "c"), clock=None)
    p.metrics.router.limit = 1
    text = generate_latest(p.metrics.registry).decode()
    psi = [line for line in text.splitlines() if line.startswith("tierwatch_drift_psi{")]
    assert len(psi) == len(set(line.rsplit(" ", 1)[0] for line in psi)) == 2
    assert {'router_id="a"' in line for line in psi} == {True, False}


def test_no_watermark_sample_before_the_first_event() -> None:
    p = bootstrap(Settings(), clock=None)
    text = generate_latest(p.metrics.registry).decode()
    assert "# TYPE tierwatch_watermark_timestamp_seconds gauge" in text
    assert "\ntierwatch_watermark_timestamp_seconds " not in text
    p.monitor.watermark = 1.7e9
    text = generate_latest(p.metrics.registry).decode()
    assert "\ntierwatch_watermark_timestamp_seconds 1.7e+09" in text
