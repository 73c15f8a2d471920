"""What one evaluation of a router produces, and how an alert condition becomes one.

The watches of a :class:`~pipeline.core.router_state.RouterState` (drift, quality) do
not own the router's alerts: each evaluation hands them a :data:`Fire`, which updates
the router's :class:`~pipeline.core.alerts.AlertBook` with a condition and records the
transition it causes, if any, in the :class:`Evaluation`.

>>> book = AlertBook(clear_evals=1)
>>> ev = Evaluation(3600.0)
>>> key = AlertKey("confidence_drift", "r", None)
>>> transition(book, ev, key, True, "1d", "router confidence drifted", {})
'firing'
>>> transition(book, ev, key, True, "1d", "router confidence drifted", {}) is None
True
>>> [(t.key.kind, t.state, t.window) for t in ev.transitions]
[('confidence_drift', 'firing', '1d')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.alerts import AlertBook, AlertKey
from pipeline.core.recommend import Proposal

__all__ = ["Annotate", "Evaluation", "Fire", "Transition", "hours", "transition"]


@dataclass(slots=True)
class Transition:
    key: AlertKey
    state: str
    window: str
    summary: str
    statistics: dict[str, Any]


@dataclass(slots=True)
class Evaluation:
    """What one evaluation of one router produced."""

    ts: float
    transitions: list[Transition] = field(default_factory=list)
    recommendation: Proposal | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)


#: ``fire(ev, key, condition, window, summary, statistics)``: one alert's condition
Fire = Callable[[Evaluation, AlertKey, bool, str, str, dict[str, Any]], None]
#: ``annotate(key, window, summary, statistics, ts)``: a firing alert's summary and
#: statistics with what else is known about it
Annotate = Callable[[AlertKey, str, str, dict[str, Any], float],
                    tuple[str, dict[str, Any]]]


def transition(alerts: AlertBook, ev: Evaluation, key: AlertKey, condition: bool,
               window: str, summary: str, statistics: dict[str, Any],
               annotate: Annotate | None = None) -> str | None:
    """Update ``key`` with ``condition`` at the evaluation's time and record the
    transition it causes in ``ev`` (a firing one annotated first); the transition."""
    state = alerts.update(key, condition, ev.ts)
    if state == "firing" and annotate is not None:
        summary, statistics = annotate(key, window, summary, statistics, ev.ts)
    if state is not None:
        ev.transitions.append(Transition(key, state, window, summary, statistics))
    return state


def hours(since: float | None, at: float) -> str:
    """Whole hours from ``since`` to ``at`` for a summary (``?`` when unknown).

    >>> hours(0.0, 7200.0), hours(None, 7200.0)
    ('2', '?')
    """
    return "?" if since is None else f"{(at - since) / 3600:.0f}"
