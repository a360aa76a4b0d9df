"""What each mechanism did to an incident's outcomes: counterfactuals on the delivery timeline.

Every delivered order's lateness is an identity of its timeline::

    late_min = prep + wait + leg - promised

(prep: the merchant readies the order; wait: until a courier leaves the store with it, which
for a batched order includes holding for its trip partners; leg: travel and the other drops
of its trip; promised: the quoted duration). Each hypothesis acts on one term, so its impact
is measured by undoing its change on that term for the orders after the change and counting
the late orders that would not have been late, a counterfactual that needs no model of the
outcome (the Oaxaca-Blinder idea of splitting a change into its sources, on the timeline):

- prep_time_drift: each store's prep times scaled back to its baseline median;
- dasher_shortage: courier wait of unbatched orders moved back by its change (per daypart),
  plus the extra batching of a busier courier pool;
- batching_policy: the batched share and the batching penalty (batched minus unbatched late
  rate) back at baseline, per daypart and tercile of courier load: batching that busier
  couriers bring by design is the courier shortage's doing (mediation), not the policy's;
- eta_model_bias: promises lengthened back by how much shorter they now are than what the
  baseline quoted for like orders (same store, distance, basket and hour; least squares on
  the baseline orders, fitted once), on average.

Item issues (inventory_drop) are measured on their own rate (``investigate``). Intervals come
from a bootstrap over days, on arrays. Impacts are not exactly additive (lateness is a threshold), and need
not sum to the observed change: what no mechanism explains is left as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from cxagent.metrics.definitions import ON_TIME_GRACE_S

GRACE_MIN: Final = ON_TIME_GRACE_S / 60.0
MECHANISMS: Final = ("batching_policy", "prep_time_drift", "dasher_shortage", "eta_model_bias")
# columns of ``order_frame`` each mechanism needs
NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "batching_policy": ("batched", "dasher_wait_min"),
    "prep_time_drift": ("prep_min",),
    "dasher_shortage": ("dasher_wait_min", "batched"),
    "eta_model_bias": ("promised_min",),
}


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


def promise_gap(frame: pd.DataFrame, after: str) -> np.ndarray:
    """Promised minutes minus what the baseline quoted for a like order (least squares of
    the promise on store, hour, distance and basket size, fitted once on the orders before
    the change): about 0 before, negative when promises got shorter."""
    before = frame[~frame[after]]
    return frame["promised_min"].to_numpy(float) - _baseline_promise(before, frame)


def _baseline_promise(before: pd.DataFrame, after: pd.DataFrame) -> np.ndarray:
    """What the baseline quoted for orders like ``after``'s: least squares of the promised
    minutes on store (fixed effects, partialled out by demeaning within store), hour,
    basket size and distance, fitted on the baseline orders."""
    use_distance = bool(before["distance_mi"].notna().all())  # not every source has it
    hours = sorted(before["hour"].unique().tolist())

    def design(frame: pd.DataFrame) -> np.ndarray:
        cols = [frame["item_count"].to_numpy(float)]
        if use_distance:
            cols.append(frame["distance_mi"].fillna(0.0).to_numpy(float))
        cols += [(frame["hour"] == h).to_numpy(float) for h in hours[1:]]
        return np.column_stack(cols)

    x, y = design(before), before["promised_min"].to_numpy(float)
    store = before["store_id"].to_numpy()
    x_mean = pd.DataFrame(x).groupby(store).transform("mean").to_numpy()
    y_mean = pd.Series(y).groupby(store).transform("mean").to_numpy()
    coef, *_ = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=None)
    # each store's level: its mean promise net of its orders' mix
    level = pd.Series(y - x @ coef).groupby(store).mean()
    base = level.reindex(after["store_id"].to_numpy()).to_numpy(float)
    base = np.where(np.isfinite(base), base, float(level.mean()))  # a store new after the change
    return np.asarray(base + design(after) @ coef)


@dataclass(frozen=True)
class _Orders:
    """The delivered orders as arrays, with what every replicate shares computed once.

    A bootstrap replicate is a weight per order (how often its day was drawn), so no replicate
    copies the orders; the point estimate is the replicate with every weight 1."""

    after: np.ndarray  # bool
    late: np.ndarray  # float 0/1
    late_min: np.ndarray
    store: np.ndarray  # int codes
    daypart: np.ndarray  # int codes
    batched: np.ndarray  # bool
    prep: np.ndarray
    wait: np.ndarray
    gap: np.ndarray  # promise gap (NaN when untestable)
    # orders with a known prep time, sorted by (store, prep), per period: for weighted medians
    prep_sorted: dict[bool, np.ndarray]
    n_strata: int  # daypart x load tercile
    cell_load: np.ndarray  # (daypart x load tercile) x after x batched
    cell_daypart: np.ndarray  # daypart x after x batched, on the same strata numbering

    @classmethod
    def build(cls, columns: dict[str, np.ndarray]) -> _Orders:
        after, busy, daypart = columns["after"], columns["busy"], columns["daypart"]
        load = daypart * 3
        known = np.isfinite(busy[~after])
        if known.any():
            cuts = np.quantile(busy[~after][known], [1 / 3, 2 / 3])
            load = load + np.searchsorted(cuts, np.nan_to_num(busy))
        prep, store = columns["prep"], columns["store"]
        prep_sorted = {}
        for period in (False, True):
            rows = np.flatnonzero((after == period) & np.isfinite(prep))
            prep_sorted[period] = rows[np.lexsort((prep[rows], store[rows]))]
        # cell of an order: stratum x after x batched, for one bincount per replicate
        inner = after.astype(np.int64) * 2 + columns["batched"].astype(np.int64)
        return cls(
            after=after,
            late=columns["late"],
            late_min=columns["late_min"],
            store=store,
            daypart=daypart,
            batched=columns["batched"],
            prep=prep,
            wait=columns["wait"],
            gap=columns["gap"],
            prep_sorted=prep_sorted,
            n_strata=int(load.max()) + 1 if len(load) else 1,
            cell_load=load * 4 + inner,
            cell_daypart=daypart * 3 * 4 + inner,
        )


def _group_mean(values: np.ndarray, groups: np.ndarray, n: int, w: np.ndarray) -> np.ndarray:
    """Weighted mean of ``values`` per group (NaN values and zero weights left out)."""
    ok = np.isfinite(values)
    weight = np.where(ok, w, 0.0)
    total = np.bincount(groups, weights=weight * np.where(ok, values, 0.0), minlength=n)
    count = np.bincount(groups, weights=weight, minlength=n)
    return np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)


def _group_median(
    values: np.ndarray, groups: np.ndarray, n: int, w: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Median per group of ``values`` repeated by their integer weights ``w``; ``rows`` are the
    orders to use, sorted by (group, value). The cumulative weight is monotone across groups,
    so one ``searchsorted`` finds every group's middle (the mean of the two middles when the
    group's total weight is even)."""
    g, v, ws = groups[rows], values[rows], w[rows]
    total = np.bincount(g, weights=ws, minlength=n)
    first = np.cumsum(total) - total  # weight before the group
    cum = np.cumsum(ws)
    lo = np.searchsorted(cum, first + np.floor((total - 1) / 2) + 1, side="left")
    hi = np.searchsorted(cum, first + np.floor(total / 2) + 1, side="left")
    has = total > 0
    out = np.full(n, np.nan)
    out[has] = (v[np.minimum(lo[has], len(v) - 1)] + v[np.minimum(hi[has], len(v) - 1)]) / 2.0
    return out


def _wmean(values: np.ndarray, w: np.ndarray) -> float:
    return float(values @ w / max(float(w.sum()), 1e-12))


def _late_rate_cf(o: _Orders, mechanism: str, w: np.ndarray) -> float:
    """Counterfactual late rate of the ``after`` orders of ``o`` (weighted by ``w``) without
    ``mechanism``."""
    a, b = o.after, ~o.after
    wa = w[a]
    late = o.late_min[a]
    if mechanism == "prep_time_drift":  # each store's prep scaled back to its baseline median
        n = int(o.store.max()) + 1
        ratio = _group_median(o.prep, o.store, n, w, o.prep_sorted[False]) / _group_median(
            o.prep, o.store, n, w, o.prep_sorted[True]
        )
        r = ratio[o.store[a]]
        cf = late - o.prep[a] * (1.0 - np.where(np.isfinite(r), r, 1.0))
    elif mechanism == "dasher_shortage":  # courier wait of unbatched orders, per daypart
        n = int(o.daypart.max()) + 1
        unbatched = w * ~o.batched
        shift = _group_mean(o.wait, o.daypart, n, unbatched * a) - _group_mean(
            o.wait, o.daypart, n, unbatched * b
        )
        cf = late - np.nan_to_num(shift)[o.daypart[a]]
    elif mechanism == "eta_model_bias":
        # every promise moved by the average amount it now falls short of the baseline quote
        # (not order by order: that would also strip the promises' own noise)
        known = np.isfinite(o.gap)
        gap = np.where(known, o.gap, 0.0)
        wk = w * known
        cf = late + (_wmean(gap * a, wk * a) - _wmean(gap * b, wk * b))
    else:
        raise ValueError(f"mechanism: {mechanism!r} has no timeline counterfactual")
    return _wmean((cf > GRACE_MIN).astype(float), wa)


def _batching_rate_cf(o: _Orders, w: np.ndarray, late_w: np.ndarray, *, by_load: bool) -> float:
    """Counterfactual late rate of the ``after`` orders with baseline batching, per stratum
    (daypart, and with ``by_load`` the tercile of courier busy share cut at the baseline's
    terciles: a busier pool batches more by design): the unbatched late rate now, plus the
    baseline batched share times the baseline penalty (batched minus unbatched late rate).
    ``late_w`` is ``o.late * w``."""
    cell = o.cell_load if by_load else o.cell_daypart  # stratum x after x batched
    size = np.bincount(cell, weights=w, minlength=4 * o.n_strata).reshape(-1, 2, 2)
    late = np.bincount(cell, weights=late_w, minlength=4 * o.n_strata).reshape(-1, 2, 2)
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


def _impacts(o: _Orders, w: np.ndarray, mechanisms: Iterable[str]) -> dict[str, float]:
    """Late-rate change each mechanism explains, on the orders weighted by ``w``."""
    late_w = o.late * w
    wa = w * o.after
    now = float(late_w @ o.after / max(float(wa.sum()), 1e-12))
    batching = {
        by_load: _batching_rate_cf(o, w, late_w, by_load=by_load) for by_load in (True, False)
    }
    out = {}
    for mechanism in mechanisms:
        if mechanism == "batching_policy":  # more batching at the same courier load
            out[mechanism] = now - batching[True]
            continue
        effect = now - _late_rate_cf(o, mechanism, w)
        if mechanism == "dasher_shortage":  # and the batching that a busier pool brings
            effect += batching[True] - batching[False]
        out[mechanism] = effect
    return out


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


def late_impacts(
    frame: pd.DataFrame,
    *,
    after: str = "after",
    missing: set[str] | frozenset[str] = frozenset(),
    n_bootstrap: int = 100,
    seed: int = 0,
) -> list[MechanismImpact]:
    """Impact of each mechanism on the late rate of the delivered orders of ``frame``
    (``order_frame`` rows plus a boolean ``after`` column), most harmful first."""
    delivered = frame[frame["delivered"]]
    if delivered[after].all() or not delivered[after].any():
        raise ValueError("frame: needs delivered orders both before and after the change")
    testable_eta = not (set(NEEDS["eta_model_bias"]) & set(missing))

    def column(name: str) -> np.ndarray:
        if name not in delivered:
            return np.full(len(delivered), np.nan)
        return delivered[name].to_numpy(float)

    orders = _Orders.build(
        {
            "after": delivered[after].to_numpy(bool),
            "late": delivered["late"].to_numpy(float),
            "late_min": column("late_min"),
            "store": pd.factorize(delivered["store_id"])[0].astype(np.int64),
            "daypart": pd.factorize(delivered["daypart"])[0].astype(np.int64),
            "busy": column("busy_share"),
            "batched": np.nan_to_num(column("batched")) > 0,
            "prep": column("prep_min"),
            "wait": column("dasher_wait_min"),
            "gap": promise_gap(delivered, after)
            if testable_eta
            else np.full(len(delivered), np.nan),
        }
    )
    late_a, late_b = orders.late[orders.after], orders.late[~orders.after]
    observed = float(late_a.mean() - late_b.mean())
    day = pd.factorize(delivered["order_time"].dt.floor("D"))[0]
    n_days = int(day.max()) + 1
    testable = [m for m in MECHANISMS if not (set(NEEDS[m]) & set(missing))]
    point = _impacts(orders, np.ones(len(day)), testable)
    # a replicate: days resampled (shocks are shared within a day), as weights on the orders;
    # the same replicates for every mechanism
    replicates = []
    for pick in day_picks(n_days, n_bootstrap, seed):
        w = np.bincount(pick, minlength=n_days).astype(float)[day]
        if (w * orders.after).any() and (w * ~orders.after).any():
            replicates.append(_impacts(orders, w, testable))
    out = []
    for mechanism in MECHANISMS:
        if mechanism not in testable:
            out.append(MechanismImpact(mechanism, np.nan, np.nan, np.nan, np.nan, False))
            continue
        lo, hi, positive = summarise([r[mechanism] for r in replicates])
        share = point[mechanism] / observed if observed > 0 else np.nan
        out.append(MechanismImpact(mechanism, point[mechanism], lo, hi, share, True, positive))
    out.sort(key=lambda m: -(m.late_rate_change if np.isfinite(m.late_rate_change) else -1e9))
    return out
