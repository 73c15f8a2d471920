"""The composition root: every entry point builds tierwatch's application service here.

The application service is the :class:`~pipeline.stream.processor.Processor`: decode,
validate and dead-letter a message, feed the :class:`~pipeline.core.monitor.Monitor`,
collect the output messages. The worker (``pipeline/stream/app.py``), the replay
(``pipeline/replay.py``), the demo and the tests all get theirs from :func:`bootstrap`,
so they are wired the same way: the monitor's configuration and signer come from the
settings, the metrics from one registry. Entry points import this module, never each
other.

>>> from pipeline.settings import Settings
>>> p = bootstrap(Settings(), clock=None)
>>> p.monitor.config.eval_every_s == Settings().eval_every_s, p.clock is None
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from pipeline.core.cohorts import CohortConfig
from pipeline.core.decision_store import DecisionStore
from pipeline.core.delayed import DelayedConfig
from pipeline.core.economics import Prices
from pipeline.core.monitor import Monitor, MonitorConfig, Signer
from pipeline.core.signing import Keyring, parse_key
from pipeline.settings import Settings
from pipeline.stream.metrics import WorkerMetrics
from pipeline.stream.processor import Processor

__all__ = ["GC_THRESHOLDS", "bootstrap", "build_monitor", "monitor_config"]

#: the cyclic collector's thresholds in a worker and during a replay. The state holds
#: millions of small objects, and at Python's defaults (700, 10, 10) a full collection
#: over all of them ran every ~12k events: a third of a replay's time, and 10-19 % of a
#: worker's CPU (tests/benchmarks/README.md). Cyclic garbage waits a little longer;
#: RSS measured the same.
GC_THRESHOLDS = (50_000, 20, 100)


def monitor_config(settings: Settings) -> MonitorConfig:
    """The monitor configuration these settings describe."""
    return MonitorConfig(
        allowed_lateness_s=settings.allowed_lateness_s, eval_every_s=settings.eval_every_s,
        false_alarms_per_30d=settings.false_alarms_per_30d, join_ttl_s=settings.join_ttl_s,
        sequential_drift=settings.sequential_drift, runbook_base=settings.runbook_base_url,
        ticket_false_alarms_per_30d=settings.ticket_false_alarms_per_30d,
        info_false_alarms_per_30d=settings.info_false_alarms_per_30d,
        prices=Prices(cost_per_support_contact=settings.support_contact_cost_usd,
                      cost_per_bad_outcome=settings.bad_outcome_cost_usd,
                      cost_per_bad_survey=settings.bad_survey_cost_usd,
                      cost_per_churned_subject=settings.churned_subject_cost_usd),
        delayed=DelayedConfig(
            lookback_days=settings.subject_lookback_days,
            cohorts=CohortConfig(
                max_age_days=settings.delayed_max_age_days,
                ticket_false_alarms_per_30d=settings.delayed_ticket_false_alarms_per_30d,
                info_false_alarms_per_30d=settings.delayed_info_false_alarms_per_30d)))


def build_monitor(settings: Settings, config: MonitorConfig | None = None,
                  record: bool = False, decisions: DecisionStore | None = None) -> Monitor:
    """The monitor of these settings, signing with the configured control key.

    ``record`` keeps each evaluation's history (the report needs it); the join keeps its
    decisions in ``decisions`` (in memory when ``None``).
    """
    keyring = Keyring({settings.control_key_id: parse_key(settings.control_key)})
    return Monitor(config or monitor_config(settings),
                   signer=Signer(keyring, settings.control_key_id, settings.control_mode),
                   record=record, decisions=decisions)


def bootstrap(settings: Settings, *, monitor: Monitor | None = None,
              registry: CollectorRegistry | None = None,
              clock: Callable[[], float] | None = time.time,
              record: bool = False) -> Processor:
    """The application service of these settings, ready to take messages.

    ``monitor``: the one to drive (default: :func:`build_monitor` of ``settings``, with
    ``record``). ``registry``: where its metrics go (default: a registry of its own, which
    nobody scrapes). ``clock``: wall time, or ``None`` to run in event time alone (the
    replay: outputs then depend on the input only).
    """
    metrics = WorkerMetrics(registry if registry is not None else CollectorRegistry())
    return Processor(settings, monitor if monitor is not None
                     else build_monitor(settings, record=record), metrics, clock=clock)
