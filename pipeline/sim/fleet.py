"""Several routers as one stream: a fleet of simulators merged chunk by chunk.

Each router keeps its own scenario, rate, seed and start, so a fleet models routers of
very different volumes, or a router that joins mid-stream (its simulator starts later).
Starts must fall on the fleet's chunk grid, so that every chunk of a router is a chunk
of the fleet.

>>> from dataclasses import replace
>>> from pipeline.sim.scenarios import SCENARIOS
>>> big = Simulator("steady", rate=1.0, seed=1)
>>> late = Simulator(replace(SCENARIOS["steady"], router_id="late"), rate=0.1, seed=2,
...                  start=big.start + 3600)
>>> chunks = list(Fleet([big, late]).run(days=2 / 24))
>>> [sorted({e["router_id"] for e in c.routing}) for c in chunks]
[['steady-router'], ['late', 'steady-router']]
>>> all(a["ts"] <= b["ts"] for c in chunks for a, b in zip(c.routing, c.routing[1:]))
True
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.schemas import Baseline
from pipeline.sim.clock import US
from pipeline.sim.events import Event
from pipeline.sim.params import SECONDS_PER_DAY
from pipeline.sim.simulator import Chunk, Policy, Simulator


@dataclass(frozen=True, slots=True)
class FleetChunk:
    """One slice ``[start, end)`` of every router's traffic; ``routing`` and ``feedback``
    are merged by ``ts`` (a silent source's backlog keeps its place in arrival order).
    ``chunks`` holds each router's own :class:`Chunk` (thresholds, policy_seq)."""

    start: float
    end: float
    routing: list[Event]
    feedback: list[Event]
    chunks: dict[str, Chunk]
    baselines: list[Baseline] = field(default_factory=list)


def _merged(lists: list[list[Event]]) -> list[Event]:
    if len(lists) == 1:
        return lists[0]
    # every ts has the same RFC 3339 shape (UTC, microseconds): text order is time order
    return list(heapq.merge(*lists, key=lambda e: e["ts"]))


class Fleet:
    """Run several :class:`Simulator` s side by side (distinct ``router_id`` s)."""

    def __init__(self, simulators: Sequence[Simulator]) -> None:
        ids = [s.scenario.router_id for s in simulators]
        if not simulators or len(set(ids)) != len(ids):
            raise ValueError(f"a fleet needs routers with distinct ids, got {ids}")
        self.simulators = list(simulators)
        self.start = min(s.start for s in simulators)

    def run(self, days: float, chunk_seconds: float = 3600.0,
            policies: Mapping[str, Policy] | None = None) -> Iterator[FleetChunk]:
        """Every router's chunks from the fleet's start for ``days``, merged per chunk.

        ``policies`` maps a router id to the policy its simulator runs with.
        """
        if not days > 0 or not chunk_seconds > 0:
            raise ValueError("days and chunk_seconds must be > 0")
        step_us = round(chunk_seconds * US)
        start_us = round(self.start * US)
        end_us = start_us + round(days * SECONDS_PER_DAY * US)
        runs: list[tuple[int, Simulator, Iterator[Chunk]]] = []
        for sim in self.simulators:
            offset = round(sim.start * US) - start_us
            if offset % step_us:
                raise ValueError(f"{sim.scenario.router_id} starts off the chunk grid")
            if start_us + offset < end_us:
                policy = (policies or {}).get(sim.scenario.router_id)
                runs.append((start_us + offset, sim, sim.run(
                    (end_us - start_us - offset) / (SECONDS_PER_DAY * US), policy=policy,
                    chunk_seconds=chunk_seconds)))
        t_us = start_us
        while t_us < end_us:
            chunks: dict[str, Chunk] = {}
            for first_us, sim, it in runs:
                if first_us <= t_us:
                    chunk = next(it)
                    if round(chunk.start * US) != t_us:  # pragma: no cover - a logic error
                        raise RuntimeError("fleet chunks out of step")
                    chunks[sim.scenario.router_id] = chunk
            e_us = min(t_us + step_us, end_us)
            yield FleetChunk(
                t_us / US, e_us / US, _merged([c.routing for c in chunks.values()]),
                _merged([c.feedback for c in chunks.values()]), chunks,
                [b for c in chunks.values() for b in c.baselines])
            t_us = e_us

    def baselines(self, n_samples: int = 200_000, bins: int = 200) -> list[Baseline]:
        """Each router's initial baseline."""
        return [s.baseline(n_samples, bins) for s in self.simulators]

    def truth(self) -> dict[str, Any]:
        """Each router's ground truth of the last run, by router id."""
        return {s.scenario.router_id: s.truth() for s in self.simulators}
