"""Savings against hidden cost, per tier: is the router in a Pareto trap?

Inference savings are what the cheap tier's requests would have cost on the capable
model minus what they cost. The hidden cost is the extra harm those requests did:
extra bad outcomes × cost per bad outcome, plus extra support contacts × cost per
contact, each "extra" measured against the counterfactual rate the capable tier
would have had on the same traffic. A Pareto trap is hidden cost above savings with
confidence.

>>> p = Prices(cheap_per_request=0.002, capable_per_request=0.02, cost_per_bad_outcome=2.0,
...            cost_per_support_contact=15.0)
>>> e = tier_economics(p, requests_per_day=10_000, extra_bad_rate=(0.001, 0.0005, 0.0015),
...                    extra_support_rate=(0.002, 0.0015, 0.003))
>>> round(e.savings_per_day, 2), round(e.hidden_cost_per_day, 2), e.trap
(180.0, 320.0, True)
>>> round(break_even_gap(p), 4)  # a cheap request pays for itself below this contact gap
0.0012
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Prices:
    """Prices in USD. Per-request prices are used only when events carry no ``cost_usd``."""

    cheap_per_request: float = 0.0005
    capable_per_request: float = 0.01
    cost_per_bad_outcome: float = 0.0
    cost_per_support_contact: float = 8.0
    #: outcomes months later (issue #18): priced only when set
    cost_per_bad_survey: float = 0.0
    cost_per_churned_subject: float = 0.0


@dataclass(frozen=True, slots=True)
class TierEconomics:
    requests_per_day: float
    cost_per_day: float
    all_capable_cost_per_day: float
    savings_per_day: float
    hidden_cost_per_day: float
    hidden_cost_lo: float
    hidden_cost_hi: float
    net_value_per_day: float
    trap: bool

    def to_dict(self) -> dict[str, float | bool]:
        return asdict(self)


Interval = tuple[float, float, float]  # estimate, lower, upper


def tier_economics(prices: Prices, *, requests_per_day: float, extra_bad_rate: Interval,
                   extra_support_rate: Interval,
                   delayed_cost_per_day: Interval = (0.0, 0.0, 0.0)) -> TierEconomics:
    """Economics of the cheap tier; rates are per routed request, with their intervals.

    Negative extra rates (cheap did better) count as zero hidden cost: the cheap tier
    gets no credit for beating the capable one, which keeps the trap test conservative
    only in the direction of raising it later, never of hiding it.
    ``delayed_cost_per_day``: the priced delayed outcomes (bad surveys, churned subjects;
    :meth:`pipeline.core.delayed.DelayedOutcomes.hidden_cost`), added to the hidden cost.

    >>> p = Prices(cheap_per_request=0.002, capable_per_request=0.02)
    >>> e = tier_economics(p, requests_per_day=1000, extra_bad_rate=(0, 0, 0),
    ...                    extra_support_rate=(0, 0, 0), delayed_cost_per_day=(30, 20, 40))
    >>> e.hidden_cost_per_day, e.hidden_cost_lo, e.trap
    (30.0, 20.0, True)
    """
    cost = requests_per_day * prices.cheap_per_request
    all_capable = requests_per_day * prices.capable_per_request
    savings = all_capable - cost

    def hidden(i: int) -> float:
        bad = max(0.0, extra_bad_rate[i]) * prices.cost_per_bad_outcome
        sup = max(0.0, extra_support_rate[i]) * prices.cost_per_support_contact
        return requests_per_day * (bad + sup)

    est, lo, hi = (hidden(i) + delayed_cost_per_day[i] for i in range(3))
    return TierEconomics(requests_per_day, cost, all_capable, savings, est, lo, hi,
                         savings - est, trap=lo > savings)


def break_even_gap(prices: Prices) -> float | None:
    """Extra support contacts per request at which a cheap request stops paying for itself.

    The saving of one request routed cheap, divided by the price of a support contact;
    ``None`` when contacts cost nothing (only the quality floor then limits the policy).
    Extra bad outcomes other than contacts are not in the per-band evidence, so
    ``cost_per_bad_outcome`` does not enter.
    """
    if prices.cost_per_support_contact <= 0:
        return None
    return (prices.capable_per_request - prices.cheap_per_request) \
        / prices.cost_per_support_contact
