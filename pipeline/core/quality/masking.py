"""(c) Aggregate against tiers: the tiers whose drop the aggregate hides."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.core.quality.drop import DropResult


def masked_tiers(aggregate: DropResult, tiers: Iterable[DropResult]) -> list[str]:
    """Tiers whose drop the aggregate hides.

    The aggregate is *within its historical band* when it does not alarm and
    its point drop is below the floor; every tier that alarms meanwhile (same
    signal and window) is returned, sorted.

    Examples
    --------
    >>> from pipeline.core.quality import SequentialDropTest, Totals
    >>> t = SequentialDropTest(floor=0.05)
    >>> ref = Totals.from_arrays([1.0] * 900 + [0.0] * 100)
    >>> agg = t.test(Totals.from_arrays([1.0] * 880 + [0.0] * 120), ref)
    >>> cheap = t.test(Totals.from_arrays([1.0] * 150 + [0.0] * 50), ref, tier="cheap")
    >>> masked_tiers(agg, [cheap])
    ['cheap']
    """
    if aggregate.alarm or aggregate.drop >= aggregate.floor:
        return []
    return sorted(
        r.tier
        for r in tiers
        if r.alarm
        and r.tier is not None
        and (aggregate.signal is None or r.signal == aggregate.signal)
        and (aggregate.window is None or r.window == aggregate.window)
    )
