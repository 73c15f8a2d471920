"""Threshold policy: per-band evidence → a bounded, hysteretic threshold recommendation.

The policy moves ``cheap_above`` to the lowest band edge above which the cheap tier
stays within ``tolerance`` of the capable tier *with confidence*: every band above it
must have enough evidence and an upper confidence bound of the quality gap within the
tolerance. Bands just above the current threshold that show a gap beyond the tolerance
with confidence push it up. It moves at most ``max_step`` per decision, never by less
than ``hysteresis``, at most once per ``cooldown_s``, and while drift fires only toward
the capable tier (with exploration raised to learn faster).

>>> ev = [BandEvidence(lo=i / 10, hi=(i + 1) / 10, gap=0.0 if i >= 5 else 0.2,
...                    gap_lo=-0.001 if i >= 5 else 0.15, gap_hi=0.001 if i >= 5 else 0.25,
...                    n=500, live_share=0.1) for i in range(10)]
>>> th = Thresholds(cheap_above=0.8, capable_below=0.7, exploration_rate=0.1)
>>> d = Policy(PolicyConfig(max_step=0.1)).decide(th, ev, now=0.0, drift_firing=False)
>>> round(d.thresholds.cheap_above, 3), d.moved
(0.7, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.schemas import Thresholds


@dataclass(frozen=True, slots=True)
class BandEvidence:
    """Quality evidence for one score band ``[lo, hi)``.

    ``gap`` is the estimated quality of capable minus cheap (positive: cheap is worse)
    with a confidence interval ``[gap_lo, gap_hi]`` from ``n`` effective observations;
    ``live_share`` is the band's share of live traffic (from the live score histogram).
    """

    lo: float
    hi: float
    gap: float | None
    gap_lo: float | None
    gap_hi: float | None
    n: float
    live_share: float


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    tolerance: float = 0.005  # in the evidence's units: support contacts per request
    min_evidence: float = 200.0
    max_step: float = 0.05
    hysteresis: float = 0.02
    cooldown_s: float = 86400.0
    band_width: float | None = None
    exploration_bounds: tuple[float, float] = (0.02, 0.3)
    drift_exploration_factor: float = 2.0
    cheap_above_bounds: tuple[float, float] = (0.05, 0.99)


@dataclass(frozen=True, slots=True)
class Decision:
    thresholds: Thresholds
    moved: bool
    reasons: list[str] = field(default_factory=list)
    target: float | None = None


def _fmt(x: float) -> str:
    return f"{x:.3f}"


class Policy:
    """Pure threshold policy; the caller owns the cooldown clock via ``last_change``."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.last_change: float | None = None

    def target(self, bands: Sequence[BandEvidence]) -> tuple[float | None, list[str]]:
        """The evidence-backed ``cheap_above``, or None with the reasons when unknown."""
        c = self.config
        ordered = sorted(bands, key=lambda b: b.lo)
        target: float | None = None
        reasons: list[str] = []
        for b in reversed(ordered):  # walk down from the most confident-simple band
            if b.n < c.min_evidence or b.gap_hi is None:
                reasons.append(f"band [{_fmt(b.lo)},{_fmt(b.hi)}) has {b.n:.0f} < "
                               f"{c.min_evidence:.0f} observations")
                break
            if b.gap_hi > c.tolerance:
                reasons.append(f"band [{_fmt(b.lo)},{_fmt(b.hi)}) gap upper bound "
                               f"{b.gap_hi:.3f} exceeds tolerance {c.tolerance:.3f}")
                break
            target = b.lo
        return target, reasons

    def decide(self, current: Thresholds, bands: Sequence[BandEvidence], *, now: float,
               drift_firing: bool) -> Decision:
        """Move toward cheap only on confident evidence of no harm; toward capable only on
        confident evidence of harm; otherwise hold, and say why."""
        c = self.config
        width = c.band_width if c.band_width is not None else (
            current.cheap_above - current.capable_below)
        safe, why = self.target(bands)
        reasons = list(why)
        target: float | None = None
        # bands above the threshold with a confident gap push the threshold up
        bad = [b for b in bands if b.hi > current.cheap_above and b.gap_lo is not None
               and b.n >= c.min_evidence and b.gap_lo > c.tolerance]
        if bad:
            target = max(b.hi for b in bad)
            reasons.append(f"cheap tier worse than tolerance with confidence up to "
                           f"{_fmt(target)}")
        elif safe is not None and safe < current.cheap_above:
            target = safe
        exploration = current.exploration_rate
        cooling = self.last_change is not None and now - self.last_change < c.cooldown_s
        if drift_firing and not cooling:
            lo, hi = c.exploration_bounds
            exploration = min(hi, max(lo, current.exploration_rate * c.drift_exploration_factor))
            if exploration != current.exploration_rate:
                reasons.append(f"drift firing: exploration {current.exploration_rate:.3f} → "
                               f"{exploration:.3f}")
        if target is None:
            reasons.insert(0, "hold: no confident evidence to move cheap_above")
            return self._result(current, current.cheap_above, width, exploration, reasons,
                                safe, now)
        lo_b, hi_b = c.cheap_above_bounds
        target = min(hi_b, max(lo_b, target))
        delta = target - current.cheap_above
        if drift_firing and delta < 0:
            reasons.insert(0, "hold: drift firing, thresholds may only move toward capable")
            return self._result(current, current.cheap_above, width, exploration, reasons,
                                target, now)
        if abs(delta) < c.hysteresis:
            reasons.insert(0, f"hold: target {_fmt(target)} within hysteresis "
                              f"{c.hysteresis:.3f} of {_fmt(current.cheap_above)}")
            return self._result(current, current.cheap_above, width, exploration, reasons,
                                target, now)
        if self.last_change is not None and now - self.last_change < c.cooldown_s:
            reasons.insert(0, f"hold: cooldown, last change {now - self.last_change:.0f}s ago")
            return self._result(current, current.cheap_above, width, exploration, reasons,
                                target, now)
        step = max(-c.max_step, min(c.max_step, delta))
        new = current.cheap_above + step
        reasons.insert(0, f"cheap_above {_fmt(current.cheap_above)} → {_fmt(new)} "
                          f"toward target {_fmt(target)}")
        return self._result(current, new, width, exploration, reasons, target, now)

    def _result(self, current: Thresholds, cheap_above: float, width: float,
                exploration: float, reasons: list[str], target: float | None,
                now: float) -> Decision:
        cheap_above = round(cheap_above, 6)
        proposed = Thresholds(cheap_above=cheap_above,
                              capable_below=round(max(0.0, cheap_above - width), 6),
                              exploration_rate=round(exploration, 6),
                              escalate_below=current.escalate_below)
        moved = proposed != current
        if moved:
            self.last_change = now
        return Decision(proposed, moved, reasons, target)

    def to_dict(self) -> dict[str, float | None]:
        return {"last_change": self.last_change}

    def load(self, state: dict[str, float | None]) -> Policy:
        self.last_change = state.get("last_change")
        return self
