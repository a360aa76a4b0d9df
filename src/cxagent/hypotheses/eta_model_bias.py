"""eta_model_bias: promises shorter than what the baseline quoted for like orders.

Counterfactual: every promise lengthened by the average amount promises now fall short of
the baseline's quote for the same store, hour, distance and basket (``rca.timeline.
promise_gap``) - on average, not order by order, which would also strip the promises' own
noise. A new ETA model version in the orders is named beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.hypotheses.base import Driver, Hypothesis, minutes
from cxagent.rca.day_orders import GRACE_MIN, DayOrders, flag_share, wmean


def _counterfactual(orders: DayOrders, w_day: np.ndarray) -> float:
    w = w_day[orders.day]
    shift = wmean(orders.gap[True], w * orders.gap_known[True]) - wmean(
        orders.gap[False], w * orders.gap_known[False]
    )
    return flag_share(orders.late_after + shift > GRACE_MIN, w_day[orders.day_after])


def _driver_line(before: pd.DataFrame, after: pd.DataFrame) -> str:
    new = sorted(set(after["eta_model"].unique()) - set(before["eta_model"].unique()))
    models = f"; new ETA model {', '.join(new)}" if new else ""
    was, now = minutes(before["promised_min"].mean()), minutes(after["promised_min"].mean())
    return f"promised {was} -> {now}{models}"


HYPOTHESIS = Hypothesis(
    name="eta_model_bias",
    plain="the delivery times we promise are too optimistic",
    outcome="late",
    needs=("promised_min",),
    driver=Driver("promised time", "promised_min", -1.0),
    driver_line=_driver_line,
    shap_features=("promised_min",),
    change_keywords=("eta", "promise", "delivery estimate", "quote"),
    counterfactual=_counterfactual,
)
