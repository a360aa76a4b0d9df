"""Everything random about one day, drawn once.

The factual world and every counterfactual (the same day without an intervention) are
computed from the same ``DayDraws``: outcomes are deterministic functions of these draws and
the levers, so the difference between two worlds is the intervention's effect and nothing else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from cxagent.data.cohorts import DAYPART_OF_HOUR
from cxagent.data.scenario.spec import ScenarioSpec
from cxagent.data.scenario.world import EXTRA_ITEMS_MEAN, WEEKLY, World

INVENTORY_EVENTS_PER_STORE_DAYPART = 8


@dataclass
class DayDraws:
    day_index: int
    date: dt.date
    # orders, sorted by time
    store: np.ndarray
    region: np.ndarray
    category: np.ndarray
    t_s: np.ndarray  # seconds since local midnight
    bin: np.ndarray  # 15-minute bin 0..95
    daypart: np.ndarray  # index into DAYPARTS
    user_id: np.ndarray
    distance_mi: np.ndarray
    n_items: np.ndarray
    z_prep: np.ndarray
    z_wait: np.ndarray
    z_travel: np.ndarray
    z_eta: np.ndarray
    z_rating: np.ndarray
    u_batch: np.ndarray
    u_cancel: np.ndarray
    u_credit: np.ndarray
    u_support: np.ndarray
    u_rate: np.ndarray
    u_after: np.ndarray  # delay of tickets and ratings after the fact
    u_dasher: np.ndarray
    # item lines, grouped by order
    item_order: np.ndarray
    item_sku: np.ndarray
    item_qty: np.ndarray
    u_oos: np.ndarray
    u_sub: np.ndarray
    u_refund: np.ndarray
    u_damage: np.ndarray
    # courier supply per (region, bin)
    z_supply: np.ndarray
    # inventory readings
    inv_store: np.ndarray
    inv_sku: np.ndarray
    inv_t_s: np.ndarray
    inv_u: np.ndarray

    @property
    def n_orders(self) -> int:
        return len(self.store)


def _sample_skus(world: World, category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sku = np.empty(len(category), dtype=np.int64)
    u = rng.random(len(category))
    for ci, cum in enumerate(world.sku_cum_pop):
        m = category == ci
        idx = np.minimum(np.searchsorted(cum, u[m]), len(cum) - 1)
        sku[m] = world.sku_offsets[ci] + idx
    return sku


def draw_day(spec: ScenarioSpec, world: World, day_index: int) -> DayDraws:
    """Draw day ``day_index`` of the scenario; independent of every other day."""
    rng = np.random.default_rng([spec.seed, 1, day_index])
    date = spec.start + dt.timedelta(days=day_index)
    level = spec.orders_per_day * WEEKLY[date.weekday()] / WEEKLY.mean()
    n = int(rng.poisson(level * rng.lognormal(0.0, 0.02)))

    cum_store = np.cumsum(world.store_weight)
    store = np.minimum(np.searchsorted(cum_store, rng.random(n)), len(cum_store) - 1)
    category = world.store_category[store]
    region = world.store_region[store]
    # time of day: a 15-minute bin from the category's profile, uniform inside it
    t_s = np.empty(n)
    for ci in range(len(world.categories)):
        m = category == ci
        cum = np.cumsum(world.bin_profile[ci])
        b = np.minimum(np.searchsorted(cum, rng.random(int(m.sum()))), 95)
        t_s[m] = b * 900.0 + rng.random(int(m.sum())) * 900.0
    order = np.argsort(t_s, kind="stable")
    store, category, region, t_s = store[order], category[order], region[order], t_s[order]
    bins = (t_s // 900).astype(np.int64)
    hour = (t_s // 3600).astype(np.int64)

    extra = np.array([EXTRA_ITEMS_MEAN[c] for c in world.categories])[category]
    n_items = 1 + rng.poisson(extra)
    item_order = np.repeat(np.arange(n), n_items)
    n_lines = len(item_order)

    user_offsets = np.concatenate([[0], np.cumsum(world.user_pool)[:-1]])
    user_id = 1 + user_offsets[region] + (rng.random(n) * world.user_pool[region]).astype(np.int64)
    distance = np.clip(rng.gamma(2.2, world.distance_mi[region] / 2.2), 0.2, 15.0)

    n_stores = len(world.store_weight)
    inv_store = np.repeat(np.arange(n_stores), 4 * INVENTORY_EVENTS_PER_STORE_DAYPART)
    inv_dp = np.tile(np.repeat(np.arange(4), INVENTORY_EVENTS_PER_STORE_DAYPART), n_stores)
    inv_start_h = np.array([5.0, 11.0, 16.0, 21.0])[inv_dp]
    inv_len_h = np.array([6.0, 5.0, 5.0, 3.0])[inv_dp]  # late night read before midnight
    inv_t = (inv_start_h + rng.random(len(inv_store)) * inv_len_h) * 3600.0

    return DayDraws(
        day_index=day_index,
        date=date,
        store=store,
        region=region,
        category=category,
        t_s=t_s,
        bin=bins,
        daypart=DAYPART_OF_HOUR[hour].astype(np.int64),
        user_id=user_id,
        distance_mi=distance,
        n_items=n_items,
        z_prep=rng.standard_normal(n),
        z_wait=rng.standard_normal(n),
        z_travel=rng.standard_normal(n),
        z_eta=rng.standard_normal(n),
        z_rating=rng.standard_normal(n),
        u_batch=rng.random(n),
        u_cancel=rng.random(n),
        u_credit=rng.random(n),
        u_support=rng.random(n),
        u_rate=rng.random(n),
        u_after=rng.random(n),
        u_dasher=rng.random(n),
        item_order=item_order,
        item_sku=_sample_skus(world, category[item_order], rng),
        item_qty=1 + rng.poisson(0.35, n_lines),
        u_oos=rng.random(n_lines),
        u_sub=rng.random(n_lines),
        u_refund=rng.random(n_lines),
        u_damage=rng.random(n_lines),
        z_supply=rng.standard_normal((world.n_regions, 96)) * 0.03
        + rng.standard_normal((world.n_regions, 1)) * 0.02,
        inv_store=inv_store,
        inv_sku=_sample_skus(world, world.store_category[inv_store], rng),
        inv_t_s=inv_t,
        inv_u=rng.random(len(inv_store)),
    )
