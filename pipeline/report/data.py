"""The report's data contract: everything the HTML report draws, as plain values.

The replay (or any other producer) fills a :class:`ReportData` and writes it into
``summary.json`` with :meth:`ReportData.to_dict`; the report renders it, and
:meth:`ReportData.from_dict` reads it back. All models are frozen pydantic models that
reject unknown fields and NaN/inf (JSON cannot carry them: use ``None`` for "no value").

Times are event times in seconds since the Unix epoch (UTC).

Examples
--------
>>> r = Rate(value=0.82, lo=0.79, hi=0.85, n=612.0)
>>> snap = Snapshot(ts=1767225600.0, aggregate=r,
...                 tiers={"cheap": TierSnapshot(satisfaction=r, share=0.6)})
>>> data = ReportData(title="t", router_id="support", generated_from="replay.jsonl",
...                   onset_ts=None, timeline=[], headline={"alerts_firing": 0},
...                   series=[snap], alerts=[], drift_histogram=None, band_quality=None)
>>> ReportData.from_dict(data.to_dict()) == data
True
>>> data.headline["alerts_firing"], data.runbook_base
(0.0, '../deploy/runbook.md')
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.schemas import Alert


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps of alerts as RFC 3339 strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Self:
        """Validate a dict produced by :meth:`to_dict` (or read from JSON)."""
        return cls.model_validate(obj)


class Rate(_Frozen):
    """A rate with its interval: ``value`` in ``[lo, hi]``, from ``n`` (maybe weighted) obs."""

    value: float
    lo: float
    hi: float
    n: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> Rate:
        if self.lo > self.hi:
            raise ValueError(f"interval lo={self.lo} is above hi={self.hi}")
        return self


class TierSnapshot(_Frozen):
    """One tier at one evaluation: satisfaction, support-contact rate, blindness, share."""

    satisfaction: Rate | None = None
    support_rate: Rate | None = None
    mdd: float | None = None
    share: float | None = None


class DriftPoint(_Frozen):
    """PSI (coarse bins) and KS distance (fine bins) over one window."""

    psi: float | None = None
    ks: float | None = None
    window: str = ""


class ThresholdPoint(_Frozen):
    """Router thresholds: score ≥ cheap_above → cheap, score < capable_below → capable."""

    cheap_above: float
    capable_below: float
    exploration_rate: float = 0.0


class EconomicsPoint(_Frozen):
    """Money per day: savings of routing cheap, the hidden cost of doing so, the net."""

    savings_per_day: float | None = None
    hidden_cost_per_day: float | None = None
    net_value_per_day: float | None = None
    cost_per_day: float | None = None


class Snapshot(_Frozen):
    """Everything evaluated at one time ``ts`` (e.g. hourly or daily)."""

    ts: float
    aggregate: Rate | None = None
    tiers: dict[str, TierSnapshot] = Field(default_factory=dict)
    drift: dict[str, DriftPoint] = Field(default_factory=dict)
    recommended: ThresholdPoint | None = None
    applied: ThresholdPoint | None = None
    economics: EconomicsPoint | None = None


class HistogramSnapshot(_Frozen):
    """Live vs baseline probability per coarse score bin at time ``ts``."""

    ts: float
    edges: list[float]
    baseline: list[float]
    live: list[float]
    label: str = ""

    @model_validator(mode="after")
    def _shapes(self) -> HistogramSnapshot:
        n = len(self.edges) - 1
        if n < 1 or len(self.baseline) != n or len(self.live) != n:
            raise ValueError(f"{len(self.edges)} edges need {max(n, 0)} baseline and live bins, "
                             f"got {len(self.baseline)} and {len(self.live)}")
        return self


class BandQuality(_Frozen):
    """Satisfaction per score band (``edges``) per tier, with the thresholds in force."""

    edges: list[float]
    tiers: dict[str, list[Rate | None]]
    thresholds: ThresholdPoint

    @model_validator(mode="after")
    def _shapes(self) -> BandQuality:
        n = len(self.edges) - 1
        for tier, rates in self.tiers.items():
            if len(rates) != n:
                raise ValueError(f"tier {tier!r} has {len(rates)} bands; edges make {n}")
        return self


class SegmentRow(_Frozen):
    """One segment value of the cheap tier: its traffic, contact rate and reference rate,
    and (when an alert attributed its excess) its share of the excess."""

    key: str
    value: str
    requests: float = Field(ge=0.0)
    share: float
    rate: float | None = None
    reference_rate: float | None = None
    excess_share: float | None = None
    rate_ratio: float | None = None
    significant: bool = False


class SegmentReport(_Frozen):
    """Where the cheap tier fails: ranked values, and each top value's rate over time.

    ``series[label]`` holds ``[ts, rate or None]`` pairs (support contacts per request,
    7-day window) for the values in ``rows`` (``label`` is ``key=value``).
    """

    tier: str
    source: str
    rows: list[SegmentRow]
    series: dict[str, list[tuple[float, float | None]]] = Field(default_factory=dict)


class CohortCurve(_Frozen):
    """One week's interaction cohort: its delayed outcome's bad share by age (days)."""

    week_start: float
    maturity_days: int
    requests: float = Field(ge=0.0)
    cheap_share: float | None = None
    points: list[tuple[float, float]] = Field(default_factory=list)
    flagged: str | None = None  # "ticket" or "info" when delayed_outcome_gap flagged it
    before_change: bool = False


class CohortPanel(_Frozen):
    """One delayed outcome (``survey``, ``retention``): its cohorts' curves, and the in-band
    IPW contrast (cheap minus capable bad rate, with its standard error) when measured."""

    outcome: str
    cohorts: list[CohortCurve]
    ipw: dict[str, float] | None = None


class CohortReport(_Frozen):
    """Outcomes months later: cohort curves per outcome, and the last routing change."""

    panels: list[CohortPanel]
    change_ts: float | None = None
    change: str | None = None


class ReportData(_Frozen):
    """Everything the report shows, for one router."""

    title: str
    router_id: str
    generated_from: str
    onset_ts: float | None
    timeline: list[str]
    headline: dict[str, float | str]
    series: list[Snapshot]
    alerts: list[Alert]
    drift_histogram: HistogramSnapshot | None
    band_quality: BandQuality | None
    runbook_base: str = "../deploy/runbook.md"
    segments: SegmentReport | None = None
    delayed: CohortReport | None = None

    @property
    def tier_names(self) -> list[str]:
        """Tier names in order of first appearance (series, then band quality)."""
        names: dict[str, None] = {}
        for snap in self.series:
            names.update(dict.fromkeys(snap.tiers))
        if self.band_quality is not None:
            names.update(dict.fromkeys(self.band_quality.tiers))
        return list(names)
