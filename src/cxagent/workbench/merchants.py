"""The ops merchant-risk report: stores ranked by the CX they are losing, with their issues.

A store's risk is the CX points it lost in the last 7 days against its own previous 28 days,
times its orders in those 7 days (points x orders: a big store slipping a little can matter
as much as a small one slipping a lot), counted only when the drop is significant at 5%.
Its issues are the components that moved the wrong way, each by a two-proportion test (a
t-like test on the mean for ratings), with the before and after values.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from scipy import stats

from cxagent.engine.cube import SUM_FIELDS
from cxagent.workbench.overview import BASELINE_DAYS, RECENT_DAYS, data_end
from cxagent.workbench.slices import SliceViews, cx_change, stars

ALPHA = 0.05
MAX_STORES = 50
# issue name, numerator, denominator, higher is worse
RATE_ISSUES = (
    ("late deliveries", "late", "delivered", True),
    ("cancellations", "canceled", "orders", True),
    ("refunds", "refunded", "orders", True),
    ("missing or substituted items", "bad_items", "items", True),
    ("support contacts", "support", "orders", True),
)


def _two_proportions(k1: float, n1: float, k2: float, n2: float) -> float:
    """Two-sided p-value that two binomial rates differ (pooled z-test)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se <= 0:
        return math.nan
    return float(2 * stats.norm.sf(abs(k2 / n2 - k1 / n1) / se))


def _rating_p(before: Mapping[str, float], after: Mapping[str, float]) -> float:
    """Two-sided p-value that mean stars differ (Welch's z on sums and sums of squares)."""
    parts = []
    for s in (before, after):
        n = s["ratings"]
        if n < 2:
            return math.nan
        mean = s["stars"] / n
        var = max(s["stars_sq"] / n - mean**2, 0.0)
        parts.append((mean, var / n))
    (m1, v1), (m2, v2) = parts
    se = math.sqrt(v1 + v2)
    return float(2 * stats.norm.sf(abs(m2 - m1) / se)) if se > 0 else math.nan


def store_issues(before: Mapping[str, float], after: Mapping[str, float]) -> list[str]:
    """The components that got significantly worse, worst relative change first."""
    sums = {"before": dict(before), "after": dict(after)}
    for s in sums.values():
        s["late"] = s["delivered"] - s["on_time"]
    found: list[tuple[float, str]] = []
    for name, num, den, _ in RATE_ISSUES:
        b, a = sums["before"], sums["after"]
        if b[den] <= 0 or a[den] <= 0:
            continue
        was, now = b[num] / b[den], a[num] / a[den]
        p = _two_proportions(b[num], b[den], a[num], a[den])
        if now > was and p < ALPHA:
            found.append(((now - was) / max(was, 1e-3), f"{name} {was:.1%} -> {now:.1%}"))
    b, a = sums["before"], sums["after"]
    if b["ratings"] > 0 and a["ratings"] > 0:
        was, now = b["stars"] / b["ratings"], a["stars"] / a["ratings"]
        if now < was and _rating_p(b, a) < ALPHA:
            found.append(((was - now) / was, f"rating {was:.2f} -> {now:.2f} stars"))
    return [text for _, text in sorted(found, reverse=True)]


def _store_sums(views: SliceViews, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Per store: the cube's sums over [start, end)."""
    t = views.cube.table
    hour = t.column("hour")
    keep = pc.and_(
        pc.equal(t.column("level"), "store_id"),
        pc.and_(
            pc.greater_equal(hour, pc.cast(start, hour.type)),
            pc.less(hour, pc.cast(end, hour.type)),
        ),
    )
    part = t.filter(keep).select(["store_id", *SUM_FIELDS]).to_pandas()
    return part.groupby("store_id").sum()


def merchant_risk(
    views: SliceViews, open_incidents: Mapping[Any, list[str]] | None = None
) -> dict[str, Any]:
    """Stores ranked by CX risk (see the module docstring), at most ``MAX_STORES``."""
    end = data_end(views)
    recent = (end - dt.timedelta(days=RECENT_DAYS), end)
    baseline = (recent[0] - dt.timedelta(days=BASELINE_DAYS), recent[0])
    before, after = _store_sums(views, *baseline), _store_sums(views, *recent)
    market = after.sum()
    totals = {str(k): float(v) for k, v in market.items()}
    _, market_cx, _, _ = cx_change(totals, totals, views.missing)
    rows = []
    for store in after.index.intersection(before.index):
        b = {str(k): float(v) for k, v in before.loc[store].items()}
        a = {str(k): float(v) for k, v in after.loc[store].items()}
        if a["orders"] <= 0 or b["orders"] <= 0:
            continue
        was, now, delta, p = cx_change(b, a, views.missing)
        if not np.isfinite(delta):
            continue
        risk = max(-delta, 0.0) * a["orders"] if p < ALPHA else 0.0
        info = views.stores.get(store, {})
        rows.append(
            {
                "store_id": store.item() if hasattr(store, "item") else store,
                "region": info.get("region"),
                "category": info.get("category"),
                "orders": int(a["orders"]),
                "cx_score": round(now, 2),
                "baseline": round(was, 2),
                "delta": round(delta, 2),
                "p_value": round(p, 6) if np.isfinite(p) else None,
                "stars": stars(p),
                "risk": round(risk, 1),
                "issues": store_issues(b, a) if risk > 0 else [],
                "incidents": (open_incidents or {}).get(store, []),
            }
        )
    rows.sort(key=lambda r: (-r["risk"], r["cx_score"]))
    return {
        "recent_window": [recent[0].isoformat(), recent[1].isoformat()],
        "baseline_window": [baseline[0].isoformat(), baseline[1].isoformat()],
        "marketplace_cx": round(market_cx, 2),
        "stores_at_risk": sum(1 for r in rows if r["risk"] > 0),
        "stores": rows[:MAX_STORES],
    }
