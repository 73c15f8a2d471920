"""Drift streams: one monitored distribution against its baseline, over event-time windows.

A :class:`DriftStream` owns a :class:`~pipeline.core.histogram.BucketedHistogram` over the
baseline's fine bins. A tier's stream also records, per time bucket, how many of the tier's
events were routed under each set of thresholds, so that its expected distribution is the
baseline truncated to the tier under the thresholds actually in force
(:func:`~pipeline.core.drift.expected_mixture_probs`): moving a threshold never looks
like drift.

>>> import numpy as np
>>> from pipeline.core.histogram import QuantileBins
>>> rng = np.random.default_rng(0)
>>> bins = QuantileBins.from_sample(rng.beta(2, 2, 50_000), n_bins=50)
>>> s = DriftStream(bins, DriftConfig(alpha=1e-6))
>>> ts = np.sort(rng.uniform(0, 86_400, 20_000))
>>> _ = s.update_many(ts, rng.beta(2, 2, ts.size))
>>> any(v.alarm for v in s.evaluate(86_400).verdicts)
False
>>> _ = s.update_many(ts + 86_400, rng.beta(4, 2, ts.size))
>>> s.evaluate(2 * 86_400).alarm
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.core.drift import DriftTest, DriftVerdict, expected_mixture_probs, tier_mass
from pipeline.core.histogram import BucketedHistogram, QuantileBins
from pipeline.core.sequential import DEFAULT_TILTS, DriftEstimate, TiltMixture
from pipeline.schemas import Thresholds

ThresholdKey = tuple[float, float, float]


def window_name(seconds: float) -> str:
    """``3600 → '1h'``, ``86400 → '1d'``, ``604800 → '7d'``.

    >>> [window_name(s) for s in (900, 3600, 86400, 7 * 86400)]
    ['15m', '1h', '1d', '7d']
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """How a drift stream is evaluated; ``alpha`` comes from ``calibrated_alpha``.

    Two levels, each with its own false-alarm budget: ``alpha`` and ``seq_threshold``
    (the sequential mixture's ``ln A``) belong to the level above the effect floors (a
    ticket), ``info_alpha`` and ``seq_info_threshold`` to the ``info`` level, which is
    reached by a drift that is statistically certain whatever its size. Unset, the info
    level takes the other's.
    """

    alpha: float
    bucket_seconds: float = 3600.0
    windows: tuple[float, ...] = (3600.0, 86400.0, 7 * 86400.0)
    ks_floor: float = 0.05
    psi_floor: float = 0.1
    min_n: int = 200
    coarse_bins: int = 10
    lateness_s: float = 7 * 86400.0
    seq_threshold: float | None = None
    seq_tilts: tuple[float, ...] = DEFAULT_TILTS
    seq_step_s: float = 60.0
    info_alpha: float | None = None
    seq_info_threshold: float | None = None

    @property
    def info_level_alpha(self) -> float:
        return self.alpha if self.info_alpha is None else self.info_alpha

    @property
    def horizon_buckets(self) -> int:
        """Ring size: the longest window plus the allowed lateness, so that an evaluation
        behind the watermark by up to the lateness still finds its buckets."""
        return int((max(self.windows) + self.lateness_s) // self.bucket_seconds) + 2

    def tests(self) -> tuple[DriftTest, DriftTest]:
        return (DriftTest("ks", alpha=self.alpha, effect_floor=self.ks_floor, min_n=self.min_n),
                DriftTest("psi", alpha=self.alpha, effect_floor=self.psi_floor,
                          min_n=self.min_n, coarse_bins=self.coarse_bins))


@dataclass(frozen=True, slots=True)
class WindowResult:
    window: str
    ks: DriftVerdict
    psi: DriftVerdict

    info_alpha: float = 0.0

    @property
    def alarm(self) -> bool:
        """Above an effect floor and significant at ``alpha``."""
        return self.ks.alarm or self.psi.alarm

    @property
    def certain(self) -> bool:
        """Significant at the info level, whatever the effect size."""
        return any(not v.insufficient and v.p_value <= max(self.info_alpha, v.alpha)
                   for v in (self.ks, self.psi))


@dataclass(frozen=True, slots=True)
class StreamResult:
    """All windows of one evaluation; ``alarm`` when any window alarms."""

    verdicts: list[DriftVerdict]
    windows: list[WindowResult] = field(default_factory=list)

    @property
    def alarm(self) -> bool:
        return any(w.alarm for w in self.windows)

    @property
    def level(self) -> str | None:
        """``"alarm"`` (some window above its floor and significant), ``"info"`` (some
        window significant at the info level only), or None."""
        if self.alarm:
            return "alarm"
        return "info" if any(w.certain for w in self.windows) else None

    @property
    def worst(self) -> WindowResult | None:
        """The alarming window with the largest KS distance, else the largest overall."""
        if not self.windows:
            return None
        pool = [w for w in self.windows if w.alarm] or self.windows
        return max(pool, key=lambda w: w.ks.effect)

    def statistics(self) -> dict[str, Any]:
        return {w.window: {"ks": w.ks.to_dict(), "psi": w.psi.to_dict()} for w in self.windows}


class DriftStream:
    """One distribution (router scores, one tier's scores, or a signal) vs its baseline."""

    def __init__(self, bins: QuantileBins, config: DriftConfig, *, tier: str | None = None) -> None:
        self.bins = bins
        self.config = config
        self.tier = tier
        self.hist = BucketedHistogram(bins.n_bins, config.bucket_seconds,
                                      config.horizon_buckets)
        # per bucket id: {thresholds key: events of this tier routed under them}
        self.mix: dict[int, dict[ThresholdKey, int]] = {}
        self._tests = config.tests()
        # per thresholds key: the baseline truncated to this tier under them, and its mass
        self._cache: dict[ThresholdKey, tuple[NDArray[np.float64], float]] = {}
        self.seq = None if config.seq_threshold is None else TiltMixture(
            config.seq_threshold, info_threshold=config.seq_info_threshold,
            tilts=config.seq_tilts, step_seconds=config.seq_step_s,
            n_coarse=config.coarse_bins)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}  # derived

    def __setstate__(self, state: dict[str, Any]) -> None:
        # snapshots written before 2026-12-05 carry the cache (keyed by a former class)
        self.__dict__.update({k: v for k, v in state.items() if k != "_cache"}, _cache={})

    def update_many(self, ts: ArrayLike, values: ArrayLike,
                    thresholds: Sequence[ThresholdKey] | None = None) -> NDArray[np.bool_]:
        """Count values at event times ``ts``; return the mask of late (uncounted) ones."""
        t = np.asarray(ts, dtype=np.float64)
        idx = self.bins.index(values)
        late = self.hist.insert_many(t, idx)
        if self.seq is not None and self.tier is None:
            self.seq.add(t[~late], idx[~late], self.bins.baseline_probs, self.bins.n)
        if self.tier is not None:
            if thresholds is None:
                raise ValueError("a tier stream needs the thresholds of every event")
            if len(thresholds) != t.size:
                raise ValueError("need one thresholds key per event")
            buckets = np.floor(t / self.config.bucket_seconds).astype(np.int64)[~late]
            if not late.any() and thresholds.count(thresholds[0]) == t.size:
                distinct = [thresholds[0]]  # one policy, none late: the common batch
                codes = np.zeros(t.size, np.int64)
            else:
                keys = [k for k, is_late in zip(thresholds, late.tolist(), strict=True)
                        if not is_late]
                distinct = sorted(set(keys))  # a batch sees one or two policies
                code = {k: i for i, k in enumerate(distinct)}
                codes = np.fromiter((code[k] for k in keys), np.int64, len(keys))
            pairs, counts = np.unique(buckets * len(distinct) + codes, return_counts=True)
            for pair, n in zip(pairs.tolist(), counts.tolist(), strict=True):
                b, i = divmod(pair, len(distinct))
                per = self.mix.setdefault(b, {})
                per[distinct[i]] = per.get(distinct[i], 0) + n
            self._evict()
            if self.seq is not None:
                kept_t, kept_idx = t[~late], idx[~late]
                for i, key in enumerate(distinct):
                    try:
                        probs = self._truncated(key)
                    except ValueError:  # no baseline mass in this tier: nothing to expect
                        continue
                    mine = codes == i
                    n = self.bins.n
                    self.seq.add(kept_t[mine], kept_idx[mine], probs,
                                 None if n is None else n * self._mass(key))
        return late

    def _evict(self) -> None:
        newest = self.hist.newest_bucket
        if newest is None:
            return
        oldest = newest - self.config.horizon_buckets
        for b in [b for b in self.mix if b <= oldest]:
            del self.mix[b]

    def expected(self, end_ts: float, seconds: float) -> tuple[NDArray[np.float64], int | None]:
        """Expected fine-bin probabilities over a window, and the baseline size behind them."""
        probs, n = self.bins.baseline_probs, self.bins.n
        if self.tier is None:
            return probs, n
        last = int(np.floor(end_ts / self.config.bucket_seconds))
        first = last - int(seconds // self.config.bucket_seconds) + 1
        counts: dict[ThresholdKey, float] = {}
        for b in range(first, last + 1):
            for key, c in self.mix.get(b, {}).items():
                counts[key] = counts.get(key, 0.0) + c
        if not counts:
            return probs, n
        total = sum(counts.values())
        expected = np.zeros_like(probs)
        for key, count in counts.items():
            expected += (count / total) * self._truncated(key)
        if n is None:
            return expected, None
        mass = min(self._mass(key) for key in counts)
        return expected, max(1, round(n * mass))

    def _truncated(self, key: ThresholdKey) -> NDArray[np.float64]:
        """The baseline truncated to this tier under the thresholds ``key`` (cached:
        thresholds are few)."""
        cached = self._cache.get(key)
        if cached is None:
            cheap_above, capable_below, exploration_rate = key
            th = Thresholds(cheap_above=cheap_above, capable_below=capable_below,
                            exploration_rate=exploration_rate)
            probs, edges = self.bins.baseline_probs, self.bins.fine_edges
            cached = self._cache[key] = (
                expected_mixture_probs(probs, edges, {th: 1.0}, str(self.tier)),
                tier_mass(probs, edges, th, str(self.tier)))
        return cached[0]

    def _mass(self, key: ThresholdKey) -> float:
        self._truncated(key)
        return self._cache[key][1]

    def evaluate(self, now: float) -> StreamResult:
        """KS and PSI verdicts for every configured window ending at ``now``."""
        verdicts: list[DriftVerdict] = []
        windows: list[WindowResult] = []
        for seconds in self.config.windows:
            observed = self.hist.window(now, seconds)
            if observed.sum() == 0:
                continue
            try:
                expected, m = self.expected(now, seconds)
            except ValueError:  # the tier gets no baseline mass under these thresholds
                continue
            ks, psi = (t.evaluate(expected, observed, n_baseline=m) for t in self._tests)
            verdicts += [ks, psi]
            windows.append(WindowResult(window_name(seconds), ks, psi,
                                        self.config.info_level_alpha))
        return StreamResult(verdicts, windows)

    def sequential_level(self) -> tuple[str | None, DriftEstimate | None]:
        """The sequential test's level and its estimate of the drift.

        ``"alarm"``: the statistic reached the higher threshold and the fitted drift, at
        its lower bound, reaches an effect floor (KS or PSI); ``"info"``: it reached the
        info threshold (or the higher one with a drift below both floors); None otherwise.
        """
        if self.seq is None or not self.seq.certain:
            return None, None
        est = self.seq.estimate()
        # the size at its lower bound: the crossing's own estimate overstates the drift
        above = est is not None and (est.ks_lower >= self.config.ks_floor
                                     or est.psi_lower >= self.config.psi_floor)
        if self.seq.alarm and above:
            return "alarm", est
        stat = self.seq.statistic
        if stat >= self.seq.info_threshold or self.seq.alarm:
            return "info", est
        return None, est

    def live_probs(self, now: float, seconds: float) -> NDArray[np.float64]:
        c = self.hist.window(now, seconds).astype(np.float64)
        return c / c.sum() if c.sum() else c

    def to_dict(self) -> dict[str, Any]:
        return {"tier": self.tier, "hist": self.hist.to_dict(),
                "mix": [[b, [[list(k), c] for k, c in sorted(m.items())]]
                        for b, m in sorted(self.mix.items())]}

    def load(self, state: dict[str, Any]) -> DriftStream:
        self.hist = BucketedHistogram.from_dict(state["hist"])
        self.mix = {int(b): {(k[0], k[1], k[2]): int(c) for k, c in m} for b, m in state["mix"]}
        return self
