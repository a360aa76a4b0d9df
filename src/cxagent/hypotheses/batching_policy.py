"""batching_policy: more orders held for trip partners than the courier load calls for.

Counterfactual: per stratum (daypart x tercile of the courier pool's busy share, cut at the
baseline's terciles), the unbatched late rate now plus the baseline's batched share times
the baseline's batching penalty (batched minus unbatched late rate). Batching that a busier
pool brings by design stays in the counterfactual: it is the courier shortage's doing
(mediation), not the policy's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxagent.hypotheses.base import Driver, Hypothesis
from cxagent.rca.day_orders import DayOrders, batching_late_rate


def _counterfactual(orders: DayOrders, w_day: np.ndarray) -> float:
    return batching_late_rate(orders, w_day, by_load=True)


def _driver_line(before: pd.DataFrame, after: pd.DataFrame) -> str:
    return f"batched share {before['batched'].mean():.0%} -> {after['batched'].mean():.0%}"


HYPOTHESIS = Hypothesis(
    name="batching_policy",
    plain="couriers now carry more orders per trip, so orders wait for each other",
    outcome="late",
    needs=("batched", "dasher_wait_min"),
    driver=Driver("batched share", "batched", 1.0),
    driver_line=_driver_line,
    shap_features=("batched",),
    change_keywords=("batch", "bundl", "stacked order", "multi-order"),
    counterfactual=_counterfactual,
)
