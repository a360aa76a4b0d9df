"""Difference-in-differences of an incident slice against comparable unaffected slices.

A mechanism that caused the regression moved its driver in the incident slice and not (or
less) in comparable slices over the same days: batched share in SF grocery rose while it held
in other regions' grocery and in SF's other categories. A market-wide swing (a holiday
evening, a rainy week) moves both, and the contrast cancels it. So each hypothesis's driver,
and the late rate itself, gets a difference-in-differences (``did.diff_in_diff``: store and
day fixed effects, errors clustered by store, event-study pre-trend and placebo) on a
store x day panel:

- treated: the stores' orders in the slice;
- controls: the slices one step away, differing in exactly one of the slice's scope
  dimensions (region, category) and sharing the rest: for SF + grocery, grocery in the
  other regions and SF's other categories; for a single store, the other stores of its
  region and category; daypart and basket size, when the slice names them, hold for both
  (the same dinner hours are compared);
- periods: days counted from the start of the regression (``t0``), so period 0 begins
  exactly at ``t0`` and "post" is period >= 0.

A slice that is the whole marketplace, or a daypart or basket size alone, has nothing
comparable beside it: then there is no contrast and the evidence says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from cxagent.engine.connection import Engine
from cxagent.engine.facts import per_order_items, placed_between
from cxagent.engine.portable import seconds_between
from cxagent.metrics.definitions import ON_TIME_GRACE_S
from cxagent.rca.did import DidResult, diff_in_diff
from cxagent.rca.orders import check_slice

SCOPE_KEYS: Final = ("region", "category")
# clustered errors need several treated clusters (Conley and Taber 2011); with fewer than 3
# stores in the slice the DiD is not shown, and with few the interval is optimistic
MIN_TREATED_STORES: Final = 3
CONDITION_KEYS: Final = ("daypart", "basket_size")
DAY_S: Final = 86_400

# what each DiD measures: panel numerator, denominator, a per-order mean (not a share), the
# sign of harm (shorter promises hurt), how it reads, its unit
DRIVERS: Final[dict[str, tuple[str, str, bool, float, str, str]]] = {
    "late": ("late", "delivered", False, 1.0, "late rate", "pts"),
    "batching_policy": ("batched", "delivered", False, 1.0, "batched share", "pts"),
    "prep_time_drift": ("prep_sum", "prep_n", True, 1.0, "merchant prep", "min"),
    "dasher_shortage": ("wait_sum", "unbatched", True, 1.0, "courier wait (unbatched)", "min"),
    "eta_model_bias": ("promised_sum", "delivered", True, -1.0, "promised time", "min"),
    "inventory_drop": ("bad_items", "item_lines", False, 1.0, "bad item line rate", "pts"),
}


@dataclass(frozen=True)
class Contrast:
    """DiD of one driver: its change in the slice beyond the comparable slices' change."""

    driver: str
    result: DidResult
    harm: float  # +1 when a rise hurts, -1 when a fall does (promised time)
    label: str
    unit: str

    @property
    def t(self) -> float:
        """Harm-signed t statistic (positive: the slice got worse than its neighbours)."""
        r = self.result
        return float(self.harm * r.effect / r.se) if r.se > 0 else 0.0

    def describe(self, comparison: str) -> str:
        r = self.result
        scale = 100.0 if self.unit == "pts" else 1.0
        checks = []
        if np.isfinite(r.pretrend_p):
            checks.append(f"pre-trend p {r.pretrend_p:.2f}")
        if np.isfinite(r.placebo_p):
            checks.append(f"placebo p {r.placebo_p:.2f}")
        tail = f"; {', '.join(checks)}" if checks else ""
        return (
            f"diff-in-diff against {comparison}: {self.label} {r.effect * scale:+.1f} {self.unit} "
            f"(95% CI {r.ci_low * scale:+.1f} to {r.ci_high * scale:+.1f}, p {_p(r.p_value)}, "
            f"{r.n_treated} of {r.n_units} stores treated{tail})"
        )


@dataclass(frozen=True)
class SliceContrast:
    comparison: str  # the comparable slices, in words
    drivers: dict[str, Contrast]  # driver -> its DiD (only those the data can measure)
    skipped: str | None = None  # why there is no DiD although there are comparable slices


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def comparison_of(where: Mapping[str, Any], store: Mapping[str, Any] | None = None) -> str | None:
    """The comparable slices of ``where`` in words, or None when it has none."""
    if "store_id" in where:
        return "the other stores of its region and category" if store else None
    scope = [k for k in SCOPE_KEYS if k in where]
    if not scope:
        return None
    parts = []
    for k in scope:
        others = {"region": "regions", "category": "categories"}[k]
        same = [str(where[j]) for j in scope if j != k]
        parts.append(f"{' '.join(same) + ' in ' if same else ''}the other {others}")
    return " and ".join(parts)


def _conditions(
    o: ir.Table, where: Mapping[str, Any], store: Mapping[str, Any] | None
) -> tuple[ir.BooleanValue, ir.BooleanValue] | None:
    """(treated, control) conditions on orders, or None without comparable slices."""
    common = ibis.literal(True)
    for k in CONDITION_KEYS:
        if k in where:
            common &= o[k] == ibis.literal(where[k])
    if "store_id" in where:
        if store is None:
            return None
        peers = (o.region == ibis.literal(store["region"])) & (
            o.category == ibis.literal(store["category"])
        )
        treated = o.store_id == ibis.literal(where["store_id"])
        return common & treated, common & peers & ~treated
    scope = [k for k in SCOPE_KEYS if k in where]
    if not scope:
        return None
    treated = ibis.literal(True)
    for k in scope:
        treated &= o[k] == ibis.literal(where[k])
    control = ibis.literal(False)
    for k in scope:
        one_step = o[k] != ibis.literal(where[k])
        for j in scope:
            if j != k:
                one_step &= o[j] == ibis.literal(where[j])
        control |= one_step
    return common & treated, common & control


def _store_of(engine: Engine, store_id: Any) -> dict[str, Any] | None:
    o = engine.table("orders")
    row = (
        o.filter(o.store_id == ibis.literal(store_id))
        .select("region", "category")
        .limit(1)
        .to_pyarrow()
        .to_pylist()
    )
    return row[0] if row else None


def store_day_panel(
    engine: Engine,
    where: Mapping[str, Any],
    t0: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[pd.DataFrame, str] | None:
    """Store x day sums of the slice and its comparable slices in ``[start, end)``, with
    days counted from ``t0``; None when the slice has no comparable slices."""
    check_slice(where)
    store = _store_of(engine, where["store_id"]) if "store_id" in where else None
    comparison = comparison_of(where, store)
    o = engine.table("orders")
    conds = _conditions(o, where, store)
    if conds is None or comparison is None:
        return None
    treated, control = conds
    o = o.filter(placed_between(o, start, end) & (treated | control)).mutate(treated=treated)
    d = engine.table("deliveries")
    d = d.filter(placed_between(d, start, end))
    f = o.inner_join(d.drop("order_time"), "order_id")
    items = per_order_items(engine, (start, end))
    if items is not None:
        f = f.left_join(items, "order_id").drop("order_id_right")
    delivered = ~f.canceled_flag
    late_s = seconds_between(engine.backend, f.actual_delivery_time, f.promised_eta)
    unbatched = delivered & ~f.batched_flag.fill_null(True)
    period = (f.order_time.epoch_seconds() - int(t0.timestamp())) // DAY_S
    minutes = 60.0
    sums = {
        "delivered": delivered.cast("int64").sum(),
        "late": (delivered & (late_s > ON_TIME_GRACE_S)).cast("int64").sum(),
        "batched": (delivered & f.batched_flag.fill_null(False)).cast("int64").sum(),
        "prep_sum": (f.merchant_prep_time_s / minutes).sum(),
        "prep_n": f.merchant_prep_time_s.count(),
        "wait_sum": ibis.ifelse(unbatched, f.dasher_wait_s / minutes, 0.0).sum(),
        "unbatched": unbatched.cast("int64").sum(),
        "promised_sum": ibis.ifelse(
            delivered,
            seconds_between(engine.backend, f.promised_eta, f.order_time) / minutes,
            0.0,
        ).sum(),
        "item_lines": f.item_count.sum(),
    }
    if items is not None:
        sums["bad_items"] = f.bad_items.fill_null(0).sum()
    panel = f.group_by(store_id=f.store_id, period=period, treated=f.treated).aggregate(**sums)
    frame = engine.con.to_pyarrow(panel).to_pandas()
    if "bad_items" not in frame:
        frame["bad_items"] = np.nan
    frame["post"] = frame["period"] >= 0
    return frame, comparison


def slice_contrast(
    engine: Engine,
    where: Mapping[str, Any],
    t0: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
    *,
    missing: set[str] | frozenset[str] = frozenset(),
) -> SliceContrast | None:
    """DiD of the late rate and of every measurable driver, or None without comparable
    slices. ``missing`` names the mechanisms the data cannot measure (skipped)."""
    built = store_day_panel(engine, where, t0, start, end)
    if built is None:
        return None
    panel, comparison = built
    out = {}
    for driver, (num, den, is_mean, harm, label, unit) in DRIVERS.items():
        if driver in missing or panel[num].isna().all() or panel[den].isna().all():
            continue
        data = panel[["store_id", "period", "treated", "post", num, den]].fillna(0.0)
        try:
            result = diff_in_diff(
                data,
                unit="store_id",
                numerator=num,
                denominator=den,
                bounded=not is_mean,
            )
        except ValueError:  # no treated or control rows on one side: no contrast
            continue
        if result.n_treated < MIN_TREATED_STORES:
            # with one or two treated stores, errors clustered by store mean nothing
            return SliceContrast(comparison, {}, f"only {result.n_treated} treated store(s)")
        out[driver] = Contrast(driver, result, harm, label, unit)
    return SliceContrast(comparison, out) if out else None
