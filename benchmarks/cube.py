"""Benchmark: the hourly slice cube, three ways, on the same dataset.

    python benchmarks/cube.py --data DIR [--skip-pandas]

1. ``cxagent`` - the product's Ibis expressions on DuckDB (``build_cube``);
2. ``duckdb_sql`` - a hand-written DuckDB SQL query doing the same work (order facts, leaves,
   the same ten grouping sets with GROUPING SETS);
3. ``pandas`` - a pandas baseline: read the tables, merge per order, ``groupby(...).sum()``
   per grouping set (the same ten sets); with ``--naive-pandas`` also the straightforward
   script that groups each of the 26 cuts separately (``pandas_naive_26_cuts``).

All three must agree (the script checks the per-level totals). Prints JSON with wall seconds
and rows. Targets (issue 3): cxagent <= 20 s for 10 M orders on 2 cores, >= 10x faster than
pandas, within 1.5x of the hand-written SQL.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cxagent.engine.connection import connect
from cxagent.engine.cube import SET_DIMS, SUM_FIELDS, build_cube, grouping_sets, level_name


def _glob(root: Path, table: str) -> str:
    return f"'{root}/{table}/*/*.parquet'"


def hand_sql(root: Path) -> tuple[int, dict[str, float]]:
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")
    sets = ", ".join("(" + ", ".join(["hour", "daypart", *s]) + ")" for s in grouping_sets())
    sums = ", ".join(f"sum({f}) AS {f}" for f in SUM_FIELDS)
    con.execute(f"""
    CREATE TABLE leaves AS
    WITH d AS (SELECT * EXCLUDE (order_time) FROM read_parquet({_glob(root, "deliveries")})),
    i AS (SELECT order_id, count(*) FILTER (WHERE missing_flag OR substituted_flag) AS bad,
                 sum(refund_amount) AS refund
          FROM read_parquet({_glob(root, "items")}) GROUP BY order_id),
    s AS (SELECT DISTINCT order_id FROM read_parquet({_glob(root, "support_events")})),
    r AS (SELECT order_id, max(stars)::DOUBLE AS stars FROM read_parquet({_glob(root, "ratings")})
          GROUP BY order_id),
    t AS (SELECT trip_id, count(*) AS trip_size FROM d WHERE trip_id IS NOT NULL GROUP BY trip_id),
    f AS (
      SELECT date_trunc('hour', o.order_time) AS hour, o.store_id, o.region, o.category,
             o.daypart, o.basket_size, NOT d.canceled_flag AS dl,
             epoch(d.actual_delivery_time) - epoch(o.promised_eta) AS late_s,
             o.item_count, i.bad, i.refund, s.order_id IS NOT NULL AS sup, r.stars, t.trip_size,
             d.dasher_active_s, d.delivery_cost
      FROM read_parquet({_glob(root, "orders")}) o JOIN d USING (order_id)
      LEFT JOIN i USING (order_id) LEFT JOIN s USING (order_id) LEFT JOIN r USING (order_id)
      LEFT JOIN t USING (trip_id))
    SELECT hour, store_id, region, category, daypart, basket_size,
      count(*)::DOUBLE AS orders, sum(dl::INT)::DOUBLE AS delivered,
      sum((dl AND late_s <= 300)::INT)::DOUBLE AS on_time,
      sum(CASE WHEN dl THEN abs(late_s) ELSE 0 END) AS eta_abs_error_s,
      sum((NOT dl)::INT)::DOUBLE AS canceled, sum((refund > 0)::INT)::DOUBLE AS refunded,
      sum(CASE WHEN dl THEN item_count ELSE 0 END)::DOUBLE AS items,
      sum(CASE WHEN dl THEN bad ELSE 0 END)::DOUBLE AS bad_items,
      sum(sup::INT)::DOUBLE AS support, count(stars)::DOUBLE AS ratings,
      coalesce(sum(stars), 0) AS stars,
      sum(CASE WHEN dl THEN 1.0 / trip_size ELSE 0 END) AS trips,
      sum(CASE WHEN dl THEN dasher_active_s ELSE 0 END) AS dasher_active_s,
      sum(CASE WHEN dl THEN delivery_cost ELSE 0 END) AS delivery_cost,
      sum(CASE WHEN dl THEN late_s * late_s ELSE 0 END) AS eta_abs_error_s_sq,
      coalesce(sum(stars * stars), 0) AS stars_sq,
      sum(CASE WHEN dl THEN delivery_cost * delivery_cost ELSE 0 END) AS delivery_cost_sq
    FROM f GROUP BY ALL
    """)
    gid = f"GROUPING_ID({', '.join(SET_DIMS)})"
    con.execute(
        f"CREATE TABLE cube AS SELECT {gid} AS gid, hour, daypart, {', '.join(SET_DIMS)}, {sums} "
        f"FROM leaves GROUP BY GROUPING SETS ({sets})"
    )
    rows = con.execute("SELECT count(*) FROM cube").fetchone()[0]  # type: ignore[index]
    totals = dict(con.execute("SELECT gid, sum(on_time) FROM cube GROUP BY gid").fetchall())
    return rows, {str(k): v for k, v in totals.items()}


ALL_CUTS = [
    c
    for k in range(4)
    for c in itertools.combinations(("store_id", "region", "category", "daypart", "basket_size"), k)
]


def pandas_cube(root: Path, *, naive: bool = False) -> tuple[int, dict[str, float]]:
    """``naive``: every one of the 26 cuts grouped separately, as a straightforward script
    would; otherwise the same ten grouping sets as the product."""

    def read(table: str, columns: list[str]) -> pd.DataFrame:
        return pd.read_parquet(root / table, columns=columns)

    o = read(
        "orders",
        [
            "order_id",
            "order_time",
            "promised_eta",
            "store_id",
            "region",
            "category",
            "daypart",
            "basket_size",
            "item_count",
        ],
    )
    d = read(
        "deliveries",
        [
            "order_id",
            "actual_delivery_time",
            "canceled_flag",
            "trip_id",
            "dasher_active_s",
            "delivery_cost",
        ],
    )
    it = read("items", ["order_id", "missing_flag", "substituted_flag", "refund_amount"])
    it["bad"] = (it["missing_flag"].fillna(False) | it["substituted_flag"].fillna(False)).astype(
        int
    )
    ia = (
        it.groupby("order_id")
        .agg(bad=("bad", "sum"), refund=("refund_amount", "sum"))
        .reset_index()
    )
    sup = read("support_events", ["order_id"]).drop_duplicates().assign(sup=1)
    rat = read("ratings", ["order_id", "stars"]).groupby("order_id", as_index=False)["stars"].max()
    trips = d.groupby("trip_id").size().rename("trip_size").reset_index()
    f = (
        o.merge(d, on="order_id")
        .merge(ia, on="order_id", how="left")
        .merge(sup, on="order_id", how="left")
    )
    f = f.merge(rat, on="order_id", how="left").merge(trips, on="trip_id", how="left")
    dl = ~f["canceled_flag"]
    late = (f["actual_delivery_time"] - f["promised_eta"]).dt.total_seconds()
    facts = pd.DataFrame(
        {
            "hour": f["order_time"].dt.floor("h"),
            **{c: f[c] for c in ("store_id", "region", "category", "daypart", "basket_size")},
            "orders": 1.0,
            "delivered": dl.astype(float),
            "on_time": (dl & (late <= 300)).astype(float),
            "eta_abs_error_s": late.abs().where(dl, 0.0),
            "canceled": (~dl).astype(float),
            "refunded": (f["refund"] > 0).astype(float),
            "items": f["item_count"].where(dl, 0).astype(float),
            "bad_items": f["bad"].where(dl, 0).astype(float),
            "support": f["sup"].notna().astype(float),
            "ratings": f["stars"].notna().astype(float),
            "stars": f["stars"].fillna(0).astype(float),
            "trips": (1.0 / f["trip_size"]).where(dl, 0.0),
            "dasher_active_s": f["dasher_active_s"].where(dl, 0.0),
            "delivery_cost": f["delivery_cost"].where(dl, 0.0),
            "eta_abs_error_s_sq": (late * late).where(dl, 0.0),
            "stars_sq": (f["stars"] ** 2).fillna(0.0),
            "delivery_cost_sq": (f["delivery_cost"] ** 2).where(dl, 0.0),
        }
    )
    rows, totals = 0, {}
    for dims in ALL_CUTS if naive else grouping_sets():
        keys = ["hour", *dims] if naive else ["hour", "daypart", *dims]
        part = facts.groupby(keys, observed=True)[list(SUM_FIELDS)].sum()
        rows += len(part)
        totals[level_name(tuple(dims))] = float(part["on_time"].sum())
    return rows, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--naive-pandas",
        action="store_true",
        help="also run the straightforward pandas script: all 26 cuts grouped one by one",
    )
    args = parser.parse_args()
    results: dict[str, dict[str, float | int]] = {}

    t = time.perf_counter()
    cube = build_cube(connect(args.data))
    results["cxagent"] = {"seconds": round(time.perf_counter() - t, 2), "rows": cube.table.num_rows}
    ours = cube.table.group_by("level").aggregate([("on_time", "sum")]).to_pandas()
    on_time_total = float(ours["on_time_sum"].iloc[0])

    t = time.perf_counter()
    rows, sql_totals = hand_sql(args.data)
    results["duckdb_sql"] = {"seconds": round(time.perf_counter() - t, 2), "rows": rows}
    checks = {"duckdb_sql_agrees": bool(np.allclose(list(sql_totals.values()), on_time_total))}
    if not args.skip_pandas:
        t = time.perf_counter()
        rows, pd_totals = pandas_cube(args.data)
        results["pandas"] = {"seconds": round(time.perf_counter() - t, 2), "rows": rows}
        checks["pandas_agrees"] = bool(np.allclose(list(pd_totals.values()), on_time_total))
    if args.naive_pandas:
        t = time.perf_counter()
        rows, naive_totals = pandas_cube(args.data, naive=True)
        results["pandas_naive_26_cuts"] = {
            "seconds": round(time.perf_counter() - t, 2),
            "rows": rows,
        }
        checks["pandas_naive_agrees"] = bool(
            np.allclose(list(naive_totals.values()), on_time_total)
        )
    orders = int(cube.slice_rows({}).column("orders").to_numpy().sum())
    ratio = {k: round(v["seconds"] / results["cxagent"]["seconds"], 2) for k, v in results.items()}
    print(
        json.dumps(
            {
                "benchmark": "cube",
                "orders": orders,
                "hours": len(cube.hours),
                "grouping_sets": len(grouping_sets()),
                "results": results,
                "seconds_relative_to_cxagent": ratio,
                "checks": checks,
                "machine": f"{platform.machine()}, Python {platform.python_version()}, 2 threads",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
