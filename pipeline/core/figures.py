"""The figures an alert stands on: what was observed, against which reference.

Alert payloads carry their full ``statistics``, shaped by the test that raised them. Pages
and Slack messages need the one or two numbers that matter, named the same way for every
kind: the tier, the signal, the window, the observed value and the value it is held
against. :func:`alert_figures` picks them out; the worker exposes them as metrics so the
Prometheus rules can put them in their ``description``.

By kind, the ``quantity`` and what it is held against:

- the drift kinds: ``ks_distance`` against the KS effect floor (hourly windows), or
  ``cusum`` against the CUSUM threshold (sequential tests);
- ``tier_quality_drop`` and ``boundary_degradation``: ``satisfaction`` against the
  tier's reference-period rate;
- ``support_contact_rise``: ``contacts_per_request`` against the reference-period rate,
  or ``contacts`` against those expected (the sequential test);
- ``tier_quality_gap``: ``gap`` against the gap in the reference period;
- ``feedback_starvation``: ``minimum_detectable_drop``, alone;
- ``pareto_trap``: ``hidden_cost_usd_per_day`` against the savings per day.

>>> stats = {"test": {"signal": "thumbs", "current_rate": 0.81, "reference_rate": 0.9}}
>>> alert_figures("tier_quality_drop", "1d", stats)
[Figure(signal='thumbs', window='1d', quantity='satisfaction', observed=0.81, reference=0.9)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from pipeline.schemas import AlertKind

__all__ = ["Figure", "alert_figures"]

DRIFT_KINDS = frozenset({"confidence_drift", "tier_confidence_drift", "signal_drift"})


class Figure(NamedTuple):
    signal: str
    window: str
    quantity: str
    observed: float
    reference: float | None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _figure(signal: str, window: str, quantity: str, observed: Any,
            reference: Any = None) -> list[Figure]:
    obs = _num(observed)
    return [] if obs is None else [Figure(signal, window, quantity, obs, _num(reference))]


def alert_figures(kind: AlertKind, window: str, statistics: Mapping[str, Any],
                  detail: str = "") -> list[Figure]:
    """The figures of one alert (``detail``: the signal of a ``signal_drift``).

    Unknown kinds and statistics without the expected numbers give no figure: the alert
    still pages, its description just says less.

    >>> alert_figures("confidence_drift", "1h", {"windows": {"1h": {"ks": {
    ...     "effect": 0.169, "effect_floor": 0.05}}}})
    [Figure(signal='score', window='1h', quantity='ks_distance', observed=0.169, reference=0.05)]
    >>> alert_figures("signal_drift", "seq", {"sequential": {"statistic": 16.1,
    ...     "threshold": 15.4, "alarm": True}}, detail="ood_distance")[0][:3]
    ('ood_distance', 'seq', 'cusum')
    >>> alert_figures("pareto_trap", "7d", {"hidden_cost_per_day": 47.0,
    ...                                     "savings_per_day": 31.0})[0][2:]
    ('hidden_cost_usd_per_day', 47.0, 31.0)
    """
    if kind in DRIFT_KINDS:
        signal = detail or "score"
        seq = statistics.get("sequential") or {}
        ks = ((statistics.get("windows") or {}).get(window) or {}).get("ks") or {}
        if window == "seq" or (seq.get("alarm") and not ks):
            return _figure(signal, window, "cusum", seq.get("statistic"), seq.get("threshold"))
        return _figure(signal, window, "ks_distance", ks.get("effect"), ks.get("effect_floor"))
    if kind in ("tier_quality_drop", "boundary_degradation", "support_contact_rise"):
        test = statistics.get("test")
        if not test:
            cusum = statistics.get("cusum") or {}
            return _figure("support_contact", window, "contacts", cusum.get("observed"),
                           cusum.get("expected"))
        signal = str(test.get("signal") or detail or "")
        if signal == "support_contact":  # tested as the share of requests without one
            cur, ref = _num(test.get("current_rate")), _num(test.get("reference_rate"))
            return _figure(signal, window, "contacts_per_request",
                           None if cur is None else 1.0 - cur,
                           None if ref is None else 1.0 - ref)
        return _figure(signal, window, "satisfaction", test.get("current_rate"),
                       test.get("reference_rate"))
    if kind == "tier_quality_gap":
        return _figure(str(statistics.get("signal") or "satisfaction"), window, "gap",
                       statistics.get("gap"), statistics.get("reference_gap"))
    if kind == "feedback_starvation":
        return _figure("feedback", window, "minimum_detectable_drop",
                       statistics.get("minimum_detectable_drop"))
    if kind == "pareto_trap":
        return _figure("economics", window, "hidden_cost_usd_per_day",
                       statistics.get("hidden_cost_per_day"), statistics.get("savings_per_day"))
    return []
