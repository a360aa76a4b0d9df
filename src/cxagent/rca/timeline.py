"""What each mechanism did to an incident's outcomes: counterfactuals on the delivery timeline.

Every delivered order's lateness is an identity of its timeline::

    late_min = prep + wait + leg - promised

(prep: the merchant readies the order; wait: until a courier leaves the store with it, which
for a batched order includes holding for its trip partners; leg: travel and the other drops
of its trip; promised: the quoted duration). Each hypothesis acts on one term, so its impact
is measured by undoing its change on that term for the orders after the change and counting
the late orders that would not have been late, a counterfactual that needs no model of the
outcome (the Oaxaca-Blinder idea of splitting a change into its sources, on the timeline).
Each hypothesis's counterfactual is in its module of ``cxagent.hypotheses`` (prep times
back to each store's baseline median, courier wait of unbatched orders back by its change,
batched share and penalty back at baseline per daypart and courier-load tercile, promises
lengthened back to the baseline's quote for like orders).

This module prepares the orders (the promise gap against the baseline's quote for like
orders, fitted once), runs the same day-bootstrap replicates for every lateness mechanism
(``rca.day_orders``) and reports each impact with its interval. Item issues (inventory_drop)
are measured on their own rate (``hypotheses.inventory_drop``). Impacts are not exactly
additive (lateness is a threshold), and need not sum to the observed change: what no
mechanism explains is left as such.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from cxagent.hypotheses import MECHANISMS, REGISTRY
from cxagent.rca.day_orders import DayOrders, MechanismImpact, day_picks, summarise


def promise_gap(frame: pd.DataFrame, after: str) -> np.ndarray:
    """Promised minutes minus what the baseline quoted for a like order (least squares of
    the promise on store, hour, distance and basket size, fitted once on the orders before
    the change): about 0 before, negative when promises got shorter."""
    return frame["promised_min"].to_numpy(float) - _baseline_promise(
        frame, ~frame[after].to_numpy(bool)
    )


def _baseline_promise(frame: pd.DataFrame, is_before: np.ndarray) -> np.ndarray:
    """What the baseline quoted for orders like ``frame``'s: least squares of the promised
    minutes on store (fixed effects, partialled out by demeaning within store), hour,
    basket size and distance, fitted on the baseline orders (``is_before``)."""
    # not every source has the distance
    use_distance = not np.isnan(frame["distance_mi"].to_numpy(float)[is_before]).any()
    hours = sorted(pd.unique(frame["hour"].to_numpy()[is_before]).tolist())
    # the design of every order, built once: the baseline's rows are the fit's
    design = _promise_design(frame, hours, use_distance)
    x, y = design[is_before], frame["promised_min"].to_numpy(float)[is_before]
    store = frame["store_id"].to_numpy()[is_before]
    x_mean = pd.DataFrame(x, copy=False).groupby(store).transform("mean").to_numpy()
    y_mean = pd.Series(y).groupby(store).transform("mean").to_numpy()
    coef, *_ = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=None)
    # each store's level: its mean promise net of its orders' mix
    level = pd.Series(y - x @ coef).groupby(store).mean()
    base = level.reindex(frame["store_id"].to_numpy()).to_numpy(float)
    base = np.where(np.isfinite(base), base, float(level.mean()))  # a store new after the change
    return np.asarray(base + design @ coef)


def _promise_design(frame: pd.DataFrame, hours: list[int], use_distance: bool) -> np.ndarray:
    """Columns of the promise model: basket size, distance (when used) and a dummy per hour
    but the first."""
    first = 2 if use_distance else 1
    x = np.empty((len(frame), first + max(len(hours) - 1, 0)))
    x[:, 0] = frame["item_count"].to_numpy(float)
    if use_distance:
        x[:, 1] = frame["distance_mi"].fillna(0.0).to_numpy(float)
    x[:, first:] = frame["hour"].to_numpy()[:, None] == np.asarray(hours[1:])[None, :]
    return x


def _impacts(o: DayOrders, w_day: np.ndarray, mechanisms: Iterable[str]) -> dict[str, float]:
    """Late-rate change each mechanism explains, on the orders of days weighted by ``w_day``."""
    return {m: REGISTRY[m].explained(o, w_day) for m in mechanisms}


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
    testable_eta = not (set(REGISTRY["eta_model_bias"].needs) & set(missing))

    def column(name: str) -> np.ndarray:
        if name not in delivered:
            return np.full(len(delivered), np.nan)
        return delivered[name].to_numpy(float)

    is_after, late = delivered[after].to_numpy(bool), delivered["late"].to_numpy(float)
    day = pd.factorize(delivered["order_time"].dt.floor("D"))[0].astype(np.int64)
    orders = DayOrders.build(
        {
            "day": day,
            "after": is_after,
            "late": late,
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
    observed = float(late[is_after].mean() - late[~is_after].mean())
    testable = [m for m in MECHANISMS if not (set(REGISTRY[m].needs) & set(missing))]
    point = _impacts(orders, np.ones(orders.n_days), testable)
    # a replicate: days resampled (shocks are shared within a day), as a weight per day; the
    # same replicates for every mechanism
    replicates = []
    for pick in day_picks(orders.n_days, n_bootstrap, seed):
        w_day = np.bincount(pick, minlength=orders.n_days).astype(float)
        if orders.covers_both(w_day):
            replicates.append(_impacts(orders, w_day, testable))
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
