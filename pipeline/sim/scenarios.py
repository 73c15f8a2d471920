"""The scenario registry: named routers, their traffic, and the changes injected into them.

=====================  ===========  ===============================================
name                   cheap share  what happens
=====================  ===========  ===============================================
pareto-trap            ~65%         day 21+: a cohort that looks simple but is hard
embedding-midmarket    ~50%         day 14+: long-tail queries labelled simple grow
fintech-conservative   ~20%         day 14+: informational answers go stale
cascade                ~63% final   day 14: cheap model over-confident, fewer escalations
retrain                ~65% → ~53%  day 10: classifier retrained, scores shift
steady                 ~65%         nothing
=====================  ===========  ===============================================

>>> sorted(SCENARIOS)
['cascade', 'embedding-midmarket', 'fintech-conservative', 'pareto-trap', 'retrain', 'steady']
>>> SCENARIOS["pareto-trap"].thresholds.cheap_above
0.4
"""

from __future__ import annotations

from pipeline.sim.params import (
    Cascade,
    Classifier,
    Cohort,
    CohortEmergence,
    DifficultyShift,
    Ramp,
    Retrain,
    Scenario,
    SelfConfidenceShift,
    Users,
)

# Users who got a wrong answer in a cohort that looks simple rarely vote: they call support.
SILENT_UNHAPPY = Users(thumbs_rate_bad=0.004, support_rate_bad=0.20)

SAAS_COHORTS = (
    Cohort("how-to", 0.40, difficulty_mean=-0.7),
    Cohort("account", 0.25, difficulty_mean=-0.3),
    Cohort("billing", 0.15, difficulty_mean=0.2),
    Cohort("troubleshooting", 0.20, difficulty_mean=0.9),
)

PARETO_TRAP = Scenario(
    name="pareto-trap",
    description=(
        "SaaS support agent. About 65% of traffic goes to the cheap model, which answers as "
        "well as the capable one on about 94% of its queries. From day 21 an SSO-migration "
        "cohort ramps in over 7 days: short, simple-looking questions that are actually hard. "
        "The classifier scores them as simple, so they go cheap; their users mostly call "
        "support rather than vote, so thumbs barely move."),
    router_id="support-agent",
    cohorts=(*SAAS_COHORTS,
             Cohort("sso-migration", 0.0, difficulty_mean=1.2, difficulty_sd=0.4,
                    surface_bias=2.4, ood_mean=2.2, users=SILENT_UNHAPPY)),
    cheap_above=0.4,
    capable_below=0.33,
    exploration_rate=0.1,
    changes=(CohortEmergence(
        cohort="sso-migration", target_share=0.12, ramp=Ramp(onset_day=21.0, ramp_days=7.0),
        description=("SSO-migration questions look simple (short, templated) but are hard; "
                     "routed cheap; share ramps 0 -> 12% over days 21-28; users call support "
                     "instead of voting; scores shift up (confidence drift).")),),
)

EMBEDDING_MIDMARKET = Scenario(
    name="embedding-midmarket",
    description=(
        "Mid-market assistant with an embedding-similarity router, about 50% cheap. Rare "
        "long-tail queries sit far from every training cluster, and the embedding router "
        "labels them simple. From day 14 their share grows from 3% to 12%."),
    router_id="midmarket-assistant",
    cohorts=(
        Cohort("general", 0.45, difficulty_mean=-0.5),
        Cohort("product", 0.30, difficulty_mean=0.1),
        Cohort("analysis", 0.22, difficulty_mean=1.0),
        Cohort("long-tail", 0.03, difficulty_mean=1.3, difficulty_sd=0.6, surface_bias=1.8,
               ood_mean=2.0, users=Users(thumbs_rate_bad=0.02, support_rate_bad=0.12)),
    ),
    cheap_above=0.52,
    capable_below=0.44,
    exploration_rate=0.1,
    classifier=Classifier("emb-knn-2025-10", slope=1.6, noise_sd=0.7),
    changes=(CohortEmergence(
        cohort="long-tail", target_share=0.12, ramp=Ramp(onset_day=14.0, ramp_days=10.0),
        description=("Long-tail queries, far from the training clusters (high ood_distance), "
                     "labelled simple by the embedding router; share 3% -> 12% over days "
                     "14-24.")),),
)

FINTECH_CONSERVATIVE = Scenario(
    name="fintech-conservative",
    description=(
        "Fintech assistant with a conservative policy, about 20% cheap, mostly "
        "'informational' questions with regulatory weight: a wrong answer is costly and its "
        "users call support. From day 14 a regulation change makes informational answers "
        "harder while they look the same: quality drops with no confidence drift."),
    router_id="fintech-advisor",
    cohorts=(
        Cohort("informational", 0.30, difficulty_mean=-0.6,
               users=Users(thumbs_rate_bad=0.02, support_rate_bad=0.30)),
        Cohort("account-ops", 0.30, difficulty_mean=0.2),
        Cohort("advice", 0.40, difficulty_mean=1.0),
    ),
    cheap_above=0.76,
    capable_below=0.7,
    exploration_rate=0.05,
    changes=(DifficultyShift(
        cohort="informational", delta=1.0, ramp=Ramp(onset_day=14.0, ramp_days=3.0),
        description=("A regulation change makes informational questions harder (stale "
                     "knowledge) while their text looks the same: cheap-tier quality drops, "
                     "support contacts rise, the score distribution does not move.")),),
)

CASCADE = Scenario(
    name="cascade",
    description=(
        "Helpdesk cascade: the classifier sends most traffic to the cheap model first, which "
        "escalates to the capable one when its self-confidence is below 0.5. On day 14 a "
        "cheap-model update makes it over-confident on wrong answers: fewer escalations, "
        "lower cheap-tier quality, a visible shift of the self_confidence signal."),
    router_id="cascade-helpdesk",
    cohorts=SAAS_COHORTS,
    cheap_above=0.3,
    capable_below=0.24,
    exploration_rate=0.1,
    cascade=Cascade(escalate_below=0.5),
    changes=(SelfConfidenceShift(
        delta_bad=1.2, ramp=Ramp(onset_day=14.0),
        description=("Cheap model update: self_confidence on wrong answers rises, so fewer "
                     "of them are escalated.")),),
)

RETRAIN = Scenario(
    name="retrain",
    description=(
        "The router's classifier is retrained on day 10: classifier_version changes and its "
        "score distribution becomes sharper and shifts down. A new baseline, created at the "
        "change, is emitted with the chunk it falls in."),
    router_id="retrain-router",
    cohorts=SAAS_COHORTS,
    cheap_above=0.4,
    capable_below=0.33,
    exploration_rate=0.1,
    changes=(Retrain(
        classifier=Classifier("clf-2026-01", slope=2.4, offset=0.25, noise_sd=0.35),
        ramp=Ramp(onset_day=10.0),
        description="Classifier retrained: sharper scores, shifted towards capable."),),
)

STEADY = Scenario(
    name="steady",
    description="The pareto-trap router with nothing injected: a no-drift control.",
    router_id="steady-router",
    cohorts=SAAS_COHORTS,
    cheap_above=0.4,
    capable_below=0.33,
    exploration_rate=0.1,
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    PARETO_TRAP, EMBEDDING_MIDMARKET, FINTECH_CONSERVATIVE, CASCADE, RETRAIN, STEADY)}


def get_scenario(name: str) -> Scenario:
    """The registered scenario called ``name``; the error lists the known names."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") \
            from None
