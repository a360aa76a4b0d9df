"""Experiment plans for fixes to CX incidents: unit, power, phased rollout, monitoring, rollback.

When an incident is explained ("the batching policy change hurt SF grocery at dinner") and a
fix is recommended, the fix is tested before it is rolled out. ``build_plan`` turns the fix
(``ActionSpec``), its metrics (``MetricSpec``: one primary, optional secondaries, at least one
guardrail) and the traffic in scope (``PlanContext``) into an ``ExperimentPlan``:

1. the unit of randomisation, chosen by the interference the fix causes (``choose_unit``);
2. sample size and duration from ``cxagent.experiments.design.plan_power`` on that unit;
3. a 10% -> 50% -> 100% ramp with go/no-go and rollback criteria per phase, the last phase a
   launch with a holdback (Kohavi, Tang & Xu 2020, "Trustworthy Online Controlled
   Experiments", ch. 15);
4. the daily monitoring checklist, read with the always-valid tools of
   ``cxagent.stats.sequential`` (confidence sequences, mSPRT, sample ratio mismatch, guardrail
   states), and the rollback plan.

Everything is pure computation; ``ExperimentPlan.to_markdown`` renders the plan and
``write_markdown`` writes it atomically. Every number in the rendering comes from the inputs
(including the policy settings of ``PlanContext``: burn-in, holdback), the ramp shares of
``RAMP_SHARES``, the weekly minimum ``MIN_DAYS`` and the SRM threshold of the sequential module,
or from the power computation.

Inputs are plain frozen dataclasses validated together by ``build_plan``, so that an error
names the field by its path in the request: ``guardrails[1].margin: must be > 0, got -0.1``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
from scipy import stats

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.data.io import json_safe
from cxagent.experiments.design import PowerPlan, Unit, plan_power
from cxagent.stats.sequential import (
    SRM_THRESHOLD,
    GuardrailState,
    normal_mixture_radius,
    optimal_rho,
)

__all__ = [
    "CAUSES",
    "MIN_DAYS",
    "RAMP_SHARES",
    "ActionKind",
    "ActionSpec",
    "Cause",
    "ExperimentPlan",
    "GuardrailPower",
    "MetricSpec",
    "MonitoringCheck",
    "PlanContext",
    "RollbackPlan",
    "RolloutPhase",
    "SwitchbackLayout",
    "UnitChoice",
    "build_plan",
    "choose_unit",
    "default_mde",
    "format_number",
    "scope_hours",
    "switchback_layout",
    "write_markdown",
]

Cause = Literal[
    "batching_policy", "prep_time_drift", "dasher_shortage", "inventory_drop", "eta_model_bias"
]
ActionKind = Literal["dispatch", "supply", "store_ops", "promise"]
MetricKind = Literal["rate", "mean"]
Direction = Literal["increase_is_good", "decrease_is_good"]

# The causes ``cxagent.rca.investigate`` ranks (its CAUSES); repeated here so that planning does
# not import the query engine.
CAUSES: Final[tuple[Cause, ...]] = get_args(Cause)
ACTION_KINDS: Final[tuple[ActionKind, ...]] = get_args(ActionKind)
METRIC_KINDS: Final[tuple[MetricKind, ...]] = get_args(MetricKind)
DIRECTIONS: Final[tuple[Direction, ...]] = get_args(Direction)

RAMP_SHARES: Final = (0.10, 0.50, 1.00)
"""Share of the scope exposed in each rollout phase (the last one less the holdback)."""
MIN_DAYS: Final = 7
"""The experiment phase covers at least one weekly cycle of demand."""
HOURS_PER_DAY: Final = 24


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionSpec:
    """The fix under test.

    ``description`` is a gerund phrase that opens the hypothesis ("Reducing batching");
    ``scope`` the slice it applies to ({"region": "SF", "category": "grocery", "daypart":
    "dinner"}); ``parameters`` the settings the fix sets; ``rollback_change_id`` the change-log
    id that reverts it, when there is one.
    """

    name: str
    description: str
    cause: Cause
    kind: ActionKind
    scope: Mapping[str, str]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    rollback_change_id: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the experiment, per order.

    ``kind`` "rate" (``baseline`` in (0, 1), no ``sd``) or "mean" (``sd`` the per-order
    standard deviation). Effects are absolute differences treatment minus control, in the
    metric's units. The primary carries ``expected_effect`` (the what-if's prediction, signed,
    in the good direction) and optionally ``mde`` (same sign); a guardrail carries ``margin``,
    the largest tolerated change in the bad direction (> 0). ``label`` and ``unit`` are for
    the rendering only ("CX Score", "points").
    """

    name: str
    kind: MetricKind
    baseline: float
    direction: Direction
    sd: float | None = None
    expected_effect: float | None = None
    mde: float | None = None
    margin: float | None = None
    label: str | None = None
    unit: str = ""

    @property
    def title(self) -> str:
        """Human name: ``label``, else ``name`` with spaces."""
        return self.label or self.name.replace("_", " ")

    @property
    def good_sign(self) -> int:
        """+1 when an increase is good, -1 when a decrease is."""
        return 1 if self.direction == "increase_is_good" else -1


@dataclass(frozen=True)
class PlanContext:
    """Traffic in scope and the test's settings.

    ``orders_per_day`` counts the scope's analysed orders a day (the primary's denominator).
    ``icc_store`` is the correlation of the primary between two orders of one store over the
    experiment; ``icc_window`` between two orders of one region x time window. ``window_hours``
    is the switchback window, ``burn_in_minutes`` the start of every window excluded as
    carryover from the previous assignment. ``holdback_share`` of the scope stays on the old
    setting for ``holdback_days`` after launch.
    """

    orders_per_day: float
    stores_in_scope: int
    regions_in_scope: int
    icc_store: float
    icc_window: float
    window_hours: float = 2.0
    burn_in_minutes: float = 30.0
    cuped_correlation: float = 0.0
    alpha: float = 0.05
    power: float = 0.8
    holdback_share: float = 0.05
    holdback_days: int = 14
    incident_id: str | None = None


# --- validation ------------------------------------------------------------------------------


def _require(ok: bool, path: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{path}: {rule}, got {value!r}")


def _check_number(path: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{path}: must be a finite number, got {value!r}")
    return float(value)


def _check_int(path: str, value: object, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _require(ok, path, f"must be an int >= {minimum}", value)


def _check_text(path: str, value: object) -> None:
    _require(
        isinstance(value, str) and bool(value.strip()), path, "must be a non-empty string", value
    )


def _check_choice(path: str, value: object, choices: tuple[str, ...]) -> None:
    _require(value in choices, path, f"must be one of {', '.join(choices)}", value)


def _check_action(action: ActionSpec) -> None:
    _check_text("action.name", action.name)
    _check_text("action.description", action.description)
    _check_choice("action.cause", action.cause, CAUSES)
    _check_choice("action.kind", action.kind, ACTION_KINDS)
    _require(
        isinstance(action.scope, Mapping) and len(action.scope) > 0,
        "action.scope",
        "must be a non-empty mapping",
        action.scope,
    )
    for key, value in action.scope.items():
        _check_text(f"action.scope[{key!r}]", value)
    if "daypart" in action.scope:
        _check_choice("action.scope['daypart']", action.scope["daypart"], DAYPARTS)
    _require(
        isinstance(action.parameters, Mapping),
        "action.parameters",
        "must be a mapping",
        action.parameters,
    )
    if action.rollback_change_id is not None:
        _check_text("action.rollback_change_id", action.rollback_change_id)


def _check_metric(path: str, m: MetricSpec) -> None:
    """Checks every role shares: name, kind, direction, baseline and sd."""
    _check_text(f"{path}.name", m.name)
    _check_choice(f"{path}.kind", m.kind, METRIC_KINDS)
    _check_choice(f"{path}.direction", m.direction, DIRECTIONS)
    baseline = _check_number(f"{path}.baseline", m.baseline)
    if m.kind == "rate":
        _require(0.0 < baseline < 1.0, f"{path}.baseline", "a rate must be in (0, 1)", baseline)
        _require(
            m.sd is None, f"{path}.sd", "must be None for a rate (it follows from the rate)", m.sd
        )
    else:
        _require(m.sd is not None, f"{path}.sd", "is required for a mean", m.sd)
        sd = _check_number(f"{path}.sd", m.sd)
        _require(sd > 0.0, f"{path}.sd", "must be > 0", sd)


def _check_rate_shift(path: str, m: MetricSpec, shift: float) -> None:
    if m.kind == "rate":
        ok = 0.0 < m.baseline + shift < 1.0
        _require(ok, path, f"baseline {m.baseline} + {shift} must stay in (0, 1)", shift)


def _check_good_sign(path: str, m: MetricSpec, value: float) -> None:
    sign = "> 0" if m.good_sign > 0 else "< 0"
    _require(value * m.good_sign > 0.0, path, f"must be {sign} when {m.direction}", value)


def _check_primary(m: MetricSpec) -> None:
    _check_metric("primary", m)
    _require(m.margin is None, "primary.margin", "only guardrails take a margin", m.margin)
    _require(m.expected_effect is not None, "primary.expected_effect", "is required", None)
    expected = _check_number("primary.expected_effect", m.expected_effect)
    _check_good_sign("primary.expected_effect", m, expected)
    _check_rate_shift("primary.expected_effect", m, expected)
    if m.mde is not None:
        mde = _check_number("primary.mde", m.mde)
        _check_good_sign("primary.mde", m, mde)
        _check_rate_shift("primary.mde", m, mde)


def _check_secondary(path: str, m: MetricSpec) -> None:
    _check_metric(path, m)
    _require(m.margin is None, f"{path}.margin", "only guardrails take a margin", m.margin)
    _require(m.mde is None, f"{path}.mde", "only the primary is powered", m.mde)
    if m.expected_effect is not None:
        _check_number(f"{path}.expected_effect", m.expected_effect)


def _check_guardrail(path: str, m: MetricSpec) -> None:
    _check_metric(path, m)
    for name in ("expected_effect", "mde"):
        value = getattr(m, name)
        _require(value is None, f"{path}.{name}", "a guardrail takes a margin only", value)
    _require(m.margin is not None, f"{path}.margin", "is required for a guardrail", None)
    margin = _check_number(f"{path}.margin", m.margin)
    _require(margin > 0.0, f"{path}.margin", "must be > 0", margin)
    _check_rate_shift(f"{path}.margin", m, -m.good_sign * margin)


def _check_context(c: PlanContext) -> None:
    orders = _check_number("context.orders_per_day", c.orders_per_day)
    _require(orders > 0.0, "context.orders_per_day", "must be > 0", orders)
    _check_int("context.stores_in_scope", c.stores_in_scope, 2)
    _check_int("context.regions_in_scope", c.regions_in_scope, 1)
    for name in ("icc_store", "icc_window"):
        icc = _check_number(f"context.{name}", getattr(c, name))
        _require(0.0 <= icc <= 1.0, f"context.{name}", "must be in [0, 1]", icc)
    hours = _check_number("context.window_hours", c.window_hours)
    _require(0.0 < hours <= HOURS_PER_DAY, "context.window_hours", "must be in (0, 24]", hours)
    burn = _check_number("context.burn_in_minutes", c.burn_in_minutes)
    _require(burn >= 0.0, "context.burn_in_minutes", "must be >= 0", burn)
    rho = _check_number("context.cuped_correlation", c.cuped_correlation)
    _require(-1.0 < rho < 1.0, "context.cuped_correlation", "must be in (-1, 1)", rho)
    alpha = _check_number("context.alpha", c.alpha)
    _require(0.0 < alpha < 1.0, "context.alpha", "must be in (0, 1)", alpha)
    power = _check_number("context.power", c.power)
    _require(alpha < power < 1.0, "context.power", f"must be in (alpha={alpha}, 1)", power)
    share = _check_number("context.holdback_share", c.holdback_share)
    _require(
        0.0 < share < RAMP_SHARES[0],
        "context.holdback_share",
        f"must be in (0, {RAMP_SHARES[0]})",
        share,
    )
    _check_int("context.holdback_days", c.holdback_days, 1)
    if c.incident_id is not None:
        _check_text("context.incident_id", c.incident_id)


# --- unit of randomisation ---------------------------------------------------------------------


@dataclass(frozen=True)
class UnitChoice:
    """The unit of randomisation and why it was chosen."""

    unit: Unit
    reason: str


_SHARED_COURIERS = (
    "treated and control orders would share couriers, so the no-interference assumption "
    "(SUTVA) fails: {what}. A switchback randomises whole region x time windows, so every "
    "order of a window runs under one policy and the arms compare states of the market, not "
    "orders competing for one pool (Bojinov, Simchi-Levi & Zhao 2023). Orders in the first "
    "minutes of a window still feel the previous window's policy (couriers in flight, queued "
    "orders) and are excluded as burn-in."
)

_UNIT_REASONS: Final[dict[ActionKind, UnitChoice]] = {
    "dispatch": UnitChoice(
        "region_x_window",
        _SHARED_COURIERS.format(
            what="batching or assigning treated orders differently changes when couriers are "
            "free for control orders, so control outcomes move with the treatment and an "
            "order-level comparison is biased"
        ),
    ),
    "supply": UnitChoice(
        "region_x_window",
        _SHARED_COURIERS.format(
            what="an incentive changes how many couriers are on shift in the shared pool, and "
            "those couriers deliver control orders too, so an order- or store-level split "
            "would hide most of the effect"
        ),
    ),
    "store_ops": UnitChoice(
        "store",
        "the setting (prep-time estimate, SKU suppression) lives in the store, so it cannot "
        "differ between orders of one store; stores are randomised whole. Orders of one store "
        "share its kitchen, shelves and staff, so their outcomes are correlated: the design "
        "effect comes from the stores' ICC (icc_store). Courier spillover between stores is "
        "assumed small because a per-store setting moves little of the shared pool's time.",
    ),
    "promise": UnitChoice(
        "store",
        "couriers are unaffected by what customers are quoted, so no switchback is needed, but "
        "customers see promises repeatedly: order-level randomisation would quote one customer "
        "different ETAs for the same store from order to order, and the inconsistency itself "
        "would move ratings and reorders (contamination between arms). With no customer id, "
        "the store is the finest unit whose customers all see one consistent promise; orders "
        "of one store are correlated, so the design effect comes from icc_store. Customers who "
        "order from both treated and control stores still see both policies.",
    ),
}


def choose_unit(kind: ActionKind) -> UnitChoice:
    """Unit of randomisation for an action kind, by the interference it causes.

    Dispatch and supply actions act on the shared courier pool, so they are tested with a
    switchback (region x time window); per-store settings and customer promises are
    randomised by store. The reason is given in words for the plan.
    """
    _check_choice("kind", kind, ACTION_KINDS)
    return _UNIT_REASONS[kind]


# --- switchback layout -------------------------------------------------------------------------


def scope_hours(scope: Mapping[str, str]) -> int:
    """Hours a day the scope is open: the hours of its daypart (as ``cxagent.data.cohorts``
    assigns hours to dayparts), or the whole day."""
    daypart = scope.get("daypart")
    if daypart is None:
        return HOURS_PER_DAY
    _check_choice("scope['daypart']", daypart, DAYPARTS)
    return int(np.count_nonzero(DAYPARTS.index(daypart) == DAYPART_OF_HOUR))


@dataclass(frozen=True)
class SwitchbackLayout:
    """The region x time windows of a switchback over the scope's hours of one day.

    The scope's ``scope_hours`` are cut into windows of ``window_hours`` (the last one shorter
    when they do not divide); orders are assumed to arrive evenly over those hours, so a
    window's orders are proportional to its length. The first ``burn_in_minutes`` of every
    window are excluded from the analysis.
    """

    scope_hours: float
    window_hours: float
    window_lengths: tuple[float, ...]
    regions: int
    burn_in_minutes: float

    @property
    def windows_per_day(self) -> int:
        return len(self.window_lengths)

    @property
    def clusters_per_day(self) -> int:
        """Region x window clusters randomised per day."""
        return self.regions * self.windows_per_day

    @property
    def burn_in_share(self) -> float:
        """Share of the scope's orders that fall in a burn-in period."""
        return self.windows_per_day * self.burn_in_minutes / 60.0 / self.scope_hours

    @property
    def cluster_size_cv(self) -> float:
        """Coefficient of variation of analysed orders per window (lengths after burn-in)."""
        n = self.windows_per_day
        mean = sum(self.window_lengths) / n
        spread = math.sqrt(sum((x - mean) ** 2 for x in self.window_lengths) / n)
        return spread / (mean - self.burn_in_minutes / 60.0)

    def cluster_size_mean(self, orders_per_day: float) -> float:
        """Orders per region x window before burn-in."""
        return orders_per_day / self.clusters_per_day


def switchback_layout(scope: Mapping[str, str], context: PlanContext) -> SwitchbackLayout:
    """Windows of ``context.window_hours`` over the scope's hours, per region."""
    hours = scope_hours(scope)
    width = min(float(context.window_hours), float(hours))
    count = math.ceil(hours / width - 1e-9)
    lengths = (width,) * (count - 1) + (hours - width * (count - 1),)
    burn_hours = context.burn_in_minutes / 60.0
    _require(
        burn_hours < min(lengths),
        "context.burn_in_minutes",
        f"must be shorter than the shortest window ({format_number(min(lengths))} h)",
        context.burn_in_minutes,
    )
    return SwitchbackLayout(
        scope_hours=float(hours),
        window_hours=width,
        window_lengths=lengths,
        regions=context.regions_in_scope,
        burn_in_minutes=float(context.burn_in_minutes),
    )


# --- power -------------------------------------------------------------------------------------


def default_mde(primary: MetricSpec) -> tuple[float, bool]:
    """The primary's minimum detectable effect and whether it is the default.

    The default is half the expected effect: a fix that delivers half of what the what-if
    predicts is still detected with the target power.
    """
    if primary.mde is not None:
        return float(primary.mde), False
    if primary.expected_effect is None:
        raise ValueError("primary.expected_effect: is required, got None")
    return primary.expected_effect / 2.0, True


def _power_plan(
    metric: MetricSpec,
    mde: float,
    context: PlanContext,
    unit: Unit,
    layout: SwitchbackLayout | None,
    *,
    treated_share: float = 0.5,
    cuped_correlation: float | None = None,
    min_days: int = MIN_DAYS,
) -> PowerPlan:
    """``plan_power`` for ``metric`` on the chosen unit (two-sided, as the monitoring
    interval is), with the design's ICC and cluster layout."""
    clustering: dict[str, Any] = {}
    if unit == "store":
        clustering = {"icc": context.icc_store, "clusters_available": context.stores_in_scope}
    elif unit == "region_x_window":
        assert layout is not None
        clustering = {
            "icc": context.icc_window,
            "cluster_size_mean": layout.cluster_size_mean(context.orders_per_day),
            "cluster_size_cv": layout.cluster_size_cv,
            "burn_in_share": layout.burn_in_share,
        }
    rho = context.cuped_correlation if cuped_correlation is None else cuped_correlation
    return plan_power(
        metric.name,
        baseline=metric.baseline,
        mde=mde,
        orders_per_day=context.orders_per_day,
        sd=metric.sd,
        unit=unit,
        alpha=context.alpha,
        power=context.power,
        two_sided=True,
        treated_share=treated_share,
        cuped_correlation=rho,
        min_days=min_days,
        **clustering,
    )


def _days_or_none(**kwargs: Any) -> int | None:
    """Days of a secondary power question, or None when no duration reaches the power (too
    few stores for the split)."""
    try:
        return _power_plan(**kwargs).duration_days
    except ValueError:
        return None


@dataclass(frozen=True)
class GuardrailPower:
    """Days the experiment needs to show a guardrail within its margin when the fix leaves it
    unchanged (non-inferiority on one side of the two-sided interval); None when no duration
    suffices. Uses the primary's ICC on the chosen unit and no CUPED."""

    metric: str
    margin: float
    days_to_clear: int | None


def _guardrail_power(
    guardrail: MetricSpec, context: PlanContext, unit: Unit, layout: SwitchbackLayout | None
) -> GuardrailPower:
    assert guardrail.margin is not None
    # The null sits at the margin on the bad side; the truth (no change) is margin away.
    shift = -guardrail.good_sign * guardrail.margin
    days = _days_or_none(
        metric=guardrail,
        mde=shift,
        context=context,
        unit=unit,
        layout=layout,
        cuped_correlation=0.0,
    )
    return GuardrailPower(guardrail.name, guardrail.margin, days)


# --- rollout, monitoring, rollback -------------------------------------------------------------


@dataclass(frozen=True)
class RolloutPhase:
    """One step of the ramp: ``exposure`` of the scope nominally on the fix, of which
    ``treated_share`` is treated (the launch keeps a holdback), for at least ``min_days``."""

    name: str
    exposure: float
    treated_share: float
    treated_orders_per_day: float
    min_days: int
    purpose: str
    go: tuple[str, ...]
    rollback: tuple[str, ...]


@dataclass(frozen=True)
class MonitoringCheck:
    """One item of the monitoring checklist."""

    cadence: str
    check: str
    how: str
    on_failure: str


@dataclass(frozen=True)
class RollbackPlan:
    """What to revert, when, and how."""

    revert: str
    triggers: tuple[str, ...]
    steps: tuple[str, ...]


def _level(alpha: float) -> str:
    return f"{format_number(100.0 * (1.0 - alpha))}%"


def _primary_bounds(primary: MetricSpec, alpha: float) -> tuple[str, str, str]:
    """The primary's always-valid interval (treatment minus control) in words: entirely on the
    good side of zero, not entirely on the harmful side, entirely on the harmful side."""
    interval = f"the primary's {_level(alpha)} always-valid interval"
    if primary.good_sign > 0:
        lower, upper = f"lower bound of {interval}", f"upper bound of {interval}"
        return f"{lower} > 0", f"{upper} >= 0", f"{upper} < 0"
    lower, upper = f"lower bound of {interval}", f"upper bound of {interval}"
    return f"{upper} < 0", f"{lower} <= 0", f"{lower} > 0"


def _criteria(
    primary: MetricSpec, context: PlanContext
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(go when harm is the only question, go of the experiment phase, rollback of every phase).

    The experiment phase must show the benefit; the safety phase and the holdback are not
    powered for it and only have to show no harm."""
    good, not_harmful, harmful = _primary_bounds(primary, context.alpha)
    no_breach = f"no guardrail '{GuardrailState.BREACHED}'"
    no_srm = f"no sample ratio mismatch (SRM p >= {format_number(SRM_THRESHOLD)})"
    safety_go = (f"primary not on the harmful side: {not_harmful}", no_breach, no_srm)
    go = (good, no_breach, no_srm)
    rollback = (
        f"any guardrail '{GuardrailState.BREACHED}'",
        f"primary on the harmful side: {harmful}",
        f"SRM p < {format_number(SRM_THRESHOLD)}",
    )
    return safety_go, go, rollback


def _phases(
    primary: MetricSpec,
    context: PlanContext,
    experiment_days: int,
    safety_days: int | None,
) -> tuple[RolloutPhase, ...]:
    """The 10% -> 50% -> 100% ramp (Kohavi, Tang & Xu 2020, ch. 15).

    10%: a safety phase, long enough to detect a harm as large as the predicted benefit (the
    fix backfiring by its whole expected effect); one day when the split cannot reach the power
    at any duration. 50%: the maximum-power phase, for ``experiment_days``. 100%: the launch,
    with ``holdback_share`` kept on the old setting for ``holdback_days``; the holdback is
    released when it shows no harm.
    """
    safety_go, go, rollback = _criteria(primary, context)
    first, middle, last = RAMP_SHARES
    launch_share = last - context.holdback_share
    holdback = f"{_pct(context.holdback_share)} holdback"
    return (
        RolloutPhase(
            name=f"{_pct(first)} safety",
            exposure=first,
            treated_share=first,
            treated_orders_per_day=first * context.orders_per_day,
            min_days=safety_days or 1,
            purpose=(
                "catch harm early: long enough to detect a harm as large as the expected benefit"
                if safety_days is not None
                else "catch gross harm: the split cannot be powered, so one full day of the scope"
            ),
            go=safety_go,
            rollback=rollback,
        ),
        RolloutPhase(
            name=f"{_pct(middle)} experiment",
            exposure=middle,
            treated_share=middle,
            treated_orders_per_day=middle * context.orders_per_day,
            min_days=experiment_days,
            purpose="the powered test of the fix (maximum-power ramp)",
            go=go,
            rollback=rollback,
        ),
        RolloutPhase(
            name=f"{_pct(last)} launch, {holdback}",
            exposure=last,
            treated_share=launch_share,
            treated_orders_per_day=launch_share * context.orders_per_day,
            min_days=context.holdback_days,
            purpose=(
                f"launch; the {holdback} shows the effect persists (no novelty or slow "
                "drift), then it is released"
            ),
            go=(f"against the holdback: {safety_go[0]}", *safety_go[1:]),
            rollback=rollback,
        ),
    )


def _monitoring(
    primary: MetricSpec,
    guardrails: Sequence[MetricSpec],
    action: ActionSpec,
    context: PlanContext,
    unit: Unit,
    n_planned: int,
) -> tuple[MonitoringCheck, ...]:
    """The daily checklist, naming the sequential tools and their thresholds."""
    srm = format_number(SRM_THRESHOLD)
    switchback = unit == "region_x_window"
    units = "region x window" if switchback else "store"
    period = "region x window" if switchback else "store-day"
    harmful = _primary_bounds(primary, context.alpha)[2]
    margins = "; ".join(
        f"{g.title}, {_bad_word(g)} of at most {format_number(g.margin or 0.0)}{_unit(g)}"
        for g in guardrails
    )
    return (
        MonitoringCheck(
            "daily",
            "sample ratio mismatch",
            f"`sample_ratio_mismatch` on the {units}s assigned to each arm against the planned "
            f"treated share, threshold p < {srm}; orders are clustered, so each arm's orders "
            "are compared with the same units' pre-period orders rather than tested",
            "stop reading results; fix assignment or logging; restart the phase",
        ),
        MonitoringCheck(
            "daily",
            "guardrails",
            f"`non_inferiority` on each guardrail's `difference_confidence_sequence` "
            f"(alpha {format_number(context.alpha)}): {margins}",
            f"'{GuardrailState.BREACHED}': roll back",
        ),
        MonitoringCheck(
            "daily",
            "primary metric",
            f"`difference_confidence_sequence` with n_planned = {format_number(n_planned)} "
            f"{period} units (fixed before the start) and the mSPRT p-value (`SequentialTest`, "
            "tau from `matched_tau`)",
            f"{harmful}: roll back",
        ),
        MonitoringCheck(
            "daily",
            "data freshness",
            "the last day's orders, deliveries and ratings have all landed before the look",
            "skip the look; never read a partial day",
        ),
        MonitoringCheck(
            "daily",
            "incident metric in the affected slice",
            f"{primary.title} in {_scope_label(action.scope)} against its baseline "
            f"{format_number(primary.baseline)}{_unit(primary)}",
            "a new regression in the slice: open an incident before the next phase",
        ),
    )


def _rollback(action: ActionSpec, primary: MetricSpec, context: PlanContext) -> RollbackPlan:
    if action.rollback_change_id is not None:
        revert = f"revert change `{action.rollback_change_id}`"
    elif action.parameters:
        names = ", ".join(f"`{k}`" for k in action.parameters)
        revert = f"restore the pre-experiment settings of {names}"
    else:
        revert = f"switch `{action.name}` off in the treated units"
    _, _, triggers = _criteria(primary, context)
    return RollbackPlan(
        revert=revert,
        triggers=triggers,
        steps=(
            f"{revert} in every treated unit; the control arm already runs the old setting",
            "record the trigger and the interval that fired it in the incident",
            "keep the daily checks running until the slice's primary is back at its baseline",
        ),
    )


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExperimentPlan:
    """Every section of the plan for one fix; render with ``to_markdown``.

    ``power`` is ``plan_power`` for the primary on the chosen unit; ``experiment_days`` the
    50% phase, the longer of the primary's duration and the days every guardrail needs to be
    shown within its margin (Kohavi, Tang & Xu 2020: guardrails are powered too).
    ``sequence_n_planned`` counts the cluster-periods (region x windows, or store-days) that
    phase collects, the ``n_planned`` that fixes the confidence sequence's mixing before the
    start; ``sequence_width_factor`` is how much wider that always-valid interval is than the
    fixed-horizon one at that size, and ``sequence_power_at_mde`` / ``_at_expected`` the
    resulting power of the go criterion at the primary's duration. ``safety_days`` and ``holdback_days_for_mde`` are None
    when no duration reaches the power with that split.
    """

    action: ActionSpec
    primary: MetricSpec
    secondary: tuple[MetricSpec, ...]
    guardrails: tuple[MetricSpec, ...]
    context: PlanContext
    unit: UnitChoice
    layout: SwitchbackLayout | None
    mde: float
    mde_is_default: bool
    power: PowerPlan
    guardrail_power: tuple[GuardrailPower, ...]
    experiment_days: int
    safety_days: int | None
    holdback_days_for_mde: int | None
    sequence_n_planned: int
    sequence_width_factor: float
    sequence_power_at_mde: float
    sequence_power_at_expected: float
    phases: tuple[RolloutPhase, ...]
    monitoring: tuple[MonitoringCheck, ...]
    rollback: RollbackPlan

    @property
    def title(self) -> str:
        return f"Experiment plan: {self.action.name} ({_scope_label(self.action.scope)})"

    def hypothesis(self) -> str:
        """One sentence: the fix, the primary's expected move, the guardrails' limits."""
        p = self.primary
        expected = p.expected_effect or 0.0
        verb = "raise" if expected > 0 else "lower"
        limits = [
            f"{'raising' if g.good_sign < 0 else 'lowering'} {g.title} by more than "
            f"{format_number(g.margin or 0.0)}{_unit(g)}"
            for g in self.guardrails
        ]
        joined = limits[0] if len(limits) == 1 else ", ".join(limits[:-1]) + " or " + limits[-1]
        description = self.action.description.strip()
        return (
            f"{description[0].upper()}{description[1:]} in {_scope_label(self.action.scope)} "
            f"will {verb} the {p.title} by about {format_number(abs(expected))}{_unit(p)} "
            f"without {joined}."
        )

    def to_markdown(self) -> str:
        """The plan as a markdown document."""
        sections = [
            self._header(),
            self._hypothesis_section(),
            self._metrics_section(),
            self._unit_section(),
            self._power_section(),
            self._phases_section(),
            self._monitoring_section(),
            self._rollback_section(),
        ]
        return "\n\n".join(s.rstrip() for s in sections) + "\n"

    # sections

    def _header(self) -> str:
        incident = self.context.incident_id
        link = f"`{incident}`" if incident else "none (planned without an incident)"
        return (
            f"# {self.title}\n\n"
            f"- Incident: {link}\n"
            f"- Cause: `{self.action.cause}`\n"
            f"- Action: `{self.action.name}` ({self.action.kind})"
        )

    def _hypothesis_section(self) -> str:
        params = ", ".join(f"`{k}={v}`" for k, v in self.action.parameters.items()) or "none"
        return (
            f"## Hypothesis\n\n{self.hypothesis()}\n\n"
            f"Parameters of the fix: {params}. Scope: {_scope_text(self.action.scope)}."
        )

    def _metrics_section(self) -> str:
        rows = [
            "| Role | Metric | Type | Baseline | SD | Better when | Expected effect | "
            "MDE / margin |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        p = self.primary
        rows.append(
            _metric_row("primary", p, _signed(p.expected_effect, p), f"MDE {_signed(self.mde, p)}")
        )
        for m in self.secondary:
            rows.append(_metric_row("secondary", m, _signed(m.expected_effect, m), "-"))
        for g in self.guardrails:
            margin = f"margin {format_number(g.margin or 0.0)}{_unit(g)} ({_bad_word(g)})"
            rows.append(_metric_row("guardrail", g, "-", margin))
        return "## Metrics\n\n" + "\n".join(rows)

    def _unit_section(self) -> str:
        name = (
            f"switchback, region x {format_number(self.layout.window_hours)}-hour window"
            if self.layout is not None
            else "store"
        )
        lines = [f"## Randomisation unit\n\n**{name}**: {self.unit.reason}"]
        if self.layout is not None:
            lay = self.layout
            lengths = ", ".join(format_number(x) for x in lay.window_lengths)
            lines.append(
                f"\nThe scope is open {format_number(lay.scope_hours)} h a day: "
                f"{lay.windows_per_day} windows a day ({lengths} h) in {_plural(lay.regions, 'region')}, "
                f"{lay.clusters_per_day} clusters a day of about "
                f"{format_number(lay.cluster_size_mean(self.context.orders_per_day))} orders. "
                f"The first {format_number(lay.burn_in_minutes)} min of every window are "
                f"burn-in, excluded from the analysis: "
                f"{_pct(lay.burn_in_share)} of the orders."
            )
        else:
            lines.append(
                f"\n{self.context.stores_in_scope} stores in scope, each randomised whole "
                f"(icc_store {format_number(self.context.icc_store)})."
            )
        return "\n".join(lines)

    def _power_section(self) -> str:
        pw, c = self.power, self.context
        mde = f"{format_number(abs(self.mde))}{_unit(self.primary)}"
        if self.mde_is_default:
            mde += (
                f", half of the expected {format_number(abs(self.primary.expected_effect or 0))}"
                f"{_unit(self.primary)}, so a fix that delivers half of what the what-if "
                "predicts is still detected"
            )
        else:
            mde += " (given)"
        icc = c.icc_window if self.layout is not None else c.icc_store
        clusters = (
            "-"
            if pw.clusters_control is None
            else f"{format_number(pw.clusters_control)} control / "
            f"{format_number(pw.clusters_treatment or 0)} treatment "
            f"(about {format_number(pw.cluster_size or 0.0)} analysed orders each)"
        )
        rows = [
            ("Minimum detectable effect", mde),
            (
                "Test",
                f"two-sided, alpha {format_number(c.alpha)}, power "
                f"{format_number(c.power)}, treated share {_pct(pw.treated_share)}",
            ),
            ("Orders per arm if orders were independent", format_number(pw.orders_per_arm_iid)),
            ("Design effect", f"{format_number(pw.design_effect)} (ICC {format_number(icc)})"),
            (
                "CUPED factor",
                f"{format_number(pw.cuped_factor)} (pre-period correlation "
                f"{format_number(c.cuped_correlation)})",
            ),
            (
                "Analysed orders per arm",
                f"{format_number(pw.orders_control)} control / "
                f"{format_number(pw.orders_treatment)} treatment",
            ),
            ("Clusters per arm", clusters),
            (
                "Duration for the primary",
                f"{format_number(pw.duration_days)} days (at least {MIN_DAYS}: one weekly cycle)",
            ),
            ("Power at that duration", format_number(pw.achieved_power)),
            (
                "Experiment phase",
                f"{format_number(self.experiment_days)} days (the primary and every guardrail "
                "that can be cleared)",
            ),
        ]
        table = ["| Quantity | Value |", "| --- | --- |"]
        table += [f"| {k} | {v} |" for k, v in rows]
        notes = []
        for g, gp in zip(self.guardrails, self.guardrail_power, strict=True):
            if gp.days_to_clear is None:
                text = (
                    "cannot be shown within its margin at any duration with this design; it "
                    "can only be caught when breached"
                )
            else:
                text = f"needs {format_number(gp.days_to_clear)} days to be shown within its margin"
            notes.append(
                f"- Guardrail {g.title}: {text} (assumes the primary's ICC, no CUPED; "
                "non-inferiority on one side of the two-sided interval)."
            )
        return "## Sample size and duration\n\n" + "\n".join(table) + "\n\n" + "\n".join(notes)

    def _phases_section(self) -> str:
        rows = [
            "| Phase | Exposure | Treated share | Treated orders/day | Min days | Go | Rollback |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for ph in self.phases:
            rows.append(
                f"| {ph.name} | {_pct(ph.exposure)} | {_pct(ph.treated_share)} | "
                f"{format_number(ph.treated_orders_per_day)} | {format_number(ph.min_days)} | "
                f"{'; '.join(ph.go)} | {'; '.join(ph.rollback)} |"
            )
        purposes = [f"- {ph.name}: {ph.purpose}." for ph in self.phases]
        if self.holdback_days_for_mde is None:
            hold = "cannot detect the MDE at any duration"
        else:
            hold = f"would need {format_number(self.holdback_days_for_mde)} days to detect the MDE"
        purposes.append(
            f"- The {_pct(self.context.holdback_share)} holdback {hold}: it guards against "
            "harm and decay; the experiment phase is the test of the effect."
        )
        return "## Rollout phases\n\n" + "\n".join(rows) + "\n\n" + "\n".join(purposes)

    def _monitoring_section(self) -> str:
        items = [
            f"- [ ] **{m.cadence}, {m.check}**: {m.how}. On failure: {m.on_failure}."
            for m in self.monitoring
        ]
        cluster = "region x window" if self.layout is not None else "store-day"
        note = (
            "The always-valid interval may be read at every look; at the planned size it is "
            f"{format_number(self.sequence_width_factor)} times as wide as the fixed-horizon "
            "interval, so the go criterion of the experiment phase has power about "
            f"{format_number(self.sequence_power_at_mde)} for the MDE and "
            f"{format_number(self.sequence_power_at_expected)} for the expected effect at the "
            "primary's duration. Each unit fed to the sequences is one "
            f"{cluster} (its mean), so the interval carries the clustering; the sequences are "
            "asymptotic (accurate from a few hundred units per arm, see "
            f"`cxagent.stats.sequential`), and with {format_number(self.sequence_n_planned)} "
            "units planned the final read is confirmed with a cluster-level analysis."
        )
        return "## Monitoring\n\n" + "\n".join(items) + "\n\n" + note

    def _rollback_section(self) -> str:
        r = self.rollback
        triggers = "\n".join(f"- {t}" for t in r.triggers)
        steps = "\n".join(f"{i}. {s}" for i, s in enumerate(r.steps, start=1))
        return (
            f"## Rollback\n\nWhat to revert: {r.revert}.\n\nTriggers (any phase):\n\n{triggers}"
            f"\n\nSteps:\n\n{steps}"
        )


# --- rendering helpers -------------------------------------------------------------------------


def format_number(value: float) -> str:
    """How the plan renders a number: whole numbers with thousands separators, others with
    four significant digits (thousands separated above 1,000)."""
    x = float(value)
    if x == round(x) and abs(x) < 1e15:
        return f"{x:,.0f}"
    if abs(x) >= 1000.0:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _plural(count: int, noun: str) -> str:
    return f"{format_number(count)} {noun}{'' if count == 1 else 's'}"


def _pct(share: float) -> str:
    return f"{format_number(100.0 * share)}%"


def _unit(m: MetricSpec) -> str:
    return f" {m.unit}" if m.unit else ""


def _bad_word(m: MetricSpec) -> str:
    return "increase" if m.good_sign < 0 else "decrease"


def _signed(value: float | None, m: MetricSpec) -> str:
    if value is None:
        return "-"
    return f"{'+' if value > 0 else '-'}{format_number(abs(value))}{_unit(m)}"


def _metric_row(role: str, m: MetricSpec, expected: str, limit: str) -> str:
    sd = "-" if m.sd is None else format_number(m.sd)
    better = "higher" if m.good_sign > 0 else "lower"
    return (
        f"| {role} | {m.title} (`{m.name}`) | {m.kind} | {format_number(m.baseline)}{_unit(m)} "
        f"| {sd} | {better} | {expected} | {limit} |"
    )


def _scope_label(scope: Mapping[str, str]) -> str:
    return " ".join(str(v) for v in scope.values())


def _scope_text(scope: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in scope.items())


# --- building and writing ----------------------------------------------------------------------


def _sequence_width_factor(n_planned: int, alpha: float) -> float:
    """Half-width of the tuned confidence sequence over the fixed-horizon z half-width at
    ``n_planned`` units."""
    rho = optimal_rho(n_planned, alpha)
    radius = float(normal_mixture_radius([n_planned], rho, alpha)[0])
    return radius * math.sqrt(n_planned) / float(stats.norm.isf(alpha / 2.0))


def _sequence_power(power: PowerPlan, width_factor: float, effect_ratio: float) -> float:
    """Approximate power of the go criterion read on the always-valid interval at the primary's
    planned duration, for an effect ``effect_ratio`` times the MDE.

    At that duration the MDE sits ``z_crit + z_achieved`` standard errors from zero; the
    interval excludes zero once the estimate passes ``width_factor * z_crit`` standard errors.
    """
    crit = float(stats.norm.isf(power.alpha / 2.0))
    shift = (crit + float(stats.norm.ppf(power.achieved_power))) * effect_ratio
    return float(stats.norm.sf(width_factor * crit - shift))


def _primary_power(
    primary: MetricSpec,
    mde: float,
    context: PlanContext,
    unit: Unit,
    layout: SwitchbackLayout | None,
) -> PowerPlan:
    try:
        return _power_plan(primary, mde, context, unit, layout)
    except ValueError as exc:
        if str(exc).startswith("clusters_available"):
            detail = str(exc).removeprefix("clusters_available: ")
            raise ValueError(f"context.stores_in_scope: {detail}") from exc
        raise


def build_plan(
    action: ActionSpec,
    primary: MetricSpec,
    guardrails: Sequence[MetricSpec],
    context: PlanContext,
    secondary: Sequence[MetricSpec] = (),
) -> ExperimentPlan:
    """Validate the request and compute every section of the experiment plan.

    Raises ValueError naming the field at fault by its path (``guardrails[1].margin``), or
    ``context.stores_in_scope`` when too few stores can reach the power at any duration.
    """
    _check_action(action)
    _check_primary(primary)
    for i, m in enumerate(secondary):
        _check_secondary(f"secondary[{i}]", m)
    _require(len(guardrails) > 0, "guardrails", "at least one guardrail is required", guardrails)
    for i, g in enumerate(guardrails):
        _check_guardrail(f"guardrails[{i}]", g)
    _check_context(context)

    choice = choose_unit(action.kind)
    layout = switchback_layout(action.scope, context) if choice.unit == "region_x_window" else None
    mde, is_default = default_mde(primary)
    power = _primary_power(primary, mde, context, choice.unit, layout)
    design = {"context": context, "unit": choice.unit, "layout": layout}
    safety_days = _days_or_none(
        metric=primary,
        mde=-(primary.expected_effect or 0.0),
        treated_share=RAMP_SHARES[0],
        min_days=1,
        **design,
    )
    holdback_days = _days_or_none(
        metric=primary,
        mde=mde,
        treated_share=RAMP_SHARES[-1] - context.holdback_share,
        min_days=context.holdback_days,
        **design,
    )
    guardrail_power = tuple(_guardrail_power(g, context, choice.unit, layout) for g in guardrails)
    experiment_days = max(
        [power.duration_days] + [g.days_to_clear for g in guardrail_power if g.days_to_clear]
    )
    per_day = layout.clusters_per_day if layout is not None else context.stores_in_scope
    n_planned = per_day * experiment_days
    width = _sequence_width_factor(n_planned, context.alpha)
    return ExperimentPlan(
        action=action,
        primary=primary,
        secondary=tuple(secondary),
        guardrails=tuple(guardrails),
        context=context,
        unit=choice,
        layout=layout,
        mde=mde,
        mde_is_default=is_default,
        power=power,
        guardrail_power=guardrail_power,
        experiment_days=experiment_days,
        safety_days=safety_days,
        holdback_days_for_mde=holdback_days,
        sequence_n_planned=n_planned,
        sequence_width_factor=width,
        sequence_power_at_mde=_sequence_power(power, width, 1.0),
        sequence_power_at_expected=_sequence_power(
            power, width, abs((primary.expected_effect or 0.0) / mde)
        ),
        phases=_phases(primary, context, experiment_days, safety_days),
        monitoring=_monitoring(primary, guardrails, action, context, choice.unit, n_planned),
        rollback=_rollback(action, primary, context),
    )


def write_markdown(plan: ExperimentPlan, path: str | os.PathLike[str]) -> Path:
    """Write ``plan.to_markdown()`` to ``path`` atomically: render first, write a temporary
    file in the same directory, then ``os.replace`` it over the target. A failure leaves the
    target as it was and no temporary file behind."""
    target = Path(path)
    text = plan.to_markdown()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def plan_summary(plan: ExperimentPlan) -> dict[str, Any]:
    """What a page shows of a plan besides its markdown."""
    return json_safe(
        {
            "title": plan.title,
            "hypothesis": plan.hypothesis(),
            "unit": dataclasses.asdict(plan.unit),
            "primary": dataclasses.asdict(plan.primary),
            "guardrails": [dataclasses.asdict(g) for g in plan.guardrails],
            "secondary": [dataclasses.asdict(m) for m in plan.secondary],
            "mde": plan.mde,
            "experiment_days": plan.experiment_days,
            "total_days": sum(p.min_days for p in plan.phases),
            "days_to_launch": sum(p.min_days for p in plan.phases[:-1]),
            "phases": [dataclasses.asdict(p) for p in plan.phases],
            "monitoring": [dataclasses.asdict(m) for m in plan.monitoring],
            "rollback": dataclasses.asdict(plan.rollback),
        }
    )
