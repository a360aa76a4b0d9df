"""The planted causes and the levers they pull.

Each cause turns an intervention's strength (magnitude x ramp x in-scope, per order or per
supply interval) into changes of the simulation's levers. Magnitude 1.0 is the documented
reference strength:

================  ==============================================================================
cause             reference effect at magnitude 1.0
================  ==============================================================================
batching_policy   max orders per trip 2 -> 4 and the utilisation that triggers batching
                  0.85 -> 0.80 (batching grows most where couriers are already busy)
prep_time_drift   merchant prep time x1.5, ramping in linearly over 48 hours
dasher_shortage   dashers on shift x0.7
inventory_drop    in-stock probability of every SKU minus 0.15
eta_model_bias    promised delivery durations 18% too short (a new ETA model version)
================  ==============================================================================

A cause registers itself by subclassing ``Cause``; ``CAUSE_REGISTRY`` maps names to instances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

BASE_BATCH_CAP = 2
BASE_BATCH_TRIGGER = 0.85
BASE_ETA_MODEL = "eta-v7"
NEW_ETA_MODEL = "eta-v8"
INSTOCK_DROP = 0.15  # in-stock probability lost at magnitude 1
TRIGGER_SHIFT = 0.05  # utilisation trigger of batching lowered at magnitude 1


@dataclass
class Levers:
    """What the simulation reads; the baseline world is all defaults."""

    supply_mult: np.ndarray  # (n_regions, 96) multiplier on dashers on shift
    batch_cap: np.ndarray  # per order: max orders per trip
    batch_trigger: np.ndarray  # per order: utilisation above which batching kicks in
    prep_mult: np.ndarray  # per order
    instock_drop: np.ndarray  # per order: subtracted from in-stock probabilities
    eta_scale: np.ndarray  # per order: multiplier on the promised duration
    eta_new_model: np.ndarray  # per order: bool, promise made by the new model version
    promise_add_s: np.ndarray  # per order: seconds added to the promise (a fix's ETA buffer)
    hidden_lines: np.ndarray | None = None  # per item line: a hidden SKU, not ordered (a fix)

    @staticmethod
    def baseline(n_orders: int, n_regions: int) -> Levers:
        return Levers(
            supply_mult=np.ones((n_regions, 96)),
            batch_cap=np.full(n_orders, BASE_BATCH_CAP, dtype=np.int64),
            batch_trigger=np.full(n_orders, BASE_BATCH_TRIGGER),
            prep_mult=np.ones(n_orders),
            instock_drop=np.zeros(n_orders),
            eta_scale=np.ones(n_orders),
            eta_new_model=np.zeros(n_orders, dtype=bool),
            promise_add_s=np.zeros(n_orders),
        )


class Cause:
    """Base class: subclasses set ``name`` and implement ``apply``."""

    name: ClassVar[str]
    change_kind: ClassVar[str] = "ops"
    change_name: ClassVar[str]
    ramp_hours: ClassVar[float] = 0.0

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        raise NotImplementedError

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def describe(self, magnitude: float) -> str:
        before, after = self.parameters(magnitude)
        return f"{self.change_name}: {json.dumps(before)} -> {json.dumps(after)}"


def batch_cap(magnitude: float) -> int:
    return BASE_BATCH_CAP + round(2 * magnitude)


class BatchingPolicy(Cause):
    name = "batching_policy"
    change_kind = "policy"
    change_name = "batching_policy"

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        on = order_strength > 0
        levers.batch_cap[on] = BASE_BATCH_CAP + np.rint(2 * order_strength[on]).astype(np.int64)
        levers.batch_trigger[on] -= TRIGGER_SHIFT * order_strength[on]

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            {
                "max_orders_per_trip": BASE_BATCH_CAP,
                "batching_utilisation_trigger": BASE_BATCH_TRIGGER,
            },
            {
                "max_orders_per_trip": batch_cap(magnitude),
                "batching_utilisation_trigger": round(
                    BASE_BATCH_TRIGGER - TRIGGER_SHIFT * magnitude, 3
                ),
            },
        )


class PrepTimeDrift(Cause):
    name = "prep_time_drift"
    change_name = "merchant_operations"
    ramp_hours = 48.0

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        levers.prep_mult *= 1.0 + 0.5 * order_strength

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({"prep_time_factor": 1.0}, {"prep_time_factor": round(1 + 0.5 * magnitude, 3)})


class DasherShortage(Cause):
    name = "dasher_shortage"
    change_name = "dasher_incentives"

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        levers.supply_mult *= np.clip(1.0 - 0.3 * bin_strength, 0.2, 1.0)

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({"peak_pay_usd": 3.0}, {"peak_pay_usd": round(max(0.0, 3.0 - 3.0 * magnitude), 2)})


class InventoryDrop(Cause):
    name = "inventory_drop"
    change_name = "inventory_sync"

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        levers.instock_drop += INSTOCK_DROP * order_strength

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            {"inventory_sync_interval_min": 15},
            {"inventory_sync_interval_min": round(15 + 45 * magnitude)},
        )


class EtaModelBias(Cause):
    name = "eta_model_bias"
    change_kind = "model"
    change_name = "eta_model"

    def apply(self, levers: Levers, order_strength: np.ndarray, bin_strength: np.ndarray) -> None:
        levers.eta_scale *= 1.0 - 0.18 * order_strength
        levers.eta_new_model |= order_strength > 0

    def parameters(self, magnitude: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({"version": BASE_ETA_MODEL}, {"version": NEW_ETA_MODEL})


CAUSE_REGISTRY: dict[str, Cause] = {cls.name: cls() for cls in Cause.__subclasses__()}
