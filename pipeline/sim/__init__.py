"""Traffic simulator for a two-tier LLM cost router (the Pareto-trap scenarios).

>>> sim = Simulator("steady", rate=1.0, seed=1)
>>> sum(len(c.routing) for c in sim.run(days=0.1)) > 0
True
"""

from pipeline.sim.params import Scenario
from pipeline.sim.scenarios import SCENARIOS, get_scenario
from pipeline.sim.simulator import Chunk, Policy, Simulator

__all__ = ["SCENARIOS", "Chunk", "Policy", "Scenario", "Simulator", "get_scenario"]
