"""Shared fixtures of the storefront infrastructure tests: the real Redis and PostgreSQL of
this machine (and of CI, where they must run: a missing service fails there and is skipped
only where ``CI`` is unset), and the in-process stand-ins.

A test module imports the fixtures it uses (``from tests.storefront.services import
backend_fixture``); each is registered under its ``name`` (here ``backend``), and none needs
another fixture, so importing the one used is enough.
Redis keys live under a unique prefix per test, deleted afterwards; PostgreSQL tables live in
a throwaway schema, dropped afterwards (as in tests/test_store.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from cxagent.storefront.events import Event
from cxagent.storefront.features import MemoryFeatureStore, RedisFeatureStore
from cxagent.storefront.logs import ExperimentLog
from cxagent.storefront.stream import MAXLEN, MemoryStream, RedisStream
from tests.pg import pg_schema, service_missing

REDIS_URL = os.environ.get("CXAGENT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused
TEST_TIMEOUT = 2.0  # socket timeout against the real Redis (the 50 ms default is for prod)
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


# --- time and events -----------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


_serial = itertools.count()


def make_event(
    session_id: str = "s-1", kind: str = "page_view", second: int = 0, **kw: Any
) -> Event:
    """An event ``second`` seconds after ``T0`` with a fresh ``event_id``."""
    data: dict[str, Any] = {
        "event_id": f"ev-{uuid.uuid4().hex[:12]}-{next(_serial)}",
        "session_id": session_id,
        "kind": kind,
        "ts": T0 + dt.timedelta(seconds=second),
    }
    if kind == "page_view":
        data.setdefault("page_type", "product")
        data.setdefault("product_id", f"p-{second}")
        data.setdefault("category", "brushes")
    data.update(kw)
    return Event(**data)


def session_events(session_id: str, n: int, start: int = 0) -> list[Event]:
    """A plausible session: page views with a cart add and a CTA click among them."""
    kinds = ["page_view", "page_view", "add_to_cart", "page_view", "cta_click"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        extra: dict[str, Any] = {"device": "mobile", "referrer": "https://pinterest.com/x"}
        if kind == "cta_click":
            extra["decision_id"] = f"d-{session_id}"
        out.append(make_event(session_id, kind, start + 7 * i, **extra))
    return out


# --- Redis ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisNamespace:
    client: redis.Redis  # a plain client (no prefix) for looking at the keys directly
    prefix: str  # this test's key prefix


@contextmanager
def redis_namespace() -> Iterator[RedisNamespace]:
    """A key prefix of one test alone on the real Redis; its keys are deleted afterwards."""
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        service_missing(f"Redis at {REDIS_URL}", exc)
    prefix = f"cxagent-test:{uuid.uuid4().hex[:10]}:"
    try:
        yield RedisNamespace(client, prefix)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(name="redis_ns")
def redis_ns_fixture() -> Iterator[RedisNamespace]:
    with redis_namespace() as ns:
        yield ns


class Backend:
    """The stream and feature store of one kind, as a restarted process would open them:
    ``memory`` hands out the same in-process objects (they live as long as the process),
    ``redis`` opens new clients on the same keys every time."""

    def __init__(self, kind: str, prefix: str = "") -> None:
        self.kind = kind
        self.prefix = prefix
        self.clock = FakeClock()
        self._stream: MemoryStream | None = None
        self._features: MemoryFeatureStore | None = None

    def stream(self, *, maxlen: int = MAXLEN) -> MemoryStream | RedisStream:
        if self.kind == "redis":
            return RedisStream.from_url(
                REDIS_URL,
                prefix=self.prefix,
                maxlen=maxlen,
                timeout=TEST_TIMEOUT,
                read_timeout=TEST_TIMEOUT,
            )
        if self._stream is None:
            self._stream = MemoryStream(maxlen=maxlen, clock=self.clock)
        return self._stream

    def features(self, **kw: Any) -> MemoryFeatureStore | RedisFeatureStore:
        if self.kind == "redis":
            return RedisFeatureStore.from_url(
                REDIS_URL, prefix=self.prefix, timeout=TEST_TIMEOUT, **kw
            )
        if self._features is None:
            self._features = MemoryFeatureStore(clock=self.clock, **kw)
        return self._features

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: the fake clock of the memory backend, real time for Redis."""
        if self.kind == "redis":
            time.sleep(seconds)
        else:
            self.clock.advance(seconds)


@pytest.fixture(params=["memory", "redis"], name="backend")
def backend_fixture(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend("memory")
        return
    with redis_namespace() as ns:
        yield Backend("redis", ns.prefix)


@pytest.fixture(name="silent_server")
def silent_server_fixture() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers (a hung Redis)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    sock.close()


# --- SQL -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"], name="experiment_log")
def experiment_log_fixture(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ExperimentLog]:
    """An ``ExperimentLog`` on a fresh SQLite file, then on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        log = ExperimentLog(f"sqlite:///{tmp_path / 'storefront.db'}")
        yield log
        log.close()
        return
    with pg_schema() as url:
        log = ExperimentLog(url)
        yield log
        log.close()


def wait_until(predicate: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
