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

Other outcomes (cancellations, refunds, support contacts) respond to lateness, so their
counterfactuals go through a response curve estimated on the slice's orders (the outcome's
rate per bin of late minutes), plus item issues for inventory_drop. Intervals come from a
bootstrap over days. Impacts are not exactly additive (lateness is a threshold), and need
not sum to the observed change: what no mechanism explains is left as such.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _late_cf(after: pd.DataFrame, before: pd.DataFrame, mechanism: str) -> np.ndarray:
    """Counterfactual late minutes of the delivered ``after`` orders without ``mechanism``."""
    late = after["late_min"].to_numpy(float)
    if mechanism == "prep_time_drift":
        base = before.groupby("store_id")["prep_min"].median()
        now = after.groupby("store_id")["prep_min"].median()
        ratio = (base / now).reindex(after["store_id"]).to_numpy(float)
        ratio = np.where(np.isfinite(ratio), ratio, 1.0)
        prep = after["prep_min"].to_numpy(float)
        return late - prep * (1.0 - ratio)
    if mechanism == "dasher_shortage":
        unb_b = before[before["batched"] == 0].groupby("daypart")["dasher_wait_min"].mean()
        unb_a = after[after["batched"] == 0].groupby("daypart")["dasher_wait_min"].mean()
        shift = (unb_a - unb_b).reindex(after["daypart"]).fillna(0.0).to_numpy(float)
        return late - shift
    if mechanism == "eta_model_bias":
        # shift every promise by the average amount it now falls short of the baseline
        # quote (not order by order: that would also strip the promises' own noise)
        gap = float(after["promise_gap"].mean() - before["promise_gap"].mean())
        return late + gap
    raise ValueError(f"mechanism: {mechanism!r} has no timeline counterfactual")


def promise_gap(frame: pd.DataFrame, after: str) -> np.ndarray:
    """Promised minutes minus what the baseline quoted for a like order (least squares of
    the promise on store, hour, distance and basket size, fitted once on the orders before
    the change): about 0 before, negative when promises got shorter."""
    before = frame[~frame[after]]
    return frame["promised_min"].to_numpy(float) - _baseline_promise(before, frame)


def _baseline_promise(before: pd.DataFrame, after: pd.DataFrame) -> np.ndarray:
    """What the baseline quoted for orders like ``after``'s: least squares of the promised
    minutes on store, hour, distance and basket size, fitted on the baseline orders."""

    use_distance = bool(before["distance_mi"].notna().all())  # not every source has it

    def design(frame: pd.DataFrame, stores: list, hours: list) -> np.ndarray:
        cols = [np.ones(len(frame)), frame["item_count"].to_numpy(float)]
        if use_distance:
            cols.append(frame["distance_mi"].fillna(0.0).to_numpy(float))
        cols += [(frame["store_id"] == s).to_numpy(float) for s in stores[1:]]
        cols += [(frame["hour"] == h).to_numpy(float) for h in hours[1:]]
        return np.column_stack(cols)

    stores = sorted(before["store_id"].unique().tolist())
    hours = sorted(before["hour"].unique().tolist())
    x = design(before, stores, hours)
    coef, *_ = np.linalg.lstsq(x, before["promised_min"].to_numpy(float), rcond=None)
    return np.asarray(design(after, stores, hours) @ coef)


def _strata(
    after: pd.DataFrame, before: pd.DataFrame, by_load: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Stratum of each order: its daypart (a categorical shared by both frames), and with
    ``by_load`` its tercile of courier busy share (cut at the baseline's terciles), since a
    busier courier pool batches more by design."""
    a = np.asarray(after["daypart"].cat.codes, dtype=np.int64) * 3
    b = np.asarray(before["daypart"].cat.codes, dtype=np.int64) * 3
    load_b = before["busy_share"].to_numpy(float)
    if by_load and np.isfinite(load_b).any():
        cuts = np.nanquantile(load_b, [1 / 3, 2 / 3])
        a = a + np.searchsorted(cuts, np.nan_to_num(after["busy_share"].to_numpy(float)))
        b = b + np.searchsorted(cuts, np.nan_to_num(load_b))
    return a, b


def _batching_rate_cf(after: pd.DataFrame, before: pd.DataFrame, *, by_load: bool) -> float:
    """Counterfactual late rate of ``after`` with baseline batching, per stratum (daypart,
    and courier load with ``by_load``): the unbatched late rate now, plus the baseline
    batched share times the baseline penalty (batched minus unbatched late rate)."""
    sa, sb = _strata(after, before, by_load)
    late_a, late_b = after["late"].to_numpy(float), before["late"].to_numpy(float)
    bat_a, bat_b = after["batched"].to_numpy(float) > 0, before["batched"].to_numpy(float) > 0
    total = 0.0
    for key in np.unique(sa):
        now, then = sa == key, sb == key
        if not then.any():
            total += late_a[now].sum()
            continue
        unb_now = late_a[now & ~bat_a]
        base_unb, base_b = late_b[then & ~bat_b], late_b[then & bat_b]
        penalty = base_b.mean() - base_unb.mean() if base_b.size and base_unb.size else 0.0
        unb = unb_now.mean() if unb_now.size else late_a[now].mean()
        total += (unb + bat_b[then].mean() * penalty) * now.sum()
    return float(total / max(len(late_a), 1))


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
    cols = ["order_time", after, "late", "late_min", "store_id", "daypart", "hour", "item_count"]
    cols += sorted(
        {c for m in MECHANISMS for c in NEEDS[m]} | {"prep_min", "distance_mi", "busy_share"}
    )
    frame = frame if "busy_share" in frame else frame.assign(busy_share=np.nan)
    delivered = frame.loc[frame["delivered"], cols].copy()
    delivered["daypart"] = delivered["daypart"].astype("category")  # cheap to resample
    if not (set(NEEDS["eta_model_bias"]) & set(missing)):
        delivered["promise_gap"] = promise_gap(delivered, after)
    if delivered[after].all() or not delivered[after].any():
        raise ValueError("frame: needs delivered orders both before and after the change")
    days = delivered["order_time"].dt.floor("D")
    observed = float(delivered.loc[delivered[after], "late"].mean()) - float(
        delivered.loc[~delivered[after], "late"].mean()
    )

    def impact(sample: pd.DataFrame, mechanism: str) -> float:
        a, b = sample[sample[after]], sample[~sample[after]]
        now = float(a["late"].mean())
        if mechanism == "batching_policy":  # more batching at the same courier load
            return now - _batching_rate_cf(a, b, by_load=True)
        cf = _late_cf(a, b, mechanism)
        effect = now - float(np.mean(cf > GRACE_MIN))
        if mechanism == "dasher_shortage":  # and the batching that busier couriers bring
            effect += _batching_rate_cf(a, b, by_load=True) - _batching_rate_cf(a, b, by_load=False)
        return effect

    rng = np.random.default_rng(seed)
    delivered = delivered.reset_index(drop=True)
    by_day = [np.asarray(ix) for ix in delivered.groupby(days.to_numpy()).indices.values()]
    samples = [
        delivered.iloc[np.concatenate([by_day[i] for i in pick])]
        for pick in rng.integers(0, len(by_day), size=(n_bootstrap, len(by_day)))
    ]
    samples = [s for s in samples if s[after].any() and not s[after].all()]
    out = []
    for mechanism in MECHANISMS:
        testable = not (set(NEEDS[mechanism]) & set(missing))
        if not testable:
            out.append(MechanismImpact(mechanism, np.nan, np.nan, np.nan, np.nan, False))
            continue
        point = impact(delivered, mechanism)
        # days resampled (shocks are shared within a day), the same days for every mechanism
        reps = np.array([impact(s, mechanism) for s in samples])
        lo, hi = np.quantile(reps, [0.05, 0.95]) if reps.size else (np.nan, np.nan)
        share = point / observed if observed > 0 else np.nan
        positive = float(np.mean(reps > 0)) if reps.size else np.nan
        out.append(MechanismImpact(mechanism, point, float(lo), float(hi), share, True, positive))
    out.sort(key=lambda m: -(m.late_rate_change if np.isfinite(m.late_rate_change) else -1e9))
    return out


ResponseCurve = Callable[[np.ndarray], np.ndarray]


def response_curve(late_min: np.ndarray, outcome: np.ndarray, width: float = 2.5) -> ResponseCurve:
    """Rate of ``outcome`` per bin of late minutes (bins of ``width``, ends pooled so each
    has at least 30 orders): how cancellations, refunds or contacts follow lateness."""
    edges = np.arange(-30.0, 60.0 + width, width)
    idx = np.clip(np.searchsorted(edges, late_min), 0, len(edges))
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    hits = np.bincount(idx, weights=outcome.astype(float), minlength=len(edges) + 1)
    overall = hits.sum() / max(counts.sum(), 1.0)
    rate = np.where(counts >= 30, hits / np.maximum(counts, 1.0), overall)

    def curve(x: np.ndarray) -> np.ndarray:
        return np.asarray(rate[np.clip(np.searchsorted(edges, x), 0, len(edges))])

    return curve
