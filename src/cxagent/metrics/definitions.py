"""CX metrics from additive sufficient statistics.

Any engine (numpy, DuckDB, Spark) aggregates orders to the counts and sums of
``CXStats``; rates and the CX Score are computed here from those, so a slice's rate is always
sum(numerator) / sum(denominator), never an average of per-leaf rates.

The CX Score is a weighted mean of six components, each mapped linearly onto 0-100 between a
documented "worst" value (score 0) and "best" value (score 100) and clipped:

| component       | weight | worst | best | definition |
| --------------- | ------ | ----- | ---- | ---------- |
| on_time         | 0.30   | 0.50  | 1.00 | delivered orders handed off no later than promised_eta + 5 min, over delivered orders |
| item_accuracy   | 0.25   | 0.85  | 1.00 | item lines of delivered orders neither missing nor substituted, over those lines |
| cancellation    | 0.15   | 0.10  | 0.00 | canceled orders over orders |
| refund          | 0.15   | 0.25  | 0.00 | orders with any refund or credit over orders |
| support_contact | 0.10   | 0.20  | 0.00 | orders with a support ticket over orders |
| rating          | 0.05   | 3.00  | 5.00 | mean stars of rated orders |

A component whose denominator is empty (no ratings, say) is left out and the weights of the
rest are renormalised. Efficiency metrics: orders per trip (delivered orders over trips),
dasher minutes per delivery, cost per delivery.

The weights above are the defaults; a run may use others, the configuration file's
`metrics.cx_weights` ([configuration](configuration.md#metrics)). Every computation of a CX
Score or of CX points reads the set in force, `cx_components()`; `using_components(...)` sets
it for a block of code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Final

import numpy as np

ON_TIME_GRACE_S: Final = 300.0


@dataclass(frozen=True)
class Component:
    name: str
    weight: float
    worst: float
    best: float

    def score(self, value: float) -> float:
        if np.isnan(value):
            return float("nan")
        return float(100.0 * np.clip((value - self.worst) / (self.best - self.worst), 0.0, 1.0))


DEFAULT_COMPONENTS: Final = (
    Component("on_time", 0.30, 0.50, 1.00),
    Component("item_accuracy", 0.25, 0.85, 1.00),
    Component("cancellation", 0.15, 0.10, 0.00),
    Component("refund", 0.15, 0.25, 0.00),
    Component("support_contact", 0.10, 0.20, 0.00),
    Component("rating", 0.05, 3.00, 5.00),
)
_ACTIVE: ContextVar[tuple[Component, ...]] = ContextVar("cx_components", default=DEFAULT_COMPONENTS)


def cx_components() -> tuple[Component, ...]:
    """The CX Score's components in force: ``DEFAULT_COMPONENTS`` unless the run set others
    with ``using_components`` (a context variable: per thread and per asyncio task)."""
    return _ACTIVE.get()


@contextmanager
def using_components(components: tuple[Component, ...]) -> Iterator[tuple[Component, ...]]:
    """Make ``components`` (the defaults with other weights, e.g. the configuration's
    ``metrics.components()``) the ones ``cx_components()`` returns inside the block."""
    known = {c.name for c in DEFAULT_COMPONENTS}
    unknown = [c.name for c in components if c.name not in known]
    if unknown or not sum(c.weight for c in components) > 0:
        raise ValueError(f"not a set of CX components: unknown {unknown} or no weight")
    token = _ACTIVE.set(tuple(components))
    try:
        yield components
    finally:
        _ACTIVE.reset(token)


@dataclass(frozen=True)
class CXStats:
    """Additive counts and sums for one slice and window (add two with ``+``)."""

    orders: float = 0.0
    delivered: float = 0.0
    on_time: float = 0.0
    eta_abs_error_s: float = 0.0
    canceled: float = 0.0
    refunded: float = 0.0
    items: float = 0.0
    bad_items: float = 0.0
    support: float = 0.0
    ratings: float = 0.0
    stars: float = 0.0
    trips: float = 0.0  # sum over delivered orders of 1 / orders on their trip
    dasher_active_s: float = 0.0
    delivery_cost: float = 0.0

    def __add__(self, other: CXStats) -> CXStats:
        return CXStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray], index: int) -> CXStats:
        return CXStats(**{f.name: float(arrays[f.name][index]) for f in fields(CXStats)})

    def metrics(self, components: tuple[Component, ...] | None = None) -> dict[str, float]:
        """Rates, efficiency metrics and the CX Score (of ``components``, else those in force:
        ``cx_components()``); NaN where a denominator is zero."""

        def ratio(a: float, b: float) -> float:
            return a / b if b > 0 else float("nan")

        values = {
            "on_time": ratio(self.on_time, self.delivered),
            "item_accuracy": 1.0 - ratio(self.bad_items, self.items),
            "cancellation": ratio(self.canceled, self.orders),
            "refund": ratio(self.refunded, self.orders),
            "support_contact": ratio(self.support, self.orders),
            "rating": ratio(self.stars, self.ratings),
        }
        out = {
            "on_time_rate": values["on_time"],
            "eta_mae_min": ratio(self.eta_abs_error_s, self.delivered) / 60.0,
            "item_accuracy": values["item_accuracy"],
            "cancellation_rate": values["cancellation"],
            "refund_rate": values["refund"],
            "support_contact_rate": values["support_contact"],
            "avg_rating": values["rating"],
            "orders_per_trip": ratio(self.delivered, self.trips),
            "dasher_min_per_delivery": ratio(self.dasher_active_s, self.delivered) / 60.0,
            "cost_per_delivery": ratio(self.delivery_cost, self.delivered),
        }
        if components is None:
            components = cx_components()
        scored = [(c.weight, c.score(values[c.name])) for c in components]
        present = [(w, s) for w, s in scored if not np.isnan(s)]
        total_w = sum(w for w, _ in present)
        out["cx_score"] = sum(w * s for w, s in present) / total_w if total_w > 0 else float("nan")
        return out


STAT_FIELDS: Final = tuple(f.name for f in fields(CXStats))


@dataclass(frozen=True)
class MetricInfo:
    """How people read a metric: its label, unit, and which direction is better."""

    label: str
    unit: str  # "points", "share", "minutes", "stars", "orders", "currency"
    higher_is_better: bool


METRICS: Final = {
    "cx_score": MetricInfo("CX Score", "points", True),
    "on_time_rate": MetricInfo("On-time rate", "share", True),
    "eta_mae_min": MetricInfo("ETA error", "minutes", False),
    "item_accuracy": MetricInfo("Item accuracy", "share", True),
    "cancellation_rate": MetricInfo("Cancellation rate", "share", False),
    "refund_rate": MetricInfo("Refund rate", "share", False),
    "support_contact_rate": MetricInfo("Support contact rate", "share", False),
    "avg_rating": MetricInfo("Average rating", "stars", True),
    "orders_per_trip": MetricInfo("Orders per trip", "orders", True),
    "dasher_min_per_delivery": MetricInfo("Courier minutes per delivery", "minutes", False),
    "cost_per_delivery": MetricInfo("Cost per delivery", "currency", False),
}
"""Every metric ``CXStats.metrics`` returns, in display order."""
