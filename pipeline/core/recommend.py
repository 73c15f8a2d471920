"""Threshold policy: per-band evidence → a bounded, hysteretic threshold recommendation.

Objective. Routing one request cheap saves ``s`` dollars of inference and costs
``gap × c`` in expected extra support contacts (``gap``: the band's extra contacts per
request on the cheap tier, ``c``: the price of a contact). A band is worth routing cheap
when it pays for its hidden cost, ``gap ≤ s / c`` (the *break-even gap*), and stays within
the quality floor, ``gap ≤ tolerance``. Their minimum is the band's **allowance**. Because
``cheap_above`` is one threshold, the cheap region is every band above it, so:

- the *safe* target is the lowest band edge above which **every** band is within its
  allowance with confidence (upper bound of the gap ≤ allowance, enough evidence);
- bands above the threshold that exceed their allowance with confidence (lower bound of
  the gap > allowance) push the threshold above the highest of them;
- otherwise the policy holds, and says why (too little evidence, or an interval that
  straddles the allowance).

Each decision moves ``cheap_above`` by at most ``max_step``, at most once per
``cooldown_s``, and toward cheap never by less than ``hysteresis`` (a move toward capable
on confident harm goes all the way to the edge of the harmful band: stopping just short
of it would leave the threshold inside the band it condemned); ``capable_below`` keeps
its distance (the uncertain band's width). ``cheap_above`` may reach 1.0: no confident-cheap region
is left when even the band of the most confidently simple queries is harmful.

Evidence is pooled per band over a rolling window, so a band is described faithfully
only when the window's routing was the same across the whole band. Two rules keep the
policy from reacting to a mixture it created itself:

- once harm sends ``cheap_above`` up toward a goal, it keeps going until it gets there
  (half-way, the harmful band straddles the threshold and its pooled evidence, mostly
  from the fine cheap part, looks acceptable);
- after a move toward capable, a move back toward cheap waits until the evidence
  window (``evidence_window_s``) holds only traffic routed since.

While drift fires, a decision may only move toward the capable tier: ``cheap_above``
never goes down and the exploration rate never goes up, so no score's probability of
going cheap rises. Exploration is lowered to its floor when the cheap tier is confidently
beyond its allowance in the whole uncertain band: more exploration there buys no
information the policy needs and costs quality. Intervals are score intervals (Wilson,
Newcombe for the gap): support contacts are rare, and the Wald interval is far too
narrow at small counts.

>>> ev = [BandEvidence(lo=i / 10, hi=(i + 1) / 10, gap=0.0 if i >= 5 else 0.2,
...                    gap_lo=-0.001 if i >= 5 else 0.15, gap_hi=0.001 if i >= 5 else 0.25,
...                    n=500, live_share=0.1) for i in range(10)]
>>> th = Thresholds(cheap_above=0.8, capable_below=0.7, exploration_rate=0.1)
>>> d = Policy(PolicyConfig(max_step=0.1)).decide(th, ev, now=0.0, drift_firing=False)
>>> round(d.thresholds.cheap_above, 3), d.moved
(0.7, True)
>>> d = Policy().decide(th, ev, now=0.0, drift_firing=False, break_even_gap=0.0005)
>>> d.moved, d.reasons[0]
(False, 'hold: no confident evidence to move cheap_above')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.schemas import Thresholds


@dataclass(frozen=True, slots=True)
class BandEvidence:
    """Quality evidence for one score band ``[lo, hi)``.

    ``gap`` is the estimated extra bad-outcome rate of cheap over capable (positive:
    cheap is worse) with a confidence interval ``[gap_lo, gap_hi]`` from ``n`` effective
    cheap-tier observations; ``live_share`` is the band's share of live traffic (from the
    live score histogram).
    """

    lo: float
    hi: float
    gap: float | None
    gap_lo: float | None
    gap_hi: float | None
    n: float
    live_share: float

    @classmethod
    def from_counts(cls, lo: float, hi: float, *, cheap_bad: float, cheap_n: float,
                    capable_bad: float, capable_n: float, live_share: float = 0.0,
                    z: float = 2.326) -> BandEvidence:
        """Evidence from bad-outcome counts: ``gap`` is cheap's bad rate minus capable's,
        with Newcombe's hybrid score interval (from each rate's Wilson interval).

        Bad outcomes such as support contacts are rare (≈0.5 %), where the Wald interval
        ``p(1−p)/n`` is far too narrow: a band with no contact yet would look certain.
        The score interval stays honest at small counts. ``z`` is two-sided for each
        rate; 2.326 gives each bound of the gap about 99 % one-sided coverage.

        >>> e = BandEvidence.from_counts(0.5, 0.6, cheap_bad=0, cheap_n=300,
        ...                              capable_bad=12, capable_n=3000)
        >>> e.gap, round(e.gap_hi, 4)  # no contact among 300 proves little
        (-0.004, 0.0138)
        """
        if cheap_n <= 0 or capable_n <= 0:
            return cls(lo, hi, None, None, None, max(cheap_n, 0.0), live_share)
        p1, p2 = cheap_bad / cheap_n, capable_bad / capable_n
        l1, u1 = wilson(cheap_bad, cheap_n, z)
        l2, u2 = wilson(capable_bad, capable_n, z)
        gap = p1 - p2
        return cls(lo, hi, gap, gap - math.hypot(p1 - l1, u2 - p2),
                   gap + math.hypot(u1 - p1, p2 - l2), cheap_n, live_share)


def wilson(k: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a rate ``k / n`` (``n > 0``).

    >>> [round(x, 4) for x in wilson(0, 100, 1.96)]
    [0.0, 0.037]
    """
    p = min(max(k / n, 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Policy knobs.

    ``tolerance`` is the quality floor in the evidence's units (extra support contacts
    per request); the economic break-even, when the caller knows prices, can only make
    the allowance stricter. ``exploration_bounds`` bound the exploration rate the policy
    sets; ``cheap_above_bounds`` bound ``cheap_above``.
    """

    tolerance: float = 0.005
    min_evidence: float = 200.0
    max_step: float = 0.05
    hysteresis: float = 0.02
    cooldown_s: float = 86400.0
    evidence_window_s: float = 7 * 86400.0
    band_width: float | None = None
    exploration_bounds: tuple[float, float] = (0.02, 0.3)
    cheap_above_bounds: tuple[float, float] = (0.05, 1.0)

    def __post_init__(self) -> None:
        # A bad knob raises here rather than producing a policy that can never move.
        if not self.tolerance >= 0 or not self.min_evidence >= 0:
            raise ValueError("tolerance and min_evidence must be >= 0")
        if not 0 < self.max_step <= 1 or not 0 <= self.hysteresis <= self.max_step:
            raise ValueError("need 0 < max_step <= 1 and 0 <= hysteresis <= max_step: a "
                             "hysteresis above the step would forbid every move")
        if not self.cooldown_s >= 0 or not self.evidence_window_s >= 0:
            raise ValueError("cooldown_s and evidence_window_s must be >= 0")
        lo, hi = self.exploration_bounds
        if not 0 <= lo <= hi <= 1:
            raise ValueError("exploration_bounds must satisfy 0 <= lo <= hi <= 1")
        lo, hi = self.cheap_above_bounds
        if not 0 <= lo <= hi <= 1:
            raise ValueError("cheap_above_bounds must satisfy 0 <= lo <= hi <= 1")


@dataclass(frozen=True, slots=True)
class Decision:
    thresholds: Thresholds
    moved: bool
    reasons: list[str] = field(default_factory=list)
    target: float | None = None
    allowance: float | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A threshold recommendation as a router's state decides it, before the monitor signs
    it into a :class:`~pipeline.schemas.ThresholdRecommendation`.

    >>> th = Thresholds(cheap_above=0.7, capable_below=0.6, exploration_rate=0.1)
    >>> band = BandEvidence(0.7, 0.8, 0.002, 0.001, 0.003, 500.0, 0.2)
    >>> p = Proposal(1, th.model_copy(update={"cheap_above": 0.75}), th, ["gap"], 0.75,
    ...              False, (band,), {"cost_change_per_day_usd": 3.0})
    >>> p.evidence()["bands"][0]["gap"], p.evidence()["drift_firing"]
    (0.002, False)
    """

    seq: int
    thresholds: Thresholds
    previous: Thresholds
    reasons: list[str]
    target: float | None
    drift_firing: bool
    bands: tuple[BandEvidence, ...]
    #: the :class:`~pipeline.schemas.ExpectedImpact` fields
    impact: dict[str, float]

    def evidence(self) -> dict[str, object]:
        """What the recommendation was decided on: the target, whether drift was firing,
        and each band's contact gap of cheap over capable."""
        return {"target": self.target, "drift_firing": self.drift_firing,
                "bands": [{"lo": b.lo, "hi": b.hi, "gap": b.gap, "gap_lo": b.gap_lo,
                           "gap_hi": b.gap_hi, "n": b.n, "live_share": b.live_share}
                          for b in self.bands]}


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _band(b: BandEvidence) -> str:
    return f"band [{_fmt(b.lo)},{_fmt(b.hi)})"


class Policy:
    """Pure threshold policy; the caller owns the cooldown clock via ``last_change``."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self.last_change: float | None = None
        # where confident harm sent cheap_above; kept until reached (see ``decide``)
        self.goal: float | None = None
        self.last_up: float | None = None  # time of the last move toward capable

    def allowance(self, break_even_gap: float | None = None) -> tuple[float, str]:
        """The largest acceptable gap per band, and a sentence saying where it comes from."""
        tol = self.config.tolerance
        if break_even_gap is None or not math.isfinite(break_even_gap) or break_even_gap >= tol:
            return tol, f"allowance {tol:.4f} (quality floor)"
        return (break_even_gap, f"allowance {break_even_gap:.4f} (break-even: a cheap request "
                f"saves less than the hidden cost of a larger gap; quality floor {tol:.4f})")

    def acceptable(self, b: BandEvidence, allowance: float) -> bool:
        """Confidently within the allowance, on enough evidence."""
        return (b.gap_hi is not None and b.n >= self.config.min_evidence
                and b.gap_hi <= allowance)

    def harmful(self, b: BandEvidence, allowance: float) -> bool:
        """Confidently beyond the allowance, on enough evidence."""
        return (b.gap_lo is not None and b.n >= self.config.min_evidence
                and b.gap_lo > allowance)

    def target(self, bands: Sequence[BandEvidence],
               allowance: float | None = None) -> tuple[float | None, list[str]]:
        """The lowest ``cheap_above`` whose cheap region is confidently acceptable, or None,
        with the reason the walk down from the top band stopped."""
        c = self.config
        allowance = c.tolerance if allowance is None else allowance
        target: float | None = None
        reasons: list[str] = []
        for b in sorted(bands, key=lambda b: b.lo, reverse=True):
            if b.n < c.min_evidence or b.gap_hi is None:
                reasons.append(f"{_band(b)} has {b.n:.0f} < {c.min_evidence:.0f} observations")
                break
            if b.gap_hi > allowance:
                reasons.append(f"{_band(b)} gap upper bound {b.gap_hi:.4f} exceeds "
                               f"allowance {allowance:.4f}")
                break
            target = b.lo
        return target, reasons

    def decide(self, current: Thresholds, bands: Sequence[BandEvidence], *, now: float,
               drift_firing: bool, break_even_gap: float | None = None) -> Decision:
        """Move toward cheap only on confident evidence that every cheap band is within its
        allowance; toward capable on confident evidence that one exceeds it; otherwise
        hold, and say why. ``break_even_gap`` is the saving of a cheap request divided by
        the price of a support contact (None: no economics, the quality floor alone)."""
        c = self.config
        width = c.band_width if c.band_width is not None else (
            current.cheap_above - current.capable_below)
        allowed, basis = self.allowance(break_even_gap)
        safe, why = self.target(bands, allowed)
        cooling = self.last_change is not None and now - self.last_change < c.cooldown_s
        tail = [*why, basis]
        # bands above the threshold beyond their allowance with confidence push it up
        bad = [b for b in bands if b.hi > current.cheap_above and self.harmful(b, allowed)]
        lo_b, hi_b = c.cheap_above_bounds
        if self.goal is not None and current.cheap_above >= self.goal:
            self.goal = None  # reached
        target: float | None = None
        harm = bool(bad) or self.goal is not None
        if bad:
            top = max(bad, key=lambda b: b.hi)
            target = min(hi_b, max(lo_b, top.hi))
            self.goal = target
            tail.insert(0, f"cheap tier beyond its allowance with confidence up to "
                           f"{_fmt(top.hi)}: {_band(top)} gap lower bound {top.gap_lo:.4f}")
        elif self.goal is not None:
            # Half-way up, the band that showed the harm straddles cheap_above: its evidence
            # then mixes the (fine) cheap part with exploration of the harmful part and
            # looks acceptable. Stopping or turning back on it would oscillate; finish the
            # move, and let evidence from whole bands speak at the goal.
            target = self.goal
            tail.insert(0, f"continuing toward {_fmt(target)}, where harm was found")
        elif safe is not None and safe < current.cheap_above:
            target = safe
        head: str
        cheap_above = current.cheap_above
        if target is None:
            head = "hold: no confident evidence to move cheap_above"
        else:
            target = min(hi_b, max(lo_b, target))
            delta = target - current.cheap_above
            since_up = None if self.last_up is None else now - self.last_up
            if drift_firing and delta < 0:
                head = "hold: drift firing, thresholds may only move toward capable"
            elif delta < 0 and since_up is not None and since_up < c.evidence_window_s:
                # the window still holds traffic routed before that move, which flatters
                # the bands it took away from cheap: turn back only on fresh evidence
                head = (f"hold: the last move toward capable was {since_up:.0f}s ago; moving "
                        f"back needs a full evidence window ({c.evidence_window_s:.0f}s) "
                        f"routed since")
            elif abs(delta) < c.hysteresis and not harm:
                head = (f"hold: target {_fmt(target)} within hysteresis {c.hysteresis:.3f} "
                        f"of {_fmt(current.cheap_above)}")
            elif cooling:
                assert self.last_change is not None
                head = f"hold: cooldown, last change {now - self.last_change:.0f}s ago"
            else:
                cheap_above = current.cheap_above + max(-c.max_step, min(c.max_step, delta))
                head = (f"cheap_above {_fmt(current.cheap_above)} → {_fmt(cheap_above)} "
                        f"toward target {_fmt(target)}")
        exploration = self._exploration(current, bands, allowed, cheap_above, width, cooling,
                                        tail)
        return self._result(current, cheap_above, width, exploration, [head, *tail], target,
                            now, allowed)

    def _exploration(self, current: Thresholds, bands: Sequence[BandEvidence],
                     allowed: float, cheap_above: float, width: float, cooling: bool,
                     reasons: list[str]) -> float:
        """The exploration rate: lowered to its floor when the cheap tier is confidently
        beyond its allowance in every band the uncertain band overlaps; never raised."""
        lo_e = self.config.exploration_bounds[0]
        rate = current.exploration_rate
        window_lo = max(0.0, cheap_above - width)
        inside = [b for b in bands if b.hi > window_lo and b.lo < cheap_above]
        if (cooling or rate <= lo_e or not inside
                or not all(self.harmful(b, allowed) for b in inside)):
            return rate
        reasons.append(f"exploration {rate:.3f} → {lo_e:.3f}: the cheap tier is beyond its "
                       f"allowance with confidence across the uncertain band "
                       f"[{_fmt(window_lo)},{_fmt(cheap_above)})")
        return lo_e

    def _result(self, current: Thresholds, cheap_above: float, width: float,
                exploration: float, reasons: list[str], target: float | None,
                now: float, allowance: float) -> Decision:
        if (cheap_above, exploration) == (current.cheap_above, current.exploration_rate):
            return Decision(current, False, reasons, target, allowance)  # exactly a hold
        if cheap_above > current.cheap_above:
            self.last_up = now
        cheap_above = round(cheap_above, 6)
        proposed = Thresholds(cheap_above=cheap_above,
                              capable_below=round(max(0.0, cheap_above - width), 6),
                              exploration_rate=exploration,  # as is: never rounded up
                              escalate_below=current.escalate_below)
        self.last_change = now
        return Decision(proposed, True, reasons, target, allowance)

    def to_dict(self) -> dict[str, float | None]:
        return {"last_change": self.last_change, "goal": self.goal, "last_up": self.last_up}

    def load(self, state: dict[str, float | None]) -> Policy:
        self.last_change = state.get("last_change")
        self.goal = state.get("goal")
        self.last_up = state.get("last_up")
        return self
