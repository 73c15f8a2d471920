"""The one-active assignor: every input partition to one member, sticky, deterministic."""

from __future__ import annotations

from faust.assignor.client_assignment import ClientAssignment
from hypothesis import given
from hypothesis import strategies as st

from pipeline.stream.assignor import one_active


def ca(**actives: list[int]) -> ClientAssignment:
    return ClientAssignment(actives=dict(actives), standbys={})


def test_the_previous_owner_keeps_everything_when_a_standby_joins() -> None:
    # faust's own assignment would balance: half each
    spread = {"m-new": ca(routing=[0, 1], feedback=[0]), "m-old": ca(routing=[2, 3],
                                                                   feedback=[1])}
    got = one_active(spread, {"m-old": ca(routing=[0, 1, 2, 3], feedback=[0, 1]),
                              "m-new": ca()})
    assert got["m-old"].actives == {"feedback": [0, 1], "routing": [0, 1, 2, 3]}
    assert got["m-new"].actives == {} and got["m-new"].standbys == {}


def test_when_the_owner_is_gone_a_standby_gets_everything() -> None:
    got = one_active({"m-b": ca(routing=[0, 1]), "m-c": ca(routing=[2, 3])},
                     {"m-b": ca(), "m-c": ca()})
    assert got["m-b"].actives == {"routing": [0, 1, 2, 3]} and got["m-c"].actives == {}


@given(st.dictionaries(st.text(min_size=1, max_size=4),
                       st.dictionaries(st.sampled_from(["routing", "feedback", "baselines"]),
                                       st.lists(st.integers(0, 7), max_size=4), max_size=3),
                       min_size=1, max_size=5),
       st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 5), max_size=5))
def test_exactly_one_member_holds_every_partition(
        spread: dict[str, dict[str, list[int]]], held: dict[str, int]) -> None:
    assignments = {m: ca(**a) for m, a in spread.items()}
    previous = {m: ca(routing=list(range(n))) for m, n in held.items()}
    got = one_active(assignments, previous)
    assert got.keys() == assignments.keys()
    owners = [m for m, a in got.items() if a.actives]
    everything = {(t, p) for a in spread.values() for t, ps in a.items() for p in ps}
    if not everything:
        return
    assert len(owners) == 1
    owned = {(t, p) for t, ps in got[owners[0]].actives.items() for p in ps}
    assert owned == everything
    # the same inputs in another order give the same owner (every member computes it)
    again = one_active(dict(reversed(list(assignments.items()))), previous)
    assert [m for m, a in again.items() if a.actives] == owners
    # sticky: nobody held more before than the owner
    most = max((held.get(m, 0) for m in spread), default=0)
    assert held.get(owners[0], 0) == most
