"""The idempotent stream consumer: events -> session features (and outcome handlers).

The stream delivers at least once; the consumer makes the effect happen once. For each
message it (1) folds the event into the feature store with ``apply_once``, which checks and
sets the event's dedup record atomically with the features (a redelivered event is recognised
and skipped), (2) hands outcome events (impressions, clicks, cart adds, purchases) to
``on_outcome``, and
(3) acknowledges the batch only after that, so a crash anywhere before the ack redelivers the
messages (to this consumer after a restart under the same name, or to another one that claims
them once they were idle for ``claim_idle_ms``) and the dedup skips what was already applied.

``on_outcome`` is called at least once per outcome event (again on a redelivery): give it an
idempotent handler, e.g. ``ExperimentLog.record_event`` (insert-or-ignore on ``event_id``),
and let anything kept only in memory (a bandit's posterior) follow what that handler reports
as newly inserted, rebuilt from the log on a restart.

A message whose processing raised stays pending and is claimed again once idle for
``claim_idle_ms``; one that cannot be read as an ``Event``, or failed ``max_deliveries`` times,
is set aside with ``stream.dead_letter`` and acknowledged; one trimmed from the stream
while pending (the stream's ``maxlen`` was too small for the backlog) is counted as ``lost``.

``Pipeline`` wires the pieces for the HTTP service: a stream and a ``BufferedPublisher`` for
the request path, a fast-failing feature store for classification, and a consumer with its own
(more patient) connections, run in a background thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Final

from cxagent.storefront.events import Event, SessionFeatures
from cxagent.storefront.features import (
    DEFAULT_PREFIX,
    FeatureStore,
    MemoryFeatureStore,
    MemoryProfileStore,
    ProfileStore,
    RedisFeatureStore,
    RedisProfileStore,
    StoreUnavailable,
)
from cxagent.storefront.stream import (
    BufferedPublisher,
    Delivery,
    EventStream,
    MemoryStream,
    RedisStream,
)

log = logging.getLogger(__name__)

GROUP: Final = "features"
OUTCOME_KINDS: Final = frozenset(
    {"impression", "hero_click", "cta_click", "rec_click", "add_to_cart", "purchase"}
)

OutcomeHandler = Callable[[Event, SessionFeatures], object]


def default_consumer_name() -> str:
    """``<host>-<pid>``: unique per process. A consumer restarted under a new name finds its
    predecessor's unacknowledged messages by claiming them once idle."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerStats:
    """Counters since the consumer was created."""

    delivered: int = 0  # deliveries received (redeliveries included)
    applied: int = 0  # events folded into the features for the first time
    duplicates: int = 0  # redelivered or republished events skipped by the dedup
    outcomes: int = 0  # calls of on_outcome
    failed: int = 0  # deliveries whose processing raised (left pending, retried)
    dead_lettered: int = 0  # unreadable or repeatedly failing messages set aside
    lost: int = 0  # messages trimmed from the stream before they were processed
    acked: int = 0
    claimed: int = 0  # deliveries taken over from another (idle) consumer
    recovered: int = 0  # own pending deliveries re-read (after a restart or a failure)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class BatchResult:
    deliveries: int
    applied: int
    duplicates: int
    acked: int


class Consumer:
    """Reads ``stream`` as ``name`` in ``group`` and applies each event once to ``features``."""

    def __init__(
        self,
        stream: EventStream,
        features: FeatureStore,
        *,
        group: str = GROUP,
        name: str | None = None,
        on_outcome: OutcomeHandler | None = None,
        outcome_kinds: frozenset[str] = OUTCOME_KINDS,
        batch: int = 100,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
    ) -> None:
        if batch < 1 or claim_idle_ms < 0 or max_deliveries < 1:
            raise ValueError("batch and max_deliveries must be positive, claim_idle_ms >= 0")
        self.stream = stream
        self.features = features
        self.group = group
        self.name = name or default_consumer_name()
        self.on_outcome = on_outcome
        self.outcome_kinds = outcome_kinds
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self.stats = ConsumerStats()
        self._started = False
        self._own_pending = True  # re-read own unacknowledged messages first

    def start(self) -> None:
        """Create the consumer group if missing (idempotent)."""
        self.stream.ensure_group(self.group)
        self._started = True

    def poll(self, *, block_ms: int = 0) -> BatchResult:
        """One round: own unacknowledged messages first (after a start or a failure), else
        messages idle at other consumers for ``claim_idle_ms``, else new ones (waiting up to
        ``block_ms``). Raises ``StoreUnavailable`` when Redis is down (nothing is lost: what
        was not acknowledged is delivered again)."""
        if not self._started:
            self.start()
        deliveries: list[Delivery] = []
        if self._own_pending:
            deliveries = self.stream.read_own_pending(self.group, self.name, count=self.batch)
            self.stats.recovered += len(deliveries)
            self._own_pending = len(deliveries) == self.batch
        if not deliveries:
            deliveries = self.stream.claim(
                self.group, self.name, min_idle_ms=self.claim_idle_ms, count=self.batch
            )
            self.stats.claimed += len(deliveries)
        if not deliveries:
            deliveries = self.stream.read(
                self.group, self.name, count=self.batch, block_ms=block_ms
            )
        return self.process(deliveries)

    def drain(self, *, max_rounds: int = 10_000) -> int:
        """Poll until a round finds nothing; returns the deliveries processed."""
        total = 0
        for _ in range(max_rounds):
            result = self.poll()
            if result.deliveries == 0:
                break
            total += result.deliveries
        return total

    def process(self, deliveries: Sequence[Delivery]) -> BatchResult:
        """Apply each delivery once, then acknowledge the ones done in one call."""
        done: list[str] = []
        applied = duplicates = 0
        unavailable: StoreUnavailable | None = None
        for d in deliveries:
            self.stats.delivered += 1
            if d.event is None:
                if d.raw:
                    self.stream.dead_letter(d, "unreadable: not an Event")
                    self.stats.dead_lettered += 1
                else:
                    log.warning(
                        "stream message %s was trimmed before it was processed", d.message_id
                    )
                    self.stats.lost += 1
                done.append(d.message_id)
                continue
            if d.deliveries > self.max_deliveries:
                self.stream.dead_letter(d, f"failed {d.deliveries - 1} deliveries")
                self.stats.dead_lettered += 1
                done.append(d.message_id)
                continue
            try:
                first = self._handle(d.event)
            except StoreUnavailable as exc:
                unavailable = exc  # the rest stay pending: re-read first on the next poll
                self._own_pending = True
                break
            except Exception:
                log.exception("event %s (message %s) failed", d.event.event_id, d.message_id)
                # left pending: claimed again (by any consumer) once idle for claim_idle_ms,
                # so a passing outage (the log's database) has max_deliveries x that to heal
                self.stats.failed += 1
                continue
            applied += first
            duplicates += not first
            done.append(d.message_id)
        acked = self.stream.ack(self.group, done) if done else 0
        self.stats.acked += acked
        if unavailable is not None:
            raise unavailable
        return BatchResult(len(deliveries), applied, duplicates, acked)

    def _handle(self, event: Event) -> bool:
        result = self.features.apply_once(event)
        if result.applied:
            self.stats.applied += 1
        else:
            self.stats.duplicates += 1
        if self.on_outcome is not None and event.kind in self.outcome_kinds:
            self.on_outcome(event, result.features)
            self.stats.outcomes += 1
        return result.applied

    def run(self, stop: threading.Event, *, block_ms: int = 500, backoff_s: float = 1.0) -> None:
        """Poll until ``stop`` is set; while Redis is down, retry every ``backoff_s``."""
        while not stop.is_set():
            try:
                self.poll(block_ms=block_ms)
            except StoreUnavailable as exc:
                log.warning("consumer %s: %s; retrying in %.1f s", self.name, exc, backoff_s)
                stop.wait(backoff_s)


@dataclass
class Pipeline:
    """The storefront's event path, wired for the HTTP service.

    ``publisher.publish(event)`` on the request path; ``features.get(session_id)`` to classify
    (raises ``StoreUnavailable`` fast: fall back); ``start()`` runs the consumer (and flushes
    the publisher's buffer) in a background thread until ``stop()``.
    """

    stream: EventStream
    publisher: BufferedPublisher
    features: FeatureStore
    consumer: Consumer
    profiles: ProfileStore = field(default_factory=MemoryProfileStore)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, *, block_ms: int = 200) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(block_ms,), name="storefront-consumer", daemon=True
        )
        self._thread.start()

    def _loop(self, block_ms: int) -> None:
        while not self._stop.is_set():
            try:
                self.publisher.flush()
                self.consumer.poll(block_ms=block_ms)
            except StoreUnavailable as exc:
                log.warning("storefront pipeline: %s", exc)
                self._stop.wait(1.0)
            except Exception:  # keep the worker alive; the messages stay pending
                log.exception("storefront pipeline: consumer round failed")
                self._stop.wait(1.0)

    def stop(self, timeout: float = 5.0) -> int:
        """Stop the worker and try a last flush of the publisher's buffer; returns how many
        buffered events are still unpublished (lost when the process exits: logged)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.publisher.flush()
        left = self.publisher.stats.buffered
        if left:
            log.error("storefront pipeline stopped with %d events unpublished in the buffer", left)
        return left

    def status(self) -> dict[str, object]:
        """Counters for a health endpoint: the publisher's buffer and the consumer."""
        pub = self.publisher.stats
        return {
            "publisher": {
                "published": pub.published,
                "buffered": pub.buffered,
                "dropped": pub.dropped,
                "buffered_total": pub.buffered_total,
                "capacity": pub.capacity,
            },
            "consumer": self.consumer.stats.as_dict(),
        }


def open_pipeline(
    redis_url: str | None,
    *,
    prefix: str = DEFAULT_PREFIX,
    on_outcome: OutcomeHandler | None = None,
    consumer_name: str | None = None,
    buffer_capacity: int = 10_000,
    claim_idle_ms: int = 30_000,
) -> Pipeline:
    """Redis at ``redis_url`` (e.g. ``features.redis_url()``), or in process when None."""
    if redis_url is None:
        mem_stream = MemoryStream()
        mem_features = MemoryFeatureStore()
        stream: EventStream = mem_stream
        features: FeatureStore = mem_features
        profiles: ProfileStore = MemoryProfileStore()
        consumer = Consumer(
            mem_stream,
            mem_features,
            name=consumer_name,
            on_outcome=on_outcome,
            claim_idle_ms=claim_idle_ms,
        )
    else:
        stream = RedisStream.from_url(redis_url, prefix=prefix)
        redis_features = RedisFeatureStore.from_url(redis_url, prefix=prefix)
        features = redis_features
        profiles = RedisProfileStore.beside(redis_features)
        consumer = Consumer(
            RedisStream.from_url(redis_url, prefix=prefix, timeout=1.0, read_timeout=2.0),
            RedisFeatureStore.from_url(redis_url, prefix=prefix, timeout=1.0),
            name=consumer_name,
            on_outcome=on_outcome,
            claim_idle_ms=claim_idle_ms,
        )
    return Pipeline(
        stream=stream,
        publisher=BufferedPublisher(stream, capacity=buffer_capacity),
        features=features,
        consumer=consumer,
        profiles=profiles,
    )
