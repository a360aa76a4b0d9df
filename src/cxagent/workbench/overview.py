"""The dashboard's numbers: the marketplace's CX Score trend and its quick stats."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow.compute as pc

from cxagent.workbench.slices import (
    SliceViews,
    daily_trend,
    hourly_trend,
    metric_table,
    window_sums,
)

TREND_DAYS = 30
RECENT_DAYS = 7
BASELINE_DAYS = 28
QUICK_STATS = (
    "cx_score",
    "on_time_rate",
    "cancellation_rate",
    "refund_rate",
    "avg_rating",
    "orders_per_trip",
)


def data_end(views: SliceViews) -> dt.datetime:
    """The end of the last hour of data."""
    last: dt.datetime = pc.max(views.cube.table.column("hour")).as_py()
    return last + dt.timedelta(hours=1)


def overview(views: SliceViews) -> dict[str, Any]:
    """Trends over the last 30 days (daily) and 7 days (hourly), and the last 7 days' metrics
    against the 28 days before them."""
    rows = views.rows({})
    end = data_end(views)
    recent = (end - dt.timedelta(days=RECENT_DAYS), end)
    baseline = (recent[0] - dt.timedelta(days=BASELINE_DAYS), recent[0])
    table = metric_table(window_sums(rows, *baseline), window_sums(rows, *recent), views.missing)
    quick = [
        {
            **{k: v for k, v in row.items() if k not in ("before", "after")},
            "baseline": row["before"],
            "current": row["after"],
        }
        for row in table
        if row["metric"] in QUICK_STATS
    ]
    recent_orders = window_sums(rows, *recent)["orders"]
    return {
        "as_of": end.isoformat(),
        "recent_window": [recent[0].isoformat(), recent[1].isoformat()],
        "baseline_window": [baseline[0].isoformat(), baseline[1].isoformat()],
        "orders_last_7d": int(recent_orders),
        "trend_30d": daily_trend(rows, TREND_DAYS),
        "trend_7d": hourly_trend(rows, RECENT_DAYS * 24),
        "quick_stats": quick,
    }
