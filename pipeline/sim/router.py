"""The simulated router: thresholds (and optionally a cascade) applied to scores, vectorized.

- ``score >= cheap_above`` → cheap, ``confident_cheap``, propensity 1;
- ``score < capable_below`` → capable, ``confident_capable``, propensity 1;
- in between (the uncertain band) → capable, ``uncertain_default``, propensity
  ``1 - exploration_rate``, except ``exploration_rate`` of them sent to cheap at random:
  ``exploration``, propensity ``exploration_rate``;
- cascade: a request that went cheap first is ``escalated`` to capable when the cheap
  model's self-confidence is below ``escalate_below``. It keeps the propensity of its
  first-stage decision (escalation is deterministic given the self-confidence).

>>> from pipeline.schemas import Thresholds
>>> th = Thresholds(cheap_above=0.6, capable_below=0.4, exploration_rate=0.25)
>>> d = route(np.array([0.9, 0.1, 0.5, 0.5]), th, np.array([0.5, 0.5, 0.9, 0.1]))
>>> [REASONS[r] for r in d.reason]
['confident_cheap', 'confident_capable', 'uncertain_default', 'exploration']
>>> d.propensity.tolist()
[1.0, 1.0, 0.75, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.schemas import Thresholds
from pipeline.sim.params import BoolArray, FloatArray, IntArray

REASONS = ("confident_cheap", "confident_capable", "uncertain_default", "exploration",
           "escalated")
CONFIDENT_CHEAP, CONFIDENT_CAPABLE, UNCERTAIN_DEFAULT, EXPLORATION, ESCALATED = range(5)


@dataclass(frozen=True, slots=True)
class Decisions:
    """Per-request routing: final tier, reason code (index into REASONS), propensity."""

    cheap: BoolArray
    cheap_first: BoolArray
    reason: IntArray
    propensity: FloatArray


def route(score: FloatArray, thresholds: Thresholds, explore_u: FloatArray) -> Decisions:
    """Apply ``thresholds`` to ``score``; ``explore_u`` are uniforms for the exploration draw."""
    rate = thresholds.exploration_rate
    confident_cheap = score >= thresholds.cheap_above
    band = (score >= thresholds.capable_below) & ~confident_cheap
    explore = band & (explore_u < rate)
    reason = np.full(len(score), CONFIDENT_CAPABLE, dtype=np.int64)
    reason[band] = UNCERTAIN_DEFAULT
    reason[explore] = EXPLORATION
    reason[confident_cheap] = CONFIDENT_CHEAP
    propensity = np.ones(len(score))
    propensity[band] = 1.0 - rate
    propensity[explore] = rate
    cheap = confident_cheap | explore
    return Decisions(cheap, cheap.copy(), reason, propensity)


def escalate(decisions: Decisions, confidence: FloatArray, escalate_below: float) -> Decisions:
    """The cascade's second stage: cheap answers with low self-confidence go to capable."""
    up = decisions.cheap_first & (confidence < escalate_below)
    reason = decisions.reason.copy()
    reason[up] = ESCALATED
    return Decisions(decisions.cheap_first & ~up, decisions.cheap_first, reason,
                     decisions.propensity)
