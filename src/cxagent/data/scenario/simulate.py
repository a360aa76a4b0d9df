"""One day of fulfilment as a deterministic function of the day's draws and the levers.

The causal chain, per order::

    supply (dashers on shift) --> utilisation --> dasher wait, batching propensity
    batching policy (cap, trigger) --> trips --> hold for trip partners, extra drop-offs
    merchant prep time --------------------------^ (a trip leaves when its last order is ready)
    ETA model --> promised_eta;   actual - promised --> lateness
    lateness --> cancellations, credits (refunds), support tickets, lower ratings
    in-stock probability --> substitutions, missing items --> refunds, tickets, ratings
    batching x fragile SKUs --> damaged items --> refunds, tickets, ratings
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxagent.data.scenario.causes import BASE_BATCH_CAP, BASE_BATCH_TRIGGER, Levers
from cxagent.data.scenario.draws import DayDraws
from cxagent.data.scenario.world import (
    ACTIVE_MIN_PER_ORDER,
    WEEKLY,
    World,
    expected_bin_demand,
    scheduled_dashers,
)

MAX_UTILISATION = 0.95
BATCH_WINDOW_S = 1200.0
STOP_S = 420.0  # each earlier drop-off on the trip delays an order by this much
HANDOFF_S = 120.0
BATCH_MAX_SHARE = 0.8
REALTIME_WEIGHT = 0.3  # share of realised (vs forecast) utilisation in batching decisions
ETA_BUFFER_S = 360.0
DAYPART_INSTOCK = np.array([1.0, 1.0, 0.99, 0.97])


def wait_seconds(rho: np.ndarray) -> np.ndarray:
    """Expected wait for a courier at utilisation ``rho`` (queue-like, capped)."""
    r = np.clip(rho, 0.0, MAX_UTILISATION)
    return 60.0 + 40.0 * r**3 / (1.0 - r)


def batch_propensity(rho: np.ndarray, trigger: np.ndarray | float) -> np.ndarray:
    return BATCH_MAX_SHARE / (1.0 + np.exp(-(rho - trigger) / 0.06))


def instock_probability(
    world: World, sku: np.ndarray, store: np.ndarray, daypart: np.ndarray, drop: np.ndarray
) -> np.ndarray:
    """Probability a SKU is on the shelf at a store in a daypart, after any planted drop."""
    base = world.sku_instock[sku] * world.store_instock[store] * DAYPART_INSTOCK[daypart]
    return np.clip(base - drop, 0.02, 1.0)


@dataclass
class DayOutcome:
    on_shift: np.ndarray
    busy: np.ndarray
    outstanding: np.ndarray
    prep_s: np.ndarray
    dasher_wait_s: np.ndarray
    trip: np.ndarray
    trip_size: np.ndarray
    promised_s: np.ndarray
    delivered_s: np.ndarray  # NaN when canceled
    canceled: np.ndarray
    dasher_active_s: np.ndarray
    cost: np.ndarray
    eta_new_model: np.ndarray
    basket_value: np.ndarray
    oos: np.ndarray
    substituted: np.ndarray
    missing: np.ndarray
    damaged: np.ndarray
    item_refund: np.ndarray
    bad_items: np.ndarray  # per order, delivered orders only
    refunded: np.ndarray
    support: np.ndarray
    issue: np.ndarray  # index into ISSUE_TYPES
    rated: np.ndarray
    stars: np.ndarray
    instock_prob: np.ndarray  # per item line
    lines: np.ndarray  # per order: item lines ordered (hidden SKUs left out)

    @property
    def delivered(self) -> np.ndarray:
        return ~self.canceled

    @property
    def lateness_s(self) -> np.ndarray:
        return self.delivered_s - self.promised_s


def _trips(
    d: DayDraws, eligible: np.ndarray, cap: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group eligible orders of the same store and 20-minute window into trips of <= cap.

    Returns (trip index per order, trip size per order, position on the trip)."""
    n = d.n_orders
    window = (d.t_s // BATCH_WINDOW_S).astype(np.int64)
    key = np.where(eligible, d.store * 100 + window, -1 - np.arange(n))  # singletons unique
    order = np.lexsort((d.t_s, key))
    k = key[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = k[1:] != k[:-1]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
    rank = np.arange(n) - group_start
    group_cap = cap[order][group_start]
    pos_sorted = rank % group_cap
    new_trip = new_group | (pos_sorted == 0)
    trip_sorted = np.cumsum(new_trip) - 1
    size_sorted = np.bincount(trip_sorted)[trip_sorted]
    trip = np.empty(n, dtype=np.int64)
    size = np.empty(n, dtype=np.int64)
    pos = np.empty(n, dtype=np.int64)
    trip[order], size[order], pos[order] = trip_sorted, size_sorted, pos_sorted
    return trip, size, pos


@dataclass(frozen=True)
class SupplyPlan:
    """Dashers scheduled per (region, bin) and the utilisation the schedule expects."""

    scheduled: np.ndarray
    expected_util: np.ndarray

    @staticmethod
    def for_world(world: World, orders_per_day: float) -> SupplyPlan:
        sched = scheduled_dashers(world, orders_per_day)
        needed = expected_bin_demand(world, orders_per_day) * ACTIVE_MIN_PER_ORDER / 15.0
        return SupplyPlan(sched, needed / sched)


def simulate_day(world: World, supply: SupplyPlan, d: DayDraws, lv: Levers) -> DayOutcome:
    """Outcomes of day ``d`` under levers ``lv``."""
    n_r = world.n_regions
    # --- supply and utilisation per (region, 15-minute bin)
    arrivals = np.bincount(d.region * 96 + d.bin, minlength=n_r * 96).reshape(n_r, 96)
    needed = arrivals * ACTIVE_MIN_PER_ORDER / 15.0
    week = WEEKLY[d.date.weekday()] / WEEKLY.mean()  # rosters follow the weekly pattern
    on_shift = np.maximum(1.0, supply.scheduled * week * lv.supply_mult * np.exp(d.z_supply))
    rho_bins = needed / on_shift
    rho = rho_bins[d.region, d.bin]

    # --- merchant prep, courier wait, batching
    prep = (
        world.store_prep_s[d.store]
        * (1 + 0.03 * (d.n_items - 1))
        * np.exp(0.35 * d.z_prep)
        * lv.prep_mult
    )
    ready = d.t_s + prep
    wait = np.minimum(wait_seconds(rho) * np.exp(0.45 * d.z_wait), 2400.0)
    # dispatch batches on the pressure it forecasts, nudged by what it sees right now
    pressure = (1 - REALTIME_WEIGHT) * supply.expected_util[d.region, d.bin] + REALTIME_WEIGHT * rho
    eligible = d.u_batch < batch_propensity(pressure, lv.batch_trigger)
    trip, size, pos = _trips(d, eligible, lv.batch_cap)
    n_trips = int(trip.max()) + 1 if d.n_orders else 0
    leave = np.full(n_trips, -np.inf)
    np.maximum.at(leave, trip, ready + wait)
    pickup = leave[trip]

    speed = world.speed_mph[d.region] * np.where(np.isin(d.t_s // 3600, [8, 17, 18]), 0.8, 1.0)
    travel = d.distance_mi / speed * 3600.0 * np.exp(0.2 * d.z_travel) + HANDOFF_S
    arrive = pickup + travel + pos * STOP_S

    # --- the ETA model: what it expects from the baseline world
    expected_rho = supply.expected_util[d.region, d.bin]
    expected = (
        world.store_prep_s[d.store] * (1 + 0.03 * (d.n_items - 1))
        + wait_seconds(expected_rho)
        + batch_propensity(expected_rho, BASE_BATCH_TRIGGER)
        * (BATCH_WINDOW_S / 2 + STOP_S * (BASE_BATCH_CAP - 1) / 2)
        + d.distance_mi / world.speed_mph[d.region] * 3600.0
        + HANDOFF_S
        + ETA_BUFFER_S
    )
    promised = d.t_s + expected * np.exp(0.10 * d.z_eta) * lv.eta_scale + lv.promise_add_s

    # --- customers react to lateness
    late_min = (arrive - promised) / 60.0
    p_cancel = 0.006 + 0.30 / (1.0 + np.exp(-(late_min - 25.0) / 5.0))
    canceled = d.u_cancel < p_cancel
    delivered_s = np.where(canceled, np.nan, arrive)

    # --- courier time and cost, shared over the trip
    last_drop = np.zeros(n_trips)
    np.maximum.at(last_drop, trip, travel + pos * STOP_S)
    far = np.zeros(n_trips)
    np.maximum.at(far, trip, d.distance_mi)
    trip_size = np.bincount(trip, minlength=n_trips).astype(float)
    trip_active = 480.0 + 180.0 * trip_size + last_drop
    trip_cost = 2.0 + 0.30 * trip_active / 60.0 + 0.6 * (far + 0.6 * (trip_size - 1))
    active = (trip_active / trip_size)[trip]
    cost = (trip_cost / trip_size)[trip]

    # --- items: stock-outs, substitutions, damage, refunds
    io = d.item_order
    p_in = instock_probability(world, d.item_sku, d.store[io], d.daypart[io], lv.instock_drop[io])
    # a hidden SKU (a fix) is not ordered: its line is neither sold nor short nor refunded
    hidden = lv.hidden_lines if lv.hidden_lines is not None else np.zeros(len(io), dtype=bool)
    line_value = np.where(hidden, 0.0, world.sku_price[d.item_sku] * d.item_qty)
    basket = np.bincount(io, weights=line_value, minlength=d.n_orders)
    oos = (d.u_oos > p_in) & ~hidden
    substituted = oos & (d.u_sub < 0.55)
    missing = oos & ~substituted
    p_damage = np.where(world.sku_fragile[d.item_sku], 0.004 + 0.025 * (size[io] - 1), 0.0008)
    damaged = ~oos & ~hidden & (d.u_damage < p_damage)
    delivered_line = ~canceled[io]
    refund = np.where(missing & (d.u_refund < 0.80), line_value, 0.0)
    refund += np.where(substituted & (d.u_refund < 0.20), 0.3 * line_value, 0.0)
    refund += np.where(damaged, line_value, 0.0)
    credit = (late_min > 15.0) & (d.u_credit < 0.5) & ~canceled
    refund += np.where(credit[io], 0.15 * line_value, 0.0)
    refund = np.where(delivered_line, refund, 0.0)

    def per_order(flag: np.ndarray) -> np.ndarray:
        return np.bincount(io, weights=(flag & delivered_line).astype(float), minlength=d.n_orders)

    n_missing, n_sub, n_damaged = per_order(missing), per_order(substituted), per_order(damaged)
    refunded = np.bincount(io, weights=refund, minlength=d.n_orders) > 0

    # --- support tickets and ratings
    late10 = (late_min > 10.0) & ~canceled
    p_support = np.minimum(
        0.010
        + 0.15 * late10
        + 0.25 * (n_missing > 0)
        + 0.10 * (n_sub > 0)
        + 0.35 * (n_damaged > 0)
        + 0.45 * canceled,
        0.9,
    )
    support = d.u_support < p_support
    # priority: canceled, missing, damaged, late, substitution, other (see ISSUE_TYPES)
    issue = np.select(
        [canceled, n_missing > 0, n_damaged > 0, late10, n_sub > 0],
        [4, 1, 3, 0, 2],
        default=5,
    )
    rated = ~canceled & (d.u_rate < 0.32)
    latent = (
        4.78
        - 0.05 * np.clip(late_min, 0.0, 40.0)
        - 0.9 * (n_missing > 0)
        - 0.35 * (n_sub > 0)
        - 1.1 * (n_damaged > 0)
        + 0.55 * d.z_rating
    )
    stars = np.clip(np.rint(latent), 1, 5).astype(np.int64)

    busy = np.minimum(on_shift, needed)
    return DayOutcome(
        on_shift=np.rint(on_shift).astype(np.int64),
        busy=np.rint(busy).astype(np.int64),
        outstanding=np.rint(arrivals * 45.0 / 15.0).astype(np.int64),
        prep_s=prep,
        dasher_wait_s=pickup - ready,
        trip=trip,
        trip_size=size,
        promised_s=promised,
        delivered_s=delivered_s,
        canceled=canceled,
        dasher_active_s=active,
        cost=cost,
        eta_new_model=lv.eta_new_model,
        basket_value=basket,
        oos=oos,
        substituted=substituted,
        missing=missing,
        damaged=damaged,
        item_refund=refund,
        bad_items=n_missing + n_sub,
        refunded=refunded,
        support=support,
        issue=issue,
        rated=rated,
        stars=stars,
        instock_prob=p_in,
        lines=d.n_items - np.bincount(io, weights=hidden, minlength=d.n_orders).astype(np.int64),
    )
