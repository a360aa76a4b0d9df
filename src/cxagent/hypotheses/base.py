"""What a hypothesis is: the question it puts to the data and the tests that answer it.

Each hypothesis of the library (one module each, ``cxagent.hypotheses.REGISTRY``) declares

- the fields it needs (a source without them marks it "not testable");
- its driver: the quantity it moves when it acts (batched share, merchant prep, ...), which
  way hurts, and how that quantity is read per order; the timing and change-alignment tests
  read the driver from here (the diff-in-diff, ``rca.contrast``, and detection's driver
  checks, ``incidents.drivers``, measure the same quantities on their own panel sums);
- the per-order features its share of the SHAP shift attribution is summed over;
- the words by which a logged change speaks to it (``rca.changelog``);
- its counterfactual: the late rate of the orders after the change had it not acted, on the
  day-weighted arrays every bootstrap replicate shares (``rca.day_orders``); inventory acts on
  item accuracy instead and measures its own impact;
- a line that shows its driver before and after, and a sentence for product managers.

The investigation (``rca.investigate``) runs every registered hypothesis the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cxagent.rca.day_orders import DayOrders, MechanismImpact


@dataclass(frozen=True)
class Driver:
    """The quantity a hypothesis moves when it acts."""

    words: str  # as people read it: "batched share"
    column: str  # the hourly mean of this per-order column (``rca.timing``)
    harm: float  # +1: a rise hurts; -1: a fall hurts (shorter promises)
    weekly: bool = False  # its level follows the day of the week (supply scheduled to demand)


# the late rate the after orders would have had without the hypothesis, for one replicate's
# day weights
Counterfactual = Callable[[DayOrders, np.ndarray], float]
# an impact measured on its own outcome: (order frame with "after", bootstrap size, seed)
OwnImpact = Callable[[pd.DataFrame, int, int], MechanismImpact]
# (delivered orders before, after) -> a line showing the driver's move
DriverLine = Callable[[pd.DataFrame, pd.DataFrame], str]


@dataclass(frozen=True)
class Hypothesis:
    name: str  # the scenario vocabulary: batching_policy, prep_time_drift, ...
    plain: str  # what it means, for a product manager
    outcome: Literal["late", "item_accuracy"]  # the outcome it acts on
    needs: tuple[str, ...]  # ``order_frame`` columns
    driver: Driver
    driver_line: DriverLine
    shap_features: tuple[str, ...] = ()
    change_keywords: tuple[str, ...] = ()
    counterfactual: Counterfactual | None = None  # for outcome "late"
    own_impact: OwnImpact | None = None  # for any other outcome

    def __post_init__(self) -> None:
        if (self.counterfactual is None) == (self.own_impact is None):
            raise ValueError(f"hypothesis {self.name}: give a counterfactual or an own impact")
        if (self.counterfactual is not None) != (self.outcome == "late"):
            raise ValueError(f"hypothesis {self.name}: a counterfactual is for lateness")

    def explained(self, orders: DayOrders, w_day: np.ndarray) -> float:
        """Late-rate points it explains among the after orders (observed minus its
        counterfactual), for one replicate's day weights."""
        if self.counterfactual is None:
            raise ValueError(f"hypothesis {self.name}: not a lateness mechanism")
        return orders.late_rate(w_day) - self.counterfactual(orders, w_day)


def minutes(value: float) -> str:
    """A duration for people: minutes, or hours or days when long (marketplace promises)."""
    if value >= 48 * 60:
        return f"{value / 1440:.1f} days"
    if value >= 120:
        return f"{value / 60:.1f} h"
    return f"{value:.1f} min"
