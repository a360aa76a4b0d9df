"""Experiment plans of ``cxagent.experiments.plan``: unit per action kind, power taken from
``design.plan_power`` (checked by calling it directly with the layout worked out by hand),
ramp phases, validation paths, the markdown and its atomic write."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import pytest

from cxagent.experiments import plan as plan_module
from cxagent.experiments.design import plan_power
from cxagent.experiments.plan import (
    CAUSES,
    ActionSpec,
    ExperimentPlan,
    MetricSpec,
    PlanContext,
    build_plan,
    choose_unit,
    format_number,
    scope_hours,
    switchback_layout,
    write_markdown,
)
from cxagent.hypotheses import MECHANISMS
from cxagent.stats.sequential import SRM_THRESHOLD

SCOPE = {"region": "SF", "category": "grocery", "daypart": "dinner"}
HEADINGS = (
    "# Experiment plan: reduce_batching (SF grocery dinner)",
    "## Hypothesis",
    "## Metrics",
    "## Randomisation unit",
    "## Sample size and duration",
    "## Rollout phases",
    "## Monitoring",
    "## Rollback",
)


def action(kind: str = "dispatch", **changes: Any) -> ActionSpec:
    base = ActionSpec(
        name="reduce_batching",
        description="reducing batching",
        cause="batching_policy",
        kind=kind,  # type: ignore[arg-type]
        scope=dict(SCOPE),
        parameters={"max_batch_size": 1},
    )
    return dataclasses.replace(base, **changes)


def cx(**changes: Any) -> MetricSpec:
    base = MetricSpec(
        name="cx_score",
        kind="mean",
        baseline=70.0,
        direction="increase_is_good",
        sd=30.0,
        expected_effect=12.0,
        label="CX Score",
        unit="points",
    )
    return dataclasses.replace(base, **changes)


def cost(**changes: Any) -> MetricSpec:
    base = MetricSpec(
        name="cost_per_delivery",
        kind="mean",
        baseline=9.5,
        direction="decrease_is_good",
        sd=3.0,
        margin=0.5,
        unit="USD",
    )
    return dataclasses.replace(base, **changes)


def context(**changes: Any) -> PlanContext:
    base = PlanContext(
        orders_per_day=3000,
        stores_in_scope=32,
        regions_in_scope=1,
        icc_store=0.02,
        icc_window=0.05,
        incident_id="inc-042",
    )
    return dataclasses.replace(base, **changes)


def make(kind: str = "dispatch", **ctx: Any) -> ExperimentPlan:
    return build_plan(action(kind), cx(), [cost()], context(**ctx))


@pytest.fixture(scope="module")
def batching() -> ExperimentPlan:
    return make()


# --- unit of randomisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "unit", "phrases"),
    [
        ("dispatch", "region_x_window", ("share couriers", "SUTVA", "Bojinov")),
        ("supply", "region_x_window", ("share couriers", "on shift", "Bojinov")),
        ("store_ops", "store", ("lives in the store", "icc_store")),
        ("promise", "store", ("no customer id", "consistent promise", "icc_store")),
    ],
)
def test_unit_follows_interference_with_its_reason(
    kind: str, unit: str, phrases: tuple[str, ...]
) -> None:
    choice = choose_unit(kind)  # type: ignore[arg-type]
    assert choice.unit == unit
    for phrase in phrases:
        assert phrase in choice.reason
    plan = make(kind)
    assert plan.unit == choice
    assert plan.power.unit == unit
    assert (plan.layout is not None) == (unit == "region_x_window")
    assert choice.reason in plan.to_markdown()


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="kind: must be one of dispatch, supply"):
        choose_unit("pricing")  # type: ignore[arg-type]


def test_causes_are_the_ones_investigations_rank() -> None:
    # cxagent.rca.investigate ranks the timeline's mechanisms plus inventory drops.
    assert set(CAUSES) == {*MECHANISMS, "inventory_drop"}


# --- switchback layout and power ---------------------------------------------------------------


def test_dinner_switchback_layout() -> None:
    # Dinner is hours 16-20 (cxagent.data.cohorts): 5 h cut into 2 h windows -> 2, 2, 1.
    assert scope_hours(SCOPE) == 5
    assert scope_hours({"region": "SF"}) == 24
    lay = switchback_layout(SCOPE, context(regions_in_scope=2))
    assert lay.window_lengths == (2.0, 2.0, 1.0)
    assert lay.clusters_per_day == 6
    assert lay.burn_in_share == pytest.approx(3 * 0.5 / 5)
    assert lay.cluster_size_mean(3000) == pytest.approx(500)
    # Analysed lengths 1.5, 1.5, 0.5 h: sd of the raw lengths over the analysed mean.
    assert lay.cluster_size_cv == pytest.approx(math.sqrt(2 / 9) / (5 / 3 - 0.5))
    whole_day = switchback_layout({"region": "SF"}, context())
    assert whole_day.window_lengths == (2.0,) * 12
    assert whole_day.cluster_size_cv == 0.0


def test_burn_in_must_fit_the_shortest_window() -> None:
    with pytest.raises(ValueError, match=r"context\.burn_in_minutes: must be shorter"):
        switchback_layout(SCOPE, context(burn_in_minutes=60))


def test_switchback_n_matches_plan_power(batching: ExperimentPlan) -> None:
    expected = plan_power(
        "cx_score",
        baseline=70.0,
        sd=30.0,
        mde=6.0,  # half of the expected 12
        orders_per_day=3000,
        unit="region_x_window",
        icc=0.05,
        cluster_size_mean=1000.0,  # 3000 orders over 3 windows in 1 region
        cluster_size_cv=math.sqrt(2 / 9) / (5 / 3 - 0.5),
        burn_in_share=0.3,
    )
    got = batching.power
    assert (got.orders_per_arm_iid, got.orders_control, got.orders_treatment) == (
        expected.orders_per_arm_iid,
        expected.orders_control,
        expected.orders_treatment,
    )
    assert (got.clusters_control, got.duration_days) == (
        expected.clusters_control,
        expected.duration_days,
    )
    assert got.design_effect == pytest.approx(expected.design_effect, rel=1e-12)
    assert got.mde == 6.0 and batching.mde_is_default
    assert got.two_sided and got.treated_share == 0.5


def test_store_n_matches_plan_power() -> None:
    plan = make("store_ops", orders_per_day=60, stores_in_scope=100, cuped_correlation=0.4)
    expected = plan_power(
        "cx_score",
        baseline=70.0,
        sd=30.0,
        mde=6.0,
        orders_per_day=60,
        unit="store",
        icc=0.02,
        clusters_available=100,
        cuped_correlation=0.4,
    )
    assert plan.power == expected


def test_rate_primary_matches_plan_power_and_reads_downwards() -> None:
    late = MetricSpec(
        "late_rate", "rate", 0.2, "decrease_is_good", expected_effect=-0.08, label="late rate"
    )
    plan = build_plan(action("promise"), late, [cost()], context(icc_store=0.005))
    expected = plan_power(
        "late_rate",
        baseline=0.2,
        mde=-0.04,
        orders_per_day=3000,
        unit="store",
        icc=0.005,
        clusters_available=32,
    )
    assert plan.power == expected
    assert "will lower the late rate by about 0.08 without" in plan.hypothesis()
    experiment = plan.phases[1]
    assert experiment.go[0] == "upper bound of the primary's 95% always-valid interval < 0"
    assert experiment.rollback[1].endswith(
        "lower bound of the primary's 95% always-valid interval > 0"
    )


def test_given_mde_overrides_the_default() -> None:
    plan = build_plan(action(), cx(mde=4.0), [cost()], context())
    assert plan.mde == 4.0 and not plan.mde_is_default
    assert plan.power.mde == 4.0
    assert "4 points (given)" in plan.to_markdown()
    assert plan.power.orders_per_arm_iid > make().power.orders_per_arm_iid


@pytest.mark.parametrize(
    ("kind", "ctx", "field", "iccs"),
    [
        ("dispatch", {}, "icc_window", (0.0, 0.05, 0.2)),
        (
            "store_ops",
            {"orders_per_day": 60, "stores_in_scope": 100},
            "icc_store",
            (0.0, 0.01, 0.04),
        ),
    ],
)
def test_duration_grows_with_icc(
    kind: str, ctx: dict[str, Any], field: str, iccs: tuple[float, ...]
) -> None:
    plans = [make(kind, **ctx, **{field: icc}) for icc in iccs]
    days = [p.power.duration_days for p in plans]
    assert days[0] < days[1] < days[2]
    assert plans[0].power.design_effect == 1.0 < plans[1].power.design_effect


@pytest.mark.parametrize(
    ("kind", "ctx"),
    [("dispatch", {}), ("store_ops", {"orders_per_day": 60, "stores_in_scope": 100})],
)
def test_duration_shrinks_with_cuped(kind: str, ctx: dict[str, Any]) -> None:
    plans = [make(kind, **ctx, cuped_correlation=rho) for rho in (0.0, 0.5, 0.8)]
    assert plans[0].power.duration_days > plans[1].power.duration_days
    assert plans[1].power.duration_days > plans[2].power.duration_days
    assert [p.power.cuped_factor for p in plans] == pytest.approx([1.0, 0.75, 0.36])


def test_experiment_phase_covers_the_guardrail(batching: ExperimentPlan) -> None:
    clear = plan_power(
        "cost_per_delivery",
        baseline=9.5,
        sd=3.0,
        mde=0.5,  # non-inferiority: the bad side is an increase
        orders_per_day=3000,
        unit="region_x_window",
        icc=0.05,
        cluster_size_mean=1000.0,
        cluster_size_cv=math.sqrt(2 / 9) / (5 / 3 - 0.5),
        burn_in_share=0.3,
    ).duration_days
    assert batching.guardrail_power[0].days_to_clear == clear
    assert clear > batching.power.duration_days  # the guardrail is the binding one here
    assert batching.experiment_days == clear == batching.phases[1].min_days
    assert batching.sequence_n_planned == 3 * clear  # 3 region x windows a day


def test_monitoring_interval_is_wider_than_fixed_horizon(batching: ExperimentPlan) -> None:
    # cxagent.stats.sequential: about 1.55 times 1.96 se at n_planned for alpha = 0.05.
    assert batching.sequence_width_factor == pytest.approx(1.55, abs=0.01)
    assert 0.0 < batching.sequence_power_at_mde < batching.power.achieved_power
    assert batching.sequence_power_at_mde < batching.sequence_power_at_expected < 1.0


# --- phases ------------------------------------------------------------------------------------


def test_phases_ramp_10_50_100_with_growing_sizes(batching: ExperimentPlan) -> None:
    phases = batching.phases
    assert [p.exposure for p in phases] == [0.10, 0.50, 1.00]
    assert [p.treated_share for p in phases] == pytest.approx([0.10, 0.50, 0.95])
    sizes = [p.treated_orders_per_day for p in phases]
    assert sizes == pytest.approx([300, 1500, 2850]) and sizes == sorted(set(sizes))
    safety = plan_power(
        "cx_score",
        baseline=70.0,
        sd=30.0,
        mde=-12.0,  # the fix backfiring by its whole expected effect
        orders_per_day=3000,
        unit="region_x_window",
        icc=0.05,
        cluster_size_mean=1000.0,
        cluster_size_cv=math.sqrt(2 / 9) / (5 / 3 - 0.5),
        burn_in_share=0.3,
        treated_share=0.1,
        min_days=1,
    ).duration_days
    assert phases[0].min_days == batching.safety_days == safety
    assert phases[2].min_days == 14 and "5% holdback" in phases[2].name
    srm = f"SRM p < {format_number(SRM_THRESHOLD)}"
    for phase in phases:
        assert "no guardrail 'breached'" in phase.go
        assert srm in phase.rollback and "any guardrail 'breached'" in phase.rollback
    # only the experiment phase must show the benefit; the others must show no harm
    assert phases[1].go[0] == "lower bound of the primary's 95% always-valid interval > 0"
    assert "upper bound of the primary's 95% always-valid interval >= 0" in phases[0].go[0]
    assert "against the holdback" in phases[2].go[0]


def test_safety_phase_falls_back_to_a_day_when_it_cannot_be_powered() -> None:
    # The MDE equals the expected effect, so the 10% split needs far more control stores.
    plan = build_plan(action("promise"), cx(mde=12.0), [cost()], context(icc_store=0.1))
    assert plan.safety_days is None
    assert plan.phases[0].min_days == 1
    assert "cannot be powered" in plan.phases[0].purpose


# --- markdown ----------------------------------------------------------------------------------


def test_markdown_has_every_section_and_the_key_numbers(batching: ExperimentPlan) -> None:
    md = batching.to_markdown()
    positions = [md.index(h) for h in HEADINGS]
    assert positions == sorted(positions)
    assert "- Incident: `inc-042`" in md
    assert (
        "Reducing batching in SF grocery dinner will raise the CX Score by about 12 points "
        "without raising cost per delivery by more than 0.5 USD." in md
    )
    pw = batching.power
    rows = {
        "Orders per arm if orders were independent": format_number(pw.orders_per_arm_iid),
        "Design effect": f"{format_number(pw.design_effect)} (ICC 0.05)",
        "CUPED factor": format_number(pw.cuped_factor),
        "Analysed orders per arm": f"{format_number(pw.orders_control)} control / "
        f"{format_number(pw.orders_treatment)} treatment",
        "Clusters per arm": f"{format_number(pw.clusters_control or 0)} control",
        "Duration for the primary": f"{format_number(pw.duration_days)} days",
        "Experiment phase": f"{format_number(batching.experiment_days)} days",
    }
    for label, value in rows.items():
        assert f"| {label} | {value}" in md, label
    assert "| Minimum detectable effect | 6 points, half of the expected 12 points" in md
    assert "| guardrail | cost per delivery (`cost_per_delivery`) |" in md
    assert "margin 0.5 USD (increase)" in md
    for phase in batching.phases:
        assert f"| {phase.name} | " in md
        assert f"| {format_number(phase.treated_orders_per_day)} | {phase.min_days} |" in md
    assert f"n_planned = {format_number(batching.sequence_n_planned)}" in md
    assert f"threshold p < {format_number(SRM_THRESHOLD)}" in md
    assert "- [ ] **daily, data freshness**" in md
    assert "CX Score in SF grocery dinner against its baseline 70 points" in md
    assert "restore the pre-experiment settings of `max_batch_size`" in md


def test_markdown_names_the_rollback_change_and_secondary_metrics() -> None:
    late = MetricSpec(
        "late_rate", "rate", 0.2, "decrease_is_good", expected_effect=-0.03, label="late rate"
    )
    plan = build_plan(
        action(rollback_change_id="chg-17"),
        cx(),
        [cost()],
        context(incident_id=None),
        secondary=[late],
    )
    md = plan.to_markdown()
    assert "What to revert: revert change `chg-17`." in md
    assert "| secondary | late rate (`late_rate`) | rate | 0.2 | - | lower | -0.03 | - |" in md
    assert "- Incident: none" in md


@pytest.mark.parametrize(
    ("value", "text"),
    [(3000, "3,000"), (0.5, "0.5"), (41.6612, "41.66"), (12345.6, "12,346"), (7.0, "7")],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"guardrails": [cost(), cost(name="dasher_minutes", margin=-0.1)]},
            "guardrails[1].margin: must be > 0, got -0.1",
        ),
        ({"guardrails": [cost(margin=None)]}, "guardrails[0].margin: is required"),
        ({"guardrails": [cost(sd=None)]}, "guardrails[0].sd: is required for a mean"),
        ({"guardrails": []}, "guardrails: at least one guardrail is required"),
        ({"primary": cx(sd=None)}, "primary.sd: is required for a mean"),
        ({"primary": cx(expected_effect=-3.0)}, "primary.expected_effect: must be > 0"),
        ({"primary": cx(expected_effect=None)}, "primary.expected_effect: is required"),
        ({"primary": cx(mde=-1.0)}, "primary.mde: must be > 0"),
        ({"primary": cx(margin=1.0)}, "primary.margin: only guardrails take a margin"),
        ({"primary": cx(kind="ratio")}, "primary.kind: must be one of rate, mean"),
        ({"primary": cx(kind="rate", sd=None)}, "primary.baseline: a rate must be in (0, 1)"),
        ({"secondary": [cost()]}, "secondary[0].margin: only guardrails take a margin"),
        ({"action": action(kind="pricing")}, "action.kind: must be one of"),
        ({"action": action(cause="weather")}, "action.cause: must be one of"),
        ({"action": action(scope={})}, "action.scope: must be a non-empty mapping"),
        (
            {"action": action(scope={"daypart": "brunch"})},
            "action.scope['daypart']: must be one of breakfast",
        ),
        ({"context": context(icc_store=1.5)}, "context.icc_store: must be in [0, 1]"),
        ({"context": context(window_hours=0)}, "context.window_hours: must be in (0, 24]"),
        ({"context": context(stores_in_scope=1.0)}, "context.stores_in_scope: must be an int"),
        ({"context": context(power=0.01)}, "context.power: must be in (alpha=0.05, 1)"),
        ({"context": context(cuped_correlation=1.0)}, "context.cuped_correlation"),
        ({"context": context(holdback_share=0.2)}, "context.holdback_share: must be in (0, 0.1)"),
        (
            {"action": action("store_ops"), "context": context(icc_store=0.2)},
            "context.stores_in_scope: 32 stores cannot reach the target power",
        ),
    ],
)
def test_validation_names_the_field(args: dict[str, Any], message: str) -> None:
    request: dict[str, Any] = {
        "action": action(),
        "primary": cx(),
        "guardrails": [cost()],
        "context": context(),
    }
    request.update(args)
    with pytest.raises(ValueError) as info:
        build_plan(**request)
    assert str(info.value).startswith(message), str(info.value)


# --- writing -----------------------------------------------------------------------------------


def test_write_markdown_writes_the_rendering_and_no_temp_file(
    batching: ExperimentPlan, tmp_path: Path
) -> None:
    target = tmp_path / "plans" / "plan.md"
    assert write_markdown(batching, target) == target
    assert target.read_text(encoding="utf-8") == batching.to_markdown()
    assert sorted(p.name for p in target.parent.iterdir()) == ["plan.md"]


def test_failed_render_keeps_the_target(
    batching: ExperimentPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "plan.md"
    target.write_text("previous plan\n", encoding="utf-8")

    def broken(self: ExperimentPlan) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(ExperimentPlan, "to_markdown", broken)
    with pytest.raises(RuntimeError, match="render failed"):
        write_markdown(batching, target)
    assert target.read_text(encoding="utf-8") == "previous plan\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.md"]


def test_failed_replace_keeps_the_target_and_cleans_up(
    batching: ExperimentPlan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "plan.md"
    target.write_text("previous plan\n", encoding="utf-8")
    written: list[str] = []

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        written.append(Path(src).read_text(encoding="utf-8"))
        assert Path(src).parent == target.parent  # the temporary file sits next to the target
        raise OSError("disk full")

    monkeypatch.setattr(plan_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_markdown(batching, target)
    assert written == [batching.to_markdown()]
    assert target.read_text(encoding="utf-8") == "previous plan\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.md"]
