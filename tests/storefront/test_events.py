"""Events and the pure session fold: the impression kind (it must name its decision) and the
cart the features keep (adds, removals, a purchase emptying it)."""

from __future__ import annotations

from functools import reduce

import pytest
from pydantic import ValidationError

from cxagent.storefront.events import MAX_CART, Event, SessionFeatures, fold
from tests.storefront.services import make_event


def folded(events: list[Event], session_id: str = "s-1") -> SessionFeatures:
    return reduce(fold, events, SessionFeatures(session_id))


def test_an_impression_must_name_its_decision() -> None:
    with pytest.raises(ValidationError) as caught:
        make_event("s-1", "impression")
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [("decision_id",)]
    assert errors[0]["type"] == "decision_required"
    shown = make_event("s-1", "impression", decision_id="d-1")
    assert shown.kind == "impression" and shown.decision_id == "d-1"
    # other kinds may go without one, and JSON from the stream is checked the same way
    assert make_event("s-1", "hero_click").decision_id is None
    with pytest.raises(ValidationError, match="decision_id"):
        Event.model_validate_json(
            '{"event_id": "ev-12345678", "session_id": "s", "kind": "impression",'
            ' "ts": "2025-03-01T12:00:00Z"}'
        )


def test_an_impression_is_an_event_of_the_session_and_changes_no_counter() -> None:
    before = folded([make_event("s-1", second=0)])
    after = fold(before, make_event("s-1", "impression", 3, decision_id="d-1"))
    assert after.events == before.events + 1 and after.last_at is not None
    assert (after.page_views, after.cart_adds, after.cart, after.widget_interactions) == (
        before.page_views,
        before.cart_adds,
        before.cart,
        before.widget_interactions,
    )


def test_the_cart_follows_adds_removals_and_purchases() -> None:
    def add(pid: str | None, second: int) -> Event:
        return make_event("s-1", "add_to_cart", second, product_id=pid)

    def remove(pid: str | None, second: int) -> Event:
        return make_event("s-1", "remove_from_cart", second, product_id=pid)

    events = [add("lq-a", 1), add("lq-b", 2), add("lq-a", 3)]  # the second add: no change
    f = folded(events)
    assert f.cart == ("lq-a", "lq-b") and f.cart_adds == 3  # cart_adds still counts every add
    f = fold(f, remove("lq-a", 4))
    assert f.cart == ("lq-b",) and f.cart_adds == 3
    f = fold(f, remove("lq-zz", 5))  # not in the cart: nothing to remove
    f = fold(f, remove(None, 6))
    assert f.cart == ("lq-b",)
    f = fold(f, add(None, 7))  # a cart add without a product: counted, nothing to keep
    assert f.cart == ("lq-b",) and f.cart_adds == 4
    f = fold(f, add("lq-c", 8))
    assert f.cart == ("lq-b", "lq-c")
    f = fold(f, make_event("s-1", "purchase", 9, value=30.0))
    assert f.cart == () and f.purchases == 1 and f.cart_adds == 5
    f = fold(f, add("lq-d", 10))  # a new cart after the order
    assert f.cart == ("lq-d",)
    assert f.events == 10


def test_the_cart_is_bounded() -> None:
    events = [make_event("s-1", "add_to_cart", i, product_id=f"p-{i}") for i in range(MAX_CART + 5)]
    f = folded(events)
    assert len(f.cart) == MAX_CART and f.cart[-1] == f"p-{MAX_CART + 4}" and f.cart[0] == "p-5"
