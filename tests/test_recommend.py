"""Recommendations: engine fixes, what-if estimators against the engine's exact counterfactual,
the action library, ranking, plans from measured inputs, and the CLI."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.data.scenario.draws import draw_day
from cxagent.data.scenario.fixes import Fix, fix_effect, fix_levers
from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import ScenarioSpec, Scope, parse_spec
from cxagent.data.scenario.world import build_world
from cxagent.engine.connection import connect
from cxagent.incidents import detect_incidents
from cxagent.metrics.definitions import DEFAULT_COMPONENTS
from cxagent.rca.investigate import investigate_report
from cxagent.rca.orders import item_lines, order_frame
from cxagent.recommend.actions import (
    CATALOGUE,
    Action,
    logged_change,
    low_stock_skus,
    peak_daypart,
    store_prep_factors,
    supply_shortfall,
)
from cxagent.recommend.planning import linearised_cx, measure, plan_for
from cxagent.recommend.recommend import (
    MONITOR,
    Recommendation,
    _clean_baseline,
    net_benefit,
    recommend,
)
from cxagent.recommend.whatif import (
    FIELDS,
    Estimate,
    batching_estimate,
    metrics_of,
    order_stats,
    promise_estimate,
    scored_components,
    supply_estimate,
    suppress_estimate,
)

CHANGE = dt.datetime(2024, 3, 18)
SLICE = {"region": "SF", "category": "grocery"}


def spec(**over: Any) -> ScenarioSpec:
    raw: dict[str, Any] = {
        "name": "whatif",
        "seed": 11,
        "start": "2024-03-04",
        "days": 18,
        "orders_per_day": 4000,
        "regions": ["SF", "NYC"],
        "background_changes": 1,
        "interventions": [
            {
                "cause": "batching_policy",
                "start": CHANGE.isoformat(),
                "scope": {"category": "grocery"},
                "magnitude": 1.0,
            },
            {
                "cause": "eta_model_bias",
                "start": CHANGE.isoformat(),
                "scope": {"region": "SF"},
                "magnitude": 0.6,
                "logged": False,
            },
        ],
    }
    raw.update(over)
    return parse_spec(raw)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScenarioSpec, Path]:
    s = spec()
    out = tmp_path_factory.mktemp("whatif") / "data"
    generate(s, out, workers=1)
    return s, out


@pytest.fixture(scope="module")
def frame(scenario: tuple[ScenarioSpec, Path]) -> pd.DataFrame:
    _, root = scenario
    f = order_frame(
        connect(root),
        SLICE,
        CHANGE - dt.timedelta(days=14),
        CHANGE + dt.timedelta(days=4),
        outcomes=True,
    )
    f["after"] = f["order_time"] >= CHANGE
    return f


def truth(s: ScenarioSpec, **fix: Any) -> dict[str, dict[str, float]]:
    scope = Scope(region=["SF"], category=["grocery"])
    return fix_effect(s, Fix(start=CHANGE, scope=scope, **fix), CHANGE).metrics()


# --- the engine's fixes ----------------------------------------------------------------------


def test_fix_validation_names_the_missing_setting() -> None:
    with pytest.raises(ValidationError, match="max_orders_per_trip"):
        Fix(kind="batching", start=CHANGE)
    with pytest.raises(ValidationError, match="intervention"):
        Fix(kind="rollback", start=CHANGE)
    with pytest.raises(ValidationError, match="supply_uplift"):
        Fix(kind="supply_boost", start=CHANGE, supply_uplift=-0.1)


def test_restoring_batching_is_rolling_the_change_back(scenario: tuple[ScenarioSpec, Path]) -> None:
    s, _ = scenario
    restore = truth(s, kind="batching", max_orders_per_trip=2, utilisation_trigger=0.85)
    rollback = truth(s, kind="rollback", intervention=0)
    assert restore["delta"]["cx_score"] == pytest.approx(rollback["delta"]["cx_score"])
    assert restore["delta"]["cx_score"] > 2.0  # batching hurt, undoing it helps
    assert restore["delta"]["orders_per_trip"] < 0  # at a price in efficiency
    assert restore["delta"]["dasher_min_per_delivery"] > 0


def test_a_fix_touches_only_its_window_and_scope(scenario: tuple[ScenarioSpec, Path]) -> None:
    s, _ = scenario
    world = build_world(s)
    fix = Fix(
        kind="promise_buffer",
        start=dt.datetime(2024, 3, 5, 12),
        end=dt.datetime(2024, 3, 6),
        scope=Scope(region=["SF"]),
        minutes=5,
    )
    day = draw_day(s, world, 1)  # 2024-03-05: the fix starts at noon
    added = fix_levers(s, world, day, [fix]).promise_add_s
    touched = (day.region == world.regions.index("SF")) & (day.t_s >= 12 * 3600)
    assert np.all(added[touched] == 300.0) and np.all(added[~touched] == 0.0)
    later = draw_day(s, world, 2)
    assert not fix_levers(s, world, later, [fix]).promise_add_s.any()


# --- estimators against the exact counterfactual ----------------------------------------------


def test_order_stats_sum_to_the_engine_metrics(frame: pd.DataFrame) -> None:
    stats = order_stats(frame)
    assert stats.shape == (len(FIELDS), len(frame))
    m = metrics_of(stats.sum(axis=1))
    assert 0 < m["cx_score"] < 100
    assert m["orders_per_trip"] >= 1.0
    assert m["promised_min"] == pytest.approx(frame["promised_min"].mean())


def test_batching_estimate_recovers_the_engine_effect(
    scenario: tuple[ScenarioSpec, Path], frame: pd.DataFrame
) -> None:
    s, _ = scenario
    est = batching_estimate(frame, "baseline", cap=2, n_bootstrap=60)
    exact = truth(s, kind="batching", max_orders_per_trip=2, utilisation_trigger=0.85)["delta"]
    assert est.orders == int(frame["after"].sum())
    assert abs(est.delta["cx_score"] - exact["cx_score"]) < 2.0
    assert est.low["cx_score"] < est.delta["cx_score"] < est.high["cx_score"]
    rel = est.efficiency_change
    assert rel < 0  # fewer orders per trip: less efficient
    assert abs(est.delta["orders_per_trip"] - exact["orders_per_trip"]) < 0.05


def test_fragile_only_batching_is_estimated_on_its_own_orders(
    scenario: tuple[ScenarioSpec, Path], frame: pd.DataFrame
) -> None:
    s, _ = scenario
    fragile = frame["fragile"].to_numpy(float) > 0
    assert 0.1 < fragile.mean() < 0.95  # grocery baskets: some hold a fragile SKU
    part = batching_estimate(frame, "baseline", cap=2, only=fragile, n_bootstrap=40)
    full = batching_estimate(frame, "baseline", cap=2, n_bootstrap=40)
    exact = truth(
        s, kind="batching", max_orders_per_trip=2, utilisation_trigger=0.85, fragile_only=True
    )["delta"]
    assert abs(part.delta["cx_score"] - exact["cx_score"]) < 2.0
    assert 0 < part.delta["cx_score"] < full.delta["cx_score"]
    assert full.efficiency_change < part.efficiency_change < 0


def test_peak_daypart_batching_is_judged_on_the_whole_slice(
    scenario: tuple[ScenarioSpec, Path], frame: pd.DataFrame
) -> None:
    s, _ = scenario
    peak = peak_daypart(frame)
    assert peak in ("lunch", "dinner")  # the busiest couriers
    only = (frame["daypart"] == peak).to_numpy()
    part = batching_estimate(frame, "baseline", cap=2, only=only, n_bootstrap=40)
    fix = Fix(
        kind="batching",
        start=CHANGE,
        scope=Scope(region=["SF"], category=["grocery"], daypart=[peak]),
        max_orders_per_trip=2,
        utilisation_trigger=0.85,
    )
    whole = Scope(region=["SF"], category=["grocery"])
    exact = fix_effect(s, fix, CHANGE, measure=whole).metrics()["delta"]
    assert part.orders == int(frame["after"].sum())  # every order of the slice
    assert abs(part.delta["cx_score"] - exact["cx_score"]) < 2.0
    assert fix_effect(s, fix, CHANGE).orders < fix_effect(s, fix, CHANGE, measure=whole).orders


def test_stop_batching_gains_more_and_costs_more(frame: pd.DataFrame) -> None:
    restore = batching_estimate(frame, "baseline", cap=2, n_bootstrap=30)
    stop = batching_estimate(frame, "none", n_bootstrap=30)
    assert stop.delta["orders_per_trip"] < restore.delta["orders_per_trip"]
    assert stop.efficiency_change < restore.efficiency_change


def test_a_cap_no_trip_exceeds_changes_nothing(frame: pd.DataFrame) -> None:
    cap = int(frame["trip_size"].max())
    est = batching_estimate(frame, "cap_only", cap=cap, n_bootstrap=20)
    assert est.delta["cx_score"] == pytest.approx(0.0, abs=1e-9)
    assert est.delta["orders_per_trip"] == pytest.approx(0.0, abs=1e-9)


def test_batching_estimate_needs_a_cap(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="cap"):
        batching_estimate(frame, "baseline")


def test_promise_buffer_estimate_recovers_the_engine_effect(
    scenario: tuple[ScenarioSpec, Path], frame: pd.DataFrame
) -> None:
    s, _ = scenario
    est = promise_estimate(frame, 4.0, n_bootstrap=40)
    exact = truth(s, kind="promise_buffer", minutes=4.0)["delta"]
    assert est.delta["promised_min"] == pytest.approx(4.0)
    assert abs(est.delta["on_time_rate"] - exact["on_time_rate"]) < 0.01
    assert abs(est.delta["cx_score"] - exact["cx_score"]) < 1.5
    assert est.delta["cancellation_rate"] < 0  # later promises: fewer late cancellations


def test_a_zero_shift_changes_nothing(frame: pd.DataFrame) -> None:
    est = promise_estimate(frame, 0.0, n_bootstrap=20)
    for k, v in est.delta.items():
        assert v == pytest.approx(0.0, abs=1e-9), k


def test_supply_estimate_recovers_the_engine_effect(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    s = spec(
        interventions=[
            {
                "cause": "dasher_shortage",
                "start": CHANGE.isoformat(),
                "scope": {"region": "NYC"},
                "magnitude": 0.6,
            }
        ]
    )
    root = tmp_path_factory.mktemp("supply") / "data"
    generate(s, root, workers=1)
    where = {"region": "NYC", "category": "grocery"}
    f = order_frame(
        connect(root),
        where,
        CHANGE - dt.timedelta(days=14),
        CHANGE + dt.timedelta(days=4),
        outcomes=True,
    )
    f["after"] = f["order_time"] >= CHANGE
    uplift = supply_shortfall(f)
    assert 0.1 < uplift <= 0.5  # the load per dasher grew with the shortage
    est = supply_estimate(f, uplift, n_bootstrap=40)
    scope = Scope(region=["NYC"], category=["grocery"])
    exact = fix_effect(
        s, Fix(kind="supply_boost", start=CHANGE, scope=scope, supply_uplift=uplift), CHANGE
    )
    truth_delta = exact.metrics()["delta"]
    assert est.delta["cx_score"] > 2.0
    assert abs(est.delta["cx_score"] - truth_delta["cx_score"]) < 2.0
    assert abs(est.delta["customer_wait_min"] - truth_delta["customer_wait_min"]) < 1.0
    assert est.efficiency_change == pytest.approx(1 / (1 + uplift) - 1)
    assert est.delta["promised_min"] == pytest.approx(0.0, abs=1e-9)  # promises untouched
    with pytest.raises(ValueError, match="uplift"):
        supply_estimate(f, 0.0)


def test_hiding_low_stock_skus_recovers_the_engine_effect(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    where = {"region": "NYC", "category": "convenience"}
    s = spec(
        interventions=[
            {
                "cause": "inventory_drop",
                "start": CHANGE.isoformat(),
                "scope": where,
                "magnitude": 0.5,
            }
        ]
    )
    root = tmp_path_factory.mktemp("stock") / "data"
    generate(s, root, workers=1)
    engine = connect(root)
    start, end = CHANGE - dt.timedelta(days=14), CHANGE + dt.timedelta(days=4)
    f = order_frame(engine, where, start, end, outcomes=True)
    f["after"] = f["order_time"] >= CHANGE
    lines = item_lines(engine, where, start, end)
    assert lines is not None and set(lines.columns) >= {"order_id", "sku_id", "short", "value"}
    hidden = low_stock_skus(lines, f)
    assert hidden  # an in-stock drop leaves SKUs short on more than 1 line in 10
    est = suppress_estimate(f, lines, hidden, n_bootstrap=40)
    scope = Scope(region=["NYC"], category=["convenience"])
    exact = fix_effect(
        s, Fix(kind="sku_suppression", start=CHANGE, scope=scope, hidden_skus=hidden), CHANGE
    )
    truth_delta = exact.metrics()["delta"]
    assert est.delta["item_accuracy"] == pytest.approx(truth_delta["item_accuracy"], abs=0.005)
    assert abs(est.delta["cx_score"] - truth_delta["cx_score"]) < 1.5
    assert est.delta["cx_score"] > 0
    assert -1.0 < est.efficiency_change < 0  # the cost is the hidden lines' sales
    # the factual world is untouched by the lever
    assert exact.factual.items > exact.with_fix.items


# --- linearisation -----------------------------------------------------------------------------


def test_linearised_cx_mean_is_the_score_and_its_variance_the_delta_method(
    frame: pd.DataFrame,
) -> None:
    stats = order_stats(frame)
    cx, values = linearised_cx(stats)
    assert cx == pytest.approx(metrics_of(stats.sum(axis=1))["cx_score"])
    assert values.mean() == pytest.approx(cx)
    # the delta-method standard error agrees with a bootstrap of orders
    rng = np.random.default_rng(0)
    n = stats.shape[1]
    boot = [metrics_of(stats[:, rng.integers(0, n, n)].sum(axis=1))["cx_score"] for _ in range(200)]
    assert np.std(values, ddof=1) / np.sqrt(n) == pytest.approx(np.std(boot), rel=0.2)


# --- the library and the ranking ----------------------------------------------------------------


def test_catalogue_links_every_cause() -> None:
    causes = {t.cause for t in CATALOGUE.values()}
    assert {"batching_policy", "prep_time_drift", "dasher_shortage"} <= causes
    assert {"inventory_drop", "eta_model_bias"} <= causes
    for t in CATALOGUE.values():
        assert t.description and t.complexity in ("low", "medium", "high") and t.parameters


def test_logged_change_reads_scope_and_parameters() -> None:
    row = {
        "change_id": "chg-001",
        "name": "batching_policy",
        "scope_regions": [],
        "scope_categories": ["grocery"],
        "scope_dayparts": ["dinner", "lunch"],
        "parameters_before": '{"max_orders_per_trip": 2}',
        "parameters_after": "not json",
    }
    c = logged_change(row)
    assert c.scope == {"category": "grocery", "daypart": ["dinner", "lunch"]}
    assert c.before == {"max_orders_per_trip": 2} and c.after == {}


def test_prep_drift_is_found_per_store() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    store = rng.integers(1, 5, n)
    after = rng.random(n) < 0.5
    prep = rng.gamma(9.0, 1.5, n) * np.where(after & (store == 2), 1.4, 1.0)
    f = pd.DataFrame({"store_id": store, "after": after, "prep_min": prep})
    factors = store_prep_factors(f)
    assert list(factors) == [2]
    assert factors[2] == pytest.approx(1.4, abs=0.08)


def test_net_benefit_prices_efficiency() -> None:
    e = Estimate(
        100,
        {"cx_score": 60.0, "deliveries_per_dasher_hour": 2.0},
        {"cx_score": 10.0, "deliveries_per_dasher_hour": -0.1},
        {},
        {},
        0,
    )
    assert e.efficiency_change == pytest.approx(-0.05)
    assert net_benefit(e, 1.0) == pytest.approx(5.0)
    assert net_benefit(e, 0.0) == pytest.approx(10.0)


def test_action_titles_read_as_sentences() -> None:
    a = Action(
        "reduce_batching",
        "batching_policy",
        {"region": "SF", "category": "grocery"},
        {"max_orders_per_trip": 2, "utilisation_trigger": 0.85},
    )
    assert a.title.startswith("Reduce batching in SF grocery (at most 2 orders per trip")
    assert a.gerund.startswith("Reducing batching (at most 2")
    assert a.as_dict()["kind"] == "dispatch"


# --- end to end on the demo story ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_recommendations(demo_dataset: tuple[Path, dict[str, Any]]) -> Any:
    root, _ = demo_dataset
    engine = connect(root)
    reports = detect_incidents(root)
    sf = [r for r in reports if r.draft.slice.get("region") == "SF"]
    assert sf, "the demo's SF grocery incident is detected"
    inv = investigate_report(engine, sf[0], n_bootstrap=40)
    return recommend(engine, inv, n_bootstrap=40), sf[0]


def test_demo_top_fix_is_reducing_batching_in_scope(demo_recommendations: Any) -> None:
    recs, report = demo_recommendations
    top = recs.top
    assert top is not None
    assert top.action.name == "reduce_batching"
    assert top.action.scope == recs.slice
    e = top.estimate
    assert 6.0 < e.delta["cx_score"] < 18.0  # the design's "about +12 CX points"
    assert -0.10 < e.efficiency_change < -0.02  # "about -5% efficiency"
    assert e.low["cx_score"] < e.delta["cx_score"] < e.high["cx_score"]
    assert [p["action"] for p in recs.tradeoff()][0] == top.action.title


def test_demo_plan_has_every_section(demo_recommendations: Any) -> None:
    recs, report = demo_recommendations
    plan = plan_for(recs.frame, recs.top, incident_id=report.incident_id)
    md = plan.to_markdown()
    for section in (
        "## Hypothesis",
        "## Metrics",
        "## Randomisation unit",
        "## Sample size and duration",
        "## Rollout phases",
        "## Monitoring",
        "## Rollback",
    ):
        assert section in md
    assert "switchback" in md  # batching shares couriers between arms
    assert "cx_score" in md and "dasher_min_per_delivery" in md


def test_a_sampled_frame_measures_the_slices_whole_order_volume(demo_recommendations: Any) -> None:
    recs, _ = demo_recommendations
    whole = measure(recs.frame)
    half = recs.frame.iloc[::2].copy()
    half.attrs["sample"] = (len(half), len(recs.frame))  # as the engine's cap reports it
    sampled = measure(half)
    assert sampled.orders_per_day == pytest.approx(whole.orders_per_day, rel=0.02)
    assert measure(recs.frame.iloc[::2].copy()).orders_per_day < 0.6 * whole.orders_per_day


def test_plan_refuses_a_fix_without_an_estimate(demo_recommendations: Any) -> None:
    recs, _ = demo_recommendations
    bare = Recommendation(
        Action("peak_pay", "dasher_shortage", {"region": "SF"}, {"supply_uplift": 0.1}),
        None,
        float("-inf"),
        "no estimate",
    )
    with pytest.raises(ValueError, match="recommendation: peak_pay"):
        plan_for(recs.frame, bare)


def test_weak_evidence_means_monitor(demo_dataset: tuple[Path, dict[str, Any]]) -> None:
    root, _ = demo_dataset
    engine = connect(root)
    reports = detect_incidents(root)
    for report in reports:
        inv = investigate_report(engine, report, n_bootstrap=30)
        if inv.causes and inv.causes[0].cause == "normal_variance":
            recs = recommend(engine, inv)
            assert recs.items == [] and recs.message and recs.message.startswith(MONITOR)
            return
    pytest.fail("the demo has a store-level incident that nothing explains")


def test_cli_plan_writes_markdown_and_names_bad_options(
    demo_recommendations: Any, demo_dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = demo_dataset
    _, report = demo_recommendations
    runner = CliRunner()
    out = tmp_path / "plan.md"
    args = ["plan", "--data", str(root), "--incident", report.incident_id, "--out", str(out)]
    result = runner.invoke(app, [*args, "--bootstrap", "20"])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Experiment plan: reduce_batching")
    bad = runner.invoke(app, ["plan", "--data", str(root), "--incident", "inc-nope"])
    assert bad.exit_code != 0 and "--incident" in bad.output
    rank = runner.invoke(app, [*args, "--rank", "99", "--bootstrap", "20"])
    assert rank.exit_code != 0 and "--rank" in rank.output


def test_cli_recommend_json(
    demo_recommendations: Any, demo_dataset: tuple[Path, dict[str, Any]]
) -> None:
    root, _ = demo_dataset
    _, report = demo_recommendations
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--data",
            str(root),
            "--incident",
            report.incident_id,
            "--json",
            "--bootstrap",
            "20",
            "--exchange-rate",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)["incidents"][0]
    assert d["exchange_rate"] == 0
    gains = [r["estimate"]["cx_gain"] for r in d["recommendations"] if r["estimate"]]
    assert gains == sorted(gains, reverse=True)  # at rate 0 the ranking is by CX gain alone


def test_recommendations_are_strict_json(demo_recommendations: Any) -> None:
    recs, _ = demo_recommendations
    text = json.dumps(recs.as_dict(), allow_nan=False)  # JSON has no NaN
    assert '"tradeoff"' in text


def test_unmeasured_components_are_left_out(frame: pd.DataFrame) -> None:
    full = scored_components(frame)
    assert [c.name for c in full] == [c.name for c in DEFAULT_COMPONENTS]
    lacking = frame.copy()
    lacking.attrs = {"missing": ["support", "refunded"]}
    names = [c.name for c in scored_components(lacking)]
    assert "support_contact" not in names and "refund" not in names and "on_time" in names
    stats = order_stats(frame).sum(axis=1)
    # the score of the measured components, renormalised: not the full one with perfect zeros
    assert metrics_of(stats, scored_components(lacking))["cx_score"] != pytest.approx(
        metrics_of(stats)["cx_score"]
    )


def test_baseline_ends_at_a_matched_change(frame: pd.DataFrame) -> None:
    class Matched:
        def __init__(self, started_at: dt.datetime) -> None:
            self.cause = "batching_policy"
            self.change = type("Change", (), {"started_at": started_at})()

    early = CHANGE - dt.timedelta(days=2)
    cleaned = _clean_baseline(frame, [Matched(early)], CHANGE)
    before = cleaned[~cleaned["after"]]
    assert before["order_time"].max() < early
    assert int(cleaned["after"].sum()) == int(frame["after"].sum())  # the window is kept
    assert cleaned.attrs == frame.attrs
    untouched = _clean_baseline(frame, [Matched(CHANGE + dt.timedelta(hours=1))], CHANGE)
    assert len(untouched) == len(frame)
