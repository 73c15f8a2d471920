"""Control that cannot be rolled back or forged by default (#15): the subscriber's state
file, the development key on both sides, and overlong validity. Offline: messages are
offered to the subscriber directly. tests/integration/test_control_security.py replays
a rollback through compaction on a real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.control import AppliedState, Bounds, ThresholdSubscriber
from pipeline.core.signing import Keyring, new_key, parse_key
from pipeline.schemas import ExpectedImpact, ThresholdRecommendation, Thresholds
from pipeline.settings import DEV_CONTROL_KEY, Settings

NOW = datetime(2026, 3, 1, tzinfo=UTC)
RING = Keyring({"k1": bytes.fromhex(new_key())})
DEV_RING = Keyring({"dev": parse_key(DEV_CONTROL_KEY)})
FALLBACK = Thresholds(cheap_above=0.95, capable_below=0.9, exploration_rate=0.0)
PREVIOUS = Thresholds(cheap_above=0.6, capable_below=0.5, exploration_rate=0.1)


def thresholds(seq: int) -> Thresholds:
    return Thresholds(cheap_above=0.6 + seq / 100, capable_below=0.5, exploration_rate=0.1)


def signed(seq: int, *, ring: Keyring = RING, key_id: str = "k1", mode: str = "enforce",
           ttl: timedelta = timedelta(days=7)) -> bytes:
    unsigned = ThresholdRecommendation.model_validate({
        "router_id": "support", "seq": seq, "issued_at": NOW, "valid_until": NOW + ttl,
        "mode": mode, "thresholds": thresholds(seq), "previous": PREVIOUS,
        "reasons": ["test"], "evidence": {}, "expected_impact": ExpectedImpact(
            cost_per_day_usd=1.0, cost_change_per_day_usd=0.0, cheap_share=0.5,
            quality_change=0.0), "key_id": key_id, "signature": "0" * 64})
    doc = unsigned.model_dump(mode="json", exclude_none=True)
    return orjson.dumps({**doc, "signature": ring.sign(key_id, doc)})


def subscriber(state: Path | None = None, ring: Keyring = RING, **kw: Any) -> ThresholdSubscriber:
    sub = ThresholdSubscriber("127.0.0.1:1", "support", ring, Bounds(), FALLBACK,
                              clock=lambda: NOW.timestamp() + 60, state_file=state, **kw)
    sub.mark_contact()
    return sub


def test_a_restarted_subscriber_remembers_what_it_applied(tmp_path: Path) -> None:
    state = tmp_path / "state" / "support.json"  # its directory is made on first save
    first = subscriber(state)
    assert [first.offer(signed(s)) for s in (2, 3)] == ["applied", "applied"]
    assert orjson.loads(state.read_bytes())["seq"] == 3
    restarted = subscriber(state)
    assert restarted.applied is not None and restarted.applied.seq == 3
    assert restarted.current() == thresholds(3)
    # compaction left only an older message: it is a replay, the newer one stays in force
    assert restarted.offer(signed(2)) == "replay"
    assert restarted.current() == thresholds(3)
    assert restarted.offer(signed(4)) == "applied"
    assert orjson.loads(state.read_bytes())["seq"] == 4
    assert [p.name for p in state.parent.iterdir()] == ["support.json"]  # no temp files
    # without the file, the same history is applied from scratch: the attack it stops
    assert subscriber().offer(signed(2)) == "applied"


def test_a_stored_recommendation_that_no_longer_verifies_keeps_only_its_seq(
        tmp_path: Path) -> None:
    state = tmp_path / "support.json"
    assert subscriber(state).offer(signed(5)) == "applied"
    rotated = Keyring({"k2": bytes.fromhex(new_key())})  # k1 is no longer trusted
    sub = subscriber(state, ring=rotated)
    assert sub.applied is None and sub.current() == FALLBACK
    assert sub.offer(signed(4, ring=rotated, key_id="k2")) == "replay"
    assert sub.offer(signed(6, ring=rotated, key_id="k2")) == "applied"


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "is unreadable"),
    (orjson.dumps({"router_id": "billing", "seq": 3}), "is not router 'support'"),
    (orjson.dumps({"router_id": "support"}), "is not router 'support'"),
])
def test_a_bad_state_file_stops_the_subscriber(tmp_path: Path, content: bytes,
                                               message: str) -> None:
    state = tmp_path / "support.json"
    state.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        subscriber(state)


def test_state_files_are_replaced_atomically(tmp_path: Path) -> None:
    store = AppliedState(tmp_path / "s.json")
    assert store.load("support") == (0, None)
    rec = ThresholdRecommendation.model_validate_json(signed(7))
    store.save(rec)
    seq, doc = store.load("support")
    assert seq == 7 and doc is not None
    assert ThresholdRecommendation.model_validate(doc) == rec


def test_enforce_messages_signed_with_the_development_key_are_rejected() -> None:
    """The worker refuses to enforce with the public key, so such a message is forged."""
    sub = subscriber(ring=DEV_RING, accept_advisory=True)
    assert sub.offer(signed(1, ring=DEV_RING, key_id="dev", ttl=timedelta(days=3650))) \
        == "dev_key"
    assert sub.offer(signed(2, ring=DEV_RING, key_id="dev", mode="advisory")) == "applied"
    assert dict(sub.rejections) == {"dev_key": 1}


def test_a_recommendation_valid_for_years_is_rejected() -> None:
    sub = subscriber()
    assert sub.offer(signed(1, ttl=timedelta(days=3650))) == "too_long"
    assert sub.offer(signed(2, ttl=timedelta(days=7))) == "applied"


def test_enforce_with_the_development_key_is_a_bad_setting() -> None:
    with pytest.raises(ValueError, match="control_mode enforce refuses the built-in"):
        Settings(control_mode="enforce")
    assert Settings(control_mode="enforce", control_key=new_key()).control_mode == "enforce"
    assert Settings().uses_dev_control_key  # advisory: allowed, the worker warns
