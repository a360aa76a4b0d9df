"""A slice's numbers for the workbench, from the hourly cube: window totals, the metric table
before and after, the daily trend, and the drilldown into sub-slices with significance.

Everything here is arithmetic on the cube's additive sums (no order-level reads), so a view
costs milliseconds; the CX Score's standard error is the delta-method one of
``cxagent.metrics.series`` applied to window totals.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from cxagent.engine.cube import MAX_DIMS, SET_DIMS, SUM_FIELDS, Cube, level_name
from cxagent.metrics.definitions import METRICS, STAT_FIELDS, CXStats
from cxagent.metrics.series import SliceSeries, slice_label
from cxagent.store.repository import slice_key

DRILL_DIMS = (*SET_DIMS, "daypart")
MAX_CHILDREN = 12  # sub-slices listed per dimension, worst first


def window_sums(rows: pa.Table, start: dt.datetime, end: dt.datetime) -> dict[str, float]:
    """Sums of the cube's fields over rows whose hour lies in [start, end)."""
    hour = rows.column("hour")
    keep = pc.and_(
        pc.greater_equal(hour, pa.scalar(start, hour.type)),
        pc.less(hour, pa.scalar(end, hour.type)),
    )
    part = rows.filter(keep)
    return {f: float(pc.sum(part.column(f)).as_py() or 0.0) for f in SUM_FIELDS}


def metric_values(sums: Mapping[str, float]) -> dict[str, float]:
    """Every metric of ``METRICS`` from window sums (NaN where a denominator is empty)."""
    return CXStats(**{f: sums[f] for f in STAT_FIELDS}).metrics()


def _number(x: float, digits: int = 4) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


def metric_table(
    before: Mapping[str, float], after: Mapping[str, float], missing: frozenset[str]
) -> list[dict[str, Any]]:
    """One row per metric the data measures: before, after and the change."""
    b, a = metric_values(before), metric_values(after)
    rows = []
    for name, info in METRICS.items():
        if not (math.isfinite(b[name]) or math.isfinite(a[name])):
            continue  # the data has nothing for it (Olist has no ratings of couriers, say)
        if name == "refund_rate" and "refunded" in missing:
            continue
        rows.append(
            {
                "metric": name,
                "label": info.label,
                "unit": info.unit,
                "better": "higher" if info.higher_is_better else "lower",
                "before": _number(b[name]),
                "after": _number(a[name]),
                "delta": _number(a[name] - b[name]),
            }
        )
    return rows


def cx_change(
    before: Mapping[str, float], after: Mapping[str, float], missing: frozenset[str]
) -> tuple[float, float, float, float]:
    """(CX before, CX after, change, two-sided p-value of the change): the delta-method
    variance of each window's score, the two windows independent."""
    stats_ = {f: np.array([[before[f], after[f]]], dtype=float) for f in SUM_FIELDS}
    series = SliceSeries(slices=[{}], hours=np.arange(2), stats=stats_, missing=missing)
    score, var = series.cx_score()
    was, now = float(score[0, 0]), float(score[0, 1])
    se = math.sqrt(float(var[0, 0] + var[0, 1]))
    delta = now - was
    p = float(2 * stats.norm.sf(abs(delta) / se)) if se > 0 and math.isfinite(delta) else math.nan
    return was, now, delta, p


def stars(p: float) -> str:
    """Significance stars as the incident feed shows them."""
    if not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def daily_trend(rows: pa.Table, days: int | None = None) -> dict[str, list[Any]]:
    """The slice's CX Score and orders per day (the last ``days`` days when given)."""
    if rows.num_rows == 0:
        return {"x": [], "cx_score": [], "orders": []}
    day = pc.floor_temporal(rows.column("hour"), unit="day")
    t = rows.select(list(SUM_FIELDS)).append_column("day", day)
    daily = t.group_by("day").aggregate([(f, "sum") for f in SUM_FIELDS]).sort_by("day")
    if days is not None:
        daily = daily.slice(max(daily.num_rows - days, 0))
    out: dict[str, list[Any]] = {"x": [], "cx_score": [], "orders": []}
    sums = {f: daily.column(f"{f}_sum").to_numpy(zero_copy_only=False) for f in SUM_FIELDS}
    for i, d in enumerate(daily.column("day").to_pylist()):
        values = metric_values({f: float(sums[f][i]) for f in SUM_FIELDS})
        out["x"].append(d.date().isoformat())
        out["cx_score"].append(_number(values["cx_score"], 2))
        out["orders"].append(int(sums["orders"][i]))
    return out


def hourly_trend(rows: pa.Table, hours: int) -> dict[str, list[Any]]:
    """CX Score and orders per hour over the last ``hours`` hours of the slice's rows."""
    rows = rows.sort_by("hour")
    rows = rows.slice(max(rows.num_rows - hours, 0))
    out: dict[str, list[Any]] = {"x": [], "cx_score": [], "orders": []}
    cols = {f: rows.column(f).to_numpy(zero_copy_only=False) for f in SUM_FIELDS}
    for i, h in enumerate(rows.column("hour").to_pylist()):
        values = metric_values({f: float(np.nan_to_num(cols[f][i])) for f in SUM_FIELDS})
        out["x"].append(h.isoformat())
        out["cx_score"].append(_number(values["cx_score"], 2))
        out["orders"].append(int(np.nan_to_num(cols["orders"][i])))
    return out


class SliceViews:
    """Metric tables and drilldowns of any slice, from the cube and each store's region and
    category (the cube's store rows do not repeat what a store implies)."""

    def __init__(self, cube: Cube, stores: Mapping[Any, Mapping[str, Any]]) -> None:
        self.cube = cube
        self.stores = stores
        self.missing = cube.missing_fields

    def rows(self, slice_: Mapping[str, Any]) -> pa.Table:
        """The slice's hourly rows; none when a store is asked for under a region or a
        category it is not in."""
        where = dict(slice_)
        if "store_id" in where:
            known = self.stores.get(where["store_id"], {})
            for dim in self.cube.implied_by_store & where.keys():
                if known.get(dim) != where.pop(dim):
                    return self.cube.table.slice(0, 0)
        return self.cube.slice_rows(where)

    def children(self, parent: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every slice one dimension finer than ``parent``: the daypart, a store of the
        parent's region and category, or another dimension the cube can still group by."""
        table = self.cube.table
        implied = self.cube.implied_by_store
        out: list[dict[str, Any]] = []
        for dim in DRILL_DIMS:
            if dim in parent or ("store_id" in parent and dim in implied):
                continue
            if dim == "daypart":
                values = pc.unique(self.rows(parent).column("daypart")).to_pylist()
            elif dim == "store_id":
                values = [
                    sid
                    for sid, info in self.stores.items()
                    if all(info.get(k) == v for k, v in parent.items() if k in implied)
                ]
                if len([d for d in parent if d not in ("daypart", *implied)]) >= MAX_DIMS:
                    values = []
            else:
                dims = tuple(d for d in SET_DIMS if d in parent or d == dim)
                if "store_id" in dims:
                    dims = tuple(d for d in dims if d not in implied)
                if len(dims) > MAX_DIMS:
                    continue
                level = table.filter(pc.equal(table.column("level"), level_name(dims)))
                values = pc.unique(level.column(dim)).to_pylist()
            out.extend({**parent, dim: v} for v in sorted(v for v in values if v is not None))
        return out

    def node(
        self,
        slice_: Mapping[str, Any],
        before: tuple[dt.datetime, dt.datetime],
        after: tuple[dt.datetime, dt.datetime],
    ) -> dict[str, Any]:
        """A slice's metric table and its sub-slices, worst CX loss (change x orders) first,
        at most ``MAX_CHILDREN`` per dimension."""
        rows = self.rows(slice_)
        by_dim: dict[str, list[dict[str, Any]]] = {}
        for child in self.children(slice_):
            c_rows = self.rows(child)
            b, a = window_sums(c_rows, *before), window_sums(c_rows, *after)
            if a["orders"] <= 0 or b["orders"] <= 0:
                continue
            was, now, delta, p = cx_change(b, a, self.missing)
            if not math.isfinite(delta):
                continue
            dim = next(d for d in child if d not in slice_)
            by_dim.setdefault(dim, []).append(
                {
                    "key": slice_key(child),
                    "slice": child,
                    "label": slice_label(child),
                    "dimension": dim,
                    "orders": int(a["orders"]),
                    "before": _number(was, 2),
                    "after": _number(now, 2),
                    "delta": _number(delta, 2),
                    "p_value": _number(p, 6),
                    "stars": stars(p),
                    "loss": _number(-delta * a["orders"], 1),
                }
            )
        children = []
        for dim_rows in by_dim.values():
            dim_rows.sort(key=lambda r: -(r["loss"] or 0.0))
            children.extend(dim_rows[:MAX_CHILDREN])
        return {
            "slice": dict(slice_),
            "key": slice_key(dict(slice_)),
            "label": slice_label(dict(slice_)),
            "metrics": metric_table(
                window_sums(rows, *before), window_sums(rows, *after), self.missing
            ),
            "children": sorted(children, key=lambda r: -(r["loss"] or 0.0)),
        }
