"""Unit and property tests of pipeline.core.histogram."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.histogram import BucketedHistogram, QuantileBins, coarse_splits, regroup

# -- strategies ------------------------------------------------------------------------------

configs = st.tuples(
    st.integers(1, 6),  # n_bins
    st.sampled_from([1.0, 0.5, 60.0, 3600.0]),  # bucket_seconds
    st.integers(1, 12),  # horizon_buckets
)


Config = tuple[int, float, int]


@st.composite
def config_and_events(
    draw: st.DrawFn, max_events: int = 60
) -> tuple[Config, np.ndarray, np.ndarray]:
    n_bins, width, horizon = draw(configs)
    n = draw(st.integers(0, max_events))
    # bucket offsets spanning up to ~2.5 horizons, so some events are late/evicted
    span = max(1, int(2.5 * horizon))
    offsets = draw(st.lists(st.floats(0, span, exclude_max=True), min_size=n, max_size=n))
    ts = 1_000.0 * width + np.asarray(offsets, dtype=np.float64) * width
    bins = draw(st.lists(st.integers(0, n_bins - 1), min_size=n, max_size=n))
    return (n_bins, width, horizon), ts, np.asarray(bins, dtype=np.int64)


def build(cfg: Config, ts: np.ndarray, bins: np.ndarray) -> BucketedHistogram:
    return BucketedHistogram(*cfg).update_many(ts, bins)


def oracle_retained(cfg: Config, ts: np.ndarray, bins: np.ndarray) -> dict[int, np.ndarray]:
    """Direct numpy: the events whose bucket lies within the horizon of the newest bucket."""
    n_bins, width, horizon = cfg
    if ts.size == 0:
        return {}
    bid = np.floor(ts / width).astype(np.int64)
    newest = int(bid.max())
    out: dict[int, np.ndarray] = {}
    for j in range(newest - horizon + 1, newest + 1):
        sel = bid == j
        if sel.any():
            out[j] = np.bincount(bins[sel], minlength=n_bins)
    return out


# -- BucketedHistogram properties -------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(config_and_events(), st.data())
def test_merge_equals_combined_stream(sample, data):
    cfg, ts, bins = sample
    cut = data.draw(st.integers(0, ts.size))
    perm = np.asarray(data.draw(st.permutations(range(ts.size))), dtype=np.int64)
    ts, bins = ts[perm], bins[perm]
    a = build(cfg, ts[:cut], bins[:cut])
    b = build(cfg, ts[cut:], bins[cut:])
    whole = build(cfg, ts, bins)
    assert a + b == whole
    assert b + a == whole
    merged = a.clone()
    merged += b
    assert merged == whole
    # the combined stream fed event by event, in another order, is the same state too
    one_by_one = BucketedHistogram(*cfg)
    for t, k in zip(ts[::-1].tolist(), bins[::-1].tolist(), strict=True):
        one_by_one.update(t, k)
    assert one_by_one == whole


@settings(max_examples=150, deadline=None)
@given(config_and_events())
def test_state_is_the_events_within_the_horizon(sample):
    cfg, ts, bins = sample
    h = build(cfg, ts, bins)
    ids, counts = h.buckets()
    expected = oracle_retained(cfg, ts, bins)
    assert ids.tolist() == sorted(expected)
    for j, row in zip(ids.tolist(), counts, strict=True):
        assert row.tolist() == expected[j].tolist()
    assert h.total == sum(int(v.sum()) for v in expected.values())


@settings(max_examples=150, deadline=None)
@given(config_and_events())
def test_round_trip(sample):
    cfg, ts, bins = sample
    h = build(cfg, ts, bins)
    d = json.loads(json.dumps(h.to_dict()))  # plain JSON values only
    back = BucketedHistogram.from_dict(d)
    assert back == h
    assert back.n_late == h.n_late
    assert back.to_dict() == h.to_dict()


@settings(max_examples=150, deadline=None)
@given(config_and_events(), st.data())
def test_window_equals_direct_count(sample, data):
    cfg, ts, bins = sample
    n_bins, width, horizon = cfg
    h = build(cfg, ts, bins)
    if h.newest_bucket is None:
        assert h.window(5.0 * width, width).tolist() == [0] * n_bins
        return
    newest = h.newest_bucket
    end_bucket = data.draw(st.integers(newest - horizon + 1, newest + 3))
    k = data.draw(st.integers(1, max(1, end_bucket - (newest - horizon))))
    end_ts = (end_bucket + data.draw(st.floats(0, 0.5))) * width
    got = h.window(end_ts, k * width)
    lo, hi = (end_bucket - k + 1) * width, (end_bucket + 1) * width
    sel = (ts >= lo) & (ts < hi)
    # direct numpy count of raw events in [lo, hi); all of them are within the horizon
    assert got.tolist() == np.bincount(bins[sel], minlength=n_bins).tolist()


@settings(max_examples=100, deadline=None)
@given(config_and_events())
def test_late_events_rejected_and_counted(sample):
    cfg, ts, bins = sample
    _n_bins, width, horizon = cfg
    h = BucketedHistogram(*cfg)
    # feed in two batches: the second may make part of itself and nothing of the first late
    half = ts.size // 2
    late1 = h.insert_many(ts[:half], bins[:half])
    before = h.clone()
    late2 = h.insert_many(ts[half:], bins[half:])
    for part, late, newest in (
        (ts[:half], late1, before.newest_bucket),
        (ts[half:], late2, h.newest_bucket),
    ):
        if part.size:
            assert newest is not None
            expect = np.floor(part / width).astype(np.int64) <= newest - horizon
            assert late.tolist() == expect.tolist()
    assert h.n_late == int(late1.sum() + late2.sum())
    # a late event leaves the state untouched
    if h.newest_bucket is not None:
        snapshot = h.clone()
        old_ts = (h.newest_bucket - horizon) * width
        assert h.insert_many(np.array([old_ts]), np.array([0])).tolist() == [True]
        assert h == snapshot
        assert h.n_late == snapshot.n_late + 1


def test_memory_independent_of_event_count():
    rng = np.random.default_rng(0)
    sizes = []
    for n in (10, 100_000):
        h = BucketedHistogram(n_bins=200, bucket_seconds=3600, horizon_buckets=192)
        ts = 1.7e9 + np.sort(rng.uniform(0, 30 * 86400, n))
        for chunk in np.array_split(np.arange(n), 10):
            h.update_many(ts[chunk], rng.integers(0, 200, chunk.size))
        sizes.append((h._counts.shape, h._ids.shape, h.nbytes))
        assert h.total <= n
    assert sizes[0] == sizes[1] == ((192, 200), (192,), 192 * 200 * 8 + 192 * 8)


def test_update_counts_equals_events():
    rng = np.random.default_rng(1)
    ts = rng.uniform(0, 10, 500)
    bins = rng.integers(0, 4, 500)
    by_events = BucketedHistogram(4, 1.0, 20).update_many(ts, bins)
    by_counts = BucketedHistogram(4, 1.0, 20)
    for j in range(10):
        sel = np.floor(ts) == j
        by_counts.update_counts(j + 0.5, np.bincount(bins[sel], minlength=4))
    assert by_counts == by_events
    # a late pre-aggregated bucket is counted as late events
    by_counts.update_counts(100.0, np.zeros(4, dtype=np.int64))
    by_counts.update_counts(1.0, np.ones(4, dtype=np.int64))
    assert by_counts.n_late == 4


def test_uint_bins_and_bad_inputs():
    h = BucketedHistogram(3, 1.0, 4)
    h.update_many(np.array([0.5, 1.5]), np.array([2, 1], dtype=np.uint64))
    assert h.window(1.5, 2).tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="out of range"):
        h.update_many(np.array([0.5]), np.array([3]))
    with pytest.raises(ValueError, match="finite"):
        h.update_many(np.array([np.nan]), np.array([0]))
    with pytest.raises(ValueError, match="integers"):
        h.update_many(np.array([0.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="equal length"):
        h.update_many(np.array([0.5, 1.0]), np.array([0]))
    with pytest.raises(ValueError, match="multiple"):
        h.window(1.0, 1.5)
    # reaching past the horizon is exact while nothing with counts was evicted ...
    assert h.window(1.0, 5).tolist() == [0, 1, 1]
    # ... and refused once it would be truncated
    h.update(4.5, 0)  # bucket 4: bucket 0 (one event) falls out of the ring
    with pytest.raises(ValueError, match="horizon"):
        h.window(4.0, 5)
    assert h.window(4.0, 4).tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="incompatible"):
        h.merge(BucketedHistogram(3, 2.0, 4))
    assert h.insert_many(np.array([]), np.array([], dtype=np.int64)).size == 0


# -- QuantileBins ----------------------------------------------------------------------------

samples = st.one_of(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
    # heavy ties: few distinct values
    st.lists(st.sampled_from([0.0, 0.1, 0.5, 0.5001, 1.0]), min_size=1, max_size=300),
)


@settings(max_examples=150, deadline=None)
@given(samples, st.integers(1, 50))
def test_quantile_bins_record_real_mass(sample, n_bins):
    x = np.asarray(sample)
    qb = QuantileBins.from_sample(x, n_bins=n_bins)
    assert 1 <= qb.n_bins <= n_bins
    assert np.all(np.diff(qb.edges) > 0)
    counts = np.bincount(qb.index(x), minlength=qb.n_bins)
    assert counts.tolist() == qb.counts.astype(int).tolist()
    assert np.all(qb.baseline_probs > 0)  # every fine bin holds baseline mass
    assert math.isclose(qb.baseline_probs.sum(), 1.0)
    cdf = qb.cdf_at_edges
    assert cdf[0] == 0.0 and cdf[-1] == 1.0 and np.all(np.diff(cdf) > 0)
    # bins are [e_i, e_{i+1}): fine_edges bound the sample values of each bin
    fe = qb.fine_edges
    idx = qb.index(x)
    assert np.all(x >= fe[idx]) and np.all((x < fe[idx + 1]) | (idx == qb.n_bins - 1))
    assert QuantileBins.from_dict(json.loads(json.dumps(qb.to_dict()))) == qb


def test_quantile_bins_equal_mass_and_out_of_range():
    rng = np.random.default_rng(2)
    x = rng.beta(2, 5, 100_000)
    qb = QuantileBins.from_sample(x, n_bins=200)
    assert qb.n_bins == 200 and qb.n == 100_000
    np.testing.assert_allclose(qb.baseline_probs, 1 / 200, atol=1e-12)
    assert qb.index(np.array([-1.0, 2.0, np.inf, -np.inf])).tolist() == [0, 199, 199, 0]


def test_quantile_bins_ties_are_not_uniform():
    rng = np.random.default_rng(3)
    x = np.concatenate([np.zeros(20_000), np.ones(10_000), np.round(rng.uniform(size=70_000), 2)])
    qb = QuantileBins.from_sample(x, n_bins=200)
    assert qb.n_bins < 200
    p = qb.baseline_probs
    assert p[0] >= 0.2 and p[-1] >= 0.1  # the point masses sit in their own bins
    assert p.max() / p.min() > 10


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=100), st.integers(1, 20))
def test_coarse_splits(probs, k):
    p = np.asarray(probs)
    if p.sum() <= 0:
        with pytest.raises(ValueError):
            coarse_splits(p, k)
        return
    s = coarse_splits(p, k)
    assert s[0] == 0 and s[-1] == p.size and np.all(np.diff(s) > 0)
    groups = regroup(p, s)
    assert groups.size <= k
    assert np.all(groups > 0)  # no structurally empty coarse bin
    assert math.isclose(groups.sum(), p.sum())


def test_coarse_near_equal_mass():
    qb = QuantileBins.from_sample(np.random.default_rng(4).normal(size=50_000), n_bins=200)
    for k in (4, 10, 13):
        g = regroup(qb.baseline_probs, qb.coarse(k))
        assert g.size == k
        assert np.all(np.abs(g - 1 / k) <= 1 / 200 + 1e-9)
