"""Recommendations for an investigated incident: actions, their what-if estimates, a ranking.

For each cause the investigation kept, the action library proposes fixes scoped to the
incident's slice (``actions``); each is estimated on the slice's orders after the regression
began (``whatif``). Actions are ranked by expected net benefit: the CX Score gain plus
``exchange_rate`` CX points for every 1% of efficiency (deliveries per dasher hour) gained,
so a fix that buys 10 points for 5% of efficiency nets 5 at the default rate of 1. When the
investigation found nothing beyond noise, the answer is to monitor, with no action.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from cxagent.engine.connection import Engine
from cxagent.hypotheses import NORMAL
from cxagent.rca.investigate import Investigation
from cxagent.rca.orders import item_lines, order_frame
from cxagent.recommend.actions import (
    INSTOCK_THRESHOLD,
    Action,
    LoggedChange,
    batching_actions,
    eta_shortfall,
    logged_change,
    low_stock_skus,
    prep_shift,
    store_prep_factors,
    supply_shortfall,
)
from cxagent.recommend.whatif import (
    BatchingTarget,
    Estimate,
    batching_estimate,
    promise_estimate,
    supply_estimate,
    suppress_estimate,
)

BASELINE_DAYS: Final = 14
MIN_ETA_SHORTFALL_MIN: Final = 0.5
MONITOR: Final = "monitor, no action needed"


@dataclass
class Recommendation:
    action: Action
    estimate: Estimate | None
    net_benefit: float  # CX points, efficiency priced in at the exchange rate
    not_estimated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = self.action.as_dict()
        e = self.estimate
        if e is None:
            d["estimate"] = None
            d["not_estimated"] = self.not_estimated
            return d
        eff_lo, eff_hi = e.efficiency_interval
        d["estimate"] = {
            "orders": e.orders,
            "cx_gain": _r(e.delta["cx_score"], 2),
            "cx_gain_interval": [_r(e.low["cx_score"], 2), _r(e.high["cx_score"], 2)],
            "efficiency_change": _r(e.efficiency_change),
            "efficiency_change_interval": [_r(eff_lo), _r(eff_hi)],
            "metrics": {
                k: {
                    "without": _r(e.without[k]),
                    "change": _r(e.delta[k]),
                    "interval": [_r(e.low[k]), _r(e.high[k])],
                }
                for k in e.delta
            },
            "bootstrap_replicates": e.replicates,
            "notes": e.notes,
        }
        d["net_benefit"] = _r(self.net_benefit, 2)
        return d


def _r(x: float, digits: int = 4) -> float | None:
    """A number for JSON: rounded, and None where it is not finite (JSON has no NaN)."""
    return None if not np.isfinite(x) else round(float(x), digits)


@dataclass
class Recommendations:
    incident_id: str
    slice: Mapping[str, Any]
    exchange_rate: float
    items: list[Recommendation] = field(default_factory=list)
    message: str | None = None  # "monitor, no action needed" and why
    frame: pd.DataFrame | None = field(default=None, repr=False)  # the slice's orders

    @property
    def top(self) -> Recommendation | None:
        estimated = [r for r in self.items if r.estimate is not None]
        return estimated[0] if estimated else None

    def tradeoff(self) -> list[dict[str, Any]]:
        """Points of the CX-against-efficiency chart: each estimated action with intervals."""
        out = []
        for r in self.items:
            e = r.estimate
            if e is None:
                continue
            lo, hi = e.efficiency_interval
            out.append(
                {
                    "action": r.action.title,
                    "cx_gain": e.delta["cx_score"],
                    "cx_low": e.low["cx_score"],
                    "cx_high": e.high["cx_score"],
                    "efficiency_pct": 100 * e.efficiency_change,
                    "efficiency_low_pct": 100 * lo,
                    "efficiency_high_pct": 100 * hi,
                }
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "slice": dict(self.slice),
            "exchange_rate": self.exchange_rate,
            "message": self.message,
            "recommendations": [r.as_dict() for r in self.items],
            "tradeoff": [
                {k: _r(v) if isinstance(v, float) else v for k, v in p.items()}
                for p in self.tradeoff()
            ],
        }


def net_benefit(estimate: Estimate, exchange_rate: float) -> float:
    """CX points gained plus ``exchange_rate`` points per 1% of efficiency gained."""
    eff = estimate.efficiency_change
    return float(
        estimate.delta["cx_score"] + exchange_rate * 100.0 * (eff if np.isfinite(eff) else 0.0)
    )


def _clean_baseline(
    frame: pd.DataFrame, causes: list[Any], window_start: dt.datetime
) -> pd.DataFrame:
    """Without the orders placed between a matched change and the regression's window: they
    ran under the change, so they are no baseline, and the fix is about the window's orders."""
    starts = [
        c.change.started_at
        for c in causes
        if c.change is not None and c.change.started_at < window_start
    ]
    if not starts:
        return frame
    keep = (frame["order_time"] < min(starts)) | frame["after"]
    if not (keep & ~frame["after"]).any():  # the change predates every baseline order
        return frame
    out = frame[keep].reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    return out


def _changes(engine: Engine) -> dict[str, LoggedChange]:
    if not engine.has("change_events"):
        return {}
    rows = engine.con.to_pyarrow(engine.table("change_events")).to_pylist()
    return {str(r["change_id"]): logged_change(r) for r in rows}


def _single_valued(scope: Mapping[str, Any]) -> bool:
    return all(not isinstance(v, list) for v in scope.values())


def recommend(
    engine: Engine,
    investigation: Investigation,
    *,
    exchange_rate: float = 1.0,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Recommendations:
    """Actions for the investigated incident, estimated and ranked by net benefit."""
    if not np.isfinite(exchange_rate) or exchange_rate < 0:
        raise ValueError(f"exchange_rate: must be a number >= 0, got {exchange_rate}")
    draft = investigation.report.draft
    where = dict(investigation.slice)
    out = Recommendations(investigation.report.incident_id or "", where, exchange_rate)
    causes = [c for c in investigation.causes if c.cause != NORMAL]
    if not causes:
        out.message = f"{MONITOR}: {investigation.narrative}"
        return out
    frame = investigation.frame
    if frame is None or "trip_size" not in frame:  # the investigation's orders, else read them
        start = draft.window_start - dt.timedelta(days=BASELINE_DAYS)
        frame = order_frame(engine, where, start, draft.window_end, outcomes=True)
        frame["after"] = frame["order_time"] >= draft.window_start
    frame = _clean_baseline(frame, causes, draft.window_start)
    out.frame = frame
    if not frame["after"].any() or frame["after"].all():
        out.message = f"{MONITOR}: no orders on both sides of {draft.window_start}"
        return out
    changes = _changes(engine)
    missing = set(frame.attrs.get("missing", []))
    proposals: list[tuple[Action, tuple[str, Any, Any]]] = []  # (action, how to estimate it)

    for cause in causes:
        change = changes.get(cause.change.change_id) if cause.change else None
        if cause.cause == "batching_policy":
            if {"batched", "busy_share"} & missing:
                continue
            for action in batching_actions(where, frame, change):
                setting = dict(action.parameters)
                if action.name == "reduce_batching_peak":
                    setting["daypart"] = action.scope["daypart"]
                proposals.append((action, ("batching", frame, setting)))
            if (
                change is not None
                and _single_valued(change.scope)
                and "max_orders_per_trip" in change.before
                and dict(change.scope) != where  # else it is reduce_batching, already listed
            ):
                action = Action(
                    "rollback",
                    "batching_policy",
                    change.scope,
                    {**change.before, "target": "baseline"},
                    change_id=change.change_id,
                )
                proposals.append((action, ("batching_scope", change.scope, action.parameters)))
        elif cause.cause == "prep_time_drift":
            if "prep_min" in missing:
                continue
            factors = store_prep_factors(frame)
            if factors:
                action = Action(
                    "recalibrate_prep", "prep_time_drift", where, {"store_factors": factors}
                )
                proposals.append((action, ("promise", frame, prep_shift(frame, factors))))
        elif cause.cause == "eta_model_bias":
            gap, per_order = eta_shortfall(frame)
            if -gap >= MIN_ETA_SHORTFALL_MIN:
                action = Action("eta_buffer", "eta_model_bias", where, {"minutes": round(-gap, 1)})
                proposals.append((action, ("promise", frame, -gap)))
                if change is not None:
                    action = Action(
                        "rollback",
                        "eta_model_bias",
                        where,
                        dict(change.before),
                        change_id=change.change_id,
                    )
                    proposals.append((action, ("promise", frame, per_order)))
        elif cause.cause == "dasher_shortage":
            if {"orders_per_dasher", "dasher_wait_min"} & missing:
                continue
            uplift = supply_shortfall(frame)
            pool = {k: v for k, v in where.items() if k in ("region", "daypart")}
            action = Action(
                "peak_pay",
                "dasher_shortage",
                where,
                {"supply_uplift": uplift, "pool": pool or "all regions"},
            )
            proposals.append((action, ("supply", frame, uplift)))
        elif cause.cause == "inventory_drop":
            lines = item_lines(engine, where, frame["order_time"].min(), draft.window_end)
            if lines is None:
                continue
            hidden = low_stock_skus(lines, frame)
            if hidden:
                params = {"instock_threshold": INSTOCK_THRESHOLD, "hidden_skus": hidden}
                action = Action("suppress_skus", "inventory_drop", where, params)
                proposals.append((action, ("skus", frame, (lines, hidden))))

    for action, how in proposals:
        try:
            estimate = _estimate(
                engine, draft.window_start, draft.window_end, how, n_bootstrap, seed
            )
        except (ValueError, KeyError) as exc:  # the data cannot carry this estimate
            out.items.append(Recommendation(action, None, float("-inf"), f"not estimated: {exc}"))
            continue
        out.items.append(Recommendation(action, estimate, net_benefit(estimate, exchange_rate)))
    out.items.sort(key=lambda r: -r.net_benefit)
    return out


def _estimate(
    engine: Engine,
    window_start: dt.datetime,
    window_end: dt.datetime,
    how: tuple[str, Any, Any],
    n_bootstrap: int,
    seed: int,
) -> Estimate:
    kind, what, setting = how
    if kind.startswith("batching"):
        frame: pd.DataFrame = what
        if kind == "batching_scope":  # a rollback: the change's whole scope
            start = window_start - dt.timedelta(days=BASELINE_DAYS)
            frame = order_frame(engine, what, start, window_end, outcomes=True)
            frame["after"] = frame["order_time"] >= window_start
        target: BatchingTarget = setting["target"]
        cap = int(setting["max_orders_per_trip"])
        daypart = setting.get("daypart")
        only = None
        if setting.get("fragile_only"):
            only = np.nan_to_num(frame["fragile"].to_numpy(float)) > 0
        if daypart is not None:  # one daypart of the slice
            only = (frame["daypart"] == daypart).to_numpy()
        return batching_estimate(
            frame,
            target,
            cap=cap if cap > 1 else None,
            only=only,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
    if kind == "skus":
        lines, hidden = setting
        return suppress_estimate(what, lines, hidden, n_bootstrap=n_bootstrap, seed=seed)
    if kind == "supply":
        return supply_estimate(what, setting, n_bootstrap=n_bootstrap, seed=seed)
    return promise_estimate(what, setting, n_bootstrap=n_bootstrap, seed=seed)
