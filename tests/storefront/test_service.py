"""The storefront HTTP service in process (FastAPI's TestClient, lifespan on: the consumer
runs): every route, 4xx answers naming the field, the fallback when the feature store is
down, events flowing to the features and the logs, decisions logged with propensities,
impressions reported by the page (or counted when served), the bandit learning only from
new outcomes and once per funnel stage whatever the order, the control holdout, the cart in
the features driving recommendations, analytics, and one run against the real Redis of this
machine (required where CI is set)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cxagent.storefront import analytics
from cxagent.storefront.bandit import Bandit, BanditConfig, Decision, Segment
from cxagent.storefront.consumer import Consumer, Pipeline
from cxagent.storefront.events import Event, SessionFeatures
from cxagent.storefront.features import MemoryFeatureStore, StoreUnavailable
from cxagent.storefront.logs import ExperimentLog, outcomes
from cxagent.storefront.persona import shipped_model
from cxagent.storefront.service import (
    ARMS,
    DEFAULT_ARM,
    Storefront,
    StorefrontSettings,
    create_app,
    seed_demo,
)
from cxagent.storefront.stream import BufferedPublisher, MemoryStream
from tests.storefront.services import (
    REDIS_URL,
    T0,
    make_event,
    pg_schema,
    redis_namespace,
    wait_until,
)

DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1
NOW = dt.datetime.now(dt.UTC)


def settings(tmp_path: Path, **kw: Any) -> StorefrontSettings:
    values: dict[str, Any] = {"db_url": f"sqlite:///{tmp_path / 'sf.db'}", "holdout": 0.0}
    values.update(kw)
    return StorefrontSettings(**values)


@contextmanager
def client_for(tmp_path: Path, **kw: Any) -> Iterator[TestClient]:
    app = create_app(settings(tmp_path, **kw))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with client_for(tmp_path) as c:
        yield c


def sf_of(client: TestClient) -> Storefront:
    sf: Storefront = client.app.state.storefront  # type: ignore[attr-defined]
    return sf


def event(session_id: str, kind: str = "page_view", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"ev-{uuid.uuid4().hex[:16]}",
        "session_id": session_id,
        "kind": kind,
        "ts": (NOW + dt.timedelta(seconds=kw.pop("second", 0))).isoformat(),
    }
    body.update(kw)
    return body


PAGES = [
    ("home", None, None),
    ("category", None, "photo-cameras"),
    ("product", "lq-lumen-m5", "photo-cameras"),
    ("product", "lq-lens-35", "photo-lenses"),
    ("tutorial", "lq-learn-raw", "photo-editing"),
    ("product", "lq-prism-monthly", "photo-editing"),
]


def browse(client: TestClient, session_id: str, pages: int = len(PAGES)) -> None:
    for i, (page_type, product, category) in enumerate(PAGES[:pages]):
        extra: dict[str, Any] = {"page_type": page_type, "device": "mobile"}
        if i == 0:
            extra["referrer"] = "https://www.pinterest.com/pin/1"
        if product:
            extra["product_id"] = product
        if category:
            extra["category"] = category
        r = client.post("/v1/events", json=event(session_id, second=40 * i, **extra))
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "published"


def session_of(client: TestClient, session_id: str) -> dict[str, Any] | None:
    got: dict[str, Any] | None = client.post("/v1/persona", json={"session_id": session_id}).json()[
        "session"
    ]
    return got


def wait_pages(client: TestClient, session_id: str, pages: int) -> None:
    assert wait_until(lambda: (session_of(client, session_id) or {}).get("page_views") == pages)


def error_field(response: Any, status: int = 422) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["field"] and body["field"] in body["message"]
    field: str = body["field"]
    return field


# --- events and persona ------------------------------------------------------------------------


def test_events_flow_to_the_features_and_the_persona(client: TestClient) -> None:
    browse(client, "s-flow")
    wait_pages(client, "s-flow", len(PAGES))
    body = client.post("/v1/persona", json={"session_id": "s-flow"}).json()
    assert body["source"] == "store" and body["fallback"] is False
    assert body["persona"] in shipped_model().names
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["interest"] == "photo_first"
    assert body["segment"] == {
        "persona": body["persona"],
        "device": "mobile",
        "channel": "social",
        "key": f"{body['persona']}|mobile|social",
    }
    assert body["session"]["duration_s"] == 200.0


def test_a_new_session_gets_the_prior_of_short_sessions(client: TestClient) -> None:
    body = client.post("/v1/persona", json={"session_id": "never-seen", "device": "tablet"}).json()
    assert body["source"] == "new_session" and body["reason"] == "too_few_pages"
    assert body["segment"]["device"] == "tablet" and body["session"] is None


def test_a_redelivered_event_counts_once(client: TestClient) -> None:
    one = event("s-dup", page_type="home")
    for _ in range(3):
        assert client.post("/v1/events", json=one).status_code == 202
    client.post("/v1/events", json=event("s-dup", page_type="help", second=5))
    wait_pages(client, "s-dup", 2)
    assert sf_of(client).pipeline.consumer.stats.duplicates == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": None}, "kind"),
        ({"kind": "hover"}, "kind"),
        ({"event_id": "short"}, "event_id"),
        ({"colour": "red"}, "colour"),
        ({"ts": "yesterday"}, "ts"),
        ({"value": -3}, "value"),
        ({"device": "watch"}, "device"),
        ({"kind": "impression"}, "decision_id"),  # an impression names the decision shown
        ({"kind": "remove_from_cart", "product_id": "x" * 65}, "product_id"),
    ],
)
def test_bad_events_are_refused_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    body = event("s-bad", page_type="home")
    for key, value in change.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    assert error_field(client.post("/v1/events", json=body)) == field


def test_bad_bodies_and_parameters_name_the_field(client: TestClient) -> None:
    r = client.post(
        "/v1/events", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["error"]["type"] == "validation_error"
    assert error_field(client.post("/v1/persona", json={})) == "session_id"
    assert error_field(client.post("/v1/persona", json={"session_id": ""})) == "session_id"
    r = client.post("/v1/persona", json={"session_id": "s", "segment": "x"})
    assert error_field(r) == "segment"
    assert error_field(client.post("/v1/decide", json={"session_id": "s"})) == "slot"
    r = client.post("/v1/decide", json={"session_id": "s", "slot": "footer"})
    assert error_field(r) == "slot"
    assert error_field(client.get("/v1/recommendations")) == "session_id"
    assert error_field(client.get("/v1/recommendations?session_id=s&k=1")) == "k"
    assert error_field(client.get("/v1/recommendations?session_id=s&max_price=-1")) == "max_price"
    assert error_field(client.get("/v1/recommendations?session_id=s&category=boats")) == "category"
    assert error_field(client.get("/v1/analytics?days=0")) == "days"
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.get("/v1/persona")
    assert r.status_code == 405 and r.json()["error"]["type"] == "method_not_allowed"


# --- decisions, outcomes and the bandit ---------------------------------------------------------------


def test_decisions_are_logged_with_propensities_and_outcomes_teach_the_bandit(
    client: TestClient,
) -> None:
    sf = sf_of(client)
    browse(client, "s-dec")
    wait_pages(client, "s-dec", len(PAGES))
    hero = client.post("/v1/decide", json={"session_id": "s-dec", "slot": "hero"}).json()
    cta = client.post("/v1/decide", json={"session_id": "s-dec", "slot": "cta"}).json()
    for d, slot in ((hero, "hero"), (cta, "cta")):
        assert d["group"] == "bandit" and d["slot"] == slot and d["arm"] in ARMS[slot]
        assert 0 < d["propensity"] <= 1 and d["policy_version"].startswith("bandit-")
        assert d["burn_in"] is True  # nothing learned yet: uniform
        assert d["propensity"] == pytest.approx(1 / len(ARMS[slot]))
        assert d["content"] == ARMS[slot][d["arm"]]
        assert d["segment"].endswith("|mobile|social")
        assert d["report_impression"] is True
    rounds = sf.log.rounds("hero")
    row = rounds[rounds["decision_id"] == hero["decision_id"]].iloc[0]
    assert row["action"] == hero["arm"] and row["propensity"] == pytest.approx(hero["propensity"])
    assert row["reward"] == 0 and row["persona"] == hero["segment"].split("|")[0]
    # served is not shown: no impression until the page reports one
    assert not bool(row["shown"])
    assert impressions(sf, "hero") == 0 and impressions(sf, "cta") == 0

    for d in (hero, cta):
        shown = event("s-dec", "impression", decision_id=d["decision_id"], second=250)
        for _ in range(2):  # a retried impression is one impression
            assert client.post("/v1/events", json=shown).status_code == 202
    assert wait_until(lambda: impressions(sf, "hero") == 1 and impressions(sf, "cta") == 1)
    assert wait_until(lambda: shown_in_log(sf, hero["decision_id"]))

    click = event("s-dec", "hero_click", decision_id=hero["decision_id"], second=300)
    for _ in range(2):  # a retried click is one click
        assert client.post("/v1/events", json=click).status_code == 202
    buy = event("s-dec", "purchase", decision_id=cta["decision_id"], value=79.0, second=400)
    client.post("/v1/events", json=buy)

    def counted() -> bool:
        hero_counts = sf.bandit.counts("*|*|*", "hero")[hero["arm"]]
        cta_counts = sf.bandit.counts("*|*|*", "cta")[cta["arm"]]
        return hero_counts["clicks"] == 1 and cta_counts["purchases"] == 1

    assert wait_until(counted)
    assert impressions(sf, "hero") == 1 and impressions(sf, "cta") == 1
    clicks = sf.log.rounds("hero", reward="click")
    assert clicks.loc[clicks["decision_id"] == hero["decision_id"], "reward"].iloc[0] == 1
    revenue = sf.log.rounds("cta", reward="revenue")
    assert revenue.loc[revenue["decision_id"] == cta["decision_id"], "reward"].iloc[0] == 79.0
    time.sleep(0.1)
    assert sf.bandit.counts("*|*|*", "hero")[hero["arm"]]["clicks"] == 1  # not twice
    assert impressions(sf, "hero") == 1


def impressions(sf: Storefront, slot: str, what: str = "impressions") -> int:
    """The bandit's count of ``what`` in ``slot`` over the whole shop."""
    return sum(c[what] for c in sf.bandit.counts("*|*|*", slot).values())


def shown_in_log(sf: Storefront, decision_id: str) -> bool:
    found = sf.log.decision(decision_id)
    return found is not None and any(kind == "impression" for _, kind in found["outcomes"])


def test_a_click_before_its_impression_counts_each_stage_once(client: TestClient) -> None:
    sf = sf_of(client)
    d = client.post("/v1/decide", json={"session_id": "s-ooo", "slot": "cta"}).json()
    click = event("s-ooo", "cta_click", decision_id=d["decision_id"], second=5)
    client.post("/v1/events", json=click)
    # the click implies the impression: both stages counted once
    assert wait_until(lambda: impressions(sf, "cta", "clicks") == 1)
    assert impressions(sf, "cta") == 1
    shown = event("s-ooo", "impression", decision_id=d["decision_id"], second=1)
    for _ in range(2):
        client.post("/v1/events", json=shown)
    client.post("/v1/events", json=event("s-ooo", "page_view", page_type="home", second=9))
    assert wait_until(lambda: (session_of(client, "s-ooo") or {}).get("page_views") == 1)
    # the late impression is logged (once) but reaches no new funnel stage
    found = sf.log.decision(d["decision_id"])
    assert found is not None
    assert sorted(kind for _, kind in found["outcomes"]) == ["click", "impression"]
    assert impressions(sf, "cta") == 1 and impressions(sf, "cta", "clicks") == 1
    assert sf.pipeline.consumer.stats.duplicates == 1


def test_a_decision_never_shown_has_no_impression(client: TestClient) -> None:
    sf = sf_of(client)
    shown, unseen = (
        client.post("/v1/decide", json={"session_id": f"s-vis-{i}", "slot": "hero"}).json()
        for i in range(2)
    )
    client.post("/v1/events", json=event("s-vis-0", "impression", **_dec(shown)))
    assert wait_until(lambda: impressions(sf, "hero") == 1)
    rounds = sf.log.rounds("hero").set_index("decision_id")
    assert bool(rounds.loc[shown["decision_id"], "shown"])
    assert not bool(rounds.loc[unseen["decision_id"], "shown"])
    body = client.get("/v1/analytics").json()
    assert body["decisions"] == 2 and body["impressions"] == 1
    assert body["lift"]["click_through"]["bandit"]["sessions"] == 1  # the session shown
    arm = next(a for a in body["arms"] if a["arm"] == shown["arm"])
    assert arm["impressions"] >= 1 and arm["click_rate"] == 0.0
    if unseen["arm"] != shown["arm"]:
        other = next(a for a in body["arms"] if a["arm"] == unseen["arm"])
        assert other["impressions"] == 0 and other["click_rate"] is None


def test_served_impressions_for_clients_that_report_none(tmp_path: Path) -> None:
    with client_for(tmp_path, impressions="served") as client:
        sf = sf_of(client)
        d = client.post("/v1/decide", json={"session_id": "s-srv", "slot": "hero"}).json()
        assert d["report_impression"] is False
        assert impressions(sf, "hero") == 1  # at once, without an event
        assert shown_in_log(sf, d["decision_id"])
        # a page that reports one all the same changes no count
        client.post("/v1/events", json=event("s-srv", "impression", **_dec(d)))
        client.post("/v1/events", json=event("s-srv", "hero_click", **_dec(d), second=3))
        assert wait_until(lambda: impressions(sf, "hero", "clicks") == 1)
        assert impressions(sf, "hero") == 1
        assert client.get("/v1/analytics").json()["impressions"] == 1


def test_the_impression_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="impressions"):
        StorefrontSettings(impressions="seen")  # type: ignore[arg-type]
    monkeypatch.setenv("CXAGENT_STOREFRONT_IMPRESSIONS", "served")
    assert StorefrontSettings.from_env().impressions == "served"
    monkeypatch.setenv("CXAGENT_STOREFRONT_IMPRESSIONS", "always")
    with pytest.raises(ValueError, match="CXAGENT_STOREFRONT_IMPRESSIONS"):
        StorefrontSettings.from_env()
    monkeypatch.delenv("CXAGENT_STOREFRONT_IMPRESSIONS")
    assert StorefrontSettings.from_env().impressions == "reported"


def test_control_holdout_gets_the_default_without_the_bandit(tmp_path: Path) -> None:
    holdout = 0.5
    sid = next(f"s-ctl-{i}" for i in range(1000) if analytics.in_holdout(f"s-ctl-{i}", holdout))
    with client_for(tmp_path, holdout=holdout) as client:
        sf = sf_of(client)
        for slot in ("hero", "cta"):
            d = client.post("/v1/decide", json={"session_id": sid, "slot": slot}).json()
            assert d["group"] == "control" and d["arm"] == DEFAULT_ARM[slot]
            assert d["propensity"] == 1.0 and d["policy_version"] == "control"
        client.post("/v1/events", json=event(sid, "impression", decision_id=d["decision_id"]))
        client.post("/v1/events", json=event(sid, "cta_click", decision_id=d["decision_id"]))
        assert wait_until(lambda: len(sf.log.rounds("cta", reward="click").query("reward > 0")))
        assert wait_until(lambda: shown_in_log(sf, d["decision_id"]))
        assert all(c["impressions"] == 0 for c in sf.bandit.counts("*|*|*", "cta").values())


def test_the_bandit_is_rebuilt_from_the_logs_after_a_restart(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        decisions = [
            client.post("/v1/decide", json={"session_id": f"s-r{i}", "slot": "hero"}).json()
            for i in range(7)
        ]
        for d in decisions[:4]:  # shown; 4, 5 and 6 not (yet)
            client.post("/v1/events", json=event(d["session_id"], "impression", **_dec(d)))
        for d in decisions[:3]:
            client.post("/v1/events", json=event(d["session_id"], "hero_click", **_dec(d)))
        assert wait_until(
            lambda: impressions(sf, "hero") == 4 and impressions(sf, "hero", "clicks") == 3
        )
        before = sf.bandit.counts("*|*|*", "hero")
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        assert sf.restored == 4 and sf.bandit.counts("*|*|*", "hero") == before
        # outcomes of decisions made before the restart still count, once per stage: a click
        # of one shown then, the late impression of one never shown, and a click of one never
        # shown (it implies the impression), whose impression then arrives too
        shown_then, late, unseen = decisions[3], decisions[4], decisions[5]
        for d, kind in (
            (shown_then, "hero_click"),
            (late, "impression"),
            (unseen, "hero_click"),
            (unseen, "impression"),
            (late, "impression"),  # another impression event of one decision
        ):
            client.post("/v1/events", json=event(d["session_id"], kind, **_dec(d)))
        assert wait_until(
            lambda: impressions(sf, "hero") == 6 and impressions(sf, "hero", "clicks") == 5
        )
        time.sleep(0.2)
        assert impressions(sf, "hero") == 6 and impressions(sf, "hero", "clicks") == 5
        assert sf.pipeline.consumer.stats.outcomes == 5
    with client_for(tmp_path) as client:  # and once more: the same counts from the logs
        sf = sf_of(client)
        assert sf.restored == 6
        assert impressions(sf, "hero") == 6 and impressions(sf, "hero", "clicks") == 5


def _dec(d: dict[str, Any]) -> dict[str, str]:
    return {"decision_id": d["decision_id"]}


# --- channel priors ----------------------------------------------------------------------------


def test_confident_sessions_teach_their_channel_prior_once(client: TestClient) -> None:
    sf = sf_of(client)
    first = client.post("/v1/persona", json={"session_id": "s-ch0"}).json()
    assert first["channel_prior"] is None and first["segment"]["channel"] == "unknown"
    browse(client, "s-ch1")  # six pages from pinterest: channel "social"
    wait_pages(client, "s-ch1", len(PAGES))
    body = client.post("/v1/persona", json={"session_id": "s-ch1"}).json()
    assert (body["reason"], body["segment"]["channel"]) == ("ok", "social")
    for _ in range(3):  # re-classified on every request: one session still
        client.post("/v1/persona", json={"session_id": "s-ch1"})
        client.post("/v1/decide", json={"session_id": "s-ch1", "slot": "cta"})
    assert sf.channel_priors.counts() == {"social": {**dict.fromkeys(NAMES, 0), body["persona"]: 1}}
    browse(client, "s-ch2", 1)  # a new session of the same channel: the prior is used
    wait_pages(client, "s-ch2", 1)
    short = client.post("/v1/persona", json={"session_id": "s-ch2"}).json()
    assert short["reason"] == "too_few_pages"
    assert short["channel_prior"] == {"channel": "social", "sessions": 1}
    # one channel is all the traffic (one session): about the population's prior
    plain = shipped_model().priors_by_pages[1]
    assert list(short["probabilities"].values()) == pytest.approx(plain, abs=0.02)
    assert client.get("/v1/health").json()["channel_priors"] == {"sessions": 1, "restored": 0}


NAMES = shipped_model().names


def _log(sf: Storefront, i: int, session_id: str, channel: str, persona: str) -> None:
    sf.log.log_decision(
        decision_id=f"d-ch-{i}",
        ts=NOW - dt.timedelta(minutes=100 - i),
        session_id=session_id,
        persona=persona,
        device="desktop",
        channel=channel,
        slot="cta",
        arm="cta-shop",
        propensity=0.5,
        policy_version="bandit-1",
    )


def test_channel_priors_are_rebuilt_from_the_logs_after_a_restart(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        rows = [("e1", "email", "shopper"), ("e1", "email", "researcher")]  # e1 went on
        rows += [(f"e{i}", "email", "researcher") for i in range(2, 6)]
        rows += [(f"q{i}", "search", p) for i, p in enumerate(["browser", "shopper"] * 10)]
        rows += [("u1", "unknown", "browser")]  # no features when decided: no channel
        for i, row in enumerate(rows):
            _log(sf, i, *row)
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        zero = dict.fromkeys(NAMES, 0)
        assert sf.channel_priors.counts() == {
            "email": {**zero, "researcher": 5},
            "search": {**zero, "browser": 10, "shopper": 10},
        }
        assert sf.channel_sessions_restored == 25
        assert client.get("/v1/health").json()["channel_priors"]["restored"] == 25
        client.post(
            "/v1/events",
            json=event("s-mail", page_type="home", utm_source="email", device="desktop"),
        )
        wait_pages(client, "s-mail", 1)
        body = client.post("/v1/persona", json={"session_id": "s-mail"}).json()
        assert body["channel_prior"] == {"channel": "email", "sessions": 5}
        plain = dict(zip(NAMES, shipped_model().priors_by_pages[1], strict=True))
        assert body["probabilities"]["researcher"] > plain["researcher"] + 0.05  # 5 of 55
        assert body["persona"] == body["segment"]["persona"]


def test_the_fallback_uses_no_channel_prior(tmp_path: Path) -> None:
    with client_for(tmp_path, redis_url=DOWN) as client:
        sf_of(client).channel_priors.observe("old", "unknown", "researcher")
        for _ in range(2):  # the first trips the breaker
            body = client.post("/v1/persona", json={"session_id": "s-down"}).json()
        assert body["source"] == "fallback" and body["channel_prior"] is None
        want = shipped_model().fallback().probabilities
        assert body["probabilities"] == pytest.approx(want, abs=1e-6)


# --- recommendations ---------------------------------------------------------------------------------


def test_recommendations_follow_the_session_and_skip_the_cart(client: TestClient) -> None:
    browse(client, "s-rec")
    wait_pages(client, "s-rec", len(PAGES))
    body = client.get("/v1/recommendations?session_id=s-rec").json()
    assert len(body["items"]) >= 3 and body["persona_source"] == "store"
    assert all(i["callout"] and i["url"].startswith("/storefront/") for i in body["items"])
    assert body["items"][0]["category"].startswith("photo-")
    assert body["tutorial"]["type"] == "tutorial" and body["addons"] == []
    cart = ",".join(i["id"] for i in body["items"][:2])
    again = client.get(f"/v1/recommendations?session_id=s-rec&cart={cart}&k=4").json()
    assert len(again["items"]) == 4
    assert not {i["id"] for i in again["items"]} & set(cart.split(","))
    assert again["addons"] and not {a["id"] for a in again["addons"]} & set(cart.split(","))
    cheap = client.get("/v1/recommendations?session_id=s-rec&max_price=20").json()
    assert all(i["price"] <= 20 for i in cheap["items"])


def test_the_sessions_cart_drives_recommendations_without_a_cart_parameter(
    client: TestClient,
) -> None:
    browse(client, "s-cart")
    wait_pages(client, "s-cart", len(PAGES))
    plain = client.get("/v1/recommendations?session_id=s-cart").json()
    assert plain["cart"] == [] and plain["cart_source"] == "session" and plain["addons"] == []
    picks = [i["id"] for i in plain["items"][:3]]
    for n, pid in enumerate(picks):
        client.post(
            "/v1/events", json=event("s-cart", "add_to_cart", product_id=pid, second=300 + n)
        )
    remove = event("s-cart", "remove_from_cart", product_id=picks[0], second=310)
    client.post("/v1/events", json=remove)
    assert wait_until(lambda: (session_of(client, "s-cart") or {}).get("cart") == picks[1:])
    assert (session_of(client, "s-cart") or {})["cart_adds"] == 3

    body = client.get("/v1/recommendations?session_id=s-cart&k=6").json()
    assert body["cart"] == picks[1:] and body["cart_source"] == "session"
    ids = {i["id"] for i in body["items"]}
    assert not ids & set(picks[1:])  # "not in the cart", server-side
    assert body["addons"] and not {a["id"] for a in body["addons"]} & set(picks[1:])
    # the same as a page passing that cart itself
    passed = client.get(f"/v1/recommendations?session_id=s-cart&k=6&cart={','.join(picks[1:])}")
    assert passed.json()["addons"] == body["addons"] and passed.json()["items"] == body["items"]
    # a cart parameter, even empty, wins over the session's (the page's is fresher)
    mine = client.get(f"/v1/recommendations?session_id=s-cart&cart={picks[0]}").json()
    assert mine["cart"] == [picks[0]] and mine["cart_source"] == "request"
    assert picks[0] not in {i["id"] for i in mine["items"]}
    empty = client.get("/v1/recommendations?session_id=s-cart&cart=").json()
    assert empty["cart"] == [] and empty["cart_source"] == "request" and empty["addons"] == []

    client.post("/v1/events", json=event("s-cart", "purchase", value=99.0, second=400))
    assert wait_until(lambda: (session_of(client, "s-cart") or {}).get("purchases") == 1)
    assert (session_of(client, "s-cart") or {})["cart"] == []
    after = client.get("/v1/recommendations?session_id=s-cart").json()
    assert after["cart"] == [] and after["addons"] == []


# --- the store down -------------------------------------------------------------------------------------


def test_the_feature_store_down_falls_back_fast_and_says_so(tmp_path: Path) -> None:
    with client_for(tmp_path, redis_url=DOWN) as client:
        client.post("/v1/persona", json={"session_id": "s-down"})  # trips the breaker
        breaker = sf_of(client).pipeline.features.breaker
        assert breaker.open and breaker.failures == 1
        body = client.post("/v1/persona", json={"session_id": "s-down"}).json()
        assert breaker.failures == 1  # answered without touching the socket again
        fallback = shipped_model().fallback()
        assert body["fallback"] is True and body["source"] == "fallback"
        assert body["reason"] == "fallback" and body["persona"] == fallback.persona
        assert body["confident"] is False
        r = client.post("/v1/events", json=event("s-down", page_type="home"))
        assert r.status_code == 202 and r.json()["status"] == "buffered"
        assert r.json()["buffer"]["waiting"] >= 1
        d = client.post("/v1/decide", json={"session_id": "s-down", "slot": "cta"}).json()
        assert d["persona_source"] == "fallback" and d["arm"] in ARMS["cta"]
        recs = client.get("/v1/recommendations?session_id=s-down").json()
        assert len(recs["items"]) >= 3 and recs["persona_source"] == "fallback"
        health = client.get("/v1/health").json()
        assert health["status"] == "degraded"
        assert health["store"] == {"kind": "redis", "ok": False}
        assert health["stream"]["ok"] is False and health["buffer"]["buffered"] >= 1


class _DownStream(MemoryStream):
    def publish(self, event: Event) -> str:
        raise StoreUnavailable("stream down (test)")


def test_a_dropped_event_is_a_503(tmp_path: Path) -> None:
    down = _DownStream()
    features = MemoryFeatureStore()
    pipeline = Pipeline(
        stream=down,
        publisher=BufferedPublisher(down, capacity=1, drop="newest"),
        features=features,
        consumer=Consumer(MemoryStream(), features),
    )
    app = create_app(settings(tmp_path), pipeline=pipeline)
    with TestClient(app) as client:
        first = client.post("/v1/events", json=event("s-503", page_type="home"))
        assert first.status_code == 202 and first.json()["status"] == "buffered"
        second = client.post("/v1/events", json=event("s-503", page_type="help"))
        assert second.status_code == 503
        assert second.json()["error"]["status"] == "dropped"
        assert second.headers["retry-after"] == "1"


# --- health, analytics, pages -------------------------------------------------------------------------


def test_health_reports_stream_store_and_buffer(client: TestClient) -> None:
    browse(client, "s-health", 2)
    body = client.get("/v1/health").json()
    assert body["status"] == "ok"
    assert body["stream"]["kind"] == "memory" and body["stream"]["ok"] is True
    assert body["store"] == {"kind": "memory", "ok": True}
    assert body["buffer"]["published"] == 2 and body["buffer"]["dropped"] == 0
    assert "applied" in body["consumer"] and body["logs"]["dialect"] == "sqlite"
    assert body["impressions"] == "reported"


def test_analytics_lift_velocity_engagement_and_latency(tmp_path: Path) -> None:
    with client_for(tmp_path, holdout=0.3) as client:
        sf = sf_of(client)
        seeded = seed_demo(sf, 120, seed=11)
        assert seeded["sessions"] == 120 and seeded["decisions"] == 240
        # most decisions are shown, a few never are: the page reports the impressions
        assert 200 < seeded["impressions"] < 240
        for _ in range(5):
            client.post("/v1/persona", json={"session_id": "syn-11-000001"})
        body = client.get("/v1/analytics").json()
        frame = analytics.decision_frame(sf.log)
        shown_sessions = frame.loc[frame["shown"] > 0, "session_id"].nunique()
        assert int(frame["shown"].sum()) == seeded["impressions"]
        # the bandit counted exactly the impressions reported (control's are not its own)
        bandit_shown = frame[(frame["group"] == "bandit") & (frame["shown"] > 0)]
        counted = impressions(sf, "hero") + impressions(sf, "cta")
        assert counted == len(bandit_shown)
    assert body["sessions"] == 120 and body["decisions"] == 240
    assert body["impressions"] == seeded["impressions"]
    conv = body["lift"]["conversion"]
    assert conv["bandit"]["sessions"] + conv["control"]["sessions"] == shown_sessions
    assert conv["control"]["sessions"] > 10
    assert conv["absolute_low"] <= conv["absolute"] <= conv["absolute_high"]
    ctr = body["lift"]["click_through"]
    assert ctr["bandit"]["conversions"] + ctr["control"]["conversions"] > 0
    assert len(body["velocity"]) == 8
    assert sum(w["segment_tests"] for w in body["velocity"]) > 0
    assert sum(w["arms"] for w in body["velocity"]) == len(ARMS["hero"]) + len(ARMS["cta"])
    assert sum(w["decisions"] for w in body["velocity"]) == 240
    engaged = body["engagement"]
    assert engaged["all"]["sessions"] == 120
    assert engaged["bandit"]["sessions"] + engaged["control"]["sessions"] == 120
    assert engaged["control"]["sessions"] > 10
    assert engaged["all"]["mean_duration_s"] > 0
    # read from the log database, all written before the report (none pending)
    assert engaged["source"] == "storefront_sessions"
    assert engaged["sessions"] == 120 and engaged["pending"] == 0
    for group in ("bandit", "control", "all"):
        assert engaged[group]["pages_per_session"] > 1
        assert engaged[group]["median_duration_s"] > 0
        assert engaged[group]["purchases_per_session"] is not None
    assert engaged["all"]["revenue_per_session"] > 0  # the synthetic buyers
    assert body["latency"]["POST /v1/persona"]["requests"] == 5
    assert body["latency"]["POST /v1/persona"]["p99_ms"] > 0
    assert {a["group"] for a in body["arms"]} == {"bandit", "control"}
    assert sum(a["decisions"] for a in body["arms"]) == 240
    assert sum(a["impressions"] for a in body["arms"]) == seeded["impressions"]


def test_lift_matches_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80
    out = analytics.lift(56, 70, 48, 80)
    assert out["absolute"] == pytest.approx(0.2)
    assert out["absolute_low"] == pytest.approx(0.0524, abs=5e-4)
    assert out["absolute_high"] == pytest.approx(0.3339, abs=5e-4)
    assert out["relative_low"] < out["relative"] < out["relative_high"]
    empty = analytics.lift(0, 0, 3, 10)
    assert empty["absolute"] is None and empty["control"]["rate"] == 0.3


def test_latency_reservoir_is_bounded() -> None:
    recorder = analytics.LatencyRecorder(size=100)
    for i in range(10_000):
        recorder.record("GET /x", (i % 100) / 1000)
    s = recorder.summary()["GET /x"]
    assert s["requests"] == 10_000 and s["sampled"] == 100
    assert 30 < s["p50_ms"] < 70 and s["max_ms"] == 99.0


def test_pages_render(client: TestClient) -> None:
    for path, marker in [
        ("/storefront", 'data-slot="hero"'),
        ("/storefront/c/photo-cameras", "Lumen M5 mirrorless camera"),
        ("/storefront/p/lq-slate-13", "Quill Slate 13 pen display"),
        ("/storefront/learn/lq-learn-tablet", "What you need"),
        ("/storefront/cart", "Need help?"),
        ("/storefront/checkout", "Need help?"),
        ("/analytics", "Conversion lift against control"),
    ]:
        r = client.get(path)
        assert r.status_code == 200, path
        assert marker in r.text, path
        assert "Creative Concierge" in r.text or path == "/analytics"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "http://" not in r.text and "https://" not in r.text  # no CDN, no fonts
    for path in ("/storefront/p/nope", "/storefront/learn/lq-slate-13", "/storefront/c/boats"):
        r = client.get(path)
        assert r.status_code == 404 and "Not found" in r.text, path
    assert client.get("/", follow_redirects=False).headers["location"] == "/storefront"
    js = client.get("/static/storefront.js")
    assert js.status_code == 200 and len(js.content) < 20_000


# --- the real Redis ---------------------------------------------------------------------------------------


def test_with_the_real_redis(tmp_path: Path) -> None:
    with redis_namespace() as ns:
        with client_for(tmp_path, redis_url=REDIS_URL, prefix=ns.prefix) as client:
            sf = sf_of(client)
            browse(client, "s-redis")
            wait_pages(client, "s-redis", len(PAGES))
            assert ns.client.exists(f"{ns.prefix}session:{{s-redis}}")
            body = client.post("/v1/persona", json={"session_id": "s-redis"}).json()
            assert body["source"] == "store" and body["segment"]["channel"] == "social"
            d = client.post("/v1/decide", json={"session_id": "s-redis", "slot": "hero"}).json()
            client.post("/v1/events", json=event("s-redis", "hero_click", **_dec(d)))
            assert wait_until(lambda: sf.bandit.counts("*|*|*", "hero")[d["arm"]]["clicks"] == 1)
            client.post("/v1/events", json=event("s-redis", "impression", **_dec(d)))  # late
            pid = "lq-slate-13"
            client.post("/v1/events", json=event("s-redis", "add_to_cart", product_id=pid))
            assert wait_until(lambda: (session_of(client, "s-redis") or {}).get("cart") == [pid])
            assert wait_until(lambda: shown_in_log(sf, d["decision_id"]))
            assert sf.bandit.counts("*|*|*", "hero")[d["arm"]]["impressions"] == 1
            recs = client.get("/v1/recommendations?session_id=s-redis").json()
            assert recs["cart"] == [pid] and recs["addons"]
            health = client.get("/v1/health").json()
            assert health["status"] == "ok" and health["stream"]["kind"] == "redis"
        log = ExperimentLog(f"sqlite:///{tmp_path / 'sf.db'}")
        clicks = log.rounds("hero", reward="click")
        assert clicks.loc[clicks["decision_id"] == d["decision_id"], "reward"].iloc[0] == 1
        log.close()


# --- engagement in the log database --------------------------------------------------------------


def engaging_session(client: TestClient, session_id: str, pages: int = len(PAGES)) -> None:
    """``pages`` page views (40 s apart) and then a recommendation click and two concierge
    interactions, folded by the consumer."""
    browse(client, session_id, pages)
    later = 40 * pages
    for kind, second in (
        ("rec_click", later),
        ("widget_open", later + 5),
        ("widget_option", later + 9),
    ):
        r = client.post("/v1/events", json=event(session_id, kind, second=second))
        assert r.status_code == 202
    assert wait_until(
        lambda: (session_of(client, session_id) or {}).get("widget_interactions") == 2
    )


def waiting_pages(sf: Storefront, session_id: str) -> int | None:
    """The page views of the session's summary waiting to be written, None if none."""
    waiting = sf.engagement.dirty().get(session_id)
    return waiting.page_views if waiting is not None else None


def test_engagement_survives_a_restart(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        engaging_session(client, "s-eng")
        persona = client.post("/v1/persona", json={"session_id": "s-eng"}).json()
        assert persona["reason"] == "ok"  # confident: its persona goes with the summary
        before = client.get("/v1/analytics").json()["engagement"]
    # stop() wrote the summaries; a new service on the same database has folded nothing
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        assert sf.pipeline.consumer.stats.applied == 0 and len(sf.engagement) == 0
        body = client.get("/v1/analytics").json()
        engaged = body["engagement"]
        assert {k: v for k, v in engaged.items() if k != "since"} == {
            k: v for k, v in before.items() if k != "since"
        }
        assert engaged["source"] == "storefront_sessions" and engaged["sessions"] == 1
        bandit = engaged["bandit"]
        assert bandit["sessions"] == 1 and engaged["control"]["sessions"] == 0
        assert bandit["pages_per_session"] == len(PAGES)
        assert bandit["rec_clicks_per_session"] == 1 and bandit["sessions_with_rec_click"] == 1
        assert bandit["widget_interactions_per_session"] == 2
        assert bandit["mean_duration_s"] == bandit["median_duration_s"] == 40 * len(PAGES) + 9
        page = client.get("/analytics").text
        assert 'data-engagement-source="storefront_sessions"' in page
        assert "1 session whose last event falls in the last 28 days" in page
        assert client.get("/v1/analytics?days=1").json()["engagement"]["sessions"] == 1
    row = ExperimentLog(f"sqlite:///{tmp_path / 'sf.db'}")
    stored = row.session("s-eng")
    row.close()
    assert stored is not None and stored["experiment_group"] == "bandit"
    assert (stored["device"], stored["channel"]) == ("mobile", "social")
    assert stored["persona"] == persona["persona"]


def test_a_flush_failing_while_the_database_is_down_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the background flusher every 50 ms: it meets the outage and the recovery by itself
    with client_for(tmp_path, engagement_flush_s=0.05) as client:
        sf = sf_of(client)
        browse(client, "s-out", 2)
        wait_pages(client, "s-out", 2)
        assert wait_until(lambda: (sf.log.session("s-out") or {}).get("page_views") == 2)
        working = sf.log.engine
        sf.log.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'sf.db'}")
        try:
            # the consumer goes on folding; the newer summary waits with the session
            engaging_session(client, "s-out", 4)  # 4 more pages: 6 in all
            assert wait_until(lambda: sf.engagement.status()["failures"] >= 2)
            assert wait_until(lambda: waiting_pages(sf, "s-out") == 6)
            assert sf.flush_engagement() is False  # never raises
            health = client.get("/v1/health").json()["engagement"]
            assert health["failures"] >= 3 and health["flush_s"] == 0.05
            assert "OperationalError" in health["last_error"]
            assert wait_until(lambda: client.get("/v1/health").json()["engagement"]["pending"] == 1)
            assert sf.pipeline.consumer.stats.failed == 0  # the consumer never noticed
            assert (session_of(client, "s-out") or {}).get("page_views") == 6
        finally:
            sf.log.engine.dispose()
            sf.log.engine = working
        assert wait_until(lambda: sf.engagement.pending == 0)
        stored = sf.log.session("s-out")
        assert stored is not None
        assert (stored["page_views"], stored["rec_clicks"], stored["widget_interactions"]) == (
            6,
            1,
            2,
        )
    assert any("not written (kept for the next flush)" in r.getMessage() for r in caplog.records)
    with client_for(tmp_path) as client:  # and a new process reads it back
        engaged = client.get("/v1/analytics").json()["engagement"]
        assert engaged["sessions"] == 1 and engaged["all"]["pages_per_session"] == 6


def test_engagement_covers_every_process_writing_to_the_database(tmp_path: Path) -> None:
    holdout = 0.5
    ids = [f"s-proc-{i}" for i in range(200)]
    control = next(i for i in ids if analytics.in_holdout(i, holdout))
    bandit = next(i for i in ids if not analytics.in_holdout(i, holdout))
    # two service processes (each its own in-process stream and store) share one database
    with client_for(tmp_path, holdout=holdout) as one, client_for(tmp_path, holdout=holdout) as two:
        engaging_session(one, control, 3)
        engaging_session(two, bandit, 6)
        for _ in range(2):  # a confident classification names the persona (written once)
            persona = two.post("/v1/persona", json={"session_id": bandit}).json()
        assert persona["reason"] == "ok"
        sf_of(two).flush_engagement()  # the other process's flush, as its timer would
        engaged = one.get("/v1/analytics").json()["engagement"]
    assert engaged["sessions"] == 2
    assert engaged["control"]["sessions"] == 1 and engaged["bandit"]["sessions"] == 1
    assert engaged["control"]["pages_per_session"] == 3
    assert engaged["bandit"]["pages_per_session"] == 6
    log = ExperimentLog(f"sqlite:///{tmp_path / 'sf.db'}")
    assert (log.session(bandit) or {})["persona"] == persona["persona"]
    assert (log.session(control) or {})["experiment_group"] == "control"
    log.close()


@pytest.mark.parametrize(
    ("field", "bad_values", "good", "bad"),
    [
        ("engagement_flush_s", (0.0, -1.0, float("nan")), "2.5", "soon"),
        ("bandit_sync_s", (0.0, -1.0, float("nan"), float("inf")), "0.5", "often"),
    ],
)
def test_the_background_intervals_are_settings(
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    bad_values: tuple[float, ...],
    good: str,
    bad: str,
) -> None:
    assert getattr(StorefrontSettings(), field) == 5.0
    for value in bad_values:
        with pytest.raises(ValueError, match=field):
            StorefrontSettings(**{field: value})
    env = f"CXAGENT_STOREFRONT_{field.upper()}"
    monkeypatch.setenv(env, good)
    assert getattr(StorefrontSettings.from_env(), field) == float(good)
    monkeypatch.setenv(env, bad)
    with pytest.raises(ValueError, match=env):
        StorefrontSettings.from_env()


def browse_as(client: TestClient, session_id: str, user_id: str | None, pages: int) -> None:
    for i, (page_type, product, category) in enumerate(PAGES[:pages]):
        extra: dict[str, Any] = {"page_type": page_type, "device": "desktop"}
        if i == 0 and user_id is not None:
            extra["user_id"] = user_id  # logged in: the first event names the user
        if product:
            extra["product_id"] = product
        if category:
            extra["category"] = category
        r = client.post("/v1/events", json=event(session_id, second=40 * i, **extra))
        assert r.status_code == 202, r.text
    wait_pages(client, session_id, pages)


def test_a_logged_in_visitors_profile_is_written_once_and_informs_their_next_session(
    client: TestClient,
) -> None:
    sf = sf_of(client)
    writes: list[tuple[str, str, str]] = []
    record = sf.pipeline.profiles.record

    def counting(user_id: str, session_id: str, persona: str, at: float) -> None:
        writes.append((user_id, session_id, persona))
        record(user_id, session_id, persona, at)

    sf.pipeline.profiles.record = counting  # type: ignore[method-assign]
    browse_as(client, "s-pf1", "u-42", len(PAGES))
    first = client.post("/v1/persona", json={"session_id": "s-pf1"}).json()
    assert first["reason"] == "ok" and first["profile"] is None  # no other session yet
    for _ in range(3):  # re-classified on every request: still one write
        client.post("/v1/persona", json={"session_id": "s-pf1"})
        client.post("/v1/decide", json={"session_id": "s-pf1", "slot": "hero"})
    assert writes == [("u-42", "s-pf1", first["persona"])]
    assert sf.pipeline.profiles.history("u-42") == {first["persona"]: 1.0}
    # the same user's next session, one page in: the profile is its prior
    browse_as(client, "s-pf2", "u-42", 1)
    known = client.post("/v1/persona", json={"session_id": "s-pf2"}).json()
    assert known["profile"] == {"used": True}  # not the history itself: the page reads this
    browse_as(client, "s-pf3", None, 1)  # an anonymous visitor doing the same
    anonymous = client.post("/v1/persona", json={"session_id": "s-pf3"}).json()
    assert anonymous["profile"] is None
    assert known["reason"] == anonymous["reason"] == "too_few_pages"
    p = first["persona"]
    assert known["probabilities"][p] > anonymous["probabilities"][p] + 0.3


# --- several workers: the bandit learns every worker's outcomes through the log ----------------


@contextmanager
def worker(db_url: str, **kw: Any) -> Iterator[Storefront]:
    """One service process's engine (not started: the test plays its consumer and its
    sync thread) on the shared log database."""
    sf = Storefront(StorefrontSettings(db_url=db_url, **{"holdout": 0.0, **kw}))
    try:
        yield sf
    finally:
        sf.log.close()


@contextmanager
def shared_db(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with pg_schema() as url:  # fails, not skips, where CI is set and PostgreSQL is missing
        yield url


CLICK = {"hero": "hero_click", "cta": "cta_click"}


def deliver(sf: Storefront, d: dict[str, Any], kind: str, event_id: str | None = None) -> bool:
    """``sf``'s consumer handing one outcome event of decision ``d`` to ``on_outcome``
    (``kind``: impression, click, add_to_cart or purchase)."""
    kind = CLICK[d["slot"]] if kind == "click" else kind
    body: dict[str, Any] = {"decision_id": d["decision_id"]}
    if event_id is not None:
        body["event_id"] = event_id
    if kind == "purchase":
        body["value"] = 30.0
    e = make_event(d["session_id"], kind, **body)
    return bool(sf.on_outcome(e, SessionFeatures(session_id=d["session_id"])))


def all_counts(sf: Storefront | Bandit) -> dict[tuple[str, str], list[list[int]]]:
    """Every count of the bandit, per level and slot (tables without a count left out)."""
    bandit = sf.bandit if isinstance(sf, Storefront) else sf
    return {
        (t["level"], t["slot"]): t["counts"]
        for t in bandit.snapshot()["counts"]
        if any(any(row) for row in t["counts"])
    }


def single_worker(deepest: dict[str, tuple[dict[str, Any], str]]) -> Bandit:
    """What one worker that saw every event counts: each bandit decision once, at each
    funnel stage up to the deepest outcome it had."""
    ref = Bandit({slot: list(arms) for slot, arms in ARMS.items()})
    for d, outcome in deepest.values():
        decision = Decision(
            decision_id=d["decision_id"],
            slot=d["slot"],
            arm=d["arm"],
            propensity=d["propensity"],
            segment=Segment.from_key(d["segment"]),
            policy_version=0,
            burn_in=d["burn_in"],
        )
        assert ref.record(decision, outcome) == "counted"  # type: ignore[arg-type]
    return ref


HOLDOUT = 0.5
SESSIONS = [f"s-w{i}" for i in range(100)]
BANDIT_SESSIONS = [s for s in SESSIONS if not analytics.in_holdout(s, HOLDOUT)]
CONTROL_SESSION = next(s for s in SESSIONS if analytics.in_holdout(s, HOLDOUT))


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_two_workers_count_every_outcome_once_through_the_shared_log(
    db: str, tmp_path: Path
) -> None:
    s = BANDIT_SESSIONS
    with shared_db(db, tmp_path) as url, worker(url, holdout=HOLDOUT) as a:
        with worker(url, holdout=HOLDOUT) as b:
            a_hero = a.decide(s[0], "hero", "mobile")
            a_cta = a.decide(s[0], "cta", "mobile")
            a_unseen = a.decide(s[1], "hero", "desktop")  # never shown: never counted
            b_hero = b.decide(s[2], "hero", "desktop")
            b_cta = b.decide(s[3], "cta", "tablet")
            ctl_hero = a.decide(CONTROL_SESSION, "hero", "mobile")
            ctl_cta = b.decide(CONTROL_SESSION, "cta", "mobile")
            assert a_unseen["group"] == "bandit" and ctl_cta["group"] == "control"
            # the consumer group hands each event to one worker's consumer
            assert deliver(a, a_hero, "impression")
            assert deliver(b, a_hero, "click")  # A's decision, its impression not synced
            assert deliver(b, a_cta, "click")  # A's decision, its first outcome: counted
            assert deliver(a, a_cta, "impression")  # late: adds nothing anywhere
            assert deliver(a, a_cta, "purchase")
            assert deliver(b, b_hero, "impression")
            assert deliver(a, b_hero, "click")  # B's decision, its impression not synced
            assert deliver(b, b_cta, "impression", event_id="ev-b-cta")
            assert not deliver(b, b_cta, "impression", event_id="ev-b-cta")  # redelivered
            assert not deliver(a, b_cta, "impression", event_id="ev-b-cta")  # claimed by A
            assert deliver(a, ctl_hero, "impression")
            assert deliver(b, ctl_hero, "click")
            assert deliver(b, ctl_cta, "impression")
            expected = all_counts(
                single_worker(
                    {
                        "a-hero": (a_hero, "click"),
                        "a-cta": (a_cta, "purchase"),
                        "b-hero": (b_hero, "click"),
                        "b-cta": (b_cta, "impression"),
                    }
                )
            )
            assert all_counts(a) != expected and all_counts(b) != expected  # each saw a share
            for sf in (a, b):
                found = sf.sync_bandit()
                assert found is not None and sum(found.values()) == 11  # every row logged
                assert found["control"] == 3
            assert all_counts(a) == all_counts(b) == expected
            # B's sync counted a_hero's impression and click, a_cta's purchase, b_hero's click
            assert b.bandit_sync.counted == 4 and b.bandit_sync.duplicates == 4
            for sf in (a, b):  # syncing again reads nothing and changes nothing
                assert sf.sync_bandit() == {}
            assert all_counts(a) == all_counts(b) == expected
            shop = a.bandit.counts("*|*|*", "hero")
            assert shop[ctl_hero["arm"]]["clicks"] <= 2  # control's click is not among them
            cursor = b.bandit_sync.cursor
            assert cursor == a.bandit_sync.cursor
            # PostgreSQL spent a seq on each of the two redeliveries: gaps waited for a while
            assert len(b.bandit_sync.gaps) == (0 if db == "sqlite" else 2)
        # B restarts: its counts come back from the log, once, and its sync starts after them
        with worker(url, holdout=HOLDOUT) as b2:
            assert b2.restored == 4 and all_counts(b2) == expected
            assert b2.bandit_sync.cursor == cursor
            assert b2.sync_bandit() == {}
            # outcomes logged after the restart reach both: a late impression of the unseen
            # decision through A, a cart add through the restarted B
            assert deliver(a, a_unseen, "impression")
            assert deliver(b2, b_cta, "add_to_cart")
            for sf in (a, b2):
                sf.sync_bandit()
            expected = all_counts(
                single_worker(
                    {
                        "a-hero": (a_hero, "click"),
                        "a-cta": (a_cta, "purchase"),
                        "a-unseen": (a_unseen, "impression"),
                        "b-hero": (b_hero, "click"),
                        "b-cta": (b_cta, "add_to_cart"),
                    }
                )
            )
            assert all_counts(a) == all_counts(b2) == expected


def test_an_outcome_the_sync_counted_is_not_counted_again_by_the_live_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with worker(url) as a, worker(url) as b:
        own = b.decide("s-own", "hero", "mobile")
        other = a.decide("s-other", "cta", "desktop")
        first_only = a.decide("s-first", "hero", "desktop")
        assert deliver(a, other, "impression")
        real = b.bandit.record

        def sync_first(*args: Any, **kw: Any) -> Any:
            """The sync thread reads the log between the live path's write and its count."""
            monkeypatch.setattr(b.bandit, "record", real)
            assert b.sync_bandit() is not None
            return real(*args, **kw)

        for d, kind in ((own, "impression"), (other, "click"), (first_only, "click")):
            monkeypatch.setattr(b.bandit, "record", sync_first)
            before = b.bandit_sync.counted
            assert deliver(b, d, kind)
            assert b.bandit_sync.counted > before  # the sync counted it first ...
        # ... and the live path then found a duplicate: every stage once
        assert deliver(b, first_only, "impression")  # late, after its click: nothing new
        assert b.sync_bandit() == {"duplicate": 1}
        a.sync_bandit()
        expected = all_counts(
            single_worker(
                {
                    "own": (own, "impression"),
                    "other": (other, "click"),
                    "first": (first_only, "click"),
                }
            )
        )
        assert all_counts(a) == all_counts(b) == expected


def test_a_decision_the_bandit_forgot_is_not_counted_from_zero_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with worker(url) as a, worker(url, bandit=BanditConfig(max_open=2)) as b:
        d = a.decide("s-old", "hero", "mobile")
        assert deliver(a, d, "impression")
        b.sync_bandit()
        assert impressions(b, "hero") == 1
        for i in range(3):  # B's own decisions push A's out of its memory of open decisions
            b.decide(f"s-new-{i}", "cta", "mobile")
        assert deliver(a, d, "click")
        assert b.sync_bandit() == {"skipped": 1}  # its impression was counted already
        assert impressions(b, "hero") == 1 and impressions(b, "hero", "clicks") == 0


def test_an_outcome_committed_after_a_later_one_is_still_synced_on_postgresql(
    tmp_path: Path,
) -> None:
    with shared_db("postgresql", tmp_path) as url, worker(url) as a, worker(url) as b:
        slow, fast = (a.decide(f"s-tx{i}", "hero", "mobile") for i in range(2))
        with a.log.engine.connect() as conn:
            tx = conn.begin()  # a writer that takes its seq first and commits last
            conn.execute(
                outcomes.insert().values(
                    event_id="ev-slow", decision_id=slow["decision_id"], kind="impression", ts=T0
                )
            )
            assert deliver(a, fast, "impression")
            assert b.sync_bandit() == {"counted": 1}
            assert len(b.bandit_sync.gaps) == 1  # the seq taken by the open transaction
            tx.commit()
        assert b.sync_bandit() == {"counted": 1}
        assert b.bandit_sync.gaps == {} and impressions(b, "hero") == 2


def test_the_sync_runs_in_the_background_and_outlives_a_failing_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # two service processes (each its own in-process stream) on one log database
    with (
        client_for(tmp_path, bandit_sync_s=0.05) as one,
        client_for(tmp_path, bandit_sync_s=0.05) as two,
    ):
        sf_two = sf_of(two)
        d = one.post("/v1/decide", json={"session_id": "s-bg", "slot": "hero"}).json()
        one.post("/v1/events", json=event("s-bg", "impression", **_dec(d)))
        assert wait_until(lambda: impressions(sf_two, "hero") == 1)
        sync = two.get("/v1/health").json()["bandit"]["sync"]
        assert sync["counted"] == 1 and sync["cursor"] >= 1 and sync["sync_s"] == 0.05
        assert sync["failures"] == 0 and sync["lag_s"] is not None and sync["lag_s"] < 5
        working = sf_two.log.engine
        sf_two.log.engine = sa.create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'sf.db'}")
        try:
            one.post("/v1/events", json=event("s-bg", "hero_click", **_dec(d)))
            assert wait_until(lambda: sf_two.bandit_sync.failures >= 2)
            sync = two.get("/v1/health").json()["bandit"]["sync"]
            assert "OperationalError" in sync["last_error"] and sync["last_failure_at"]
            assert impressions(sf_two, "hero", "clicks") == 0
        finally:
            sf_two.log.engine.dispose()
            sf_two.log.engine = working
        assert wait_until(lambda: impressions(sf_two, "hero", "clicks") == 1)
        assert all_counts(sf_two) == all_counts(sf_of(one))
    assert any("bandit sync" in r.getMessage() for r in caplog.records)


def test_persona_answers_without_the_profile_when_its_store_fails(client: TestClient) -> None:
    sf = sf_of(client)

    def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("profile store (Redis): circuit open")

    sf.pipeline.profiles.history = down  # type: ignore[method-assign, assignment]
    sf.pipeline.profiles.record = down  # type: ignore[method-assign]
    browse_as(client, "s-pfx", "u-43", len(PAGES))
    body = client.post("/v1/persona", json={"session_id": "s-pfx"}).json()
    assert body["reason"] == "ok" and body["profile"] is None and body["source"] == "store"
