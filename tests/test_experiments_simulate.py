"""Simulated experiments of ``cxagent.experiments.simulate``: the rows add up to the scenario's
own orders, the fix touches only the treated units, assignment is deterministic and nested,
storage round-trips, and bad input names the parameter, file or column."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxagent.data.scenario.draws import draw_day
from cxagent.data.scenario.fixes import Fix, fix_levers
from cxagent.data.scenario.generator import _context
from cxagent.data.scenario.simulate import simulate_day
from cxagent.data.scenario.spec import DEMO_SPEC, ScenarioSpec, Scope, load_spec
from cxagent.data.scenario.strength import DAY_S, in_window_and_scope
from cxagent.data.scenario.truth import order_stats
from cxagent.errors import DataValidationError
from cxagent.experiments.simulate import (
    COLUMNS,
    CONTROL,
    TREATMENT,
    ExperimentData,
    assignment_uniform,
    read_experiment,
    simulate_experiment,
    switchback_windows,
    write_experiment,
)
from cxagent.metrics.definitions import STAT_FIELDS

START = dt.datetime(2024, 1, 6)  # the demo's data end on 2024-01-05; its incident persists
SF_GROCERY_DINNER = Scope(region=["SF"], category=["grocery"], daypart=["dinner"])


@pytest.fixture(scope="module")
def spec() -> ScenarioSpec:
    return load_spec(DEMO_SPEC).model_copy(update={"days": 50})


def restore_batching(scope: Scope = SF_GROCERY_DINNER) -> Fix:
    return Fix(
        kind="batching", start=START, scope=scope, max_orders_per_trip=2, utilisation_trigger=0.85
    )


def switchback(spec: ScenarioSpec, fix: Fix, **kwargs: object) -> ExperimentData:
    options: dict[str, object] = {
        "phases": [(0.5, 3)],
        "window_hours": 1.0,
        "burn_in_minutes": 10.0,
    }
    options.update(kwargs)
    return simulate_experiment(spec, fix, START, **options)  # type: ignore[arg-type]


def stat_sums(frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(frame[list(STAT_FIELDS)].to_numpy(np.float64).sum(axis=0))


# --- layout and assignment ------------------------------------------------------------------


def test_switchback_windows_follow_the_scope_hours() -> None:
    hour = 3600.0
    assert switchback_windows(SF_GROCERY_DINNER, 2.0) == (
        (16 * hour, 18 * hour),
        (18 * hour, 20 * hour),
        (20 * hour, 21 * hour),
    )
    assert len(switchback_windows(SF_GROCERY_DINNER, 1.0)) == 5
    assert len(switchback_windows(Scope(), 2.0)) == 12
    # late night runs 21:00-04:59; simulated days are independent, so it is cut at midnight
    late = switchback_windows(Scope(daypart=["late_night"]), 2.0)
    assert late == (
        (0.0, 2 * hour),
        (2 * hour, 4 * hour),
        (4 * hour, 5 * hour),
        (21 * hour, 23 * hour),
        (23 * hour, 24 * hour),
    )


def test_assignment_draw_is_a_deterministic_uniform() -> None:
    draws = np.array([assignment_uniform(7, f"store|{i}") for i in range(4000)])
    assert assignment_uniform(7, "store|1") == assignment_uniform(7, "store|1")
    assert assignment_uniform(7, "store|1") != assignment_uniform(8, "store|1")
    assert ((draws >= 0.0) & (draws < 1.0)).all()
    # uniform: each tenth holds about 400 of 4,000 (binomial sd 19)
    counts = np.histogram(draws, bins=10, range=(0.0, 1.0))[0]
    assert np.all(np.abs(counts - 400) < 100)


def test_same_seed_same_data_and_another_seed_another_assignment(spec: ScenarioSpec) -> None:
    fix = restore_batching()
    a = switchback(spec, fix, seed=3)
    b = switchback(spec, fix, seed=3)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    c = switchback(spec, fix, seed=4)
    arms_a = a.frame.set_index("unit")["arm"]
    arms_c = c.frame.set_index("unit")["arm"]
    assert (arms_a != arms_c.reindex(arms_a.index)).any()


def test_switchback_arms_nest_across_shares(spec: ScenarioSpec) -> None:
    fix = restore_batching()
    ten = switchback(spec, fix, phases=[(0.1, 5)], seed=11).frame
    fifty = switchback(spec, fix, phases=[(0.5, 5)], seed=11).frame
    treated_10 = set(ten.loc[ten["arm"] == TREATMENT, "unit"])
    treated_50 = set(fifty.loc[fifty["arm"] == TREATMENT, "unit"])
    assert treated_10, "some region x window is treated at 10% over 25 windows"
    assert treated_10 < treated_50
    assert set(ten["unit"]) == set(fifty["unit"])  # the same clusters, only the arms differ


def test_store_assignment_is_complete_nested_and_fixed_within_a_phase(
    spec: ScenarioSpec,
) -> None:
    fix = Fix(kind="promise_buffer", start=START, scope=Scope(category=["grocery"]), minutes=5.0)
    data = simulate_experiment(
        spec, fix, START, phases=[(0.1, 2), (0.5, 2), (0.95, 2)], unit="store", seed=5
    )
    frame = data.frame
    assert (frame.groupby(["phase", "unit"])["arm"].nunique() == 1).all()
    treated = [
        set(frame.loc[(frame["phase"] == p) & (frame["arm"] == TREATMENT), "unit"])
        for p in range(3)
    ]
    assert treated[0] < treated[1] < treated[2]
    stores = data.meta.units_in_scope
    assert stores == frame["unit"].nunique()
    for p, share in enumerate((0.1, 0.5, 0.95)):
        assert len(treated[p]) == round(share * stores)
        assert data.meta.design_shares[p] == pytest.approx(len(treated[p]) / stores)
        assert (frame.loc[frame["phase"] == p, "treated_share"] == len(treated[p]) / stores).all()
    assert frame["window_start"].eq("").all()


# --- the data -------------------------------------------------------------------------------


def test_rows_add_up_to_the_scenarios_orders_in_scope(spec: ScenarioSpec) -> None:
    """A/A with no burn-in: every order in scope is in exactly one row, and the sums equal the
    scenario's own factual statistics of those orders."""
    fix = restore_batching()
    data = switchback(spec, fix, aa=True, burn_in_minutes=0.0, phases=[(0.5, 2)])
    ctx = _context(spec)
    expected = np.zeros(len(STAT_FIELDS))
    for day in (33, 34):  # 2024-01-06 and -07
        d = draw_day(spec, ctx.world, day)
        outcome = simulate_day(ctx.world, ctx.supply, d, fix_levers(spec, ctx.world, d, []))
        scope = in_window_and_scope(
            spec,
            ctx.world,
            fix,
            t_abs=day * DAY_S + d.t_s,
            region=d.region,
            daypart=d.daypart,
            category=d.category,
            store=d.store,
        )
        expected += order_stats(d, outcome)[:, scope].sum(axis=1)
    np.testing.assert_allclose(stat_sums(data.frame), expected, rtol=1e-12)
    assert data.frame["orders_assigned"].sum() == expected[0]
    assert list(data.frame.columns) == list(COLUMNS)
    assert set(data.frame["phase_day"]) == {0, 1}
    assert set(data.frame["date"]) == {"2024-01-06", "2024-01-07"}


def test_burn_in_orders_are_counted_but_not_analysed(spec: ScenarioSpec) -> None:
    frame = switchback(spec, restore_batching(), burn_in_minutes=10.0).frame
    np.testing.assert_array_equal(
        frame["orders"] + frame["orders_burn_in"], frame["orders_assigned"]
    )
    share = frame["orders_burn_in"].sum() / frame["orders_assigned"].sum()
    assert 0.08 < share < 0.30  # 10 of 60 minutes, dinner demand rising through the hour


def test_the_fix_changes_treated_clusters_only(spec: ScenarioSpec) -> None:
    """The engine has no spillover between region x windows for batching or supply: control
    rows are identical with and without the fix, treated rows change."""
    for fix in (
        restore_batching(),
        Fix(kind="supply_boost", start=START, scope=SF_GROCERY_DINNER, supply_uplift=0.3),
    ):
        with_fix = switchback(spec, fix, seed=2).frame
        without = switchback(spec, fix, seed=2, aa=True).frame
        pd.testing.assert_frame_equal(with_fix[["unit", "arm"]], without[["unit", "arm"]])
        control = with_fix["arm"] == CONTROL
        np.testing.assert_allclose(
            with_fix.loc[control, list(STAT_FIELDS)], without.loc[control, list(STAT_FIELDS)]
        )
        treated = ~control
        on_time = with_fix.loc[treated, "on_time"].sum() / with_fix.loc[treated, "delivered"].sum()
        before = without.loc[treated, "on_time"].sum() / without.loc[treated, "delivered"].sum()
        assert on_time > before + 0.03, fix.kind


def test_fourteen_days_at_demo_volume_simulate_quickly(spec: ScenarioSpec) -> None:
    began = time.perf_counter()
    data = switchback(spec, restore_batching(), phases=[(0.1, 2), (0.5, 5), (0.95, 7)])
    elapsed = time.perf_counter() - began
    assert data.frame["phase"].nunique() == 3
    assert elapsed < 15.0  # about 1 s on two cores; the brief asks for well under a minute


# --- storage --------------------------------------------------------------------------------


def test_write_and_read_round_trip(spec: ScenarioSpec, tmp_path: Path) -> None:
    data = switchback(spec, restore_batching())
    target = write_experiment(data, tmp_path / "exp" / "experiment.parquet")
    assert [p.name for p in target.parent.iterdir()] == ["experiment.parquet"]  # no temp file
    back = read_experiment(target)
    pd.testing.assert_frame_equal(back.frame, data.frame)
    assert back.meta == data.meta


def _write_frame(path: Path, frame: pd.DataFrame, data: ExperimentData) -> Path:
    """Write ``frame`` with the metadata ``write_experiment`` gives ``data`` (which it would
    refuse to write itself)."""
    metadata = pq.read_table(write_experiment(data, path)).schema.metadata
    bad = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(metadata)
    pq.write_table(bad, path)
    return path


def test_read_names_the_file_and_the_column(spec: ScenarioSpec, tmp_path: Path) -> None:
    data = switchback(spec, restore_batching())
    path = tmp_path / "broken.parquet"

    _write_frame(path, data.frame.drop(columns=["delivery_cost"]), data)
    with pytest.raises(DataValidationError, match=r"broken\.parquet, column 'delivery_cost'"):
        read_experiment(path)

    negative = data.frame.copy()
    negative.loc[3, "canceled"] = -1.0
    _write_frame(path, negative, data)
    with pytest.raises(DataValidationError, match=r"column 'canceled': must be >= 0"):
        read_experiment(path)

    arms = data.frame.copy()
    arms.loc[0, "arm"] = "treated"
    _write_frame(path, arms, data)
    with pytest.raises(DataValidationError, match=r"column 'arm': must be 'treatment'"):
        read_experiment(path)

    text = data.frame.copy()
    text["orders"] = "many"
    _write_frame(path, text, data)
    with pytest.raises(DataValidationError, match=r"column 'orders': must be numeric"):
        read_experiment(path)

    pq.write_table(pq.read_table(path).replace_schema_metadata({}), path)
    with pytest.raises(DataValidationError, match=r"broken\.parquet: no experiment metadata"):
        read_experiment(path)

    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(DataValidationError, match=r"junk\.parquet: not a readable Parquet"):
        read_experiment(junk)
    with pytest.raises(DataValidationError, match="file not found"):
        read_experiment(tmp_path / "missing.parquet")


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unit": "order"}, r"^unit: must be one of store, region_x_window"),
        ({"phases": []}, r"^phases: at least one phase"),
        ({"phases": [(0.1, 2), (1.0, 2)]}, r"^phases\[1\]\.treated_share: must be a number in"),
        ({"phases": [(0.5, 0)]}, r"^phases\[0\]\.days: must be an int >= 1"),
        ({"window_hours": 0.3}, r"^window_hours: must be a multiple of 0.25"),
        ({"burn_in_minutes": 60.0}, r"^burn_in_minutes: must be in \[0, 60\)"),
        ({"phases": [(0.5, 30)]}, r"^spec\.days: .* extend spec\.days to at least 63"),
        ({"seed": "7"}, r"^seed: must be an int"),
    ],
)
def test_bad_parameters_are_named(
    spec: ScenarioSpec, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        switchback(spec, restore_batching(), **changes)


def test_store_randomisation_refuses_a_supply_fix(spec: ScenarioSpec) -> None:
    boost = Fix(kind="supply_boost", start=START, scope=Scope(region=["SF"]), supply_uplift=0.2)
    with pytest.raises(ValueError, match=r"^unit: store randomisation cannot test a supply_boost"):
        simulate_experiment(spec, boost, START, phases=[(0.5, 2)], unit="store")


def test_start_and_fix_window_are_checked(spec: ScenarioSpec) -> None:
    fix = restore_batching()
    with pytest.raises(ValueError, match=r"^start: .* is outside the scenario"):
        simulate_experiment(spec, fix, dt.datetime(2023, 1, 1), phases=[(0.5, 2)])
    late = fix.model_copy(update={"start": START + dt.timedelta(days=1)})
    with pytest.raises(ValueError, match=r"^fix\.start: the fix must be in force"):
        simulate_experiment(spec, late, START, phases=[(0.5, 2)])
    elsewhere = Fix(kind="promise_buffer", start=START, scope=Scope(region=["PDX"]), minutes=3.0)
    with pytest.raises(ValueError, match=r"^fix\.scope\.region: 'PDX' is not in"):
        simulate_experiment(spec, elsewhere, START, phases=[(0.5, 2)])
