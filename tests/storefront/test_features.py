"""The feature store: fold + write, idempotency, TTL, concurrency, fast failure."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from functools import reduce

import pytest
import redis

from cxagent.storefront.events import SessionFeatures, fold
from cxagent.storefront.features import (
    CircuitBreaker,
    MemoryFeatureStore,
    MemoryProfileStore,
    ProfileStore,
    RedisFeatureStore,
    RedisProfileStore,
    StoreUnavailable,
    features_from_json,
    features_to_json,
)
from tests.storefront.services import (
    DOWN_URL,
    REDIS_URL,
    TEST_TIMEOUT,
    Backend,
    FakeClock,
    RedisNamespace,
    backend_fixture,  # noqa: F401
    make_event,
    redis_ns_fixture,  # noqa: F401
    session_events,
    silent_server_fixture,  # noqa: F401
)


def folded(session_id: str, events: list) -> SessionFeatures:
    return reduce(fold, events, SessionFeatures(session_id))


def test_serialised_features_read_back_equal() -> None:
    events = session_events("s-json", 12)
    events.append(make_event("s-json", "purchase", 200, value=42.5, user_id="u-1"))
    for second, pid in ((210, "lq-a"), (220, "lq-b")):
        events.append(make_event("s-json", "add_to_cart", second, product_id=pid))
    # a time zone other than UTC survives too
    events.append(
        make_event(
            "s-json",
            "page_view",
            0,
            ts=dt.datetime(2025, 3, 1, 14, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        )
    )
    features = folded("s-json", events)
    assert features.products and features.seconds and features.revenue == 42.5
    assert features.cart == ("lq-a", "lq-b")
    text = features_to_json(features)
    assert json.loads(text)["cart"] == ["lq-a", "lq-b"]
    back = features_from_json(text)
    assert back == features
    assert isinstance(back.products, tuple) and isinstance(back.cart, tuple)
    assert back.started_at is not None and back.started_at.utcoffset() == dt.timedelta(0)


def test_a_record_stored_before_the_cart_existed_still_loads() -> None:
    features = folded("s-old", session_events("s-old", 6))
    data = json.loads(features_to_json(features))
    del data["cart"]
    data["retired_field"] = 3  # a field a later version dropped is ignored too
    old = features_from_json(json.dumps(data))
    assert old.cart == () and old == features


def cart_events(session_id: str) -> list:
    return [
        make_event(session_id, second=0),
        make_event(session_id, "add_to_cart", 10, product_id="lq-a"),
        make_event(session_id, "add_to_cart", 20, product_id="lq-b"),
        make_event(session_id, "remove_from_cart", 30, product_id="lq-a"),
        make_event(session_id, "add_to_cart", 40, product_id="lq-c"),
    ]


def test_the_cart_is_stored_and_restored(backend: Backend) -> None:
    store = backend.features()
    events = cart_events("s-cart")
    for e in events:
        store.apply(e)
    got = store.get("s-cart")
    assert got is not None and got.cart == ("lq-b", "lq-c") and got.cart_adds == 3
    assert got == folded("s-cart", events)
    assert store.apply(make_event("s-cart", "purchase", 50, value=9.0)).cart == ()
    after = store.get("s-cart")
    assert after is not None and after.cart == () and after.purchases == 1


def test_redis_folds_onto_a_record_stored_without_the_cart(redis_ns: RedisNamespace) -> None:
    store = RedisFeatureStore.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    before = folded("s-v1", session_events("s-v1", 5))
    data = json.loads(features_to_json(before))
    del data["cart"]  # as an older version of the service wrote it
    redis_ns.client.set(store.session_key("s-v1"), json.dumps(data), px=60_000)
    loaded = store.get("s-v1")
    assert loaded == before and loaded is not None and loaded.cart == ()
    after = store.apply(make_event("s-v1", "add_to_cart", 100, product_id="lq-a"))
    assert after.cart == ("lq-a",) and after.events == before.events + 1
    assert after.cart_adds == before.cart_adds + 1
    assert json.loads(redis_ns.client.get(store.session_key("s-v1")) or "{}")["cart"] == ["lq-a"]


def test_applied_events_fold_into_the_session(backend: Backend) -> None:
    store = backend.features()
    assert store.get("s-a") is None
    a, b = session_events("s-a", 9), session_events("s-b", 4)
    for e in [*a, *b]:
        store.apply(e)
    assert store.get("s-a") == folded("s-a", a)
    assert store.get("s-b") == folded("s-b", b)
    got = store.get("s-a")
    assert got is not None and got.events == 9 and got.cart_adds == 2 and got.channel == "social"


def test_an_event_applied_twice_changes_nothing_the_second_time(backend: Backend) -> None:
    store = backend.features()
    first, second = make_event("s-d", second=0), make_event("s-d", second=30)
    assert store.apply_once(first).applied
    assert store.apply_once(second).applied
    again = store.apply_once(first)
    assert not again.applied
    assert again.features == folded("s-d", [first, second])
    assert store.apply(second).events == 2
    got = store.get("s-d")
    assert got is not None and got.events == 2 and got.page_views == 2


def test_concurrent_events_of_one_session_are_all_kept(backend: Backend) -> None:
    store = backend.features()
    threads, per_thread = 8, 30
    batches = [
        [make_event("s-hot", second=t * 1000 + i) for i in range(per_thread)]
        for t in range(threads)
    ]
    errors: list[BaseException] = []

    def work(events: list) -> None:
        try:
            mine = backend.features()  # its own connection, as another worker would have
            for e in events:
                mine.apply(e)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(b,)) for b in batches]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    got = store.get("s-hot")
    assert got is not None
    assert got.events == threads * per_thread  # a lost update would show fewer
    assert got.page_views == threads * per_thread
    assert sum(got.page_types.values()) == threads * per_thread


def test_memory_sessions_expire_after_inactivity_and_writes_refresh_the_ttl() -> None:
    clock = FakeClock()
    store = MemoryFeatureStore(ttl_s=60, dedup_ttl_s=600, clock=clock)
    old = make_event("s-t", second=0)
    store.apply(old)
    clock.advance(50)
    store.apply(make_event("s-t", second=50))  # refreshes the 60 s
    clock.advance(50)
    got = store.get("s-t")
    assert got is not None and got.events == 2
    assert len(store) == 1
    clock.advance(11)
    assert store.get("s-t") is None and len(store) == 0
    # the session is gone but the dedup record is not: a late redelivery is still skipped
    assert not store.apply_once(old).applied
    assert store.get("s-t") is None
    clock.advance(600)
    assert store.apply_once(old).applied  # past the dedup window it counts as new


def test_redis_keys_carry_the_ttl_and_expire(redis_ns: RedisNamespace) -> None:
    redis_prefix, redis_server = redis_ns.prefix, redis_ns.client
    store = RedisFeatureStore.from_url(
        REDIS_URL, prefix=redis_prefix, ttl_s=1800, dedup_ttl_s=86400, timeout=TEST_TIMEOUT
    )
    event = make_event("s-ttl")
    store.apply(event)
    key = store.session_key("s-ttl")
    assert key == f"{redis_prefix}session:{{s-ttl}}"
    assert 1790_000 < redis_server.pttl(key) <= 1800_000
    assert 86390_000 < redis_server.pttl(store.dedup_key(event)) <= 86400_000
    redis_server.pexpire(key, 5000)
    store.apply(make_event("s-ttl", second=5))
    assert redis_server.pttl(key) > 1790_000  # refreshed by the write

    short = RedisFeatureStore.from_url(
        REDIS_URL, prefix=redis_prefix, ttl_s=0.15, timeout=TEST_TIMEOUT
    )
    short.apply(make_event("s-short"))
    assert 0 < redis_server.pttl(short.session_key("s-short")) <= 150
    time.sleep(0.3)
    assert short.get("s-short") is None


def test_with_redis_down_the_store_fails_fast_and_the_breaker_skips_the_socket() -> None:
    store = RedisFeatureStore.from_url(DOWN_URL, cooldown_s=0.2)
    t = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        store.get("s-x")
    assert time.perf_counter() - t < 0.3
    with pytest.raises(StoreUnavailable, match="circuit open"):
        store.apply(make_event("s-x"))
    assert store.breaker.failures == 1  # the second call never reached the socket
    time.sleep(0.25)
    with pytest.raises(StoreUnavailable, match="ConnectionError"):
        store.get("s-x")  # after the cooldown it tries again
    assert store.breaker.failures == 2


def test_a_hung_redis_times_out_within_the_read_timeout(silent_server: str) -> None:
    store = RedisFeatureStore.from_url(silent_server)  # defaults: 50 ms, no retries
    t = time.perf_counter()
    with pytest.raises(StoreUnavailable, match="Timeout"):
        store.get("s-x")
    assert time.perf_counter() - t < 0.5


def test_breaker_treats_a_read_only_or_full_redis_as_down_and_other_errors_as_bugs() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("x", cooldown_s=1.0, clock=clock)
    with pytest.raises(StoreUnavailable), breaker.guard():
        raise redis.ReadOnlyError("READONLY You can't write against a read only replica.")
    assert breaker.open
    clock.advance(1.5)
    assert not breaker.open
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"), breaker.guard():
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    assert not breaker.open
    with breaker.guard():
        pass
    assert breaker.failures == 1


def profile_store(backend: Backend, keep: int = 50) -> ProfileStore:
    if backend.kind == "redis":
        features = backend.features()
        assert isinstance(features, RedisFeatureStore)
        return RedisProfileStore.beside(features, keep=keep)
    return MemoryProfileStore(keep=keep)


def test_a_session_carries_its_user_id_once_logged_in() -> None:
    events = [make_event("s-u", "page_view", 0), make_event("s-u", "page_view", 5, user_id="u-7")]
    events.append(make_event("s-u", "page_view", 9))  # later events need not repeat it
    got = folded("s-u", events)
    assert got.user_id == "u-7" and got.logged_in
    assert features_from_json(features_to_json(got)) == got
    switched = fold(got, make_event("s-u", "page_view", 12, user_id="u-8"))  # another account
    assert switched.user_id == "u-8"


def test_a_profile_is_the_users_persona_shares_without_the_live_session(backend: Backend) -> None:
    store = profile_store(backend)
    assert store.history("u-1") is None
    store.record("u-1", "s-1", "researcher", 1.0)
    store.record("u-1", "s-2", "researcher", 2.0)
    store.record("u-1", "s-3", "shopper", 3.0)
    store.record("u-1", "s-3", "browser", 3.5)  # the live session's persona moved: replaced
    assert store.history("u-1") == pytest.approx({"researcher": 2 / 3, "browser": 1 / 3})
    assert store.history("u-1", exclude="s-3") == {"researcher": 1.0}
    assert store.history("u-1", exclude="s-1") == pytest.approx({"researcher": 0.5, "browser": 0.5})
    assert store.history("u-2") is None  # users do not mix
    store.record("u-2", "s-9", "glancer", 1.0)
    assert store.history("u-2", exclude="s-9") is None  # only the live session: no history


def test_a_profile_keeps_the_users_latest_sessions(backend: Backend) -> None:
    store = profile_store(backend, keep=3)
    for i, persona in enumerate(["glancer", "glancer", "shopper", "shopper", "researcher"]):
        store.record("u-k", f"s-{i}", persona, float(i))
    assert store.history("u-k") == pytest.approx(
        {"shopper": 2 / 3, "researcher": 1 / 3}
    )  # the two oldest (glancer) were dropped


def test_redis_profiles_expire_and_fail_fast_when_redis_is_down(redis_ns: RedisNamespace) -> None:
    features = RedisFeatureStore.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    store = RedisProfileStore.beside(features, ttl_s=30.0)
    store.record("u-t", "s-1", "browser", 1.0)
    assert 0 < redis_ns.client.pttl(store.key("u-t")) <= 30_000
    redis_ns.client.hset(store.key("u-t"), "s-bad", "not json")  # a malformed entry: skipped
    assert store.history("u-t") == {"browser": 1.0}
    down = RedisProfileStore.beside(RedisFeatureStore.from_url(DOWN_URL, cooldown_s=0.2))
    t = time.perf_counter()
    with pytest.raises(StoreUnavailable):
        down.history("u-t")
    assert time.perf_counter() - t < 0.3
