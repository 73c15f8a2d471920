"""Per ``(tier, band, signal)`` rings of hourly :class:`Totals` (:class:`OutcomeCounts`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Self

import numpy as np

from pipeline.core.mergeable import Mergeable
from pipeline.core.quality.outcomes import outcome
from pipeline.core.quality.totals import Totals, _vec

Key = tuple[str, int, str]


class OutcomeCounts(Mergeable):
    """Mergeable per ``(tier, band, signal)`` outcome sums over event-time buckets.

    Parameters
    ----------
    bucket_seconds
        Width of one event-time bucket.
    n_buckets
        Ring size; the longest window is ``bucket_seconds × n_buckets`` and an
        event more than that behind the newest bucket is too late
        (counted in :attr:`n_late`, see :meth:`accepts`).
    reference
        Optional ``(start, end)`` epoch seconds of the reference period;
        outcomes with ``start <= ts < end`` are also added to a frozen
        reference table that does not age out (:meth:`reference_totals`).

    Examples
    --------
    >>> c = OutcomeCounts(reference=(0.0, 7 * 86400.0))
    >>> for i in range(10):
    ...     _ = c.update("cheap", 2, "thumbs", ts=3600.0 * i, y=1.0 if i % 5 else 0.0)
    >>> _ = c.update_feedback("cheap", 2, "rating", 5, ts=40000.0)
    >>> t = c.window(now=40000.0, seconds=86400.0, signal="thumbs", tier="cheap")
    >>> t.n, t.rate
    (10.0, 0.8)
    >>> c.reference_totals("rating").n
    1.0
    >>> _ = c.update_routed("cheap", 2, ts=100.0, count=50).update_contact("cheap", 2, ts=100.0)
    >>> c.window(100.0, 86400.0, signal="support_contact").rate   # 1 - contacts/routed
    0.98
    """

    def __init__(
        self,
        bucket_seconds: float = 3600.0,
        n_buckets: int = 28 * 24,
        reference: tuple[float, float] | None = None,
    ) -> None:
        if not (bucket_seconds > 0 and math.isfinite(bucket_seconds)):
            raise ValueError(f"bucket_seconds must be positive, got {bucket_seconds!r}")
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be >= 1, got {n_buckets!r}")
        if reference is not None and not reference[0] < reference[1]:
            raise ValueError(f"reference must be (start, end) with start < end, got {reference!r}")
        self.bucket_seconds = float(bucket_seconds)
        self.n_buckets = int(n_buckets)
        self.reference = None if reference is None else (float(reference[0]), float(reference[1]))
        self._rings: dict[Key, np.ndarray] = {}
        self._ref: dict[Key, np.ndarray] = {}
        self._head: int | None = None
        self.n_late = 0
        self._match_cache: dict[tuple[str, str | None, int | None], list[Key]] = {}
        self._match_size = -1
        # per-key window sums, valid until the next update: the tier, aggregate and band
        # windows of one evaluation sum the same keys' buckets over and over
        self._version = 0
        self._sums: dict[tuple[Key, int, int], np.ndarray] = {}
        self._sums_version = 0
        self._refs: dict[tuple[str, str | None, int | None], Totals] = {}
        self._refs_version = 0

    _CACHES = ("_match_cache", "_match_size", "_sums", "_sums_version", "_refs", "_refs_version",
               "_version")

    def __getstate__(self) -> dict[str, Any]:
        # caches are rebuilt on demand: a checkpoint (and a state comparison) holds counts
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._match_cache, self._sums, self._refs = {}, {}, {}
        self._match_size = self._sums_version = self._refs_version = -1
        self._version = 0

    # ------------------------------------------------------------ internals
    def _bucket(self, ts: float) -> int:
        return math.floor(ts / self.bucket_seconds)

    def _advance(self, b: int) -> None:
        head = self._head
        if head is None:
            self._head = b
            return
        if b <= head:
            return
        if b - head >= self.n_buckets:
            for arr in self._rings.values():
                arr[:] = 0.0
        else:
            idx = np.arange(head + 1, b + 1) % self.n_buckets
            for arr in self._rings.values():
                arr[idx] = 0.0
        self._head = b

    def accepts(self, ts: float) -> bool:
        """Whether an outcome at ``ts`` still lands in the ring (else: too late)."""
        return self._head is None or self._bucket(ts) > self._head - self.n_buckets

    def _add(self, key: Key, ts: float, vec: np.ndarray, ref_ts: float | None = None) -> Self:
        if not math.isfinite(ts):
            raise ValueError(f"ts must be finite, got {ts!r}")
        ref_ts = ts if ref_ts is None else float(ref_ts)
        b = self._bucket(ts)
        if self._head is not None and b <= self._head - self.n_buckets:
            self.n_late += 1
            return self
        self._advance(b)
        self._version += 1
        arr = self._rings.get(key)
        if arr is None:
            arr = self._rings[key] = np.zeros((self.n_buckets, 6))
        arr[b % self.n_buckets] += vec
        ref = self.reference
        if ref is not None and ref[0] <= ref_ts < ref[1]:
            r = self._ref.get(key)
            if r is None:
                r = self._ref[key] = np.zeros(6)
            r += vec
        return self

    # ------------------------------------------------------------ updates
    def update(
        self, tier: str, band: int, signal: str, ts: float, y: float, weight: float = 1.0
    ) -> Self:
        """Add one outcome ``y`` in [0, 1] with ``weight`` (e.g. 1/π or 1/propensity)."""
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be positive and finite, got {weight!r}")
        if not 0.0 <= y <= 1.0:
            raise ValueError(f"y must be in [0, 1], got {y!r}")
        return self._add((tier, int(band), signal), ts, _vec(float(y), float(weight)))

    def update_feedback(
        self, tier: str, band: int, kind: str, value: float, ts: float, weight: float = 1.0
    ) -> Self:
        """Map a feedback event with :func:`outcome` and add it (contacts included)."""
        if kind == "support_contact":
            return self.update_contact(tier, band, ts)
        return self.update(tier, band, kind, ts, outcome(kind, value), weight)

    def update_counts(
        self, tier: str, band: int, signal: str, ts: float, good: float, n: float
    ) -> Self:
        """Add pre-aggregated unweighted binary counts (``good`` of ``n``)."""
        if not 0 <= good <= n:
            raise ValueError(f"need 0 <= good <= n, got good={good!r}, n={n!r}")
        g, m = float(good), float(n)
        return self._add((tier, int(band), signal), ts, np.array([m, m, m, g, g, g]))

    def update_routed(self, tier: str, band: int, ts: float, count: float = 1) -> Self:
        """Count routed requests: the denominator of ``support_contact``."""
        c = float(count)
        return self._add((tier, int(band), "support_contact"), ts, np.array([c] * 6))

    def update_contact(
        self, tier: str, band: int, ts: float, reference_ts: float | None = None
    ) -> Self:
        """Count one support contact against the routed requests at ``ts``.

        With ``reference_ts`` (the decision's event time) the contact is bucketed at
        ``ts`` (when it happened) in the sliding windows but belongs to the reference
        period by its decision's time: a window then counts the contacts that *arrived*
        in it against the requests routed in it (unbiased while the rate is steady,
        however long contacts take to arrive), and the reference counts every contact
        its own requests eventually caused.  Without it, both use ``ts``.
        """
        if reference_ts is not None and not math.isfinite(reference_ts):
            raise ValueError(f"reference_ts must be finite, got {reference_ts!r}")
        return self._add(
            (tier, int(band), "support_contact"), ts, np.array([0.0, 0.0, 0.0, -1.0, -1.0, -1.0]),
            reference_ts,
        )

    # ------------------------------------------------------------ reads
    @property
    def head(self) -> int | None:
        """Index of the newest bucket (``floor(ts / bucket_seconds)``)."""
        return self._head

    @property
    def keys(self) -> list[Key]:
        """All ``(tier, band, signal)`` keys seen, sorted."""
        return sorted(set(self._rings) | set(self._ref))

    @property
    def tiers(self) -> list[str]:
        """Tiers seen, sorted."""
        return sorted({k[0] for k in self.keys})

    @property
    def signals(self) -> list[str]:
        """Signals seen, sorted."""
        return sorted({k[2] for k in self.keys})

    @property
    def bands(self) -> list[int]:
        """Bands seen, sorted."""
        return sorted({k[1] for k in self.keys})

    def _match(
        self, keys: Iterable[Key], signal: str, tier: str | None, band: int | None
    ) -> list[Key]:
        return [
            k
            for k in keys
            if k[2] == signal and (tier is None or k[0] == tier) and (band is None or k[1] == band)
        ]

    def window(
        self,
        now: float,
        seconds: float,
        *,
        signal: str,
        tier: str | None = None,
        band: int | None = None,
    ) -> Totals:
        """Totals of the buckets in ``(now - seconds, now]`` (bucket-aligned).

        ``tier=None`` / ``band=None`` sum over all tiers / bands.
        """
        m = math.ceil(seconds / self.bucket_seconds - 1e-9)
        if not 1 <= m <= self.n_buckets:
            raise ValueError(
                f"window of {seconds!r} s needs {m} buckets; the ring holds {self.n_buckets}"
            )
        if self._head is None:
            return Totals()
        k_now = self._bucket(now)
        lo = max(k_now - m + 1, self._head - self.n_buckets + 1)
        hi = min(k_now, self._head)
        if hi < lo:
            return Totals()
        keys = self._match_cached(signal, tier, band)
        if not keys:
            return Totals()
        a, b = lo % self.n_buckets, hi % self.n_buckets
        # a contiguous slice of the ring, or two (None): much cheaper than fancy indexing
        rows: slice | None = slice(a, b + 1) if a <= b else None
        if hi - lo + 1 == self.n_buckets:
            rows = slice(None)
        if self._sums_version != self._version:
            self._sums.clear()
            self._sums_version = self._version
        sums = self._sums
        total = np.zeros(6)
        for k in keys:
            part = sums.get((k, lo, hi))
            if part is None:
                ring = self._rings[k]
                if rows is None:
                    part = ring[a:].sum(axis=0) + ring[: b + 1].sum(axis=0)
                else:
                    part = ring[rows].sum(axis=0)
                sums[(k, lo, hi)] = part
            total += part
        return Totals.from_vector(total)

    def series(
        self, first: int, last: int, *, signal: str, tier: str | None = None,
        band: int | None = None,
    ) -> np.ndarray:
        """Per-bucket sums for buckets ``first..last``, newest first: shape
        ``(last - first + 1, 6)`` in the order of :meth:`Totals.as_vector`; buckets
        outside the ring are zeros.

        >>> c = OutcomeCounts().update_routed("cheap", 1, ts=7200.0, count=40)
        >>> c.series(0, 2, signal="support_contact")[:, 0].tolist()
        [40.0, 0.0, 0.0]
        """
        out = np.zeros((max(last - first + 1, 0), 6))
        if self._head is None or out.shape[0] == 0:
            return out
        lo = max(first, self._head - self.n_buckets + 1)
        hi = min(last, self._head)
        if hi < lo:
            return out
        idx = np.arange(hi, lo - 1, -1)
        for k in self._match_cached(signal, tier, band):
            out[last - hi: last - lo + 1] += self._rings[k][idx % self.n_buckets]
        return out

    def _match_cached(self, signal: str, tier: str | None, band: int | None) -> list[Key]:
        """Matching ring keys, cached until a new key appears."""
        if self._match_size != len(self._rings):
            self._match_cache.clear()
            self._match_size = len(self._rings)
        k = (signal, tier, band)
        keys = self._match_cache.get(k)
        if keys is None:
            keys = self._match_cache[k] = self._match(self._rings, signal, tier, band)
        return keys

    def reference_totals(
        self, signal: str, tier: str | None = None, band: int | None = None
    ) -> Totals:
        """Totals of the frozen reference period (empty if none configured)."""
        if self._refs_version != self._version:
            self._refs.clear()
            self._refs_version = self._version
        cached = self._refs.get((signal, tier, band))
        if cached is None:
            total = np.zeros(6)
            for k in self._match(self._ref, signal, tier, band):
                total += self._ref[k]
            cached = self._refs[(signal, tier, band)] = Totals.from_vector(total)
        return cached

    # ------------------------------------------------------------ merge / serde
    def _check_compatible(self, other: OutcomeCounts) -> None:
        if (self.bucket_seconds, self.n_buckets, self.reference) != (
            other.bucket_seconds,
            other.n_buckets,
            other.reference,
        ):
            raise ValueError(
                "cannot merge OutcomeCounts with different bucket_seconds, n_buckets or reference"
            )

    def merge(self, other: OutcomeCounts) -> Self:
        """Add another partition's counts (same configuration required)."""
        self._check_compatible(other)
        self._version += 1
        if other._head is not None:
            self._advance(other._head)
            assert self._head is not None
            gone = self._head - other._head  # buckets of `other` that fell out of the ring
            n = self.n_buckets
            first = other._head - n + 1
            drop = None if gone <= 0 else np.arange(first, first + gone) % n
            for k, arr in other._rings.items():
                if gone >= n:
                    continue
                add = arr
                if drop is not None:
                    add = arr.copy()
                    add[drop] = 0.0
                mine = self._rings.get(k)
                if mine is None:
                    self._rings[k] = add.copy()
                else:
                    mine += add
        for k, r in other._ref.items():
            mine_r = self._ref.get(k)
            if mine_r is None:
                self._ref[k] = r.copy()
            else:
                mine_r += r
        self.n_late += other.n_late
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: non-empty buckets by absolute index, sorted keys."""
        rings = []
        head = self._head
        for k in sorted(self._rings):
            arr = self._rings[k]
            rows = []
            if head is not None:
                for b in range(head - self.n_buckets + 1, head + 1):
                    row = arr[b % self.n_buckets]
                    if row.any():
                        rows.append([b, *(float(x) for x in row)])
            if rows:
                rings.append([k[0], k[1], k[2], rows])
        refs = [
            [k[0], k[1], k[2], [float(x) for x in self._ref[k]]]
            for k in sorted(self._ref)
            if self._ref[k].any()
        ]
        return {
            "bucket_seconds": self.bucket_seconds,
            "n_buckets": self.n_buckets,
            "reference": None if self.reference is None else list(self.reference),
            "head": head,
            "n_late": self.n_late,
            "buckets": rings,
            "reference_totals": refs,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> OutcomeCounts:
        """Rebuild from :meth:`to_dict` output."""
        ref = state.get("reference")
        c = cls(
            bucket_seconds=float(state["bucket_seconds"]),
            n_buckets=int(state["n_buckets"]),
            reference=None if ref is None else (float(ref[0]), float(ref[1])),
        )
        head = state.get("head")
        c._head = None if head is None else int(head)
        c.n_late = int(state.get("n_late", 0))
        for tier, band, signal, rows in state["buckets"]:
            arr = np.zeros((c.n_buckets, 6))
            for b, *vals in rows:
                arr[int(b) % c.n_buckets] = vals
            c._rings[(tier, int(band), signal)] = arr
        for tier, band, signal, vals in state["reference_totals"]:
            c._ref[(tier, int(band), signal)] = np.array(vals, dtype=float)
        return c

    def __repr__(self) -> str:
        return (
            f"OutcomeCounts(bucket_seconds={self.bucket_seconds:g}, n_buckets={self.n_buckets}, "
            f"keys={len(self._rings)}, head={self._head})"
        )
