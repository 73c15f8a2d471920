"""Mergeable binned histograms over event-time buckets.

Two small objects live here:

* :class:`QuantileBins` turns a baseline sample into fine bins of (near) equal baseline
  mass and maps live values to bin indices with one vectorized ``np.searchsorted``.
* :class:`BucketedHistogram` counts bin indices per event-time bucket in a fixed-size
  ring, so its memory does not grow with the number of events. Windows are sums of
  buckets; two histograms merge exactly, whatever the order the events arrived in.

Both are pure (no I/O) and serialize to plain JSON-able dicts.

"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["BucketedHistogram", "QuantileBins", "coarse_splits", "regroup"]

_EMPTY = np.iinfo(np.int64).min  # bucket id of a ring slot that holds nothing


def coarse_splits(probs: ArrayLike, k: int) -> NDArray[np.intp]:
    """Group consecutive fine bins into about ``k`` groups of near-equal mass.

    Parameters
    ----------
    probs
        Mass of each fine bin (probabilities or counts; only ratios matter).
    k
        Wanted number of groups. Fewer come back when a single fine bin holds more than
        ``1/k`` of the mass (a point mass) or when there are fewer than ``k`` bins.

    Returns
    -------
    numpy.ndarray
        Strictly increasing fine-bin indices ``[0, s_1, ..., n_fine]``: group ``g`` is
        the fine bins ``splits[g]:splits[g+1]``. Every group has positive mass (fine bins
        of zero mass are absorbed into a neighbour), so an expected probability is never
        structurally zero at the coarse level.

    Examples
    --------
    >>> coarse_splits([0.25] * 8, 4).tolist()
    [0, 2, 4, 6, 8]
    >>> coarse_splits([0.0, 0.6, 0.1, 0.1, 0.2], 4).tolist()  # point mass: fewer groups
    [0, 2, 4, 5]

    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("probs must be a non-empty 1-d array")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("probs must be finite, non-negative and not all zero")
    n = p.size
    before = np.concatenate([[0.0], np.cumsum(p)])  # before[s] = mass of bins [0, s)
    before /= before[-1]
    targets = np.arange(1, k) / k
    hi = np.clip(np.searchsorted(before, targets, side="left"), 1, n)
    lo = hi - 1
    pick = np.where(before[hi] - targets <= targets - before[lo], hi, lo)
    kept = [0]
    for s in np.unique(pick).tolist():
        # a split is useful only if both sides of it get positive mass
        if before[s] > before[kept[-1]] and before[s] < 1.0:
            kept.append(int(s))
    kept.append(n)
    return np.asarray(kept, dtype=np.intp)


def regroup(fine: ArrayLike, splits: ArrayLike) -> NDArray[Any]:
    """Sum fine-bin values (last axis) into the groups of :func:`coarse_splits`.

    Examples
    --------
    >>> regroup([1, 2, 3, 4, 5], [0, 2, 5]).tolist()
    [3, 12]

    """
    x = np.asarray(fine)
    s = np.asarray(splits, dtype=np.intp)
    if s.ndim != 1 or s.size < 2 or s[0] != 0 or s[-1] != x.shape[-1] or np.any(np.diff(s) <= 0):
        raise ValueError("splits must increase strictly from 0 to the number of fine bins")
    return np.add.reduceat(x, s[:-1], axis=-1)


class QuantileBins:
    """Fine bins cut at a baseline sample's quantiles (equal baseline mass).

    Bins are half-open, ``[edge_i, edge_{i+1})``, matching the router rule
    ``score >= cheap_above -> cheap``. The outer edges are conceptually -inf and +inf:
    live values below the baseline's minimum go to bin 0, values above its maximum to the
    last bin.

    Ties are handled by collapsing duplicate quantiles. The baseline mass of every fine
    bin is then *counted* on the sample, not assumed to be ``1/n_bins``: a point mass (say
    20 % of the scores exactly 0.0) gives one bin with 20 % of the mass and
    :attr:`baseline_probs` says so. Edges are sample values above the sample minimum, so
    every bin holds at least one baseline value and no baseline probability is zero.

    Parameters
    ----------
    edges
        Interior edges, strictly increasing (``n_bins - 1`` of them).
    counts
        Baseline count (or mass) per bin, ``len(edges) + 1`` non-negative values.
    low, high
        The baseline's minimum and maximum. They bound the outer bins when a threshold
        must be interpolated inside them (see :attr:`fine_edges`).
    n
        Baseline sample size used for p-values (effective sample size). ``None`` means
        the baseline is exact (infinite sample). Defaults to ``sum(counts)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bins = QuantileBins.from_sample(rng.uniform(size=10_000), n_bins=4)
    >>> bins.n_bins, bins.n
    (4, 10000)
    >>> bins.baseline_probs.round(3).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> bins.index(np.array([-5.0, 0.1, 0.6, 7.0])).tolist()
    [0, 0, 2, 3]

    Ties collapse and the real mass is recorded:

    >>> tied = QuantileBins.from_sample([0, 0, 0, 0, 0, 0, 1, 2, 3, 4], n_bins=5)
    >>> tied.edges.tolist(), tied.baseline_probs.tolist()
    ([1.0, 3.0], [0.6, 0.2, 0.2])

    """

    __slots__ = ("_counts", "_edges", "_high", "_low", "_n", "_probs")

    def __init__(
        self,
        edges: ArrayLike,
        counts: ArrayLike,
        low: float,
        high: float,
        n: int | Literal["counts"] | None = "counts",
    ) -> None:
        e = np.asarray(edges, dtype=np.float64).reshape(-1)
        c = np.asarray(counts, dtype=np.float64).reshape(-1)
        if c.size != e.size + 1:
            raise ValueError(f"need len(edges) + 1 counts, got {c.size} for {e.size} edges")
        if not (np.all(np.isfinite(e)) and np.all(np.isfinite(c))):
            raise ValueError("edges and counts must be finite")
        if e.size and np.any(np.diff(e) <= 0):
            raise ValueError("edges must increase strictly (collapse duplicate quantiles)")
        if np.any(c < 0) or c.sum() <= 0:
            raise ValueError("counts must be non-negative and not all zero")
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError("low and high must be finite with low <= high")
        if e.size and (low >= e[0] or high < e[-1]):
            raise ValueError("need low < edges[0] and edges[-1] <= high")
        self._edges = e
        self._counts = c
        self._probs = c / c.sum()
        self._low = low
        self._high = high
        if isinstance(n, str):
            if n != "counts":
                raise ValueError(f"n must be an int, None or 'counts', got {n!r}")
            self._n: int | None = round(float(c.sum()))
        elif n is None:
            self._n = None
        else:
            self._n = operator.index(n)
            if self._n < 1:
                raise ValueError(f"n must be >= 1 or None, got {n}")

    @classmethod
    def from_sample(cls, sample: ArrayLike, n_bins: int = 200) -> QuantileBins:
        """Build equal-mass fine bins from a baseline sample.

        The candidate edges are the sample's order statistics at ranks
        ``floor(k * n / n_bins)``, ``k = 1 .. n_bins - 1``; duplicates and values equal to
        the minimum are dropped, then each bin's baseline count is counted.

        Examples
        --------
        >>> QuantileBins.from_sample([3.0, 1.0, 2.0, 4.0], n_bins=2).edges.tolist()
        [3.0]

        """
        x = np.sort(np.asarray(sample, dtype=np.float64).reshape(-1))
        if x.size == 0:
            raise ValueError("the baseline sample is empty")
        if not np.all(np.isfinite(x)):
            raise ValueError("the baseline sample holds NaN or infinite values")
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        n = x.size
        ranks = (np.arange(1, n_bins, dtype=np.int64) * n) // n_bins
        cand = np.unique(x[ranks])
        edges = cand[cand > x[0]]
        counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
        return cls(edges, counts, low=float(x[0]), high=float(x[-1]), n=n)

    # -- read-only views -------------------------------------------------------------------

    @property
    def edges(self) -> NDArray[np.float64]:
        """Interior edges (``n_bins - 1`` strictly increasing values)."""
        return self._edges

    @property
    def n_bins(self) -> int:
        """Number of fine bins (may be below the requested number when ties collapse)."""
        return int(self._edges.size + 1)

    @property
    def n(self) -> int | None:
        """Baseline sample size (``None``: exact baseline)."""
        return self._n

    @property
    def counts(self) -> NDArray[np.float64]:
        """Baseline count (mass) per fine bin."""
        return self._counts

    @property
    def baseline_probs(self) -> NDArray[np.float64]:
        """Baseline probability of each fine bin (sums to 1; not assumed uniform)."""
        return self._probs

    @property
    def fine_edges(self) -> NDArray[np.float64]:
        """``[low, *edges, high]``: finite bounds of every fine bin, for interpolation.

        Bin ``i`` spans ``[fine_edges[i], fine_edges[i+1])``; the last one is closed at
        ``high``. Only the *indexing* treats the outer edges as -inf/+inf.
        """
        return np.concatenate([[self._low], self._edges, [self._high]])

    @property
    def cdf_at_edges(self) -> NDArray[np.float64]:
        """Baseline mass below each of :attr:`fine_edges`: ``[0, P(X < e_1), ..., 1]``.

        Examples
        --------
        >>> QuantileBins([1.0], [1, 3], low=0.0, high=2.0).cdf_at_edges.tolist()
        [0.0, 0.25, 1.0]

        """
        c = np.concatenate([[0.0], np.cumsum(self._probs)])
        c[-1] = 1.0
        return c

    # -- behaviour ----------------------------------------------------------------------

    def index(self, values: ArrayLike) -> NDArray[np.intp]:
        """Fine-bin index of each value (vectorized; out-of-range values clip to the ends).

        NaN sorts above every edge and would land in the last bin; callers validate
        scores before they get here.
        """
        return np.searchsorted(self._edges, np.asarray(values, dtype=np.float64), side="right")

    def coarse(self, k: int) -> NDArray[np.intp]:
        """Split indices grouping the fine bins into ~``k`` coarse bins of near-equal mass.

        Use with :func:`regroup`.

        Examples
        --------
        >>> bins = QuantileBins.from_sample(np.arange(100.0), n_bins=10)
        >>> splits = bins.coarse(5)
        >>> splits.tolist(), regroup(bins.baseline_probs, splits).round(2).tolist()
        ([0, 2, 4, 6, 8, 10], [0.2, 0.2, 0.2, 0.2, 0.2])

        """
        return coarse_splits(self._probs, k)

    # -- serialization -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state."""
        counts: list[float] | list[int] = self._counts.tolist()
        if np.all(self._counts == np.round(self._counts)):
            counts = [int(v) for v in self._counts]
        return {
            "edges": self._edges.tolist(),
            "counts": counts,
            "low": self._low,
            "high": self._high,
            "n": self._n,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantileBins:
        """Inverse of :meth:`to_dict`.

        Examples
        --------
        >>> b = QuantileBins.from_sample([0.1, 0.2, 0.2, 0.9], n_bins=3)
        >>> QuantileBins.from_dict(b.to_dict()) == b
        True

        """
        return cls(d["edges"], d["counts"], low=d["low"], high=d["high"], n=d.get("n", "counts"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileBins):
            return NotImplemented
        return (
            np.array_equal(self._edges, other._edges)
            and np.array_equal(self._counts, other._counts)
            and self._low == other._low
            and self._high == other._high
            and self._n == other._n
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QuantileBins(n_bins={self.n_bins}, n={self._n}, range=[{self._low}, {self._high}])"


class BucketedHistogram:
    """Bin counts per event-time bucket, in a fixed-size ring.

    Bucket ``j`` holds the events with ``floor(ts / bucket_seconds) == j``. The ring keeps
    the ``horizon_buckets`` most recent buckets, ``(newest - horizon, newest]``, as an int64
    array of shape ``(horizon_buckets, n_bins)`` plus the bucket id of each slot, so memory
    is constant whatever the number of events.

    An event whose bucket is at or below ``newest - horizon`` (``newest`` counted *after*
    the batch it arrives in) is *late*: it is not counted, :attr:`n_late` grows, and
    :meth:`insert_many` returns it in a mask so the caller can dead-letter it.

    The retained state depends only on the set of events seen, not on their order or on
    how they were split between instances: an event that is too old is either rejected or
    later evicted, with the same result. Hence ``h(a) + h(b) == h(a + b)`` exactly.
    Equality compares that state; :attr:`n_late` (how many events *this* instance turned
    away) depends on arrival order and is a diagnostic outside equality.

    Parameters
    ----------
    n_bins
        Number of bins (e.g. :attr:`QuantileBins.n_bins`).
    bucket_seconds
        Width of one event-time bucket.
    horizon_buckets
        Ring size. It bounds both the longest window and the allowed lateness.

    Examples
    --------
    >>> h = BucketedHistogram(n_bins=3, bucket_seconds=60, horizon_buckets=4)
    >>> h = h.update_many(np.array([0.0, 59.0, 60.0, 125.0]), np.array([0, 2, 2, 1]))
    >>> h.window(end_ts=125.0, seconds=120).tolist()  # buckets 1..2 = [60, 180)
    [0, 1, 1]
    >>> h.window(end_ts=125.0, seconds=180).tolist()
    [1, 1, 2]
    >>> late = h.insert_many(np.array([300.0, 10.0]), np.array([0, 0]))  # 10 s is now late
    >>> late.tolist(), h.n_late  # bucket 5 arrived: buckets <= 1 fall out of the ring
    ([False, True], 1)
    >>> h.total, (h + h).total
    (2, 4)

    """

    __slots__ = (
        "_counts",
        "_dropped",
        "_ids",
        "_n_late",
        "_newest",
        "bucket_seconds",
        "horizon_buckets",
        "n_bins",
    )

    def __init__(self, n_bins: int, bucket_seconds: float, horizon_buckets: int) -> None:
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
        if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
            raise ValueError(f"bucket_seconds must be positive and finite, got {bucket_seconds}")
        if int(horizon_buckets) != horizon_buckets or horizon_buckets < 1:
            raise ValueError(f"horizon_buckets must be a positive integer, got {horizon_buckets}")
        self.n_bins = int(n_bins)
        self.bucket_seconds = float(bucket_seconds)
        self.horizon_buckets = int(horizon_buckets)
        self._counts = np.zeros((self.horizon_buckets, self.n_bins), dtype=np.int64)
        self._ids = np.full(self.horizon_buckets, _EMPTY, dtype=np.int64)
        self._newest: int | None = None
        # the newest bucket id that held counts when it fell out of the ring: a window
        # reaching past the horizon is exact (its evicted part was empty time) when it
        # starts after this bucket
        self._dropped: int | None = None
        self._n_late = 0

    # -- properties ------------------------------------------------------------------------

    @property
    def newest_bucket(self) -> int | None:
        """Id of the newest bucket seen (the event-time watermark), or ``None``."""
        return self._newest

    @property
    def horizon_seconds(self) -> float:
        """Event time covered by the ring."""
        return self.horizon_buckets * self.bucket_seconds

    @property
    def total(self) -> int:
        """Number of events retained in the ring."""
        return int(self._counts.sum())

    @property
    def n_late(self) -> int:
        """Events this instance rejected as late (summed by :meth:`merge`)."""
        return self._n_late

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring arrays (constant for a given configuration)."""
        return int(self._counts.nbytes + self._ids.nbytes)

    def bucket_id(self, ts: float) -> int:
        """Bucket id of an event time."""
        return math.floor(ts / self.bucket_seconds)

    def buckets(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Non-empty buckets, oldest first: ``(ids, counts)`` with counts ``(k, n_bins)``."""
        live = self._ids != _EMPTY
        order = np.argsort(self._ids[live], kind="stable")
        return self._ids[live][order], self._counts[live][order]

    # -- updates -----------------------------------------------------------------------------

    def _advance(self, newest: int) -> None:
        if self._newest is not None and newest <= self._newest:
            return
        self._newest = newest
        stale = np.flatnonzero((self._ids <= newest - self.horizon_buckets) & (self._ids != _EMPTY))
        if stale.size:
            # O(horizon) whatever the jump: a slot is cleared once, however many buckets
            # of empty time the watermark skips
            self._drop(int(self._ids[stale].max()))
            self._ids[stale] = _EMPTY
            self._counts[stale] = 0

    def _drop(self, bucket: int) -> None:
        if self._dropped is None or bucket > self._dropped:
            self._dropped = bucket

    def __setstate__(self, state: Any) -> None:
        # snapshots pickled before ``_dropped`` existed: nothing known to be dropped
        self._dropped = None
        slots = state[1] if isinstance(state, tuple) else state
        for k, v in (slots or {}).items():
            setattr(self, k, v)

    def insert_many(self, ts: ArrayLike, bins: ArrayLike) -> NDArray[np.bool_]:
        """Count a batch of events; return the mask of those rejected as late.

        Parameters
        ----------
        ts
            Event times in seconds (float array).
        bins
            Bin index of each event, in ``[0, n_bins)``.

        Raises
        ------
        ValueError
            On mismatched lengths, non-finite times or bin indices out of range. These
            are caller bugs (validation happens upstream), so the batch is refused whole
            rather than partly counted.

        """
        t = np.asarray(ts, dtype=np.float64)
        b = np.asarray(bins)
        if t.ndim != 1 or b.shape != t.shape:
            raise ValueError(f"ts and bins must be 1-d of equal length, got {t.shape}, {b.shape}")
        if t.size == 0:
            return np.zeros(0, dtype=np.bool_)
        if b.dtype.kind not in "iu":
            raise ValueError(f"bins must be integers, got dtype {b.dtype}")
        if int(b.min()) < 0 or int(b.max()) >= self.n_bins:
            raise ValueError(f"bin index out of range [0, {self.n_bins})")
        b = b.astype(np.int64, copy=False)  # uint64 + int64 would promote to float
        bf = np.floor(t / self.bucket_seconds)
        lo_f, hi_f = float(bf.min()), float(bf.max())  # NaN propagates through min/max
        if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
            raise ValueError("event times must be finite")
        bid = bf.astype(np.int64)
        self._advance(int(hi_f))
        assert self._newest is not None
        cutoff = self._newest - self.horizon_buckets
        lo = int(lo_f)
        if lo <= cutoff:
            late = bid <= cutoff
            keep = ~late
            bid, b = bid[keep], b[keep]
            self._n_late += int(late.sum())
            if bid.size == 0:
                return late
            lo = int(bid.min())
        else:
            late = np.zeros(t.size, dtype=np.bool_)
        span = int(hi_f) - lo + 1
        flat = (bid - lo) * self.n_bins + b
        block = np.bincount(flat, minlength=span * self.n_bins).reshape(span, self.n_bins)
        self._add_block(lo, block)
        return late

    def _add_block(self, first_id: int, block: NDArray[np.int64]) -> None:
        """Add rows for consecutive bucket ids ``first_id ..``, all inside the horizon."""
        ids = first_id + np.arange(block.shape[0], dtype=np.int64)
        nonzero = block.any(axis=1)
        if not nonzero.all():
            ids, block = ids[nonzero], block[nonzero]
        slots = ids % self.horizon_buckets  # distinct: fewer ids than slots, consecutive
        self._counts[slots] += block
        self._ids[slots] = ids

    def update_many(self, ts: ArrayLike, bins: ArrayLike) -> Self:
        """Count a batch of events (late ones only bump :attr:`n_late`); return self."""
        self.insert_many(ts, bins)
        return self

    def update(self, ts: float, bin_index: int) -> Self:
        """Count one event; return self.

        Examples
        --------
        >>> h = BucketedHistogram(2, 10.0, 3).update(5.0, 1).update(21.0, 0)
        >>> h.total, h.update(41.0, 0).total  # bucket 4 evicts bucket 0 (horizon 3)
        (2, 2)
        >>> h.update(6.0, 1).n_late  # bucket 0 is now behind the horizon: late
        1

        """
        if not 0 <= bin_index < self.n_bins:
            raise ValueError(f"bin index {bin_index} out of range [0, {self.n_bins})")
        j = self._live_bucket(ts)
        if j is None:
            self._n_late += 1
            return self
        slot = j % self.horizon_buckets
        self._ids[slot] = j
        self._counts[slot, bin_index] += 1
        return self

    def update_counts(self, ts: float, counts: ArrayLike) -> Self:
        """Add pre-aggregated bin counts to the bucket of ``ts``; return self.

        A late bucket adds its events to :attr:`n_late`.
        """
        c = np.asarray(counts)
        if c.shape != (self.n_bins,) or c.dtype.kind not in "iu" or (c.size and c.min() < 0):
            raise ValueError(f"counts must be {self.n_bins} non-negative integers")
        j = self._live_bucket(ts)
        if j is None:
            self._n_late += int(c.sum())
            return self
        self._add_block(j, c.astype(np.int64).reshape(1, -1))
        return self

    def _live_bucket(self, ts: float) -> int | None:
        """The bucket of ``ts``, the ring advanced to it; ``None`` if it is late."""
        if not math.isfinite(ts):
            raise ValueError("event time must be finite")
        j = self.bucket_id(ts)
        self._advance(j)
        assert self._newest is not None
        return None if j <= self._newest - self.horizon_buckets else j

    # -- reads -------------------------------------------------------------------------------

    def window(self, end_ts: float, seconds: float) -> NDArray[np.int64]:
        """Bin counts of the ``seconds / bucket_seconds`` buckets ending with ``end_ts``'s.

        With ``j = floor(end_ts / bucket_seconds)`` and ``k = seconds / bucket_seconds``,
        this sums buckets ``j-k+1 .. j``, i.e. events with times in
        ``[(j-k+1) * bucket_seconds, (j+1) * bucket_seconds)``: the current, possibly
        partial, bucket is included.

        A window may reach past the ring's horizon when event time jumped forward: the
        buckets it skipped held nothing, so the sum is still exact, and returned.

        Raises
        ------
        ValueError
            If ``seconds`` is not a whole number of buckets (the answer would not be
            exact), or if the window reaches a bucket that held counts when the ring
            evicted it (a silently truncated window would understate the counts).

        Examples
        --------
        >>> h = BucketedHistogram(2, 60.0, 3).update(30.0, 1)
        >>> h.update(8 * 86400.0, 0).window(8 * 86400.0, 180).tolist()  # 8 days later
        [1, 0]
        >>> h.window(8 * 86400.0 - 60, 180).tolist()  # empty time before the jump
        [0, 0]

        """
        k = round(seconds / self.bucket_seconds)
        if k < 1 or not math.isclose(k * self.bucket_seconds, seconds, rel_tol=1e-9):
            raise ValueError(
                f"window of {seconds} s is not a positive multiple of {self.bucket_seconds} s"
            )
        if not math.isfinite(end_ts):
            raise ValueError("end_ts must be finite")
        j = self.bucket_id(end_ts)
        first = j - k + 1
        if self._newest is None:
            return np.zeros(self.n_bins, dtype=np.int64)
        if (first <= self._newest - self.horizon_buckets and self._dropped is not None
                and first <= self._dropped):
            raise ValueError(
                f"window [{first}, {j}] (bucket ids) reaches past the ring horizon "
                f"(oldest retained bucket {self._newest - self.horizon_buckets + 1}; "
                f"bucket {self._dropped} held counts when it was evicted)"
            )
        sel = (self._ids >= first) & (self._ids <= j)
        out: NDArray[np.int64] = self._counts[sel].sum(axis=0)
        return out

    # -- merging -----------------------------------------------------------------------------

    def _check_compatible(self, other: BucketedHistogram) -> None:
        if not isinstance(other, BucketedHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into BucketedHistogram")
        mine = (self.n_bins, self.bucket_seconds, self.horizon_buckets)
        theirs = (other.n_bins, other.bucket_seconds, other.horizon_buckets)
        if mine != theirs:
            raise ValueError(f"incompatible histograms: {mine} vs {theirs}")

    def merge(self, other: BucketedHistogram) -> Self:
        """Add ``other`` into self (exact: equal bucket ids sum, older ones fall out)."""
        self._check_compatible(other)
        if other._dropped is not None:
            self._drop(other._dropped)
        if other._newest is None:
            self._n_late += other._n_late
            return self
        self._advance(other._newest)
        assert self._newest is not None
        keep = other._ids > self._newest - self.horizon_buckets
        gone = other._ids[(~keep) & (other._ids != _EMPTY)]
        if gone.size:
            self._drop(int(gone.max()))
        slots = np.flatnonzero(keep)
        # within the horizon two ids sharing a slot are equal, so adding is exact
        self._counts[slots] += other._counts[slots]
        self._ids[slots] = other._ids[slots]
        self._n_late += other._n_late
        return self

    def clone(self) -> BucketedHistogram:
        """A deep copy."""
        new = BucketedHistogram(self.n_bins, self.bucket_seconds, self.horizon_buckets)
        new._counts = self._counts.copy()
        new._ids = self._ids.copy()
        new._newest = self._newest
        new._dropped = self._dropped
        new._n_late = self._n_late
        return new

    def __add__(self, other: BucketedHistogram) -> BucketedHistogram:
        return self.clone().merge(other)

    def __iadd__(self, other: BucketedHistogram) -> Self:
        return self.merge(other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BucketedHistogram):
            return NotImplemented
        return (
            self.n_bins == other.n_bins
            and self.bucket_seconds == other.bucket_seconds
            and self.horizon_buckets == other.horizon_buckets
            and self._newest == other._newest
            and np.array_equal(self._ids, other._ids)
            and np.array_equal(self._counts, other._counts)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"BucketedHistogram(n_bins={self.n_bins}, bucket_seconds={self.bucket_seconds}, "
            f"horizon_buckets={self.horizon_buckets}, newest={self._newest}, total={self.total})"
        )

    # -- serialization -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: the configuration and the non-empty buckets."""
        ids, counts = self.buckets()
        return {
            "n_bins": self.n_bins,
            "bucket_seconds": self.bucket_seconds,
            "horizon_buckets": self.horizon_buckets,
            "newest": self._newest,
            "dropped": self._dropped,
            "n_late": self._n_late,
            "buckets": [
                [int(i), row] for i, row in zip(ids.tolist(), counts.tolist(), strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BucketedHistogram:
        """Inverse of :meth:`to_dict`.

        Examples
        --------
        >>> h = BucketedHistogram(2, 1.0, 5).update_many(np.array([0.5, 3.2]), np.array([1, 0]))
        >>> BucketedHistogram.from_dict(h.to_dict()) == h
        True

        """
        h = cls(d["n_bins"], d["bucket_seconds"], d["horizon_buckets"])
        newest = d.get("newest")
        buckets: Sequence[Sequence[Any]] = d.get("buckets", [])
        if newest is None:
            if buckets:
                raise ValueError("buckets given without a newest bucket id")
        else:
            h._advance(int(newest))
            for bucket_id, row in buckets:
                j = int(bucket_id)
                if not newest - h.horizon_buckets < j <= newest:
                    raise ValueError(f"bucket {j} lies outside the horizon of newest={newest}")
                h._add_block(j, np.asarray(row, dtype=np.int64).reshape(1, h.n_bins))
        h._n_late = int(d.get("n_late", 0))
        dropped = d.get("dropped")
        h._dropped = None if dropped is None else int(dropped)
        return h
