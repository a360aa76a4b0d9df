"""A seeded synthetic clickstream of the storefront, for tests and demos.

Real session data cannot ship with the project (and a fresh clone must test without
``../shared``), so tests and demos need clickstreams they can make themselves. This module
draws visitors from a few latent visitor types that differ in page mix, dwell time, cart and
purchase rates, device, acquisition channel, login and catalog interest, and emits the
storefront ``Event``s such a visit would send. Everything is a function of the seed.

The four types mirror the taxonomy the persona model finds in the UCI Online Shoppers data
(Sakar et al. 2019; see docs/storefront-persona.md): a glance of one or two pages, product-only
browsing, product browsing with account/cart pages, and research on tutorials and guides as
well as products. Their parameters are assumptions chosen to resemble that data, not
measurements: the generator is for checking that the pipeline recovers structure it was given,
never evidence about real visitors.

Catalog categories are slugs whose first word is the interest ("photo-presets" is a photo
category); ``cxagent.storefront.persona`` reads the interest qualifier from that word.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from cxagent.storefront.events import (
    PAGE_FAMILY,
    Event,
    EventKind,
    PageType,
    SessionFeatures,
    fold,
)
from cxagent.storefront.persona import INTERESTS

CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "photo": ("photo-editing", "photo-presets", "photo-lighting"),
    "vector": ("vector-illustration", "vector-fonts", "vector-brushes"),
    "supplies": ("supplies-paper", "supplies-paint", "supplies-pens"),
}
PRICES: Final[dict[str, float]] = {"photo": 49.0, "vector": 39.0, "supplies": 18.0}

# How each acquisition channel shows up on the first event, so ``channel_of`` reads it back.
_CHANNEL_FIELDS: Final[dict[str, dict[str, str]]] = {
    "direct": {},
    "search": {"referrer": "https://www.google.com/"},
    "social": {"referrer": "https://www.instagram.com/"},
    "email": {"utm_source": "email", "utm_medium": "email", "utm_campaign": "newsletter"},
    "referral": {"referrer": "https://blog.example.org/tips"},
}
_DWELL_SIGMA: Final = 0.7  # log-sd of the seconds on one page
_START: Final = dt.datetime(2024, 3, 4, tzinfo=dt.UTC)


@dataclass(frozen=True)
class VisitorType:
    """A latent kind of visit: how many pages, which ones, how long, and what it leads to."""

    name: str
    weight: float  # share of sessions
    pages_median: float  # page views per session: lognormal, at least 1
    pages_sigma: float
    max_pages: int
    page_mix: Mapping[PageType, float]  # probability of each page type per browsing page
    dwell: Mapping[str, float]  # median seconds on a page, per page family
    cart_rate: float  # probability of an add-to-cart after a product page
    purchase_rate: float  # probability a session with a cart add buys
    devices: Mapping[str, float]
    channels: Mapping[str, float]
    login_rate: float
    focus: float  # probability a category or product view is in the visitor's interest


_FAMILY_DWELL = {"administrative": 30.0, "informational": 60.0, "product_related": 35.0}

VISITOR_TYPES: Final[tuple[VisitorType, ...]] = (
    VisitorType(
        name="glancer",
        weight=0.15,
        pages_median=1.4,
        pages_sigma=0.35,
        max_pages=3,
        page_mix={"product": 0.6, "category": 0.3, "search": 0.1},
        dwell={**_FAMILY_DWELL, "product_related": 8.0},
        cart_rate=0.01,
        purchase_rate=0.2,
        devices={"mobile": 0.7, "desktop": 0.2, "tablet": 0.1},
        channels={"social": 0.5, "search": 0.3, "direct": 0.2},
        login_rate=0.02,
        focus=0.6,
    ),
    VisitorType(
        name="browser",
        weight=0.35,
        pages_median=12.0,
        pages_sigma=0.5,
        max_pages=80,
        page_mix={"product": 0.55, "category": 0.3, "search": 0.15},
        dwell=_FAMILY_DWELL,
        cart_rate=0.012,
        purchase_rate=0.45,
        devices={"mobile": 0.5, "desktop": 0.4, "tablet": 0.1},
        channels={"search": 0.4, "social": 0.3, "direct": 0.2, "referral": 0.1},
        login_rate=0.1,
        focus=0.75,
    ),
    VisitorType(
        name="shopper",
        weight=0.32,
        pages_median=22.0,
        pages_sigma=0.5,
        max_pages=120,
        page_mix={"product": 0.5, "category": 0.2, "search": 0.1, "home": 0.1, "account": 0.1},
        dwell=_FAMILY_DWELL,
        cart_rate=0.04,
        purchase_rate=0.55,
        devices={"desktop": 0.6, "mobile": 0.3, "tablet": 0.1},
        channels={"email": 0.4, "direct": 0.4, "search": 0.2},
        login_rate=0.7,
        focus=0.85,
    ),
    VisitorType(
        name="researcher",
        weight=0.18,
        pages_median=32.0,
        pages_sigma=0.45,
        max_pages=200,
        page_mix={
            "product": 0.45,
            "category": 0.15,
            "search": 0.1,
            "tutorial": 0.12,
            "guide": 0.06,
            "home": 0.06,
            "account": 0.06,
        },
        dwell={**_FAMILY_DWELL, "informational": 90.0},
        cart_rate=0.025,
        purchase_rate=0.6,
        devices={"desktop": 0.75, "tablet": 0.15, "mobile": 0.1},
        channels={"search": 0.5, "referral": 0.2, "email": 0.2, "direct": 0.1},
        login_rate=0.4,
        focus=0.9,
    ),
)


@dataclass(frozen=True)
class SyntheticSession:
    """One generated visit: its latent type and interest (the truth) and its events."""

    session_id: str
    visitor_type: str
    interest: str
    events: tuple[Event, ...]

    @property
    def purchased(self) -> bool:
        return any(e.kind == "purchase" for e in self.events)

    def features(self) -> SessionFeatures:
        """The session folded exactly as the feature store folds it."""
        return fold_all(self.session_id, self.events)


def fold_all(session_id: str, events: Iterable[Event]) -> SessionFeatures:
    """Fold events in order into a fresh ``SessionFeatures``."""
    features = SessionFeatures(session_id=session_id)
    for event in events:
        features = fold(features, event)
    return features


K = TypeVar("K", bound=str)


def _pick(rng: random.Random, weights: Mapping[K, float]) -> K:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


@dataclass
class _Visit:
    """The mutable state of one visit while it is generated."""

    vt: VisitorType
    rng: random.Random
    session_id: str
    interest: str
    common: dict[str, Any]  # device, user_id: on every event
    first: dict[str, Any]  # referrer / UTM: on the first event only
    ts: dt.datetime
    events: list[Event] = field(default_factory=list)
    cart: list[float] = field(default_factory=list)

    def emit(self, kind: EventKind, at: dt.datetime, **fields: Any) -> None:
        extra = self.first if not self.events else {}
        self.events.append(
            Event(
                event_id=f"{self.session_id}:{len(self.events):04d}",
                session_id=self.session_id,
                kind=kind,
                ts=at,
                **self.common,
                **extra,
                **fields,
            )
        )

    def category(self) -> str:
        interest = self.interest
        if self.rng.random() >= self.vt.focus:
            interest = self.rng.choice([i for i in INTERESTS if i != self.interest])
        return self.rng.choice(CATEGORIES[interest])

    def page(self, page_type: PageType) -> None:
        """A page view; the visitor then stays on it for a lognormal dwell."""
        fields: dict[str, Any] = {"page_type": page_type}
        if page_type in ("category", "product"):
            fields["category"] = self.category()
        if page_type == "product":
            fields["product_id"] = f"{fields['category']}-{self.rng.randrange(40):02d}"
        self.emit("page_view", self.ts, **fields)
        median = self.vt.dwell[PAGE_FAMILY[page_type]]
        stay = median * math.exp(self.rng.gauss(0.0, _DWELL_SIGMA))
        if page_type == "product" and self.rng.random() < self.vt.cart_rate:
            interest = fields["category"].split("-", 1)[0]
            self.cart.append(PRICES[interest])
            self.emit("add_to_cart", self.ts + dt.timedelta(seconds=stay / 2), **fields)
        self.ts += dt.timedelta(seconds=stay)


def _page_count(vt: VisitorType, rng: random.Random) -> int:
    drawn = vt.pages_median * math.exp(rng.gauss(0.0, vt.pages_sigma))
    return max(1, min(vt.max_pages, round(drawn)))


def _visit(vt: VisitorType, rng: random.Random, session_id: str, days: int) -> SyntheticSession:
    interest = rng.choice(INTERESTS)
    user = f"u-{rng.randrange(10**6):06d}" if rng.random() < vt.login_rate else None
    visit = _Visit(
        vt=vt,
        rng=rng,
        session_id=session_id,
        interest=interest,
        common={"device": _pick(rng, vt.devices), "user_id": user},
        first=_CHANNEL_FIELDS[_pick(rng, vt.channels)],
        ts=_START + dt.timedelta(seconds=rng.uniform(0, days * 86400.0)),
    )
    for _ in range(_page_count(vt, rng)):
        visit.page(_pick(rng, vt.page_mix))
    if visit.cart and rng.random() < vt.purchase_rate:
        visit.page("cart")
        visit.page("checkout")
        visit.emit("purchase", visit.ts, value=round(sum(visit.cart), 2))
    return SyntheticSession(session_id, vt.name, interest, tuple(visit.events))


def generate_sessions(
    n: int,
    *,
    seed: int = 0,
    types: Sequence[VisitorType] = VISITOR_TYPES,
    days: int = 7,
) -> list[SyntheticSession]:
    """``n`` visits drawn from ``types`` in proportion to their weights, over ``days`` days.

    The same ``(n, seed, types, days)`` always gives the same sessions and event ids.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    rng = random.Random(seed)
    weights = [t.weight for t in types]
    return [
        _visit(rng.choices(types, weights=weights)[0], rng, f"syn-{seed}-{i:06d}", days)
        for i in range(n)
    ]


UCI_COLUMNS: Final = (
    "Administrative",
    "Administrative_Duration",
    "Informational",
    "Informational_Duration",
    "ProductRelated",
    "ProductRelated_Duration",
    "BounceRates",
    "ExitRates",
    "PageValues",
    "SpecialDay",
    "Month",
    "OperatingSystems",
    "Browser",
    "Region",
    "TrafficType",
    "VisitorType",
    "Weekend",
    "Revenue",
)


def uci_row(features: SessionFeatures) -> dict[str, Any]:
    """The session as a row shaped like the UCI Online Shoppers file (Sakar et al. 2019).

    Page counts and seconds per family are the real mapping the persona model relies on. The
    columns that have no live equivalent (bounce and exit rates, page values, OS, browser,
    region, traffic type) get shape-only placeholders; a logged-in visitor is written as a
    returning one. Used to train the persona model on synthetic data in tests.
    """
    fam = ("administrative", "informational", "product_related")
    counts = [features.pages.get(f, 0) for f in fam]
    secs = [round(features.seconds.get(f, 0.0), 3) for f in fam]
    started = features.started_at or _START
    single = features.page_views <= 1
    return {
        "Administrative": counts[0],
        "Administrative_Duration": secs[0],
        "Informational": counts[1],
        "Informational_Duration": secs[1],
        "ProductRelated": counts[2],
        "ProductRelated_Duration": secs[2],
        "BounceRates": 0.2 if single else 0.0,
        "ExitRates": 0.2 if single else round(1.0 / max(features.page_views, 1), 6),
        "PageValues": 0.0,
        "SpecialDay": 0.0,
        "Month": started.strftime("%b"),
        "OperatingSystems": 1,
        "Browser": 1,
        "Region": 1,
        "TrafficType": 1,
        "VisitorType": "Returning_Visitor" if features.logged_in else "New_Visitor",
        "Weekend": "TRUE" if started.weekday() >= 5 else "FALSE",
        "Revenue": "TRUE" if features.purchases > 0 else "FALSE",
    }
