"""The canonical tables, declared once and enforced by ``cxagent.data.validate``.

All times are naive local wall-clock times of the order's region (dayparts are local), at
microsecond precision. Durations are seconds, distances miles, money in the dataset's
currency (``Manifest.currency``, USD unless a source says otherwise).
``docs/data-model.md`` is generated from this module (``python -m cxagent.data.docs``) and a
test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import pyarrow as pa

from cxagent.data.cohorts import BASKET_SIZES, CATEGORIES, DAYPARTS

TypeName = Literal["int64", "float64", "string", "bool", "timestamp", "list<string>", "list<int64>"]

ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "list<string>": pa.list_(pa.string()),
    "list<int64>": pa.list_(pa.int64()),
}


@dataclass(frozen=True)
class Column:
    """One column: its type, whether it may be null, its allowed range or values."""

    name: str
    type: TypeName
    description: str
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type]


@dataclass(frozen=True)
class ForeignKey:
    column: str
    table: str
    ref_column: str


@dataclass(frozen=True)
class TimeOrder:
    """``later`` must not precede ``earlier`` (both in this table, or ``earlier`` in the
    orders table joined on order_id when ``via_order`` is set)."""

    later: str
    earlier: str
    via_order: bool = False


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    primary_key: str | None
    partition_time: str | None = None  # column whose date names the partition, if large
    foreign_keys: tuple[ForeignKey, ...] = ()
    time_order: tuple[TimeOrder, ...] = ()
    required: bool = True  # a dataset may omit an optional table (listed as missing)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in self.columns]
        )

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


ISSUE_TYPES: Final = (
    "late_delivery",
    "missing_item",
    "wrong_substitution",
    "damaged_item",
    "canceled_order",
    "other",
)
CHANGE_KINDS: Final = ("policy", "model", "experiment", "ops")


STORES = Table(
    "stores",
    "Merchants (stores) and where they trade.",
    (
        Column("store_id", "int64", "Store key."),
        Column("region", "string", "Market the store trades in."),
        Column("category", "string", "Store category.", allowed=CATEGORIES),
        Column("name", "string", "Display name."),
    ),
    primary_key="store_id",
)

SKUS = Table(
    "skus",
    "Products (stock-keeping units) and the attributes fixes are scoped by.",
    (
        Column("sku_id", "int64", "SKU key."),
        Column("category", "string", "Category the SKU is sold in.", allowed=CATEGORIES),
        Column("name", "string", "Display name."),
        Column("unit_price", "float64", "List price in dataset currency.", min=0.0),
        Column("fragile_flag", "bool", "Breaks or spoils easily (eggs, glass, chilled)."),
    ),
    primary_key="sku_id",
    required=False,
)

ORDERS = Table(
    "orders",
    "One row per customer order.",
    (
        Column("order_id", "int64", "Order key."),
        Column("user_id", "int64", "Customer key."),
        Column("store_id", "int64", "Store the order was placed at."),
        Column("category", "string", "Category of the store.", allowed=CATEGORIES),
        Column("region", "string", "Market (region) of the store."),
        Column("order_time", "timestamp", "When the order was placed (local time)."),
        Column("promised_eta", "timestamp", "Delivery time promised at checkout."),
        Column(
            "basket_value", "float64", "Value of the ordered items in dataset currency.", min=0.0
        ),
        Column("item_count", "int64", "Number of item lines.", min=1),
        Column(
            "basket_size", "string", "small / medium / large by item lines.", allowed=BASKET_SIZES
        ),
        Column("daypart", "string", "Daypart of order_time (see docs).", allowed=DAYPARTS),
        Column(
            "eta_model", "string", "Version of the ETA model that set promised_eta.", nullable=True
        ),
    ),
    primary_key="order_id",
    partition_time="order_time",
    foreign_keys=(ForeignKey("store_id", "stores", "store_id"),),
    time_order=(TimeOrder("promised_eta", "order_time"),),
)

DELIVERIES = Table(
    "deliveries",
    "Fulfilment of each order: timings, courier, trip and cost.",
    (
        Column("order_id", "int64", "Order key (one delivery per order)."),
        Column("order_time", "timestamp", "Copy of orders.order_time (partitions and joins)."),
        Column(
            "actual_delivery_time",
            "timestamp",
            "Hand-off to the customer; null when canceled.",
            nullable=True,
        ),
        Column(
            "merchant_prep_time_s",
            "float64",
            "Order placed to food or goods ready, seconds.",
            nullable=True,
            min=0.0,
        ),
        Column(
            "dasher_wait_s",
            "float64",
            "Goods ready to picked up by a dasher, seconds: the wait caused by courier supply.",
            nullable=True,
            min=0.0,
        ),
        Column("distance_mi", "float64", "Store to customer, miles.", nullable=True, min=0.0),
        Column(
            "batched_flag",
            "bool",
            "Delivered on a trip with other orders: true exactly when its trip_id has other rows.",
            nullable=True,
        ),
        Column("canceled_flag", "bool", "Order was canceled before hand-off."),
        Column("dasher_id", "int64", "Courier who carried the order.", nullable=True),
        Column(
            "trip_id",
            "int64",
            "Trip (one courier run); orders per trip = rows per trip_id.",
            nullable=True,
        ),
        Column(
            "dasher_active_s",
            "float64",
            "Courier active time attributed to this order (trip time / orders on the trip), seconds.",
            nullable=True,
            min=0.0,
        ),
        Column(
            "delivery_cost",
            "float64",
            "Courier pay attributed to this order, dataset currency.",
            nullable=True,
            min=0.0,
        ),
    ),
    primary_key="order_id",
    partition_time="order_time",
    foreign_keys=(ForeignKey("order_id", "orders", "order_id"),),
    time_order=(TimeOrder("actual_delivery_time", "order_time"),),
)

ITEMS = Table(
    "items",
    "Item lines of each order, with what went wrong and what was refunded. An order's "
    "refund is the sum of its lines' refund_amount (lateness credits are spread over the lines).",
    (
        Column("item_id", "int64", "Item line key."),
        Column("order_id", "int64", "Order key."),
        Column("order_time", "timestamp", "Copy of orders.order_time (partitions and joins)."),
        Column("sku_id", "int64", "Product ordered.", nullable=True),
        Column("ordered_qty", "int64", "Units ordered.", min=1),
        Column("unit_price", "float64", "Price paid per unit, dataset currency.", min=0.0),
        Column("substituted_flag", "bool", "Replaced by another product.", nullable=True),
        Column("missing_flag", "bool", "Not delivered.", nullable=True),
        Column(
            "refund_amount",
            "float64",
            "Refunded or credited for this line, dataset currency.",
            nullable=True,
            min=0.0,
        ),
    ),
    primary_key="item_id",
    partition_time="order_time",
    foreign_keys=(ForeignKey("order_id", "orders", "order_id"),),
    required=False,
)

INVENTORY_EVENTS = Table(
    "inventory_events",
    "In-stock predictions and observed stock-outs per store and SKU.",
    (
        Column("event_id", "int64", "Event key."),
        Column("sku_id", "int64", "Product."),
        Column("store_id", "int64", "Store."),
        Column("event_time", "timestamp", "When the stock level was read."),
        Column(
            "in_stock_prob",
            "float64",
            "Predicted probability the SKU is on the shelf.",
            min=0.0,
            max=1.0,
        ),
        Column("oos_flag", "bool", "The SKU was found out of stock."),
    ),
    primary_key="event_id",
    partition_time="event_time",
    foreign_keys=(ForeignKey("store_id", "stores", "store_id"),),
    required=False,
)

SUPPORT_EVENTS = Table(
    "support_events",
    "Customer support tickets.",
    (
        Column("ticket_id", "int64", "Ticket key."),
        Column("order_id", "int64", "Order the ticket is about."),
        Column("issue_type", "string", "Reason given.", allowed=ISSUE_TYPES),
        Column("ticket_created", "timestamp", "When the ticket was opened."),
    ),
    primary_key="ticket_id",
    partition_time="ticket_created",
    foreign_keys=(ForeignKey("order_id", "orders", "order_id"),),
    time_order=(TimeOrder("ticket_created", "order_time", via_order=True),),
    required=False,
)

RATINGS = Table(
    "ratings",
    "Customer ratings (reviews) of orders.",
    (
        Column("rating_id", "int64", "Rating key."),
        Column("order_id", "int64", "Order rated."),
        Column("stars", "int64", "1 (worst) to 5 (best).", min=1, max=5),
        Column("free_text", "string", "Comment, if any.", nullable=True),
        Column("rating_time", "timestamp", "When the rating was left."),
    ),
    primary_key="rating_id",
    partition_time="rating_time",
    foreign_keys=(ForeignKey("order_id", "orders", "order_id"),),
    time_order=(TimeOrder("rating_time", "order_time", via_order=True),),
    required=False,
)

SUPPLY = Table(
    "supply",
    "Courier supply per region and 15-minute interval (what DoorDash's data records per order).",
    (
        Column("region", "string", "Market."),
        Column("interval_start", "timestamp", "Start of the 15-minute interval (local time)."),
        Column("dashers_on_shift", "int64", "Couriers on shift.", min=0),
        Column("busy_dashers", "int64", "Couriers carrying an order.", min=0),
        Column("outstanding_orders", "int64", "Orders placed and not yet delivered.", min=0),
    ),
    primary_key=None,
    partition_time="interval_start",
    required=False,
)

CHANGE_EVENTS = Table(
    "change_events",
    "Every deployed policy, model, experiment or operations change. An empty scope list "
    "means 'all'. Parameters are JSON objects.",
    (
        Column("change_id", "string", "Change key."),
        Column("kind", "string", "What changed.", allowed=CHANGE_KINDS),
        Column("name", "string", "Short name, e.g. batching_policy or eta_model."),
        Column("description", "string", "What was changed and why."),
        Column("started_at", "timestamp", "When it took effect (local time)."),
        Column(
            "ended_at",
            "timestamp",
            "When it was rolled back or ended; null if live.",
            nullable=True,
        ),
        Column("scope_regions", "list<string>", "Regions affected ([] = all)."),
        Column("scope_categories", "list<string>", "Categories affected ([] = all)."),
        Column("scope_dayparts", "list<string>", "Dayparts affected ([] = all)."),
        Column("scope_stores", "list<int64>", "Stores affected ([] = all)."),
        Column("parameters_before", "string", "JSON object of settings before the change."),
        Column("parameters_after", "string", "JSON object of settings after the change."),
    ),
    primary_key="change_id",
    time_order=(TimeOrder("ended_at", "started_at"),),
    required=False,
)

TABLES: Final[dict[str, Table]] = {
    t.name: t
    for t in (
        STORES,
        SKUS,
        ORDERS,
        DELIVERIES,
        ITEMS,
        INVENTORY_EVENTS,
        SUPPORT_EVENTS,
        RATINGS,
        SUPPLY,
        CHANGE_EVENTS,
    )
}


@dataclass
class Manifest:
    """``dataset.json``: where a dataset came from and what its source lacks.

    ``missing_columns`` lists, per table, columns the source has no data for (stored as
    nulls); ``missing_tables`` lists optional tables the source cannot provide. Analyses
    report a cause that needs them as "not testable" instead of guessing.
    """

    source: str
    description: str = ""
    start: str | None = None
    end: str | None = None
    currency: str = "USD"
    missing_tables: list[str] = field(default_factory=list)
    missing_columns: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    schema_version: int = 1

    def has(self, table: str, column: str | None = None) -> bool:
        """Whether the dataset has real data for ``table`` (and ``column``)."""
        if table in self.missing_tables:
            return False
        return column is None or column not in self.missing_columns.get(table, [])
