"""The product advisor: the shipped catalog, semantic matching, the rules, persona callouts,
speed, and catalog validation errors that name the file, the item index and the field."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cxagent.errors import CXAgentError
from cxagent.storefront.advisor import Advisor, Catalog, CatalogError, shipped_catalog
from cxagent.storefront.events import SessionFeatures
from cxagent.storefront.persona import INTERESTS, interest_word, shipped_model
from cxagent.storefront.sessions import generate_sessions

PERSONAS = ("glancer", "browser", "shopper", "researcher")


@pytest.fixture(scope="module")
def advisor() -> Advisor:
    return Advisor()


def viewed(*product_ids: str, session_id: str = "s-1") -> SessionFeatures:
    catalog = shipped_catalog()
    categories: dict[str, int] = {}
    for pid in product_ids:
        item = catalog.get(pid)
        assert item is not None, pid
        categories[item.category] = categories.get(item.category, 0) + 1
    return SessionFeatures(
        session_id=session_id,
        page_views=len(product_ids),
        products=tuple(product_ids),
        categories=categories,
    )


PHOTO = viewed("lq-lumen-m5", "lq-lens-35", "lq-prism-monthly")


# --- the shipped catalog ------------------------------------------------------------------------


def test_shipped_catalog_is_a_creative_brand_with_tutorials() -> None:
    catalog = shipped_catalog()
    assert 35 <= len(catalog) <= 50
    types = {item.type for item in catalog.items}
    assert types == {"product", "plan", "preset", "tutorial"}
    assert all(interest_word(c) in INTERESTS for c in catalog.categories)
    assert sum(item.type == "tutorial" for item in catalog.items) >= 6
    assert all(item.description and item.tags for item in catalog.items)


# --- recommendations -------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", [*PERSONAS, None, "browser_2"])
def test_at_least_three_products_with_callouts(advisor: Advisor, persona: str | None) -> None:
    for features in (None, SessionFeatures(session_id="empty"), PHOTO):
        recs = advisor.recommend(features, persona)
        assert len(recs.items) >= 3
        assert all(s.item.type != "tutorial" for s in recs.items)
        assert all(s.callout and s.reason for s in recs.items)
        assert recs.tutorial is not None and recs.tutorial.type == "tutorial"
        assert len({s.item.id for s in recs.items}) == len(recs.items)


def test_semantic_match_follows_what_the_session_viewed(advisor: Advisor) -> None:
    photo = advisor.recommend(PHOTO, "shopper", k=3)
    interests = [s.item.interest for s in photo.items]
    assert interests[0] == "photo" and interests.count("photo") >= 2, interests
    assert not {s.item.id for s in photo.items} & set(PHOTO.products)  # next best: unseen
    supplies = advisor.recommend(viewed("lq-paint-watercolour", "lq-paper-cold"), "shopper", k=3)
    assert [s.item.interest for s in supplies.items].count("supplies") >= 2
    assert supplies.tutorial is not None and supplies.tutorial.interest == "supplies"


def test_callouts_differ_by_persona(advisor: Advisor) -> None:
    callouts = {p: [s.callout for s in advisor.recommend(PHOTO, p).items] for p in PERSONAS}
    for a in PERSONAS:
        for b in PERSONAS:
            if a < b:
                assert callouts[a] != callouts[b], (a, b)
    assert any("tutorial" in c for c in callouts["researcher"])
    assert any("$" in c for c in callouts["glancer"])


def test_cart_items_and_the_current_product_are_never_recommended(advisor: Advisor) -> None:
    first = advisor.recommend(PHOTO, "shopper")
    cart = [s.item.id for s in first.items[:3]]
    again = advisor.recommend(PHOTO, "shopper", cart=cart, current="lq-glow-panel")
    ids = {s.item.id for s in again.items}
    assert not ids & {*cart, "lq-glow-panel"}
    assert len(again.items) >= 3
    assert all(s.item.id not in cart for s in again.addons)


def test_without_a_cart_argument_the_sessions_cart_is_used(advisor: Advisor) -> None:
    first = advisor.recommend(PHOTO, "shopper")
    cart = tuple(s.item.id for s in first.items[:2])
    carted = replace(PHOTO, cart=cart, cart_adds=2)
    recs = advisor.recommend(carted, "shopper")
    assert not {s.item.id for s in recs.items} & set(cart)
    assert recs.addons and not {s.item.id for s in recs.addons} & set(cart)
    assert (
        recs.to_dict()["addons"]
        == advisor.recommend(PHOTO, "shopper", cart=cart).to_dict()["addons"]
    )
    # a cart passed explicitly wins, also an empty one
    empty = advisor.recommend(carted, "shopper", cart=())
    assert empty.addons == () and [s.item.id for s in empty.items] == [
        s.item.id for s in first.items
    ]
    assert advisor.recommend(None, "shopper").addons == ()


def test_carousel_is_diverse_across_categories(advisor: Advisor) -> None:
    for persona in PERSONAS:
        recs = advisor.recommend(PHOTO, persona)
        top = [s.item.category for s in recs.items[:3]]
        assert len(set(top)) == 3, (persona, top)


def test_bargain_personas_get_a_price_fit(advisor: Advisor) -> None:
    entry = viewed("lq-slate-mini", "lq-brush-ink")  # a $79 tablet and $15 brushes

    def mean_price(persona: str) -> float:
        return statistics.mean(s.item.price for s in advisor.recommend(entry, persona).items)

    assert mean_price("glancer") < mean_price("shopper")
    assert mean_price("browser") < mean_price("researcher")


def test_advanced_filters_and_their_relaxation(advisor: Advisor) -> None:
    cheap = advisor.recommend(PHOTO, "shopper", max_price=30)
    assert all(s.item.price <= 30 for s in cheap.items)
    paper = advisor.recommend(PHOTO, "shopper", category="supplies-paper")
    assert {s.item.category for s in paper.items} == {"supplies-paper"}
    impossible = advisor.recommend(PHOTO, "shopper", category="photo-cameras", max_price=1)
    assert len(impossible.items) >= 3 and impossible.notes


def test_checkout_addons_pair_with_the_cart(advisor: Advisor) -> None:
    recs = advisor.recommend(None, "shopper", cart=["lq-paper-cold"])
    pairs = set(shipped_catalog().by_id["lq-paper-cold"].pairs_with)
    assert recs.addons and all(s.item.category in pairs for s in recs.addons)
    assert all("Driftpaper" in s.callout for s in recs.addons)


def test_persona_results_and_synthetic_sessions(advisor: Advisor) -> None:
    model = shipped_model()
    for session in generate_sessions(20, seed=3):
        features = session.features()
        recs = advisor.recommend(features, model.classify(features))
        assert len(recs.items) >= 3
        assert recs.to_dict()["items"][0]["callout"]
    fallback = advisor.recommend(None, model.fallback())
    assert len(fallback.items) >= 3


def test_a_recommendation_takes_under_two_milliseconds(advisor: Advisor) -> None:
    model = shipped_model()
    sessions = [s.features() for s in generate_sessions(50, seed=5)]
    personas = [model.classify(f) for f in sessions]
    times = []
    for _ in range(4):
        for features, persona in zip(sessions, personas, strict=True):
            started = time.perf_counter()
            advisor.recommend(features, persona, cart=("lq-lens-35",))
            times.append(time.perf_counter() - started)
    times.sort()
    assert times[len(times) // 2] < 0.002
    assert times[int(len(times) * 0.95)] < 0.002


# --- catalog validation ------------------------------------------------------------------------------


def good_items() -> list[dict[str, Any]]:
    return [
        {
            "id": f"p-{i}",
            "name": f"Product {i}",
            "type": "product",
            "category": "supplies-paper",
            "price": 10.0 + i,
            "tags": ["paper"],
            "description": "Paper.",
        }
        for i in range(5)
    ]


def write(tmp_path: Path, doc: Any, raw: str | None = None) -> Path:
    path = tmp_path / "catalog.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("index", "field", "value", "fragment"),
    [
        (3, "price", -1, "price"),
        (3, "price", "cheap", "price"),
        (2, "type", "gadget", "type"),
        (1, "category", "Paper Goods", "category"),
        (4, "tags", "paper", "tags"),
        (0, "level", "expert", "level"),
        (2, "pairs_with", ["supplies-ink"], "pairs_with"),
        (1, "colour", "red", "colour"),
        (3, "id", "has space", "id"),
        (2, "description", "", "description"),
    ],
)
def test_catalog_errors_name_file_index_and_field(
    tmp_path: Path, index: int, field: str, value: Any, fragment: str
) -> None:
    items = good_items()
    items[index][field] = value
    path = write(tmp_path, {"items": items})
    with pytest.raises(CatalogError) as info:
        Catalog.load(path)
    message = str(info.value)
    assert str(path) in message and f"items[{index}].{fragment}" in message, message
    assert info.value.index == index and info.value.field == fragment
    assert isinstance(info.value, CXAgentError)


def test_catalog_missing_field_and_duplicate_id(tmp_path: Path) -> None:
    items = good_items()
    del items[2]["price"]
    with pytest.raises(CatalogError, match=r"items\[2\]\.price: missing"):
        Catalog.load(write(tmp_path, {"items": items}))
    items = good_items()
    items[4]["id"] = "p-1"
    with pytest.raises(CatalogError, match=r"items\[4\]\.id: 'p-1' repeats items\[1\]"):
        Catalog.load(write(tmp_path, {"items": items}))


def test_catalog_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"catalog\.json: \(file\): not JSON: .* line 1"):
        Catalog.load(write(tmp_path, None, raw="{not json"))
    with pytest.raises(CatalogError, match=r"catalog\.json: items: expected a non-empty list"):
        Catalog.load(write(tmp_path, {"items": []}))
    with pytest.raises(CatalogError, match=r"items\[0\]: expected an object"):
        Catalog.load(write(tmp_path, {"items": ["p-1"]}))
    with pytest.raises(CatalogError, match=r"missing\.json: \(file\): cannot read"):
        Catalog.load(tmp_path / "missing.json")
    tutorials = good_items()
    for item in tutorials:
        item["type"] = "tutorial"
    with pytest.raises(CatalogError, match="no product"):
        Catalog.load(write(tmp_path, {"items": tutorials}))


def test_a_small_valid_catalog_works(tmp_path: Path) -> None:
    catalog = Catalog.load(write(tmp_path, {"brand": "Test", "items": good_items()}))
    recs = Advisor(catalog).recommend(None, "glancer")
    assert len(recs.items) >= 3 and recs.tutorial is None
