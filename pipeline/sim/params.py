"""Scenario parameters as frozen dataclasses: every number the simulator uses lives here.

The model behind them, per query:

- a **cohort** (a kind of query, e.g. ``how-to``), drawn from a time-dependent mixture;
- a latent **difficulty** ``d`` (normal, per cohort);
- a latent **surface simplicity** ``s = -corr * d + sqrt(1 - corr²) * e + bias``: what the
  router's classifier can see. Normally strongly anti-correlated with difficulty; a cohort
  with a positive ``surface_bias`` *looks* simple while being hard;
- the router's **score** ``logistic(slope * (s - offset) + noise_sd * n)``, a noisy function of
  surface simplicity only;
- per tier, the probability of a good answer ``logistic(intercept - slope * d)``.

>>> QualityCurve(intercept=3.0, slope=1.5).p_good(np.array([0.0])).round(3).tolist()
[0.953]
>>> Ramp(onset_day=21.0, ramp_days=7.0).level(np.array([20.0, 24.5, 40.0])).tolist()
[0.0, 0.5, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.schemas import Thresholds

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SECONDS_PER_DAY = 86_400.0


def logistic(x: FloatArray) -> FloatArray:
    """The standard logistic function, elementwise."""
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


@dataclass(frozen=True, slots=True)
class QualityCurve:
    """Probability that a tier answers well: ``logistic(intercept - slope * difficulty)``."""

    intercept: float
    slope: float

    def p_good(self, difficulty: FloatArray) -> FloatArray:
        return logistic(self.intercept - self.slope * difficulty)


@dataclass(frozen=True, slots=True)
class TierSpec:
    """One model tier: its name on the wire, its price, latency and quality curve."""

    name: str
    model: str
    usd_per_1k_tokens: float
    latency_median_ms: float
    quality: QualityCurve
    latency_sigma: float = 0.4


@dataclass(frozen=True, slots=True)
class Classifier:
    """The router's scorer: ``score = logistic(slope * (surface - offset) + noise_sd * n)``."""

    version: str
    slope: float = 1.8
    offset: float = 0.0
    noise_sd: float = 0.5

    def score(self, surface: FloatArray, noise: FloatArray) -> FloatArray:
        return logistic(self.slope * (surface - self.offset) + self.noise_sd * noise)


@dataclass(frozen=True, slots=True)
class Users:
    """How a cohort's users react: per-interaction rates, conditional on the answer's quality.

    Happy users vote less than unhappy ones; some unhappy users contact support instead.
    """

    thumbs_rate_good: float = 0.025
    thumbs_rate_bad: float = 0.046
    down_given_good: float = 0.03
    down_given_bad: float = 0.85
    rating_rate: float = 0.004
    survey_rate: float = 0.002
    support_rate_good: float = 0.002
    support_rate_bad: float = 0.05


@dataclass(frozen=True, slots=True)
class Cohort:
    """A kind of query and how it looks to the classifier, relative to how hard it is."""

    name: str
    share: float
    difficulty_mean: float
    difficulty_sd: float = 0.7
    surface_corr: float = 0.85
    surface_bias: float = 0.0
    ood_mean: float = 1.0
    users: Users | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """A log-normal feedback delay in seconds, clipped to ``[min_s, max_s]``."""

    median_s: float
    sigma: float
    min_s: float
    max_s: float

    def draw(self, rng: np.random.Generator, n: int) -> FloatArray:
        raw = self.median_s * np.exp(self.sigma * rng.standard_normal(n))
        out: FloatArray = np.clip(raw, self.min_s, self.max_s)
        return out


@dataclass(frozen=True, slots=True)
class ExponentialDelay:
    """An exponential feedback delay with mean ``mean_s`` seconds, clipped to
    ``[min_s, max_s]`` (memoryless: the textbook case of contacts trickling in).

    >>> d = ExponentialDelay(mean_s=6 * 3600.0).draw(np.random.default_rng(0), 100_000)
    >>> round(float(d.mean()) / 3600, 1)
    6.0
    """

    mean_s: float
    min_s: float = 1.0
    max_s: float = 14 * 86_400.0

    def draw(self, rng: np.random.Generator, n: int) -> FloatArray:
        out: FloatArray = np.clip(rng.exponential(self.mean_s, n), self.min_s, self.max_s)
        return out


@dataclass(frozen=True, slots=True)
class Delays:
    """Feedback delays per kind: votes in minutes, support in hours to days, reviews in days."""

    thumbs: Delay = Delay(median_s=120.0, sigma=1.2, min_s=5.0, max_s=6 * 3600.0)
    rating: Delay = Delay(median_s=600.0, sigma=1.2, min_s=30.0, max_s=2 * 86_400.0)
    survey: Delay = Delay(median_s=1.5 * 86_400, sigma=0.5, min_s=3600.0, max_s=7 * 86_400.0)
    support_contact: Delay | ExponentialDelay = Delay(median_s=8 * 3600.0, sigma=0.9,
                                                      min_s=3600.0, max_s=5 * 86_400.0)
    shadow: Delay = Delay(median_s=300.0, sigma=0.7, min_s=30.0, max_s=3600.0)
    review: Delay = Delay(median_s=2.5 * 86_400, sigma=0.3, min_s=86_400.0,
                          max_s=6 * 86_400.0)


@dataclass(frozen=True, slots=True)
class Channels:
    """Automated feedback sources: the shadow scorer and the stratified review sample.

    Review inclusion probability is ``review_near_rate`` for scores inside the uncertain band
    or within ``review_near_width`` of a threshold, ``review_base_rate`` elsewhere.
    """

    shadow_rate: float = 0.01
    review_base_rate: float = 0.002
    review_near_rate: float = 0.02
    review_near_width: float = 0.05


@dataclass(frozen=True, slots=True)
class Grades:
    """Shapes of graded feedback values: ``logistic(N(mean, sd))`` by the answer's quality.

    Shadow agreement is high when both answers are good, middling when both are bad and low
    when they differ. ``five_stars_given_good`` splits good ratings between 4 and 5 stars;
    bad ones are spread over 1-3.
    """

    review_good: float = 2.2
    review_bad: float = -1.3
    review_sd: float = 0.8
    shadow_both_good: float = 2.2
    shadow_both_bad: float = 0.0
    shadow_differ: float = -1.4
    shadow_sd: float = 0.6
    survey_good: float = 1.3
    survey_bad: float = -0.9
    survey_sd: float = 0.9
    five_stars_given_good: float = 0.6


@dataclass(frozen=True, slots=True)
class Cascade:
    """Cheap first, escalate to capable when the cheap model's self-confidence is low.

    ``self_confidence = logistic(N(mean, sd))`` with the mean set by whether the cheap answer
    is good or bad.
    """

    escalate_below: float = 0.5
    confidence_mean_good: float = 1.5
    confidence_mean_bad: float = -0.5
    confidence_sd: float = 1.0


@dataclass(frozen=True, slots=True)
class Seasonality:
    """A modest diurnal and weekly arrival-rate factor, normalized to mean one over a week."""

    daily_amplitude: float = 0.25
    peak_hour_utc: float = 15.0
    weekend_factor: float = 0.8

    def factor(self, epoch_s: FloatArray) -> FloatArray:
        hour = (epoch_s % SECONDS_PER_DAY) / 3600.0
        daily = 1.0 + self.daily_amplitude * np.cos(2 * np.pi * (hour - self.peak_hour_utc) / 24)
        weekday = (np.floor(epoch_s / SECONDS_PER_DAY).astype(np.int64) + 3) % 7  # Monday = 0
        weekly = np.where(weekday >= 5, self.weekend_factor, 1.0)
        out: FloatArray = daily * weekly / self._week_mean
        return out

    @property
    def max_factor(self) -> float:
        return (1.0 + self.daily_amplitude) * max(1.0, self.weekend_factor) / self._week_mean

    def peak_between(self, start_s: float, end_s: float) -> float:
        """An upper bound of :meth:`factor` on ``[start_s, end_s)``: :attr:`max_factor`."""
        return self.max_factor

    @property
    def _week_mean(self) -> float:
        return (5.0 + 2.0 * self.weekend_factor) / 7.0


@dataclass(frozen=True, slots=True)
class Ramp:
    """A change's intensity over time: 0 before ``onset_day``, linear to 1 over ``ramp_days``."""

    onset_day: float
    ramp_days: float = 0.0

    def level(self, day: FloatArray) -> FloatArray:
        if self.ramp_days <= 0:
            return (day >= self.onset_day).astype(np.float64)
        out: FloatArray = np.clip((day - self.onset_day) / self.ramp_days, 0.0, 1.0)
        return out


@dataclass(frozen=True, slots=True)
class CohortEmergence:
    """A cohort's share moves from its base share to ``target_share`` (others shrink)."""

    cohort: str
    target_share: float
    ramp: Ramp
    description: str
    tier: str = "cheap"
    kind: Literal["cohort_emergence"] = "cohort_emergence"


@dataclass(frozen=True, slots=True)
class DifficultyShift:
    """Concept drift: a cohort gets harder by ``delta`` while it looks the same."""

    cohort: str
    delta: float
    ramp: Ramp
    description: str
    tier: str = "cheap"
    kind: Literal["concept_drift"] = "concept_drift"


@dataclass(frozen=True, slots=True)
class Retrain:
    """The router's classifier is replaced at ``ramp.onset_day`` (a step)."""

    classifier: Classifier
    ramp: Ramp
    description: str
    tier: str | None = None
    cohort: str | None = None
    kind: Literal["classifier_retrain"] = "classifier_retrain"


@dataclass(frozen=True, slots=True)
class SelfConfidenceShift:
    """The cheap model grows over-confident on its wrong answers (cascade): fewer escalations."""

    delta_bad: float
    ramp: Ramp
    description: str
    tier: str = "cheap"
    cohort: str | None = None
    kind: Literal["self_confidence_shift"] = "self_confidence_shift"


Change = CohortEmergence | DifficultyShift | Retrain | SelfConfidenceShift


# --- nuisances: what changes in real traffic while quality and scores stay the same --------
# Every one is opt-in (empty by default) and leaves the query mix, the scores, the answers'
# quality and the per-request feedback probabilities alone: null tests add them to a
# scenario to check that a monitor stays quiet when only the volume, the routing policy or
# the plumbing of its signals moves. Times are days since the simulation start.


@dataclass(frozen=True, slots=True)
class VolumeStep:
    """The arrival rate times ``factor`` on ``[start_day, end_day)``; a holiday is
    ``VolumeStep(17.0, 18.0, 0.1)``.

    >>> VolumeStep(2.0, 3.0, 0.1).multiplier(np.array([1.5, 2.5, 3.0])).tolist()
    [1.0, 0.1, 1.0]
    """

    start_day: float
    end_day: float
    factor: float

    def __post_init__(self) -> None:
        if not self.end_day > self.start_day or not self.factor >= 0:
            raise ValueError("need end_day > start_day and factor >= 0")

    def multiplier(self, day: FloatArray) -> FloatArray:
        out: FloatArray = np.where((day >= self.start_day) & (day < self.end_day),
                                   self.factor, 1.0)
        return out

    def peak_between(self, start_day: float, end_day: float) -> float:
        """The largest multiplier on ``[start_day, end_day)``."""
        overlaps = start_day < self.end_day and end_day > self.start_day
        inside = self.start_day <= start_day and end_day <= self.end_day
        return self.factor if inside else max(1.0, self.factor) if overlaps else 1.0


@dataclass(frozen=True, slots=True)
class VolumeRamp:
    """The arrival rate grows (or shrinks) linearly to ``factor`` times over ``ramp`` and
    stays there: ``VolumeRamp(Ramp(15.0, 7.0), 3.0)`` triples it over one week.

    >>> VolumeRamp(Ramp(1.0, 2.0), 3.0).multiplier(np.array([0.0, 2.0, 9.0])).tolist()
    [1.0, 2.0, 3.0]
    """

    ramp: Ramp
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError("factor must be > 0")

    def multiplier(self, day: FloatArray) -> FloatArray:
        out: FloatArray = 1.0 + (self.factor - 1.0) * self.ramp.level(day)
        return out

    def peak_between(self, start_day: float, end_day: float) -> float:
        """The largest multiplier on ``[start_day, end_day)`` (it is monotone)."""
        ends = self.multiplier(np.array([start_day, end_day]))
        return float(ends.max())


VolumeChange = VolumeStep | VolumeRamp


@dataclass(frozen=True, slots=True)
class Volume:
    """The arrival-rate factor: a seasonality times every volume change.

    Duck-types :class:`Seasonality` (``factor`` of epoch seconds, ``peak_between``), which
    is what :func:`pipeline.sim.clock.arrivals` thins with.

    >>> v = Volume(Seasonality(0.0, 15.0, 1.0), (VolumeStep(1.0, 2.0, 0.1),), start_epoch=0.0)
    >>> v.factor(np.array([0.5, 1.5]) * SECONDS_PER_DAY).tolist()
    [1.0, 0.1]
    >>> v.peak_between(1.2 * SECONDS_PER_DAY, 1.3 * SECONDS_PER_DAY)
    0.1
    """

    seasonality: Seasonality | None
    changes: tuple[VolumeChange, ...]
    start_epoch: float

    def factor(self, epoch_s: FloatArray) -> FloatArray:
        out: FloatArray = (np.ones(len(epoch_s)) if self.seasonality is None
                           else self.seasonality.factor(epoch_s))
        day = (epoch_s - self.start_epoch) / SECONDS_PER_DAY
        for ch in self.changes:
            out = out * ch.multiplier(day)
        return out

    def peak_between(self, start_s: float, end_s: float) -> float:
        """An upper bound of :meth:`factor` on ``[start_s, end_s)``: arrivals are thinned
        from it, so a change not in force leaves the draws as they were without it."""
        peak = 1.0 if self.seasonality is None else self.seasonality.max_factor
        lo = (start_s - self.start_epoch) / SECONDS_PER_DAY
        hi = (end_s - self.start_epoch) / SECONDS_PER_DAY
        for ch in self.changes:
            peak *= ch.peak_between(lo, hi)
        return peak


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """The router's owner changes its thresholds at ``day``; a field left ``None`` keeps its
    value. Only used when the simulator runs without an explicit policy."""

    day: float
    cheap_above: float | None = None
    capable_below: float | None = None
    exploration_rate: float | None = None


@dataclass(frozen=True, slots=True)
class FeedbackOutage:
    """A feedback source goes silent on ``[start_day, start_day + days)`` and then sends
    its backlog: the events of those kinds whose time falls in the outage are delivered when
    it ends, with their original timestamps (late, in arrival order)."""

    kinds: tuple[str, ...]
    start_day: float
    days: float

    def __post_init__(self) -> None:
        if not self.days > 0 or not self.kinds:
            raise ValueError("an outage needs kinds and days > 0")

    @property
    def end_day(self) -> float:
        return self.start_day + self.days


@dataclass(frozen=True, slots=True)
class DelayChange:
    """Feedback of ``kind`` about requests made from ``onset_day`` on comes ``factor``
    times later (its whole delay distribution is scaled, bounds included)."""

    kind: str
    onset_day: float
    factor: float

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError("factor must be > 0")


_DEFAULT_CHEAP = TierSpec("cheap", "small-llm-2025-10", 0.0004, 450.0, QualityCurve(2.1, 2.2))
_DEFAULT_CAPABLE = TierSpec("capable", "large-llm-2025-09", 0.008, 1800.0, QualityCurve(3.6, 0.6))


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything that defines one simulated router and the changes injected into it.

    ``thresholds`` is a :class:`pipeline.schemas.Thresholds`-shaped triple
    ``(cheap_above, capable_below, exploration_rate)``; the cascade's floor lives in
    ``cascade.escalate_below``.
    """

    name: str
    description: str
    router_id: str
    cohorts: tuple[Cohort, ...]
    cheap_above: float
    capable_below: float
    exploration_rate: float
    classifier: Classifier = Classifier("clf-2025-11")
    cheap: TierSpec = _DEFAULT_CHEAP
    capable: TierSpec = _DEFAULT_CAPABLE
    users: Users = Users()
    channels: Channels = Channels()
    grades: Grades = Grades()
    delays: Delays = Delays()
    cascade: Cascade | None = None
    seasonality: Seasonality = Seasonality()
    changes: tuple[Change, ...] = ()
    tokens_median: float = 1200.0
    tokens_sigma: float = 0.6
    volume_changes: tuple[VolumeChange, ...] = ()
    policy_changes: tuple[PolicyChange, ...] = ()
    outages: tuple[FeedbackOutage, ...] = ()
    delay_changes: tuple[DelayChange, ...] = ()

    def __post_init__(self) -> None:
        total = sum(c.share for c in self.cohorts)
        if not np.isclose(total, 1.0, atol=1e-9):
            raise ValueError(f"cohort shares of {self.name} sum to {total}, not 1")
        names = {c.name for c in self.cohorts}
        if len(names) != len(self.cohorts):
            raise ValueError(f"duplicate cohort names in {self.name}")
        for ch in self.changes:
            if isinstance(ch, CohortEmergence | DifficultyShift) and ch.cohort not in names:
                raise ValueError(f"change refers to unknown cohort {ch.cohort!r}")
        if not 0.0 <= self.capable_below <= self.cheap_above <= 1.0:
            raise ValueError("need 0 <= capable_below <= cheap_above <= 1")
        kinds = set(Delays.__dataclass_fields__)
        for o in self.outages:
            if not set(o.kinds) <= kinds:
                raise ValueError(f"outage of unknown feedback kinds {o.kinds}")
        for d in self.delay_changes:
            if d.kind not in kinds:
                raise ValueError(f"delay change of unknown feedback kind {d.kind!r}")
        for p in self.policy_changes:
            self.thresholds_at(p.day)  # raises if a change leaves an invalid policy

    @property
    def thresholds(self) -> Thresholds:
        """The scenario's static policy (the default when ``run`` gets no policy)."""
        return Thresholds(
            cheap_above=self.cheap_above, capable_below=self.capable_below,
            exploration_rate=self.exploration_rate,
            escalate_below=None if self.cascade is None else self.cascade.escalate_below)

    def thresholds_at(self, day: float) -> Thresholds:
        """The static policy with every ``policy_changes`` entry up to ``day`` applied.

        >>> sc = Scenario("x", "", "r", (Cohort("a", 1.0, 0.0),), 0.6, 0.4, 0.1,
        ...               policy_changes=(PolicyChange(2.0, cheap_above=0.7),))
        >>> sc.thresholds_at(1.0).cheap_above, sc.thresholds_at(2.0).cheap_above
        (0.6, 0.7)
        """
        th = self.thresholds
        for p in sorted(self.policy_changes, key=lambda c: c.day):
            if p.day <= day:
                moved = {k: v for k in ("cheap_above", "capable_below", "exploration_rate")
                         if (v := getattr(p, k)) is not None}
                th = Thresholds(**{**th.model_dump(), **moved})
        return th

    def volume(self, seasonality: bool, start_epoch: float) -> Seasonality | Volume | None:
        """What the arrival rate is modulated by: the seasonality (when on), times the
        volume changes."""
        season = self.seasonality if seasonality else None
        if not self.volume_changes:
            return season
        return Volume(season, self.volume_changes, start_epoch)

    def cohort_users(self, cohort: Cohort) -> Users:
        return cohort.users if cohort.users is not None else self.users

    @property
    def classifiers(self) -> list[tuple[float, Classifier]]:
        """``(from_day, classifier)`` for the initial classifier and every retrain, by day."""
        out = [(float("-inf"), self.classifier)]
        out += sorted(((c.ramp.onset_day, c.classifier) for c in self.changes
                       if isinstance(c, Retrain)), key=lambda p: p[0])
        return out
