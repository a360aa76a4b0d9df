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

from dataclasses import dataclass, fields
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
    """The delivered orders as arrays (resampling arrays is far cheaper than frames)."""

    after: np.ndarray  # bool
    late: np.ndarray  # float 0/1
    late_min: np.ndarray
    store: np.ndarray  # int codes
    daypart: np.ndarray  # int codes
    busy: np.ndarray
    batched: np.ndarray  # bool
    prep: np.ndarray
    wait: np.ndarray
    gap: np.ndarray  # promise gap (NaN when untestable)

    def take(self, idx: np.ndarray) -> _Orders:
        return _Orders(*(getattr(self, f.name)[idx] for f in fields(self)))


def _group_mean(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    total = np.bincount(groups[ok], weights=values[ok], minlength=n)
    count = np.bincount(groups[ok], minlength=n)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _group_median(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    v, g = values[ok], groups[ok]
    order = np.lexsort((v, g))
    v = v[order]
    count = np.bincount(g, minlength=n)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    out = np.full(n, np.nan)
    has = count > 0
    lo, hi = start + (count - 1) // 2, start + count // 2
    out[has] = (v[lo[has]] + v[hi[has]]) / 2.0
    return out


def _late_rate_cf(o: _Orders, mechanism: str) -> float:
    """Counterfactual late rate of the ``after`` orders of ``o`` without ``mechanism``."""
    a, b = o.after, ~o.after
    late = o.late_min[a]
    if mechanism == "prep_time_drift":  # each store's prep scaled back to its baseline median
        n = int(o.store.max()) + 1
        ratio = _group_median(o.prep[b], o.store[b], n) / _group_median(o.prep[a], o.store[a], n)
        r = ratio[o.store[a]]
        cf = late - o.prep[a] * (1.0 - np.where(np.isfinite(r), r, 1.0))
    elif mechanism == "dasher_shortage":  # courier wait of unbatched orders, per daypart
        n = int(o.daypart.max()) + 1
        ub, ua = b & ~o.batched, a & ~o.batched
        shift = _group_mean(o.wait[ua], o.daypart[ua], n) - _group_mean(
            o.wait[ub], o.daypart[ub], n
        )
        cf = late - np.nan_to_num(shift)[o.daypart[a]]
    elif mechanism == "eta_model_bias":
        # every promise moved by the average amount it now falls short of the baseline quote
        # (not order by order: that would also strip the promises' own noise)
        cf = late + (np.nanmean(o.gap[a]) - np.nanmean(o.gap[b]))
    else:
        raise ValueError(f"mechanism: {mechanism!r} has no timeline counterfactual")
    return float(np.mean(cf > GRACE_MIN))


def _batching_rate_cf(o: _Orders, *, by_load: bool) -> float:
    """Counterfactual late rate of the ``after`` orders with baseline batching, per stratum
    (daypart, and with ``by_load`` the tercile of courier busy share cut at the baseline's
    terciles: a busier pool batches more by design): the unbatched late rate now, plus the
    baseline batched share times the baseline penalty (batched minus unbatched late rate)."""
    a, b = o.after, ~o.after
    stratum = o.daypart * 3
    if by_load and np.isfinite(o.busy[b]).any():
        cuts = np.nanquantile(o.busy[b], [1 / 3, 2 / 3])
        stratum = stratum + np.searchsorted(cuts, np.nan_to_num(o.busy))
    n = int(stratum.max()) + 1

    def rate(mask: np.ndarray) -> np.ndarray:
        return _group_mean(o.late[mask], stratum[mask], n)

    unb_now, all_now = rate(a & ~o.batched), rate(a)
    base_unb, base_b = rate(b & ~o.batched), rate(b & o.batched)
    share0 = _group_mean(o.batched[b].astype(float), stratum[b], n)
    penalty = np.where(np.isfinite(base_b) & np.isfinite(base_unb), base_b - base_unb, 0.0)
    cf = np.where(np.isfinite(unb_now), unb_now, all_now) + np.nan_to_num(share0) * penalty
    cf = np.where(np.isfinite(share0), cf, all_now)  # a stratum the baseline never saw
    weight = np.bincount(stratum[a], minlength=n)
    return float(np.nansum(cf * weight) / max(weight.sum(), 1))


def _impact(o: _Orders, mechanism: str) -> float:
    now = float(o.late[o.after].mean())
    if mechanism == "batching_policy":  # more batching at the same courier load
        return now - _batching_rate_cf(o, by_load=True)
    effect = now - _late_rate_cf(o, mechanism)
    if mechanism == "dasher_shortage":  # and the batching that a busier pool brings
        effect += _batching_rate_cf(o, by_load=True) - _batching_rate_cf(o, by_load=False)
    return effect


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

    orders = _Orders(
        after=delivered[after].to_numpy(bool),
        late=delivered["late"].to_numpy(float),
        late_min=column("late_min"),
        store=pd.factorize(delivered["store_id"])[0].astype(np.int64),
        daypart=pd.factorize(delivered["daypart"])[0].astype(np.int64),
        busy=column("busy_share"),
        batched=np.nan_to_num(column("batched")) > 0,
        prep=column("prep_min"),
        wait=column("dasher_wait_min"),
        gap=promise_gap(delivered, after) if testable_eta else np.full(len(delivered), np.nan),
    )
    late_a, late_b = orders.late[orders.after], orders.late[~orders.after]
    observed = float(late_a.mean() - late_b.mean())
    days = delivered["order_time"].dt.floor("D").to_numpy()
    by_day = list(pd.Series(np.arange(len(days))).groupby(days).indices.values())
    samples = []
    for pick in day_picks(len(by_day), n_bootstrap, seed):
        sample = orders.take(np.concatenate([by_day[i] for i in pick]))
        if sample.after.any() and not sample.after.all():
            samples.append(sample)
    out = []
    for mechanism in MECHANISMS:
        testable = not (set(NEEDS[mechanism]) & set(missing))
        if not testable:
            out.append(MechanismImpact(mechanism, np.nan, np.nan, np.nan, np.nan, False))
            continue
        point = _impact(orders, mechanism)
        # days resampled (shocks are shared within a day), the same days for every mechanism
        lo, hi, positive = summarise([_impact(s, mechanism) for s in samples])
        share = point / observed if observed > 0 else np.nan
        out.append(MechanismImpact(mechanism, point, lo, hi, share, True, positive))
    out.sort(key=lambda m: -(m.late_rate_change if np.isfinite(m.late_rate_change) else -1e9))
    return out
