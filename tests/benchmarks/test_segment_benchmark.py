"""Segment counts stay bounded: memory per router and time per event.

One router, two tiers, four segment keys (7 intents, 11 locales, 3 plans, and a product
id drawn from 1M values), 30 days of 9,600 requests a day, trimmed daily as the monitor
does. Memory is the live ``tracemalloc`` size of the :class:`SegmentCounts` after the run
(30 days, so the 9-day retention has been reached); time is measured without tracemalloc.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from pipeline.core.segments import DAY, SegmentCounts

pytestmark = pytest.mark.benchmark


def _batches(days: int = 30) -> list[list[tuple[str, float, tuple[tuple[str, str], ...]]]]:
    rng = np.random.default_rng(1)
    out = []
    for day in range(days):
        for hour in range(24):
            ts = day * DAY + hour * 3600.0
            prods = rng.integers(0, 1_000_000, 400)
            out.append([("cheap" if i % 3 else "capable", ts + i,
                         (("intent", f"i{i % 7}"), ("locale", f"l{i % 11}"),
                          ("plan", f"p{i % 3}"), ("product", f"prod{p}")))
                        for i, p in enumerate(prods.tolist())])
    return out


def _run(batches: list[list[tuple[str, float, tuple[tuple[str, str], ...]]]],
         ) -> SegmentCounts:
    sc = SegmentCounts((0.0, 14 * DAY))
    for i, b in enumerate(batches):
        sc.observe_many(b)
        for tier, t, seg in b[:8]:
            sc.observe_outcome(tier, t + 100.0, t, seg, contacts=1.0)
        if i % 24 == 23:
            sc.trim((i // 24 + 1) * DAY)
    return sc


def test_segment_counts_memory_and_speed() -> None:
    batches = _batches()
    n = sum(len(b) for b in batches)
    started = time.perf_counter()
    _run(batches)
    us = (time.perf_counter() - started) / n * 1e6
    tracemalloc.start()
    sc = _run(batches)
    live, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\n{n:,} requests, 4 keys (one with 1M values): {us:.1f} us/request, "
          f"live {live / 1e6:.2f} MB, peak {peak / 1e6:.2f} MB, "
          f"{len(sc.days)} day sketches")
    assert live < 4e6
    assert us < 30.0
