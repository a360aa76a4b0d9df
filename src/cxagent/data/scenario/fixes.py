"""Fixes applied inside the scenario engine: the true counterfactual of a recommendation.

A recommendation ("restore the batching policy for SF grocery at dinner") is an estimate made
from data. The engine can answer the same question exactly: simulate the same days from the
same draws with the fix's levers, and compare. ``fix_effect`` does that for orders in the
fix's scope and window; ``fix_levers`` is the building block, also used to simulate running an
experiment (``assigned_orders`` / ``assigned_bins`` say which orders and courier-supply bins
are in the treatment arm).

================== ==========================================================================
kind               what the engine changes, for orders (or supply bins) in scope and window
================== ==========================================================================
batching           max orders per trip and the utilisation trigger of batching set to the
                   fix's values (``fragile_only``: only orders holding a fragile SKU)
promise_buffer     ``minutes`` added to every promised delivery time
prep_recalibration the promise's prep-time part multiplied by ``store_factors[store_id]``
supply_boost       dashers on shift multiplied by 1 + ``supply_uplift`` (region, daypart)
sku_suppression    the SKUs ``hidden_skus`` not offered: their lines are not ordered
rollback           every lever set back to what it was without intervention ``intervention``
================== ==========================================================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cxagent.data.cohorts import DAYPART_OF_HOUR
from cxagent.data.scenario.causes import Levers
from cxagent.data.scenario.draws import DayDraws, draw_day
from cxagent.data.scenario.generator import _context
from cxagent.data.scenario.simulate import DayOutcome, simulate_day
from cxagent.data.scenario.spec import ScenarioSpec, Scope
from cxagent.data.scenario.strength import DAY_S, active_on_day, day_levers, in_window_and_scope
from cxagent.data.scenario.truth import order_stats
from cxagent.data.scenario.world import World
from cxagent.metrics.definitions import STAT_FIELDS, CXStats

FixKind = Literal[
    "batching",
    "promise_buffer",
    "prep_recalibration",
    "supply_boost",
    "sku_suppression",
    "rollback",
]
# per-order lever arrays a rollback copies back
_ORDER_LEVERS = (
    "batch_cap",
    "batch_trigger",
    "prep_mult",
    "instock_drop",
    "eta_scale",
    "eta_new_model",
)


class Fix(BaseModel):
    """One fix, applied in ``scope`` from ``start`` (until ``end``, when given)."""

    model_config = ConfigDict(extra="forbid")

    kind: FixKind
    start: dt.datetime
    end: dt.datetime | None = None
    scope: Scope = Field(default_factory=Scope)
    max_orders_per_trip: int | None = Field(None, ge=1, le=10)
    utilisation_trigger: float | None = Field(None, gt=0.0, lt=2.0)
    fragile_only: bool = False
    minutes: float = Field(0.0, ge=-60.0, le=60.0)
    store_factors: dict[int, float] = Field(default_factory=dict)
    supply_uplift: float = Field(0.0, ge=0.0, le=2.0)
    hidden_skus: list[int] = Field(default_factory=list)
    intervention: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Fix:
        needs = {
            "batching": self.max_orders_per_trip is not None,
            "promise_buffer": self.minutes != 0.0,
            "prep_recalibration": bool(self.store_factors),
            "supply_boost": self.supply_uplift > 0.0,
            "sku_suppression": bool(self.hidden_skus),
            "rollback": self.intervention is not None,
        }
        if not needs[self.kind]:
            field = {
                "batching": "max_orders_per_trip",
                "promise_buffer": "minutes",
                "prep_recalibration": "store_factors",
                "supply_boost": "supply_uplift",
                "sku_suppression": "hidden_skus",
                "rollback": "intervention",
            }[self.kind]
            raise ValueError(f"{field}: a {self.kind} fix needs it set")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


def _order_mask(spec: ScenarioSpec, world: World, d: DayDraws, fix: Fix) -> np.ndarray:
    return in_window_and_scope(
        spec,
        world,
        fix,
        t_abs=d.day_index * DAY_S + d.t_s,
        region=d.region,
        daypart=d.daypart,
        category=d.category,
        store=d.store,
    )


def _bin_mask(spec: ScenarioSpec, world: World, d: DayDraws, fix: Fix) -> np.ndarray:
    """(n_regions, 96) supply bins in the fix's region, daypart and window."""
    bin_t = d.day_index * DAY_S + np.arange(96) * 900.0
    return in_window_and_scope(
        spec,
        world,
        fix,
        t_abs=bin_t[None, :],
        region=np.arange(world.n_regions)[:, None],
        daypart=DAYPART_OF_HOUR[np.arange(96) // 4][None, :],
    )


def fix_levers(
    spec: ScenarioSpec,
    world: World,
    d: DayDraws,
    fixes: list[Fix],
    *,
    assigned_orders: np.ndarray | None = None,
    assigned_bins: np.ndarray | None = None,
) -> Levers:
    """The levers of day ``d``: the scenario's interventions, then ``fixes`` on the orders
    (and supply bins) they cover that are also assigned to them (all, when not given)."""
    active = [iv for iv in spec.interventions if active_on_day(spec, iv, d.day_index)]
    lv = day_levers(spec, world, d, active)
    for fix in fixes:
        m = _order_mask(spec, world, d, fix)
        b = _bin_mask(spec, world, d, fix)
        if assigned_orders is not None:
            m &= assigned_orders
        if assigned_bins is not None:
            b = b & assigned_bins
        if fix.kind == "batching":
            if fix.fragile_only:
                fragile = np.bincount(
                    d.item_order,
                    weights=world.sku_fragile[d.item_sku].astype(float),
                    minlength=d.n_orders,
                )
                m &= fragile > 0
            lv.batch_cap[m] = fix.max_orders_per_trip
            if fix.utilisation_trigger is not None:
                lv.batch_trigger[m] = fix.utilisation_trigger
        elif fix.kind == "promise_buffer":
            lv.promise_add_s[m] += 60.0 * fix.minutes
        elif fix.kind == "prep_recalibration":
            store_ids = world.stores["store_id"].to_numpy()[d.store]
            factor = np.array([fix.store_factors.get(int(s), 1.0) for s in store_ids])
            quoted_prep = world.store_prep_s[d.store] * (1 + 0.03 * (d.n_items - 1))
            lv.promise_add_s[m] += (quoted_prep * (factor - 1.0))[m]
        elif fix.kind == "supply_boost":
            lv.supply_mult[b] *= 1.0 + fix.supply_uplift
        elif fix.kind == "sku_suppression":
            sku_ids = world.skus["sku_id"].to_numpy()[d.item_sku]
            line = m[d.item_order] & np.isin(sku_ids, fix.hidden_skus)
            lv.hidden_lines = line if lv.hidden_lines is None else lv.hidden_lines | line
        else:  # rollback
            target = spec.interventions[fix.intervention]  # type: ignore[index]
            without = day_levers(spec, world, d, [iv for iv in active if iv is not target])
            for name in _ORDER_LEVERS:
                getattr(lv, name)[m] = getattr(without, name)[m]
            lv.supply_mult[b] = without.supply_mult[b]
    return lv


@dataclass(frozen=True)
class FixEffect:
    """Sums of both worlds over the orders in scope and window, and what they mean."""

    orders: int
    factual: CXStats
    with_fix: CXStats
    factual_wait_s: float  # order to hand-off, summed over delivered orders
    with_fix_wait_s: float

    def metrics(self) -> dict[str, dict[str, float]]:
        """Each metric without and with the fix, and the change; ``customer_wait_min`` and
        ``deliveries_per_dasher_hour`` (efficiency) added to the CX metrics."""
        f, w = self.factual.metrics(), self.with_fix.metrics()
        f["customer_wait_min"] = self.factual_wait_s / max(self.factual.delivered, 1.0) / 60.0
        w["customer_wait_min"] = self.with_fix_wait_s / max(self.with_fix.delivered, 1.0) / 60.0
        for m in (f, w):
            m["deliveries_per_dasher_hour"] = 60.0 / m["dasher_min_per_delivery"]
        return {"without": f, "with": w, "delta": {k: w[k] - f[k] for k in f}}


def _sums(d: DayDraws, o: DayOutcome, mask: np.ndarray) -> tuple[np.ndarray, float]:
    wait = np.where(o.delivered, o.delivered_s - d.t_s, 0.0)
    return order_stats(d, o)[:, mask].sum(axis=1), float(wait[mask].sum())


def fix_effect(
    spec: ScenarioSpec,
    fix: Fix,
    start: dt.datetime,
    end: dt.datetime | None = None,
    *,
    measure: Scope | None = None,
) -> FixEffect:
    """The fix's exact effect on the orders in its scope (or in ``measure``, a wider slice
    a narrower fix is judged on) placed in ``[start, end)`` (the scenario's end when not
    given): every day simulated twice from the same draws."""
    ctx = _context(spec)
    world = ctx.world
    lo = (start - spec.start_time).total_seconds()
    hi = ((end or spec.end_time) - spec.start_time).total_seconds()
    k = len(STAT_FIELDS)
    f_sum, w_sum = np.zeros(k), np.zeros(k)
    f_wait = w_wait = 0.0
    for day in range(spec.days):
        if (day + 1) * DAY_S <= lo or day * DAY_S >= hi:
            continue
        d = draw_day(spec, world, day)
        active = [iv for iv in spec.interventions if active_on_day(spec, iv, day)]
        factual = simulate_day(world, ctx.supply, d, day_levers(spec, world, d, active))
        fixed = simulate_day(world, ctx.supply, d, fix_levers(spec, world, d, [fix]))
        t_abs = day * DAY_S + d.t_s
        judged = fix if measure is None else fix.model_copy(update={"scope": measure})
        mask = _order_mask(spec, world, d, judged) & (t_abs >= lo) & (t_abs < hi)
        s, w = _sums(d, factual, mask)
        f_sum += s
        f_wait += w
        s, w = _sums(d, fixed, mask)
        w_sum += s
        w_wait += w

    def stats(v: np.ndarray) -> CXStats:
        return CXStats(**dict(zip(STAT_FIELDS, map(float, v), strict=True)))

    return FixEffect(int(f_sum[0]), stats(f_sum), stats(w_sum), f_wait, w_wait)


def describe(fix: Fix) -> dict[str, Any]:
    """The fix as plain JSON data (for benchmark rows and experiment metadata)."""
    return fix.model_dump(mode="json", exclude_defaults=True)
