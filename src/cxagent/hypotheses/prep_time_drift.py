"""prep_time_drift: merchants take longer to ready orders than their own baseline.

Counterfactual: each store's prep times scaled back to its baseline median (the ratio of
its medians before and after), which leaves every order's other minutes as they were.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.hypotheses.base import Driver, Hypothesis, minutes
from cxagent.rca.day_orders import GRACE_MIN, DayOrders, flag_share


def _counterfactual(orders: DayOrders, w_day: np.ndarray) -> float:
    ratio = orders.prep_medians[False](w_day) / orders.prep_medians[True](w_day)
    r = ratio[orders.store_after]
    late = orders.late_after - orders.prep_after * (1.0 - np.where(np.isfinite(r), r, 1.0))
    return flag_share(late > GRACE_MIN, w_day[orders.day_after])


def _driver_line(before: pd.DataFrame, after: pd.DataFrame) -> str:
    return (
        f"merchant prep {minutes(before['prep_min'].mean())} -> {minutes(after['prep_min'].mean())}"
    )


HYPOTHESIS = Hypothesis(
    name="prep_time_drift",
    plain="stores take longer to prepare orders than the delivery times assume",
    outcome="late",
    needs=("prep_min",),
    driver=Driver("merchant prep", "prep_min", 1.0),
    driver_line=_driver_line,
    shap_features=("prep_min",),
    change_keywords=("merchant", "prep", "kitchen"),
    counterfactual=_counterfactual,
)
