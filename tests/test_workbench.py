"""The workbench's stored views: built from the demo story, checked against the data read
independently (SQL on the Parquet files) and against the investigation they summarise."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest

from cxagent.store.db import session_factory
from cxagent.store.repository import get_analysis, list_incidents, save_analysis
from cxagent.workbench.build import build
from cxagent.workbench.merchants import store_issues
from cxagent.workbench.slices import cx_change, stars
from cxagent.workbench.summary import summary
from tests.conftest import observed

ZERO = {
    f: 0.0
    for f in [
        "orders",
        "delivered",
        "on_time",
        "eta_abs_error_s",
        "canceled",
        "refunded",
        "items",
        "bad_items",
        "support",
        "ratings",
        "stars",
        "trips",
        "dasher_active_s",
        "delivery_cost",
        "eta_abs_error_s_sq",
        "stars_sq",
        "delivery_cost_sq",
    ]
}


@pytest.fixture(scope="module")
def built(
    demo_dataset: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    root, _ = demo_dataset
    url = f"sqlite:///{tmp_path_factory.mktemp('wb') / 'store.db'}"
    ids = build(root, store_url=url, n_bootstrap=30)
    return root, session_factory(url), ids


def _sf(factory: Any) -> Any:
    return next(i for i in list_incidents(factory) if i.slice.get("region") == "SF")


def test_every_incident_gets_a_view_and_the_story_reads_right(built: Any) -> None:
    _, factory, ids = built
    assert ids and all(get_analysis(factory, "incident", i) is not None for i in ids)
    view = get_analysis(factory, "incident", _sf(factory).id)
    assert view["investigation"]["causes"][0]["cause"] == "batching_policy"
    top = view["recommendations"]["recommendations"][0]
    assert top["action"] == "reduce_batching"
    plan = view["plans"][0]
    assert plan["rank"] == 1 and plan["markdown"].startswith("# Experiment plan: reduce_batching")
    assert plan["summary"]["days_to_launch"] < plan["summary"]["total_days"]
    pm = view["summary"]
    assert "couriers now carry more orders per trip" in pm["why"]
    assert f"{top['estimate']['cx_gain']:+.1f} CX points" in pm["recommendation"]
    assert "fewer orders per hour" in pm["tradeoff"]
    refunds = pm["projection"]["refunds_avoided_per_week"]
    assert refunds["low"] <= refunds["value"] <= refunds["high"]
    logged = [c for c in view["changes"] if c["name"] == "batching_policy"]
    assert logged and logged[0]["change_id"] == view["investigation"]["causes"][0]["change_id"]
    json.dumps(view, allow_nan=False)  # strict JSON: no NaN reaches a page


def test_metric_table_matches_the_data_read_independently(built: Any) -> None:
    root, factory, _ = built
    view = get_analysis(factory, "incident", _sf(factory).id)
    inv = view["investigation"]
    start = dt.datetime.fromisoformat(inv["window_start"])
    end = dt.datetime.fromisoformat(inv["window_end"])
    hours = [h for h in range(24) if _daypart(h) == inv["investigated_slice"].get("daypart")]
    where = (
        "o.region = 'SF' AND o.category = 'grocery' "
        f"AND hour(o.order_time) IN ({', '.join(map(str, hours))}) "
        f"AND o.order_time >= TIMESTAMP '{start}' AND o.order_time < TIMESTAMP '{end}'"
    )
    sql = observed(root, where)
    rows = {r["metric"]: r for r in view["metrics"]}
    assert rows["on_time_rate"]["after"] == pytest.approx(
        sql["on_time"] / sql["delivered"], abs=1e-4
    )
    assert rows["cancellation_rate"]["after"] == pytest.approx(
        sql["canceled"] / sql["orders"], abs=1e-4
    )
    assert rows["cx_score"]["delta"] < -5  # the incident's regression, in its table


def _daypart(hour: int) -> str:
    from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS

    return DAYPARTS[DAYPART_OF_HOUR[hour]]


def test_drilldown_reaches_the_investigated_slice_with_significant_children(built: Any) -> None:
    _, factory, _ = built
    view = get_analysis(factory, "incident", _sf(factory).id)
    focus = view["investigation"]["investigated_slice"]
    node = next(n for n in view["drilldown"].values() if n["slice"] == focus)
    assert node["children"], "sub-slices listed"
    losses = [c["loss"] for c in node["children"]]
    assert losses == sorted(losses, reverse=True)
    assert any(c["stars"] == "***" and c["delta"] < 0 for c in node["children"])
    assert all(set(focus.items()) < set(c["slice"].items()) for c in node["children"])


def test_overview_counts_the_last_week_of_orders(built: Any) -> None:
    root, factory, _ = built
    ov = get_analysis(factory, "overview")
    start, end = ov["recent_window"]
    sql = observed(
        root,
        f"o.order_time >= TIMESTAMP '{start}' AND o.order_time < TIMESTAMP '{end}'",
    )
    assert ov["orders_last_7d"] == sql["orders"]
    assert 25 <= len(ov["trend_30d"]["x"]) <= 30 and len(ov["trend_7d"]["x"]) == 7 * 24
    cx = next(q for q in ov["quick_stats"] if q["metric"] == "cx_score")
    assert cx["delta"] == pytest.approx(cx["current"] - cx["baseline"], abs=1e-3)


def test_merchant_risk_ranks_the_demo_stores_first(built: Any) -> None:
    _, factory, _ = built
    stores = get_analysis(factory, "merchants")["stores"]
    risks = [s["risk"] for s in stores]
    assert risks == sorted(risks, reverse=True)
    top = stores[:5]
    assert sum(s["region"] == "SF" and s["category"] == "grocery" for s in top) >= 3
    assert all(s["issues"] for s in top if s["risk"] > 0)


def test_cx_change_is_zero_for_equal_windows_and_significant_for_a_big_drop() -> None:
    base = ZERO | {"orders": 1000, "delivered": 1000, "on_time": 900, "items": 5000}
    base |= {"bad_items": 50, "ratings": 400, "stars": 1800, "stars_sq": 8400}
    was, now, delta, p = cx_change(base, base, frozenset())
    assert delta == 0 and p == pytest.approx(1.0)
    worse = base | {"on_time": 700}
    was, now, delta, p = cx_change(base, worse, frozenset())
    assert delta < -5 and p < 1e-6 and stars(p) == "***"
    assert math.isnan(cx_change(ZERO, ZERO, frozenset())[2])


def test_store_issues_name_what_got_worse_and_only_that() -> None:
    before = ZERO | {"orders": 2000, "delivered": 2000, "on_time": 1800, "canceled": 20}
    before |= {"items": 10000, "bad_items": 200, "refunded": 100, "support": 60}
    after = before | {"on_time": 1500, "refunded": 98}
    issues = store_issues(before, after)
    assert issues == ["late deliveries 10.0% -> 25.0%"]
    assert store_issues(before, before) == []


def test_weak_evidence_summary_says_monitor() -> None:
    inv = {
        "id": "inc-x",
        "severity": "low",
        "delta": -2.0,
        "baseline": 80.0,
        "current": 78.0,
        "window_start": "2024-01-03T16:00:00",
        "affected_orders": 120,
        "investigated_slice": {"store_id": 7},
        "components": {},
        "causes": [{"cause": "normal_variance", "confidence": 0.3, "impact": 0.0}],
    }
    recs = {"recommendations": [], "message": "monitor, no action needed: nothing stands out"}
    out = summary(inv, recs, weekly_orders=100, plan_days=None)
    assert "no cause that stands out" in out["why"]
    assert out["recommendation"].startswith("Monitor, no action needed")
    assert out["projection"] is None and out["tradeoff"] is None
    assert out["title"].startswith("store 7")


def test_analyses_are_replaced_not_duplicated(tmp_path: Path) -> None:
    factory = session_factory(f"sqlite:///{tmp_path / 's.db'}")
    save_analysis(factory, "overview", {"v": 1})
    save_analysis(factory, "overview", {"v": 2})
    assert get_analysis(factory, "overview") == {"v": 2}
    assert get_analysis(factory, "merchants") is None
    with pytest.raises(ValueError, match="analysis kind"):
        save_analysis(factory, "nonsense", {})
