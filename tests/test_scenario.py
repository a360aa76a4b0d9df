"""The planted causes are really in the data, by the sizes truth.json states.

Observed figures are read straight from the Parquet files with SQL (conftest.observed), not
through the generator's own code.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cxagent.data.io import read_frame, read_table
from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec

from .conftest import make_dataset, observed, small_spec

JAN3 = "TIMESTAMP '2024-01-03 00:00:00'"


def _rate(stats: dict[str, float], num: str, den: str) -> tuple[float, float]:
    p = stats[num] / stats[den]
    return p, math.sqrt(p * (1 - p) / stats[den])


def _cell(truth_effect: dict[str, Any], **slice_: str) -> dict[str, Any]:
    for cell in truth_effect["cells"]:
        if cell["slice"] == slice_:
            return cell
    raise AssertionError(f"no truth cell {slice_}")


def test_demo_sf_grocery_dinner_on_time_falls_by_what_truth_says(
    demo_dataset: tuple[Path, dict],
) -> None:
    root, truth = demo_dataset
    where = "o.region = 'SF' AND o.category = 'grocery' AND o.daypart = 'dinner'"
    before = observed(root, f"{where} AND o.order_time < {JAN3}")
    after = observed(root, f"{where} AND o.order_time >= {JAN3}")
    p0, se0 = _rate(before, "on_time", "delivered")
    p1, se1 = _rate(after, "on_time", "delivered")

    by_cause = {iv["cause"]: iv for iv in truth["interventions"]}
    batching = _cell(
        by_cause["batching_policy"]["effect"], region="SF", category="grocery", daypart="dinner"
    )
    drift = _cell(
        by_cause["prep_time_drift"]["effect"], region="SF", category="grocery", daypart="dinner"
    )
    # the truth's factual figure is exactly what the files say
    assert batching["factual"]["on_time_rate"] == pytest.approx(p1, abs=1e-4)
    assert batching["orders"] == after["orders"]
    # the observed fall matches the planted effects, within noise and interaction
    planted = batching["delta"]["on_time_rate"] + drift["delta"]["on_time_rate"]
    assert planted < -0.08
    assert (p1 - p0) == pytest.approx(planted, abs=max(0.03, 3 * math.hypot(se0, se1)))
    assert (p1 - p0) / math.hypot(se0, se1) < -5
    # batching is the bigger of the two, and SF dinner is where grocery suffers most
    assert batching["delta"]["cx_score"] < drift["delta"]["cx_score"] < 0
    worst = by_cause["batching_policy"]["effect"]["cells"][0]
    assert worst["slice"] == {"region": "SF", "category": "grocery", "daypart": "dinner"}


def _daily_on_time(root: Path, where: str) -> dict[bool, list[float]]:
    rows = (
        duckdb.connect()
        .execute(
            f"""SELECT o.order_time >= {JAN3} AS post,
                   avg(CASE WHEN NOT canceled_flag THEN
                       (epoch(actual_delivery_time) - epoch(promised_eta) <= 300)::INT END)
            FROM read_parquet('{root}/orders/*/*.parquet') o
            JOIN read_parquet('{root}/deliveries/*/*.parquet') USING (order_id)
            WHERE {where} GROUP BY o.order_time::DATE, post"""
        )
        .fetchall()
    )
    out: dict[bool, list[float]] = {False: [], True: []}
    for post, rate in rows:
        out[post].append(rate)
    return out


def test_demo_unaffected_slices_stay_within_noise(demo_dataset: tuple[Path, dict]) -> None:
    """Outside the planted scopes, the post-Jan-3 daily on-time rate is an ordinary draw from
    the 30 days before it (day-to-day noise, as supply varies by day, is the yardstick)."""
    root, truth = demo_dataset
    touched = {
        (c["slice"]["region"], c["slice"]["category"])
        for iv in truth["interventions"]
        for c in iv["effect"]["cells"]
    }
    pairs = (
        duckdb.connect()
        .execute(f"SELECT DISTINCT region, category FROM read_parquet('{root}/orders/*/*.parquet')")
        .fetchall()
    )
    checked = 0
    for region, category in pairs:
        if (region, category) in touched:
            continue
        days = _daily_on_time(root, f"o.region = '{region}' AND o.category = '{category}'")
        pre, post = days[False], days[True]
        sd = statistics.stdev(pre)
        t = (statistics.mean(post) - statistics.mean(pre)) / (
            sd * math.sqrt(1 / len(post) + 1 / len(pre))
        )
        assert abs(t) < 4, (region, category, t)
        checked += 1
    assert checked >= 8
    # the affected slice, by the same yardstick, is far outside the noise
    days = _daily_on_time(
        root, "o.region = 'SF' AND o.category = 'grocery' AND o.daypart = 'dinner'"
    )
    sd = statistics.stdev(days[False])
    assert (statistics.mean(days[True]) - statistics.mean(days[False])) / sd < -3


def test_demo_change_log_holds_the_batching_change_and_decoys(
    demo_dataset: tuple[Path, dict],
) -> None:
    root, truth = demo_dataset
    changes = read_frame(root, "change_events")
    batching = changes[changes["name"] == "batching_policy"].iloc[0]
    assert str(batching["started_at"]) == "2024-01-03 00:00:00"
    assert list(batching["scope_categories"]) == ["grocery"]
    assert '"max_orders_per_trip": 2' in batching["parameters_before"]
    assert '"max_orders_per_trip": 4' in batching["parameters_after"]
    assert (changes["name"] == "merchant_operations").sum() == 0  # the drift is not logged
    assert len(changes) == 1 + truth["spec"]["background_changes"]


SCOPED = {"region": "SF", "daypart": "dinner"}
MECHANISMS: dict[str, tuple[dict[str, Any], str]] = {
    "batching_policy": ({"region": "SF", "category": "grocery"}, "batched"),
    "prep_time_drift": ({"region": "SF", "category": "grocery"}, "prep_s"),
    "dasher_shortage": (SCOPED, "wait_s"),
    "inventory_drop": ({"region": "SF", "category": "grocery"}, "bad_items"),
    "eta_model_bias": (SCOPED, "promise_s"),
}


@pytest.mark.parametrize("cause", list(MECHANISMS))
def test_given_each_cause_when_planted_then_its_mechanism_and_truth_show_in_the_data(
    cause: str, tmp_path: Path
) -> None:
    scope, mechanism = MECHANISMS[cause]
    start = "2024-03-08T00:00"
    root, truth = make_dataset(
        tmp_path,
        days=8,
        orders_per_day=5000,
        interventions=[{"cause": cause, "start": start, "scope": scope, "magnitude": 1.0}],
    )
    (iv,) = truth["interventions"]
    effect = iv["effect"]
    # the planted effect is a real loss of CX inside the scope, and nothing outside moved
    assert effect["scope"]["delta"]["cx_score"] < -3
    for cell in effect["cells"]:
        assert all(cell["slice"][k] == v for k, v in scope.items())
    where = " AND ".join(f"o.{k} = '{v}'" for k, v in scope.items())
    before = observed(root, f"{where} AND o.order_time < TIMESTAMP '{start}'")
    after = observed(root, f"{where} AND o.order_time >= TIMESTAMP '{start}'")
    assert effect["scope"]["orders"] == after["orders"]
    assert effect["scope"]["factual"]["on_time_rate"] == pytest.approx(
        after["on_time"] / after["delivered"], abs=1e-4
    )
    # the mechanism moves the way the cause says
    if mechanism == "bad_items":
        assert after["bad_items"] / after["items"] > 2 * before["bad_items"] / before["items"]
    elif mechanism == "promise_s":
        assert after["promise_s"] < 0.88 * before["promise_s"]
        assert (
            after["on_time"] / after["delivered"] < before["on_time"] / before["delivered"] - 0.05
        )
    else:
        assert after[mechanism] > 1.3 * before[mechanism]


def test_mechanism_side_tables_follow_the_cause(tmp_path: Path) -> None:
    start = "2024-03-06T00:00"
    root, _ = make_dataset(
        tmp_path,
        interventions=[
            {"cause": "dasher_shortage", "start": start, "scope": {"region": "LA"}},
            {"cause": "inventory_drop", "start": start, "scope": {"region": "NYC"}},
            {"cause": "eta_model_bias", "start": start, "scope": {"region": "SEA"}},
        ],
    )
    con = duckdb.connect()
    on_shift = dict(
        con.execute(
            f"SELECT interval_start >= TIMESTAMP '{start}' AS post, avg(dashers_on_shift) "
            f"FROM read_parquet('{root}/supply/*/*.parquet') WHERE region = 'LA' GROUP BY 1"
        ).fetchall()
    )
    assert on_shift[True] < 0.8 * on_shift[False]
    in_stock = dict(
        con.execute(
            f"SELECT e.event_time >= TIMESTAMP '{start}' AS post, avg(in_stock_prob) "
            f"FROM read_parquet('{root}/inventory_events/*/*.parquet') e "
            f"JOIN read_parquet('{root}/stores/*.parquet') s USING (store_id) "
            f"WHERE s.region = 'NYC' GROUP BY 1"
        ).fetchall()
    )
    assert in_stock[True] == pytest.approx(in_stock[False] - 0.15, abs=0.02)
    models = read_table(root, "orders", columns=["region", "order_time", "eta_model"]).to_pandas()
    sea_post = models[(models.region == "SEA") & (models.order_time >= start)]
    assert set(sea_post.eta_model) == {"eta-v8"}
    assert set(models[models.region != "SEA"].eta_model) == {"eta-v7"}


def test_generation_is_deterministic_and_independent_of_workers(tmp_path: Path) -> None:
    spec = parse_spec(
        small_spec(
            days=3,
            orders_per_day=800,
            interventions=[
                {"cause": "batching_policy", "start": "2024-03-05T00:00", "scope": {"region": "SF"}}
            ],
        )
    )
    a = generate(spec, tmp_path / "a", workers=1)
    b = generate(spec, tmp_path / "b", workers=2)
    assert a == b
    for table in ("orders", "deliveries", "items", "ratings", "support_events", "supply"):
        assert read_table(tmp_path / "a", table).equals(read_table(tmp_path / "b", table)), table
    other = generate(spec.model_copy(update={"seed": 99}), tmp_path / "c", workers=1)
    assert other["rows"] != a["rows"]


def test_a_scenario_without_interventions_has_an_empty_truth(tmp_path: Path) -> None:
    _, truth = make_dataset(tmp_path, days=2, orders_per_day=500, background_changes=0)
    assert truth["interventions"] == []
    assert truth["rows"]["orders"] > 800
