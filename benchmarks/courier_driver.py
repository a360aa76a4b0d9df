"""Benchmark: which courier-supply series tells a planted shortage from a region's own swings.

    python benchmarks/courier_driver.py --work DIR [--first-seed 1000] [--scenarios 360]

Reads the scenarios ``rca_scenarios.py --work DIR`` generated (it generates none). For each
region of each scenario it builds the region's hourly series (delivered orders' mean log
couriers on shift in their quarter hour, and mean courier wait of unbatched orders) over the
14 days before a time and the days after it, turns them into anomalies as ``rca.timing``
does (hour of day, and for the weekly variant day of week, leave-one-date-out) and scores the
step at that time as ``rca.alignment`` does (two days after against two before, over the
spread of such steps at earlier hours). Times: the planted start (day 24) in every region,
and a random hour of days 16-24 in regions where no shortage was planted. Prints the AUC of
planted starts against random hours, the null's 95th percentile, and the planted scores'
median per magnitude.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cxagent.rca.alignment import step_score
from cxagent.rca.timing import _anomalies

START = pd.Timestamp("2024-03-04")
CAUSE_DAY = 24
BASELINE = pd.Timedelta(days=14)
# name -> (column, harm sign, weekly)
SERIES = {
    "couriers, hour of day and day of week": ("couriers_log", -1.0, True),
    "couriers, hour of day": ("couriers_log", -1.0, False),
    "courier wait (unbatched), hour of day": ("wait_min", 1.0, False),
}


def hourly(root: Path) -> pd.DataFrame:
    return (
        duckdb.connect()
        .execute(
            f"""
        WITH o AS (
            SELECT o.region, date_trunc('hour', o.order_time) AS h,
                   time_bucket(INTERVAL 15 MINUTE, o.order_time) AS slot,
                   d.canceled_flag, d.batched_flag, d.dasher_wait_s
            FROM read_parquet('{root}/orders/*/*.parquet') o
            JOIN read_parquet('{root}/deliveries/*/*.parquet') d USING (order_id))
        SELECT o.region, o.h, count(*) AS n,
               avg(ln(s.dashers_on_shift)) AS couriers_log,
               avg(CASE WHEN NOT batched_flag THEN dasher_wait_s / 60 END) AS wait_min
        FROM o JOIN read_parquet('{root}/supply/*/*.parquet') s
          ON s.region = o.region AND s.interval_start = o.slot
        WHERE NOT o.canceled_flag AND s.dashers_on_shift > 0
        GROUP BY ALL ORDER BY ALL"""
        )
        .df()
    )


def scores(g: pd.DataFrame, at: pd.Timestamp) -> dict[str, float]:
    g = g[g["h"] >= at - BASELINE].set_index("h")
    full = pd.date_range(g.index.min(), g.index.max(), freq="h")
    g = g.reindex(full)
    enough = g["n"].fillna(0) >= 5
    out = {}
    for name, (column, harm, weekly) in SERIES.items():
        value = g[column].where(enough)
        base = pd.Series((full < at) & value.notna().to_numpy(), index=full)
        anomalies = harm * _anomalies(full, value, base, weekly=weekly)
        out[name] = step_score(anomalies, at.to_pydatetime())[1]
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    greater = (pos[:, None] > neg[None, :]).mean()
    return float(greater + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--scenarios", type=int, default=360)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cause_at = START + pd.Timedelta(days=CAUSE_DAY)
    rows: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.scenarios):
        root = args.work / f"s{seed}"
        if not (root / "truth.json").exists():
            continue
        spec = json.loads((root / "truth.json").read_text())["spec"]
        planted = {
            region: iv["magnitude"]
            for iv in spec["interventions"]
            if iv["cause"] == "dasher_shortage"
            for region in (iv["scope"].get("region") or spec["regions"])
        }
        for region, g in hourly(root).groupby("region"):
            rows.append({"magnitude": planted.get(region, 0.0), **scores(g, cause_at)})
            if region not in planted:
                at = cause_at - pd.Timedelta(hours=int(rng.integers(0, 8 * 24)))
                rows.append({"magnitude": -1.0, **scores(g, at)})
    d = pd.DataFrame(rows)
    planted_rows, null = d[d["magnitude"] > 0], d[d["magnitude"] == -1.0]
    result = {
        "benchmark": "courier_driver",
        "seeds": [args.first_seed, args.first_seed + args.scenarios - 1],
        "planted_starts": len(planted_rows),
        "null_hours": len(null),
        "series": {
            name: {
                "auc_planted_vs_null": round(
                    auc(planted_rows[name].to_numpy(), null[name].to_numpy()), 3
                ),
                "null_p95": round(float(null[name].quantile(0.95)), 2),
                "planted_median_by_magnitude": {
                    str(m): round(float(g[name].median()), 2)
                    for m, g in planted_rows.groupby("magnitude")
                },
            }
            for name in SERIES
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
