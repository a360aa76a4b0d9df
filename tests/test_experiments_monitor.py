"""Experiment monitoring of ``cxagent.experiments.monitor`` on experiments simulated in the
demo scenario: a working fix runs through its phases to resolution and its measured effect
covers the engine's exact effect; a harmful fix and a guardrail breach are rolled back; A/A
runs keep the always-valid interval around zero; dropped treated rows raise an SRM; the delta
method matches closed forms; bad input names the field or column."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cxagent.data.scenario.fixes import Fix, fix_effect
from cxagent.data.scenario.spec import DEMO_SPEC, ScenarioSpec, Scope, load_spec
from cxagent.errors import DataValidationError
from cxagent.experiments.monitor import (
    MIN_UNITS_PER_ARM,
    MonitorReport,
    arm_estimate,
    monitor,
    small_sample_factor,
    srm_check,
)
from cxagent.experiments.plan import (
    ActionSpec,
    ExperimentPlan,
    MetricSpec,
    PlanContext,
    build_plan,
)
from cxagent.experiments.simulate import (
    TREATMENT,
    ExperimentData,
    simulate_experiment,
)
from cxagent.metrics.definitions import STAT_FIELDS, CXStats
from cxagent.stats.sequential import GuardrailState

START = dt.datetime(2024, 1, 6)  # the demo's data end on 2024-01-05; its incident persists
SCOPE = {"region": "SF", "category": "grocery", "daypart": "dinner"}
FIX_SCOPE = Scope(region=["SF"], category=["grocery"], daypart=["dinner"])
WINDOW_HOURS = 1.0
BURN_IN = 10.0


# --- plans ----------------------------------------------------------------------------------


def cx_primary(**changes: Any) -> MetricSpec:
    base = MetricSpec(
        name="cx_score",
        kind="mean",
        baseline=48.5,
        direction="increase_is_good",
        sd=30.0,
        expected_effect=13.0,  # the what-if of restoring the policy
        label="CX Score",
        unit="points",
    )
    return dataclasses.replace(base, **changes)


def cost_guardrail(margin: float = 1.5) -> MetricSpec:
    return MetricSpec(
        name="cost_per_delivery",
        kind="mean",
        baseline=9.44,
        direction="decrease_is_good",
        sd=3.0,
        margin=margin,
        unit="USD",
    )


def batching_plan(guardrails: tuple[MetricSpec, ...] = (cost_guardrail(),)) -> ExperimentPlan:
    """The plan for restoring batching in SF grocery at dinner (a dispatch fix: switchback).

    ``icc_window`` 0.1 is the correlation the demo's region x hour windows show (the between-
    window spread of the CX score in A/A runs); with it the plan asks for 10 + 15 + 14 days."""
    action = ActionSpec(
        name="restore_batching",
        description="restoring the batching policy",
        cause="batching_policy",
        kind="dispatch",
        scope=dict(SCOPE),
        parameters={"max_orders_per_trip": 2, "utilisation_trigger": 0.85},
    )
    context = PlanContext(
        orders_per_day=1100,
        stores_in_scope=21,
        regions_in_scope=1,
        icc_store=0.02,
        icc_window=0.1,
        window_hours=WINDOW_HOURS,
        burn_in_minutes=BURN_IN,
        incident_id="inc-sf-grocery-dinner",
    )
    secondary = [
        MetricSpec(name="on_time_rate", kind="rate", baseline=0.61, direction="increase_is_good")
    ]
    return build_plan(action, cx_primary(), list(guardrails), context, secondary=secondary)


def promise_plan() -> ExperimentPlan:
    """A promise fix for grocery everywhere: randomised by store (81 stores in scope)."""
    action = ActionSpec(
        name="pad_promise",
        description="padding the promised delivery time",
        cause="eta_model_bias",
        kind="promise",
        scope={"category": "grocery"},
        parameters={"minutes": 5},
    )
    guard = MetricSpec(
        name="cancellation_rate",
        kind="rate",
        baseline=0.03,
        direction="decrease_is_good",
        margin=0.02,
    )
    context = PlanContext(
        orders_per_day=9000,
        stores_in_scope=81,
        regions_in_scope=5,
        icc_store=0.01,
        icc_window=0.1,
        incident_id="inc-grocery-eta",
    )
    return build_plan(action, cx_primary(baseline=60.0, expected_effect=6.0), [guard], context)


def phases_of(plan: ExperimentPlan, count: int | None = None) -> list[tuple[float, int]]:
    return [(p.treated_share, p.min_days) for p in plan.phases][:count]


# --- data -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec() -> ScenarioSpec:
    return load_spec(DEMO_SPEC).model_copy(update={"days": 75})


@pytest.fixture(scope="module")
def plan() -> ExperimentPlan:
    return batching_plan()


def batching_fix(cap: int, trigger: float) -> Fix:
    return Fix(
        kind="batching",
        start=START,
        scope=FIX_SCOPE,
        max_orders_per_trip=cap,
        utilisation_trigger=trigger,
    )


def run_switchback(
    spec: ScenarioSpec, plan: ExperimentPlan, fix: Fix, *, phases: int | None = None, **kw: Any
) -> ExperimentData:
    return simulate_experiment(
        spec,
        fix,
        START,
        phases=phases_of(plan, phases),
        unit="region_x_window",
        window_hours=WINDOW_HOURS,
        burn_in_minutes=BURN_IN,
        **kw,
    )


@pytest.fixture(scope="module")
def working(spec: ScenarioSpec, plan: ExperimentPlan) -> ExperimentData:
    return run_switchback(spec, plan, batching_fix(2, 0.85))


@pytest.fixture(scope="module")
def working_aa(spec: ScenarioSpec, plan: ExperimentPlan) -> ExperimentData:
    """The same draws and the same assignment with no fix: the treated units' counterfactual."""
    return run_switchback(spec, plan, batching_fix(2, 0.85), aa=True)


@pytest.fixture(scope="module")
def working_report(plan: ExperimentPlan, working: ExperimentData) -> MonitorReport:
    return monitor(plan, working)


def cx_score(frame: pd.DataFrame) -> float:
    totals = frame[list(STAT_FIELDS)].sum()
    return CXStats(**{str(k): float(v) for k, v in totals.items()}).metrics()["cx_score"]


# --- a fix that works -----------------------------------------------------------------------


def test_working_fix_runs_through_its_phases_to_resolution(
    plan: ExperimentPlan, working_report: MonitorReport
) -> None:
    report = working_report
    assert [p.status for p in report.phases] == ["completed"] * 3
    assert [p.recommendation for p in report.phases] == ["proceed"] * 3
    # each phase holds until its planned days, then proceeds
    for phase, planned in zip(report.phases, plan.phases, strict=True):
        assert [look.recommendation for look in phase.looks[:-1]] == ["hold"] * (
            planned.min_days - 1
        )
        assert phase.looks[-1].day == planned.min_days
    experiment = report.phases[1]
    assert experiment.go_rule == "benefit"
    assert experiment.n_planned == plan.sequence_n_planned
    final = report.final
    assert final is not None and final.phase == plan.phases[1].name
    assert final.primary.always_valid.lower > 0.0
    assert final.guardrails[0].state != GuardrailState.BREACHED
    assert not final.srm.mismatch
    # the always-valid interval is wider than the fixed-horizon one it is reported with
    assert final.primary.always_valid.lower < final.primary.fixed.lower
    assert final.primary.msprt_p_value is not None and final.primary.msprt_p_value < 0.05
    assert report.resolved and report.status == "resolved"
    assert report.incident_id == "inc-sf-grocery-dinner"
    assert report.evidence[-1].startswith("Resolved: restore_batching was launched")
    assert "inc-sf-grocery-dinner is resolved" in report.evidence[-1]
    assert any(
        s.startswith("Final result (50% experiment, day 15): CX Score +") for s in report.evidence
    )


def test_measured_effect_covers_the_engines_exact_effect(
    spec: ScenarioSpec,
    working: ExperimentData,
    working_aa: ExperimentData,
    working_report: MonitorReport,
) -> None:
    final = working_report.final
    assert final is not None
    interval = final.primary.always_valid
    # exact effect on the treated clusters: the same rows simulated without the fix
    rows = (working.frame["phase"] == 1) & (working.frame["phase_day"] < final.day)
    treated = rows & (working.frame["arm"] == TREATMENT)
    exact = cx_score(working.frame[treated]) - cx_score(working_aa.frame[treated])
    assert interval.lower <= exact <= interval.upper
    assert 8.0 < exact < 18.0
    # and the effect of the fix on the whole scope over the same days, from the engine
    begin = START + dt.timedelta(days=10)
    engine = fix_effect(spec, batching_fix(2, 0.85), begin, begin + dt.timedelta(days=final.day))
    whole_scope = engine.metrics()["delta"]["cx_score"]
    assert interval.lower <= whole_scope <= interval.upper
    assert abs(final.primary.estimate - whole_scope) < 0.5 * whole_scope  # roughly


def test_report_is_plain_json(working_report: MonitorReport) -> None:
    text = json.dumps(working_report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["resolved"] is True
    assert back["phases"][1]["looks"][-1]["primary"]["always_valid"]["lower"] > 0
    assert back["phases"][0]["looks"][0]["primary"]["always_valid"]["lower"] is None  # unbounded
    assert back["final"]["guardrails"][0]["name"] == "cost_per_delivery"
    assert back["final"]["secondary"][0]["name"] == "on_time_rate"


def test_an_unfinished_phase_holds(plan: ExperimentPlan, working: ExperimentData) -> None:
    frame = working.frame
    partial = frame[(frame["phase"] == 0) & (frame["phase_day"] < 4)]
    report = monitor(plan, partial)
    assert report.phases[0].recommendation == "hold"
    assert report.phases[0].status == "in progress"
    assert [p.status for p in report.phases[1:]] == ["not reached"] * 2
    assert report.status == "in progress" and not report.resolved
    assert report.evidence[-1].startswith("Not resolved yet")


# --- fixes that do not work -----------------------------------------------------------------


def test_harmful_fix_is_rolled_back(spec: ScenarioSpec, plan: ExperimentPlan) -> None:
    """Batching harder (up to 5 orders a trip from 70% utilisation) lowers the CX Score."""
    data = run_switchback(spec, plan, batching_fix(5, 0.70), phases=2)
    report = monitor(plan, data)
    rolled = next(p for p in report.phases if p.status == "rolled back")
    assert rolled.recommendation == "roll back"
    assert rolled.reasons[0].startswith("primary on the harmful side: CX Score -")
    look = rolled.looks[-1]
    assert look.primary.always_valid.upper < 0.0
    assert look.day < rolled.planned_days  # stopped early: the interval is always valid
    assert report.phases[-1].status == "not reached"
    assert report.status == "rolled back" and not report.resolved
    assert "was rolled back" in report.evidence[-1]
    assert "restore the pre-experiment settings" in report.evidence[-1]


def test_guardrail_breach_rolls_back_a_fix_that_helps_the_primary(
    working: ExperimentData,
) -> None:
    """Restoring batching costs about +0.8 USD a delivery: beyond a 0.3 USD margin."""
    tight = batching_plan(guardrails=(cost_guardrail(margin=0.3),))
    report = monitor(tight, working)
    rolled = next(p for p in report.phases if p.status == "rolled back")
    assert rolled.reasons[0].startswith("guardrail breached: cost per delivery +")
    guard = rolled.looks[-1].guardrails[0]
    assert guard.state == GuardrailState.BREACHED
    assert guard.always_valid.lower > 0.3
    assert not report.resolved


def test_aa_intervals_cover_zero_and_never_go(spec: ScenarioSpec, plan: ExperimentPlan) -> None:
    """A/A runs over six assignment seeds: the always-valid interval of the primary and the
    guardrail covers zero at every look of (nearly) every run, and the experiment phase never
    proceeds: it ends in a no-go at its planned days."""
    misses = 0
    for seed in range(6):
        data = run_switchback(spec, plan, batching_fix(2, 0.85), phases=2, seed=seed, aa=True)
        report = monitor(plan, data)
        looks = [look for p in report.phases for look in p.looks]
        misses += any(
            not (m.always_valid.lower <= 0.0 <= m.always_valid.upper)
            for look in looks
            for m in (look.primary, *look.guardrails)
        )
        assert all(look.recommendation != "proceed" or look.phase == 0 for look in looks)
        assert not report.resolved
        experiment = report.phases[1]
        if experiment.status != "not reached":
            assert experiment.recommendation == "roll back"
    assert misses <= 1


# --- sample ratio mismatch ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store_data(spec: ScenarioSpec) -> ExperimentData:
    fix = Fix(kind="promise_buffer", start=START, scope=Scope(category=["grocery"]), minutes=5.0)
    return simulate_experiment(
        spec, fix, START, phases=phases_of(promise_plan(), 2), unit="store", seed=1
    )


def test_dropped_treated_rows_raise_a_sample_ratio_mismatch(store_data: ExperimentData) -> None:
    plan = promise_plan()
    clean = monitor(plan, store_data)
    assert all(not look.srm.mismatch for p in clean.phases for look in p.looks)

    frame = store_data.frame
    rng = np.random.default_rng(0)
    treated = (frame["phase"] == 1) & (frame["arm"] == TREATMENT)
    lost = treated & (rng.random(len(frame)) < 0.5)
    report = monitor(plan, frame[~lost])
    experiment = report.phases[1]
    assert experiment.recommendation == "roll back"
    assert experiment.reasons[0].startswith("sample ratio mismatch:")
    look = experiment.looks[-1]
    assert look.srm.mismatch and look.srm.p_value < 0.001
    assert look.srm.observed_share < look.srm.expected_share
    assert look.srm.method == "chi-square"


def test_srm_uses_the_exact_test_on_a_handful_of_clusters() -> None:
    # 3 of 5 windows treated at a 10% share: chi-square says p = 0.0002, the exact test 0.0086
    check = srm_check(3, 2, 0.1)
    assert check.method == "exact binomial"
    assert check.p_value == pytest.approx(stats.binomtest(3, 5, 0.1).pvalue)
    assert not check.mismatch
    assert srm_check(30, 270, 0.1).method == "chi-square"


# --- statistics -----------------------------------------------------------------------------


def random_clusters(k: int, seed: int = 0) -> np.ndarray:
    """Plausible summed CXStats of k clusters of 50-250 orders."""
    rng = np.random.default_rng(seed)
    orders = rng.integers(50, 250, k).astype(float)
    delivered = orders - rng.binomial(orders.astype(int), 0.04)
    cols: dict[str, np.ndarray] = {
        "orders": orders,
        "delivered": delivered,
        "on_time": rng.binomial(delivered.astype(int), rng.uniform(0.5, 0.8, k)).astype(float),
        "eta_abs_error_s": delivered * rng.uniform(300, 700, k),
        "canceled": orders - delivered,
        "refunded": rng.binomial(orders.astype(int), 0.1).astype(float),
        "items": delivered * 6.0,
        "bad_items": rng.binomial((delivered * 6).astype(int), 0.03).astype(float),
        "support": rng.binomial(orders.astype(int), 0.06).astype(float),
        "ratings": rng.binomial(delivered.astype(int), 0.3).astype(float),
        "stars": np.zeros(k),
        "trips": delivered / 1.2,
        "dasher_active_s": delivered * rng.uniform(1200, 1500, k),
        "delivery_cost": delivered * rng.uniform(8.0, 11.0, k),
    }
    cols["stars"] = cols["ratings"] * rng.uniform(4.0, 4.6, k)
    return np.column_stack([cols[f] for f in STAT_FIELDS])


def test_delta_method_matches_the_ratio_formula() -> None:
    """For a ratio N / D the linearised variance is sum (N_i - r D_i)^2 / ((k - 1) k D_bar^2)
    (Deng, Knoblich & Lu 2018)."""
    s = random_clusters(40)
    values, variances = arm_estimate(s, np.arange(40), ["cancellation_rate", "cost_per_delivery"])
    num, den = s[:, STAT_FIELDS.index("canceled")], s[:, STAT_FIELDS.index("orders")]
    r = num.sum() / den.sum()
    expected = np.sum((num - r * den) ** 2) / (39 * 40 * den.mean() ** 2)
    assert values["cancellation_rate"] == pytest.approx(r)
    assert variances["cancellation_rate"] == pytest.approx(expected, rel=1e-6)
    cost, dlv = s[:, STAT_FIELDS.index("delivery_cost")], s[:, STAT_FIELDS.index("delivered")]
    rc = cost.sum() / dlv.sum()
    expected_cost = np.sum((cost - rc * dlv) ** 2) / (39 * 40 * dlv.mean() ** 2)
    assert variances["cost_per_delivery"] == pytest.approx(expected_cost, rel=1e-6)


def test_delta_method_cx_score_variance_agrees_with_a_cluster_bootstrap() -> None:
    s = random_clusters(60, seed=1)
    _, variances = arm_estimate(s, np.arange(60), ["cx_score"])
    rng = np.random.default_rng(2)
    draws = []
    for _ in range(1500):
        pick = rng.integers(0, 60, 60)
        totals = s[pick].sum(axis=0)
        draws.append(
            CXStats(**dict(zip(STAT_FIELDS, map(float, totals), strict=True))).metrics()["cx_score"]
        )
    # the bootstrap variance of the plug-in estimate, with divisor k rather than k - 1
    assert variances["cx_score"] == pytest.approx(np.var(draws) * 60 / 59, rel=0.15)


def test_rows_of_one_unit_are_one_cluster() -> None:
    """Store randomisation: a store's days are summed before the variance is taken."""
    s = random_clusters(30, seed=3)
    units = np.repeat(np.arange(10), 3)
    _, by_unit = arm_estimate(s, units, ["on_time_rate"])
    summed = np.vstack([s[units == u].sum(axis=0) for u in range(10)])
    _, direct = arm_estimate(summed, np.arange(10), ["on_time_rate"])
    assert by_unit["on_time_rate"] == pytest.approx(direct["on_time_rate"])
    values, single = arm_estimate(s[:3], np.zeros(3, dtype=np.int64), ["on_time_rate"])
    assert math.isfinite(values["on_time_rate"]) and math.isnan(single["on_time_rate"])


def test_small_sample_factor_is_the_welch_t_correction() -> None:
    factor, df = small_sample_factor(1.0, 5, 1.0, 5, 0.05)
    assert df == pytest.approx(8.0)
    assert factor == pytest.approx(stats.t.isf(0.025, 8.0) / stats.norm.isf(0.025))
    big, _ = small_sample_factor(1.0, 500, 2.0, 400, 0.05)
    assert 1.0 < big < 1.002
    assert MIN_UNITS_PER_ARM >= 2


# --- bad input ------------------------------------------------------------------------------


def test_unknown_metric_is_named(plan: ExperimentPlan, working: ExperimentData) -> None:
    odd = dataclasses.replace(
        plan, guardrails=(dataclasses.replace(plan.guardrails[0], name="basket_usd"),)
    )
    with pytest.raises(ValueError, match=r"^plan\.guardrails\[0\]\.name: 'basket_usd' is not a"):
        monitor(odd, working)


def test_data_that_do_not_fit_the_plan_are_named(
    plan: ExperimentPlan, working: ExperimentData, store_data: ExperimentData
) -> None:
    with pytest.raises(ValueError, match=r"^unit: the data randomise by store, the plan by"):
        monitor(plan, store_data)
    shifted = working.frame.copy()
    shifted.loc[shifted["phase"] == 0, "treated_share"] = 0.3
    with pytest.raises(DataValidationError, match=r"column 'treated_share': phase 0 was assigned"):
        monitor(plan, shifted)
    skipped = working.frame[working.frame["phase"] != 1]
    with pytest.raises(DataValidationError, match=r"column 'phase': phases \[0, 2\] do not"):
        monitor(plan, skipped)
    with pytest.raises(DataValidationError, match=r"column 'on_time': is missing"):
        monitor(plan, working.frame.drop(columns=["on_time"]))


def test_a_plan_criterion_the_monitor_does_not_know_is_refused(
    plan: ExperimentPlan, working: ExperimentData
) -> None:
    phases = list(plan.phases)
    phases[1] = dataclasses.replace(phases[1], go=("CX Score looks better",))
    with pytest.raises(ValueError, match=r"^plan\.phases\[1\]\.go: no criterion on the primary"):
        monitor(dataclasses.replace(plan, phases=tuple(phases)), working)
