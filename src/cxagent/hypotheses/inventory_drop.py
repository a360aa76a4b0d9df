"""inventory_drop: items out of stock, so orders arrive with missing or substituted items.

It acts on item accuracy, not lateness: its impact is the change of the bad-item-line rate
(missing or substituted lines over all lines), after minus before, with an interval from the
same day bootstrap as the lateness mechanisms (days resampled from per-day sums).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.hypotheses.base import Driver, Hypothesis
from cxagent.rca.day_orders import MechanismImpact, day_picks, summarise

NAME = "inventory_drop"


def bad_rate(frame: pd.DataFrame) -> float:
    """Bad item lines over all item lines of ``frame``'s orders."""
    return float(frame["bad_items"].sum() / max(frame["item_count"].sum(), 1))


def _impact(frame: pd.DataFrame, n_bootstrap: int, seed: int) -> MechanismImpact:
    d = frame[frame["delivered"]]
    if d["bad_items"].isna().all():
        return MechanismImpact(NAME, np.nan, np.nan, np.nan, np.nan, False)
    day = pd.factorize(d["order_time"].dt.floor("D"))[0]
    n = int(day.max()) + 1
    after = d["after"].to_numpy(bool)
    bad, items = np.nan_to_num(d["bad_items"].to_numpy(float)), d["item_count"].to_numpy(float)
    bad_a, items_a, bad_b, items_b = (
        np.bincount(day[m], weights=w[m], minlength=n)
        for m in (after, ~after)
        for w in (bad, items)
    )

    def change(weight: np.ndarray) -> float:
        a = float(weight @ bad_a) / max(float(weight @ items_a), 1.0)
        b = float(weight @ bad_b) / max(float(weight @ items_b), 1.0)
        return a - b

    reps = []
    for pick in day_picks(n, n_bootstrap, seed):
        weight = np.bincount(pick, minlength=n).astype(float)
        if float(weight @ items_a) > 0 and float(weight @ items_b) > 0:
            reps.append(change(weight))
    lo, hi, positive = summarise(reps)
    return MechanismImpact(NAME, change(np.ones(n)), lo, hi, np.nan, True, positive)


def _driver_line(before: pd.DataFrame, after: pd.DataFrame) -> str:
    return f"bad item lines {bad_rate(before):.1%} -> {bad_rate(after):.1%}"


HYPOTHESIS = Hypothesis(
    name=NAME,
    plain="items are out of stock, so orders arrive with missing or substituted items",
    outcome="item_accuracy",
    needs=("bad_items",),
    driver=Driver("share of bad item lines", "bad_share", 1.0),
    driver_line=_driver_line,
    change_keywords=("inventory", "in-stock", "stock", "catalog", "substitut"),
    own_impact=_impact,
)
