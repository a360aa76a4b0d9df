"""The action library: fixes an engineer can ship, each linked to the cause it answers.

``CATALOGUE`` documents every action type (what it does, the cause it answers, its kind for
experiment design, its implementation complexity, its parameters). ``propose`` turns an
investigated incident into concrete actions: scoped to the incident's slice, with parameters
measured on the slice's orders (the previous batching policy from the change log, the prep
drift of each store, the shortfall of the promises) so that every number is from the data.

=================== ================= ========== ===========================================
action              answers           complexity what it does
=================== ================= ========== ===========================================
reduce_batching     batching_policy   low        restore the previous batching policy (max
                                                 orders per trip and utilisation trigger) in
                                                 the slice; without a logged change, cap trips
                                                 at the baseline's largest trip
reduce_batching_    batching_policy   medium     the same, only for orders holding a fragile
fragile                                          SKU (less damage for less efficiency lost)
reduce_batching_    batching_policy   low        the same, in the slice's busiest daypart only
peak                                             (when the slice names no daypart)
stop_batching       batching_policy   low        no batched trips in the slice
eta_buffer          eta_model_bias    low        add the promises' measured shortfall (minutes)
                                                 to promised times in the slice
recalibrate_prep    prep_time_drift   medium     lengthen the promise's prep-time part by each
                                                 drifting store's measured prep-time growth
peak_pay            dasher_shortage   medium     incentive pay for more dashers on shift in the
                                                 region and daypart, as many more as the load
                                                 per dasher grew
suppress_skus       inventory_drop    medium     hide SKUs found short (missing or substituted)
                                                 on more than 10% of the slice's order lines
rollback            the change's      low        revert a logged change (batching policy or ETA
                    hypothesis                   model) everywhere it applied
=================== ================= ========== ===========================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pandas as pd

from cxagent.rca.timeline import promise_gap

Complexity = Literal["low", "medium", "high"]
ActionKind = Literal["dispatch", "supply", "store_ops", "promise"]


@dataclass(frozen=True)
class ActionType:
    name: str
    cause: str
    kind: ActionKind
    complexity: Complexity
    description: str
    parameters: tuple[str, ...]


CATALOGUE: Final[dict[str, ActionType]] = {
    t.name: t
    for t in (
        ActionType(
            "reduce_batching",
            "batching_policy",
            "dispatch",
            "low",
            "Restore the previous batching policy in the affected slice.",
            ("max_orders_per_trip", "utilisation_trigger"),
        ),
        ActionType(
            "reduce_batching_fragile",
            "batching_policy",
            "dispatch",
            "medium",
            "Restore the previous batching policy for orders holding a fragile SKU.",
            ("max_orders_per_trip", "utilisation_trigger", "fragile_only"),
        ),
        ActionType(
            "reduce_batching_peak",
            "batching_policy",
            "dispatch",
            "low",
            "Restore the previous batching policy in the slice's busiest daypart only.",
            ("max_orders_per_trip", "utilisation_trigger", "daypart"),
        ),
        ActionType(
            "stop_batching",
            "batching_policy",
            "dispatch",
            "low",
            "Send every order of the affected slice on its own trip.",
            ("max_orders_per_trip",),
        ),
        ActionType(
            "eta_buffer",
            "eta_model_bias",
            "promise",
            "low",
            "Add the measured shortfall of the promises to promised delivery times.",
            ("minutes",),
        ),
        ActionType(
            "recalibrate_prep",
            "prep_time_drift",
            "promise",
            "medium",
            "Re-estimate the prep times of the drifting stores in the delivery promise.",
            ("store_factors",),
        ),
        ActionType(
            "peak_pay",
            "dasher_shortage",
            "supply",
            "medium",
            "Pay a peak incentive for more dashers on shift in the region and daypart.",
            ("supply_uplift",),
        ),
        ActionType(
            "suppress_skus",
            "inventory_drop",
            "store_ops",
            "medium",
            "Hide SKUs whose in-stock probability is below a threshold.",
            ("instock_threshold",),
        ),
        ActionType(
            "rollback",
            "",
            "dispatch",
            "low",
            "Revert a logged policy or model change everywhere it applied.",
            ("change_id",),
        ),
    )
}
INSTOCK_THRESHOLD: Final = 0.9  # hide a SKU found short on more than 1 in 10 order lines
MIN_SKU_LINES: Final = 10  # order lines a SKU needs to judge its stock
DRIFT_THRESHOLD: Final = 1.10  # a store drifts when its median prep time grew by 10% or more
MIN_STORE_ORDERS: Final = 20  # per period, to measure a store's prep drift


@dataclass(frozen=True)
class Action:
    """A concrete fix: an action type, where it applies and with which settings."""

    name: str
    cause: str
    scope: Mapping[str, Any]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    change_id: str | None = None

    @property
    def type(self) -> ActionType:
        return CATALOGUE[self.name]

    @property
    def kind(self) -> ActionKind:
        if self.name == "rollback" and self.cause == "eta_model_bias":
            return "promise"
        return self.type.kind

    @property
    def complexity(self) -> Complexity:
        return self.type.complexity

    @property
    def where(self) -> str:
        return " ".join(str(v) for v in self.scope.values()) or "everywhere"

    @property
    def title(self) -> str:
        """ "Reduce batching in SF grocery dinner (at most 2 orders per trip, ...)"."""
        verb, what, detail = self._phrase()
        return f"{verb} {what} in {self.where}{detail}"

    @property
    def gerund(self) -> str:
        """The fix as the subject of a hypothesis, without its scope: "Reducing batching
        (at most 2 orders per trip, ...)"."""
        verb, what, detail = self._phrase()
        gerunds = {
            "Reduce": "Reducing",
            "Stop": "Stopping",
            "Add": "Adding",
            "Recalibrate": "Recalibrating",
            "Pay": "Paying",
            "Hide": "Hiding",
            "Roll back": "Rolling back",
        }
        return f"{gerunds[verb]} {what}{detail}"

    def _phrase(self) -> tuple[str, str, str]:
        p = self.parameters
        match self.name:
            case "reduce_batching" | "reduce_batching_fragile" | "reduce_batching_peak":
                trigger = p.get("utilisation_trigger")
                to = f"at most {p['max_orders_per_trip']} orders per trip" + (
                    f", batching above {trigger:.0%} courier utilisation" if trigger else ""
                )
                extra = " for fragile items" if self.name.endswith("fragile") else ""
                return "Reduce", f"batching{extra}", f" ({to})"
            case "stop_batching":
                return "Stop", "batching", ""
            case "eta_buffer":
                return "Add", f"{p['minutes']:.1f} min to promised times", ""
            case "recalibrate_prep":
                n = len(p["store_factors"])
                return "Recalibrate", f"prep times of {n} drifting store(s)", ""
            case "peak_pay":
                pool = p.get("pool")
                where = (
                    " ".join(map(str, pool.values())) if isinstance(pool, Mapping) else str(pool)
                )
                return (
                    "Pay",
                    f"peak incentives for {p['supply_uplift']:.0%} more dashers",
                    (f" (the courier pool of {where})" if pool else ""),
                )
            case "suppress_skus":
                n = len(p.get("hidden_skus", []))
                return "Hide", f"{n} SKU(s) below {p['instock_threshold']:.0%} in-stock", ""
            case _:
                return "Roll back", f"{self.change_id} ({self.cause.replace('_', ' ')})", ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.name,
            "title": self.title,
            "cause": self.cause,
            "kind": self.kind,
            "complexity": self.complexity,
            "description": self.type.description,
            "scope": dict(self.scope),
            "parameters": {k: _plain(v) for k, v in self.parameters.items()},
            "change_id": self.change_id,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class LoggedChange:
    """A change_events row an action may revert or restore."""

    change_id: str
    name: str
    scope: Mapping[str, Any]
    before: Mapping[str, Any]
    after: Mapping[str, Any]


def logged_change(row: Mapping[str, Any]) -> LoggedChange:
    """A change_events row as a ``LoggedChange`` (scope lists of one value unwrapped)."""
    scope: dict[str, Any] = {}
    for key, column in (
        ("region", "scope_regions"),
        ("category", "scope_categories"),
        ("daypart", "scope_dayparts"),
        ("store_id", "scope_stores"),
    ):
        values = list(row.get(column) or [])
        if len(values) == 1:
            scope[key] = values[0]
        elif values:
            scope[key] = values

    def params(text: Any) -> dict[str, Any]:
        try:
            value = json.loads(text) if isinstance(text, str) and text else {}
        except json.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}

    return LoggedChange(
        str(row["change_id"]),
        str(row["name"]),
        scope,
        params(row.get("parameters_before")),
        params(row.get("parameters_after")),
    )


def batching_actions(
    scope: Mapping[str, Any], frame: pd.DataFrame, change: LoggedChange | None
) -> list[Action]:
    """Reduce batching in the slice (to the logged previous policy, else to the baseline's
    largest trip), or stop it."""
    before = dict(change.before) if change else {}
    cap = before.get("max_orders_per_trip")
    out = []
    if cap is not None:
        params: dict[str, Any] = {"max_orders_per_trip": int(cap), "target": "baseline"}
        trigger = before.get("batching_utilisation_trigger")
        if trigger is not None:
            params["utilisation_trigger"] = float(trigger)
        out.append(Action("reduce_batching", "batching_policy", scope, params))
    else:
        sizes = frame.loc[~frame["after"], "trip_size"].dropna()
        if len(sizes):
            largest = int(np.quantile(sizes, 0.99))
            if largest >= 2:
                out.append(
                    Action(
                        "reduce_batching",
                        "batching_policy",
                        scope,
                        {"max_orders_per_trip": largest, "target": "cap_only"},
                    )
                )
    if out and "fragile" in frame and np.nan_to_num(frame["fragile"].to_numpy(float)).any():
        restore = out[0]
        out.append(
            Action(
                "reduce_batching_fragile",
                "batching_policy",
                scope,
                {**restore.parameters, "fragile_only": True},
            )
        )
    peak = peak_daypart(frame)
    if out and "daypart" not in scope and peak is not None:
        restore = out[0]
        out.append(
            Action(
                "reduce_batching_peak",
                "batching_policy",
                {**scope, "daypart": peak},
                dict(restore.parameters),
            )
        )
    out.append(
        Action(
            "stop_batching", "batching_policy", scope, {"max_orders_per_trip": 1, "target": "none"}
        )
    )
    return out


def peak_daypart(frame: pd.DataFrame) -> str | None:
    """The daypart whose couriers were busiest after the regression began (mean busy share),
    or None without courier data."""
    after = frame[frame["after"].to_numpy(bool)]
    busy = after.groupby("daypart")["busy_share"].mean().dropna()
    return str(busy.idxmax()) if len(busy) else None


def store_prep_factors(frame: pd.DataFrame) -> dict[int, float]:
    """Stores whose median prep time grew by ``DRIFT_THRESHOLD`` or more: after / before."""
    known = frame[np.isfinite(frame["prep_min"].to_numpy(float))]
    med = known.groupby(["store_id", "after"])["prep_min"].agg(["median", "size"])
    out = {}
    for store in known["store_id"].unique():
        try:
            b, a = med.loc[(store, False)], med.loc[(store, True)]
        except KeyError:
            continue
        if min(b["size"], a["size"]) < MIN_STORE_ORDERS or b["median"] <= 0:
            continue
        factor = float(a["median"] / b["median"])
        if factor >= DRIFT_THRESHOLD:
            out[int(store)] = round(factor, 3)
    return out


def prep_shift(frame: pd.DataFrame, factors: Mapping[int, float]) -> np.ndarray:
    """Minutes a recalibrated promise adds per order: the store's baseline median prep time
    times its growth factor minus one (0 for stores that did not drift)."""
    base = frame[~frame["after"]].groupby("store_id")["prep_min"].median()
    store = frame["store_id"].to_numpy()
    factor = pd.Series(factors, dtype=float).reindex(store).fillna(1.0).to_numpy(float)
    return np.asarray(base.reindex(store).to_numpy(float) * (factor - 1.0))


def eta_shortfall(frame: pd.DataFrame) -> tuple[float, np.ndarray]:
    """How much shorter promises got than the baseline quoted for like orders: the mean gap
    in minutes (negative: shorter) and, per order, the promise scaled back to the baseline
    ratio (minutes to add)."""
    gap = promise_gap(frame, "after")
    after = frame["after"].to_numpy(bool)
    known = np.isfinite(gap)
    mean_gap = float(np.mean(gap[after & known]) - np.mean(gap[~after & known]))
    promised = frame["promised_min"].to_numpy(float)
    quoted = promised - gap
    ratio = float(np.mean(quoted[after & known]) / np.mean(promised[after & known]))
    return mean_gap, promised * (ratio - 1.0)


def supply_shortfall(frame: pd.DataFrame, low: float = 0.05, high: float = 0.5) -> float:
    """How many more dashers would bring the load per dasher back to the baseline's: the
    growth of mean orders per dasher, after over before, within [``low``, ``high``]."""
    load = frame["orders_per_dasher"].to_numpy(float)
    after = frame["after"].to_numpy(bool)
    known = np.isfinite(load)
    before_mean = float(np.mean(load[~after & known])) if (~after & known).any() else np.nan
    after_mean = float(np.mean(load[after & known])) if (after & known).any() else np.nan
    growth = after_mean / before_mean - 1.0 if before_mean > 0 else np.nan
    return round(float(np.clip(growth if np.isfinite(growth) else low, low, high)), 3)


def low_stock_skus(
    lines: pd.DataFrame,
    frame: pd.DataFrame,
    threshold: float = INSTOCK_THRESHOLD,
    min_lines: int = MIN_SKU_LINES,
) -> list[int]:
    """SKUs whose in-stock share on the slice's orders since the regression (lines neither
    missing nor substituted) is below ``threshold``, over at least ``min_lines`` lines: the
    orders themselves are the densest stock check there is."""
    after_orders = frame.loc[frame["after"].to_numpy(bool), "order_id"]
    recent = lines[lines["order_id"].isin(after_orders)]
    by_sku = recent.groupby("sku_id")["short"].agg(["mean", "size"])
    low = by_sku[(by_sku["size"] >= min_lines) & (1.0 - by_sku["mean"] < threshold)]
    return sorted(int(s) for s in low.index)
