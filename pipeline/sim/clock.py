"""Simulated time: the epoch, Poisson arrivals with seasonality, fast RFC 3339 formatting.

Time is kept in integer microseconds since the Unix epoch so that chunk boundaries and
timestamps are exact and reproducible.

>>> format_us(np.array([DEFAULT_START_US + 1_500_000]))
['2026-01-01T00:00:01.500000+00:00']
>>> iso(DEFAULT_START)
'2026-01-01T00:00:00+00:00'
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pipeline.sim.params import FloatArray, IntArray, Seasonality, Volume

DEFAULT_START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DEFAULT_START_US = 1_767_225_600_000_000
US = 1_000_000


def to_epoch(start: float | datetime) -> float:
    """Epoch seconds of ``start`` (a number, or an aware datetime), to the microsecond."""
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware: naive datetimes are ambiguous")
        start = start.timestamp()
    return round(float(start) * US) / US


def format_us(us: IntArray) -> list[str]:
    """RFC 3339 UTC strings with microseconds and an explicit ``+00:00`` offset.

    Vectorized through numpy's datetime formatting: about 1 µs per timestamp.
    """
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
    return [t + "+00:00" for t in text]


def iso(epoch_s: float) -> str:
    """One epoch second as RFC 3339 UTC (no fractional part when whole)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat()


def arrivals(
    rng: np.random.Generator, start_us: int, end_us: int, rate: float,
    seasonality: Seasonality | Volume | None,
) -> IntArray:
    """Sorted arrival times (µs) of a Poisson process on ``[start_us, end_us)``.

    The intensity is ``rate * seasonality.factor(t)`` (a :class:`Volume` adds holidays and
    ramps); non-homogeneous arrivals are drawn by thinning a homogeneous process at the
    peak rate.
    """
    span_s = (end_us - start_us) / US
    peak = 1.0 if seasonality is None else seasonality.peak_between(start_us / US, end_us / US)
    n = int(rng.poisson(rate * peak * span_s))
    offsets = np.sort(rng.random(n))
    accept_u = rng.random(n)
    us: IntArray = start_us + np.floor(offsets * (end_us - start_us)).astype(np.int64)
    if seasonality is not None:
        factor: FloatArray = seasonality.factor(us / US)
        us = us[accept_u < factor / peak]
    return us
