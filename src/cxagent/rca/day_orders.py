"""The delivered orders of an investigated slice as arrays, for day-bootstrap replicates.

A bootstrap replicate resamples days (a day's shocks are shared by its orders), so it is a
whole-number weight per day and no replicate copies the orders (``DayOrders``). Every
hypothesis's counterfactual (``cxagent.hypotheses``) reads the same arrays, so one set of
replicates serves them all and their intervals are comparable; ``day_picks`` draws the
replicates and ``summarise`` turns them into an interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from cxagent.metrics.definitions import ON_TIME_GRACE_S

GRACE_MIN: Final = ON_TIME_GRACE_S / 60.0


@dataclass(frozen=True)
class MechanismImpact:
    """Late-rate change a mechanism explains among the orders after the change."""

    mechanism: str
    late_rate_change: float  # observed late rate minus the counterfactual (0.05 = 5 points)
    ci_low: float
    ci_high: float
    share: float  # of the observed late-rate change (before to after)
    testable: bool = True
    p_positive: float = np.nan  # share of bootstrap replicates with a positive impact


@dataclass(frozen=True)
class _Subset:
    """Some of the orders, in their original order, with the columns a replicate reads."""

    day: np.ndarray  # day index of each (what its bootstrap weight follows)
    group: np.ndarray  # e.g. daypart code
    value: np.ndarray  # e.g. courier wait

    @classmethod
    def of(cls, rows: np.ndarray, day: np.ndarray, group: np.ndarray, value: np.ndarray) -> _Subset:
        return cls(day=day[rows], group=group[rows], value=value[rows])


@dataclass(frozen=True)
class GroupMedians:
    """Median per group of values each repeated by its day's bootstrap weight, for any
    replicate's day weights (the mean of the two middles when a group's total weight is
    even). The running weight along the values sorted by (group, value) is monotone, so
    each middle is found by a binary search within its group, on running counts of orders
    per day: a few small products per replicate instead of a pass over every value, and
    exact, the running weights being whole numbers."""

    value: np.ndarray  # sorted by (group, value)
    bounds: np.ndarray  # each group's first position, and the end
    running: np.ndarray  # [position, day]: orders of each day before the position

    @classmethod
    def of(
        cls, group: np.ndarray, value: np.ndarray, day: np.ndarray, n_groups: int, n_days: int
    ) -> GroupMedians:
        """From values sorted by (group, value), with their group and day."""
        running = np.zeros((len(value) + 1, n_days), dtype=np.int32)
        running[np.arange(1, len(value) + 1), day] = 1
        np.cumsum(running, axis=0, out=running)
        return cls(value, np.searchsorted(group, np.arange(n_groups + 1)), running)

    def __call__(self, w_day: np.ndarray) -> np.ndarray:
        before = self.running[self.bounds] @ w_day  # weight before each group's first value
        first, total = before[:-1], np.diff(before)
        # the (1-based) ranks of the two middles: the same one for an odd total weight
        target = np.concatenate(
            [first + np.floor((total - 1) / 2) + 1, first + np.floor(total / 2) + 1]
        )
        has = total > 0
        # smallest position whose running weight (through it) reaches the target
        lo = np.tile(self.bounds[:-1], 2)
        hi = np.maximum(np.tile(self.bounds[1:] - 1, 2), lo)
        # only the searches still open (an empty last group starts at the end: never probed)
        while (open_ := np.flatnonzero(lo < hi)).size:
            mid = (lo[open_] + hi[open_]) // 2
            reached = self.running[mid + 1] @ w_day >= target[open_]
            lo[open_] = np.where(reached, lo[open_], mid + 1)
            hi[open_] = np.where(reached, mid, hi[open_])
        n = len(first)
        out = np.full(n, np.nan)
        out[has] = (self.value[lo[:n][has]] + self.value[lo[n:][has]]) / 2.0
        return out


def _day_counts(day: np.ndarray, key: np.ndarray, n_days: int, n_keys: int) -> np.ndarray:
    """Orders per (day, key) as floats: a replicate's weighted count per key is one product
    with the day weights, exact because the counts and weights are whole numbers."""
    counts = np.bincount(day * n_keys + key, minlength=n_days * n_keys)
    return counts.reshape(n_days, n_keys).astype(float)


@dataclass(frozen=True)
class DayOrders:
    """The delivered orders as arrays, with what every replicate shares computed once.

    A bootstrap replicate is a weight per day (how often it was drawn), so no replicate
    copies the orders; the point estimate is the replicate with every weight 1. Counts of
    orders (late ones, batched ones, per stratum) are kept per day, so a replicate gets them
    from a product with its day weights instead of a pass over the orders (exact: whole
    numbers); medians come from running counts per day (``GroupMedians``); sums of minutes
    are taken over just the orders they concern, in their original order, so every replicate
    adds exactly the numbers (in the order) a pass over all the orders with zero weights
    elsewhere would."""

    day: np.ndarray  # day index per order
    n_days: int
    after: np.ndarray  # bool
    # the after orders: what the counterfactual late rate is computed on
    late_after: np.ndarray  # late minutes
    day_after: np.ndarray
    store_after: np.ndarray  # int codes
    daypart_after: np.ndarray  # int codes
    prep_after: np.ndarray
    n_stores: int
    n_dayparts: int
    # orders per day: after, before, and late after
    after_by_day: np.ndarray
    before_by_day: np.ndarray
    late_after_by_day: np.ndarray
    # per period: each store's weighted median prep time
    prep_medians: dict[bool, GroupMedians]
    # per period: unbatched orders with a known courier wait, by daypart
    unbatched_wait: dict[bool, _Subset]
    # promise gap per order (0 where unknown) and whether known, zero outside each period
    gap: dict[bool, np.ndarray]
    gap_known: dict[bool, np.ndarray]
    n_strata: int  # daypart x load tercile
    # orders (and late ones) per day and cell: stratum x after x batched, the stratum being
    # daypart x load tercile (``True``) or daypart alone (``False``, same numbering)
    cell_orders: dict[bool, np.ndarray]
    cell_late: dict[bool, np.ndarray]

    @classmethod
    def build(cls, columns: dict[str, np.ndarray]) -> DayOrders:
        after, busy, daypart = columns["after"], columns["busy"], columns["daypart"]
        day, late = columns["day"], columns["late"]
        n_days = int(day.max()) + 1 if len(day) else 1
        load = daypart * 3
        known = np.isfinite(busy[~after])
        if known.any():
            cuts = np.quantile(busy[~after][known], [1 / 3, 2 / 3])
            load = load + np.searchsorted(cuts, np.nan_to_num(busy))
        prep, store, wait = columns["prep"], columns["store"], columns["wait"]
        batched = columns["batched"]
        prep_medians, unbatched_wait, gap, gap_known = {}, {}, {}, {}
        n_stores = int(store.max()) + 1 if len(store) else 1
        gap_is_known = np.isfinite(columns["gap"])
        gap_values = np.where(gap_is_known, columns["gap"], 0.0)
        for period in (False, True):
            rows = np.flatnonzero((after == period) & np.isfinite(prep))
            rows = rows[np.lexsort((prep[rows], store[rows]))]
            prep_medians[period] = GroupMedians.of(
                store[rows], prep[rows], day[rows], n_stores, n_days
            )
            rows = np.flatnonzero((after == period) & ~batched & np.isfinite(wait))
            unbatched_wait[period] = _Subset.of(rows, day, daypart, wait)
            in_period = after == period
            gap[period] = gap_values * in_period
            gap_known[period] = (gap_is_known & in_period).astype(float)
        n_strata = int(load.max()) + 1 if len(load) else 1
        # cell of an order: stratum x after x batched, for one product per replicate
        inner = after.astype(np.int64) * 2 + batched.astype(np.int64)
        cells = {True: load * 4 + inner, False: daypart * 3 * 4 + inner}
        n_cells = 4 * n_strata
        late_rows = late > 0  # late is 0/1
        return cls(
            day=day,
            n_days=n_days,
            after=after,
            late_after=columns["late_min"][after],
            day_after=day[after],
            store_after=store[after],
            daypart_after=daypart[after],
            prep_after=prep[after],
            n_stores=n_stores,
            n_dayparts=int(daypart.max()) + 1 if len(daypart) else 1,
            after_by_day=np.bincount(day[after], minlength=n_days).astype(float),
            before_by_day=np.bincount(day[~after], minlength=n_days).astype(float),
            late_after_by_day=np.bincount(day[after & late_rows], minlength=n_days).astype(float),
            prep_medians=prep_medians,
            unbatched_wait=unbatched_wait,
            gap=gap,
            gap_known=gap_known,
            n_strata=n_strata,
            cell_orders={k: _day_counts(day, c, n_days, n_cells) for k, c in cells.items()},
            cell_late={
                k: _day_counts(day[late_rows], c[late_rows], n_days, n_cells)
                for k, c in cells.items()
            },
        )

    def late_rate(self, w_day: np.ndarray) -> float:
        """Late rate of the ``after`` orders, their days weighted by ``w_day``."""
        return float(w_day @ self.late_after_by_day / max(float(w_day @ self.after_by_day), 1e-12))

    def covers_both(self, w_day: np.ndarray) -> bool:
        """Whether a replicate (weights per day) has orders both before and after."""
        return bool(w_day @ self.after_by_day > 0 and w_day @ self.before_by_day > 0)


def group_mean(values: np.ndarray, groups: np.ndarray, n: int, w: np.ndarray) -> np.ndarray:
    """Weighted mean per group of ``values``, all finite (NaN for a group without weight)."""
    total = np.bincount(groups, weights=w * values, minlength=n)
    count = np.bincount(groups, weights=w, minlength=n)
    return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def wmean(values: np.ndarray, w: np.ndarray) -> float:
    return float(values @ w / max(float(w.sum()), 1e-12))


def flag_share(flag: np.ndarray, w: np.ndarray) -> float:
    """``wmean`` of a 0/1 ``flag`` with whole-number weights: sums of whole numbers, exact
    in any order, so the flagged weights are simply added up (no BLAS product)."""
    return float(w[flag].sum() / max(float(w.sum()), 1e-12))


def batching_late_rate(o: DayOrders, w_day: np.ndarray, *, by_load: bool) -> float:
    """Counterfactual late rate of the ``after`` orders with baseline batching, per stratum
    (daypart, and with ``by_load`` the tercile of courier busy share cut at the baseline's
    terciles: a busier pool batches more by design): the unbatched late rate now, plus the
    baseline batched share times the baseline penalty (batched minus unbatched late rate).
    ``w_day`` weighs the days."""
    size = (w_day @ o.cell_orders[by_load]).reshape(-1, 2, 2)  # [stratum, after, batched]
    late = (w_day @ o.cell_late[by_load]).reshape(-1, 2, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = late / size  # [stratum, after, batched]
        all_now = late[:, 1].sum(axis=1) / size[:, 1].sum(axis=1)
        share0 = size[:, 0, 1] / size[:, 0].sum(axis=1)
    unb_now, base_unb, base_b = rate[:, 1, 0], rate[:, 0, 0], rate[:, 0, 1]
    penalty = np.where(np.isfinite(base_b) & np.isfinite(base_unb), base_b - base_unb, 0.0)
    cf = np.where(np.isfinite(unb_now), unb_now, all_now) + np.nan_to_num(share0) * penalty
    cf = np.where(np.isfinite(share0), cf, all_now)  # a stratum the baseline never saw
    weight = size[:, 1].sum(axis=1)
    return float(np.nansum(cf * weight) / max(weight.sum(), 1e-12))


def day_picks(n_days: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Days drawn with replacement, one row per bootstrap replicate: days, not orders, are
    resampled because a day's shocks are shared by its orders. The same seed gives every
    mechanism of an incident the same replicates."""
    return np.random.default_rng(seed).integers(0, n_days, size=(n_bootstrap, n_days))


def summarise(replicates: list[float]) -> tuple[float, float, float]:
    """90% percentile interval of bootstrap replicates and the share of them above zero."""
    reps = np.asarray(replicates, dtype=float)
    if not reps.size:
        return np.nan, np.nan, np.nan
    lo, hi = np.quantile(reps, [0.05, 0.95])
    return float(lo), float(hi), float(np.mean(reps > 0))
