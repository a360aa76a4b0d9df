"""One row per order: its cohort and its contribution to every ``CXStats`` field.

Written once against Ibis, so it runs on DuckDB (default) or any backend Ibis supports. A
table or column the dataset lacks (see its manifest) contributes nulls, so the metrics that
need it come out as NaN ("not testable") instead of zero.
"""

from __future__ import annotations

import datetime as dt

import ibis
import ibis.expr.types as ir

from cxagent.data.cohorts import DAYPART_OF_HOUR, DAYPARTS
from cxagent.engine.connection import Engine
from cxagent.engine.portable import seconds_between
from cxagent.metrics.definitions import ON_TIME_GRACE_S

COHORT_DIMS = ("store_id", "region", "category", "daypart", "basket_size")
LEAF_DIMS = ("store_id", "region", "category", "basket_size")  # + hour, which fixes daypart
# Sums kept per cell besides the CXStats fields: squares for standard errors of means.
SQUARE_FIELDS = ("eta_abs_error_s_sq", "stars_sq", "delivery_cost_sq")
WINDOW_EPOCH = dt.datetime(1970, 1, 5)  # a Monday: window ids count service days from it


def per_order_items(
    engine: Engine,
    orders_between: tuple[dt.datetime, dt.datetime] | None = None,
    since: dt.datetime | None = None,
) -> ir.Table | None:
    """Bad item lines and refunds per order, for orders that have any: most item lines are
    fine, and filtering them out first makes the aggregation and its join a few percent of
    the work (an order without a row here has neither). ``orders_between`` keeps the lines of
    orders placed in that range only (the Parquet files of other days are not read); ``since``
    those placed from then on."""
    if not engine.has("items"):
        return None
    items = engine.table("items")
    if orders_between is not None:
        items = items.filter(placed_between(items, *orders_between))
    if since is not None:
        items = items.filter(items.order_time >= ibis.literal(since))
    bad = (items.missing_flag | items.substituted_flag).fill_null(False)
    refund = items.refund_amount.fill_null(0.0)
    flagged = items.filter(bad | (refund != 0))
    return flagged.group_by("order_id").aggregate(
        bad_items=bad.cast("int64").sum(),
        refund=refund.sum(),
    )


def per_order_tickets(engine: Engine, since: dt.datetime | None = None) -> ir.Table | None:
    """Orders with at least one support contact (``ticket`` = 1), or None without the table;
    ``since``: tickets opened from then on only (a ticket follows its order)."""
    if not engine.has("support_events"):
        return None
    events = engine.table("support_events")
    if since is not None:
        events = events.filter(events.ticket_created >= ibis.literal(since))
    tickets = events.select("order_id").distinct()
    return tickets.mutate(ticket=ibis.literal(1))


def since_for_days(engine: Engine, days: int | None) -> dt.datetime | None:
    """The first hour of the data's last ``days`` days (None: every day, or when the data
    is no longer than that), as ``build_window_cube`` cuts."""
    if days is None:
        return None
    orders = engine.table("orders")
    span = orders.aggregate(first=orders.order_time.min(), last=orders.order_time.max())
    first_order, last = (c[0].as_py() for c in span.to_pyarrow().columns)
    if last is None:
        return None
    last_hour = last.replace(minute=0, second=0, microsecond=0)
    since = last_hour - dt.timedelta(days=days) + dt.timedelta(hours=1)
    # the data is no longer than that: no filter (measured: the filters cost a third more
    # time on 10 M orders when they cut nothing)
    return None if since <= first_order else since


def placed_between(t: ir.Table, start: dt.datetime, end: dt.datetime) -> ir.BooleanValue:
    """Rows of orders placed in ``[start, end)`` (by the table's ``order_time``: orders and
    the tables that copy it for partitioning, which lets the engine skip other days' files)."""
    return (t.order_time >= ibis.literal(start)) & (t.order_time < ibis.literal(end))


def with_trip_size(d: ir.Table) -> ir.Table:
    """Deliveries with the number of orders on their trip (rows per ``trip_id``; 1 without
    one). An order with ``batched_flag`` false rode alone (the data contract, checked by
    ``cxagent validate``), so only the others are counted: a few percent of the rows, and
    a small build side for the join back."""
    shared = (
        d.filter(d.trip_id.notnull() & d.batched_flag.fill_null(True))
        .group_by("trip_id")
        .aggregate(trip_size=ibis._.count())
        .filter(ibis._.trip_size > 1)
    )
    out = d.left_join(shared, "trip_id").drop("trip_id_right")
    return out.mutate(trip_size=out.trip_size.fill_null(1))


def daypart_of(hour: ir.TimestampValue) -> ir.StringValue:
    h = hour.hour()
    branches = [(h == k, DAYPARTS[int(DAYPART_OF_HOUR[k])]) for k in range(24)]
    return ibis.cases(*branches)


def window_of(backend: str, hour: ir.TimestampValue) -> ir.IntegerValue:
    """The absolute daypart-window id of an hour, as ``cxagent.incidents.windows.window_ids``
    computes it: ``4 * (service days since Monday 1970-01-05) + daypart``, a service day
    starting at 05:00."""
    secs = seconds_between(backend, hour, ibis.literal(WINDOW_EPOCH))  # whole hours: exact
    day = ((secs - _double(5 * 3600)) / _double(86400)).floor().cast("int64")
    h = hour.hour()
    code = ibis.cases(*[(h == k, int(DAYPART_OF_HOUR[k])) for k in range(24)])
    return day * 4 + code.cast("int64")


def _double(n: int) -> ir.FloatingValue:
    # an integer literal cast to double: Spark SQL reads a bare float literal as a decimal
    return ibis.literal(n).cast("float64")


TRIP_SPAN = dt.timedelta(days=1)  # orders on one trip are placed less than this apart


def order_facts(engine: Engine, since: dt.datetime | None = None) -> ir.Table:
    """Orders joined to their fulfilment and outcomes, as per-order statistic columns.

    The daypart is not carried: it is a function of the hour (validated), added at the leaves.
    ``since``: orders placed from then on only (the files of earlier days are not read; trip
    sizes still count trip-mates placed up to ``TRIP_SPAN`` earlier).
    """
    o = engine.table("orders")
    d = engine.table("deliveries")
    if since is not None:
        o = o.filter(o.order_time >= ibis.literal(since))
        d = d.filter(d.order_time >= ibis.literal(since - TRIP_SPAN))
    # orders per trip, counted before the join so the big join is on order_id only
    d = with_trip_size(d.drop("order_time"))
    f = o.inner_join(d, "order_id")
    items = per_order_items(engine, since=since)
    if items is not None:
        f = f.left_join(items, "order_id").drop("order_id_right")
    tickets = per_order_tickets(engine, since)
    if tickets is not None:
        f = f.left_join(tickets, "order_id").drop("order_id_right")
    if engine.has("ratings"):
        r = engine.table("ratings")
        r = r.group_by("order_id").aggregate(star=r.stars.max())
        f = f.left_join(r, "order_id").drop("order_id_right")

    # a column the source lacks (the manifest says so) leaves its statistic unknown, not 0
    has_refunds = items is not None and engine.manifest.has("items", "refund_amount")
    has_item_flags = items is not None and (
        engine.manifest.has("items", "missing_flag")
        or engine.manifest.has("items", "substituted_flag")
    )
    delivered = ~f.canceled_flag
    late_s = seconds_between(engine.backend, f.actual_delivery_time, f.promised_eta)
    # integer literals cast to double: Ibis writes a float literal as a bare 1.0, which Spark
    # SQL reads as a decimal (the sums would then be decimals of varying precision)
    zero, one = ibis.literal(0).cast("float64"), ibis.literal(1).cast("float64")
    stars = f.star.cast("float64") if "star" in f.columns else ibis.null("float64")
    abs_err = late_s.abs().cast("float64")
    cost = f.delivery_cost

    def if_delivered(x: ir.Value) -> ir.Value:
        return ibis.ifelse(delivered, x, zero)

    return f.select(
        "store_id",
        "region",
        "category",
        "basket_size",
        hour=f.order_time.truncate("h"),
        orders=one,
        delivered=delivered.cast("float64"),
        on_time=(delivered & (late_s <= ON_TIME_GRACE_S)).cast("float64"),
        eta_abs_error_s=if_delivered(abs_err),
        canceled=f.canceled_flag.cast("float64"),
        refunded=(f.refund.fill_null(0.0) > 0).cast("float64")
        if has_refunds
        else ibis.null("float64"),
        items=if_delivered(f.item_count.cast("float64")),
        bad_items=if_delivered(f.bad_items.fill_null(0).cast("float64"))
        if has_item_flags
        else ibis.null("float64"),
        support=f.ticket.notnull().cast("float64")
        if "ticket" in f.columns
        else ibis.null("float64"),
        ratings=stars.notnull().cast("float64"),
        stars=stars.fill_null(0.0) if "star" in f.columns else ibis.null("float64"),
        trips=if_delivered(one / f.trip_size.cast("float64"))
        if engine.manifest.has("deliveries", "trip_id")
        else ibis.null("float64"),
        dasher_active_s=if_delivered(f.dasher_active_s),
        delivery_cost=if_delivered(cost),
        eta_abs_error_s_sq=if_delivered(abs_err * abs_err),
        stars_sq=(stars * stars).fill_null(0.0) if "star" in f.columns else ibis.null("float64"),
        delivery_cost_sq=if_delivered(cost * cost),
    )
