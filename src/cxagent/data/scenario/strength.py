"""Where and when each intervention acts: its strength per order, supply bin or reading."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import numpy as np

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.data.scenario.causes import CAUSE_REGISTRY, INSTOCK_DROP, Levers
from cxagent.data.scenario.draws import DayDraws
from cxagent.data.scenario.spec import Intervention, ScenarioSpec, Scope
from cxagent.data.scenario.world import World

DAY_S = 86400.0


class Windowed(Protocol):
    """Anything that acts on a scope over a time window: an intervention, a fix."""

    @property
    def scope(self) -> Scope: ...
    @property
    def start(self) -> dt.datetime: ...
    @property
    def end(self) -> dt.datetime | None: ...


def _seconds(spec: ScenarioSpec, t: object) -> float:
    return (t - spec.start_time).total_seconds()  # type: ignore[operator]


def active_on_day(spec: ScenarioSpec, iv: Intervention, day_index: int) -> bool:
    start = _seconds(spec, iv.start)
    end = _seconds(spec, iv.end) if iv.end is not None else np.inf
    return start < (day_index + 1) * DAY_S and end > day_index * DAY_S


def in_window_and_scope(
    spec: ScenarioSpec,
    world: World,
    iv: Windowed,
    *,
    t_abs: np.ndarray,
    region: np.ndarray,
    daypart: np.ndarray,
    category: np.ndarray | None = None,
    store: np.ndarray | None = None,
) -> np.ndarray:
    """Whether each element (arrays broadcast together) lies in the intervention's window and
    scope. Scope keys the element has no array for (category, store of a supply bin) match."""
    sc = iv.scope
    inside = np.ones(np.broadcast(t_abs, region, daypart).shape, dtype=bool)
    if sc.region is not None:
        inside &= np.isin(region, [world.regions.index(r) for r in sc.region])
    if sc.daypart is not None:
        inside &= np.isin(daypart, [DAYPARTS.index(x) for x in sc.daypart])
    if sc.category is not None and category is not None:
        inside &= np.isin(category, [world.categories.index(c) for c in sc.category])
    if sc.store is not None and store is not None:
        inside &= np.isin(world.stores["store_id"].to_numpy()[store], sc.store)
    return inside & in_window(spec, iv, t_abs)


def in_window(spec: ScenarioSpec, iv: Windowed, t_abs: np.ndarray) -> np.ndarray:
    """Whether each time (seconds since the scenario start) lies in the intervention's window."""
    inside = t_abs >= _seconds(spec, iv.start)
    if iv.end is not None:
        inside &= t_abs < _seconds(spec, iv.end)
    return inside


def strength(
    spec: ScenarioSpec, world: World, iv: Intervention, *, t_abs: np.ndarray, **where: np.ndarray
) -> np.ndarray:
    """magnitude x ramp x in-scope for each element."""
    inside = in_window_and_scope(spec, world, iv, t_abs=t_abs, **where)
    ramp_h = CAUSE_REGISTRY[iv.cause].ramp_hours
    elapsed = t_abs - _seconds(spec, iv.start)
    ramp = np.clip(elapsed / (ramp_h * 3600.0), 0.0, 1.0) if ramp_h > 0 else 1.0
    return np.where(inside, iv.magnitude * ramp, 0.0)


def day_levers(
    spec: ScenarioSpec, world: World, d: DayDraws, interventions: list[Intervention]
) -> Levers:
    """The levers of day ``d`` with ``interventions`` switched on (all others off)."""
    lv = Levers.baseline(d.n_orders, world.n_regions)
    t_abs = d.day_index * DAY_S + d.t_s
    bin_t = d.day_index * DAY_S + np.arange(96) * 900.0
    bin_daypart = DAYPART_OF_HOUR[np.arange(96) // 4]
    bin_region = np.arange(world.n_regions)[:, None]
    for iv in interventions:
        order_s = strength(
            spec,
            world,
            iv,
            t_abs=t_abs,
            region=d.region,
            daypart=d.daypart,
            category=d.category,
            store=d.store,
        )
        bin_s = strength(
            spec, world, iv, t_abs=bin_t[None, :], region=bin_region, daypart=bin_daypart[None, :]
        )
        CAUSE_REGISTRY[iv.cause].apply(lv, order_s, bin_s)
    return lv


def instock_drop(
    spec: ScenarioSpec,
    world: World,
    interventions: list[Intervention],
    *,
    t_abs: np.ndarray,
    store: np.ndarray,
    daypart: np.ndarray,
) -> np.ndarray:
    """Drop in in-stock probability for inventory readings (store, time)."""
    drop = np.zeros(len(store))
    for iv in interventions:
        if iv.cause != "inventory_drop":
            continue
        s = strength(
            spec,
            world,
            iv,
            t_abs=t_abs,
            region=world.store_region[store],
            daypart=daypart,
            category=world.store_category[store],
            store=store,
        )
        drop += INSTOCK_DROP * s
    return drop
