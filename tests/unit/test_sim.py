"""The traffic simulator: determinism, valid payloads, calibration facts, routing, policy."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy import stats

from pipeline.schemas import Baseline, FeedbackEvent, RoutingEvent, Thresholds
from pipeline.sim import SCENARIOS, Chunk, Scenario, Simulator
from pipeline.sim import nuisances as nz
from pipeline.sim.clock import US, arrivals
from pipeline.sim.fleet import Fleet
from pipeline.sim.io import write_baseline, write_jsonl, write_truth
from pipeline.sim.params import Delay

DAY = 86_400.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def events_bytes(chunks: Iterator[Chunk]) -> bytes:
    return b"".join(orjson.dumps([c.start, c.end, c.routing, c.feedback]) for c in chunks)


def p_cheap(th: dict[str, float], score: float) -> float:
    if score >= th["cheap_above"]:
        return 1.0
    return th["exploration_rate"] if score >= th["capable_below"] else 0.0


# --- determinism ------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_events_and_truth() -> None:
    a, b = (Simulator("pareto-trap", rate=1.0, seed=5) for _ in range(2))
    first = events_bytes(a.run(days=0.3, chunk_seconds=1800))
    assert first == events_bytes(b.run(days=0.3, chunk_seconds=1800))
    assert orjson.dumps(a.truth()) == orjson.dumps(b.truth())
    assert first != events_bytes(Simulator("pareto-trap", rate=1.0, seed=6).run(days=0.3))
    assert a.baseline(n_samples=5000).model_dump() == b.baseline(n_samples=5000).model_dump()


def test_written_files_are_deterministic_also_gzipped(tmp_path: Path) -> None:
    digests = []
    for i in range(2):
        sim = Simulator("cascade", rate=0.5, seed=9)
        paths = (tmp_path / f"{i}.routing.jsonl.gz", tmp_path / f"{i}.feedback.jsonl.gz")
        n_r, n_f = write_jsonl(sim.run(days=0.5), paths[0], paths[1], gzip=True)
        lines = gzip.decompress(paths[0].read_bytes()).splitlines()
        assert len(lines) == n_r and n_f > 0
        RoutingEvent.model_validate_json(lines[0])
        digests.append([p.read_bytes() for p in paths])
    assert digests[0] == digests[1]


def test_io_writers_round_trip(tmp_path: Path) -> None:
    sim = Simulator("retrain", rate=0.02, seed=1)
    n_r, _ = write_jsonl(sim.run(days=11, chunk_seconds=6 * 3600), tmp_path / "r.jsonl",
                         tmp_path / "f.jsonl", baselines_path=tmp_path / "b.jsonl")
    assert n_r == len((tmp_path / "r.jsonl").read_bytes().splitlines())
    (new,) = [Baseline.model_validate_json(x)
              for x in (tmp_path / "b.jsonl").read_bytes().splitlines()]
    assert new.classifier_version == "clf-2026-01"
    write_truth(tmp_path / "truth.json", sim.truth())
    assert orjson.loads((tmp_path / "truth.json").read_bytes())["changes"][0]["onset_day"] == 10
    write_baseline(tmp_path / "baseline.json", sim.baseline(n_samples=2000, bins=20))
    assert Baseline.model_validate_json((tmp_path / "baseline.json").read_bytes()).score.n == 2000


# --- payload validity -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_emits_valid_sorted_events(name: str) -> None:
    sim = Simulator(name, rate=0.007, seed=2)
    rng = np.random.default_rng(0)
    request_ts: dict[str, float] = {}
    sample_r: list[dict[str, Any]] = []
    sample_f: list[dict[str, Any]] = []
    for chunk in sim.run(days=30, chunk_seconds=6 * 3600):
        for key in ("routing", "feedback"):
            ts = [e["ts"] for e in getattr(chunk, key)]
            assert ts == sorted(ts)
            for e in getattr(chunk, key):
                assert chunk.start <= datetime.fromisoformat(e["ts"]).timestamp() < chunk.end
        request_ts.update((e["request_id"], datetime.fromisoformat(e["ts"]).timestamp())
                          for e in chunk.routing)
        sample_r += [chunk.routing[i] for i in np.flatnonzero(rng.random(len(chunk.routing))
                                                               < 0.08)]
        sample_f += chunk.feedback
    assert len(sample_r) > 500 and len(sample_f) > 500
    for e in sample_r:
        ev = RoutingEvent.model_validate(e)
        assert ev.segment is not None and "cohort" in ev.segment
        assert ev.signals is not None and "ood_distance" in ev.signals
        assert e["ts"].endswith("+00:00")
    for e in sample_f:
        fb = FeedbackEvent.model_validate(e)
        assert fb.epoch > request_ts[fb.request_id]  # feedback follows its request
    ids = [e["event_id"] for e in sample_r + sample_f]
    assert len(ids) == len(set(ids))


# --- calibration facts of the pareto-trap ------------------------------------------------


@pytest.fixture(scope="module")
def pareto() -> dict[str, Any]:
    """Per-day aggregates of a 35-day pareto-trap run, with support contacts joined."""
    sim = Simulator("pareto-trap", rate=0.1, seed=11)
    days = 35
    routed = np.zeros((days, 2), dtype=np.int64)  # [day, cheap?]
    support = np.zeros((days, 2), dtype=np.int64)  # by the request's day and tier
    thumbs_down = np.zeros(days, dtype=np.int64)
    votes = 0
    tier_of: dict[str, tuple[int, int]] = {}
    scores: dict[int, list[float]] = defaultdict(list)
    for chunk in sim.run(days=days):
        day = int((chunk.start - START) // DAY)
        for e in chunk.routing:
            cheap = e["tier"] == "cheap"
            routed[day, int(cheap)] += 1
            tier_of[e["request_id"]] = (day, int(cheap))
            scores[day].append(e["score"])
        for f in chunk.feedback:
            if f["kind"] == "support_contact":
                d, c = tier_of[f["request_id"]]  # support knows no tier: join
                support[d, c] += 1
            elif f["kind"] == "thumbs":
                votes += 1
                thumbs_down[int((datetime.fromisoformat(f["ts"]).timestamp() - START)
                                // DAY)] += f["value"] == 0.0
    return {"sim": sim, "routed": routed, "support": support, "thumbs_down": thumbs_down,
            "votes": votes, "scores": scores, "truth": sim.truth()}


def test_pareto_trap_cheap_share_is_65_percent(pareto: dict[str, Any]) -> None:
    pre = pareto["routed"][:21]
    assert pre[:, 1].sum() / pre.sum() == pytest.approx(0.65, abs=0.03)


def test_pareto_trap_thumbs_down_are_3_per_1000_and_blind_to_the_drift(
        pareto: dict[str, Any]) -> None:
    n = pareto["routed"].sum(axis=1)
    down = pareto["thumbs_down"]
    assert 2.5 <= 1000 * down.sum() / n.sum() <= 3.5
    pre, post = 1000 * down[:21].sum() / n[:21].sum(), 1000 * down[28:].sum() / n[28:].sum()
    assert post / pre < 1.3  # the drift cohort's users call support instead of voting
    assert 0.01 < pareto["votes"] / n.sum() < 0.05  # thumbs on a few % of interactions


def test_pareto_trap_cheap_is_equivalent_on_94_percent_before_the_drift(
        pareto: dict[str, Any]) -> None:
    daily = pareto["truth"]["daily"]
    cheap = [(d["tiers"]["cheap"]["requests"], d["tiers"]["cheap"]["equivalent_rate"])
             for d in daily[:21]]
    rate = sum(n * r for n, r in cheap) / sum(n for n, _ in cheap)
    assert rate == pytest.approx(0.94, abs=0.015)
    after = [d["tiers"]["cheap"]["equivalent_rate"] for d in daily[28:]]
    assert max(after) < rate - 0.05  # the hidden quality loss


def test_pareto_trap_support_contacts_per_cheap_request_rise_after_day_21(
        pareto: dict[str, Any]) -> None:
    s, r = pareto["support"][:, 1], pareto["routed"][:, 1]
    before = s[:20].sum() / r[:20].sum()
    after = s[25:33].sum() / r[25:33].sum()  # the last days' contacts are not all in yet
    assert 0.002 < before < 0.01
    assert after > 3 * before
    capable_s, capable_r = pareto["support"][:, 0], pareto["routed"][:, 0]
    assert capable_s[25:33].sum() / capable_r[25:33].sum() < 2 * before


def test_pareto_trap_drift_shifts_the_score_distribution(pareto: dict[str, Any]) -> None:
    base = pareto["sim"].baseline(n_samples=50_000, bins=20)
    p90 = base.score.edges[18]
    pre = np.array([s for d in range(21) for s in pareto["scores"][d]])
    post = np.array([s for d in range(28, 35) for s in pareto["scores"][d]])
    assert np.mean(pre >= p90) == pytest.approx(0.10, abs=0.01)
    assert np.mean(post >= p90) > 0.13
    (change,) = pareto["truth"]["changes"]
    assert change["kind"] == "cohort_emergence" and change["onset_day"] == 21.0
    assert change["onset_epoch"] == START + 21 * DAY and change["tier"] == "cheap"


# --- routing semantics ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pareto-trap", "cascade", "fintech-conservative"])
def test_route_reasons_and_propensities_follow_the_thresholds(name: str) -> None:
    reasons: Counter[str] = Counter()
    for chunk in Simulator(name, rate=0.5, seed=4).run(days=1):
        for e in chunk.routing:
            th, s, reason, p = e["thresholds"], e["score"], e["route_reason"], e["propensity"]
            reasons[reason] += 1
            first_cheap = reason in ("confident_cheap", "exploration", "escalated")
            assert (e["tier"] == "cheap") == (reason in ("confident_cheap", "exploration"))
            if reason == "confident_cheap":
                assert s >= th["cheap_above"] and p == 1.0
            elif reason == "confident_capable":
                assert s < th["capable_below"] and p == 1.0 and e["tier"] == "capable"
            elif reason == "uncertain_default":
                assert th["capable_below"] <= s < th["cheap_above"]
                assert p == pytest.approx(1 - th["exploration_rate"]) and e["tier"] == "capable"
            elif reason == "exploration":
                assert th["capable_below"] <= s < th["cheap_above"]
                assert p == th["exploration_rate"]
            else:
                assert reason == "escalated" and e["tier"] == "capable"
                assert p == pytest.approx(p_cheap(th, s))  # propensity of the first stage
            conf = e["signals"].get("self_confidence")
            if name == "cascade" and first_cheap:
                assert (conf < th["escalate_below"]) == (reason == "escalated")
            else:
                assert conf is None
    assert reasons["exploration"] > 0 and reasons["uncertain_default"] > 0
    assert (reasons["escalated"] > 0) == (name == "cascade")


def test_policy_callback_is_honoured() -> None:
    calls: list[float] = []
    low = Thresholds(cheap_above=0.4, capable_below=0.33, exploration_rate=0.1)
    high = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.2)

    def policy(now: float) -> Thresholds:
        calls.append(now)
        return low if now < START + DAY else high

    sim = Simulator("steady", rate=0.3, seed=8)
    base = sim.baseline(n_samples=100_000, bins=200).score
    cdf = np.concatenate([[0.0], np.cumsum(base.probs)])

    def expected_share(th: Thresholds) -> float:
        above = 1 - float(np.interp(th.cheap_above, base.edges, cdf))
        band = float(np.interp(th.cheap_above, base.edges, cdf)
                     - np.interp(th.capable_below, base.edges, cdf))
        return above + th.exploration_rate * band

    chunks = list(sim.run(days=2, policy=policy))
    assert calls == [c.start for c in chunks] and calls[1] - calls[0] == 3600
    for day, th, seq in ((0, low, 0), (1, high, 1)):
        events = [e for c in chunks if (c.start - START) // DAY == day for e in c.routing]
        assert all(e["thresholds"] == th.model_dump(exclude_none=True) for e in events)
        assert {e["policy_seq"] for e in events} == {seq}
        share = np.mean([e["tier"] == "cheap" for e in events])
        assert share == pytest.approx(expected_share(th), abs=0.015)
    assert expected_share(low) - expected_share(high) > 0.15

    # an explicit seq is stamped as given; the queries themselves do not depend on the policy
    explicit = list(sim.run(days=0.1, policy=lambda now: (high, 42)))
    assert {e["policy_seq"] for c in explicit for e in c.routing} == {42}
    same = list(sim.run(days=0.1))
    assert [e["score"] for c in explicit for e in c.routing] == \
        [e["score"] for c in same for e in c.routing]


# --- baselines, time, feedback shapes -----------------------------------------------------


def test_baseline_has_equal_mass_bins_and_matches_steady_traffic() -> None:
    sim = Simulator("steady", rate=0.2, seed=3)
    base = sim.baseline()
    assert len(base.score.edges) == 201 and base.score.n == 200_000
    assert max(base.score.probs) - min(base.score.probs) < 0.001
    assert base.classifier_version == "clf-2025-11" and "ood_distance" in base.signals
    assert base.created_at.timestamp() == START
    scores = np.array([e["score"] for c in sim.run(days=2) for e in c.routing])
    deciles = np.searchsorted(base.score.edges[20:-1:20], scores, side="right")
    observed = np.bincount(deciles, minlength=10)
    assert stats.chisquare(observed).pvalue > 0.001


def test_score_distribution_does_not_depend_on_time_of_day() -> None:
    night: list[float] = []
    day: list[float] = []
    for chunk in Simulator("steady", rate=0.3, seed=12).run(days=3):
        hour = (chunk.start % DAY) / 3600
        if hour < 6 or 12 <= hour < 18:
            (night if hour < 6 else day).extend(e["score"] for e in chunk.routing)
    assert len(day) > 1.3 * len(night)  # the arrival rate is seasonal ...
    assert stats.ks_2samp(night, day).pvalue > 0.001  # ... the scores are not


def test_retrain_changes_classifier_version_and_emits_its_baseline() -> None:
    sim = Simulator("retrain", rate=0.05, seed=1)
    onset = START + 10 * DAY
    versions: set[tuple[bool, str]] = set()
    emitted = []
    for chunk in sim.run(days=12, chunk_seconds=4 * 3600):
        emitted += chunk.baselines
        versions |= {(datetime.fromisoformat(e["ts"]).timestamp() >= onset,
                      e["classifier_version"]) for e in chunk.routing}
        if chunk.baselines:
            assert chunk.start <= onset < chunk.end
    assert versions == {(False, "clf-2025-11"), (True, "clf-2026-01")}
    (new,) = emitted
    assert new.created_at.timestamp() == onset and new.version != sim.baseline().version
    old = sim.baseline()
    assert abs(new.score.edges[100] - old.score.edges[100]) > 0.05  # medians moved
    assert [b.classifier_version for b in sim.baselines(n_samples=1000, bins=10)] == \
        ["clf-2025-11", "clf-2026-01"]


def test_feedback_kinds_delays_and_join_keys() -> None:
    sim = Simulator("pareto-trap", rate=0.2, seed=21)
    routed: dict[str, dict[str, Any]] = {}
    delays: dict[str, list[float]] = defaultdict(list)
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for chunk in sim.run(days=6, chunk_seconds=6 * 3600):
        routed.update((e["request_id"], e) for e in chunk.routing)
        for f in chunk.feedback:
            r = routed[f["request_id"]]
            delays[f["kind"]].append(datetime.fromisoformat(f["ts"]).timestamp()
                                     - datetime.fromisoformat(r["ts"]).timestamp())
            by_kind[f["kind"]].append(f)
    assert set(by_kind) == {"thumbs", "rating", "review", "shadow", "support_contact", "survey"}
    assert np.median(delays["thumbs"]) < 600
    assert min(delays["support_contact"]) >= 3600 and max(delays["support_contact"]) > DAY
    assert min(delays["review"]) >= DAY
    for f in by_kind["review"]:  # the review tool knows tier and score; weight = 1/inclusion
        r = routed[f["request_id"]]
        assert (f["tier"], f["score"]) == (r["tier"], r["score"]) and f["weight"] in (50, 500)
    near = [f["weight"] == 50 for f in by_kind["review"]]
    assert 0.2 < np.mean(near) < 0.9  # boundary oversampled: ~10% of traffic, 10x the rate
    assert {f["tier"] for f in by_kind["shadow"]} == {"cheap", "capable"}
    assert all("tier" not in f and "score" not in f for k in ("thumbs", "rating", "survey",
               "support_contact") for f in by_kind[k])
    assert {f["value"] for f in by_kind["rating"]} <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_truth_lists_changes_and_daily_quality() -> None:
    sim = Simulator("fintech-conservative", rate=0.02, seed=5)
    for _ in sim.run(days=20, chunk_seconds=12 * 3600):
        pass
    truth = orjson.loads(orjson.dumps(sim.truth()))
    (change,) = truth["changes"]
    assert change["kind"] == "concept_drift" and change["cohort"] == "informational"
    assert change["onset_ts"] == "2026-01-15T00:00:00+00:00"
    assert len(truth["daily"]) == 20 and truth["daily"][0]["cheap_share"] < 0.25
    good = [d["tiers"]["cheap"]["good_rate"] for d in truth["daily"]]
    assert np.mean(good[17:]) < np.mean(good[:14]) - 0.05
    assert truth["parameters"]["cohorts"][0]["name"] == "informational"


def test_bad_arguments_raise() -> None:
    with pytest.raises(KeyError, match="known"):
        Simulator("nope", rate=1, seed=0)
    with pytest.raises(ValueError, match="rate"):
        Simulator("steady", rate=0, seed=0)
    with pytest.raises(ValueError, match="aware"):
        Simulator("steady", rate=1, seed=0, start=datetime(2026, 1, 1))
    with pytest.raises(KeyError, match="classifier_version"):
        Simulator("steady", rate=1, seed=0).baseline(classifier_version="v9")


# --- nuisances (pipeline.sim.nuisances): volume, policy and signal plumbing only ----------

STEADY_FLAT = nz.flat(SCENARIOS["steady"])


def _arrivals(sc: Scenario, days: float, rate: float, seed: int = 0) -> np.ndarray:
    """Arrival times (days since START) of ``sc``'s volume profile, as the simulator draws."""
    volume = sc.volume(True, START)
    start_us = int(START * US)
    us = arrivals(np.random.default_rng(seed), start_us, start_us + int(days * DAY * US),
                  rate, volume)
    out: np.ndarray = (us - start_us) / (DAY * US)
    return out


def test_weekly_cycle_has_its_weekend_ratio_and_diurnal_peak_to_trough() -> None:
    sc = nz.weekly_cycle(STEADY_FLAT, weekend=0.3, peak_to_trough=4.0)
    day = _arrivals(sc, 28.0, rate=0.5)
    per_day = np.bincount(day.astype(int), minlength=28)
    weekday = (np.arange(28) + 3) % 7  # 2026-01-01 is a Thursday; Monday = 0
    ratio = per_day[weekday >= 5].mean() / per_day[weekday < 5].mean()
    assert ratio == pytest.approx(0.3, rel=0.03)
    assert per_day.mean() == pytest.approx(0.5 * DAY, rel=0.01)  # mean one over a week
    hour = (day % 1.0) * 24
    peak = np.sum(np.abs(hour - 15.0) < 0.5)
    trough = np.sum(np.abs(hour - 3.0) < 0.5)
    assert peak / trough == pytest.approx(4.0, rel=0.05)


def test_flat_volume_is_constant() -> None:
    day = _arrivals(STEADY_FLAT, 14.0, rate=1.0)
    per_day = np.bincount(day.astype(int), minlength=14)
    per_hour = np.bincount(((day % 1.0) * 24).astype(int), minlength=24)
    assert stats.chisquare(per_day).pvalue > 1e-3
    assert stats.chisquare(per_hour).pvalue > 1e-3


def test_holiday_has_a_tenth_of_the_volume_for_one_day() -> None:
    day = _arrivals(nz.holiday(STEADY_FLAT, day=3.0, factor=0.1), 6.0, rate=1.0)
    per_day = np.bincount(day.astype(int), minlength=6)
    assert per_day[3] / per_day[[2, 4]].mean() == pytest.approx(0.1, rel=0.05)
    assert per_day[[0, 1, 2, 4, 5]] == pytest.approx(DAY, rel=0.02)


def test_volume_ramp_triples_over_a_week_and_stays() -> None:
    day = _arrivals(nz.volume_ramp(STEADY_FLAT, onset_day=2.0, days=7.0, factor=3.0), 12.0,
                    rate=0.5)
    per_day = np.bincount(day.astype(int), minlength=12) / (0.5 * DAY)
    assert per_day[:2] == pytest.approx([1.0, 1.0], rel=0.02)
    assert per_day[5] == pytest.approx(1 + 2 * 3.5 / 7, rel=0.02)  # mid-ramp: day 5.5
    assert per_day[9:] == pytest.approx([3.0] * 3, rel=0.02)


def test_a_nuisance_not_yet_in_force_changes_nothing() -> None:
    """Common random numbers: before a nuisance starts, its run is byte-identical to the
    run without it (the same arrivals, queries, routing and feedback)."""
    late = 50.0
    variants = [nz.holiday(STEADY_FLAT, late), nz.volume_ramp(STEADY_FLAT, late),
                nz.threshold_moves(STEADY_FLAT, [(late, 0.6, 0.5)]),
                nz.exploration_changes(STEADY_FLAT, [(late, 0.3)]),
                nz.feedback_outage(STEADY_FLAT, ("thumbs",), late),
                nz.delays_scaled(STEADY_FLAT, "support_contact", late)]
    base = events_bytes(Simulator(STEADY_FLAT, rate=0.5, seed=4).run(days=0.5))
    for sc in variants:
        assert events_bytes(Simulator(sc, rate=0.5, seed=4).run(days=0.5)) == base, sc


def test_threshold_moves_apply_at_their_time_with_a_new_policy_seq() -> None:
    sc = nz.threshold_moves(STEADY_FLAT, [(0.5, 0.5, 0.43), (1.0, 0.35, 0.28)])
    chunks = list(Simulator(sc, rate=0.3, seed=2).run(days=1.5))
    for c in chunks:
        day = (c.start - START) / DAY
        expect = (0.40, 0.33, 0) if day < 0.5 else (0.5, 0.43, 1) if day < 1.0 \
            else (0.35, 0.28, 2)
        assert (c.thresholds.cheap_above, c.thresholds.capable_below, c.policy_seq) == expect
        for e in c.routing:
            assert e["thresholds"]["cheap_above"] == expect[0]
            assert e["policy_seq"] == expect[2]
            assert (e["tier"] == "cheap") == (e["route_reason"] in ("confident_cheap",
                                                                    "exploration"))
            if e["score"] >= expect[0]:
                assert e["route_reason"] == "confident_cheap"
            elif e["score"] < expect[1]:
                assert e["route_reason"] == "confident_capable"


def test_exploration_rate_change_moves_the_explored_share_of_the_band() -> None:
    sc = nz.exploration_changes(STEADY_FLAT, [(1.0, 0.3)])
    share: dict[bool, list[bool]] = {False: [], True: []}
    for c in Simulator(sc, rate=0.5, seed=3).run(days=2.0):
        after = c.start >= START + DAY
        share[after] += [e["route_reason"] == "exploration" for e in c.routing
                         if e["route_reason"] in ("exploration", "uncertain_default")]
    assert np.mean(share[False]) == pytest.approx(0.1, abs=0.015)
    assert np.mean(share[True]) == pytest.approx(0.3, abs=0.025)


def _feedback(sc: Scenario, days: float, seed: int = 6) -> list[tuple[float, dict[str, Any]]]:
    """(chunk start, feedback event) for every feedback event, in delivery order."""
    return [(c.start, f) for c in Simulator(sc, rate=0.3, seed=seed).run(days=days)
            for f in c.feedback]


def test_silent_source_sends_its_backlog_late_with_original_timestamps() -> None:
    sc = nz.feedback_outage(STEADY_FLAT, ("thumbs", "rating"), start_day=1.0, days=1.0)
    base, held = _feedback(STEADY_FLAT, 3.0), _feedback(sc, 3.0)
    # the same events: only when they arrive differs
    assert sorted(orjson.dumps(f) for _, f in held) == sorted(orjson.dumps(f) for _, f in base)
    lo, hi = START + DAY, START + 2 * DAY
    silent = [(at, f) for at, f in held if f["kind"] in ("thumbs", "rating")
              and lo <= datetime.fromisoformat(f["ts"]).timestamp() < hi]
    assert len(silent) > 300
    assert {at for at, _ in silent} == {hi}  # nothing while silent; all in the hour it ends
    others = [f for at, f in held if at < hi and f["kind"] not in ("thumbs", "rating")
              and datetime.fromisoformat(f["ts"]).timestamp() >= lo]
    assert others  # the other sources kept talking
    late = [datetime.fromisoformat(f["ts"]).timestamp() for _, f in silent]
    assert min(late) < lo + 3600 and max(late) > hi - 3600  # up to a whole outage behind


# every request has the same contact probability, high enough to measure delays quickly
CONTACTING = replace(STEADY_FLAT, users=replace(STEADY_FLAT.users, support_rate_good=0.05,
                                                support_rate_bad=0.05))


def _contact_delays(sc: Scenario, days: float) -> tuple[np.ndarray, np.ndarray]:
    """(request day, delay in hours) of every support contact of a run."""
    asked: dict[str, float] = {}
    out: list[tuple[float, float]] = []
    for c in Simulator(sc, rate=0.2, seed=8).run(days=days):
        asked.update((e["request_id"], datetime.fromisoformat(e["ts"]).timestamp())
                     for e in c.routing)
        for f in c.feedback:
            if f["kind"] == "support_contact":
                t0 = asked[f["request_id"]]
                out.append(((t0 - START) / DAY,
                            (datetime.fromisoformat(f["ts"]).timestamp() - t0) / 3600))
    arr = np.array(out)
    return arr[:, 0], arr[:, 1]


def test_support_contact_delays_double_from_their_onset() -> None:
    # delays clipped at one day, so that every contact of days 0-2 is in a 4-day run
    short = replace(CONTACTING, delays=replace(CONTACTING.delays, support_contact=Delay(
        median_s=8 * 3600.0, sigma=0.9, min_s=3600.0, max_s=DAY)))
    day, delay = _contact_delays(nz.delays_scaled(short, "support_contact", 1.0, 2.0), 4.0)
    before, after = delay[day < 1.0], delay[(day >= 1.0) & (day < 2.0)]
    assert min(len(before), len(after)) > 500
    assert np.median(before) == pytest.approx(8.0, rel=0.1)  # the scenario's median
    assert np.median(after) / np.median(before) == pytest.approx(2.0, rel=0.12)
    assert before.max() <= 24.0 < after.max() <= 48.0  # the clip moved with the scale
    # the same requests contact support as without the change: only the delay moved
    base_day, _ = _contact_delays(short, 4.0)
    assert np.sort(base_day[base_day < 2.0]).tolist() == np.sort(day[day < 2.0]).tolist()


def test_exponential_contact_delays_have_mean_six_hours() -> None:
    day, delay = _contact_delays(nz.exponential_contacts(CONTACTING, mean_hours=6.0), 4.0)
    d = delay[day < 2.0]  # all but e^-8 of their contacts arrive within the run
    assert len(d) > 1000
    assert d.mean() == pytest.approx(6.0, rel=0.08)
    assert stats.kstest(d, "expon", args=(0, 6.0)).pvalue > 1e-3


def test_fleet_merges_routers_of_different_volumes_and_a_late_joiner() -> None:
    big = Simulator(STEADY_FLAT, rate=0.5, seed=1)
    small = Simulator(nz.renamed(STEADY_FLAT, "small"), rate=0.05, seed=2)
    late = Simulator(nz.renamed(STEADY_FLAT, "late"), rate=0.2, seed=3,
                     start=START + 0.5 * DAY)
    fleet = Fleet([big, small, late])
    n: Counter[str] = Counter()
    first_seen: dict[str, float] = {}
    for c in fleet.run(days=1.0):
        assert [e["ts"] for e in c.routing] == sorted(e["ts"] for e in c.routing)
        for e in c.routing:
            n[e["router_id"]] += 1
            first_seen.setdefault(e["router_id"], datetime.fromisoformat(e["ts"]).timestamp())
        assert set(c.chunks) == {"steady-router", "small"} | ({"late"} if c.start
                                                               >= START + 0.5 * DAY else set())
    assert n["steady-router"] / n["small"] == pytest.approx(10.0, rel=0.1)
    assert n["late"] == pytest.approx(0.2 * 0.5 * DAY, rel=0.05)
    assert first_seen["late"] >= START + 0.5 * DAY
    assert set(fleet.truth()) == {"steady-router", "small", "late"}
    with pytest.raises(ValueError, match="distinct"):
        Fleet([big, Simulator(STEADY_FLAT, rate=1.0, seed=5)])
    with pytest.raises(ValueError, match="grid"):
        list(Fleet([big, Simulator(nz.renamed(STEADY_FLAT, "x"), rate=1.0, seed=5,
                                   start=START + 10)]).run(days=0.1))


def test_nuisances_are_recorded_in_the_truth_and_checked() -> None:
    sc = nz.holiday(nz.delays_scaled(STEADY_FLAT, "support_contact", 3.0), 5.0)
    params = Simulator(sc, rate=0.1, seed=1).truth()["parameters"]
    assert params["volume_changes"] == [{"start_day": 5.0, "end_day": 6.0, "factor": 0.1}]
    assert params["delay_changes"][0]["factor"] == 2.0
    assert "outages" not in params  # unused nuisances leave the truth as it was
    with pytest.raises(ValueError, match="unknown feedback"):
        nz.feedback_outage(STEADY_FLAT, ("telepathy",), 1.0)
    with pytest.raises(ValueError):
        nz.threshold_moves(STEADY_FLAT, [(1.0, 0.3, 0.5)])  # capable_below > cheap_above
