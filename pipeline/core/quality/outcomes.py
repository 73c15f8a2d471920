"""The signals, and a feedback event's good-outcome score and weight."""

from __future__ import annotations

#: Signals measured on feedback events (rate = good feedback / feedback).
FEEDBACK_SIGNALS: tuple[str, ...] = ("thumbs", "rating", "review", "shadow", "survey")
#: Signals measured on routed requests (rate = 1 - bad events / routed requests).
ROUTED_SIGNALS: tuple[str, ...] = ("support_contact",)
SIGNALS: tuple[str, ...] = FEEDBACK_SIGNALS + ROUTED_SIGNALS
#: Default evaluation windows, in seconds.
WINDOWS: dict[str, float] = {"1d": 86400.0, "7d": 7 * 86400.0, "28d": 28 * 86400.0}

DAY = 86400.0


def outcome(kind: str, value: float) -> float:
    """Map a feedback ``(kind, value)`` to its good-outcome score ``y`` in [0, 1].

    ``support_contact`` maps to 0.0 (bad), but it is a per-routed-request
    signal: feed it through :meth:`OutcomeCounts.update_contact`, not as a
    feedback outcome.

    Raises
    ------
    ValueError
        For an unknown kind or a value outside the kind's range: a silently
        clipped rating of 7 would hide a producer bug that should dead-letter.

    Examples
    --------
    >>> outcome("thumbs", 1), outcome("rating", 4), outcome("rating", 3), outcome("review", 0.7)
    (1.0, 1.0, 0.0, 0.7)
    """
    v = float(value)
    if kind == "thumbs":
        if v not in (0.0, 1.0):
            raise ValueError(f"thumbs value must be 0 or 1, got {value!r}")
        return v
    if kind == "rating":
        if not 1.0 <= v <= 5.0:
            raise ValueError(f"rating value must be in [1, 5], got {value!r}")
        return 1.0 if v >= 4.0 else 0.0
    if kind in ("review", "shadow", "survey"):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{kind} value must be in [0, 1], got {value!r}")
        return v
    if kind == "support_contact":
        return 0.0
    raise ValueError(f"unknown feedback kind {kind!r}; expected one of {SIGNALS}")


def ipw_weight(propensity: float, weight: float = 1.0) -> float:
    """Inverse-propensity weight ``weight / propensity`` for in-band comparisons.

    Examples
    --------
    >>> ipw_weight(0.2)
    5.0
    """
    if not 0.0 < propensity <= 1.0:
        raise ValueError(f"propensity must be in (0, 1], got {propensity!r}")
    return weight / propensity
