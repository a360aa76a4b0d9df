"""Storefront events and the session features folded from them.

An ``Event`` is what the page (the concierge widget, the storefront's own tags) sends: one
page view, cart add or removal, purchase, click, or the impression of a bandit decision (the
hero or CTA actually shown), with an ``event_id`` that makes every consumer idempotent (a
redelivered event is recognised and skipped). ``SessionFeatures`` is the running aggregate of
a session that the feature store keeps and the persona classifier and the advisor read
(including the cart: the product ids added and not removed since the last purchase);
``fold`` adds one event to it and is pure, so the in-process store, the Redis store and the
tests compute exactly the same features.

Page types follow the three page families of the UCI Online Shoppers data (Sakar et al. 2019),
so a model learned there reads a live session: ``administrative`` (home, account, cart,
checkout, help), ``informational`` (tutorials, guides, about) and ``product_related``
(category, product, search results). The time on a page is the gap to the session's next
page view, as analytics tools measure it (the last page of a session has no duration yet).

The cart holds each product once, like the demo shop's cart: ``add_to_cart`` with a
``product_id`` adds it (again: no change), ``remove_from_cart`` removes it (absent: no
change), ``purchase`` empties it. Unlike the counts, it follows the order in which events are
folded: one consumer applies a session's events in stream order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

EventKind = Literal[
    "page_view",
    "add_to_cart",
    "remove_from_cart",  # a product left the cart (the cart page's "Remove")
    "purchase",
    "rec_click",  # a recommendation of the advisor was clicked
    "hero_click",  # the hero image the bandit chose was clicked
    "cta_click",  # the call to action the bandit chose was clicked
    "impression",  # the hero or CTA of a decision was shown (rendered, at least half in view)
    "widget_open",
    "widget_option",  # an option card of the concierge widget was chosen
    "widget_dismiss",
]
PageType = Literal[
    "home",
    "account",
    "cart",
    "checkout",
    "help",
    "tutorial",
    "guide",
    "about",
    "category",
    "product",
    "search",
]
Device = Literal["desktop", "mobile", "tablet"]

PAGE_FAMILY: Final[dict[str, str]] = {
    "home": "administrative",
    "account": "administrative",
    "cart": "administrative",
    "checkout": "administrative",
    "help": "administrative",
    "tutorial": "informational",
    "guide": "informational",
    "about": "informational",
    "category": "product_related",
    "product": "product_related",
    "search": "product_related",
}
FAMILIES: Final = ("administrative", "informational", "product_related")


class Event(BaseModel):
    """One storefront event, as the page sends it and the stream carries it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str = Field(min_length=8, max_length=64, description="Unique id: idempotency key.")
    session_id: str = Field(min_length=1, max_length=64)
    kind: EventKind
    ts: dt.datetime = Field(description="When it happened (ISO 8601).")
    page_type: PageType | None = Field(default=None, description="For page views.")
    product_id: str | None = Field(default=None, max_length=64)
    category: str | None = Field(default=None, max_length=64, description="Catalog category.")
    value: float | None = Field(default=None, ge=0, description="Order value, for purchases.")
    device: Device | None = None
    referrer: str | None = Field(default=None, max_length=256)
    utm_source: str | None = Field(default=None, max_length=64)
    utm_medium: str | None = Field(default=None, max_length=64)
    utm_campaign: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=64, description="When logged in.")
    decision_id: str | None = Field(
        default=None,
        max_length=64,
        description="The bandit decision a click, cart add or purchase answers, or an "
        "impression reports shown (required for an impression).",
        validate_default=True,
    )

    @field_validator("decision_id")
    @classmethod
    def _impression_names_its_decision(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("kind") == "impression":
            raise PydanticCustomError(
                "decision_required", "required for an impression: the decision that was shown"
            )
        return value


@dataclass(frozen=True)
class SessionFeatures:
    """A session so far: what the classifier and the advisor read."""

    session_id: str
    started_at: dt.datetime | None = None
    last_at: dt.datetime | None = None
    events: int = 0
    page_views: int = 0
    pages: dict[str, int] = field(default_factory=dict)  # family -> page views
    seconds: dict[str, float] = field(default_factory=dict)  # family -> time on its pages
    page_types: dict[str, int] = field(default_factory=dict)  # page type -> views
    categories: dict[str, int] = field(default_factory=dict)  # catalog category -> views
    products: tuple[str, ...] = ()  # products viewed, most recent last (at most 20)
    cart_adds: int = 0
    cart: tuple[str, ...] = ()  # product ids in the cart, in the order added (at most 50)
    purchases: int = 0
    revenue: float = 0.0
    rec_clicks: int = 0
    widget_interactions: int = 0
    device: str | None = None
    channel: str | None = None  # utm_source, else the referrer's kind, else "direct"
    logged_in: bool = False
    user_id: str | None = None  # the latest first-party id when logged in (the profile's key)
    last_page_family: str | None = None
    last_page_at: dt.datetime | None = None

    @property
    def duration_s(self) -> float:
        if self.started_at is None or self.last_at is None:
            return 0.0
        return (self.last_at - self.started_at).total_seconds()


MAX_PRODUCTS: Final = 20
MAX_CART: Final = 50


def channel_of(event: Event) -> str:
    """The acquisition channel: the UTM source if tagged, else the referrer's kind."""
    if event.utm_source:
        return event.utm_source.lower()
    ref = (event.referrer or "").lower()
    if not ref:
        return "direct"
    for needle, name in (
        ("google", "search"),
        ("bing", "search"),
        ("duckduckgo", "search"),
        ("instagram", "social"),
        ("facebook", "social"),
        ("pinterest", "social"),
        ("youtube", "social"),
        ("tiktok", "social"),
        ("mail", "email"),
    ):
        if needle in ref:
            return name
    return "referral"


def _bump(counts: dict[str, int], key: str, by: int = 1) -> dict[str, int]:
    return {**counts, key: counts.get(key, 0) + by}


def fold(features: SessionFeatures, event: Event) -> SessionFeatures:
    """The session's features after ``event`` (pure; events of another session are refused)."""
    if event.session_id != features.session_id:
        raise ValueError(
            f"session_id: event of {event.session_id!r} folded into {features.session_id!r}"
        )
    f = replace(
        features,
        started_at=min(filter(None, (features.started_at, event.ts))),
        last_at=max(filter(None, (features.last_at, event.ts))),
        events=features.events + 1,
        device=features.device or event.device,
        channel=features.channel or channel_of(event),
        logged_in=features.logged_in or event.user_id is not None,
        user_id=event.user_id or features.user_id,  # the latest login (an account switch)
    )
    if event.kind == "page_view" and event.page_type is not None:
        family = PAGE_FAMILY[event.page_type]
        seconds = dict(f.seconds)
        if f.last_page_family is not None and f.last_page_at is not None:
            gap = max((event.ts - f.last_page_at).total_seconds(), 0.0)
            seconds[f.last_page_family] = seconds.get(f.last_page_family, 0.0) + gap
        products = f.products
        if event.product_id:
            products = (*products, event.product_id)[-MAX_PRODUCTS:]
        f = replace(
            f,
            page_views=f.page_views + 1,
            pages=_bump(f.pages, family),
            seconds=seconds,
            page_types=_bump(f.page_types, event.page_type),
            categories=_bump(f.categories, event.category) if event.category else f.categories,
            products=products,
            last_page_family=family,
            last_page_at=event.ts,
        )
    elif event.kind == "add_to_cart":
        cart = f.cart
        if event.product_id and event.product_id not in cart:
            cart = (*cart, event.product_id)[-MAX_CART:]
        f = replace(f, cart_adds=f.cart_adds + 1, cart=cart)
    elif event.kind == "remove_from_cart":
        if event.product_id in f.cart:
            f = replace(f, cart=tuple(p for p in f.cart if p != event.product_id))
    elif event.kind == "purchase":
        f = replace(f, purchases=f.purchases + 1, revenue=f.revenue + (event.value or 0.0), cart=())
    elif event.kind == "rec_click":
        f = replace(f, rec_clicks=f.rec_clicks + 1)
    elif event.kind in ("widget_open", "widget_option", "widget_dismiss"):
        f = replace(f, widget_interactions=f.widget_interactions + 1)
    return f
