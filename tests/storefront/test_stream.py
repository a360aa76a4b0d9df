"""The event stream (Redis Streams and the in-process stand-in) and the buffered publisher."""

from __future__ import annotations

import time

import pytest

from cxagent.storefront.events import Event
from cxagent.storefront.stream import (
    BufferedPublisher,
    Delivery,
    EventStream,
    MemoryStream,
    PublishResult,
    RedisStream,
    StoreUnavailable,
)
from tests.storefront.services import (
    DOWN_URL,
    REDIS_URL,
    TEST_TIMEOUT,
    Backend,
    RedisNamespace,
    backend_fixture,  # noqa: F401
    make_event,
    redis_ns_fixture,  # noqa: F401
    silent_server_fixture,  # noqa: F401
)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message_id for d in deliveries]


def events(deliveries: list[Delivery]) -> list[Event | None]:
    return [d.event for d in deliveries]


def test_a_group_gets_each_message_once_until_acknowledged(backend: Backend) -> None:
    stream = backend.stream()
    sent = [make_event(f"s-{i}", second=i) for i in range(5)]
    mids = [stream.publish(e) for e in sent]
    assert len(set(mids)) == 5 and len(stream) == 5
    stream.ensure_group("g")
    stream.ensure_group("g")  # idempotent (BUSYGROUP ignored)
    got = stream.read("g", "c1", count=3)
    assert events(got) == sent[:3] and ids(got) == mids[:3]
    assert all(d.deliveries == 1 for d in got)
    rest = stream.read("g", "c1", count=10)
    assert events(rest) == sent[3:]
    assert stream.read("g", "c1") == []  # nothing new: delivered once to the group
    assert stream.pending("g") == 5
    assert stream.ack("g", mids[:2]) == 2
    assert stream.ack("g", mids[:2]) == 0  # already acknowledged
    assert stream.pending("g") == 3
    # another group reads the whole stream independently, from its start
    stream.ensure_group("other")
    assert events(stream.read("other", "x", count=10)) == sent


def test_consumers_of_one_group_share_the_messages(backend: Backend) -> None:
    stream = backend.stream()
    stream.ensure_group("g")
    sent = [make_event("s", second=i) for i in range(6)]
    for e in sent:
        stream.publish(e)
    a = stream.read("g", "a", count=2)
    b = stream.read("g", "b", count=10)
    assert events(a) + events(b) == sent
    assert not set(ids(a)) & set(ids(b))


def test_unacknowledged_messages_are_redelivered_and_claimed_once_idle(backend: Backend) -> None:
    stream = backend.stream()
    stream.ensure_group("g")
    sent = [make_event("s", second=i) for i in range(4)]
    for e in sent:
        stream.publish(e)
    got = stream.read("g", "dead", count=4)
    stream.ack("g", [got[0].message_id])
    # the same consumer, restarted under its name, re-reads what it did not acknowledge
    again = stream.read_own_pending("g", "dead")
    assert events(again) == sent[1:]
    assert [d.deliveries for d in again] == [2, 2, 2]
    # another consumer cannot take them before they were idle long enough ...
    assert stream.claim("g", "alive", min_idle_ms=60_000) == []
    backend.advance(0.06)
    # ... and takes all of them afterwards, once
    claimed = stream.claim("g", "alive", min_idle_ms=50)
    assert events(claimed) == sent[1:]
    assert [d.deliveries for d in claimed] == [3, 3, 3]
    assert stream.read_own_pending("g", "dead") == []
    assert events(stream.read_own_pending("g", "alive")) == sent[1:]
    assert stream.ack("g", ids(claimed)) == 3
    assert stream.pending("g") == 0
    assert stream.claim("g", "alive", min_idle_ms=0) == []


def test_the_stream_is_bounded(backend: Backend) -> None:
    stream = backend.stream(maxlen=10)
    for i in range(600):
        stream.publish(make_event("s", second=i))
    if backend.kind == "memory":
        assert len(stream) == 10
    else:  # MAXLEN ~ trims whole nodes (100 entries each by default)
        assert 10 <= len(stream) <= 200


def test_a_message_trimmed_while_pending_comes_back_empty_and_is_never_claimed(
    backend: Backend,
) -> None:
    stream = backend.stream(maxlen=10)
    stream.ensure_group("g")
    first = stream.publish(make_event("s", second=0))
    assert ids(stream.read("g", "c")) == [first]
    for i in range(1, 600):
        stream.publish(make_event("s", second=i))
    own = stream.read_own_pending("g", "c", count=1)
    assert [(d.message_id, d.event, d.raw) for d in own] == [(first, None, {})]
    backend.advance(0.02)
    assert first not in ids(stream.claim("g", "other", min_idle_ms=10, count=1000))


def test_memory_stream_read_blocks_until_a_message_arrives() -> None:
    import threading

    stream = MemoryStream()
    stream.ensure_group("g")
    event = make_event("s")
    timer = threading.Timer(0.05, stream.publish, args=(event,))
    timer.start()
    t = time.perf_counter()
    got = stream.read("g", "c", block_ms=2000)
    assert events(got) == [event]
    assert time.perf_counter() - t < 1.0
    t = time.perf_counter()
    assert stream.read("g", "c", block_ms=50) == []
    assert 0.04 < time.perf_counter() - t < 1.0


def test_redis_read_blocks_no_longer_than_the_socket_allows(redis_ns: RedisNamespace) -> None:
    stream = RedisStream.from_url(
        REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT, read_timeout=0.6
    )
    stream.ensure_group("g")
    t = time.perf_counter()
    # BLOCK 5000 would outlast the 0.6 s socket timeout and look like a dead server: it is
    # capped at half the read timeout, so the read returns empty instead of raising (0.3 s
    # of margin: a 0.2 s timeout left 0.1 s, which a loaded machine once overran)
    assert stream.read("g", "c", block_ms=5000) == []
    assert 0.2 < time.perf_counter() - t < 2.0


def test_redis_stream_keys_and_entry_format(redis_ns: RedisNamespace) -> None:
    stream = RedisStream.from_url(REDIS_URL, prefix=redis_ns.prefix, timeout=TEST_TIMEOUT)
    event = make_event("s", device="tablet")
    mid = stream.publish(event)
    assert stream.key == f"{redis_ns.prefix}events"
    ((got_id, fields),) = redis_ns.client.xrange(stream.key)
    assert got_id == mid
    assert set(fields) == {"event"}
    assert Event.model_validate_json(fields["event"]) == event


def test_with_redis_down_the_stream_fails_fast(silent_server: str) -> None:
    for url in (DOWN_URL, silent_server):
        stream = RedisStream.from_url(url)
        t = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            stream.publish(make_event("s"))
        assert time.perf_counter() - t < 0.5, url
        t = time.perf_counter()
        with pytest.raises(StoreUnavailable, match="circuit open"):
            stream.publish(make_event("s"))
        assert time.perf_counter() - t < 0.05  # no socket touched


class Switch:
    """A stream that is down (a ``RedisStream`` on a closed port) until ``up`` is set, then
    the real one: Redis going away and coming back without touching the real server."""

    def __init__(self, real: EventStream) -> None:
        self.real = real
        self.down = RedisStream.from_url(DOWN_URL, cooldown_s=0)
        self.up = False

    def publish(self, event: Event) -> str:
        return (self.real if self.up else self.down).publish(event)


def published_events(stream: EventStream) -> list[Event | None]:
    stream.ensure_group("check")
    return events(stream.read("check", "c", count=1000))


def test_buffered_events_are_published_in_order_when_redis_returns(backend: Backend) -> None:
    real = backend.stream()
    switch = Switch(real)
    pub = BufferedPublisher(switch, capacity=100)  # type: ignore[arg-type]
    sent = [make_event("s", second=i) for i in range(5)]
    assert [pub.publish(e).status for e in sent[:3]] == ["buffered"] * 3
    stats = pub.stats
    assert (stats.published, stats.buffered, stats.dropped, stats.buffered_total) == (0, 3, 0, 3)
    assert len(real) == 0
    assert pub.flush() == 0  # still down: nothing leaves the buffer
    switch.up = True
    result = pub.publish(sent[3])  # flushes the buffer first, then publishes behind it
    assert result.status == "published" and result.message_id
    assert pub.publish(sent[4]).status == "published"
    assert published_events(real) == sent
    stats = pub.stats
    assert (stats.published, stats.buffered, stats.dropped, stats.buffered_total) == (5, 0, 0, 3)


def test_a_full_buffer_drops_the_oldest_and_counts_it(backend: Backend) -> None:
    real = backend.stream()
    switch = Switch(real)
    pub = BufferedPublisher(switch, capacity=2, drop="oldest")  # type: ignore[arg-type]
    sent = [make_event("s", second=i) for i in range(5)]
    assert [pub.publish(e).status for e in sent] == ["buffered"] * 5
    assert (pub.stats.buffered, pub.stats.dropped) == (2, 3)
    switch.up = True
    assert pub.flush() == 2
    assert published_events(real) == sent[3:]
    assert (pub.stats.published, pub.stats.buffered, pub.stats.dropped) == (2, 0, 3)


def test_a_full_buffer_can_refuse_the_newest_instead(backend: Backend) -> None:
    real = backend.stream()
    switch = Switch(real)
    pub = BufferedPublisher(switch, capacity=2, drop="newest")  # type: ignore[arg-type]
    sent = [make_event("s", second=i) for i in range(4)]
    results = [pub.publish(e) for e in sent]
    assert results[2:] == [PublishResult("dropped"), PublishResult("dropped")]
    switch.up = True
    pub.flush()
    assert published_events(real) == sent[:2]
    assert (pub.stats.published, pub.stats.dropped) == (2, 2)


def test_publisher_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="capacity"):
        BufferedPublisher(MemoryStream(), capacity=0)
    with pytest.raises(ValueError, match="drop"):
        BufferedPublisher(MemoryStream(), drop="random")  # type: ignore[arg-type]
