"""HTML building blocks of the report: stylesheet, headline cards, timeline, alert table.

Everything here returns escaped HTML fragments as strings; no scripts, no external assets.

Examples
--------
>>> headline_cards({"net_value_per_day": -1234.5, "alerts_firing": 2.0}).count('<div class="card ')
2
>>> fmt_headline("net_value_per_day", -1234.5)
('−$1,234', 'bad')
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

from pipeline.report.alerts import AlertRow, runbook_anchor, runbook_href
from pipeline.report.style import (
    AGGREGATE,
    ALERT,
    CAPABLE,
    CHEAP,
    SEVERITY,
    tier_color,
)
from pipeline.report.summary import DASH, fmt_ts

_VARS = (f":root {{ --cheap: {CHEAP}; --capable: {CAPABLE}; --agg: {AGGREGATE}; "
         f"--alert: {ALERT}; }}")
CSS = _VARS + """
:root { --ink: #1f2329; --muted: #6b7078; --line: #e3e6eb; --bg: #f5f6f8; --card: #fff;
  --good: #2e9a5b; --bad: #d6455d; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 15px/1.55 Inter, "Segoe UI", "Helvetica Neue",
  Arial, "DejaVu Sans", sans-serif; -webkit-font-smoothing: antialiased; }
main { max-width: 1180px; margin: 0 auto; padding: 36px 28px 56px; }
header .eyebrow { font-size: 12px; letter-spacing: .14em; text-transform: uppercase;
  color: var(--muted); font-weight: 600; }
h1 { font-size: 30px; line-height: 1.2; margin: 6px 0 6px; letter-spacing: -.01em; }
.meta { color: var(--muted); margin: 0; font-size: 14px; }
code { font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #eceef2;
  padding: 1px 5px; border-radius: 4px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr));
  gap: 14px; margin: 26px 0 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 14px 18px 14px; box-shadow: 0 1px 2px rgba(20, 24, 31, .04); }
.card .label { font-size: 12px; letter-spacing: .06em; text-transform: uppercase;
  color: var(--muted); font-weight: 600; }
.card .value { font-size: 30px; font-weight: 700; letter-spacing: -.02em; margin-top: 4px;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.card .note { font-size: 13px; color: var(--muted); }
.card.good .value { color: var(--good); } .card.bad .value { color: var(--bad); }
.card.warn .value { color: var(--alert); }
.keys { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; font-size: 13.5px;
  color: var(--muted); margin: 0 0 22px; }
.keys span { display: inline-flex; align-items: center; gap: 7px; }
.sw { width: 22px; height: 4px; border-radius: 2px; display: inline-block; }
.sw.onset { height: 0; border-top: 2px dashed var(--agg); border-radius: 0; }
.sw.span { height: 14px; background: rgba(214, 69, 93, .2); }
nav.toc { display: flex; flex-wrap: wrap; gap: 6px 8px; margin: 0 0 26px; }
nav.toc a { font-size: 13px; color: var(--ink); text-decoration: none; background: #fff;
  border: 1px solid var(--line); border-radius: 999px; padding: 3px 11px; }
nav.toc a:hover { border-color: #b9bec6; }
section.panel { background: var(--card); border: 1px solid var(--line); border-radius: 14px;
  padding: 22px 26px 20px; margin: 0 0 22px; box-shadow: 0 1px 2px rgba(20, 24, 31, .04); }
h2 { font-size: 20px; margin: 0 0 4px; letter-spacing: -.01em; display: flex;
  align-items: baseline; gap: 10px; }
h2 .num { font-size: 13px; font-weight: 700; color: #fff; background: var(--agg);
  border-radius: 999px; min-width: 24px; height: 24px; display: inline-flex;
  align-items: center; justify-content: center; position: relative; top: -2px; }
.lede { margin: 0 0 12px; color: #454a52; max-width: 80ch; }
.plot { margin: 8px 0 0; }
.plot svg { display: block; width: 100%; height: auto; }
.nodata { margin: 8px 0; padding: 28px; text-align: center; color: var(--muted);
  background: repeating-linear-gradient(-45deg, #fafbfc, #fafbfc 8px, #f3f4f6 8px,
  #f3f4f6 16px); border: 1px dashed var(--line); border-radius: 10px; }
ol.timeline { list-style: none; margin: 6px 0 0; padding: 0; columns: 2 420px;
  column-gap: 36px; }
ol.timeline li { break-inside: avoid; padding: 5px 0 5px 14px; border-left: 2px solid
  var(--line); font-size: 14px; }
ol.timeline li.onset { border-left-color: var(--agg); font-weight: 600; }
ol.timeline li.fires { border-left-color: var(--alert); }
ol.timeline li.resolves { border-left-color: var(--good); }
ol.timeline time { display: block; font: 12px/1.3 "DejaVu Sans Mono", Menlo, monospace;
  color: var(--muted); }
table.alerts { width: 100%; border-collapse: collapse; font-size: 13px; }
table.alerts th { text-align: left; font-size: 11.5px; letter-spacing: .06em;
  text-transform: uppercase; color: var(--muted); font-weight: 600; padding: 8px 8px;
  border-bottom: 1px solid var(--line); }
table.alerts td { padding: 9px 8px; border-bottom: 1px solid #f0f1f4; vertical-align: top; }
table.alerts tr:nth-child(even) td { background: #fafbfc; }
table.alerts td.ts { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.alerts td.summary { min-width: 200px; color: #454a52; }
.table-wrap { overflow-x: auto; margin-top: 14px; }
table.alerts a { color: #1f5fae; text-decoration: none; font-weight: 600; }
table.alerts a:hover { text-decoration: underline; }
.pill { display: inline-block; font-size: 11.5px; font-weight: 700; border-radius: 999px;
  padding: 1px 9px; letter-spacing: .02em; color: #fff; white-space: nowrap; }
.pill.firing { background: var(--alert); } .pill.resolved { background: #9aa1ab; }
.pill.sev { background: transparent; border: 1.5px solid currentColor; padding: 0 8px; }
.tier { font-weight: 600; }
footer { color: var(--muted); font-size: 13px; margin-top: 30px; text-align: center; }
"""

_ORDER = ["savings_per_day", "hidden_cost_per_day", "net_value_per_day", "alerts_firing",
          "detection_delay_h", "first_detection"]
_LABELS = {
    "savings_per_day": ("Savings / day", "inference, routing cheap instead of capable"),
    "hidden_cost_per_day": ("Hidden cost / day", "support contacts and lost quality"),
    "net_value_per_day": ("Net value / day", "savings minus hidden cost"),
    "alerts_firing": ("Alerts firing", "at the last evaluation"),
    "detection_delay_h": ("First detection", "after the onset"),
    "first_detection": ("First detection", ""),
}
_TIMELINE = re.compile(r"^(\d{4}-\d\d-\d\d[ T][0-9:]+(?: UTC)?)" + DASH + "(.*)$", re.DOTALL)


def esc(text: object) -> str:
    """HTML-escape any value."""
    return html.escape(str(text), quote=True)


def _money(v: float) -> str:
    sign = "−" if v < 0 else ""
    return f"{sign}${abs(v):,.0f}"


def fmt_headline(key: str, value: float | str) -> tuple[str, str]:
    """Display text and mood (``good``/``bad``/``warn``/``""``) of one headline value."""
    if isinstance(value, str):
        return value, ""
    if key.endswith(("_per_day", "_usd")):
        mood = ""
        if key.startswith("net"):
            mood = "good" if value >= 0 else "bad"
        return _money(value), mood
    if key.endswith("_h"):
        return (f"+{value / 24:.1f} d" if abs(value) >= 72 else f"+{value:.0f} h"), ""
    if key.startswith("alerts"):
        return f"{value:.0f}", "warn" if value > 0 else "good"
    return f"{value:.4g}", ""


def headline_cards(headline: Mapping[str, float | str]) -> str:
    """The strip of key numbers; known keys first, in a fixed order, then the others."""
    keys = [k for k in _ORDER if k in headline] + [k for k in headline if k not in _ORDER]
    if "detection_delay_h" in headline and "first_detection" in headline:
        keys.remove("first_detection")
    cards = []
    for k in keys:
        label, note = _LABELS.get(k, (k.replace("_", " ").capitalize(), ""))
        text, mood = fmt_headline(k, headline[k])
        if k == "detection_delay_h" and "first_detection" in headline:
            note = f"after the onset · {headline['first_detection']}"
        cards.append(f'<div class="card {mood}"><div class="label">{esc(label)}</div>'
                     f'<div class="value">{esc(text)}</div><div class="note">{esc(note)}'
                     f"</div></div>")
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def colour_keys(tiers: Sequence[str], onset: bool) -> str:
    """The colour key shared by every plot."""
    items = [f'<span><i class="sw" style="background:{tier_color(t, tiers)}"></i>{esc(t)}'
             f"</span>" for t in tiers]
    items.append(f'<span><i class="sw" style="background:{AGGREGATE}"></i>aggregate / router'
                 f"</span>")
    if onset:
        items.append('<span><i class="sw onset"></i>onset</span>')
    items.append('<span><i class="sw span"></i>alert firing</span>')
    return f'<div class="keys">{"".join(items)}</div>'


def timeline_list(lines: Sequence[str]) -> str:
    """The timeline; lines shaped ``"<time> — <text>"`` get their time set apart."""
    items = []
    for line in lines:
        m = _TIMELINE.match(line)
        when, text = (m.group(1), m.group(2)) if m else ("", line)
        cls = ("onset" if text.startswith("onset") else "fires" if " fires" in text
               else "resolves" if " resolves" in text else "")
        time = f"<time>{esc(when)}</time>" if when else ""
        items.append(f'<li class="{cls}">{time}{esc(text)}</li>')
    return f'<ol class="timeline">{"".join(items)}</ol>'


def alert_table(rows: Sequence[AlertRow], runbook_base: str, tiers: Sequence[str] = ()) -> str:
    """One row per alert, linking into the runbook section of its kind."""
    if not rows:
        return '<p class="nodata">No alerts.</p>'
    head = "".join(f"<th>{h}</th>" for h in ("kind", "state", "severity", "tier", "window",
                                             "first", "last", "summary", "runbook"))
    body = []
    for r in rows:
        href = runbook_href(runbook_base, r.runbook)
        sev = SEVERITY.get(r.severity, "#7d8ba1")
        tier = (f'<span class="tier" style="color:{tier_color(r.tier, tiers)}">{esc(r.tier)}</span>'
                if r.tier else '<span class="tier">router</span>')
        body.append(
            f'<tr data-alert-id="{esc(r.alert_id)}"><td><a href="{esc(href)}">{esc(r.kind)}</a>'
            f'</td><td><span class="pill {esc(r.state)}">{esc(r.state)}</span></td>'
            f'<td><span class="pill sev" style="color:{sev}">{esc(r.severity)}</span></td>'
            f"<td>{tier}</td><td>{esc(r.window)}</td>"
            f'<td class="ts">{esc(fmt_ts(r.first_ts))}</td>'
            f'<td class="ts">{esc(fmt_ts(r.last_ts))}</td><td class="summary">{esc(r.summary)}</td>'
            f'<td><a class="runbook" href="{esc(href)}" '
            f'title="{esc(runbook_anchor(r.runbook))}">runbook&nbsp;↗</a></td></tr>')
    return (f'<div class="table-wrap"><table class="alerts"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')
