"""Benchmark: the hourly slice cube, three ways, on the same dataset.

    python benchmarks/cube.py --data DIR [--skip-pandas] [--naive-pandas] [--repeat 3]

1. ``cxagent`` - the product's Ibis expressions on DuckDB (``build_cube``);
2. ``duckdb_sql`` - the same work written by hand in DuckDB SQL, with the same shortcuts
   (order facts, leaves, sets without the store rolled up from the leaves summed over stores);
3. ``pandas`` - a pandas baseline: read the tables, merge per order, ``groupby(...).sum()``
   per grouping set (the same ten sets); with ``--naive-pandas`` also the straightforward
   script that groups each of the 26 cuts separately (``pandas_naive_26_cuts``).

Checks: the hand-written SQL and the ten-set pandas cube have the same cells with the same
sums as the product's cube (every set, every statistic); every one of the 26 naive cuts adds
up to the cube's grand totals. Each method runs ``--repeat`` times (pandas
``--pandas-repeat``) and its fastest run counts: on a shared machine other work only ever
adds time. Prints JSON. Targets (issue 3): cxagent <= 20 s for 10 M orders on 2 cores,
>= 10x faster than pandas, within 1.5x of the hand-written SQL.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from cxagent.engine.connection import connect
from cxagent.engine.cube import SET_DIMS, SUM_FIELDS, build_cube, grouping_sets, level_name

T = TypeVar("T")


def _glob(root: Path, table: str) -> str:
    return f"'{root}/{table}/*/*.parquet'"


def hand_sql(root: Path) -> pd.DataFrame:
    """The cube as one would write it by hand in DuckDB SQL, with the same shortcuts as the
    product (flagged item lines only, shared trips only, canceled = orders - delivered,
    store x basket size = the leaves, sets without the store from the leaves summed over
    stores). Returns the cube as a DataFrame."""
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET preserve_insertion_order = false")
    sums = ", ".join(f"sum({f}) AS {f}" for f in SUM_FIELDS if f != "canceled")
    con.execute(f"""
    CREATE TABLE leaves AS SELECT *, orders - delivered AS canceled FROM (
    WITH d AS (SELECT * EXCLUDE (order_time) FROM read_parquet({_glob(root, "deliveries")})),
    shared AS (SELECT trip_id, count(*) AS trip_size FROM d
               WHERE trip_id IS NOT NULL AND coalesce(batched_flag, true)
               GROUP BY trip_id HAVING count(*) > 1),
    i AS (SELECT order_id,
                 count(*) FILTER (WHERE coalesce(missing_flag OR substituted_flag, false)) AS bad,
                 sum(coalesce(refund_amount, 0)) AS refund
          FROM read_parquet({_glob(root, "items")})
          WHERE coalesce(missing_flag OR substituted_flag, false) OR coalesce(refund_amount, 0) <> 0
          GROUP BY order_id),
    s AS (SELECT DISTINCT order_id FROM read_parquet({_glob(root, "support_events")})),
    r AS (SELECT order_id, max(stars)::DOUBLE AS stars FROM read_parquet({_glob(root, "ratings")})
          GROUP BY order_id),
    f AS (
      SELECT date_trunc('hour', o.order_time) AS hour, o.store_id, o.region, o.category,
             o.daypart, o.basket_size, NOT d.canceled_flag AS dl,
             epoch(d.actual_delivery_time) - epoch(o.promised_eta) AS late_s,
             o.item_count, coalesce(i.bad, 0) AS bad, coalesce(i.refund, 0) AS refund,
             s.order_id IS NOT NULL AS sup, r.stars, coalesce(shared.trip_size, 1) AS trip_size,
             d.dasher_active_s, d.delivery_cost
      FROM read_parquet({_glob(root, "orders")}) o JOIN d USING (order_id)
      LEFT JOIN shared USING (trip_id) LEFT JOIN i USING (order_id)
      LEFT JOIN s USING (order_id) LEFT JOIN r USING (order_id))
    SELECT hour, daypart, store_id, region, category, basket_size,
      count(*)::DOUBLE AS orders, sum(dl::INT)::DOUBLE AS delivered,
      sum((dl AND late_s <= 300)::INT)::DOUBLE AS on_time,
      sum(CASE WHEN dl THEN abs(late_s) ELSE 0 END) AS eta_abs_error_s,
      sum((refund > 0)::INT)::DOUBLE AS refunded,
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
    FROM f GROUP BY ALL)
    """)
    sums = ", ".join(f"sum({f}) AS {f}" for f in SUM_FIELDS)
    con.execute(
        f"CREATE TABLE coarse AS SELECT hour, daypart, region, category, basket_size, {sums} "
        "FROM leaves GROUP BY ALL"
    )
    cols = ", ".join(SUM_FIELDS)
    parts = []
    for dims in grouping_sets():
        keys = ", ".join(["hour", "daypart", *dims])
        nulls = ", ".join(f"NULL AS {d}" for d in SET_DIMS if d not in dims)
        head = f"SELECT '{level_name(dims)}' AS level, {keys}{', ' + nulls if nulls else ''}"
        if dims == ("store_id", "basket_size"):
            parts.append(f"{head}, {cols} FROM leaves")
        else:
            source = "leaves" if "store_id" in dims else "coarse"
            parts.append(f"{head}, {sums} FROM {source} GROUP BY {keys}")
    return con.sql(" UNION ALL BY NAME ".join(parts)).to_arrow_table().to_pandas()


ALL_CUTS = [
    c
    for k in range(4)
    for c in itertools.combinations(("store_id", "region", "category", "daypart", "basket_size"), k)
]


def pandas_cube(root: Path, *, naive: bool = False) -> dict[str, pd.DataFrame]:
    """Per cut, its hourly table: ``naive``: every one of the 26 cuts grouped separately, as
    a straightforward script would; otherwise the same ten grouping sets as the product."""

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
            "trips": (1.0 / f["trip_size"].fillna(1)).where(dl, 0.0),
            "dasher_active_s": f["dasher_active_s"].where(dl, 0.0),
            "delivery_cost": f["delivery_cost"].where(dl, 0.0),
            "eta_abs_error_s_sq": (late * late).where(dl, 0.0),
            "stars_sq": (f["stars"] ** 2).fillna(0.0),
            "delivery_cost_sq": (f["delivery_cost"] ** 2).where(dl, 0.0),
        }
    )
    out = {}
    for dims in ALL_CUTS if naive else grouping_sets():
        keys = ["hour", *dims] if naive else ["hour", "daypart", *dims]
        part = facts.groupby(keys, observed=True)[list(SUM_FIELDS)].sum()
        out[level_name(tuple(dims))] = part.reset_index()
    return out


def _level(frame: pd.DataFrame, dims: tuple[str, ...]) -> pd.DataFrame:
    keys = ["hour", "daypart", *dims]
    return frame[keys + list(SUM_FIELDS)].sort_values(keys).reset_index(drop=True)


def same_cells(ours: pd.DataFrame, other: dict[str, pd.DataFrame]) -> bool:
    """Every grouping set has the same cells (keys) and the same sums in both cubes."""
    for dims in grouping_sets():
        name = level_name(dims)
        a = _level(ours[ours["level"] == name], dims)
        b = _level(other[name], dims)
        if len(a) != len(b):
            return False
        for k in ["hour", "daypart", *dims]:
            kind = "int64" if k == "store_id" else str  # a null-padded id column is float
            if not (a[k].astype(kind).to_numpy() == b[k].astype(kind).to_numpy()).all():
                return False
        for f in SUM_FIELDS:  # float sums in another order: equal to about 1e-10
            if not np.allclose(a[f].to_numpy(float), b[f].to_numpy(float), rtol=1e-7, atol=1e-6):
                return False
    return True


def same_totals(ours: pd.DataFrame, cuts: dict[str, pd.DataFrame]) -> bool:
    """Every one of the 26 cuts adds up to the cube's grand totals, field by field."""
    grand = ours[ours["level"] == "all"][list(SUM_FIELDS)].sum()
    return all(
        np.allclose(cut[list(SUM_FIELDS)].sum().to_numpy(), grand.to_numpy(), rtol=1e-7)
        for cut in cuts.values()
    )


def timed(fn: Callable[[], T], repeat: int) -> tuple[dict[str, Any], T]:
    """Run ``fn`` ``repeat`` times: the fastest run (others only lose time to the machine's
    other work) and every run's seconds, with the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        seconds.append(round(time.perf_counter() - t, 2))
    return {"seconds": min(seconds), "runs": seconds}, result  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument(
        "--naive-pandas",
        action="store_true",
        help="also run the straightforward pandas script: all 26 cuts grouped one by one",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per method (fastest counts)")
    parser.add_argument(
        "--pandas-repeat", type=int, default=1, help="runs of each pandas method (slow)"
    )
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}

    results["cxagent"], cube = timed(lambda: build_cube(connect(args.data)), args.repeat)
    results["cxagent"]["rows"] = cube.table.num_rows
    ours = cube.table.to_pandas()

    results["duckdb_sql"], sql_cube = timed(lambda: hand_sql(args.data), args.repeat)
    results["duckdb_sql"]["rows"] = len(sql_cube)
    by_level = {
        level_name(d): sql_cube[sql_cube["level"] == level_name(d)] for d in grouping_sets()
    }
    checks = {"duckdb_sql_same_cells": same_cells(ours, by_level)}
    if not args.skip_pandas:
        results["pandas"], pd_cube = timed(lambda: pandas_cube(args.data), args.pandas_repeat)
        results["pandas"]["rows"] = sum(len(v) for v in pd_cube.values())
        checks["pandas_same_cells"] = same_cells(ours, pd_cube)
    if args.naive_pandas:
        results["pandas_naive_26_cuts"], cuts = timed(
            lambda: pandas_cube(args.data, naive=True), args.pandas_repeat
        )
        results["pandas_naive_26_cuts"]["rows"] = sum(len(v) for v in cuts.values())
        checks["pandas_naive_same_totals"] = same_totals(ours, cuts)
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
