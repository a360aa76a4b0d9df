"""The idempotent consumer: at-least-once delivery, effects exactly once, across crashes."""

from __future__ import annotations

import os
import threading
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cxagent.storefront.consumer import GROUP, Consumer, default_consumer_name, open_pipeline
from cxagent.storefront.events import Event, SessionFeatures, fold
from cxagent.storefront.features import RedisFeatureStore, StoreUnavailable
from cxagent.storefront.logs import ExperimentLog, outcomes
from cxagent.storefront.stream import BufferedPublisher, RedisStream
from tests.storefront.services import (
    DOWN_URL,
    REDIS_URL,
    TEST_TIMEOUT,
    Backend,
    RedisNamespace,
    backend_fixture,  # noqa: F401
    make_event,
    redis_ns_fixture,  # noqa: F401
    session_events,
    wait_until,
)


class Crash(BaseException):
    """The process dies here (not an ``Exception``: nothing in the consumer catches it)."""


class DiesBeforeAck:
    """The consumer's stream, except that the process dies when it would acknowledge."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

    def ack(self, group: str, message_ids: Any) -> int:
        raise Crash


def folded(events: list[Event]) -> SessionFeatures:
    return reduce(fold, events, SessionFeatures(events[0].session_id))


@pytest.fixture
def log(tmp_path: Path) -> Any:
    log = ExperimentLog(f"sqlite:///{tmp_path / 'storefront.db'}")
    yield log
    log.close()


def traffic(log: ExperimentLog) -> dict[str, list[Event]]:
    """Two sessions of 10 events each, two CTA clicks per session answering a decision."""
    sessions = {s: session_events(s, 10) for s in ("s-1", "s-2")}
    for s in sessions:
        log.log_decision(
            decision_id=f"d-{s}",
            ts=sessions[s][0].ts,
            session_id=s,
            persona="hobbyist",
            device="mobile",
            channel="social",
            slot="cta",
            arm="a",
            propensity=0.5,
            policy_version="v1",
        )
    return sessions


def outcome_rows(log: ExperimentLog) -> int:
    return int(log.arm_counts()["click"].sum())


def assert_exactly_once(backend: Backend, sessions: dict[str, list[Event]]) -> None:
    features = backend.features()
    for s, events in sessions.items():
        assert features.get(s) == folded(events), s


def test_a_consumer_applies_every_event_and_acknowledges(backend: Backend, log: Any) -> None:
    sessions = traffic(log)
    stream = backend.stream()
    for e in [*sessions["s-1"], *sessions["s-2"]]:
        stream.publish(e)
    consumer = Consumer(stream, backend.features(), name="c", on_outcome=log.record_event)
    assert consumer.drain() == 20
    assert_exactly_once(backend, sessions)
    assert stream.pending(GROUP) == 0
    s = consumer.stats
    assert (s.applied, s.duplicates, s.acked, s.outcomes) == (20, 0, 20, 8)  # clicks + carts
    assert outcome_rows(log) == 2  # each decision was clicked (twice, counted once)
    assert consumer.drain() == 0


def test_a_consumer_that_dies_before_ack_is_taken_over_and_nothing_is_applied_twice(
    backend: Backend, log: Any
) -> None:
    sessions = traffic(log)
    stream = backend.stream()
    for e in [*sessions["s-1"], *sessions["s-2"]]:
        stream.publish(e)
    dying = Consumer(
        DiesBeforeAck(stream), backend.features(), name="dying", on_outcome=log.record_event
    )
    with pytest.raises(Crash):
        dying.poll()
    assert dying.stats.applied == 20  # applied and persisted, but never acknowledged
    assert stream.pending(GROUP) == 20

    # another process: new connections, another consumer name
    survivor = Consumer(
        backend.stream(),
        backend.features(),
        name="survivor",
        on_outcome=log.record_event,
        claim_idle_ms=50,
    )
    backend.advance(0.06)  # the dead consumer's messages have been idle long enough
    result = survivor.poll()
    assert (result.deliveries, result.applied, result.duplicates, result.acked) == (20, 0, 20, 20)
    assert survivor.stats.claimed == 20
    assert stream.pending(GROUP) == 0
    assert_exactly_once(backend, sessions)
    with log.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(outcomes)).scalar_one() == 4


def test_a_consumer_restarted_under_its_name_resumes_where_it_died(
    backend: Backend, log: Any
) -> None:
    sessions = traffic(log)
    stream = backend.stream()
    events = [*sessions["s-1"], *sessions["s-2"]]
    for e in events:
        stream.publish(e)
    calls: list[str] = []

    def dies_on_the_first_click(event: Event, features: SessionFeatures) -> None:
        if event.kind == "cta_click":
            calls.append(event.event_id)
            raise Crash

    first = Consumer(
        stream, backend.features(), name="worker-1", on_outcome=dies_on_the_first_click
    )
    with pytest.raises(Crash):
        first.poll()
    assert first.stats.applied == 5  # events 0-4: the fifth is the first CTA click
    assert stream.pending(GROUP) == 20

    restarted = Consumer(
        backend.stream(), backend.features(), name="worker-1", on_outcome=log.record_event
    )
    result = restarted.poll()  # re-reads its own unacknowledged messages first
    assert restarted.stats.recovered == 20
    assert (result.applied, result.duplicates, result.acked) == (15, 5, 20)
    assert stream.pending(GROUP) == 0
    assert_exactly_once(backend, sessions)
    # the outcome that crashed is handed over again (at least once) and logged once
    assert calls == [events[4].event_id]
    assert restarted.stats.outcomes == 8  # 2 clicks and 2 cart adds per session
    assert outcome_rows(log) == 2


def test_an_event_published_twice_is_applied_once(backend: Backend) -> None:
    stream = backend.stream()
    events = session_events("s-dup", 4)
    for e in [*events, events[1], events[3]]:  # e.g. a timed-out XADD that did land
        stream.publish(e)
    consumer = Consumer(stream, backend.features(), name="c")
    consumer.drain()
    assert (consumer.stats.applied, consumer.stats.duplicates) == (4, 2)
    assert_exactly_once(backend, {"s-dup": events})


def test_with_the_feature_store_down_nothing_is_acknowledged_or_lost(backend: Backend) -> None:
    stream = backend.stream()
    events = session_events("s-down", 6)
    for e in events:
        stream.publish(e)
    down = RedisFeatureStore.from_url(DOWN_URL)
    consumer = Consumer(stream, down, name="c")
    with pytest.raises(StoreUnavailable):
        consumer.poll()
    assert consumer.stats.acked == 0 and stream.pending(GROUP) == 6
    consumer.features = backend.features()  # Redis is back
    consumer.drain()
    assert stream.pending(GROUP) == 0
    assert_exactly_once(backend, {"s-down": events})


def test_a_message_that_keeps_failing_is_dead_lettered_and_the_rest_flows(
    backend: Backend,
) -> None:
    stream = backend.stream()
    events = session_events("s-p", 10)
    poison = events[4]  # a CTA click
    for e in events:
        stream.publish(e)

    def handler(event: Event, features: SessionFeatures) -> None:
        if event.event_id == poison.event_id:
            raise ValueError("the handler has a bug")

    consumer = Consumer(
        stream, backend.features(), name="c", on_outcome=handler, max_deliveries=3, claim_idle_ms=0
    )
    consumer.drain()
    s = consumer.stats
    assert (s.failed, s.dead_lettered, s.applied, s.duplicates) == (3, 1, 10, 2)
    assert stream.pending(GROUP) == 0
    (dead,) = stream.dead_letters()
    assert dead["reason"] == "failed 3 deliveries"
    assert Event.model_validate_json(dead["event"]) == poison
    assert_exactly_once(backend, {"s-p": events})


def test_unreadable_messages_are_dead_lettered(redis_ns: RedisNamespace) -> None:
    stream = RedisStream.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    good = make_event("s-ok")
    redis_ns.client.xadd(stream.key, {"event": '{"not": "an event"}'})
    redis_ns.client.xadd(stream.key, {"something": "else"})
    stream.publish(good)
    features = RedisFeatureStore.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    consumer = Consumer(stream, features, name="c")
    consumer.drain()
    assert (consumer.stats.dead_lettered, consumer.stats.applied) == (2, 1)
    assert stream.pending(GROUP) == 0
    dead = stream.dead_letters()
    assert [d["reason"] for d in dead] == ["unreadable: not an Event"] * 2
    assert dead[0]["event"] == '{"not": "an event"}' and dead[1]["something"] == "else"
    assert features.get("s-ok") == folded([good])


def test_a_message_trimmed_before_processing_is_counted_lost(backend: Backend) -> None:
    stream = backend.stream(maxlen=10)
    stream.publish(make_event("s-lost"))
    with pytest.raises(Crash):
        Consumer(DiesBeforeAck(stream), backend.features(), name="c").poll()
    for i in range(600):
        stream.publish(make_event("s-more", second=i))
    consumer = Consumer(backend.stream(maxlen=10), backend.features(), name="c")
    consumer.drain()
    assert consumer.stats.lost == 1
    assert stream.pending(GROUP) == 0


def test_events_the_stream_acknowledged_survive_a_restart_of_every_process(
    redis_ns: RedisNamespace,
) -> None:
    def stream() -> RedisStream:
        return RedisStream.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)

    events = session_events("s-r", 8)
    service = BufferedPublisher(stream())
    assert [service.publish(e).status for e in events] == ["published"] * 8
    reader = Consumer(
        stream(),
        RedisFeatureStore.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT),
        name="old",
    )
    reader.stream.ensure_group(GROUP)
    reader.stream.read(GROUP, "old", count=3)  # read, then the consumer dies unprocessed
    del service, reader  # the service and the consumer restart

    features = RedisFeatureStore.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    fresh = Consumer(stream(), features, name="new", claim_idle_ms=0)
    fresh.drain()
    assert features.get("s-r") == folded(events)
    assert fresh.stats.claimed == 3 and fresh.stats.applied == 8


def test_the_in_process_pipeline_serves_the_demo() -> None:
    pipeline = open_pipeline(None)
    pipeline.start(block_ms=20)
    try:
        events = session_events("s-demo", 7)
        assert {pipeline.publisher.publish(e).status for e in events} == {"published"}
        assert wait_until(
            lambda: (pipeline.features.get("s-demo") or SessionFeatures("")).events == 7
        )
        assert pipeline.features.get("s-demo") == folded(events)
        assert wait_until(lambda: pipeline.stream.pending(GROUP) == 0)
        status: Any = pipeline.status()
        assert status["publisher"]["published"] == 7 and status["consumer"]["applied"] == 7
    finally:
        pipeline.stop()


def test_the_redis_pipeline_applies_events_and_records_outcomes(
    redis_ns: RedisNamespace, log: Any
) -> None:
    sessions = traffic(log)
    pipeline = open_pipeline(REDIS_URL, prefix=redis_ns.prefix, on_outcome=log.record_event)
    pipeline.start(block_ms=20)
    try:
        shown = make_event("s-1", "impression", 1, decision_id="d-s-1")
        events = [shown, *sessions["s-1"], shown]  # the impression redelivered at the end
        for e in events:
            pipeline.publisher.publish(e)
        assert wait_until(lambda: pipeline.consumer.stats.acked == 12)
        assert pipeline.features.get("s-1") == folded(events[:-1])
        assert outcome_rows(log) == 1
        counts = log.arm_counts()
        assert int(counts["impression"].sum()) == 1 and int(counts["shown"].sum()) == 1
    finally:
        pipeline.stop()


def test_impressions_and_cart_removals_reach_the_features_and_impressions_the_outcomes(
    backend: Backend, log: Any
) -> None:
    traffic(log)
    seen: list[str] = []

    def on_outcome(event: Event, features: SessionFeatures) -> bool:
        seen.append(event.kind)
        return log.record_event(event, features)

    stream = backend.stream()
    events = [
        make_event("s-1", "impression", 0, decision_id="d-s-1"),
        make_event("s-1", "add_to_cart", 1, product_id="lq-a"),
        make_event("s-1", "add_to_cart", 2, product_id="lq-b"),
        make_event("s-1", "remove_from_cart", 3, product_id="lq-a"),
    ]
    for e in events:
        stream.publish(e)
    consumer = Consumer(stream, backend.features(), name="c", on_outcome=on_outcome)
    assert consumer.drain() == 4
    assert seen == ["impression", "add_to_cart", "add_to_cart"]  # a removal is no outcome
    got = backend.features().get("s-1")
    assert got is not None and got.cart == ("lq-b",) and got == folded(events)
    assert int(log.arm_counts()["impression"].sum()) == 1


def test_with_redis_down_the_pipeline_buffers_and_classification_fails_fast() -> None:
    pipeline = open_pipeline(DOWN_URL)
    pipeline.start(block_ms=20)
    try:
        results = [pipeline.publisher.publish(e).status for e in session_events("s", 3)]
        assert results == ["buffered"] * 3
        with pytest.raises(StoreUnavailable):
            pipeline.features.get("s")
        status: Any = pipeline.status()
        assert status["publisher"]["buffered"] == 3 and status["publisher"]["dropped"] == 0
    finally:
        left = pipeline.stop(timeout=3)
    assert left == 3  # reported: those die with the process


def test_consumer_run_stops_and_default_names_are_unique_per_process() -> None:
    consumer = Consumer(RedisStream.from_url(DOWN_URL), RedisFeatureStore.from_url(DOWN_URL))
    assert consumer.name == default_consumer_name() and str(os.getpid()) in consumer.name
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), kwargs={"backoff_s": 0.01})
    thread.start()
    stop.set()
    thread.join(2)
    assert not thread.is_alive()
    with pytest.raises(ValueError):
        Consumer(RedisStream.from_url(DOWN_URL), RedisFeatureStore.from_url(DOWN_URL), batch=0)
