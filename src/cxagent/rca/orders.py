"""Per-order evidence for one incident: the slice's orders with their fulfilment and outcomes.

Root-cause tests look inside the incident slice order by order (what changed for these
orders: prep time, batching, courier supply, promised times), so unlike detection they need
more than the cube's sums. ``order_frame`` selects the slice's orders in a time range on the
engine (Ibis, so it runs wherever the cube runs) and returns a pandas frame small enough to
model: one slice over a few weeks, not the marketplace.

Features the dataset does not record (its manifest lists them as missing, e.g. Olist has no
couriers) come back as all-NaN columns and are named in ``frame.attrs["missing"]``, so a
hypothesis that needs them says "not testable" instead of reading zeros.

A slice of a large marketplace can hold millions of orders in its weeks; the models fitted
on a frame need far fewer. A frame holds at most ``max_orders`` orders (default
``MAX_FRAME_ORDERS``, or ``$CXAGENT_MAX_FRAME_ORDERS``), the sample drawn on the engine:
the orders with the smallest ``sample_key`` of their order id (a uniform sample, the same
on DuckDB and Spark and from run to run). Below the cap the frame is every order.
"""

from __future__ import annotations

import datetime as dt
import os
from bisect import bisect_left
from collections.abc import Mapping
from itertools import accumulate
from typing import Any, Final

import ibis
import ibis.expr.types as ir
import pandas as pd

from cxagent.engine.connection import Engine
from cxagent.engine.facts import (
    per_order_items,
    per_order_tickets,
    placed_between,
    with_trip_size,
)
from cxagent.engine.portable import sample_key, seconds_between
from cxagent.errors import CXAgentError
from cxagent.metrics.definitions import ON_TIME_GRACE_S

SLICE_KEYS: Final = ("store_id", "region", "category", "daypart", "basket_size")
SUPPLY_INTERVAL_S: Final = 900  # the supply table's 15-minute intervals
# orders a frame holds at most: above the largest the demo reads (148,024: all grocery
# orders over the 16 days of the rollback's estimate), so the demo and tests are unchanged
MAX_FRAME_ORDERS: Final = 200_000
MAX_FRAME_ORDERS_ENV: Final = "CXAGENT_MAX_FRAME_ORDERS"
SAMPLE_BUCKET_DIGITS: Final = 4  # a capped frame's threshold is found among 16**4 buckets

# feature -> (table, source columns it needs), for "not testable" reporting
FEATURE_SOURCES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "prep_min": ("deliveries", ("merchant_prep_time_s",)),
    "dasher_wait_min": ("deliveries", ("dasher_wait_s",)),
    "distance_mi": ("deliveries", ("distance_mi",)),
    "batched": ("deliveries", ("batched_flag",)),
    "dasher_active_min": ("deliveries", ("dasher_active_s",)),
    "busy_share": ("supply", ("busy_dashers", "dashers_on_shift")),
    "orders_per_dasher": ("supply", ("outstanding_orders", "dashers_on_shift")),
    "couriers_log": ("supply", ("dashers_on_shift",)),
    "bad_items": ("items", ("missing_flag", "substituted_flag")),
    "refunded": ("items", ("refund_amount",)),
    "support": ("support_events", ()),
}


def order_frame(
    engine: Engine,
    where: Mapping[str, Any],
    start: dt.datetime,
    end: dt.datetime,
    *,
    outcomes: bool = False,
    max_orders: int | None = None,
) -> pd.DataFrame:
    """Orders of slice ``where`` (e.g. ``{"region": "SF", "category": "grocery"}``) placed in
    ``[start, end)``, one row each: cohort, promised and actual times, fulfilment features
    and outcomes (``late`` is a delivered order past its promise plus the grace period).

    With ``outcomes`` every per-order statistic of the CX Score and efficiency is added too:
    ``stars`` (NaN when unrated), ``trip_size``, ``delivery_cost``, ``delivery_min`` (order
    to hand-off) and ``fragile`` (1 when the order holds a fragile SKU), for what-if
    estimates.

    A slice with more than ``max_orders`` orders in the range (default ``frame_cap()``)
    gives a sample of that many (``sampled_orders``); ``frame.attrs["sample"]`` is then
    ``(kept, of)`` orders, else None."""
    check_slice(where)
    if end <= start:
        raise CXAgentError(f"time range: end {end} is not after start {start}")
    o, sample = sampled_orders(engine, _slice_orders(engine, where, start, end), max_orders)
    # every other table read for the orders of [start, end) only: their days' files
    between = (start, end)
    d = engine.table("deliveries")
    d = d.filter(placed_between(d, start, end)).drop("order_time")
    if outcomes:
        d = with_trip_size(d)
    f = o.inner_join(d, "order_id")
    f = _with_items(engine, f, between)
    f = _with_support(engine, f, start)
    f = _with_supply(engine, f, between)
    extra: dict[str, ir.Value] = {}
    if outcomes:
        f, extra = _outcome_columns(engine, f, between)
    late_s = seconds_between(engine.backend, f.actual_delivery_time, f.promised_eta)
    promised_s = seconds_between(engine.backend, f.promised_eta, f.order_time)
    delivered = ~f.canceled_flag
    minutes = 60.0
    expr = f.select(
        "order_id",
        "order_time",
        "store_id",
        "region",
        "category",
        "daypart",
        "basket_size",
        "item_count",
        "eta_model",
        hour=f.order_time.hour(),
        delivered=delivered,
        canceled=f.canceled_flag,
        late=delivered & (late_s > ON_TIME_GRACE_S),
        late_min=ibis.ifelse(delivered, late_s / minutes, ibis.null("float64")),
        promised_min=promised_s / minutes,
        prep_min=f.merchant_prep_time_s / minutes,
        dasher_wait_min=f.dasher_wait_s / minutes,
        distance_mi=f.distance_mi,
        batched=f.batched_flag.cast("float64"),
        dasher_active_min=f.dasher_active_s / minutes,
        busy_share=f.busy_share,
        orders_per_dasher=f.orders_per_dasher,
        couriers_log=f.couriers_log,
        bad_items=f.bad_items,
        refunded=f.refunded,
        support=f.support,
        **extra,
    )
    frame = engine.to_arrow(expr).to_pandas()
    frame = frame.sort_values("order_time", kind="stable").reset_index(drop=True)
    missing = _missing_features(engine)
    for feature in missing:
        frame[feature] = float("nan")
    frame.attrs["missing"] = sorted(missing)
    frame.attrs["sample"] = sample
    return frame


def item_lines(
    engine: Engine,
    where: Mapping[str, Any],
    start: dt.datetime,
    end: dt.datetime,
    *,
    max_orders: int | None = None,
) -> pd.DataFrame | None:
    """The item lines of slice ``where``'s orders placed in ``[start, end)``: order, SKU,
    short (missing or substituted), refund and value; None when the data has no item flags.
    Capped as ``order_frame`` is: within a frame's range, they hold the lines of every
    order of the (sampled) frame."""
    check_slice(where)
    if not engine.has("items") or not (
        engine.manifest.has("items", "missing_flag")
        or engine.manifest.has("items", "substituted_flag")
    ):
        return None
    i = engine.table("items")
    i = i.filter(placed_between(i, start, end))
    orders, _ = sampled_orders(engine, _slice_orders(engine, where, start, end), max_orders)
    j = i.inner_join(orders.select("order_id"), "order_id")
    expr = j.select(
        "order_id",
        "sku_id",
        short=(j.missing_flag | j.substituted_flag).fill_null(False),
        refund=j.refund_amount.fill_null(0.0),
        value=j.ordered_qty.cast("float64") * j.unit_price,
    )
    return engine.to_arrow(expr).to_pandas()


def _slice_orders(
    engine: Engine, where: Mapping[str, Any], start: dt.datetime, end: dt.datetime
) -> ir.Table:
    """The orders of slice ``where`` placed in ``[start, end)``."""
    o = engine.table("orders")
    cond = placed_between(o, start, end)
    for key, value in where.items():
        cond &= o[key] == ibis.literal(value)
    return o.filter(cond)


def frame_cap() -> int:
    """Orders a frame holds at most: ``$CXAGENT_MAX_FRAME_ORDERS``, else ``MAX_FRAME_ORDERS``."""
    raw = os.environ.get(MAX_FRAME_ORDERS_ENV)
    if raw is None or not raw.strip():
        return MAX_FRAME_ORDERS
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise CXAgentError(f"{MAX_FRAME_ORDERS_ENV}: {raw!r} is not a whole number >= 1")
    return cap


def sampled_orders(
    engine: Engine, orders: ir.Table, max_orders: int | None = None
) -> tuple[ir.Table, tuple[int, int] | None]:
    """``orders`` (one row per ``order_id``) when they are at most ``max_orders`` (default
    ``frame_cap()``), else the ``max_orders`` of them with the smallest ``sample_key`` of
    the order id, and ``(kept, of)``.

    Drawn on the engine: the orders are counted; above the cap, a histogram of their keys'
    first hex digits (``SAMPLE_BUCKET_DIGITS``: at most 65,536 rows back) finds the bucket
    where the cap falls, and the smallest keys of that bucket alone (a few thousand orders
    of a hundred million) give the exact threshold. No global sort, no window: both engines
    run it in parallel. The key is an MD5 of the id, so the sample is uniform, the same on
    every engine and run, and nested: a range inside another keeps at least the orders the
    larger one keeps there."""
    cap = frame_cap() if max_orders is None else max_orders
    if cap < 1:
        raise CXAgentError(f"max_orders: {cap} is not >= 1")
    n = int(engine.con.execute(orders.count()))
    if n <= cap:
        return orders, None
    keyed = orders.select(key=sample_key(orders.order_id))
    keyed = keyed.mutate(bucket=keyed.key.substr(0, SAMPLE_BUCKET_DIGITS))
    histogram = engine.con.to_pyarrow(keyed.group_by("bucket").aggregate(orders=keyed.count()))
    counts = histogram.to_pydict()
    rows = sorted(zip(counts["bucket"], counts["orders"], strict=True))
    running = list(accumulate(count for _, count in rows))
    at = bisect_left(running, cap)  # the bucket where the cap falls
    bucket, below = rows[at][0], running[at] - rows[at][1]
    smallest = keyed.filter(keyed.bucket == bucket).order_by("key").limit(cap - below)
    threshold = max(engine.con.to_pyarrow(smallest.select("key")).column("key").to_pylist())
    return orders.filter(sample_key(orders.order_id) <= threshold), (cap, n)


def check_slice(where: Mapping[str, Any]) -> None:
    """A slice names only cohort dimensions."""
    unknown = set(where) - set(SLICE_KEYS)
    if unknown:
        raise CXAgentError(f"slice: unknown dimension(s) {sorted(unknown)}; use {SLICE_KEYS}")


def _missing_features(engine: Engine) -> set[str]:
    out = set()
    for feature, (table, columns) in FEATURE_SOURCES.items():
        if not engine.has(table) or any(not engine.manifest.has(table, c) for c in columns):
            out.add(feature)
    return out


def _outcome_columns(
    engine: Engine, f: ir.Table, between: tuple[dt.datetime, dt.datetime]
) -> tuple[ir.Table, dict[str, ir.Value]]:
    """The joined orders with their rating and whether they hold a fragile SKU, and the extra
    per-order outcome columns."""
    if engine.has("ratings"):
        r = engine.table("ratings")
        r = r.filter(r.rating_time >= ibis.literal(between[0]))  # a rating follows its order
        r = r.group_by("order_id").aggregate(stars=r.stars.max().cast("float64"))
        f = f.left_join(r, "order_id").drop("order_id_right")
    if engine.has("items") and engine.has("skus"):
        items, skus = engine.table("items"), engine.table("skus")
        items = items.filter(placed_between(items, *between))
        fragile_skus = skus.filter(skus.fragile_flag.fill_null(False)).select("sku_id")
        held = items.inner_join(fragile_skus, "sku_id").select("order_id").distinct()
        held = held.mutate(holds_fragile=ibis.literal(1.0))
        f = f.left_join(held, "order_id").drop("order_id_right")
    delivered = ~f.canceled_flag
    return f, {
        "fragile": f.holds_fragile.fill_null(0.0)
        if "holds_fragile" in f.columns
        else ibis.null("float64"),
        "stars": f.stars if "stars" in f.columns else ibis.null("float64"),
        "trip_size": f.trip_size.cast("float64"),
        "delivery_cost": ibis.ifelse(delivered, f.delivery_cost, ibis.null("float64")),
        "delivery_min": ibis.ifelse(
            delivered,
            seconds_between(engine.backend, f.actual_delivery_time, f.order_time) / 60.0,
            ibis.null("float64"),
        ),
    }


def _with_items(engine: Engine, f: ir.Table, between: tuple[dt.datetime, dt.datetime]) -> ir.Table:
    items = per_order_items(engine, between)  # orders with a bad item line or a refund
    if items is None:
        return f.mutate(bad_items=ibis.null("float64"), refunded=ibis.null("float64"))
    f = f.left_join(items, "order_id").drop("order_id_right")
    return f.mutate(
        bad_items=f.bad_items.fill_null(0).cast("float64"),
        refunded=(f.refund.fill_null(0.0) > 0).cast("float64"),
    ).drop("refund")


def _with_support(engine: Engine, f: ir.Table, since: dt.datetime) -> ir.Table:
    tickets = per_order_tickets(engine, since)
    if tickets is None:
        return f.mutate(support=ibis.null("float64"))
    f = f.left_join(tickets, "order_id").drop("order_id_right")
    return f.mutate(support=f.ticket.notnull().cast("float64")).drop("ticket")


def _with_supply(engine: Engine, f: ir.Table, between: tuple[dt.datetime, dt.datetime]) -> ir.Table:
    """Courier supply in the order's region and 15-minute interval."""
    if not engine.has("supply"):
        return f.mutate(
            busy_share=ibis.null("float64"),
            orders_per_dasher=ibis.null("float64"),
            couriers_log=ibis.null("float64"),
        )
    s = engine.table("supply")
    first = between[0] - dt.timedelta(seconds=SUPPLY_INTERVAL_S)
    s = s.filter(
        (s.interval_start >= ibis.literal(first)) & (s.interval_start < ibis.literal(between[1]))
    )
    on_shift = s.dashers_on_shift.cast("float64")
    s = s.select(
        supply_region=s.region,
        slot=s.interval_start.epoch_seconds() // SUPPLY_INTERVAL_S,
        busy_share=ibis.ifelse(on_shift > 0, s.busy_dashers / on_shift, ibis.null("float64")),
        orders_per_dasher=ibis.ifelse(
            on_shift > 0, s.outstanding_orders / on_shift, ibis.null("float64")
        ),
        # on a log scale, so that a cut of a tenth weighs the same at night as at dinner
        couriers_log=ibis.ifelse(on_shift > 0, on_shift.ln(), ibis.null("float64")),
    )
    f = f.mutate(slot=f.order_time.epoch_seconds() // SUPPLY_INTERVAL_S)
    joined = f.left_join(s, (f.region == s.supply_region) & (f.slot == s.slot))
    return joined.drop("supply_region", "slot", "slot_right")
