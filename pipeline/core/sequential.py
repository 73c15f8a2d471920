"""Sequential drift detection that adapts to the size of the change.

A binned stream is watched against its expected distribution ``p`` (the baseline, or the
baseline truncated to a tier under the thresholds in force) along a few *directions*
(:func:`tilt_directions`: location and spread both ways, and mass rising in any of a
multi-scale family of intervals of the distribution's quantiles). Along direction ``g``
the alternative of size ``θ`` is the exponential tilt ``q_θ ∝ p·exp(θ·g)``; an event in
bin ``j`` has the likelihood ratio ``exp(θ g_j − ψ(θ))`` with ``ψ(θ) = ln Σ p exp(θ g)``.

No single ``θ`` suits every change: a small tilt is slow on a large change, and a large
tilt never accumulates on a small one (its expected log-likelihood ratio is negative
once the change is below about ``θ/2``). :class:`TiltMixture` therefore runs a
**mixture Shiryaev–Roberts** statistic over a grid of tilts (factor 2 apart, 0.02 to
1.28 standard deviations of the direction's statistic) and every direction, with prior
weights ``w_c`` summing to 1 (:func:`direction_weights`: half on location and spread,
half on the intervals, even over the tilts):

.. math::

    R_{c,t} = (1 + R_{c,t-1})\\,L_{c,t}, \\qquad R_t = \\sum_c w_c R_{c,t}

where ``L_{c,t}`` is component ``c``'s likelihood ratio of the events of step ``t``.

**False-alarm bound (no grid correction).** Under no change each ``L_{c,t}`` has
conditional mean 1, so ``E[R_{c,t} | past] = 1 + R_{c,t-1}``: ``R_t − t`` is a
martingale and ``R_t`` a non-negative submartingale with ``E[R_t] = t``. Doob's maximal
inequality gives ``P(max_{t≤m} R_t ≥ A) ≤ m/A`` for any horizon of ``m`` steps, and
optional stopping gives a mean time to false alarm of at least ``A`` steps (Pollak's
bound for Shiryaev–Roberts). The weights sum to 1, so the grid and the directions cost
nothing in the threshold: the mixture's martingale is a single test. Capping each
``R_c`` (so that an alarm clears once the drift is gone) and skipping steps without
events only lower the statistic path by path, so the bound stands. With ``m`` the steps
of 30 days and ``S`` streams, ``A = m·S/budget`` spends ``budget`` false alarms per 30
days, exactly the accounting the single-tilt CUSUM used (which also paid for its 14
directions in the threshold). What the directions do cost is delay: a change along one
component needs ``ln(1/w_c)`` nats more than the threshold (about 4 for location or
spread, 6.6 for one of the 52 intervals at the default ``n_coarse``).

**Why intervals.** A change that the directions do not span is seen only through its
projection on the best of them. A cohort of 2–10 % of traffic scored inside a narrow
band (hard queries that look simple) is such a change: with ten fixed equal-mass
slices, a band that straddles two of them kept only 20–45 % of the per-event
information (its Kullback–Leibler divergence), and the mixture needed two to five
times the ideal number of events. Intervals of 1, 2, 4 and 8 twentieths of the mass,
overlapping by half, keep about 60–65 % of it for a band of any width and position
(median over 300 random bands of 2–20 % of the score range), and contain the ten
slices, so no band does much worse than before.

**A baseline is a sample.** ``p`` is estimated from ``N`` baseline scores; along a
standardized direction its mean is off by about ``1/√N``, which a small tilt would
detect given enough live traffic. Each component therefore gets an allowance:
``ψ(θ) + θ·b`` with ``b = z/√N``: the likelihood ratio stays a supermartingale for any
true distribution whose mean along the direction is within ``b`` of the baseline's,
which holds for all directions at once with probability at least 0.99 over the
baseline's draw when ``z`` is the Bonferroni quantile for their number
(:func:`bonferroni_z`: 3.57 for the default 56). The allowance is what bounds the
detection of a *slow* change: along a direction whose true mean has moved by ``μ``
standard deviations, the best tilt gains only about ``(μ − b)²/2`` nats per event, so a
ramp is seen once ``μ`` is well past ``b`` (0.008 sd with a 200k-value baseline). A
detector that compares the stream with its own recent past (ADWIN) has no such floor;
a larger baseline lowers it.

**What changed, and how much.** A CUSUM per component (``max(0, W + ln L)``) runs
beside the mixture; the component with the largest weighted statistic gives the
direction and the change-point estimate (:attr:`since`, the start of its excursion),
and the mean of the direction's statistic since then gives the maximum-likelihood
tilt. :meth:`TiltMixture.estimate` turns that tilt into the KS distance and PSI of the
fitted alternative ``q_θ`` against ``p``: the size that the effect floors are compared
with, without the small-sample bias of a windowed KS.

>>> rng = np.random.default_rng(0)
>>> p = np.full(50, 0.02)
>>> m = TiltMixture(threshold=12.0, step_seconds=60.0)
>>> t = np.sort(rng.uniform(0, 3600, 4000))
>>> m.add(t, rng.integers(0, 50, t.size), p)
>>> m.advance(3600.0)
False
>>> shifted = np.minimum(rng.integers(0, 50, t.size) + 8, 49)   # mass moves up
>>> m.add(t + 3600, shifted, p)
>>> m.advance(7200.0), m.worst()[0]
(True, 'location+')
>>> e = m.estimate()
>>> e.direction, 0.1 < e.ks < 0.25
('location+', True)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.core.histogram import coarse_splits

FloatArray = NDArray[np.float64]

#: Tilts of the mixture, in standard deviations of a direction's statistic.
DEFAULT_TILTS: tuple[float, ...] = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
#: Probability, over the baseline's draw, that its estimate is off by more than the
#: allowance along some direction (:func:`bonferroni_z`).
ALLOWANCE_MISS = 0.01
_NO_STEP = -(2**62)


def tilt_directions(probs: FloatArray, n_coarse: int = 10) -> tuple[list[str], FloatArray]:
    """Directions in which a distribution over fine bins can move, standardized under it.

    With ``u`` the mid-rank of each bin under ``probs`` (its probability integral
    transform, uniform under no change), the directions are

    * the first two Legendre polynomials of ``u`` in both signs (location and spread:
      Neyman's smooth-test components), the *smooth* directions;
    * the indicators of *intervals* of ``u`` at several scales (a new mode, a cohort, a
      heavier tail, wherever it sits and however wide): ``u`` is cut into
      ``2·n_coarse`` equal-mass cells, and an interval is ``L`` adjacent cells for
      ``L`` = 1, 2, 4, … up to half of them, starting every ``max(L/2, 1)`` cells. Any
      interval of ``u`` then overlaps one of them by at least about half of the
      larger's width, and the ``n_coarse`` equal-mass slices (``L = 2`` at even starts)
      are among them. An interval is named by its quantile range of ``probs`` in
      percent: ``q10-20`` means mass rose between the 10th and 20th percentiles.

    Each column has mean 0 and variance 1 under ``probs``; bins without mass get 0.
    Degenerate directions (no variance) and repeats of an earlier column (a truncation
    with few bins) are dropped.

    >>> names, g = tilt_directions(np.full(100, 0.01), n_coarse=2)
    >>> names[4:]  # after location± and spread±
    ['q0-25', 'q25-50', 'q50-75', 'q75-100', 'q0-50', 'q25-75', 'q50-100']
    >>> p = np.full(100, 0.01)
    >>> np.allclose(p @ g, 0), np.allclose(p @ g**2, 1)
    (True, True)
    """
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum()
    u = np.cumsum(p) - p / 2
    x = 2.0 * u - 1.0
    raw: list[tuple[str, FloatArray]] = [
        ("location+", x), ("location-", -x),
        ("spread+", 1.5 * x**2 - 0.5), ("spread-", 0.5 - 1.5 * x**2)]
    cells = 2 * n_coarse
    cell = np.minimum((u * cells).astype(np.int64), cells - 1)
    length = 1
    while length <= max(cells // 2, 1):
        for a in range(0, cells - length + 1, max(length // 2, 1)):
            name = f"q{100 * a / cells:g}-{100 * (a + length) / cells:g}"
            raw.append((name, ((cell >= a) & (cell < a + length)).astype(np.float64)))
        length *= 2
    names, cols, seen = [], [], set()
    for name, g in raw:
        mean = float(p @ g)
        sd = math.sqrt(max(float(p @ (g - mean) ** 2), 0.0))
        if sd > 1e-9:
            col = np.where(p > 0, (g - mean) / sd, 0.0)
            key = np.round(col, 12).tobytes()
            if key not in seen:
                seen.add(key)
                names.append(name)
                cols.append(col)
    return names, np.stack(cols, axis=1)


def is_smooth(name: str) -> bool:
    """Location and spread (the smooth directions), as against an interval's."""
    return name.startswith(("location", "spread"))


def direction_weights(names: list[str], smooth_share: float = 0.5) -> FloatArray:
    """Prior weights of the directions, summing to 1: ``smooth_share`` spread evenly
    over the smooth directions, the rest over the intervals (all to one group when the
    other has none). The mixture's threshold needs no correction for them.

    >>> w = direction_weights(["location+", "location-", "q0-50", "q50-100", "q25-75"])
    >>> w.round(3).tolist()
    [0.25, 0.25, 0.167, 0.167, 0.167]
    """
    smooth = np.array([is_smooth(n) for n in names], dtype=bool)
    k_s, k_i = int(smooth.sum()), int((~smooth).sum())
    share = smooth_share if k_s and k_i else (1.0 if k_s else 0.0)
    w = np.where(smooth, share / max(k_s, 1), (1.0 - share) / max(k_i, 1))
    return w / w.sum()


@functools.lru_cache(maxsize=16)
def n_directions(n_coarse: int) -> int:
    """How many directions :func:`tilt_directions` gives a distribution with enough
    bins (none degenerate).

    >>> n_directions(10)
    56
    """
    cells = 8 * n_coarse
    return len(tilt_directions(np.full(cells, 1.0 / cells), n_coarse)[0])


def bonferroni_z(n_directions: int, miss: float = 0.01) -> float:
    """Standard errors of the baseline's allowance for ``n_directions`` directions: the
    one-sided normal quantile at ``miss / n_directions`` (Bonferroni), so that the
    baseline's estimate is within its allowance along every direction with probability
    at least ``1 - miss`` over the baseline's draw.

    >>> round(bonferroni_z(14), 2), round(bonferroni_z(56), 2)
    (3.19, 3.57)
    """
    return NormalDist().inv_cdf(1.0 - miss / max(n_directions, 1))


def log_mgf(probs: FloatArray, g: FloatArray, tilts: FloatArray) -> FloatArray:
    """``ψ(θ) = ln Σ_j p_j exp(θ g_j)`` for every column of ``g`` and every tilt
    (directions × tilts), computed stably.

    >>> p = np.array([0.5, 0.5]); g = np.array([[-1.0], [1.0]])
    >>> bool(np.isclose(log_mgf(p, g, np.array([0.7]))[0, 0], np.log(np.cosh(0.7))))
    True
    """
    p = np.asarray(probs, dtype=np.float64)
    keep = p > 0
    lp = np.log(p[keep])
    z = g[keep][:, :, None] * np.asarray(tilts)[None, None, :]  # bins × D × K
    top = z.max(axis=0)
    return top + np.log(np.einsum("j,jdk->dk", np.exp(lp), np.exp(z - top)))


@dataclass(frozen=True, slots=True)
class DriftEstimate:
    """The size and direction of a drift, as :meth:`TiltMixture.estimate` fits it.

    ``shift_sd`` is the mean of the direction's standardized statistic since the change
    (0 under no change); ``tilt`` the maximum-likelihood tilt that matches it; ``ks``
    and ``psi`` those of the fitted alternative against the expected distribution
    (PSI over ``n_coarse`` equal-mass bins); ``since`` the change-point estimate
    (seconds); ``n`` the events since then.

    The excursion that made the test cross is, by selection, one where the noise ran
    with the drift: at the crossing the component's log-likelihood ratio is at least
    the threshold ``h``, which forces ``shift_sd ≳ √(2h/n)`` whatever the true drift
    (+70 % on a 0.1 sd shift in a unit test). ``ks_lower`` and ``psi_lower`` are
    therefore also given at the lower bound ``shift_sd − √(2h/n)`` (the statistic has
    variance about 1 per event; ``h`` the higher threshold: the width of a time-uniform
    bound at the test's own level), and the effect floors are checked against them.
    """

    direction: str
    shift_sd: float
    tilt: float
    ks: float
    psi: float
    since: float | None
    n: int
    ks_lower: float = 0.0
    psi_lower: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "shift_sd": self.shift_sd, "tilt": self.tilt,
                "ks": self.ks, "psi": self.psi, "ks_lower": self.ks_lower,
                "psi_lower": self.psi_lower, "since": self.since, "n": self.n}


class TiltMixture:
    """Mixture Shiryaev–Roberts drift test over tilts and directions (module docstring).

    Parameters
    ----------
    threshold
        ``ln A`` of the higher level (a ticket): alarm when the statistic reaches it.
    info_threshold
        ``ln A`` of the ``info`` level (default: ``threshold``): :attr:`certain`.
    tilts
        The grid of tilts (positive).
    step_seconds
        Events are summed per step; steps close in order when :meth:`advance` passes them,
        so the statistic does not depend on how the events were batched.
    n_coarse
        Equal-mass slices among the directions.
    cap
        Each component's log statistic is capped at ``cap × threshold``, so an alarm
        clears within a bounded time once the drift is gone.
    allowance_z
        The baseline allowance in standard errors (see the module docstring); ``None``:
        :func:`bonferroni_z` of the number of directions at :data:`ALLOWANCE_MISS`.
    smooth_share
        The prior weight of the location and spread directions (:func:`direction_weights`).
    """

    def __init__(self, threshold: float, *, info_threshold: float | None = None,
                 tilts: tuple[float, ...] = DEFAULT_TILTS, step_seconds: float = 60.0,
                 n_coarse: int = 10, cap: float = 2.0, allowance_z: float | None = None,
                 smooth_share: float = 0.5) -> None:
        info = threshold if info_threshold is None else info_threshold
        if not (threshold > 0 and info > 0 and math.isfinite(threshold) and math.isfinite(info)):
            raise ValueError("thresholds must be positive and finite")
        if not (step_seconds > 0 and tilts and min(tilts) > 0 and cap >= 1
                and (allowance_z is None or allowance_z >= 0) and 0 <= smooth_share <= 1):
            raise ValueError("need step_seconds > 0, positive tilts, cap >= 1, allowance_z "
                             ">= 0 and smooth_share in [0, 1]")
        self.threshold, self.info_threshold = float(threshold), float(info)
        self.tilts = np.asarray(sorted(tilts), dtype=np.float64)
        self.step_seconds, self.n_coarse = float(step_seconds), int(n_coarse)
        self.cap = float(cap)
        self.allowance_z = None if allowance_z is None else float(allowance_z)
        self.smooth_share = float(smooth_share)
        self.names: list[str] = []
        k = self.tilts.size
        self.log_r = np.full((0, k), -np.inf)  # log R per component (direction × tilt)
        self.log_w = np.zeros((0, k))  # log prior weight per component (sum of w: 1)
        self.cusum = np.zeros((0, k))
        self.since = np.zeros((0, k), dtype=np.int64)  # step its excursion began; -1: none
        # running totals of each direction's statistic and of the events, and their
        # values when each component's excursion began: the excursion's sums are the
        # differences (two array writes a step instead of four)
        self.cum_x = np.zeros(0)
        self.cum_n = 0.0
        self.base_x = np.zeros((0, k))
        self.base_n = np.zeros((0, k))
        self.pending: dict[int, dict[bytes, NDArray[np.int64]]] = {}
        self.closed = _NO_STEP  # steps up to here are closed
        self.events = 0
        # per (expected distribution, baseline size): directions g (bins × D, aligned with
        # self.names), ψ(θ) + θ·b (D × K) and the distribution itself
        self._tables: dict[bytes, tuple[FloatArray, FloatArray, FloatArray]] = {}
        self._latest: bytes | None = None
        self._stat: float | None = None  # cached until a step closes
        self._estimate: tuple[tuple[int, int, bytes | None], DriftEstimate | None] | None = None

    # -- input ------------------------------------------------------------------------
    def _for(self, probs: FloatArray, baseline_n: float | None) -> bytes:
        key = probs.tobytes() + np.float64(baseline_n or 0.0).tobytes()
        if key not in self._tables:
            if len(self._tables) >= 64:  # thresholds come and go; drop an idle truncation
                busy = {k for per in self.pending.values() for k in per} | {self._latest}
                idle = next((k for k in self._tables if k not in busy), None)
                if idle is not None:
                    del self._tables[idle]
            p = probs / probs.sum()
            names, g = tilt_directions(p, self.n_coarse)
            if not self.names:
                self._start(names)
            elif names != self.names:
                # a truncation that lost a direction (no variance left): it adds nothing
                cols = [names.index(n) if n in names else -1 for n in self.names]
                g = np.stack([g[:, c] if c >= 0 else np.zeros(p.size) for c in cols], axis=1)
            b = 0.0 if not baseline_n else self.z / math.sqrt(baseline_n)
            psi = log_mgf(p, g, self.tilts) + b * self.tilts[None, :]
            self._tables[key] = (g, psi, p)
        self._latest = key
        return key

    @property
    def z(self) -> float:
        """The baseline allowance in standard errors (``allowance_z``, or the
        Bonferroni quantile for the directions in use)."""
        if self.allowance_z is not None:
            return self.allowance_z
        return bonferroni_z(n_directions(self.n_coarse), ALLOWANCE_MISS)

    def _start(self, names: list[str]) -> None:
        self.names = names
        shape = (len(names), self.tilts.size)
        w = direction_weights(names, self.smooth_share)
        self.log_w = np.repeat(np.log(w / self.tilts.size)[:, None], self.tilts.size, axis=1)
        self.log_r = np.full(shape, -np.inf)
        self.cusum = np.zeros(shape)
        self.since = np.full(shape, -1, dtype=np.int64)
        self.cum_x = np.zeros(len(names))
        self.base_x = np.zeros(shape)
        self.base_n = np.zeros(shape)

    def add(self, ts: FloatArray, bins: NDArray[np.intp], probs: FloatArray,
            baseline_n: float | None = None) -> None:
        """Count events at times ``ts`` in fine ``bins``, to be scored against ``probs``
        (estimated from ``baseline_n`` baseline values; ``None``: exact)."""
        if ts.size == 0:
            return
        p = np.asarray(probs, dtype=np.float64)
        key = self._for(p, baseline_n)
        steps = np.maximum(np.floor(ts / self.step_seconds).astype(np.int64), self.closed + 1)
        order = np.argsort(steps, kind="stable")
        steps, b = steps[order], np.asarray(bins)[order]
        cuts = np.flatnonzero(np.diff(steps)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, steps.size], strict=True):
            self._pend(int(steps[lo]), key, np.bincount(b[lo:hi], minlength=p.size))

    def add_counts(self, ts: float, counts: NDArray[np.int64], probs: FloatArray,
                   baseline_n: float | None = None) -> None:
        """Count pre-binned events (``counts`` per fine bin) at time ``ts``."""
        key = self._for(np.asarray(probs, dtype=np.float64), baseline_n)
        step = max(math.floor(ts / self.step_seconds), self.closed + 1)
        self._pend(step, key, np.asarray(counts, dtype=np.int64))

    def _pend(self, step: int, key: bytes, counts: NDArray[np.int64]) -> None:
        per = self.pending.setdefault(step, {})
        acc = per.get(key)
        per[key] = counts if acc is None else acc + counts

    # -- steps ------------------------------------------------------------------------
    def advance(self, now: float) -> bool:
        """Close every step that ends at or before ``now``; return :attr:`certain`."""
        last = math.floor(now / self.step_seconds) - 1
        if last <= self.closed:
            return self.certain
        cap = self.cap * max(self.threshold, self.info_threshold)
        theta = self.tilts
        for s in sorted(k for k in self.pending if k <= last):
            per = self.pending.pop(s)
            llr: FloatArray | None = None
            xs: FloatArray | None = None
            n = 0
            for key in sorted(per):
                g, psi, _ = self._tables[key]
                counts = per[key]
                k = int(counts.sum())
                if k == 0:
                    continue
                x = counts @ g
                part = np.multiply.outer(x, theta)
                part -= k * psi
                llr = part if llr is None else llr + part
                xs = x if xs is None else xs + x
                n += k
            if llr is None or xs is None:
                continue  # no information: no new restart either (module docstring)
            self.events += n
            lr = self.log_r
            np.logaddexp(0.0, lr, out=lr)
            lr += llr
            np.minimum(lr, cap, out=lr)
            w = self.cusum
            fresh = w <= 0
            w += llr
            up = w > 0
            fresh &= up
            np.copyto(self.since, s, where=fresh)
            np.copyto(self.since, -1, where=~up)
            np.copyto(self.base_x, self.cum_x[:, None], where=fresh)
            np.copyto(self.base_n, self.cum_n, where=fresh)
            self.cum_x += xs
            self.cum_n += n
            np.maximum(w, 0.0, out=w)
            np.minimum(w, cap, out=w)
            self._stat = None
        self.closed = last
        return self.certain

    # -- reads ------------------------------------------------------------------------
    @property
    def statistic(self) -> float:
        """``ln R``: the log of the mixture statistic (``-inf`` before any event)."""
        if self._stat is None:
            lw = self.log_r + self.log_w
            top = float(lw.max()) if self.names else -math.inf
            self._stat = -math.inf if top == -math.inf else (
                top + math.log(float(np.exp(lw - top).sum())))
        return self._stat

    def _reaches(self, threshold: float) -> bool:
        # ln R is a weighted log-mean of exponentials (weights summing to 1), never
        # above the largest: that one is checked first, so that a quiet step costs one
        # reduction
        if self._stat is None and (not self.names or float(self.log_r.max()) < threshold):
            return False
        return self.statistic >= threshold

    @property
    def alarm(self) -> bool:
        """At or above the higher level's threshold."""
        return self._reaches(self.threshold)

    @property
    def certain(self) -> bool:
        """At or above the lower of the two thresholds: a drift at some level."""
        return self._reaches(min(self.threshold, self.info_threshold))

    def _winner(self) -> tuple[int, int] | None:
        if not self.names or self.log_r.max() == -math.inf:
            return None
        d, k = np.unravel_index(int(np.argmax(self.log_r + self.log_w)), self.log_r.shape)
        return int(d), int(k)

    def worst(self) -> tuple[str, float, float | None] | None:
        """The leading direction, the statistic ``max(ln R, 0)`` and since when (seconds)."""
        win = self._winner()
        if win is None:
            return None
        d, k = win
        s = int(self.since[d, k])
        return (self.names[d], max(self.statistic, 0.0),
                None if s < 0 else float(s) * self.step_seconds)

    def estimate(self) -> DriftEstimate | None:
        """Direction, size (KS and PSI of the fitted alternative) and onset of the drift
        the statistic points at; ``None`` before any event. (Cached until a step closes.)"""
        stamp = (self.closed, self.events, self._latest)
        cached = getattr(self, "_estimate", None)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        est = self._fit()
        self._estimate = (stamp, est)
        return est

    def _fit(self) -> DriftEstimate | None:
        win = self._winner()
        if win is None or self._latest is None:
            return None
        d, k = win
        g_all, _, p = self._tables[self._latest]
        g = g_all[:, d]
        excursion = self.since[d, k] >= 0
        n = float(self.cum_n - self.base_n[d, k]) if excursion else 0.0
        total = float(self.cum_x[d] - self.base_x[d, k]) if excursion else 0.0
        shift = total / n if n > 0 else 0.0
        theta = _tilt_for_mean(p, g, shift)
        ks, psi = _size(p, g, theta, self.n_coarse)
        lower = shift - math.sqrt(2.0 * max(self.threshold, 1.0) / n) if n > 0 else 0.0
        ks_lower, psi_lower = _size(p, g, _tilt_for_mean(p, g, lower), self.n_coarse)
        s = int(self.since[d, k])
        return DriftEstimate(self.names[d], shift, theta, ks, psi,
                             None if s < 0 else float(s) * self.step_seconds, int(n),
                             ks_lower, psi_lower)

    # -- state ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state; :meth:`from_dict` rebuilds the tables from their keys."""
        return {
            "threshold": self.threshold, "info_threshold": self.info_threshold,
            "tilts": self.tilts.tolist(), "step_seconds": self.step_seconds,
            "n_coarse": self.n_coarse, "cap": self.cap, "allowance_z": self.allowance_z,
            "smooth_share": self.smooth_share,
            "names": list(self.names), "log_r": self.log_r.tolist(),
            "cusum": self.cusum.tolist(), "since": self.since.tolist(),
            "cum_x": self.cum_x.tolist(), "cum_n": self.cum_n,
            "base_x": self.base_x.tolist(), "base_n": self.base_n.tolist(),
            "closed": self.closed, "events": self.events,
            "pending": [[s, [[k.hex(), c.tolist()] for k, c in sorted(per.items())]]
                        for s, per in sorted(self.pending.items())],
            "tables": [k.hex() for k in self._tables],  # the expected distribution's bytes
            "latest": None if self._latest is None else self._latest.hex(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TiltMixture:
        m = cls(d["threshold"], info_threshold=d["info_threshold"], tilts=tuple(d["tilts"]),
                step_seconds=d["step_seconds"], n_coarse=d["n_coarse"], cap=d["cap"],
                allowance_z=d["allowance_z"], smooth_share=d.get("smooth_share", 0.5))
        if d["names"]:  # first: the tables' directions are aligned with these
            m._start(list(d["names"]))
        for hexkey in d["tables"]:
            key = bytes.fromhex(hexkey)
            baseline_n = float(np.frombuffer(key[-8:], dtype=np.float64)[0]) or None
            m._for(np.frombuffer(key[:-8], dtype=np.float64).copy(), baseline_n)
        shape = (len(m.names), m.tilts.size)
        m.log_r = np.asarray(d["log_r"], dtype=np.float64).reshape(shape)
        m.cusum = np.asarray(d["cusum"], dtype=np.float64).reshape(shape)
        m.since = np.asarray(d["since"], dtype=np.int64).reshape(shape)
        m.cum_x = np.asarray(d["cum_x"], dtype=np.float64).reshape(len(m.names))
        m.cum_n = float(d["cum_n"])
        m.base_x = np.asarray(d["base_x"], dtype=np.float64).reshape(shape)
        m.base_n = np.asarray(d["base_n"], dtype=np.float64).reshape(shape)
        m.closed, m.events, m._stat = int(d["closed"]), int(d["events"]), None
        m.pending = {int(s): {bytes.fromhex(k): np.asarray(c, dtype=np.int64) for k, c in per}
                     for s, per in d["pending"]}
        m._latest = None if d["latest"] is None else bytes.fromhex(d["latest"])
        return m


def _size(p: FloatArray, g: FloatArray, theta: float, n_coarse: int) -> tuple[float, float]:
    """KS distance and coarse PSI of the tilt ``q_θ ∝ p·exp(θ g)`` against ``p``."""
    q = p * np.exp(theta * g - (theta * g).max())
    q /= q.sum()
    ks = float(np.max(np.abs(np.cumsum(q - p))))
    splits = coarse_splits(p, n_coarse)
    pk, qk = np.add.reduceat(p, splits[:-1]), np.add.reduceat(q, splits[:-1])
    psi = float(np.sum((qk - pk) * np.log(np.maximum(qk, 1e-12) / np.maximum(pk, 1e-12))))
    return ks, psi


def _tilt_for_mean(p: FloatArray, g: FloatArray, mean: float) -> float:
    """The ``θ >= 0`` whose tilt ``q_θ ∝ p·exp(θ g)`` has ``E_q[g] = mean``; 0 for a mean
    at or below 0. ``E_q[g]`` increases with ``θ`` (its derivative is ``Var_q(g)``):
    Newton steps, safeguarded by bisection, to 1e-9."""
    if not mean > 0:
        return 0.0
    if mean >= float(g[p > 0].max()):
        return 8.0
    lo, hi, theta = 0.0, 8.0, min(mean, 8.0)  # Var_p(g) = 1: the first Newton step
    for _ in range(60):
        z = theta * g
        w = p * np.exp(z - z.max())
        w /= w.sum()
        m = float(w @ g)
        if abs(m - mean) < 1e-9:
            break
        if m < mean:
            lo = theta
        else:
            hi = theta
        var = float(w @ (g - m) ** 2)
        step = theta + (mean - m) / var if var > 1e-12 else math.nan
        theta = step if lo < step < hi else (lo + hi) / 2
    return theta
