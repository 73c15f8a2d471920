"""The HTML report: its data contract, its eight plots, determinism and runbook links."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.report import (
    HistogramSnapshot,
    Rate,
    ReportData,
    Snapshot,
    render_report,
    write_report,
)
from pipeline.report.alerts import alert_rows, firing_spans, runbook_anchor, runbook_href
from pipeline.report.example import example_report_data
from pipeline.report.page import fmt_headline
from pipeline.report.render import SECTIONS
from pipeline.report.style import CAPABLE, CHEAP
from pipeline.report.summary import headline_from
from pipeline.schemas import Alert

PLOTS = ["satisfaction", "drift", "histogram", "band_quality", "segments", "thresholds",
         "economics", "cohorts", "mdd", "alerts"]
TIME_PLOTS = ["satisfaction", "drift", "thresholds", "economics", "mdd"]


class _Figures(HTMLParser):
    """Collects the inner HTML of every ``<figure class="plot" data-plot=...>``."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=False)
        self.page = page
        self.found: dict[str, str] = {}
        self._open: tuple[str, int] | None = None
        self._lines = [0]
        for line in page.splitlines(keepends=True):
            self._lines.append(self._lines[-1] + len(line))
        self.feed(page)

    def _offset(self) -> int:
        line, col = self.getpos()
        return self._lines[line - 1] + col

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and "data-plot" in a:
            self._open = (a["data-plot"] or "", self._offset())

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure" and self._open is not None:
            name, start = self._open
            self.found[name] = self.page[start:self._offset()]
            self._open = None


@pytest.fixture(scope="module")
def data() -> ReportData:
    return example_report_data()


@pytest.fixture(scope="module")
def page(data: ReportData) -> str:
    return render_report(data)


@pytest.fixture(scope="module")
def figures(page: str) -> dict[str, str]:
    return _Figures(page).found


def _alert(state: str, ts: str, alert_id: str = "a1", kind: str = "tier_quality_drop",
           tier: str | None = "cheap", runbook: str = "deploy/runbook.md#tier-quality-drop",
           ) -> Alert:
    return Alert(alert_id=alert_id, kind=kind, state=state, severity="page",  # type: ignore[arg-type]
                 router_id="r", tier=tier, window="7d", ts=datetime.fromisoformat(ts),
                 statistics={}, summary=f"{state} at {ts}", runbook=runbook)


# --- the page --------------------------------------------------------------------------


def test_example_data_is_plausible_and_seeded(data: ReportData) -> None:
    assert len(data.series) == 120
    assert data.tier_names == ["cheap", "capable"]
    assert data.onset_ts is not None and data.series[0].ts < data.onset_ts < data.series[-1].ts
    assert {a.kind for a in data.alerts} >= {"confidence_drift", "tier_quality_drop",
                                             "pareto_trap", "feedback_starvation"}
    assert example_report_data(seed=7) == data
    assert example_report_data(seed=8) != data


def test_all_eight_plots_are_present_and_drawn(figures: dict[str, str]) -> None:
    assert list(figures) == PLOTS
    assert [s.plot for s in SECTIONS] == PLOTS
    for name, inner in figures.items():
        assert inner.count("<svg") == 1, name
        assert "nodata" not in inner, name
        assert len(re.findall(r"<path\b", inner)) > 20, name
        box = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', inner)
        assert box and float(box.group(1)) > 300 and float(box.group(2)) > 100, name


def test_nine_numbered_sections_with_titles(page: str) -> None:
    numbers = re.findall(r'<h2><span class="num">(\d)</span>([^<]+)</h2>', page)
    assert [int(n) for n, _ in numbers] == list(range(1, 10))
    assert "The picture of the trap" in numbers[0][1]


def test_time_plots_mark_the_onset_and_shade_alert_spans(figures: dict[str, str]) -> None:
    for name in TIME_PLOTS:
        assert f'id="{name}-onset-0"' in figures[name], name
        assert f'id="{name}-alertspan-0-0"' in figures[name], name
    assert 'id="alerts-onset-0"' in figures["alerts"]


def test_tier_colours_are_consistent(figures: dict[str, str]) -> None:
    for name in ["satisfaction", "drift", "band_quality", "mdd"]:
        assert CHEAP in figures[name] and CAPABLE in figures[name], name


def test_headline_timeline_and_colour_key(page: str, data: ReportData) -> None:
    for key in ("savings_per_day", "hidden_cost_per_day", "net_value_per_day",
                "alerts_firing", "detection_delay_h"):
        assert key in data.headline
        assert fmt_headline(key, data.headline[key])[0] in page, key
    assert page.count("<li") >= len(data.timeline) > 5
    assert "onset: product launch" in page
    assert 'class="keys"' in page


def test_self_contained_without_scripts(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    assert not re.search(r'href="#(?![\w-]+")', page)
    assert not re.search(r"<\?xml|<!DOCTYPE svg", page)


def test_element_ids_are_unique(page: str) -> None:
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    internal = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))
    assert internal <= set(ids)


def test_alert_table_links_each_row_into_the_runbook(page: str, data: ReportData) -> None:
    rows = alert_rows(data.alerts)
    table = page[page.index('<table class="alerts"'):]
    assert table.count("<tr data-alert-id=") == len(rows) == len({a.alert_id for a in
                                                                   data.alerts})
    for row in rows:
        anchor = runbook_anchor(row.runbook)
        assert f'href="../deploy/runbook.md#{anchor}"' in table
    for head in ("kind", "state", "severity", "tier", "window", "first", "last", "summary"):
        assert f"<th>{head}</th>" in table


def test_runbook_base_is_configurable(data: ReportData) -> None:
    # the table does not depend on the series: leave them out to skip drawing the plots
    other = data.model_copy(update={"runbook_base": "https://wiki.example/tierwatch/runbook",
                                    "series": []})
    page = render_report(other)
    assert 'href="https://wiki.example/tierwatch/runbook#pareto-trap"' in page
    assert "../deploy/runbook.md" not in page


def test_write_report(tmp_path: Path, data: ReportData) -> None:
    small = data.model_copy(update={"series": []})
    path = write_report(small, tmp_path / "nested" / "report.html")
    assert path.read_text(encoding="utf-8") == render_report(small)


# --- the data contract -----------------------------------------------------------------


def test_json_round_trip(data: ReportData) -> None:
    text = json.dumps(data.to_dict(), allow_nan=False)
    back = ReportData.from_dict(json.loads(text))
    assert back == data
    assert json.dumps(back.to_dict(), allow_nan=False) == text
    assert back.alerts[0].ts == data.alerts[0].ts and isinstance(back.alerts[0], Alert)


def test_contract_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="lo"):
        Rate(value=0.5, lo=0.6, hi=0.4, n=10)
    with pytest.raises(ValidationError):
        Rate(value=float("nan"), lo=0.0, hi=1.0, n=10)
    with pytest.raises(ValidationError, match="edges"):
        HistogramSnapshot(ts=0.0, edges=[0, 0.5, 1], baseline=[1.0], live=[0.5, 0.5])
    with pytest.raises(ValidationError):
        Snapshot.from_dict({"ts": 0.0, "unknown": 1})


def test_empty_data_shows_no_data_notes() -> None:
    empty = ReportData(title="empty", router_id="r", generated_from="test", onset_ts=None,
                       timeline=[], headline={}, series=[], alerts=[], drift_histogram=None,
                       band_quality=None)
    figures = _Figures(render_report(empty)).found
    assert list(figures) == PLOTS
    for name, inner in figures.items():
        assert "<svg" not in inner and 'class="nodata"' in inner, name


def test_partial_data_shows_no_data_only_where_missing(data: ReportData) -> None:
    partial = data.model_copy(update={"drift_histogram": None, "alerts": []})
    figures = _Figures(render_report(partial)).found
    assert 'class="nodata"' in figures["histogram"] and 'class="nodata"' in figures["alerts"]
    assert "<svg" in figures["satisfaction"] and "alertspan" not in figures["satisfaction"]


# --- alerts, spans and the headline ----------------------------------------------------


def test_alert_rows_fold_events_into_spans() -> None:
    events = [_alert("resolved", "2026-01-03T00:00:00+00:00"),
              _alert("firing", "2026-01-01T00:00:00+00:00"),
              _alert("firing", "2026-01-02T00:00:00+00:00"),  # re-sent while firing
              _alert("firing", "2026-01-05T00:00:00+00:00"),
              _alert("firing", "2026-01-02T00:00:00+00:00", alert_id="b", kind="pareto_trap",
                     tier=None)]
    rows = alert_rows(events)
    assert [r.alert_id for r in rows] == ["a1", "b"]
    day = 86400.0
    t0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert rows[0].spans == [(t0, t0 + 2 * day), (t0 + 4 * day, None)]
    assert rows[0].state == "firing" and rows[0].last_ts == t0 + 4 * day
    end = t0 + 9 * day
    assert firing_spans(rows, {"tier_quality_drop"}, end=end, tier="cheap") == [
        (t0, t0 + 2 * day), (t0 + 4 * day, end)]
    assert firing_spans(rows, {"tier_quality_drop", "pareto_trap"}, end=end) == [(t0, end)]
    assert firing_spans(rows, {"tier_quality_drop"}, end=end, tier="capable") == []
    assert firing_spans(rows, {"pareto_trap"}, end=t0 + 9 * day, tier="capable") == [
        (t0 + day, t0 + 9 * day)]


@pytest.mark.parametrize(("runbook", "anchor"), [
    ("deploy/runbook.md#pareto-trap", "pareto-trap"),
    ("#pareto-trap", "pareto-trap"),
    ("pareto-trap", "pareto-trap"),
])
def test_runbook_links(runbook: str, anchor: str) -> None:
    assert runbook_anchor(runbook) == anchor
    assert runbook_href("../deploy/runbook.md", runbook) == f"../deploy/runbook.md#{anchor}"
    assert runbook_href("/docs/runbook.html#old", runbook) == f"/docs/runbook.html#{anchor}"


def test_headline_first_detection_ignores_alerts_before_onset() -> None:
    onset = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    alerts = [_alert("firing", "2026-01-01T00:00:00+00:00", alert_id="early"),
              _alert("firing", "2026-01-03T06:00:00+00:00", alert_id="late",
                     kind="confidence_drift", tier=None)]
    head = headline_from([], alerts, onset)
    assert head["detection_delay_h"] == 30.0
    assert head["first_detection"] == "confidence_drift"
    assert head["alerts_firing"] == 2.0
    assert headline_from([], [], onset)["first_detection"] == "not detected"


@pytest.mark.parametrize(("key", "value", "text", "mood"), [
    ("net_value_per_day", -1234.4, "−$1,234", "bad"),
    ("net_value_per_day", 50.0, "$50", "good"),
    ("savings_per_day", 7317.7, "$7,318", ""),
    ("alerts_firing", 0.0, "0", "good"),
    ("detection_delay_h", 39.0, "+39 h", ""),
    ("detection_delay_h", 96.0, "+4.0 d", ""),
    ("first_detection", "not detected", "not detected", ""),
])
def test_headline_formatting(key: str, value: float | str, text: str, mood: str) -> None:
    assert fmt_headline(key, value) == (text, mood)
