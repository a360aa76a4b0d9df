"""The event stream: storefront events in a log read by consumer groups, at least once.

``EventStream`` is the interface the service and the consumer use; the design names Kafka,
and any log with consumer groups and per-message acknowledgement fits behind it (see
docs/storefront-infra.md). Two implementations:

* ``RedisStream``: a Redis Stream. ``publish`` is XADD with ``MAXLEN ~`` (bounded, trimmed in
  whole nodes); ``ensure_group`` creates the consumer group idempotently (MKSTREAM, BUSYGROUP
  ignored); ``read`` is XREADGROUP (new messages, ``>``), ``read_own_pending`` re-reads the
  messages this consumer received but never acknowledged (after a restart under the same
  name); ``claim`` is XAUTOCLAIM, taking over messages pending too long at a dead consumer;
  ``ack`` is XACK, to be called after the effect is persisted.
* ``MemoryStream``: the same semantics in one process (pending entries, acknowledgement,
  redelivery, delivery counts, trimming), for the server-free demo and the tests.

``BufferedPublisher`` wraps a stream for the request path: when the stream is unavailable,
events wait in a bounded in-memory queue and are published, in order, once it answers again;
when the queue is full the oldest (or the newest) event is dropped and counted.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import pydantic
import redis

from cxagent.storefront.events import Event
from cxagent.storefront.features import (
    COOLDOWN_S,
    DEFAULT_PREFIX,
    FAST_TIMEOUT_S,
    CircuitBreaker,
    Clock,
    StoreUnavailable,
    redis_client,
)

__all__ = [
    "BufferedPublisher",
    "Delivery",
    "EventStream",
    "MemoryStream",
    "PublishResult",
    "PublisherStats",
    "RedisStream",
    "StoreUnavailable",
]

MAXLEN: Final = 1_000_000  # entries kept (approximately) in the stream
FIELD: Final = "event"  # the stream entry's one field: the event as JSON


@dataclass(frozen=True)
class Delivery:
    """One delivery of a stream message to a consumer.

    ``event`` is None when the entry cannot be read as an ``Event`` (``raw`` holds its fields)
    or was trimmed from the stream while pending (``raw`` is empty); ``deliveries`` counts
    the deliveries of this message so far, this one included.
    """

    message_id: str
    event: Event | None
    deliveries: int = 1
    raw: dict[str, str] = field(default_factory=dict)


class EventStream(Protocol):
    def publish(self, event: Event) -> str:
        """Append the event; the returned message id means the stream has it."""
        ...

    def ensure_group(self, group: str) -> None:
        """Create the consumer group (reading from the stream's start) if it is missing."""
        ...

    def read(
        self, group: str, consumer: str, *, count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        """Messages never delivered to the group, now pending at ``consumer``."""
        ...

    def read_own_pending(self, group: str, consumer: str, *, count: int = 100) -> list[Delivery]:
        """Messages delivered to ``consumer`` and not acknowledged, oldest first."""
        ...

    def claim(
        self, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        """Take over messages pending at any consumer for at least ``min_idle_ms``."""
        ...

    def ack(self, group: str, message_ids: Sequence[str]) -> int:
        """Acknowledge processed messages; returns how many were pending."""
        ...

    def pending(self, group: str) -> int:
        """Messages delivered to the group and not acknowledged."""
        ...

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Keep a message that cannot be processed aside (the caller then acknowledges it)."""
        ...

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The messages set aside, oldest first (fields, ``message_id``, ``reason``)."""
        ...

    def __len__(self) -> int: ...


def _parse(message_id: str, fields: dict[str, str], deliveries: int = 1) -> Delivery:
    text = fields.get(FIELD)
    if text is None:
        return Delivery(message_id, None, deliveries, dict(fields))
    try:
        return Delivery(message_id, Event.model_validate_json(text), deliveries)
    except pydantic.ValidationError:
        return Delivery(message_id, None, deliveries, dict(fields))


def _dead_entry(delivery: Delivery, reason: str) -> dict[str, str]:
    """A dead letter: the message's fields as received, its id and why it was set aside."""
    entry = {**delivery.raw, "message_id": delivery.message_id, "reason": reason}
    if delivery.event is not None:
        entry[FIELD] = delivery.event.model_dump_json(exclude_none=True)
    return entry


# --- Redis ---------------------------------------------------------------------------------


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


class RedisStream:
    """A Redis Stream at ``{prefix}events`` (dead letters at ``{prefix}events:dead``).

    ``client`` serves publish/ack (the request path: short timeouts); ``reader`` (default:
    ``client``) serves the consumer's reads, whose ``block_ms`` is capped below its socket
    timeout so that a blocking read never looks like a dead server.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = MAXLEN,
        reader: redis.Redis | None = None,
        cooldown_s: float = COOLDOWN_S,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
        self.client = client
        self.reader = reader if reader is not None else client
        self.key = f"{prefix}events"
        self.dead_key = f"{prefix}events:dead"
        self.maxlen = maxlen
        self.breaker = CircuitBreaker("event stream (Redis)", cooldown_s=cooldown_s)
        timeout = self.reader.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_ms = None if timeout is None else max(int(timeout * 1000) // 2, 0)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = FAST_TIMEOUT_S,
        read_timeout: float = 2.0,
        **kwargs: Any,
    ) -> RedisStream:
        """Publish and acknowledge with ``timeout``; read with ``read_timeout``."""
        return cls(
            redis_client(url, timeout=timeout),
            reader=redis_client(url, timeout=read_timeout),
            **kwargs,
        )

    def publish(self, event: Event) -> str:
        with self.breaker.guard():
            mid = self.client.xadd(
                self.key,
                {FIELD: event.model_dump_json(exclude_none=True)},
                maxlen=self.maxlen,
                approximate=True,
            )
        return _s(mid)

    def ensure_group(self, group: str) -> None:
        with self.breaker.guard():
            try:
                self.client.xgroup_create(self.key, group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    def read(
        self, group: str, consumer: str, *, count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        block: int | None = block_ms if block_ms > 0 else None
        if block is not None and self._max_block_ms is not None:
            block = min(block, self._max_block_ms) or None
        with self.breaker.guard():
            reply: Any = self.reader.xreadgroup(
                group, consumer, {self.key: ">"}, count=count, block=block
            )
        return [_parse(_s(mid), _fields(f)) for _, entries in reply or [] for mid, f in entries]

    def read_own_pending(self, group: str, consumer: str, *, count: int = 100) -> list[Delivery]:
        with self.breaker.guard():
            reply: Any = self.reader.xreadgroup(group, consumer, {self.key: "0"}, count=count)
            entries = [(_s(mid), _fields(f)) for _, es in reply or [] for mid, f in es]
            counts = self._counts(group, consumer, [mid for mid, _ in entries])
        return [_parse(mid, f, counts.get(mid, 1)) for mid, f in entries]

    def claim(
        self, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        with self.breaker.guard():
            reply: Any = self.reader.xautoclaim(
                self.key, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count
            )
            # reply: [next cursor, [(id, fields)...], [ids trimmed meanwhile: dropped from PEL]]
            entries = [(_s(mid), _fields(f)) for mid, f in reply[1]]
            counts = self._counts(group, consumer, [mid for mid, _ in entries])
        return [_parse(mid, f, counts.get(mid, 1)) for mid, f in entries]

    def _counts(self, group: str, consumer: str, ids: list[str]) -> dict[str, int]:
        """Delivery counts of these pending messages (one XPENDING per id, one round trip)."""
        if not ids:
            return {}
        pipe = self.reader.pipeline(transaction=False)
        for mid in ids:
            pipe.xpending_range(self.key, group, min=mid, max=mid, count=1, consumername=consumer)
        replies: Any = pipe.execute()
        return {_s(r["message_id"]): int(r["times_delivered"]) for rows in replies for r in rows}

    def ack(self, group: str, message_ids: Sequence[str]) -> int:
        if not message_ids:
            return 0
        with self.breaker.guard():
            return int(self.client.xack(self.key, group, *message_ids))  # type: ignore[arg-type]

    def pending(self, group: str) -> int:
        with self.breaker.guard():
            info: Any = self.client.xpending(self.key, group)
        return int(info["pending"])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry = _dead_entry(delivery, reason)
        with self.breaker.guard():
            self.client.xadd(self.dead_key, entry, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        with self.breaker.guard():
            rows: Any = self.client.xrange(self.dead_key, count=count)
        return [_fields(f) for _, f in rows]

    def __len__(self) -> int:
        with self.breaker.guard():
            return int(self.client.xlen(self.key))  # type: ignore[arg-type]


# --- in process ----------------------------------------------------------------------------


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass
class _Group:
    last: int = 0  # sequence number of the last message delivered to the group
    pending: dict[int, _Pending] = field(default_factory=dict)


class MemoryStream:
    """The stream in one process, with Redis Streams' group semantics (ids ``<seq>-0``)."""

    def __init__(self, *, maxlen: int = MAXLEN, clock: Clock = time.monotonic) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
        self.maxlen = maxlen
        self._clock = clock
        self._entries: collections.OrderedDict[int, Event] = collections.OrderedDict()
        self._seq = 0
        self._groups: dict[str, _Group] = {}
        self._dead: list[dict[str, str]] = []
        self._cond = threading.Condition()

    @staticmethod
    def _id(seq: int) -> str:
        return f"{seq}-0"

    def _group(self, group: str) -> _Group:
        try:
            return self._groups[group]
        except KeyError:
            raise KeyError(f"NOGROUP: no consumer group {group!r}") from None

    def publish(self, event: Event) -> str:
        with self._cond:
            self._seq += 1
            self._entries[self._seq] = event
            while len(self._entries) > self.maxlen:
                self._entries.popitem(last=False)
            self._cond.notify_all()
            return self._id(self._seq)

    def ensure_group(self, group: str) -> None:
        with self._cond:
            self._groups.setdefault(group, _Group())

    def read(
        self, group: str, consumer: str, *, count: int = 100, block_ms: int = 0
    ) -> list[Delivery]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            g = self._group(group)
            while True:
                fresh = [s for s in self._entries if s > g.last][:count]
                if fresh or block_ms <= 0:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    fresh = [s for s in self._entries if s > g.last][:count]
                    break
            now = self._clock()
            for s in fresh:
                g.pending[s] = _Pending(consumer, now, 1)
            if fresh:
                g.last = fresh[-1]
            return [Delivery(self._id(s), self._entries[s]) for s in fresh]

    def read_own_pending(self, group: str, consumer: str, *, count: int = 100) -> list[Delivery]:
        with self._cond:
            g = self._group(group)
            now = self._clock()
            out = []
            for s in sorted(g.pending):
                p = g.pending[s]
                if p.consumer != consumer:
                    continue
                p.delivered_at, p.deliveries = now, p.deliveries + 1
                out.append(Delivery(self._id(s), self._entries.get(s), p.deliveries))
                if len(out) == count:
                    break
            return out

    def claim(
        self, group: str, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[Delivery]:
        with self._cond:
            g = self._group(group)
            now = self._clock()
            out = []
            for s in sorted(g.pending):
                p = g.pending[s]
                if (now - p.delivered_at) * 1000 < min_idle_ms:
                    continue
                if s not in self._entries:  # trimmed while pending: XAUTOCLAIM drops it
                    del g.pending[s]
                    continue
                g.pending[s] = _Pending(consumer, now, p.deliveries + 1)
                out.append(Delivery(self._id(s), self._entries[s], p.deliveries + 1))
                if len(out) == count:
                    break
            return out

    def ack(self, group: str, message_ids: Sequence[str]) -> int:
        with self._cond:
            g = self._group(group)
            done = 0
            for mid in message_ids:
                if g.pending.pop(int(mid.split("-")[0]), None) is not None:
                    done += 1
            return done

    def pending(self, group: str) -> int:
        with self._cond:
            return len(self._group(group).pending)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        entry = _dead_entry(delivery, reason)
        with self._cond:
            self._dead.append(entry)

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        with self._cond:
            return [dict(d) for d in self._dead[:count]]

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)


# --- the publisher of the request path -----------------------------------------------------

PublishStatus = Literal["published", "buffered", "dropped"]


@dataclass(frozen=True)
class PublishResult:
    """``published``: the stream has the event (``message_id``). ``buffered``: the stream is
    unavailable and the event waits in this process's memory (lost if the process dies).
    ``dropped``: the buffer was full and this event was dropped (policy ``drop="newest"``)."""

    status: PublishStatus
    message_id: str | None = None


@dataclass(frozen=True)
class PublisherStats:
    published: int  # events the stream accepted (directly or from the buffer)
    buffered: int  # events waiting in the buffer now
    dropped: int  # events dropped because the buffer was full
    buffered_total: int  # events that ever went through the buffer
    capacity: int


class BufferedPublisher:
    """Publishes to ``stream``; while it is unavailable, keeps events in a bounded queue.

    Order is kept: while the buffer holds events, new events queue behind them, and each
    ``publish`` or ``flush`` first tries to empty the buffer (oldest first, stopping at the
    first failure). When the buffer is full, ``drop="oldest"`` drops the oldest waiting event
    to make room, ``drop="newest"`` refuses the new one; either way ``dropped`` counts it.
    """

    def __init__(
        self,
        stream: EventStream,
        *,
        capacity: int = 10_000,
        drop: Literal["oldest", "newest"] = "oldest",
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        if drop not in ("oldest", "newest"):
            raise ValueError(f"drop: 'oldest' or 'newest', not {drop!r}")
        self.stream = stream
        self.capacity = capacity
        self.drop = drop
        self._buffer: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()
        self._published = 0
        self._dropped = 0
        self._buffered_total = 0

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                published=self._published,
                buffered=len(self._buffer),
                dropped=self._dropped,
                buffered_total=self._buffered_total,
                capacity=self.capacity,
            )

    def publish(self, event: Event) -> PublishResult:
        with self._lock:
            if self._buffer:
                self._flush()
            if not self._buffer:
                try:
                    mid = self.stream.publish(event)
                except StoreUnavailable:
                    pass
                else:
                    self._published += 1
                    return PublishResult("published", mid)
            return self._enqueue(event)

    def flush(self) -> int:
        """Publish buffered events in order until the buffer is empty or the stream fails;
        returns how many were published."""
        with self._lock:
            return self._flush()

    def _flush(self) -> int:
        sent = 0
        while self._buffer:
            try:
                self.stream.publish(self._buffer[0])
            except StoreUnavailable:
                break
            self._buffer.popleft()
            self._published += 1
            sent += 1
        return sent

    def _enqueue(self, event: Event) -> PublishResult:
        if len(self._buffer) >= self.capacity:
            self._dropped += 1
            if self.drop == "newest":
                return PublishResult("dropped")
            self._buffer.popleft()
        self._buffer.append(event)
        self._buffered_total += 1
        return PublishResult("buffered")
