"""What a fix would have done: counterfactual CX and efficiency of an incident's orders.

The orders of the incident's slice after the regression began are the ones a fix is for. For
each fix the per-order statistics of the CX Score and of efficiency (``CXStats`` fields plus
the customer's wait) are re-estimated as they would have been with the fix, and summed; the
metrics of both sums give every change (CX Score, on-time rate, cancellations, refunds,
support contacts, rating; orders per trip, dasher minutes per delivery, cost per delivery,
customer wait, deliveries per dasher hour). Four estimators cover the fixes:

- **Batching** (``batching_estimate``): within strata of daypart x tercile of courier load
  (cut at the baseline's terciles), an order's outcome is the unbatched outcome now plus, for
  the share of orders the fix would batch, the penalty of riding on an allowed trip, measured
  on today's trips of that size where there are enough, else the baseline's. Restoring the
  previous policy brings back the baseline batched share; capping trips at the old size keeps
  today's share (eligibility does not depend on the cap); stopping batching sets the share to
  0. Unbatched orders now carry everything else that changed (prep drift,
  supply), so that is not credited to the fix.
- **Promise shift** (``promise_estimate``): adding ``shift`` minutes to an order's promise
  moves its lateness by exactly that, so on-time and ETA error are recomputed order by order.
  What customers do about lateness comes from response curves fitted on the slice's own
  orders (isotonic regression on lateness bins): support contacts and refunds rise with
  lateness, stars fall. Cancellations happen before delivery, so their curve is on the
  lateness an order was heading for: prep + courier wait + a predicted travel leg (least
  squares of the delivered orders' leg on distance, per daypart) - promise.
- **Courier supply** (``supply_estimate``): the lateness machinery of promise shifts with the
  hand-off earlier instead of the promise later, by the courier wait and batching a lighter
  load per dasher brings (the slice's own load curves).
- **Hiding SKUs** (``suppress_estimate``): the hidden SKUs' order lines dropped.

Intervals: 90% percentile intervals of the changes over a pigeonhole bootstrap of days and
stores (a day's shocks are shared by its orders, a store's differences last; Owen 2007), the
strata and response curves refitted in each replicate (the supply estimate's load curves are
fitted once). An incident of one day at one store has a single after unit, and its interval
then reflects only the refitted baseline. Known limits, measured by ``benchmarks/whatif.py``: the estimators ignore how a fix feeds back on
courier load (a busier pool when fewer orders share trips).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import isotonic_regression

from cxagent.metrics.definitions import (
    ON_TIME_GRACE_S,
    STAT_FIELDS,
    Component,
    CXStats,
    cx_components,
)
from cxagent.metrics.series import measured

GRACE_MIN: Final = ON_TIME_GRACE_S / 60.0
FIELDS: Final = (*STAT_FIELDS, "wait_s", "promised_s")
METRICS: Final = (
    "cx_score",
    "on_time_rate",
    "eta_mae_min",
    "item_accuracy",
    "cancellation_rate",
    "refund_rate",
    "support_contact_rate",
    "avg_rating",
    "orders_per_trip",
    "dasher_min_per_delivery",
    "cost_per_delivery",
    "customer_wait_min",
    "promised_min",
    "deliveries_per_dasher_hour",
)
BatchingTarget = Literal["baseline", "cap_only", "none"]
LATE_BIN_MIN: Final = 1.0  # lateness bins of the response curves
LATE_RANGE: Final = (-45.0, 90.0)
N_LATE_BINS: Final = int((LATE_RANGE[1] - LATE_RANGE[0]) / LATE_BIN_MIN) + 1
MIN_CELL: Final = 30  # orders a stratum needs to measure a penalty from today's trips


@dataclass(frozen=True)
class Estimate:
    """Changes of every metric with the fix (with minus without) and their 90% intervals."""

    orders: int
    without: dict[str, float]
    delta: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    replicates: int
    notes: list[str] = field(default_factory=list)
    # relative efficiency change and interval when it is not deliveries per active dasher
    # hour (a supply incentive pays for dashers on shift, busy or not)
    efficiency: tuple[float, float, float] | None = None

    @property
    def efficiency_change(self) -> float:
        """Relative change of deliveries per dasher hour (-0.05 = 5% less efficient)."""
        if self.efficiency is not None:
            return self.efficiency[0]
        return self.relative("deliveries_per_dasher_hour")

    @property
    def efficiency_interval(self) -> tuple[float, float]:
        if self.efficiency is not None:
            return self.efficiency[1], self.efficiency[2]
        return self.relative_interval("deliveries_per_dasher_hour")

    def relative(self, metric: str) -> float:
        base = self.without.get(metric, np.nan)
        return float(self.delta[metric] / base) if base else float("nan")

    def relative_interval(self, metric: str) -> tuple[float, float]:
        base = self.without.get(metric, np.nan)
        if not base:
            return float("nan"), float("nan")
        return float(self.low[metric] / base), float(self.high[metric] / base)


def scored_components(frame: pd.DataFrame) -> tuple[Component, ...]:
    """The CX Score's components the data measures: one whose statistics the source lacks
    (Olist has no support contacts, say) is left out and the weights renormalised, as
    detection does, never scored as perfect."""
    missing = frozenset(frame.attrs.get("missing", [])) & frozenset(STAT_FIELDS)
    return tuple(c for c in cx_components() if measured(c.name, missing))


def metrics_of(
    sums: np.ndarray, components: tuple[Component, ...] | None = None
) -> dict[str, float]:
    """Metrics of summed ``FIELDS``: CX Score (of ``components``, else those in force), rates,
    efficiency, customer wait."""
    stats = CXStats(**dict(zip(STAT_FIELDS, map(float, sums[: len(STAT_FIELDS)]), strict=True)))
    out = stats.metrics(components)
    delivered = max(stats.delivered, 1e-12)
    out["customer_wait_min"] = float(sums[len(STAT_FIELDS)]) / delivered / 60.0
    out["promised_min"] = float(sums[len(STAT_FIELDS) + 1]) / max(stats.orders, 1e-12) / 60.0
    minutes = out["dasher_min_per_delivery"]
    out["deliveries_per_dasher_hour"] = 60.0 / minutes if minutes and minutes > 0 else np.nan
    return {k: float(out[k]) for k in METRICS}


def order_stats(frame: pd.DataFrame) -> np.ndarray:
    """Per-order contributions to ``FIELDS`` (rows) from an ``order_frame(outcomes=True)``."""
    delivered = frame["delivered"].to_numpy(bool)
    late = frame["late_min"].to_numpy(float)
    stars = frame["stars"].to_numpy(float)
    rated = np.isfinite(stars)

    def when_delivered(col: str, scale: float = 1.0) -> np.ndarray:
        values = frame[col].to_numpy(float)
        if not np.isfinite(values[delivered]).any():  # the source does not record it
            return np.where(delivered, np.nan, 0.0)
        return np.where(delivered, np.nan_to_num(values) * scale, 0.0)

    cols = {
        "orders": np.ones(len(frame)),
        "delivered": delivered.astype(float),
        "on_time": (delivered & (np.nan_to_num(late) <= GRACE_MIN)).astype(float),
        "eta_abs_error_s": np.where(delivered, np.abs(np.nan_to_num(late)) * 60.0, 0.0),
        "canceled": frame["canceled"].to_numpy(float),
        "refunded": np.nan_to_num(frame["refunded"].to_numpy(float)),
        "items": when_delivered("item_count"),
        "bad_items": when_delivered("bad_items"),
        "support": np.nan_to_num(frame["support"].to_numpy(float)),
        "ratings": rated.astype(float),
        "stars": np.where(rated, stars, 0.0),
        "trips": np.where(delivered, 1.0 / np.maximum(frame["trip_size"].to_numpy(float), 1), 0),
        "dasher_active_s": when_delivered("dasher_active_min", 60.0),
        "delivery_cost": when_delivered("delivery_cost"),
        "wait_s": when_delivered("delivery_min", 60.0),
        "promised_s": frame["promised_min"].to_numpy(float) * 60.0,
    }
    return np.vstack([np.asarray(cols[f], dtype=float) for f in FIELDS])


def _dense_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for small non-negative integer keys, by
    counting instead of sorting."""
    if not len(keys):
        return np.unique(keys, return_inverse=True)
    present = np.bincount(keys) > 0
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[keys]


# A counterfactual: (the weight of each store-day) -> (factual sums, counterfactual sums) over
# the after orders
Counterfactual = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Units:
    """Resampling units: the store-days of the frame (only those with orders)."""

    of_order: np.ndarray  # unit index per order
    day: np.ndarray  # day index per unit
    store: np.ndarray  # store index per unit
    n_days: int
    n_stores: int

    @property
    def n(self) -> int:
        return len(self.day)

    def sums(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Each row of ``values`` summed over the masked orders of every unit: [row, unit]."""
        return np.stack(
            [np.bincount(self.of_order[mask], weights=v[mask], minlength=self.n) for v in values]
        )

    @staticmethod
    def of(frame: pd.DataFrame) -> _Units:
        day = pd.factorize(frame["order_time"].dt.floor("D"))[0].astype(np.int64)
        store = pd.factorize(frame["store_id"])[0].astype(np.int64)
        n_stores = int(store.max()) + 1 if len(store) else 1
        codes, of_order = _dense_unique(day * n_stores + store)
        return _Units(
            of_order.astype(np.int64),
            codes // n_stores,
            codes % n_stores,
            int(day.max()) + 1 if len(day) else 0,
            n_stores,
        )


def _bootstrap(
    frame: pd.DataFrame,
    units: _Units,
    cf: Counterfactual,
    n_bootstrap: int,
    seed: int,
    notes: list[str],
) -> Estimate:
    """Point estimate and intervals from a pigeonhole bootstrap of days and stores (Owen
    2007): each replicate draws days and stores with replacement, and a store-day weighs the
    product of how often its day and its store were drawn. Days carry the shocks their orders
    share (a busy evening), stores their lasting differences, and an incident of one day still
    gets an interval. ``cf`` takes the weight of every store-day (all ones for the point
    estimate; ``units``: ``_Units.of(frame)``)."""
    after = frame["after"].to_numpy(bool)
    f_sum, c_sum = cf(np.ones(units.n))
    components = scored_components(frame)
    without, with_fix = metrics_of(f_sum, components), metrics_of(c_sum, components)
    delta = {k: with_fix[k] - without[k] for k in METRICS}
    reps: dict[str, list[float]] = {k: [] for k in METRICS}
    has_after = np.bincount(units.of_order[after], minlength=units.n) > 0
    has_before = np.bincount(units.of_order[~after], minlength=units.n) > 0
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        m_day = np.bincount(rng.integers(0, units.n_days, units.n_days), minlength=units.n_days)
        m_store = np.bincount(
            rng.integers(0, units.n_stores, units.n_stores), minlength=units.n_stores
        )
        m = (m_day[units.day] * m_store[units.store]).astype(float)
        if not (m * has_after).any() or not (m * has_before).any():
            continue
        f, c = cf(m)
        mf, mc = metrics_of(f, components), metrics_of(c, components)
        for k in METRICS:
            reps[k].append(mc[k] - mf[k])
    low, high = {}, {}
    for k in METRICS:
        r = np.asarray(reps[k], dtype=float)
        r = r[np.isfinite(r)]
        low[k], high[k] = (
            (float(np.quantile(r, 0.05)), float(np.quantile(r, 0.95)))
            if r.size
            else (np.nan, np.nan)
        )
    return Estimate(int(after.sum()), without, delta, low, high, len(reps["cx_score"]), list(notes))


# --- batching ------------------------------------------------------------------------------


def _load_strata(frame: pd.DataFrame, after: np.ndarray) -> np.ndarray:
    daypart = pd.factorize(frame["daypart"])[0].astype(np.int64)
    busy = frame["busy_share"].to_numpy(float)
    known = np.isfinite(busy[~after])
    stratum = daypart * 3
    if known.any():
        cuts = np.quantile(busy[~after][known], [1 / 3, 2 / 3])
        stratum = stratum + np.searchsorted(cuts, np.nan_to_num(busy))
    return stratum


def batching_estimate(
    frame: pd.DataFrame,
    target: BatchingTarget = "baseline",
    *,
    cap: int | None = None,
    only: np.ndarray | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Estimate:
    """Change of every metric of the ``after`` orders of ``frame`` (an ``order_frame`` with
    ``outcomes`` and a boolean ``after`` column) had batching been at ``target`` with trips
    of at most ``cap`` orders (``target`` "none": no batching), for the orders ``only`` marks
    (all when not given; fragile orders, say: their strata are kept apart, so their penalty
    of batching is their own)."""
    _require(frame, ("batched", "busy_share", "trip_size"))
    if target != "none" and (cap is None or cap < 2):
        raise ValueError(f"cap: batching to {target!r} needs a trip cap of 2 or more, got {cap}")
    after = frame["after"].to_numpy(bool)
    batched = np.nan_to_num(frame["batched"].to_numpy(float)) > 0
    trip = np.nan_to_num(frame["trip_size"].to_numpy(float), nan=1.0)
    # 0 alone, 1 batched on a trip the cap allows, 2 batched on a larger trip
    size_class = np.where(~batched, 0, np.where(trip <= (cap or 1), 1, 2))
    stats = order_stats(frame)
    stratum = _load_strata(frame, after)
    applies = np.ones(int(stratum.max()) + 1 if len(stratum) else 1, dtype=bool)
    if only is not None:  # a stratum is the fix's or not
        stratum = stratum * 2 + np.asarray(only, dtype=bool)
        applies = np.arange(int(stratum.max()) + 1 if len(stratum) else 2) % 2 == 1
    n_strata = len(applies)
    cell = (stratum * 2 + after) * 3 + size_class  # stratum x after x class
    k = len(FIELDS)
    promised = FIELDS.index("promised_s")
    # every replicate weighs whole store-days: sum each cell's orders per store-day once
    units = _Units.of(frame)
    unit, n_units = units.of_order, units.n
    n_cells = 6 * n_strata
    key = unit * n_cells + cell
    per_unit_n = np.bincount(key, minlength=n_units * n_cells).reshape(n_units, n_cells)
    per_unit = _FieldSums.of(
        np.stack(  # [field, unit, cell]
            [
                np.bincount(key, weights=stats[i], minlength=n_units * n_cells).reshape(
                    n_units, n_cells
                )
                for i in range(k)
            ]
        )
    )

    # where today's trips are many enough to measure the penalty: decided once, on the data
    # as it is, so that replicates do not switch between sources
    enough_now = per_unit_n.sum(axis=0).reshape(-1, 2, 3)[:, 1, 1] >= MIN_CELL

    def cf(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (m @ per_unit_n).reshape(-1, 2, 3)
        sums = per_unit(m).reshape(k, -1, 2, 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / n  # [field, stratum, period, class]
            now_all = sums[:, :, 1].sum(axis=2) / n[:, 1].sum(axis=1)
            before_batched = sums[:, :, 0, 1:].sum(axis=2) / n[:, 0, 1:].sum(axis=1)
            share_before = n[:, 0, 1:].sum(axis=1) / n[:, 0].sum(axis=1)
        alone = np.where(np.isfinite(mean[:, :, 1, 0]), mean[:, :, 1, 0], now_all)
        # what riding on an allowed trip costs over riding alone: measured now where enough
        # orders did, else the baseline's penalty, else nothing
        penalty_now = mean[:, :, 1, 1] - alone
        penalty_before = before_batched - mean[:, :, 0, 0]
        penalty = np.where(enough_now, penalty_now, np.nan_to_num(penalty_before))
        factual_s = sums[:, :, 1].sum(axis=2)  # [field, stratum]
        n_now = n[:, 1].sum(axis=1)
        if target == "none":
            cf_s = alone * n_now
        elif target == "cap_only":  # who is batched stays; larger trips split to allowed ones
            cf_s = sums[:, :, 1, 0] + sums[:, :, 1, 1] + (alone + penalty) * n[:, 1, 2]
        else:
            cf_s = (alone + np.nan_to_num(share_before) * penalty) * n_now
        factual = np.nansum(factual_s, axis=1)
        counterfactual = np.nansum(np.where(applies, cf_s, factual_s), axis=1)
        counterfactual[promised] = factual[promised]  # batching does not move promises
        return factual, counterfactual

    notes = [
        f"batching at the {target.replace('_', ' ')} level"
        + (f" with trips of at most {cap}" if target != "none" else "")
        + ", per daypart and courier load"
    ]
    return _bootstrap(frame, units, cf, n_bootstrap, seed, notes)


# --- promise shifts ------------------------------------------------------------------------


def _fit_curve(weight: np.ndarray, total: np.ndarray, *, increasing: bool) -> np.ndarray:
    """Isotonic response on the fixed lateness bins (``_bin``) from each bin's weight and
    weighted total of the outcome; bins without orders take the nearest bins' fit."""
    lo, _ = LATE_RANGE
    centres = lo + LATE_BIN_MIN * np.arange(len(weight))
    has = weight > 0
    if has.sum() < 2:
        return np.full(len(weight), float(total.sum() / max(weight.sum(), 1e-12)))
    fitted = isotonic_regression(
        total[has] / weight[has], weights=weight[has], increasing=increasing
    ).x
    return np.asarray(np.interp(centres, centres[has], fitted), dtype=float)


@dataclass(frozen=True)
class _UnitSums:
    """A [unit, key] table and its sums over units weighted by a replicate: ``table(m)`` is
    ``m @ table``.

    A table of whole numbers (orders, late or rated ones, support contacts, stars per unit
    and key) is kept sparse: most store-days have orders in a few keys only, and its weighted
    sums are whole numbers too (the weights are draw counts), exact in any order, so adding
    up its non-zero entries alone gives exactly the dense product's result, many times
    faster. Any other table stays dense, its product unchanged."""

    dense: np.ndarray | None  # [unit, key]
    sparse: sp.csr_matrix | None  # [key, unit]

    @staticmethod
    def of(table: np.ndarray) -> _UnitSums:
        if np.isfinite(table).all() and np.array_equal(table, np.floor(table)):
            return _UnitSums(None, sp.csr_matrix(table.T))
        return _UnitSums(table, None)

    def __call__(self, m: np.ndarray) -> np.ndarray:
        if self.sparse is not None:
            return np.asarray(self.sparse @ m)
        assert self.dense is not None
        return np.asarray(m @ self.dense)


@dataclass(frozen=True)
class _FieldSums:
    """Per field, a [unit, cell] table, and a replicate's weighted sums of every field:
    ``sums(m)[field] == m @ tables[field]``, as ``np.einsum("d,kdc->kc", m, tables)``
    adds them. Fields of whole numbers are summed sparse (see ``_UnitSums``, exact), the
    others by that einsum on their tables alone."""

    whole: np.ndarray  # field indices of the sparse part
    whole_tables: sp.csr_matrix  # [(field, cell), unit]
    other: np.ndarray  # field indices of the dense part
    other_tables: np.ndarray  # [field, unit, cell]
    n_cells: int

    @staticmethod
    def of(tables: np.ndarray) -> _FieldSums:
        finite = np.isfinite(tables).all(axis=(1, 2))
        whole = finite & (tables == np.floor(tables)).all(axis=(1, 2))
        n_fields, n_units, n_cells = tables.shape
        stacked = tables[whole].transpose(0, 2, 1).reshape(-1, n_units)
        return _FieldSums(
            np.flatnonzero(whole),
            sp.csr_matrix(stacked),
            np.flatnonzero(~whole),
            np.ascontiguousarray(tables[~whole]),
            n_cells,
        )

    def __call__(self, m: np.ndarray) -> np.ndarray:
        out = np.empty((len(self.whole) + len(self.other), self.n_cells))
        out[self.whole] = np.asarray(self.whole_tables @ m).reshape(-1, self.n_cells)
        out[self.other] = np.einsum("d,kdc->kc", m, self.other_tables)
        return out


@dataclass(frozen=True)
class _UnitTable:
    """Counts and sums of orders per (store-day, key): a replicate that weighs whole
    store-days gets its sums as one product with their weights."""

    count: _UnitSums  # [unit, key]
    sums: tuple[_UnitSums, ...]  # each [unit, key]

    @staticmethod
    def of(
        unit: np.ndarray,
        n_units: int,
        key: np.ndarray,
        n_keys: int,
        mask: np.ndarray,
        values: tuple[np.ndarray, ...] = (),
    ) -> _UnitTable:
        k = unit[mask] * n_keys + key[mask]
        size = n_units * n_keys

        def table(v: np.ndarray | None) -> _UnitSums:
            weights = None if v is None else v[mask]
            counts = np.bincount(k, weights=weights, minlength=size).astype(float)
            return _UnitSums.of(counts.reshape(n_units, n_keys))

        return _UnitTable(table(None), tuple(table(v) for v in values))

    def __call__(self, m: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.count(m), *(s(m) for s in self.sums))


def _pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes of the orders' (first, second) lateness-bin pairs: (code per order, first and
    second bin per code)."""
    codes, code = _dense_unique(first * N_LATE_BINS + second)
    return code.astype(np.int64), codes // N_LATE_BINS, codes % N_LATE_BINS


def _bin(x: np.ndarray) -> np.ndarray:
    lo, hi = LATE_RANGE
    clipped = np.clip(np.nan_to_num(x, nan=lo), lo, hi)
    return np.rint((clipped - lo) / LATE_BIN_MIN).astype(np.int64)


def heading_lateness(frame: pd.DataFrame) -> np.ndarray:
    """Lateness (minutes) every order was heading for, canceled ones included: prep + courier
    wait + a predicted travel leg - promise; the leg is least squares of the delivered
    orders' leg (late + promise - prep - wait) on distance, per daypart."""
    prep = frame["prep_min"].to_numpy(float)
    wait = frame["dasher_wait_min"].to_numpy(float)
    promised = frame["promised_min"].to_numpy(float)
    late = frame["late_min"].to_numpy(float)
    distance = frame["distance_mi"].to_numpy(float)
    daypart = pd.factorize(frame["daypart"])[0]
    leg = late + promised - prep - wait
    x = np.column_stack([np.ones(len(frame)), np.nan_to_num(distance)])
    predicted = np.full(len(frame), np.nan)
    for dp in np.unique(daypart):
        rows = daypart == dp
        fit = rows & np.isfinite(leg)
        if fit.sum() < 10:
            continue
        coef, *_ = np.linalg.lstsq(x[fit], leg[fit], rcond=None)
        predicted[rows] = x[rows] @ coef
    return np.asarray(prep + wait + predicted - promised)


def promise_estimate(
    frame: pd.DataFrame,
    shift_min: np.ndarray | float,
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Estimate:
    """Change of every metric of the ``after`` orders of ``frame`` had each order's promise
    been ``shift_min`` minutes longer (an array aligned with ``frame``, or one number)."""
    return _lateness_estimate(frame, shift_min, True, n_bootstrap, seed, [])


def supply_estimate(
    frame: pd.DataFrame,
    uplift: float,
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Estimate:
    """Change of every metric of the ``after`` orders of ``frame`` had ``uplift`` more dashers
    been on shift (0.15: 15% more): the load per dasher falls by 1 + ``uplift``, and with it
    the courier wait, read off the slice's own wait-against-load curve (isotonic, orders that
    rode alone, both periods); the hand-off comes that much earlier. Efficiency is deliveries
    per dasher hour on shift: the same deliveries over 1 + ``uplift`` times the dashers."""
    _require(frame, ("orders_per_dasher", "dasher_wait_min"))
    if not 0.0 < uplift <= 2.0:
        raise ValueError(f"uplift: must be in (0, 2], got {uplift}")
    load = frame["orders_per_dasher"].to_numpy(float)
    wait = frame["dasher_wait_min"].to_numpy(float)
    late = frame["late_min"].to_numpy(float)
    batched = np.nan_to_num(frame["batched"].to_numpy(float)) > 0
    known = np.isfinite(load)
    if (known & np.isfinite(wait) & ~batched).sum() < 50:
        raise ValueError("frame: too few orders with a known courier load to read the wait curve")
    edges = np.quantile(load[known], np.linspace(0, 1, 41))
    centres = (edges[1:] + edges[:-1]) / 2

    def curve(
        mask: np.ndarray, y: np.ndarray, *, increasing: bool = True
    ) -> Callable[[np.ndarray], np.ndarray]:
        """An isotonic curve of ``y`` against the load, on load quantile bins."""
        use = mask & known & np.isfinite(y)
        if not use.any():  # nothing to read it from (no batched orders, say)
            return lambda x: np.full(np.shape(x), np.nan)
        cell = np.clip(np.searchsorted(edges, load[use], side="right") - 1, 0, 39)
        n = np.bincount(cell, minlength=40).astype(float)
        total = np.bincount(cell, weights=y[use], minlength=40)
        has = n > 0
        fit = isotonic_regression(total[has] / n[has], weights=n[has], increasing=increasing).x
        return lambda x: np.interp(x, centres[has], fit)

    lighter = load / (1.0 + uplift)
    # courier wait of an order riding alone, scaled by how much the expected wait falls (the
    # wait of a queue grows with its load; an order that waited long saves more)
    wait_at = curve(~batched, wait)
    expected_now = wait_at(load)
    ratio = np.where(expected_now > 0, wait_at(lighter) / np.maximum(expected_now, 1e-9), 1.0)
    own = np.where(~batched & np.isfinite(wait), wait, expected_now)
    faster = own * (1.0 - ratio)
    # and a lighter load batches less: of today's batched orders, the share that would ride
    # alone saves the batching penalty (batched minus unbatched lateness at that load)
    delivered = frame["delivered"].to_numpy(bool)
    share_at = curve(np.ones(len(frame), dtype=bool), batched.astype(float))
    share_now, share_then = share_at(load), share_at(lighter)
    unbatch = np.where(share_now > 0, (share_now - share_then) / np.maximum(share_now, 1e-9), 0.0)
    late_alone = curve(delivered & ~batched, late)
    late_batched = curve(delivered & batched, late)
    penalty = np.nan_to_num(np.maximum(late_batched(load) - late_alone(load), 0.0))
    faster = faster + np.where(batched, np.clip(unbatch, 0.0, 1.0) * penalty, 0.0)
    faster = np.where(known & np.isfinite(faster), np.maximum(faster, 0.0), 0.0)
    notes = [
        f"courier wait and batching from the slice's load curves at {1 + uplift:.2f}x the dashers",
        "efficiency: deliveries per dasher hour on shift",
    ]
    est = _lateness_estimate(frame, faster, False, n_bootstrap, seed, notes)
    on_shift = 1.0 / (1.0 + uplift) - 1.0  # same deliveries, more dashers on shift
    return dataclasses.replace(est, efficiency=(on_shift, on_shift, on_shift))


def _lateness_estimate(
    frame: pd.DataFrame,
    shift_min: np.ndarray | float,
    moves_promise: bool,
    n_bootstrap: int,
    seed: int,
    notes: list[str],
) -> Estimate:
    """Lateness lower by ``shift_min`` minutes per order: a promise that much longer
    (``moves_promise``) or a hand-off that much earlier."""
    after = frame["after"].to_numpy(bool)
    shift = np.broadcast_to(np.asarray(shift_min, dtype=float), (len(frame),))
    shift = np.where(after, np.nan_to_num(shift), 0.0)
    stats = order_stats(frame)
    idx = {f: i for i, f in enumerate(FIELDS)}
    delivered = frame["delivered"].to_numpy(bool)
    late = frame["late_min"].to_numpy(float)
    late_cf = late - shift
    stars = frame["stars"].to_numpy(float)
    support = np.nan_to_num(frame["support"].to_numpy(float))
    refunded = frame["refunded"].to_numpy(float)
    canceled = frame["canceled"].to_numpy(float)
    notes = list(notes)
    try:
        heading = heading_lateness(frame)
    except KeyError:
        heading = np.full(len(frame), np.nan)
    if not np.isfinite(heading).any():
        notes.append("cancellations held fixed: the data lacks prep or courier wait times")
    refunds_known = bool(np.isfinite(refunded).any())
    if not refunds_known:
        notes.append("refunds held fixed: the data has no refunds")
    cf_stats = stats.copy()
    cf_stats[idx["on_time"]] = (delivered & (np.nan_to_num(late_cf) <= GRACE_MIN)).astype(float)
    cf_stats[idx["eta_abs_error_s"]] = np.where(delivered, np.abs(np.nan_to_num(late_cf)) * 60, 0)
    if moves_promise:
        cf_stats[idx["promised_s"]] = stats[idx["promised_s"]] + 60.0 * shift
    else:  # the hand-off comes earlier
        cf_stats[idx["wait_s"]] = stats[idx["wait_s"]] - np.where(delivered, 60.0 * shift, 0.0)
    heading_cf = heading - shift
    heading_on_time = (np.nan_to_num(heading_cf, nan=np.inf) <= GRACE_MIN).astype(float)
    heading_abs_s = np.abs(np.nan_to_num(heading_cf)) * 60.0
    # order to hand-off: the promise plus the lateness it was heading for (the shift cancels)
    earlier = 0.0 if moves_promise else shift
    heading_wait_s = np.nan_to_num(frame["promised_min"].to_numpy(float) + heading - earlier) * 60.0
    b_now, b_cf = _bin(late), _bin(late_cf)
    h_now, h_cf = _bin(heading), _bin(heading_cf)

    # the customer's response to lateness, measured on orders that rode alone: batched orders
    # are both later and more often damaged, which is not lateness's doing
    batched = np.nan_to_num(frame["batched"].to_numpy(float)) > 0 if "batched" in frame else None
    alone = delivered & ~batched if batched is not None else delivered
    if alone.sum() < 0.5 * delivered.sum():
        alone = delivered

    units = _Units.of(frame)
    unit, n_units = units.of_order, units.n
    rated = np.isfinite(stars)
    known_heading = np.isfinite(heading)
    # what every replicate sums, per unit: the after orders' statistics ...
    every_key = np.zeros(len(frame), dtype=np.int64)
    f_unit, c_unit = units.sums(stats, after), units.sums(cf_stats, after)  # [field, unit]
    # ... the response curves' inputs per lateness bin ...
    support_in = _UnitTable.of(unit, n_units, b_now, N_LATE_BINS, alone, (support,))
    refund_in = _UnitTable.of(
        unit, n_units, b_now, N_LATE_BINS, alone & np.isfinite(refunded), (np.nan_to_num(refunded),)
    )
    stars_in = _UnitTable.of(
        unit, n_units, b_now, N_LATE_BINS, alone & rated, (np.nan_to_num(stars),)
    )
    cancel_in = _UnitTable.of(unit, n_units, h_now, N_LATE_BINS, known_heading, (canceled,))
    # ... the after orders by (lateness now, lateness with the fix) ...
    code, b1, b2 = _pairs(b_now, b_cf)
    n_codes = max(len(b1), 1)
    moved_late = _UnitTable.of(unit, n_units, code, n_codes, after & delivered)
    moved_rated = _UnitTable.of(unit, n_units, code, n_codes, after & rated)
    hcode, h1, h2 = _pairs(h_now, h_cf)
    n_hcodes = max(len(h1), 1)
    kept = _UnitTable.of(
        unit,
        n_units,
        hcode,
        n_hcodes,
        after & known_heading,
        (heading_on_time, heading_abs_s, heading_wait_s),
    )
    # ... and the shares a kept order takes from delivered and canceled orders
    per_delivery_names = ("items", "bad_items", "trips", "dasher_active_s", "delivery_cost")
    delivered_after = _UnitTable.of(
        unit,
        n_units,
        every_key,
        1,
        after & delivered,
        tuple(stats[idx[n]] for n in per_delivery_names),
    )
    canceled_support = _UnitTable.of(unit, n_units, every_key, 1, canceled > 0, (support,))
    delivered_rated = _UnitTable.of(unit, n_units, every_key, 1, delivered, (rated.astype(float),))

    def cf(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        factual = f_unit @ m
        out = c_unit @ m
        n, total = support_in(m)
        support_curve = _fit_curve(n, total, increasing=True)
        n_late = moved_late(m)[0]
        out[idx["support"]] += n_late @ (support_curve[b2] - support_curve[b1])
        refund_curve = np.zeros(N_LATE_BINS)
        if refunds_known:
            n, total = refund_in(m)
            refund_curve = _fit_curve(n, total, increasing=True)
            out[idx["refunded"]] += n_late @ (refund_curve[b2] - refund_curve[b1])
        n, total = stars_in(m)
        star_curve = _fit_curve(n, total, increasing=False)
        out[idx["stars"]] += moved_rated(m)[0] @ (star_curve[b2] - star_curve[b1])
        if known_heading.any():
            n, total = cancel_in(m)
            cancel_curve = _fit_curve(n, total, increasing=True)
            moved = cancel_curve[h2] - cancel_curve[h1]  # per pair of heading bins
            count, on_time, abs_s, wait_s = kept(m)
            moved_orders = float(count @ moved)
            out[idx["canceled"]] += moved_orders
            # an order kept from cancelling is delivered, as late as it was heading for
            out[idx["delivered"]] -= moved_orders
            out[idx["on_time"]] -= on_time @ moved
            out[idx["eta_abs_error_s"]] -= abs_s @ moved
            out[idx["wait_s"]] -= wait_s @ moved
            n_del, *sums = delivered_after(m)
            for name, total_d in zip(per_delivery_names, sums, strict=True):
                out[idx[name]] -= moved_orders * float(total_d[0]) / max(float(n_del[0]), 1e-12)
            # ... and it then contacts support, gets credits and rates as a delivered order
            # that late does, instead of as a canceled one
            n_c, s_c = canceled_support(m)
            support_canceled = float(s_c[0]) / max(float(n_c[0]), 1e-12)
            out[idx["support"]] -= count @ (moved * (support_curve[h2] - support_canceled))
            if refunds_known:
                out[idx["refunded"]] -= count @ (moved * refund_curve[h2])
            n_d, r_d = delivered_rated(m)
            rated_share = float(r_d[0]) / max(float(n_d[0]), 1e-12)
            out[idx["ratings"]] -= moved_orders * rated_share
            out[idx["stars"]] -= rated_share * (count @ (moved * star_curve[h2]))
        return factual, out

    return _bootstrap(frame, units, cf, n_bootstrap, seed, notes)


def suppress_estimate(
    frame: pd.DataFrame,
    lines: pd.DataFrame,
    hidden_skus: list[int],
    *,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Estimate:
    """Change of every metric of the ``after`` orders of ``frame`` had the SKUs
    ``hidden_skus`` not been offered: their lines (``lines``: ``orders.item_lines`` of the
    slice) are not ordered, so neither short nor refunded. An order left without a short line
    moves its support contacts and stars by the difference, among the slice's delivered
    orders after the change, between orders with and without one. The cost is sales: the
    hidden lines' share of the after orders' basket value (reported as the efficiency change,
    the cost axis of the trade-off)."""
    after = frame["after"].to_numpy(bool)
    delivered = frame["delivered"].to_numpy(bool)
    stats = order_stats(frame)
    idx = {f: i for i, f in enumerate(FIELDS)}
    pos = pd.Series(np.arange(len(frame)), index=frame["order_id"].to_numpy())
    row = pos.reindex(lines["order_id"].to_numpy()).to_numpy()
    ok = np.isfinite(row)
    lines, row = lines[ok], row[ok].astype(np.int64)
    hidden = lines["sku_id"].isin(hidden_skus).to_numpy()
    short = lines["short"].to_numpy(bool)
    refund = lines["refund"].to_numpy(float)
    value = lines["value"].to_numpy(float)
    n = len(frame)

    def per_order(values: np.ndarray) -> np.ndarray:
        return np.bincount(row, weights=values, minlength=n)

    hidden_lines = per_order(hidden.astype(float))
    hidden_short = per_order((hidden & short).astype(float))
    all_short = per_order(short.astype(float))
    refund_left = per_order(np.where(hidden, 0.0, refund))
    cf_stats = stats.copy()
    cf_stats[idx["items"]] -= np.where(delivered, hidden_lines, 0.0)
    cf_stats[idx["bad_items"]] -= np.where(delivered, hidden_short, 0.0)
    refunded = np.nan_to_num(frame["refunded"].to_numpy(float)) > 0
    cf_stats[idx["refunded"]] = np.where(
        refunded & (refund_left <= 1e-9), 0.0, stats[idx["refunded"]]
    )
    # orders left with no short line: support and stars as delivered orders without one
    cleared = delivered & after & (all_short > 0) & (all_short - hidden_short <= 0)
    had = delivered & after & (all_short > 0)
    never = delivered & after & (all_short == 0)
    support = np.nan_to_num(frame["support"].to_numpy(float))
    stars = frame["stars"].to_numpy(float)
    rated = np.isfinite(stars)

    def mean(v: np.ndarray, mask: np.ndarray) -> float:
        return float(v[mask].mean()) if mask.any() else 0.0

    cf_stats[idx["support"]] -= np.where(cleared, mean(support, had) - mean(support, never), 0.0)
    star_gain = mean(stars, had & rated) - mean(stars, never & rated)
    cf_stats[idx["stars"]] -= np.where(cleared & rated, star_gain, 0.0)
    units = _Units.of(frame)
    f_unit, c_unit = units.sums(stats, after), units.sums(cf_stats, after)

    def cf(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return f_unit @ m, c_unit @ m

    after_line = after[row]
    total = float(value[after_line].sum())
    lost = float(value[after_line & hidden].sum()) / total if total > 0 else 0.0
    notes = [
        f"{len(hidden_skus)} SKU(s) hidden: {lost:.1%} of the slice's sales lost (the cost axis)",
        "support and stars of an order left without a short line: the slice's difference "
        "between orders with and without one, fixed",
    ]
    est = _bootstrap(frame, units, cf, n_bootstrap, seed, notes)
    return dataclasses.replace(est, efficiency=(-lost, -lost, -lost))


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = set(frame.attrs.get("missing", []))
    lacking = [c for c in columns if c not in frame or c in missing]
    if lacking:
        raise ValueError(f"frame: the data lacks {', '.join(lacking)} for this estimate")
