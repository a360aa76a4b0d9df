"""A recommended action as the scenario engine's fix, to rehearse it where the truth is known.

On generated data the engine can apply an action to the same days from the same draws
(``cxagent.data.scenario.fixes``): ``engine_fix`` translates an ``Action`` into that ``Fix``.
The what-if benchmark compares estimates with the result, and experiments are simulated with
it. ``failing_fix`` is the rehearsal of a fix that goes wrong in production: the deployment
pushes the setting the wrong way (more batching, shorter promises), so the experiment's
guardrails and rollback criteria can be seen to work.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from cxagent.data.scenario.fixes import Fix
from cxagent.data.scenario.spec import Scope
from cxagent.recommend.actions import Action


def engine_scope(scope: Mapping[str, Any]) -> Scope | None:
    """The slice as the engine's scope, or None for slices it cannot express (basket size)."""
    out: dict[str, Any] = {}
    for key, value in scope.items():
        if key not in ("region", "category", "daypart", "store_id"):
            return None
        out["store" if key == "store_id" else key] = value if isinstance(value, list) else [value]
    return Scope(**out)


def engine_fix(
    action: Action,
    truth: Mapping[str, Any],
    start: dt.datetime,
    end: dt.datetime | None = None,
) -> Fix | None:
    """The engine's version of ``action`` (``truth``: the scenario's truth.json, to find the
    planted intervention a rollback reverts), or None when the engine cannot apply it."""
    scope = engine_scope(action.scope)
    if scope is None:
        return None
    p = action.parameters
    common: dict[str, Any] = {"start": start, "end": end, "scope": scope}
    match action.name:
        case (
            "reduce_batching" | "reduce_batching_fragile" | "reduce_batching_peak" | "stop_batching"
        ):
            return Fix(
                kind="batching",
                max_orders_per_trip=p["max_orders_per_trip"],
                utilisation_trigger=p.get("utilisation_trigger"),
                fragile_only=bool(p.get("fragile_only", False)),
                **common,
            )
        case "eta_buffer":
            return Fix(kind="promise_buffer", minutes=p["minutes"], **common)
        case "recalibrate_prep":
            return Fix(kind="prep_recalibration", store_factors=p["store_factors"], **common)
        case "suppress_skus":
            return Fix(kind="sku_suppression", hidden_skus=list(p["hidden_skus"]), **common)
        case "peak_pay":  # the region's courier pool; the orders measured are the slice's
            return Fix(kind="supply_boost", supply_uplift=p["supply_uplift"], **common)
        case "rollback" if action.cause == "batching_policy":
            return Fix(
                kind="batching",
                max_orders_per_trip=p["max_orders_per_trip"],
                utilisation_trigger=p.get("batching_utilisation_trigger"),
                **common,
            )
        case "rollback":
            ids = [iv.get("change_id") for iv in truth.get("interventions", [])]
            if action.change_id not in ids:
                return None  # a background change: the engine has nothing to revert
            return Fix(kind="rollback", intervention=ids.index(action.change_id), **common)
    return None


def failing_fix(fix: Fix) -> Fix:
    """The same fix deployed the wrong way round: batching loosened further (up to 5 orders a
    trip from 70% courier utilisation), promises shortened instead of lengthened."""
    if fix.kind == "batching":
        return fix.model_copy(update={"max_orders_per_trip": 5, "utilisation_trigger": 0.70})
    if fix.kind == "promise_buffer":
        return fix.model_copy(update={"minutes": -abs(fix.minutes)})
    if fix.kind == "prep_recalibration":
        shorter = {s: 1.0 / f for s, f in fix.store_factors.items()}
        return fix.model_copy(update={"store_factors": shorter})
    raise ValueError(f"fix: no failing rehearsal for a {fix.kind} fix")
