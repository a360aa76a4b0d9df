"""The slice-against-neighbours difference-in-differences, and the day-weight bootstrap."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pytest

from cxagent.engine.connection import connect
from cxagent.rca.contrast import comparison_of, slice_contrast, store_day_panel
from cxagent.rca.day_orders import GroupMedians


def test_comparable_slices_differ_in_one_scope_dimension() -> None:
    assert comparison_of({"region": "SF", "category": "grocery", "daypart": "dinner"}) == (
        "grocery in the other regions and SF in the other categories"
    )
    assert comparison_of({"category": "grocery"}) == "the other categories"
    assert comparison_of({"daypart": "dinner"}) is None  # nothing comparable beside it
    assert comparison_of({}) is None
    store = {"region": "SF", "category": "grocery"}
    assert comparison_of({"store_id": 7}, store) == "the other stores of its region and category"


def test_the_panel_holds_the_slice_and_its_neighbours_only(small_dataset: Path) -> None:
    t0 = dt.datetime(2024, 3, 6)
    where = {"region": "SF", "category": "grocery", "daypart": "dinner"}
    built = store_day_panel(
        connect(small_dataset), where, t0, dt.datetime(2024, 3, 4), dt.datetime(2024, 3, 8)
    )
    assert built is not None
    panel, _ = built
    stores = duckdb.sql(
        f"SELECT store_id, region, category FROM read_parquet('{small_dataset}/stores/*.parquet')"
    ).df()
    kind = stores.set_index("store_id").loc[panel["store_id"]]
    treated = panel["treated"].to_numpy(bool)
    in_slice = (kind["region"] == "SF").to_numpy() & (kind["category"] == "grocery").to_numpy()
    assert (treated == in_slice).all()
    # controls: SF's other categories or grocery elsewhere, never both different
    neighbour = (kind["region"] == "SF").to_numpy() | (kind["category"] == "grocery").to_numpy()
    assert neighbour.all()
    assert sorted(panel["period"].unique()) == [-2, -1, 0, 1]  # days counted from t0
    # only dinner orders: the panel's orders are the dinner orders of those stores
    dinner = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{small_dataset}/orders/**/*.parquet') o "
        f"JOIN read_parquet('{small_dataset}/deliveries/**/*.parquet') d USING (order_id) "
        f"WHERE o.daypart = 'dinner' AND (o.region = 'SF' OR o.category = 'grocery') "
        f"AND o.order_time >= TIMESTAMP '2024-03-04' AND o.order_time < TIMESTAMP '2024-03-08' "
        f"AND NOT d.canceled_flag"
    ).fetchall()
    assert panel["delivered"].sum() == dinner[0][0]


def test_a_planted_batching_change_shows_in_its_driver_not_elsewhere(tmp_path: Path) -> None:
    from tests.conftest import make_dataset

    root, _ = make_dataset(
        tmp_path,
        days=14,
        orders_per_day=4000,
        interventions=[
            {
                "cause": "batching_policy",
                "start": "2024-03-14T00:00:00",
                "scope": {"region": "SF", "category": "grocery"},
                "magnitude": 1.5,
                "logged": False,
            }
        ],
    )
    t0 = dt.datetime(2024, 3, 14)
    found = slice_contrast(
        connect(root),
        {"region": "SF", "category": "grocery"},
        t0,
        t0 - dt.timedelta(days=10),
        t0 + dt.timedelta(days=4),
    )
    assert found is not None
    batching = found.drivers["batching_policy"]
    assert batching.result.effect > 0 and batching.result.p_value < 0.01 and batching.t > 3
    assert abs(found.drivers["inventory_drop"].t) < 3  # item issues did not move
    assert "diff-in-diff against grocery in the other regions" in batching.describe(
        found.comparison
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_group_median_is_the_median_of_the_repeated_sample(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, groups, days = 400, 7, 5
    values, group, day = rng.normal(size=n), rng.integers(0, groups, n), rng.integers(0, days, n)
    group[group == 3] = 2  # a group without values
    group[group == groups - 1] = 0  # and the last one: its search starts past the end
    rows = np.lexsort((values, group))
    medians = GroupMedians.of(group[rows], values[rows], day[rows], groups, days)
    for _ in range(5):
        w_day = rng.integers(0, 4, days).astype(float)  # a bootstrap replicate's day counts
        found = medians(w_day)
        weights = w_day[day].astype(int)
        for g in range(groups):
            repeated = np.repeat(values[group == g], weights[group == g])
            expected = np.median(repeated) if repeated.size else np.nan
            assert found[g] == pytest.approx(expected, nan_ok=True)
