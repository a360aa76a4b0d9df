"""Monitor a running experiment against its plan: always-valid intervals, SRM, guardrails, and
per phase a recommendation to proceed, hold or roll back.

``monitor(plan, data)`` reads the experiment data of ``cxagent.experiments.simulate`` (one row
per phase, phase day, cluster and arm with summed ``CXStats``; real assignment logs
aggregated the same way work too) and replays the daily looks the plan's monitoring checklist
prescribes. At the end of every day of a phase, with the data of that phase so far:

* **Metrics from summed statistics, variance by the delta method over clusters.** Every metric
  of the plan (primary, secondaries, guardrails) is a metric of ``CXStats.metrics()`` by name
  (``cx_score``, ``on_time_rate``, ``cancellation_rate``, ``dasher_min_per_delivery``,
  ``cost_per_delivery``, ``orders_per_trip``, ...). Each is a smooth function ``f`` of the
  arm's summed statistics ``T = sum_i S_i`` (the CX Score a weighted mean of clipped linear
  maps of ratios), and scale-free, so ``f(T) = f(T / k)``. The clusters ``i = 1..k`` are the
  randomisation units (region x windows of a switchback; stores, their days summed, for store
  randomisation), the level at which outcomes are independent. Linearising ``f`` around the
  arm's mean cluster ``m = T / k``,

      f(S_bar) ~ f(m) + grad f(m) . (S_bar - m),   Var f(T) ~ grad' Sigma grad / k,

  estimated with the per-cluster influence values ``z_i = grad f(m) . (S_i - m)`` as
  ``sum z_i^2 / ((k - 1) k)`` (Deng, Knoblich & Lu 2018, "Applying the Delta Method in Metric
  Analytics", KDD; the cluster-robust ratio-metric variance). The gradient is the central
  difference of ``CXStats.metrics()`` itself, so the variance is that of exactly the metric the
  product reports. The treatment-control difference has variance ``V = V_t + V_c``.
* **Few clusters.** The delta-method variance is a cluster-robust variance, biased low and
  noisy with few clusters (Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust
  Inference"), and a 10% phase or a 5% holdback holds only a handful. An arm with fewer than
  ``min_units_per_arm`` clusters (default ``MIN_UNITS_PER_ARM`` = 5) gives no interval (bounds
  infinite: no evidence either way). Above it the standard error is multiplied by
  ``t_{df, 1 - alpha/2} / z_{1 - alpha/2}`` with Welch-Satterthwaite degrees of freedom over the
  clusters (``small_sample_factor``), the Welch t correction, which tends to 1 as clusters grow.
  In 60 A/A runs of the demo scenario's switchback (one assignment seed each, 25 daily looks)
  the primary's always-valid interval excluded zero at some look in 1 run (the fixed-horizon
  interval in 13); in another 60 runs the monitor raised 3 false "harmful" rollbacks,
  consistent with the nominal 2.5% a side.
* **Always-valid interval** of the difference: the asymptotic confidence sequence of
  ``cxagent.stats.sequential.difference_confidence_sequence`` (Waudby-Smith et al. 2024, after
  Howard, Ramdas, McAuliffe & Sekhon 2021) at the plan's level, its mixing parameter fixed
  before the start by ``n_planned`` = the plan's cluster-periods per day x the phase's planned
  days (``plan.sequence_n_planned`` for the experiment phase). It is fed the linearised
  estimate and variance as sufficient statistics of ``n`` pseudo-units, ``n`` the
  cluster-periods so far (region x windows, or store-days), so that its boundary grows with
  the looks as the plan assumed. The fixed-horizon interval (``fixed_interval``) is given for
  reference only (it is not valid when read at every look), and the primary's always-valid
  mSPRT p-value (Johari, Pekelis & Walsh 2017; ``SequentialTest`` with ``matched_tau`` from the
  plan's per-order sd, cluster size and ICC) as the plan's checklist asks.
* **Sample ratio mismatch** (Fabijan et al. 2019) on the cluster-periods logged in each arm
  against the share the phase was assigned with, threshold ``SRM_THRESHOLD``
  (``srm_check``: the chi-square test of ``sample_ratio_mismatch`` when both expected counts are
  at least 5, the exact binomial test below that). Each region x window of a switchback is one
  Bernoulli draw, so its count is exactly what the test assumes; store randomisation is
  complete (a fixed number of stores), so the store-days of each arm match the design share
  unless days go missing.
* **Guardrails**: ``non_inferiority`` of each guardrail's always-valid interval against its
  margin (``breached`` / ``cleared`` / ``undecided``).

The recommendation applies the plan's own criteria (``RolloutPhase.go`` and ``.rollback``,
``ExperimentPlan.rollback``), read from the plan and checked against the wording
``cxagent.experiments.plan`` generates, so the monitor fails loudly rather than apply a criterion
it does not know:

* **roll back** at any look when a rollback trigger fires: a guardrail ``breached``, the primary
  on the harmful side (its always-valid interval entirely beyond zero in the bad direction), or
  SRM p < threshold. Also when the phase has run its planned days (``min_days``) without
  meeting its go criterion: the fix did not show what the phase had to show (no-go).
* **proceed** when the phase has run at least its planned days and its go criterion holds: the
  experiment phase needs the primary's interval entirely on the good side of zero; the safety
  phase and the launch (against its holdback) need it not entirely on the harmful side; all
  need no guardrail breached and no SRM.
* **hold** otherwise: keep collecting until the phase's planned days.

A phase ends at its first look that is not "hold"; the next phase is read only when it
proceeded. The incident is **resolved** when every phase of the plan proceeded, the launch
included: the fix showed its benefit in the experiment phase and no harm against the holdback.
``MonitorReport.evidence`` says so in plain sentences with the numbers of the analysis.

Caveats: the intervals are asymptotic (accurate from a few dozen clusters per arm); a phase
whose arm never reaches ``min_units_per_arm`` clusters (a short 10% safety phase of a
switchback, a small holdback) gathers no evidence and is judged on its other criteria, so the
safety phase then catches only an SRM. For store randomisation the confidence sequence counts
store-days while the variance is clustered by store: the plan's ``n_planned`` is in store-days.
Intervals are read at every look without intersecting them over looks (both are valid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from cxagent.errors import DataValidationError
from cxagent.experiments.plan import (
    ExperimentPlan,
    MetricSpec,
    RolloutPhase,
    _primary_bounds,
    format_number,
)
from cxagent.experiments.simulate import (
    CONTROL,
    TREATMENT,
    ExperimentData,
    validate_frame,
)
from cxagent.metrics.definitions import STAT_FIELDS, CXStats
from cxagent.stats.sequential import (
    SRM_THRESHOLD,
    GuardrailState,
    SequentialTest,
    difference_confidence_sequence,
    fixed_interval,
    matched_tau,
    non_inferiority,
    sample_ratio_mismatch,
)

__all__ = [
    "METRIC_NAMES",
    "FinalResult",
    "Interval",
    "LookReport",
    "MetricResult",
    "MonitorReport",
    "PhaseReport",
    "Recommendation",
    "SRMCheck",
    "arm_estimate",
    "monitor",
    "small_sample_factor",
    "srm_check",
]

Recommendation = Literal["proceed", "hold", "roll back"]
PhaseStatus = Literal["completed", "rolled back", "in progress", "not reached"]
GoRule = Literal["benefit", "no_harm"]
Role = Literal["primary", "secondary", "guardrail"]

METRIC_NAMES: Final[tuple[str, ...]] = tuple(CXStats().metrics().keys())
"""Metric names a plan may use: the keys of ``CXStats.metrics()``."""
_REL_STEP: Final = 1e-5
MIN_UNITS_PER_ARM: Final = 5
"""Randomisation units each arm needs before its intervals are read (see ``monitor``)."""


# --- the delta method ---------------------------------------------------------------------------


def _metric_values(totals: npt.NDArray[np.float64]) -> dict[str, float]:
    return CXStats(**dict(zip(STAT_FIELDS, map(float, totals), strict=True))).metrics()


@dataclass(frozen=True)
class _ArmEstimate:
    value: dict[str, float]  # metric values of the arm's summed statistics
    variance: dict[str, float]  # delta-method variance of each value (nan: fewer than 2 units)
    units: int  # variance clusters (randomisation units)
    periods: int  # cluster-periods (rows): the n of the confidence sequence
    orders: float  # analysed orders


def arm_estimate(
    stats: npt.NDArray[np.float64], units: npt.NDArray[np.int64], names: Sequence[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Each metric of ``names`` from the summed statistics of one arm and its delta-method
    variance, clustered by ``units``.

    ``stats`` is (rows, len(STAT_FIELDS)) summed ``CXStats`` per cluster-period, ``units`` the
    randomisation unit of each row (rows of one unit are summed first). Returns (values,
    variances); a variance is NaN with fewer than two units or an undefined metric. See the
    module docstring for the formula (Deng, Knoblich & Lu 2018).
    """
    _, codes = np.unique(units, return_inverse=True)
    codes = codes.ravel()
    k = int(codes.max()) + 1 if codes.size else 0
    per_unit = np.zeros((k, stats.shape[1]))
    np.add.at(per_unit, codes, stats)
    totals = per_unit.sum(axis=0)
    base = _metric_values(totals)
    values = {n: base[n] for n in names}
    if k < 2:
        return values, {n: math.nan for n in names}
    mean = totals / k
    grad = {n: np.zeros(len(STAT_FIELDS)) for n in names}
    for j in range(len(STAT_FIELDS)):
        if mean[j] == 0.0:
            continue  # every unit has 0 here (the statistics are counts and sums >= 0)
        h = _REL_STEP * abs(mean[j])
        up, down = mean.copy(), mean.copy()
        up[j] += h
        down[j] -= h
        f_up, f_down = _metric_values(up), _metric_values(down)
        for n in names:
            grad[n][j] = (f_up[n] - f_down[n]) / (2.0 * h)
    centred = per_unit - mean
    variances = {}
    for n in names:
        if not math.isfinite(values[n]) or not np.isfinite(grad[n]).all():
            variances[n] = math.nan
            continue
        z = centred @ grad[n]
        variances[n] = float(z @ z) / ((k - 1) * k)
    return values, variances


def _arm(frame: pd.DataFrame, names: Sequence[str]) -> _ArmEstimate:
    stats = frame[list(STAT_FIELDS)].to_numpy(np.float64)
    _, units = np.unique(frame["unit"].to_numpy(), return_inverse=True)
    values, variances = arm_estimate(stats, units.ravel().astype(np.int64), names)
    return _ArmEstimate(
        value=values,
        variance=variances,
        units=int(frame["unit"].nunique()),
        periods=len(frame),
        orders=float(frame["orders"].sum()),
    )


def _pseudo_sums(mean: float, variance: float, n: int) -> tuple[float, float, float]:
    """(sum, sumsq, n) of ``n`` pseudo-units with this mean whose plug-in ``s2 / n`` is
    ``variance``: how the linearised estimate is handed to ``cxagent.stats.sequential``."""
    s2 = variance * n
    return mean * n, (n - 1) * s2 + n * mean * mean, float(n)


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """An interval for treatment minus control at level ``1 - alpha``: ``se`` is the
    delta-method standard error after the few-cluster factor, ``df`` the Welch-Satterthwaite
    degrees of freedom behind that factor. Bounds are infinite (``df`` NaN) when an arm has too
    few clusters to estimate the spread."""

    estimate: float
    lower: float
    upper: float
    se: float
    alpha: float
    df: float

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class MetricResult:
    """One metric at one look: each arm's value, the difference with its always-valid and
    fixed-horizon intervals; a guardrail's margin and state; the primary's mSPRT p-value."""

    name: str
    role: Role
    control: float
    treatment: float
    always_valid: Interval
    fixed: Interval
    margin: float | None = None
    state: GuardrailState | None = None
    msprt_p_value: float | None = None

    @property
    def estimate(self) -> float:
        return self.always_valid.estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "control": _json_number(self.control),
            "treatment": _json_number(self.treatment),
            "estimate": _json_number(self.estimate),
            "always_valid": self.always_valid.to_dict(),
            "fixed": self.fixed.to_dict(),
            "margin": self.margin,
            "state": None if self.state is None else str(self.state),
            "msprt_p_value": _json_number(self.msprt_p_value),
        }


@dataclass(frozen=True)
class SRMCheck:
    """Sample ratio mismatch on the cluster-periods of each arm."""

    n_t: int
    n_c: int
    expected_share: float
    observed_share: float
    p_value: float
    threshold: float
    method: Literal["chi-square", "exact binomial"]

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold

    def to_dict(self) -> dict[str, Any]:
        out = {k: _json_number(v) for k, v in asdict(self).items()}
        out["mismatch"] = self.mismatch
        return out


@dataclass(frozen=True)
class LookReport:
    """The look at the end of day ``day`` (1-based) of a phase, with the data so far.

    ``units_*`` count randomisation units (the variance clusters), ``periods_*``
    cluster-periods (the confidence sequence's n); ``progress`` is the cluster-periods so far
    over the phase's ``n_planned``."""

    phase: int
    day: int
    date: str
    progress: float
    units_t: int
    units_c: int
    periods_t: int
    periods_c: int
    orders_t: float
    orders_c: float
    primary: MetricResult
    secondary: tuple[MetricResult, ...]
    guardrails: tuple[MetricResult, ...]
    srm: SRMCheck
    recommendation: Recommendation
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "day": self.day,
            "date": self.date,
            "progress": self.progress,
            "units_t": self.units_t,
            "units_c": self.units_c,
            "periods_t": self.periods_t,
            "periods_c": self.periods_c,
            "orders_t": self.orders_t,
            "orders_c": self.orders_c,
            "primary": self.primary.to_dict(),
            "secondary": [m.to_dict() for m in self.secondary],
            "guardrails": [m.to_dict() for m in self.guardrails],
            "srm": self.srm.to_dict(),
            "recommendation": self.recommendation,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class PhaseReport:
    """One phase of the plan: its looks up to the one that decided it."""

    index: int
    name: str
    treated_share: float
    planned_days: int
    go_rule: GoRule
    n_planned: int
    looks: tuple[LookReport, ...]
    recommendation: Recommendation | None
    status: PhaseStatus
    reasons: tuple[str, ...]

    @property
    def last(self) -> LookReport | None:
        return self.looks[-1] if self.looks else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "treated_share": self.treated_share,
            "planned_days": self.planned_days,
            "go_rule": self.go_rule,
            "n_planned": self.n_planned,
            "recommendation": self.recommendation,
            "status": self.status,
            "reasons": list(self.reasons),
            "looks": [look.to_dict() for look in self.looks],
        }


@dataclass(frozen=True)
class FinalResult:
    """The effect read at the decisive look of the experiment phase (the powered test; the
    last phase with data when the experiment phase was not reached)."""

    phase: str
    day: int
    primary: MetricResult
    secondary: tuple[MetricResult, ...]
    guardrails: tuple[MetricResult, ...]
    srm: SRMCheck

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "day": self.day,
            "primary": self.primary.to_dict(),
            "secondary": [m.to_dict() for m in self.secondary],
            "guardrails": [m.to_dict() for m in self.guardrails],
            "srm": self.srm.to_dict(),
        }


@dataclass(frozen=True)
class MonitorReport:
    """Every phase's looks and recommendation, the final result, and whether the incident is
    resolved, with the evidence in plain sentences."""

    title: str
    incident_id: str | None
    unit: str
    phases: tuple[PhaseReport, ...]
    final: FinalResult | None
    status: Literal["resolved", "rolled back", "in progress"]
    resolved: bool
    evidence: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "incident_id": self.incident_id,
            "unit": self.unit,
            "status": self.status,
            "resolved": self.resolved,
            "evidence": list(self.evidence),
            "final": None if self.final is None else self.final.to_dict(),
            "phases": [p.to_dict() for p in self.phases],
        }


def _json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: those become None; everything else passes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- reading the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Criteria:
    good: str
    not_harmful: str
    harmful: str
    breached: str
    srm: str


def _plan_criteria(plan: ExperimentPlan) -> _Criteria:
    good, not_harmful, harmful = _primary_bounds(plan.primary, plan.context.alpha)
    crit = _Criteria(
        good=good,
        not_harmful=not_harmful,
        harmful=harmful,
        breached=f"guardrail '{GuardrailState.BREACHED}'",
        srm=f"SRM p < {format_number(SRM_THRESHOLD)}",
    )
    for i, phase in enumerate(plan.phases):
        for text, what in ((crit.harmful, "the primary"), (crit.breached, "guardrails")):
            if not any(text in r for r in phase.rollback):
                raise ValueError(
                    f"plan.phases[{i}].rollback: no rollback criterion on {what} the monitor "
                    f"knows (expected one containing {text!r})"
                )
        if not any(crit.srm in r for r in phase.rollback):
            raise ValueError(f"plan.phases[{i}].rollback: no SRM criterion (expected {crit.srm!r})")
    return crit


def _go_rule(i: int, phase: RolloutPhase, crit: _Criteria) -> GoRule:
    if any(g == crit.good for g in phase.go):
        return "benefit"
    if any(g.endswith(crit.not_harmful) for g in phase.go):
        return "no_harm"
    raise ValueError(
        f"plan.phases[{i}].go: no criterion on the primary the monitor knows, got {phase.go!r}"
    )


def _check_metric_names(plan: ExperimentPlan) -> None:
    named: list[tuple[str, MetricSpec]] = [("plan.primary", plan.primary)]
    named += [(f"plan.secondary[{i}]", m) for i, m in enumerate(plan.secondary)]
    named += [(f"plan.guardrails[{i}]", m) for i, m in enumerate(plan.guardrails)]
    for path, m in named:
        if m.name not in METRIC_NAMES:
            raise ValueError(
                f"{path}.name: {m.name!r} is not a metric of the experiment data; one of "
                f"{', '.join(METRIC_NAMES)}"
            )


def _units_per_day(plan: ExperimentPlan) -> int:
    if plan.layout is not None:
        return plan.layout.clusters_per_day
    return plan.context.stores_in_scope


def _unit_sd(plan: ExperimentPlan) -> float:
    """Planning standard deviation of one cluster-period's mean of the primary: the per-order
    sd (``sqrt(p (1 - p))`` for a rate) shrunk by the cluster's size and inflated by its
    design effect, ``sd sqrt((1 + (m - 1) icc) / m)``, from the plan's own context."""
    p, c = plan.primary, plan.context
    sd = p.sd if p.sd is not None else math.sqrt(p.baseline * (1.0 - p.baseline))
    if plan.layout is not None:
        m = plan.layout.cluster_size_mean(c.orders_per_day) * (1.0 - plan.layout.burn_in_share)
        icc = c.icc_window
    else:
        m = c.orders_per_day / c.stores_in_scope
        icc = c.icc_store
    m = max(m, 1.0)
    return sd * math.sqrt((1.0 + (m - 1.0) * icc) / m)


def srm_check(n_t: int, n_c: int, expected_share: float) -> SRMCheck:
    """Sample ratio mismatch of ``n_t`` treated and ``n_c`` control cluster-periods against
    ``expected_share`` treated, threshold ``SRM_THRESHOLD``: ``sample_ratio_mismatch`` (the
    chi-square test) when both expected counts are at least 5, the textbook condition for its
    approximation (Cochran 1954); the exact two-sided binomial test otherwise, since the
    chi-square p-value of a handful of clusters at a 10% share is far too small."""
    total = n_t + n_c
    if min(total * expected_share, total * (1.0 - expected_share)) >= 5.0:
        r = sample_ratio_mismatch(n_t, n_c, expected_share)
        return SRMCheck(
            n_t=r.n_t,
            n_c=r.n_c,
            expected_share=r.expected_share_t,
            observed_share=r.observed_share_t,
            p_value=r.p_value,
            threshold=r.threshold,
            method="chi-square",
        )
    p_value = float(stats.binomtest(n_t, total, expected_share).pvalue) if total else 1.0
    return SRMCheck(
        n_t=n_t,
        n_c=n_c,
        expected_share=expected_share,
        observed_share=n_t / total if total else math.nan,
        p_value=p_value,
        threshold=SRM_THRESHOLD,
        method="exact binomial",
    )


# --- one look -----------------------------------------------------------------------------------

_UNBOUNDED = (-math.inf, math.inf)


def _intervals(
    name: str, t: _ArmEstimate, c: _ArmEstimate, alpha: float, n_planned: int, min_units: int
) -> tuple[Interval, Interval]:
    ft, fc = t.value[name], c.value[name]
    vt, vc = t.variance[name], c.variance[name]
    estimate = ft - fc
    few = min(t.units, c.units) < max(min_units, 2)
    if few or not (math.isfinite(vt) and math.isfinite(vc)) or t.periods < 2 or c.periods < 2:
        lo, hi = _UNBOUNDED
        free = Interval(estimate, lo, hi, math.inf, alpha, math.nan)
        return free, free
    factor, df = small_sample_factor(vt, t.units, vc, c.units, alpha)
    vt, vc = vt * factor**2, vc * factor**2
    args = (*_pseudo_sums(ft, vt, t.periods), *_pseudo_sums(fc, vc, c.periods))
    cs = difference_confidence_sequence(*args, alpha=alpha, n_planned=n_planned)
    fx = fixed_interval(*args, alpha=alpha)
    return (
        Interval(estimate, cs.lower, cs.upper, cs.se, alpha, df),
        Interval(estimate, fx.lower, fx.upper, fx.se, alpha, df),
    )


def small_sample_factor(
    var_t: float, units_t: int, var_c: float, units_c: int, alpha: float
) -> tuple[float, float]:
    """(t_{df, 1 - alpha/2} / z_{1 - alpha/2}, df): the factor the standard error is
    multiplied by for the few-cluster correction, and the Welch-Satterthwaite degrees of
    freedom ``df = V^2 / (V_t^2 / (k_t - 1) + V_c^2 / (k_c - 1))`` over ``k_t``, ``k_c``
    clusters (Satterthwaite 1946; Welch 1947; Cameron & Miller 2015 for few clusters).
    The factor tends to 1 as the clusters grow (1.07 at df = 20)."""
    total = var_t + var_c
    denominator = var_t**2 / (units_t - 1) + var_c**2 / (units_c - 1)
    if not (total > 0.0 and denominator > 0.0):
        return 1.0, math.inf
    df = total * total / denominator
    return float(stats.t.isf(alpha / 2.0, df) / stats.norm.isf(alpha / 2.0)), df


def _bad_direction(m: MetricSpec) -> Literal["increase", "decrease"]:
    return "increase" if m.good_sign < 0 else "decrease"


@dataclass
class _PhaseContext:
    plan: ExperimentPlan
    index: int
    phase: RolloutPhase
    rule: GoRule
    crit: _Criteria
    n_planned: int
    expected_share: float
    names: tuple[str, ...]
    test: SequentialTest
    min_units: int


def _look(ctx: _PhaseContext, rows: pd.DataFrame, day: int) -> LookReport:
    plan, alpha = ctx.plan, ctx.plan.context.alpha
    treated = rows["arm"] == TREATMENT
    t = _arm(rows[treated], ctx.names)
    c = _arm(rows[rows["arm"] == CONTROL], ctx.names)

    def result(m: MetricSpec, role: Role) -> MetricResult:
        av, fx = _intervals(m.name, t, c, alpha, ctx.n_planned, ctx.min_units)
        state = None
        if role == "guardrail":
            assert m.margin is not None
            state = non_inferiority(
                av.lower, av.upper, margin=m.margin, bad_direction=_bad_direction(m)
            )
        p_value = None
        if role == "primary":
            if math.isfinite(av.se) and av.se > 0.0:
                ft, fc = t.value[m.name], c.value[m.name]
                ctx.test.update(
                    *_pseudo_sums(ft, t.variance[m.name], t.periods),
                    *_pseudo_sums(fc, c.variance[m.name], c.periods),
                )
            p_value = ctx.test.p_value
        return MetricResult(
            name=m.name,
            role=role,
            control=c.value[m.name],
            treatment=t.value[m.name],
            always_valid=av,
            fixed=fx,
            margin=m.margin,
            state=state,
            msprt_p_value=p_value,
        )

    primary = result(plan.primary, "primary")
    secondary = tuple(result(m, "secondary") for m in plan.secondary)
    guardrails = tuple(result(m, "guardrail") for m in plan.guardrails)
    srm = srm_check(t.periods, c.periods, ctx.expected_share)
    recommendation, reasons = _decide(ctx, day, primary, guardrails, srm)
    return LookReport(
        phase=ctx.index,
        day=day,
        date=str(rows["date"].max()),
        progress=(t.periods + c.periods) / ctx.n_planned,
        units_t=t.units,
        units_c=c.units,
        periods_t=t.periods,
        periods_c=c.periods,
        orders_t=t.orders,
        orders_c=c.orders,
        primary=primary,
        secondary=secondary,
        guardrails=guardrails,
        srm=srm,
        recommendation=recommendation,
        reasons=reasons,
    )


# --- the decision -------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _fmt(value)


def _interval_text(m: MetricResult, spec: MetricSpec) -> str:
    unit = f" {spec.unit}" if spec.unit else ""
    av = m.always_valid
    if not math.isfinite(av.estimate):
        return f"{spec.title} not measured yet (an arm has no analysed orders)"
    if not math.isfinite(av.se):
        return (
            f"{spec.title} {_signed(av.estimate)}{unit} (no interval yet: too few clusters in an "
            "arm, no evidence either way)"
        )
    level = format_number(100.0 * (1.0 - av.alpha))
    return (
        f"{spec.title} {_signed(av.estimate)}{unit} "
        f"({level}% always-valid interval [{_fmt(av.lower)}, {_fmt(av.upper)}])"
    )


def _decide(
    ctx: _PhaseContext,
    day: int,
    primary: MetricResult,
    guardrails: tuple[MetricResult, ...],
    srm: SRMCheck,
) -> tuple[Recommendation, tuple[str, ...]]:
    plan = ctx.plan
    sign = plan.primary.good_sign
    av = primary.always_valid
    good_side = av.lower > 0.0 if sign > 0 else av.upper < 0.0
    harmful = av.upper < 0.0 if sign > 0 else av.lower > 0.0
    triggers: list[str] = []
    if srm.mismatch:
        triggers.append(
            f"sample ratio mismatch: {srm.n_t} treated / {srm.n_c} control cluster-periods, "
            f"{format_number(100 * srm.observed_share)}% treated against "
            f"{format_number(100 * srm.expected_share)}% assigned (p = {srm.p_value:.2g} < "
            f"{format_number(srm.threshold)})"
        )
    for g, spec in zip(guardrails, plan.guardrails, strict=True):
        if g.state == GuardrailState.BREACHED:
            unit = f" {spec.unit}" if spec.unit else ""
            triggers.append(
                f"guardrail breached: {_interval_text(g, spec)} lies beyond the tolerated "
                f"{_bad_direction(spec)} of {format_number(spec.margin or 0.0)}{unit}"
            )
    if harmful:
        triggers.append(
            f"primary on the harmful side: {_interval_text(primary, plan.primary)} "
            f"({ctx.crit.harmful})"
        )
    if triggers:
        return "roll back", tuple(triggers)

    planned = ctx.phase.min_days
    if ctx.rule == "benefit":
        go = good_side
        go_text = ctx.crit.good
    else:
        go = True  # not harmful, which no trigger fired to deny
        go_text = f"primary not on the harmful side: {ctx.crit.not_harmful}"
    state = f"{_interval_text(primary, plan.primary)}; day {day} of {planned}"
    if go and day >= planned:
        return "proceed", (f"go criteria met after {day} days: {go_text}; {state}",)
    if day < planned:
        met = "met so far" if go else "not met yet"
        return "hold", (f"go criterion {met} ({go_text}); {state}; keep collecting",)
    return "roll back", (
        f"no-go: the go criterion ({go_text}) is not met after the planned {planned} days; {state}",
    )


# --- the experiment -----------------------------------------------------------------------------

_STATUS: Final[dict[Recommendation, PhaseStatus]] = {
    "proceed": "completed",
    "roll back": "rolled back",
    "hold": "in progress",
}


def _frame_of(data: ExperimentData | pd.DataFrame) -> pd.DataFrame:
    frame = data.frame if isinstance(data, ExperimentData) else data
    return validate_frame(frame)


def _check_alignment(plan: ExperimentPlan, frame: pd.DataFrame, data: object) -> None:
    switchback = (frame["window_start"] != "").any() if len(frame) else plan.layout is not None
    data_unit = "region_x_window" if switchback else "store"
    if isinstance(data, ExperimentData):
        data_unit = data.meta.unit
    if data_unit != plan.unit.unit:
        raise ValueError(f"unit: the data randomise by {data_unit}, the plan by {plan.unit.unit}")
    phases = sorted(int(p) for p in frame["phase"].unique())
    if phases and (
        phases[0] != 0 or phases[-1] >= len(plan.phases) or phases != list(range(phases[-1] + 1))
    ):
        raise DataValidationError(
            f"phases {phases} do not follow the plan's {len(plan.phases)} phases "
            f"(0..{len(plan.phases) - 1}, in order, none skipped)",
            column="phase",
        )
    for p in phases:
        shares = frame.loc[frame["phase"] == p, "treated_share"].unique()
        planned = plan.phases[p].treated_share
        if len(shares) != 1 or abs(float(shares[0]) - planned) > 0.05:
            raise DataValidationError(
                f"phase {p} was assigned with {sorted(float(s) for s in shares)}, the plan's "
                f"{plan.phases[p].name} treats {format_number(planned)}",
                column="treated_share",
            )


def monitor(
    plan: ExperimentPlan,
    data: ExperimentData | pd.DataFrame,
    *,
    min_units_per_arm: int = MIN_UNITS_PER_ARM,
) -> MonitorReport:
    """Replay the daily looks of the experiment ``data`` against ``plan``; see the module
    docstring for the statistics and the rules.

    Raises ValueError naming the plan field or parameter at fault (a metric that is not in the
    data, a unit that differs from the plan's) and ``DataValidationError`` naming the column
    of data that do not fit the plan.
    """
    frame = _frame_of(data)
    _check_metric_names(plan)
    _check_alignment(plan, frame, data)
    crit = _plan_criteria(plan)
    names = tuple(
        dict.fromkeys(
            [plan.primary.name]
            + [m.name for m in plan.secondary]
            + [m.name for m in plan.guardrails]
        )
    )
    per_day = _units_per_day(plan)
    unit_sd = _unit_sd(plan)
    reports: list[PhaseReport] = []
    blocked: str | None = None
    for i, phase in enumerate(plan.phases):
        rule = _go_rule(i, phase, crit)
        n_planned = per_day * phase.min_days
        rows = frame[frame["phase"] == i]
        if blocked is not None or rows.empty:
            reports.append(
                PhaseReport(
                    index=i,
                    name=phase.name,
                    treated_share=phase.treated_share,
                    planned_days=phase.min_days,
                    go_rule=rule,
                    n_planned=n_planned,
                    looks=(),
                    recommendation=None,
                    status="not reached",
                    reasons=(blocked or "no data for this phase yet",),
                )
            )
            blocked = blocked or f"not reached: {phase.name} has no data yet"
            continue
        expected = float(rows["treated_share"].iloc[0])
        ctx = _PhaseContext(
            plan=plan,
            index=i,
            phase=phase,
            rule=rule,
            crit=crit,
            n_planned=n_planned,
            expected_share=expected,
            names=names,
            test=SequentialTest(
                tau=matched_tau(n_planned, unit_sd, share_t=expected, alpha=plan.context.alpha)
            ),
            min_units=min_units_per_arm,
        )
        looks: list[LookReport] = []
        last_day = int(rows["phase_day"].max())
        for day in range(1, last_day + 2):
            so_far = rows[rows["phase_day"] < day]
            look = _look(ctx, so_far, day)
            looks.append(look)
            if look.recommendation != "hold":
                break
        decisive = looks[-1]
        status = _STATUS[decisive.recommendation]
        reports.append(
            PhaseReport(
                index=i,
                name=phase.name,
                treated_share=phase.treated_share,
                planned_days=phase.min_days,
                go_rule=rule,
                n_planned=n_planned,
                looks=tuple(looks),
                recommendation=decisive.recommendation,
                status=status,
                reasons=decisive.reasons,
            )
        )
        if status == "rolled back":
            blocked = f"not reached: {phase.name} was rolled back"
        elif status == "in progress":
            blocked = f"not reached: {phase.name} is still running"
    return _report(plan, tuple(reports))


def _final(plan: ExperimentPlan, phases: tuple[PhaseReport, ...]) -> FinalResult | None:
    with_looks = [p for p in phases if p.looks]
    if not with_looks:
        return None
    chosen = next((p for p in with_looks if p.go_rule == "benefit"), with_looks[-1])
    look = chosen.looks[-1]
    return FinalResult(
        phase=chosen.name,
        day=look.day,
        primary=look.primary,
        secondary=look.secondary,
        guardrails=look.guardrails,
        srm=look.srm,
    )


def _phase_sentence(plan: ExperimentPlan, p: PhaseReport) -> str:
    look = p.last
    if look is None:
        return f"{p.name}: {p.reasons[0]}."
    verb: dict[PhaseStatus, str] = {
        "completed": "proceeded",
        "rolled back": "rolled back",
        "in progress": "on hold",
        "not reached": "not reached",
    }
    units = "region x windows" if plan.layout is not None else "store-days"
    guards = "; ".join(
        f"{spec.title} {g.state} ({_signed(g.always_valid.estimate)}, interval "
        f"[{_fmt(g.always_valid.lower)}, {_fmt(g.always_valid.upper)}], margin "
        f"{format_number(spec.margin or 0.0)})"
        for g, spec in zip(look.guardrails, plan.guardrails, strict=True)
    )
    return (
        f"{p.name}: {verb[p.status]} on day {look.day} of {p.planned_days} "
        f"({look.periods_t} treated / {look.periods_c} control {units}, "
        f"{format_number(look.orders_t)} / {format_number(look.orders_c)} analysed orders): "
        f"{'; '.join(p.reasons)}. Guardrails: {guards}. SRM p = {look.srm.p_value:.3g}."
    )


def _report(plan: ExperimentPlan, phases: tuple[PhaseReport, ...]) -> MonitorReport:
    final = _final(plan, phases)
    rolled = next((p for p in phases if p.status == "rolled back"), None)
    resolved = all(p.status == "completed" for p in phases)
    status: Literal["resolved", "rolled back", "in progress"] = (
        "resolved" if resolved else "rolled back" if rolled is not None else "in progress"
    )
    evidence = [_phase_sentence(plan, p) for p in phases]
    if final is not None:
        fx = final.primary.fixed
        level = format_number(100.0 * (1.0 - fx.alpha))
        evidence.append(
            f"Final result ({final.phase}, day {final.day}): "
            f"{_interval_text(final.primary, plan.primary)}; fixed-horizon {level}% interval "
            f"[{_fmt(fx.lower)}, {_fmt(fx.upper)}]; control {_fmt(final.primary.control)}, "
            f"treatment {_fmt(final.primary.treatment)}; expected "
            f"{_signed(plan.primary.expected_effect or 0.0)}."
        )
    incident = plan.context.incident_id or "the incident"
    if resolved:
        evidence.append(
            f"Resolved: {plan.action.name} was launched after every phase met its go "
            f"criteria; {incident} is resolved with this evidence."
        )
    elif rolled is not None:
        evidence.append(
            f"Not resolved: {plan.action.name} was rolled back in {rolled.name} "
            f"({plan.rollback.revert}); {incident} stays open."
        )
    else:
        evidence.append(
            f"Not resolved yet: the experiment is still running; {incident} stays open."
        )
    return MonitorReport(
        title=f"Monitoring: {plan.title.removeprefix('Experiment plan: ')}",
        incident_id=plan.context.incident_id,
        unit=plan.unit.unit,
        phases=phases,
        final=final,
        status=status,
        resolved=resolved,
        evidence=tuple(evidence),
    )
