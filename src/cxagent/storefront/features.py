"""The feature store: each live session's ``SessionFeatures``, folded from its events.

Two implementations of one ``FeatureStore`` protocol:

* ``RedisFeatureStore``: one key per session holding the features as JSON, expiring after
  ``ttl_s`` of inactivity (the TTL is refreshed on every write). An event is folded with an
  optimistic transaction (WATCH the session key and the event's dedup key, read, ``fold`` in
  Python, MULTI/SET/SET/EXEC, retry on conflict), so concurrent events of one session are never
  lost and the dedup record is written atomically with the effect.
* ``MemoryFeatureStore``: the same in a dict with expiry by an injectable clock, for the
  server-free demo and the tests.

``apply_once`` is the idempotent write the stream consumer uses: an event whose ``event_id``
was already applied (within ``dedup_ttl_s``) changes nothing. With Redis down, every call
raises ``StoreUnavailable`` within the socket timeout (50 ms by default, no retries), and for
``cooldown_s`` afterwards at once, so the service can fall back within its latency budget.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import Any, Final, NamedTuple, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cxagent.storefront.events import Event, SessionFeatures, fold

REDIS_URL_ENV: Final = "CXAGENT_REDIS_URL"
DEFAULT_PREFIX: Final = "cxagent:sf:"
SESSION_TTL_S: Final = 30 * 60.0  # a session expires after 30 minutes without events
DEDUP_TTL_S: Final = 24 * 3600.0  # how long an applied event_id is remembered
FAST_TIMEOUT_S: Final = 0.05  # connect and read timeout on the request path
COOLDOWN_S: Final = 0.5  # after a failure, fail at once for this long

Clock = Callable[[], float]


class StoreUnavailable(RuntimeError):
    """Redis (the feature store or the event stream) did not answer in time.

    Raised quickly (short socket timeouts, no retries, a short circuit breaker) so that the
    caller can fall back (a default persona, the publisher's buffer) within its latency budget.
    """


def redis_url() -> str | None:
    """``$CXAGENT_REDIS_URL``, or None: use the in-process stream and store."""
    return os.environ.get(REDIS_URL_ENV) or None


def redis_client(url: str, *, timeout: float = FAST_TIMEOUT_S) -> redis.Redis:
    """A client that fails fast: ``timeout`` seconds to connect and per reply, no retries."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        health_check_interval=0,
    )


class CircuitBreaker:
    """Turns Redis connection failures into ``StoreUnavailable``; after one, fails at once
    for ``cooldown_s`` (no socket is touched), then lets the next call try again."""

    def __init__(self, what: str, *, cooldown_s: float = COOLDOWN_S, clock: Clock = time.monotonic):
        self.what = what
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open_until = 0.0
        self.failures = 0

    @property
    def open(self) -> bool:
        return self._clock() < self._open_until

    @contextmanager
    def guard(self) -> Iterator[None]:
        if self.open:
            raise StoreUnavailable(f"{self.what}: unavailable (circuit open after a failure)")
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._trip()
            raise StoreUnavailable(f"{self.what}: {type(exc).__name__}: {exc}") from exc
        except redis.ResponseError as exc:
            if str(exc).split(" ", 1)[0] not in _TRANSIENT:
                raise
            self._trip()
            raise StoreUnavailable(f"{self.what}: {exc}") from exc
        self._open_until = 0.0

    def _trip(self) -> None:
        self.failures += 1
        self._open_until = self._clock() + self.cooldown_s


# Replies of a server that is up but cannot take writes now (out of memory, a read-only
# replica after a failover, a cluster reconfiguring): as good as down for the caller.
_TRANSIENT: Final = frozenset(
    {"OOM", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING"}
)


# --- serialisation -------------------------------------------------------------------------

_DATETIMES: Final = ("started_at", "last_at", "last_page_at")
_TUPLES: Final = ("products", "cart")  # JSON lists read back as tuples
_FIELDS: Final = frozenset(f.name for f in fields(SessionFeatures))


def features_to_json(features: SessionFeatures) -> str:
    """The features as JSON (datetimes in ISO 8601, time zone kept when given)."""
    data: dict[str, Any] = asdict(features)
    for name in _DATETIMES:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    for name in _TUPLES:
        data[name] = list(getattr(features, name))
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def features_from_json(text: str) -> SessionFeatures:
    """The features of ``features_to_json``. A record written before a field existed (e.g.
    ``cart``) loads with that field's default; fields no longer known are ignored."""
    data = {k: v for k, v in json.loads(text).items() if k in _FIELDS}
    for name in _DATETIMES:
        if data.get(name) is not None:
            data[name] = dt.datetime.fromisoformat(data[name])
    for name in _TUPLES:
        data[name] = tuple(data.get(name) or ())
    return SessionFeatures(**data)


# --- the protocol --------------------------------------------------------------------------


class Applied(NamedTuple):
    """The session's features after an event, and whether this call applied it (False: the
    event_id had been applied before and nothing changed)."""

    features: SessionFeatures
    applied: bool


class FeatureStore(Protocol):
    def get(self, session_id: str) -> SessionFeatures | None:
        """The session's features, or None if unknown or expired."""
        ...

    def apply(self, event: Event) -> SessionFeatures:
        """Fold the event into its session (idempotent on ``event_id``) and refresh the TTL."""
        ...

    def apply_once(self, event: Event) -> Applied:
        """``apply``, telling whether the event was new."""
        ...


# --- Redis ---------------------------------------------------------------------------------


class RedisFeatureStore:
    """Session features in Redis: ``{prefix}session:{<session_id>}`` holds the JSON features,
    ``{prefix}applied:{<session_id>}:<event_id>`` marks an applied event (hash tags keep both
    in one cluster slot, so the transaction also works on Redis Cluster)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = SESSION_TTL_S,
        dedup_ttl_s: float = DEDUP_TTL_S,
        cooldown_s: float = COOLDOWN_S,
        max_attempts: int = 100,
    ) -> None:
        if ttl_s <= 0 or dedup_ttl_s <= 0:
            raise ValueError("ttl_s and dedup_ttl_s must be positive")
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.dedup_ttl_s = dedup_ttl_s
        self.max_attempts = max_attempts
        self.breaker = CircuitBreaker("feature store (Redis)", cooldown_s=cooldown_s)

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = FAST_TIMEOUT_S, **kwargs: Any
    ) -> RedisFeatureStore:
        return cls(redis_client(url, timeout=timeout), **kwargs)

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}session:{{{session_id}}}"

    def dedup_key(self, event: Event) -> str:
        return f"{self.prefix}applied:{{{event.session_id}}}:{event.event_id}"

    def get(self, session_id: str) -> SessionFeatures | None:
        with self.breaker.guard():
            raw = self.client.get(self.session_key(session_id))
        return features_from_json(_text(raw)) if raw is not None else None

    def apply(self, event: Event) -> SessionFeatures:
        return self.apply_once(event).features

    def apply_once(self, event: Event) -> Applied:
        key, dedup = self.session_key(event.session_id), self.dedup_key(event)
        ttl_ms, dedup_ms = int(self.ttl_s * 1000), int(self.dedup_ttl_s * 1000)
        with self.breaker.guard(), self.client.pipeline() as pipe:
            for attempt in range(self.max_attempts):
                try:
                    pipe.watch(key, dedup)
                    values: Any = pipe.mget(key, dedup)
                    raw, seen = values
                    current = (
                        features_from_json(_text(raw))
                        if raw is not None
                        else SessionFeatures(session_id=event.session_id)
                    )
                    if seen is not None:
                        pipe.unwatch()
                        return Applied(current, False)
                    new = fold(current, event)
                    pipe.multi()
                    pipe.set(key, features_to_json(new), px=ttl_ms)
                    pipe.set(dedup, "1", px=dedup_ms)
                    pipe.execute()
                    return Applied(new, True)
                except redis.WatchError:
                    # another event of this session won the race: read again, after a short
                    # random pause so that a crowd of writers does not collide in lockstep
                    time.sleep(random.uniform(0, 0.0005) * min(attempt + 1, 10))
        raise RuntimeError(
            f"feature store: session {event.session_id!r} still contended after "
            f"{self.max_attempts} attempts"
        )


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# --- in process ----------------------------------------------------------------------------


class MemoryFeatureStore:
    """The feature store in a dict (one process), expiring by ``clock`` (seconds)."""

    def __init__(
        self,
        *,
        ttl_s: float = SESSION_TTL_S,
        dedup_ttl_s: float = DEDUP_TTL_S,
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or dedup_ttl_s <= 0:
            raise ValueError("ttl_s and dedup_ttl_s must be positive")
        self.ttl_s = ttl_s
        self.dedup_ttl_s = dedup_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[SessionFeatures, float]] = {}
        self._applied: dict[str, float] = {}
        self._writes = 0

    def __len__(self) -> int:
        """Live sessions."""
        now = self._clock()
        with self._lock:
            return sum(1 for _, until in self._sessions.values() if until > now)

    def get(self, session_id: str) -> SessionFeatures | None:
        with self._lock:
            return self._live(session_id, self._clock())

    def apply(self, event: Event) -> SessionFeatures:
        return self.apply_once(event).features

    def apply_once(self, event: Event) -> Applied:
        with self._lock:
            now = self._clock()
            current = self._live(event.session_id, now) or SessionFeatures(event.session_id)
            if self._applied.get(event.event_id, -1.0) > now:
                return Applied(current, False)
            new = fold(current, event)
            self._sessions[event.session_id] = (new, now + self.ttl_s)
            self._applied[event.event_id] = now + self.dedup_ttl_s
            self._writes += 1
            if self._writes % 1024 == 0:
                self._sweep(now)
            return Applied(new, True)

    def _live(self, session_id: str, now: float) -> SessionFeatures | None:
        found = self._sessions.get(session_id)
        if found is None:
            return None
        if found[1] <= now:
            del self._sessions[session_id]
            return None
        return found[0]

    def _sweep(self, now: float) -> None:
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        self._applied = {k: v for k, v in self._applied.items() if v > now}


# --- first-party profiles ------------------------------------------------------------------

PROFILE_TTL_S: Final = 365 * 86400.0  # a profile expires a year after its last session
PROFILE_SESSIONS: Final = 50  # a profile keeps the personas of the user's last sessions


def profile_shares(
    sessions: dict[str, tuple[str, float]], exclude: str | None
) -> dict[str, float] | None:
    """Persona -> share of the profile's sessions other than ``exclude`` (None: none)."""
    counts: dict[str, int] = {}
    for session_id, (persona, _) in sessions.items():
        if session_id != exclude:
            counts[persona] = counts.get(persona, 0) + 1
    total = sum(counts.values())
    return {p: n / total for p, n in sorted(counts.items())} if total else None


class ProfileStore(Protocol):
    """A logged-in visitor's persona history: the persona of each of their past sessions.

    ``record`` notes (or corrects) the persona of one session; ``history`` answers persona ->
    share of the user's sessions, leaving out ``exclude`` (the live session, which must not
    be its own prior), or None for a user without other sessions."""

    def history(self, user_id: str, *, exclude: str | None = None) -> dict[str, float] | None: ...

    def record(self, user_id: str, session_id: str, persona: str, at: float) -> None: ...


class RedisProfileStore:
    """Profiles in Redis: ``{prefix}profile:{<user_id>}`` is a hash of session id -> JSON
    ``[persona, at]``, expiring ``ttl_s`` after the last write, trimmed to the ``keep`` most
    recent sessions. Shares the feature store's client and circuit breaker, so with Redis
    down it fails as fast (``StoreUnavailable``)."""

    def __init__(
        self,
        client: redis.Redis,
        breaker: CircuitBreaker,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl_s: float = PROFILE_TTL_S,
        keep: int = PROFILE_SESSIONS,
    ) -> None:
        if ttl_s <= 0 or keep < 1:
            raise ValueError("ttl_s must be positive and keep at least 1")
        self.client, self.breaker = client, breaker
        self.prefix, self.ttl_s, self.keep = prefix, ttl_s, keep

    @classmethod
    def beside(cls, store: RedisFeatureStore, **kwargs: Any) -> RedisProfileStore:
        """The profile store on the feature store's Redis (same client, breaker, prefix)."""
        return cls(store.client, store.breaker, prefix=store.prefix, **kwargs)

    def key(self, user_id: str) -> str:
        return f"{self.prefix}profile:{{{user_id}}}"

    def _sessions(self, user_id: str) -> dict[str, tuple[str, float]]:
        with self.breaker.guard():
            raw: Any = self.client.hgetall(self.key(user_id))
        out = {}
        for field, value in raw.items():
            try:
                persona, at = json.loads(_text(value))
                out[_text(field)] = (str(persona), float(at))
            except (ValueError, TypeError):  # a malformed entry is skipped, not fatal
                continue
        return out

    def history(self, user_id: str, *, exclude: str | None = None) -> dict[str, float] | None:
        return profile_shares(self._sessions(user_id), exclude)

    def record(self, user_id: str, session_id: str, persona: str, at: float) -> None:
        key = self.key(user_id)
        with self.breaker.guard(), self.client.pipeline() as pipe:
            pipe.hset(key, session_id, json.dumps([persona, at]))
            pipe.pexpire(key, int(self.ttl_s * 1000))
            pipe.hlen(key)
            size = pipe.execute()[-1]
        if int(size) > self.keep:  # rare: drop the oldest sessions beyond the cap
            sessions = self._sessions(user_id)
            oldest = sorted(sessions, key=lambda s: sessions[s][1])[: len(sessions) - self.keep]
            if oldest:
                with self.breaker.guard():
                    self.client.hdel(key, *oldest)


class MemoryProfileStore:
    """Profiles in a dict (one process): the demo's and the tests' profile store."""

    def __init__(self, *, keep: int = PROFILE_SESSIONS) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.keep = keep
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, tuple[str, float]]] = {}

    def history(self, user_id: str, *, exclude: str | None = None) -> dict[str, float] | None:
        with self._lock:
            return profile_shares(dict(self._users.get(user_id, {})), exclude)

    def record(self, user_id: str, session_id: str, persona: str, at: float) -> None:
        with self._lock:
            sessions = self._users.setdefault(user_id, {})
            sessions[session_id] = (persona, at)
            if len(sessions) > self.keep:
                for old in sorted(sessions, key=lambda s: sessions[s][1])[: -self.keep]:
                    del sessions[old]
