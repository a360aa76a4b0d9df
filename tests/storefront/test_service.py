"""The storefront HTTP service in process (FastAPI's TestClient, lifespan on: the consumer
runs): every route, 4xx answers naming the field, the fallback when the feature store is
down, events flowing to the features and the logs, decisions logged with propensities, the
bandit learning only from new outcomes, the control holdout, analytics, and one run against
the real Redis of this machine (required where CI is set)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cxagent.storefront import analytics
from cxagent.storefront.consumer import Consumer, Pipeline
from cxagent.storefront.events import Event
from cxagent.storefront.features import MemoryFeatureStore, StoreUnavailable
from cxagent.storefront.logs import ExperimentLog
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
from tests.storefront.services import REDIS_URL, redis_namespace, wait_until

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
    rounds = sf.log.rounds("hero")
    row = rounds[rounds["decision_id"] == hero["decision_id"]].iloc[0]
    assert row["action"] == hero["arm"] and row["propensity"] == pytest.approx(hero["propensity"])
    assert bool(row["shown"]) and row["reward"] == 0
    assert row["persona"] == hero["segment"].split("|")[0]

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
    assert sf.bandit.counts("*|*|*", "hero")[hero["arm"]]["impressions"] == 1
    clicks = sf.log.rounds("hero", reward="click")
    assert clicks.loc[clicks["decision_id"] == hero["decision_id"], "reward"].iloc[0] == 1
    revenue = sf.log.rounds("cta", reward="revenue")
    assert revenue.loc[revenue["decision_id"] == cta["decision_id"], "reward"].iloc[0] == 79.0
    time.sleep(0.1)
    assert sf.bandit.counts("*|*|*", "hero")[hero["arm"]]["clicks"] == 1  # not twice


def test_control_holdout_gets_the_default_without_the_bandit(tmp_path: Path) -> None:
    holdout = 0.5
    sid = next(f"s-ctl-{i}" for i in range(1000) if analytics.in_holdout(f"s-ctl-{i}", holdout))
    with client_for(tmp_path, holdout=holdout) as client:
        sf = sf_of(client)
        for slot in ("hero", "cta"):
            d = client.post("/v1/decide", json={"session_id": sid, "slot": slot}).json()
            assert d["group"] == "control" and d["arm"] == DEFAULT_ARM[slot]
            assert d["propensity"] == 1.0 and d["policy_version"] == "control"
        client.post("/v1/events", json=event(sid, "cta_click", decision_id=d["decision_id"]))
        assert wait_until(lambda: len(sf.log.rounds("cta", reward="click").query("reward > 0")))
        assert all(c["impressions"] == 0 for c in sf.bandit.counts("*|*|*", "cta").values())


def test_the_bandit_is_rebuilt_from_the_logs_after_a_restart(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        decisions = [
            client.post("/v1/decide", json={"session_id": f"s-r{i}", "slot": "hero"}).json()
            for i in range(6)
        ]
        for d in decisions[:3]:
            client.post("/v1/events", json=event(d["session_id"], "hero_click", **_dec(d)))
        assert wait_until(
            lambda: sum(c["clicks"] for c in sf.bandit.counts("*|*|*", "hero").values()) == 3
        )
        before = sf.bandit.counts("*|*|*", "hero")
    with client_for(tmp_path) as client:
        sf = sf_of(client)
        assert sf.restored == 6 and sf.bandit.counts("*|*|*", "hero") == before
        # an outcome of a decision made before the restart still counts
        late = decisions[5]
        client.post("/v1/events", json=event(late["session_id"], "hero_click", **_dec(late)))
        assert wait_until(
            lambda: sum(c["clicks"] for c in sf.bandit.counts("*|*|*", "hero").values()) == 4
        )


def _dec(d: dict[str, Any]) -> dict[str, str]:
    return {"decision_id": d["decision_id"]}


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


# --- the store down -------------------------------------------------------------------------------------


def test_the_feature_store_down_falls_back_fast_and_says_so(tmp_path: Path) -> None:
    with client_for(tmp_path, redis_url=DOWN) as client:
        client.post("/v1/persona", json={"session_id": "s-down"})  # trips the breaker
        started = time.perf_counter()
        body = client.post("/v1/persona", json={"session_id": "s-down"}).json()
        assert time.perf_counter() - started < 0.05
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


def test_analytics_lift_velocity_engagement_and_latency(tmp_path: Path) -> None:
    with client_for(tmp_path, holdout=0.3) as client:
        sf = sf_of(client)
        seeded = seed_demo(sf, 120, seed=11)
        assert seeded == {"sessions": 120, "decisions": 240}
        for _ in range(5):
            client.post("/v1/persona", json={"session_id": "syn-11-000001"})
        body = client.get("/v1/analytics").json()
    assert body["sessions"] == 120 and body["decisions"] == 240
    conv = body["lift"]["conversion"]
    assert conv["bandit"]["sessions"] + conv["control"]["sessions"] == 120
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
    assert engaged["all"]["mean_duration_s"] > 0
    assert body["latency"]["POST /v1/persona"]["requests"] == 5
    assert body["latency"]["POST /v1/persona"]["p99_ms"] > 0
    assert {a["group"] for a in body["arms"]} == {"bandit", "control"}


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
            health = client.get("/v1/health").json()
            assert health["status"] == "ok" and health["stream"]["kind"] == "redis"
        log = ExperimentLog(f"sqlite:///{tmp_path / 'sf.db'}")
        clicks = log.rounds("hero", reward="click")
        assert clicks.loc[clicks["decision_id"] == d["decision_id"], "reward"].iloc[0] == 1
        log.close()
