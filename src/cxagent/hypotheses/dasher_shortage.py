"""dasher_shortage: too few couriers for the orders.

Driver: the couriers on shift in the order's region and 15-minute interval, on a log scale
(the timing and change-alignment tests take it against the same hour and day of week of the
baseline).

Counterfactual: the courier wait of unbatched orders moved back by its change (per daypart:
unbatched, so that batching's own holding is not counted), and the batching a busier pool
brings by design undone too (baseline batching per daypart instead of per daypart and load
tercile), since a short-handed pool batches more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.hypotheses.base import Driver, Hypothesis
from cxagent.rca.day_orders import GRACE_MIN, DayOrders, batching_late_rate, flag_share, group_mean


def _counterfactual(orders: DayOrders, w_day: np.ndarray) -> float:
    before, now = (orders.unbatched_wait[p] for p in (False, True))
    shift = group_mean(now.value, now.group, orders.n_dayparts, w_day[now.day]) - group_mean(
        before.value, before.group, orders.n_dayparts, w_day[before.day]
    )
    late = orders.late_after - np.nan_to_num(shift)[orders.daypart_after]
    waited = flag_share(late > GRACE_MIN, w_day[orders.day_after])
    # the batching that a busier pool brings: baseline batching per daypart, against per
    # daypart and load tercile
    load_batching = batching_late_rate(orders, w_day, by_load=True) - batching_late_rate(
        orders, w_day, by_load=False
    )
    return waited - load_batching


def _driver_line(before: pd.DataFrame, after: pd.DataFrame) -> str:
    ub, ua = before[before["batched"] == 0], after[after["batched"] == 0]
    line = (
        f"courier wait (unbatched) {ub['dasher_wait_min'].mean():.1f} -> "
        f"{ua['dasher_wait_min'].mean():.1f} min; busy share "
        f"{before['busy_share'].mean():.0%} -> {after['busy_share'].mean():.0%}"
    )
    moved = after["couriers_log"].mean() - before["couriers_log"].mean()
    if np.isfinite(moved):  # geometric means over the orders: the hours people order in
        line += f"; couriers on shift when orders came in {np.expm1(moved):+.0%}"
    return line


HYPOTHESIS = Hypothesis(
    name="dasher_shortage",
    plain="there are too few couriers for the orders",
    outcome="late",
    needs=("dasher_wait_min", "batched"),
    # the supply itself, not its symptom: near full utilisation courier wait swings
    # several-fold with a few couriers more or less; couriers are scheduled to the week
    driver=Driver("couriers on shift (log)", "couriers_log", -1.0, weekly=True),
    driver_line=_driver_line,
    shap_features=("dasher_wait_min", "busy_share", "orders_per_dasher"),
    change_keywords=("dasher", "courier", "driver", "incentive", "supply"),
    counterfactual=_counterfactual,
)
