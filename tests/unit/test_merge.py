"""The ordered merge releases one order, whatever the fetch timing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.merge import OrderedMerge

Item = tuple[int, int, int]  # (key, source, index): keys are unique, as (ts, topic, offset) are


def reference(sequences: list[list[int]]) -> list[Item]:
    """Repeatedly take the smallest head: the order a merge over complete logs gives."""
    heads = [0] * len(sequences)
    out: list[Item] = []
    while True:
        live = [s for s, seq in enumerate(sequences) if heads[s] < len(seq)]
        if not live:
            return out
        s = min(live, key=lambda s: (sequences[s][heads[s]], s))
        out.append((sequences[s][heads[s]], s, heads[s]))
        heads[s] += 1


sequences = st.lists(st.lists(st.integers(0, 50), max_size=12), min_size=1, max_size=4)


@pytest.mark.slow  # 300 examples: about 35 s
@settings(max_examples=300, deadline=None)
@given(sequences, st.data())
def test_any_fetch_timing_gives_the_merge_of_the_complete_logs(
        seqs: list[list[int]], data: Any) -> None:
    merge: OrderedMerge[Item] = OrderedMerge()
    fetched = [0] * len(seqs)
    out: list[Item] = []
    sources = list(range(len(seqs)))
    while any(f < len(s) for f, s in zip(fetched, seqs, strict=True)) or len(merge):
        pending = [s for s in sources if fetched[s] < len(seqs[s])]
        if pending and data.draw(st.booleans()):
            s = data.draw(st.sampled_from(pending))
            n = data.draw(st.integers(1, len(seqs[s]) - fetched[s]))
            for i in range(fetched[s], fetched[s] + n):
                merge.push(s, (seqs[s][i], s, i), (seqs[s][i], s, i))
            fetched[s] += n
        exhausted = {s for s in sources if fetched[s] == len(seqs[s])}
        got = merge.release(sources, caught_up=exhausted)
        out += got
        if not pending and not got:
            raise AssertionError("stalled with every log read")
    assert out == reference(seqs)


def test_an_empty_source_blocks_until_caught_up_and_force_releases_in_key_order() -> None:
    m: OrderedMerge[str] = OrderedMerge()
    m.push("a", (3,), "a3")
    m.push("b", (1,), "b1")
    m.push("a", (5,), "a5")
    assert m.release(["a", "b"], caught_up=set()) == ["b1"]
    assert m.release(["a", "b"], caught_up=lambda s: False) == []
    assert m.buffered("a") == 2
    m.push("b", (4,), "b4")
    assert m.release(["a", "b", "c"], caught_up={"c"}) == ["a3", "b4"]
    assert m.release(["a", "b"], caught_up=set(), force=True) == ["a5"]
    m.push("t", (9,), "t9")
    m.push("t", (2,), "t2")
    assert m.take("t") == ["t9", "t2"] and len(m) == 0 and m.take("t") == []
