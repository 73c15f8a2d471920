"""A sequential test for a rise of bad outcomes, pooled over every quality signal.

A cohort the classifier mistakes for simple makes the cheap tier's answers in its score
band worse. Every quality signal sees it, each a little: thumbs-down among the votes,
low shadow agreement, support contacts hours later. Tested one by one, each signal's
evidence accrues too slowly for a page within hours at a few hundred requests an hour;
pooled, it does not.

Each step (an event-time hour) brings, per signal, a *bad mass* ``x`` (the sum of
``1 - y`` over its outcomes ``y`` in [0, 1]: thumbs-down, ratings below 4, ``1 -
agreement``; contacts that arrived) and its expectation ``λ`` under the reference
(``q0 × n``: the reference period's bad rate times the step's outcomes; for contacts, the
learnt delay pmf convolved with the routed requests of the hours before). The
alternative is that every signal's bad rate is multiplied by the same ratio ``ρ`` (a
worse answer is worse for every signal), with the log-likelihood ratio of the step

.. math::

    \\ell_\\rho = x \\ln\\rho - (\\rho - 1)\\lambda, \\qquad x = \\textstyle\\sum_s x_s,
    \\quad \\lambda = \\textstyle\\sum_s \\lambda_s.

**Validity for outcomes in [0, 1].** ``ρ^y`` is convex in ``y``, so ``ρ^y ≤ 1 + y(ρ - 1)``
on [0, 1], and an outcome of mean ``μ ≤ q0`` has ``E[ρ^y] ≤ 1 + μ(ρ - 1) ≤ e^{(ρ-1)q0}``.
For independent outcomes, and for Poisson counts, ``e^{ℓ_ρ}`` therefore has conditional
mean at most 1 under no change: a supermartingale factor, whatever mix of binary and
graded signals a step holds, and whatever their number (conditionally on it).

:class:`RatioMixture` runs a **mixture Shiryaev–Roberts** statistic over a grid of
ratios with equal weights ``w_c`` summing to 1, as :class:`~pipeline.core.sequential.
TiltMixture` does over tilts: ``R_{c,t} = (1 + R_{c,t-1}) e^{ℓ_{ρ_c,t}}`` and ``R_t =
Σ_c w_c R_{c,t}``. ``R_t − t`` is a supermartingale under no change, so by Doob's
inequality ``P(max_{t≤m} R_t ≥ A) ≤ m/A``: with ``ln A = ln(1/α)`` the chance of a false
alarm per step is at most ``α``, the same per-evaluation level as a Bonferroni family of
fixed-window tests, and the grid costs nothing in the threshold. Capping ``R_c`` (so an
alarm clears once the rise is over) and skipping empty steps only lower the path.

A CUSUM per ratio runs beside it: the one with the largest statistic gives the change
point (:attr:`RatioMixture.since`) and the bad outcomes observed and expected since, whose
ratio is the estimated size of the rise (:attr:`RatioMixture.ratio`).

>>> m = RatioMixture(threshold=9.0)
>>> [m.update(x, 2.0, bucket=b) for b, x in enumerate([2, 1, 3, 2])]   # as expected
[False, False, False, False]
>>> [m.update(x, 2.0, bucket=b) for b, x in enumerate([6, 7, 5, 8], start=4)]
[False, False, False, True]
>>> m.since, round(m.ratio, 2)
(4, 3.25)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Ratios of the bad-outcome rate under the alternative (the mixture's grid).
DEFAULT_RATIOS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0)


def step_log_likelihood(observed: float | FloatArray, expected: float | FloatArray,
                        ratios: FloatArray) -> FloatArray:
    """``ℓ_ρ = x ln ρ − (ρ − 1) λ`` for every ratio ``ρ``.

    >>> step_log_likelihood(3.0, 2.0, np.array([1.0, 2.0])).round(4).tolist()
    [0.0, 0.0794]
    """
    return observed * np.log(ratios) - (ratios - 1.0) * expected


@dataclass(slots=True)
class RatioMixture:
    """Mixture Shiryaev–Roberts test of ``H0``: bad outcomes at most as expected.

    ``threshold`` is ``ln A``; each component's ``ln R`` is capped at ``cap × threshold``.
    See the module docstring for the statistic and its false-alarm bound.
    """

    threshold: float
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    cap: float = 1.5
    log_r: FloatArray = field(init=False)
    cusum: FloatArray = field(init=False)
    starts: list[int | None] = field(init=False)
    obs: FloatArray = field(init=False)
    exp: FloatArray = field(init=False)

    def __post_init__(self) -> None:
        if not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"threshold must be positive and finite, got {self.threshold!r}")
        if not self.ratios or min(self.ratios) <= 1.0:
            raise ValueError(f"ratios must be > 1, got {self.ratios!r}")
        k = len(self.ratios)
        self.log_r = np.full(k, -np.inf)
        self.cusum = np.zeros(k)
        self.starts = [None] * k
        self.obs = np.zeros(k)
        self.exp = np.zeros(k)

    def update(self, observed: float, expected: float, *, bucket: int) -> bool:
        """Add one step's bad mass ``observed`` against ``expected``; alarm or not."""
        if not (observed >= 0 and expected >= 0 and math.isfinite(observed + expected)):
            raise ValueError(f"need finite observed, expected >= 0, got {observed!r}, "
                             f"{expected!r}")
        if observed == 0 and expected == 0:
            return self.alarm
        ll = step_log_likelihood(observed, expected, np.asarray(self.ratios))
        self.log_r = np.minimum(np.logaddexp(0.0, self.log_r) + ll,
                                self.cap * self.threshold)
        w = self.cusum + ll
        for c in range(len(self.ratios)):
            if w[c] <= 0.0:
                w[c], self.starts[c], self.obs[c], self.exp[c] = 0.0, None, 0.0, 0.0
            else:
                if self.starts[c] is None:
                    self.starts[c] = bucket
                self.obs[c] += observed
                self.exp[c] += expected
        self.cusum = w
        return self.alarm

    @property
    def statistic(self) -> float:
        """``ln R``: the log of the mixture (equal weights)."""
        top = float(self.log_r.max())
        if not math.isfinite(top):
            return -math.inf
        return top + math.log(float(np.exp(self.log_r - top).mean()))

    @property
    def alarm(self) -> bool:
        return self.statistic >= self.threshold

    def _best(self) -> int:
        return int(np.argmax(self.cusum))

    @property
    def since(self) -> int | None:
        """The change point: the start of the largest CUSUM's excursion."""
        return self.starts[self._best()]

    @property
    def observed(self) -> float:
        return float(self.obs[self._best()])

    @property
    def expected(self) -> float:
        return float(self.exp[self._best()])

    @property
    def ratio(self) -> float:
        """Bad outcomes observed over expected since the change point (1 without one)."""
        e = self.expected
        return self.observed / e if e > 0 else 1.0
