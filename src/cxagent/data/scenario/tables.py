"""Turn one simulated day into the canonical tables (Arrow), with stable ids.

Ids encode the day so that days written in parallel never collide:
order_id = (day + 1) * 10^7 + k, item_id = (day + 1) * 10^8 + j, and likewise for the rest.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from cxagent.data.cohorts import BASKET_SIZES, CATEGORIES, DAYPARTS, basket_size_codes
from cxagent.data.scenario.causes import BASE_ETA_MODEL, NEW_ETA_MODEL
from cxagent.data.scenario.draws import DayDraws
from cxagent.data.scenario.simulate import DayOutcome
from cxagent.data.scenario.world import World
from cxagent.data.schema import ISSUE_TYPES, TABLES

ORDER_ID_STRIDE = 10_000_000
ITEM_ID_STRIDE = 100_000_000

_TEXT = {
    1: "Items missing from my order.",
    2: "Substitutions were not what I wanted.",
    3: "Something arrived broken.",
    0: "Delivery was late.",
}


def _ts(date: dt.date, seconds: np.ndarray) -> pa.Array:
    base = np.datetime64(date, "us")
    finite = np.isfinite(seconds)
    us = np.where(finite, np.rint(seconds * 1e6), 0).astype("int64").astype("timedelta64[us]")
    return pa.array(base + us, type=pa.timestamp("us"), mask=~finite)


def _dict(codes: np.ndarray, values: list[str] | tuple[str, ...]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(list(values))
    ).cast(pa.string())


def _table(name: str, columns: dict[str, pa.Array | np.ndarray]) -> pa.Table:
    schema = TABLES[name].arrow_schema
    arrays = []
    for f in schema:
        value = columns[f.name]
        arr = value if isinstance(value, pa.Array) else pa.array(value)
        arrays.append(arr.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def day_tables(
    world: World, d: DayDraws, o: DayOutcome, *, instock_events: np.ndarray
) -> dict[str, pa.Table]:
    """All canonical day tables; ``instock_events`` is the in-stock probability per reading."""
    day = d.day_index + 1
    n = d.n_orders
    order_id = day * ORDER_ID_STRIDE + np.arange(n, dtype=np.int64)
    order_time = _ts(d.date, d.t_s)
    store_ids = world.stores["store_id"].to_numpy(np.int64)
    cat_codes = np.array([CATEGORIES.index(c) for c in world.categories])[d.category]
    out: dict[str, pa.Table] = {}
    out["orders"] = _table(
        "orders",
        {
            "order_id": order_id,
            "user_id": d.user_id,
            "store_id": store_ids[d.store],
            "category": _dict(cat_codes, CATEGORIES),
            "region": _dict(d.region, world.regions),
            "order_time": order_time,
            "promised_eta": _ts(d.date, o.promised_s),
            "basket_value": np.round(o.basket_value, 2),
            "item_count": d.n_items,
            "basket_size": _dict(basket_size_codes(d.n_items), BASKET_SIZES),
            "daypart": _dict(d.daypart, DAYPARTS),
            "eta_model": _dict(o.eta_new_model.astype(np.int64), [BASE_ETA_MODEL, NEW_ETA_MODEL]),
        },
    )
    dasher_pool = np.maximum(50, (world.user_pool // 40))
    dasher_off = np.concatenate([[0], np.cumsum(dasher_pool)[:-1]])
    trip_first = np.zeros(int(o.trip.max()) + 1 if n else 0)
    np.maximum.at(trip_first, o.trip, d.u_dasher)  # one courier per trip
    dasher = (
        1 + dasher_off[d.region] + (trip_first[o.trip] * dasher_pool[d.region]).astype(np.int64)
    )
    out["deliveries"] = _table(
        "deliveries",
        {
            "order_id": order_id,
            "order_time": order_time,
            "actual_delivery_time": _ts(d.date, o.delivered_s),
            "merchant_prep_time_s": np.round(o.prep_s, 1),
            "dasher_wait_s": np.round(o.dasher_wait_s, 1),
            "distance_mi": np.round(d.distance_mi, 2),
            "batched_flag": o.trip_size > 1,
            "canceled_flag": o.canceled,
            "dasher_id": dasher,
            "trip_id": day * ORDER_ID_STRIDE + o.trip,
            "dasher_active_s": np.round(o.dasher_active_s, 1),
            "delivery_cost": np.round(o.cost, 2),
        },
    )
    io = d.item_order
    line_ok = ~o.canceled[io]
    out["items"] = _table(
        "items",
        {
            "item_id": day * ITEM_ID_STRIDE + np.arange(len(io), dtype=np.int64),
            "order_id": order_id[io],
            "order_time": order_time.take(pa.array(io)),
            "sku_id": world.skus["sku_id"].to_numpy(np.int64)[d.item_sku],
            "ordered_qty": d.item_qty,
            "unit_price": world.sku_price[d.item_sku],
            "substituted_flag": pa.array(o.substituted, mask=~line_ok),
            "missing_flag": pa.array(o.missing, mask=~line_ok),
            "refund_amount": np.round(o.item_refund, 2),
        },
    )
    inv_time = _ts(d.date, d.inv_t_s)
    out["inventory_events"] = _table(
        "inventory_events",
        {
            "event_id": day * ORDER_ID_STRIDE + np.arange(len(d.inv_store), dtype=np.int64),
            "sku_id": world.skus["sku_id"].to_numpy(np.int64)[d.inv_sku],
            "store_id": store_ids[d.inv_store],
            "event_time": inv_time,
            "in_stock_prob": np.round(instock_events, 4),
            "oos_flag": d.inv_u > instock_events,
        },
    )
    end_s = np.where(o.canceled, d.t_s + 0.5 * (o.promised_s - d.t_s), o.delivered_s)
    sup = np.flatnonzero(o.support)
    out["support_events"] = _table(
        "support_events",
        {
            "ticket_id": day * ORDER_ID_STRIDE + np.arange(len(sup), dtype=np.int64),
            "order_id": order_id[sup],
            "issue_type": _dict(o.issue[sup], ISSUE_TYPES),
            "ticket_created": _ts(d.date, end_s[sup] + 300.0 + d.u_after[sup] * 10500.0),
        },
    )
    rat = np.flatnonzero(o.rated)
    text_code = np.where(o.stars[rat] <= 3, o.issue[rat], -1)
    texts = [_TEXT.get(int(c)) for c in text_code]
    out["ratings"] = _table(
        "ratings",
        {
            "rating_id": day * ORDER_ID_STRIDE + np.arange(len(rat), dtype=np.int64),
            "order_id": order_id[rat],
            "stars": o.stars[rat],
            "free_text": pa.array(texts, type=pa.string()),
            "rating_time": _ts(d.date, o.delivered_s[rat] + 600.0 + d.u_after[rat] * 35400.0),
        },
    )
    r_idx, b_idx = np.divmod(np.arange(world.n_regions * 96), 96)
    out["supply"] = _table(
        "supply",
        {
            "region": _dict(r_idx, world.regions),
            "interval_start": _ts(d.date, b_idx * 900.0),
            "dashers_on_shift": o.on_shift.ravel(),
            "busy_dashers": o.busy.ravel(),
            "outstanding_orders": o.outstanding.ravel(),
        },
    )
    return out
