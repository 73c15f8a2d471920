"""The metrics catalog (deploy/metrics.md) against its users and its source.

Every PromQL expression in the Grafana dashboard and the alert rules may name only
metrics, and select only labels, of the catalog. The catalog names exactly the metrics
`WorkerMetrics` registers, with their types and labels. Its last column names exactly
the rules that read each metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from pipeline.stream.metrics import MonitorCollector, WorkerMetrics

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "deploy" / "metrics.md"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"


# ---------------------------------------------------------------- the catalog
@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    labels: frozenset[str]
    rules: frozenset[str]

    @property
    def family(self) -> str:
        """The name prometheus_client gives the family: counters lose ``_total``."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def series(self) -> frozenset[str]:
        """The series names a query can select."""
        if self.type == "counter":
            return frozenset({self.name, f"{self.family}_created"})
        if self.type == "histogram":
            return frozenset(f"{self.name}{s}" for s in ("_bucket", "_sum", "_count"))
        return frozenset({self.name})

    def series_labels(self, series: str) -> frozenset[str]:
        return self.labels | {"le"} if series.endswith("_bucket") else self.labels


def _catalog() -> dict[str, Entry]:
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| ([^|]*) \| [^|]* \| ([^|]*) \|$",
                      CATALOG.read_text(), re.M)
    entries = {name: Entry(name, kind, frozenset(re.findall(r"`(\w+)`", labels)),
                           frozenset(re.findall(r"`(\w+)`", rules)))
               for name, kind, labels, rules in rows}
    assert len(entries) == len(rows), "a metric is listed twice"
    return entries


CATALOG_ENTRIES = _catalog()
SERIES = {s: e for e in CATALOG_ENTRIES.values() for s in e.series}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})


def test_the_catalog_parses() -> None:
    assert len(CATALOG_ENTRIES) >= 20
    assert CATALOG_ENTRIES["up"].labels == {"job", "instance"}
    for entry in CATALOG_ENTRIES.values():
        assert entry.type in {"counter", "gauge", "histogram"}, entry.name
        assert entry.type != "counter" or entry.name.endswith("_total"), entry.name


# ---------------------------------------------------------------- PromQL
KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                      "group_right", "bool", "offset", "inf", "nan"})


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """``(metric, matcher labels)`` of every vector selector with braces.

    >>> [(name, sorted(labels)) for name, labels in selectors('rate(a{x="1", y=~"a|b"}[5m]) / b')]
    [('a', ['x', 'y'])]
    """
    for name, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", _strip_strings(expr)):
        yield name, set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", body))


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers that are not functions or keywords.

    >>> sorted(metric_names('sum by (le) (rate(x_bucket{a="b"}[$__rate_interval])) '
    ...                     '/ ignoring (t) group_left sum(y_total offset 5m) > 1e3'))
    ['x_bucket', 'y_total']
    >>> metric_names('time() - absent(up{job="tierwatch"}) or vector(0)')
    {'up'}
    """
    expr = _strip_strings(expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    # Not after a digit, a dot or `$` (1e3, 5m, $__interval); not a function call.
    idents = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", expr)
    return {i for i in idents if i.lower() not in KEYWORDS}


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by``/``without``/``on``/``ignoring``/``group_*`` clauses."""
    clauses = re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                         _strip_strings(expr))
    return {label for clause in clauses for label in re.findall(r"\w+", clause)}


# ---------------------------------------------------------------- expressions in use
def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _template_query(var: dict[str, Any]) -> str:
    query = var.get("query", "")
    return query.get("query", "") if isinstance(query, dict) else query


def dashboard_expressions() -> list[tuple[str, str]]:
    """``(where, PromQL)`` for every panel target, annotation and variable query."""
    doc = json.loads(DASHBOARD.read_text())
    panels = [*doc["panels"], *(p for row in doc["panels"] for p in row.get("panels", []))]
    found = [(f"panel {panel['title']!r} {target['refId']}", target["expr"])
             for panel in panels for target in panel.get("targets", [])]
    found += [(f"annotation {a['name']!r}", a["expr"])
              for a in doc["annotations"]["list"] if "expr" in a]
    # Nothing elsewhere: a query this walk misses would go unchecked.
    assert len(found) == sum(key == "expr" for key, _ in _walk(doc))
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = _template_query(var)
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: unsupported query {query!r}"
        found.append((f"variable {var['name']}", m.group(1)))
        # The label read must be one the metric has.
        (series,) = metric_names(m.group(1))
        assert m.group(2) in SERIES[series].series_labels(series), var["name"]
    return found


def rule_expressions() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(rule["alert"], rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


EXPRESSIONS = dashboard_expressions() + rule_expressions()


def test_the_dashboard_has_queries() -> None:
    assert len(dashboard_expressions()) > 30


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_queries_name_only_catalog_metrics(where: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{where}: no metric in {expr!r}"
    unknown = names - SERIES.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not in deploy/metrics.md: {expr!r}"


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_queries_select_only_catalog_labels(where: str, expr: str) -> None:
    # Unknown metrics are test_queries_name_only_catalog_metrics' to report.
    for series, labels in selectors(expr):
        if series in SERIES:
            allowed = SERIES[series].series_labels(series) | TARGET_LABELS
            assert labels <= allowed, f"{where}: {series} has no {sorted(labels - allowed)}"
    known = set().union(*(SERIES[s].series_labels(s) for s in metric_names(expr) if s in SERIES))
    unknown = grouping_labels(expr) - known - TARGET_LABELS
    assert not unknown, f"{where}: grouping by {sorted(unknown)}, which no metric has"


def test_catalog_names_the_rules_that_read_each_metric() -> None:
    readers: dict[str, set[str]] = {name: set() for name in CATALOG_ENTRIES}
    for alert, expr in rule_expressions():
        for series in metric_names(expr):
            readers[SERIES[series].name].add(alert)
    documented = {name: set(e.rules) for name, e in CATALOG_ENTRIES.items()}
    assert documented == readers


# ---------------------------------------------------------------- the source
def _worker_metrics() -> list[MetricWrapperBase]:
    metrics = WorkerMetrics(CollectorRegistry())
    return [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]


def test_catalog_matches_the_registered_metrics() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    registered = {family.name: family.type for family in registry.collect()}
    documented = {e.family: e.type for e in CATALOG_ENTRIES.values() if e.name != "up"}
    missing = sorted(documented.keys() - registered.keys())
    extra = sorted(registered.keys() - documented.keys())
    assert not missing, f"in deploy/metrics.md but not registered by WorkerMetrics: {missing}"
    assert not extra, f"registered by WorkerMetrics but not in deploy/metrics.md: {extra}"
    assert registered == documented


def test_catalog_labels_match_the_registered_metrics() -> None:
    by_family = {e.family: e for e in CATALOG_ENTRIES.values()}
    for metric in _worker_metrics():
        # _name and _labelnames: prometheus_client has no public accessor for the labels
        # of a metric without children.
        entry = by_family.get(metric._name)
        if entry is not None:
            assert set(metric._labelnames) == entry.labels, metric._name
    # the families read from the monitor at scrape time (MonitorCollector)
    for family in MonitorCollector.families().values():
        assert set(family.labels) == by_family[family.name].labels, family.name


# ---------------------------------------------------------------- the dashboard itself
def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for p in panels:
        pos = p["gridPos"]
        assert 0 <= pos["x"] <= pos["x"] + pos["w"] <= 24, p["title"]


def test_dashboard_shows_what_the_design_asks_for() -> None:
    doc = json.loads(DASHBOARD.read_text())
    exprs = " ".join(expr for _, expr in dashboard_expressions())
    for metric in ("tierwatch_satisfaction_ratio", "tierwatch_drift_psi", "tierwatch_drift_ks",
                   "tierwatch_threshold", "tierwatch_economics_usd_per_day",
                   "tierwatch_dead_letters_total", "tierwatch_consumer_lag_messages"):
        assert metric in exprs, metric
    # Per-tier satisfaction next to the aggregate: one panel repeated per tier, and tier="all".
    assert any(p.get("repeat") == "tier" for p in doc["panels"])
    assert 'tier="all"' in exprs
    assert {v["name"] for v in doc["templating"]["list"]} >= {"datasource", "router", "tier"}


def test_provisioning_points_at_the_dashboard() -> None:
    datasource = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "tierwatch.yml").read_text())
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboard.json:{dashboards_dir}/tierwatch.json:ro" in mounts
