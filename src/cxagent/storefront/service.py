"""The storefront agent's HTTP service: events in, persona, bandit decisions and
recommendations out, the demo shop with its concierge widget, and the analytics view.

``create_app(settings)`` builds everything from ``StorefrontSettings`` (or injected parts,
for tests): the event pipeline (``consumer.open_pipeline``: Redis when ``redis_url`` is set,
else in process), the experiment logs (``logs.ExperimentLog``: SQLite by default), the persona
model (shipped) with its persona priors per acquisition channel (``persona.ChannelPriors``,
learned from the shop's confident sessions, rebuilt from the logs at start), the bandit
(``bandit.Bandit``, its counts rebuilt from the logs at start), the advisor (shipped
catalog). The pipeline's consumer runs in the app's lifespan, with a small thread that
writes the engagement tracker's dirty session summaries to the log database
(``storefront_sessions``) every ``engagement_flush_s`` (5 s), and once more at stop, and
one that feeds the bandit the outcomes every worker logged (``sync_bandit``, every
``bandit_sync_s``), so several service processes on one log database all learn from every
outcome, once.

Endpoints (docs/storefront.md):

* ``POST /v1/events``: one ``Event``; 202 with the publish status (``published`` or
  ``buffered`` while Redis is down), 503 when the buffer dropped it.
* ``POST /v1/persona``: ``{session_id}`` -> persona, probabilities and micro-segment, read
  from the feature store, and the channel prior used (if any); when the store is down, the
  model's fallback, saying so.
* ``POST /v1/decide``: ``{session_id, slot}`` -> the arm to show (the bandit's choice, or the
  default for the control holdout), its propensity and the ``decision_id`` the page sends
  back with its impression (once the slot is in view) and its clicks. Every decision is
  logged; its impression is the page's ``impression`` event, or with ``impressions =
  "served"`` (clients that never report one) logged at once as served.
* ``GET /v1/recommendations``: the advisor's carousel, tutorial and checkout add-ons; the
  cart is the ``cart`` parameter when given, else the session's cart from the features.
* ``GET /v1/health``, ``GET /v1/analytics``; pages ``/storefront...`` and ``/analytics``.

Outcome events (impressions, hero/CTA clicks, cart adds and purchases carrying a
``decision_id``) reach the logs through the consumer (``ExperimentLog.record_event``,
idempotent on ``event_id``), and the bandit counts one only when the log reports it newly
recorded. The bandit's funnel is nested (a click implies the impression), so a click that
arrives before its impression counts both stages once and the impression then changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import jinja2
import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cxagent.storefront import analytics
from cxagent.storefront.advisor import Advisor, Catalog, shipped_catalog
from cxagent.storefront.bandit import Bandit, BanditConfig, Decision, Outcome, Segment
from cxagent.storefront.consumer import Pipeline, open_pipeline
from cxagent.storefront.events import Device, Event, SessionFeatures
from cxagent.storefront.features import (
    DEFAULT_PREFIX,
    Applied,
    FeatureStore,
    StoreUnavailable,
    redis_url,
)
from cxagent.storefront.logs import (
    EVENT_OUTCOME,
    ExperimentLog,
    LoggedOutcome,
    SessionSummary,
    default_url,
)
from cxagent.storefront.persona import (
    ChannelPrior,
    ChannelPriors,
    PersonaModel,
    PersonaResult,
    shipped_model,
)

log = logging.getLogger("cxagent.storefront")

Slot = Literal["hero", "cta"]
ImpressionMode = Literal["reported", "served"]
IMPRESSION_MODES: Final = ("reported", "served")
HOLDOUT_ENV: Final = "CXAGENT_STOREFRONT_HOLDOUT"
IMPRESSIONS_ENV: Final = "CXAGENT_STOREFRONT_IMPRESSIONS"
FLUSH_ENV: Final = "CXAGENT_STOREFRONT_ENGAGEMENT_FLUSH_S"
SYNC_ENV: Final = "CXAGENT_STOREFRONT_BANDIT_SYNC_S"
SYNC_BATCH: Final = 1000  # logged outcomes read per query by the bandit sync
SYNC_GAP_S: Final = 60.0  # how long the sync waits for a seq missing below its cursor
SYNC_MAX_GAPS: Final = 10_000  # seqs waited for at most (the oldest are given up first)
FLUSH_CHUNK: Final = 500  # session summaries per write (SQLite: the write lock is let go between)
CONTROL: Final = analytics.CONTROL
CONTROL_PREFIX: Final = "ctl-"  # decision ids of the control holdout

# The variants the bandit chooses between; the first of each slot is the default (control).
HERO_ARMS: Final[dict[str, dict[str, str]]] = {
    "hero-studio": {
        "headline": "Your studio, ready when you are",
        "subline": "Cameras, pen displays and paper, picked by working creatives.",
        "button": "Explore the studio",
        "href": "/storefront/c/photo-cameras",
        "theme": "dusk",
    },
    "hero-sketch": {
        "headline": "Sketch something tonight",
        "subline": "Pens, paper and brushes that make the first line easy.",
        "button": "Start sketching",
        "href": "/storefront/c/supplies-pens",
        "theme": "paper",
    },
    "hero-learn": {
        "headline": "Learn a new craft this week",
        "subline": "Free tutorials with every kit: raw editing, lettering, watercolour.",
        "button": "Browse tutorials",
        "href": "/storefront/learn/lq-learn-raw",
        "theme": "mint",
    },
}
CTA_ARMS: Final[dict[str, dict[str, str]]] = {
    "cta-shop": {"text": "Shop the new collection", "href": "/storefront/c/vector-tablets"},
    "cta-trial": {"text": "Try Prism free for 14 days", "href": "/storefront/p/lq-prism-monthly"},
    "cta-bundle": {"text": "Build my starter kit", "href": "/storefront/p/lq-studio-bundle"},
}
ARMS: Final[dict[str, dict[str, dict[str, str]]]] = {"hero": HERO_ARMS, "cta": CTA_ARMS}
DEFAULT_ARM: Final[dict[str, str]] = {slot: next(iter(arms)) for slot, arms in ARMS.items()}
ENDPOINTS: Final = frozenset(
    {
        "/v1/events",
        "/v1/persona",
        "/v1/decide",
        "/v1/recommendations",
        "/v1/health",
        "/v1/analytics",
    }
)
_CHANNEL_CHARS = re.compile(r"[^a-z0-9_.-]+")
UNKNOWN_CHANNEL: Final = "unknown"  # a session without features: no channel prior, not counted
PROFILED_MEMORY: Final = 100_000  # sessions whose persona was last written to a profile

SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StorefrontSettings:
    """What the service is wired to; ``from_env`` reads the environment."""

    redis_url: str | None = None  # None: in-process stream and feature store
    db_url: str | None = None  # experiment logs; None: $CXAGENT_STOREFRONT_DB_URL or storefront.db
    prefix: str = DEFAULT_PREFIX  # Redis key prefix
    holdout: float = 0.1  # share of sessions in the control group
    # "reported": a decision's impression is the page's impression event (the slot was shown);
    # "served": serving is the impression (for clients that never report one)
    impressions: ImpressionMode = "reported"
    consumer_name: str | None = None
    bandit: BanditConfig = field(default_factory=BanditConfig)
    catalog_path: Path | None = None  # None: the shipped demo catalog
    latency_samples: int = 4096
    restore_limit: int = 200_000  # decisions replayed into the bandit at start
    buffer_capacity: int = 10_000
    # seconds between writes of the dirty session summaries to storefront_sessions
    engagement_flush_s: float = 5.0
    # seconds between reads of the outcomes every worker logged (the bandit sync)
    bandit_sync_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"holdout: a share in [0, 1), got {self.holdout!r}")
        if self.impressions not in IMPRESSION_MODES:
            raise ValueError(
                f"impressions: one of {', '.join(IMPRESSION_MODES)}, got {self.impressions!r}"
            )
        if not (math.isfinite(self.engagement_flush_s) and self.engagement_flush_s > 0):
            raise ValueError(f"engagement_flush_s: seconds > 0, got {self.engagement_flush_s!r}")
        if not (math.isfinite(self.bandit_sync_s) and self.bandit_sync_s > 0):
            raise ValueError(f"bandit_sync_s: seconds > 0, got {self.bandit_sync_s!r}")

    @classmethod
    def from_env(cls, **overrides: Any) -> StorefrontSettings:
        values: dict[str, Any] = {"redis_url": redis_url()}
        if raw := os.environ.get(HOLDOUT_ENV):
            try:
                values["holdout"] = float(raw)
            except ValueError as exc:
                raise ValueError(f"{HOLDOUT_ENV}: a number in [0, 1), got {raw!r}") from exc
        if raw := os.environ.get(IMPRESSIONS_ENV):
            if raw not in IMPRESSION_MODES:
                raise ValueError(
                    f"{IMPRESSIONS_ENV}: one of {', '.join(IMPRESSION_MODES)}, got {raw!r}"
                )
            values["impressions"] = raw
        if raw := os.environ.get(FLUSH_ENV):
            try:
                values["engagement_flush_s"] = float(raw)
            except ValueError as exc:
                raise ValueError(f"{FLUSH_ENV}: seconds > 0, got {raw!r}") from exc
        if raw := os.environ.get(SYNC_ENV):
            try:
                values["bandit_sync_s"] = float(raw)
            except ValueError as exc:
                raise ValueError(f"{SYNC_ENV}: seconds > 0, got {raw!r}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# --------------------------------------------------------------------------- request bodies


class PersonaRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=64)
    device: Device | None = Field(default=None, description="Used when the session has none yet.")


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(min_length=1, max_length=64)
    slot: Slot
    device: Device | None = Field(default=None, description="Used when the session has none yet.")


# --------------------------------------------------------------------------- errors


class ServiceError(Exception):
    def __init__(self, status: int, type_: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.field = field


def error_body(type_: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "field": field}}


def _loc_field(loc: Any) -> str:
    parts = [str(p) for p in loc[1:] if not isinstance(p, int)] if len(loc) > 1 else []
    return ".".join(parts) or str(loc[0] if loc else "body")


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/v1/")


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for e in exc.errors():
        name = _loc_field(e.get("loc", ()))
        msg = str(e.get("msg", "invalid value"))
        if e.get("type") == "missing":
            msg = "field required"
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field"
        problems.append({"field": name, "message": msg})
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    body = error_body("validation_error", f"{first['field']}: {first['message']}", first["field"])
    body["error"]["details"] = problems
    return JSONResponse(body, status_code=422)


async def _on_service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if _wants_html(request) and exc.status == 404:
        return HTMLResponse(_NOT_FOUND_HTML.format(message=exc.message), status_code=404)
    return JSONResponse(error_body(exc.type, exc.message, exc.field), status_code=exc.status)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"nothing at {request.url.path}"
        if _wants_html(request):
            return HTMLResponse(_NOT_FOUND_HTML.format(message=message), status_code=404)
        return JSONResponse(error_body("not_found", message), status_code=404)
    if exc.status_code == 400:  # an undecodable body
        body = error_body("validation_error", f"body: {exc.detail}", "body")
        return JSONResponse(body, status_code=422)
    type_ = {405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(type_, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        error_body("internal_error", "internal error: see the server log"), status_code=500
    )


_NOT_FOUND_HTML = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Not found</title>"
    "<link rel='stylesheet' href='/static/storefront.css'></head><body class='plain'>"
    "<main class='wrap'><h1>Not found</h1><p>{message}</p>"
    "<p><a href='/storefront'>Back to the shop</a></p></main></body></html>"
)


# --------------------------------------------------------------------------- middleware


class TimingMiddleware:
    """Records each API endpoint's latency (request in to last byte out) and adds the
    security headers. Plain ASGI: no re-streaming of bodies."""

    def __init__(self, app: ASGIApp, recorder: analytics.LatencyRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path: str = scope["path"]
        endpoint = f"{scope['method']} {path}" if path in ENDPOINTS else None
        static = path.startswith("/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for name, value in SECURITY_HEADERS.items():
                    headers.append((name.lower().encode(), value.encode()))
                if not any(k == b"cache-control" for k, _ in headers):
                    cache = b"public, max-age=3600" if static else b"no-store"
                    headers.append((b"cache-control", cache))
                message = {**message, "headers": headers}
            await send(message)
            if (
                endpoint is not None
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                self.recorder.record(endpoint, time.perf_counter() - started)

        await self.app(scope, receive, wrapped)


# --------------------------------------------------------------------------- the engine


class _ObservedStore:
    """The consumer's feature store, telling the engagement tracker about each session
    whose features an event changed (applied for the first time: duplicates are not)."""

    def __init__(self, inner: FeatureStore, observe: Callable[[SessionFeatures], None]) -> None:
        self.inner = inner
        self.observe = observe

    def get(self, session_id: str) -> SessionFeatures | None:
        return self.inner.get(session_id)

    def apply(self, event: Event) -> SessionFeatures:
        return self.apply_once(event).features

    def apply_once(self, event: Event) -> Applied:
        result = self.inner.apply_once(event)
        if result.applied:
            self.observe(result.features)
        return result


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _logged_decision(decision_id: str, row: dict[str, Any]) -> Decision | None:
    """The bandit's ``Decision`` rebuilt from its logged fields (slot, arm, propensity,
    segment, burn-in); None for an arm retired since or a segment the bandit refuses."""
    slot, arm = str(row["slot"]), str(row["arm"])
    if slot not in ARMS or arm not in ARMS[slot]:
        return None
    try:
        segment = Segment(str(row["persona"]), str(row["device"]), str(row["channel"]))
    except ValueError:
        return None
    return Decision(
        decision_id=decision_id,
        slot=slot,
        arm=arm,
        propensity=float(row["propensity"]),
        segment=segment,
        policy_version=0,
        burn_in=bool(row["burn_in"]),
    )


def _channel(value: str | None) -> str:
    text = _CHANNEL_CHARS.sub("-", (value or "").lower()).strip("-")[:32]
    return text or UNKNOWN_CHANNEL


SyncResult = Literal["counted", "duplicate", "unknown", "skipped", "control"]


@dataclass
class BanditSync:
    """Where this worker's bandit stands in the outcomes every worker logged
    (``storefront_outcomes.seq``), and what its syncs did. ``gaps``: seqs missing below the
    cursor, with when they were first missed (on PostgreSQL a transaction that took its seq
    may commit after a later one: the sync reads them again until ``SYNC_GAP_S``)."""

    cursor: int = 0
    gaps: dict[int, float] = field(default_factory=dict)
    syncs: int = 0
    rows: int = 0
    counted: int = 0
    duplicates: int = 0
    skipped: int = 0  # decisions the bandit cannot count from zero, or of a retired arm
    control: int = 0
    failures: int = 0
    last_error: str | None = None
    last_failure_at: str | None = None
    last_sync_at: str | None = None
    last_sync_mono: float | None = None

    def passed(self, seq: int, now: float) -> None:
        """A row ``seq`` was read: it is no gap any more; what it skipped over is."""
        self.gaps.pop(seq, None)
        if seq <= self.cursor:
            return
        for missing in range(max(self.cursor + 1, seq - SYNC_MAX_GAPS), seq):
            self.gaps.setdefault(missing, now)
        self.cursor = seq
        if len(self.gaps) > SYNC_MAX_GAPS:  # the oldest are given up
            for missing in sorted(self.gaps)[: len(self.gaps) - SYNC_MAX_GAPS]:
                del self.gaps[missing]

    def expire(self, now: float) -> None:
        for seq in [n for n, since in self.gaps.items() if now - since > SYNC_GAP_S]:
            del self.gaps[seq]

    def note(self, result: SyncResult) -> None:
        self.rows += 1
        if result == "counted":
            self.counted += 1
        elif result == "duplicate":
            self.duplicates += 1
        elif result == "control":
            self.control += 1
        else:
            self.skipped += 1

    def status(self, now: float) -> dict[str, Any]:
        lag = None if self.last_sync_mono is None else round(now - self.last_sync_mono, 3)
        return {
            "cursor": self.cursor,
            "gaps": len(self.gaps),
            "lag_s": lag,
            "last_sync_at": self.last_sync_at,
            "syncs": self.syncs,
            "rows": self.rows,
            "counted": self.counted,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "control": self.control,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at,
        }


class _Periodic:
    """``fn`` every ``every_s`` seconds in a daemon thread, between ``start`` and ``stop``
    (restartable; ``fn`` handles its own failures)."""

    def __init__(self, name: str, every_s: float, fn: Callable[[], object]) -> None:
        self.name, self.every_s, self.fn = name, every_s, fn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=self.name, daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every_s):
            self.fn()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class Storefront:
    """The service's state and operations; the routes are thin wrappers around it."""

    def __init__(
        self,
        settings: StorefrontSettings,
        *,
        pipeline: Pipeline | None = None,
        experiment_log: ExperimentLog | None = None,
        bandit: Bandit | None = None,
        advisor: Advisor | None = None,
        model: PersonaModel | None = None,
        channel_priors: ChannelPriors | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.model = model or shipped_model()
        # persona priors per channel, learned from this shop's confident sessions (UCI's
        # traffic types are unnamed codes); thread-safe on their own
        self.channel_priors = channel_priors or ChannelPriors.for_model(self.model)
        self._profiled: OrderedDict[str, str] = OrderedDict()  # session -> persona written
        self._profiled_lock = threading.Lock()
        catalog = (
            Catalog.load(settings.catalog_path) if settings.catalog_path else shipped_catalog()
        )
        self.advisor = advisor or Advisor(catalog)
        self.catalog = self.advisor.catalog
        self.log = experiment_log or ExperimentLog(settings.db_url or default_url())
        # SQLite takes one writer at a time and a blocked writer backs off in sleeps of up to
        # 100 ms: writers of this process queue on a lock instead (instant hand-over)
        sqlite = self.log.engine.dialect.name == "sqlite"
        self._write_lock: Any = threading.Lock() if sqlite else contextlib.nullcontext()
        self.latency = analytics.LatencyRecorder(settings.latency_samples)
        # session summaries waiting to be written to storefront_sessions (flushed by a
        # background thread every engagement_flush_s, before analytics reads, and at stop)
        self.engagement = analytics.EngagementTracker(group_of=self.group_of)
        self._flusher = _Periodic(
            "storefront-engagement-flush", settings.engagement_flush_s, self.flush_engagement
        )
        arms = {slot: list(variants) for slot, variants in ARMS.items()}
        self.bandit = bandit or Bandit(arms, settings.bandit)
        if pipeline is None:
            pipeline = open_pipeline(
                settings.redis_url,
                prefix=settings.prefix,
                on_outcome=self.on_outcome,
                consumer_name=settings.consumer_name,
                buffer_capacity=settings.buffer_capacity,
            )
        else:
            pipeline.consumer.on_outcome = self.on_outcome
        pipeline.consumer.features = _ObservedStore(
            pipeline.consumer.features, self.engagement.observe
        )
        self.pipeline = pipeline
        self.running = False
        self.started_at = self.clock()
        # the outcomes of every worker reach this bandit through the log (sync_bandit); its
        # cursor is read before the decisions are replayed: an outcome logged in between is
        # replayed and then read again, when its decision's funnel stage makes it a duplicate
        self.bandit_sync = BanditSync()
        self._sync_lock = threading.Lock()
        self._syncer = _Periodic("storefront-bandit-sync", settings.bandit_sync_s, self.sync_bandit)
        cursor, missing = self.log.outcome_cursor()
        self.bandit_sync.cursor = cursor
        self.bandit_sync.gaps = dict.fromkeys(missing, time.monotonic())
        frame = analytics.decision_frame(self.log)
        self.restored = self.restore_bandit(frame) if bandit is None else 0
        self.channel_sessions_restored = (
            self.restore_channel_priors(frame) if channel_priors is None else 0
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.pipeline.start()
        self._flusher.start()
        self._syncer.start()
        self.running = True

    def stop(self) -> None:
        """Stop the consumer, then the bandit sync and the flusher, then write the dirty
        session summaries once more (what still fails is logged: lost when the process
        exits)."""
        self.pipeline.stop()
        self._syncer.stop()
        self._flusher.stop()
        if not self.flush_engagement() and (left := self.engagement.pending):
            log.error("storefront stopped with %d session summaries not written", left)
        self.running = False

    def flush_engagement(self) -> bool:
        """Write the dirty session summaries to the log database (``storefront_sessions``)
        in one batch; True if written (or none waited). A failure (the database down) is
        logged and keeps them dirty for the next flush: it never raises."""
        try:
            self.engagement.flush(self._write_sessions, now=self.clock())
        except Exception as exc:
            log.warning(
                "engagement: %d session summaries not written (kept for the next flush): %s",
                self.engagement.pending,
                exc,
            )
            return False
        return True

    def sync_bandit(self) -> dict[str, int] | None:
        """Learn from the outcomes every worker logged since the last sync: with several
        service processes on one consumer group each consumer sees a share of the outcome
        events, but all of them land in ``storefront_outcomes``. Each outcome logged after the
        cursor (``seq``) is fed to the bandit with its ``event_id``: one this worker's
        consumer counted already is a duplicate (its event id, or its decision's funnel
        stage), and the live path meeting an event the sync counted is one too. An outcome of
        a decision the bandit does not hold (another worker's, or one made before a restart)
        is counted from its logged decision when it is that decision's first logged outcome
        (a later one of a decision the bandit forgot was counted before: counting it from
        zero would count the earlier stages twice); control decisions never are.

        Runs every ``bandit_sync_s`` in the background; returns the rows read per result, or
        None when the database failed (logged; the next sync reads from the same cursor)."""
        with self._sync_lock:
            state = self.bandit_sync
            now = time.monotonic()
            state.expire(now)
            results: dict[str, int] = {}
            try:
                while True:
                    also = sorted(state.gaps)
                    # SQLite: every transaction takes the write lock (BEGIN IMMEDIATE)
                    with self._write_lock:
                        rows = self.log.outcomes_after(state.cursor, limit=SYNC_BATCH, also=also)
                    for row in rows:
                        result = self._sync_outcome(row)
                        state.note(result)
                        state.passed(row.seq, now)
                        results[result] = results.get(result, 0) + 1
                    if len(rows) < SYNC_BATCH + len(also):
                        break
            except Exception as exc:
                state.failures += 1
                state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                state.last_failure_at = self.clock().isoformat()
                log.warning("bandit sync: the outcome log was not read (retried): %s", exc)
                return None
            state.syncs += 1
            state.last_sync_mono = time.monotonic()
            state.last_sync_at = self.clock().isoformat()
            return results

    def _sync_outcome(self, row: LoggedOutcome) -> SyncResult:
        if row.policy_version == CONTROL or row.decision_id.startswith(CONTROL_PREFIX):
            return "control"
        outcome: Outcome = row.kind
        status = self.bandit.record(row.decision_id, outcome, event_id=row.event_id)
        if status != "unknown":
            return status
        if not row.first:
            return "skipped"
        decision = _logged_decision(row.decision_id, dataclasses.asdict(row))
        if decision is None:
            return "skipped"
        return self.bandit.record(decision, outcome, event_id=row.event_id)

    def _write_sessions(self, summaries: list[SessionSummary]) -> None:
        now = self.clock()
        for start in range(0, len(summaries), FLUSH_CHUNK):
            with self._write_lock:
                self.log.upsert_sessions(summaries[start : start + FLUSH_CHUNK], now=now)

    def group_of(self, session_id: str) -> str:
        """The session's experiment group: ``control`` (the holdout) or ``bandit``."""
        return CONTROL if self.in_control(session_id) else analytics.BANDIT

    def restore_bandit(self, frame: pd.DataFrame | None = None) -> int:
        """Replay the logged bandit decisions (not control's) that were shown with their
        deepest outcome, so the posterior survives a restart and later outcomes of old
        decisions still count. A decision never shown (no outcome yet) is not counted; its
        impression, when it comes, is counted by ``on_outcome`` from the log. ``frame``:
        ``analytics.decision_frame`` of the log, when already read."""
        if frame is None:
            frame = analytics.decision_frame(self.log)
        if frame.empty:
            return 0
        frame = frame[frame["group"] == analytics.BANDIT].sort_values("ts")
        frame = frame.tail(self.settings.restore_limit)
        replayed = 0
        rows: list[dict[Any, Any]] = frame.to_dict("records")
        for row in rows:
            slot, arm = str(row["slot"]), str(row["arm"])
            if slot not in ARMS or arm not in ARMS[slot]:
                continue  # an arm retired since: nothing to learn about the current ones
            if not row["shown"]:
                continue  # never shown (yet): no impression to count
            decision = Decision(
                decision_id=str(row["decision_id"]),
                slot=slot,
                arm=arm,
                propensity=float(row["propensity"]),
                segment=Segment(str(row["persona"]), str(row["device"]), str(row["channel"])),
                policy_version=0,
                burn_in=False,
            )
            deepest: Outcome = "impression"
            if row["purchased"]:
                deepest = "purchase"
            elif row["carted"]:
                deepest = "add_to_cart"
            elif row["clicked"]:
                deepest = "click"
            self.bandit.record(decision, deepest)
            replayed += 1
        self.bandit.refresh()
        return replayed

    def restore_channel_priors(self, frame: pd.DataFrame | None = None) -> int:
        """Rebuild the channel priors from the logged decisions (both groups: the persona
        does not depend on the group): each session counts once, with the persona of its
        latest decision, in the order of those decisions, so the most recent sessions stay
        within the priors' capacity. Sessions without a channel (``unknown``: no features
        when decided) are skipped.

        Caveat: the log does not say whether a decision's persona was confident, so a
        session whose latest decision came before its third page, or was ambiguous,
        counts with its (prior-weighted) top persona here, where the live path
        (``classify``) counts only confident answers. Returns the sessions counted."""
        if frame is None:
            frame = analytics.decision_frame(self.log)
        if frame.empty:
            return 0
        latest = frame.sort_values("ts", kind="stable").drop_duplicates("session_id", keep="last")
        latest = latest[latest["channel"] != UNKNOWN_CHANNEL]
        latest = latest.tail(self.channel_priors.capacity)
        counted = 0
        for sid, channel, persona in zip(
            latest["session_id"].tolist(),
            latest["channel"].tolist(),
            latest["persona"].tolist(),
            strict=True,
        ):
            counted += self.channel_priors.observe(str(sid), str(channel), str(persona))
        return counted

    # ---------------------------------------------------------------- events

    def publish(self, event: Event) -> dict[str, Any]:
        result = self.pipeline.publisher.publish(event)
        stats = self.pipeline.publisher.stats
        body: dict[str, Any] = {
            "status": result.status,
            "event_id": event.event_id,
            "buffered": result.status == "buffered",
        }
        if result.status != "published":
            body["buffer"] = {
                "waiting": stats.buffered,
                "capacity": stats.capacity,
                "dropped": stats.dropped,
            }
        return body

    def on_outcome(self, event: Event, features: SessionFeatures) -> object:
        """The consumer's outcome handler: log, then learn only from what is new.

        The bandit's counts are nested (``Bandit.record`` counts every funnel stage up to the
        outcome that the decision has not reached yet), so a click logged before its
        impression counts the impression and the click, and the impression, logged later,
        changes nothing; a redelivered event is not newly logged and never reaches it."""
        with self._write_lock:
            new = self.log.record_event(event, features)
        outcome = EVENT_OUTCOME.get(event.kind)
        if new and outcome is not None and event.decision_id is not None:
            status = self.bandit.record(event.decision_id, outcome, event_id=event.event_id)
            if status == "unknown":
                self._record_from_log(event.decision_id, outcome, event.event_id)
        return new

    def _record_from_log(self, decision_id: str, outcome: Outcome, event_id: str) -> None:
        """Count an outcome of a bandit decision the bandit does not hold: one made before
        a restart with no outcome then (``restore_bandit`` replays only decisions shown), or
        beyond its memory of open decisions. Only when this event is the decision's only
        logged outcome: a decision with earlier outcomes was counted already (live or
        replayed), so counting it from zero again could count its impression twice."""
        if decision_id.startswith(CONTROL_PREFIX):
            return
        row = self.log.decision(decision_id)
        if row is None or row["policy_version"] == CONTROL:
            return
        if any(other != event_id for other, _ in row["outcomes"]):
            return  # left to sync_bandit, which reads the outcomes in the order logged
        decision = _logged_decision(decision_id, row)
        if decision is not None:
            self.bandit.record(decision, outcome, event_id=event_id)

    # ---------------------------------------------------------------- persona

    def features(self, session_id: str) -> tuple[SessionFeatures | None, str]:
        """The session's features and where they came from: ``store``, ``new_session`` (no
        events yet) or ``fallback`` (the store is down)."""
        try:
            features = self.pipeline.features.get(session_id)
        except StoreUnavailable:
            return None, "fallback"
        return features, "store" if features is not None else "new_session"

    def classify(
        self, session_id: str, device: str | None = None
    ) -> tuple[PersonaResult, Segment, str, SessionFeatures | None]:
        result, segment, source, features, _, _ = self._classify(session_id, device)
        return result, segment, source, features

    def _classify(
        self, session_id: str, device: str | None = None
    ) -> tuple[
        PersonaResult,
        Segment,
        str,
        SessionFeatures | None,
        ChannelPrior | None,
        dict[str, float] | None,
    ]:
        """``classify``, the channel prior and the first-party profile it used.

        The session's channel prior (if its channel has counted sessions) replaces the
        population prior; a logged-in visitor's profile (persona shares of their other
        sessions, from ``pipeline.profiles``) is blended over it (``PersonaModel.classify``'s
        ``prior``). A confident answer (``ok``) is counted in the channel priors and written
        to the profile (once per session and persona). The fallback (store down) is
        unchanged: population shares, no channel prior, no profile."""
        features, source = self.features(session_id)
        dev = (features.device if features else None) or device or "unknown"
        chan = _channel(features.channel if features else None)
        channel_prior: ChannelPrior | None = None
        profile: dict[str, float] | None = None
        if source == "fallback":
            result = self.model.fallback()
        else:
            if chan != UNKNOWN_CHANNEL:
                channel_prior = self.channel_priors.prior(chan)
            user = features.user_id if features is not None else None
            if user is not None:
                profile = self._profile(user, session_id)
            result = self.model.classify(
                features or SessionFeatures(session_id=session_id),
                prior=profile,
                channel_prior=channel_prior.shares if channel_prior is not None else None,
            )
            if result.reason == "ok" and chan != UNKNOWN_CHANNEL:
                self.channel_priors.observe(session_id, chan, result.persona)
            if result.reason == "ok" and features is not None:
                self.engagement.note_persona(session_id, result.persona)
            if result.reason == "ok" and user is not None:
                self._remember_persona(user, session_id, result.persona)
        segment = Segment(result.persona, dev, chan)
        return result, segment, source, features, channel_prior, profile

    def _profile(self, user_id: str, session_id: str) -> dict[str, float] | None:
        """The user's persona history without this session; None when they have none or
        the profile store did not answer in time (the answer goes on without it)."""
        try:
            return self.pipeline.profiles.history(user_id, exclude=session_id)
        except StoreUnavailable:
            return None

    def _remember_persona(self, user_id: str, session_id: str, persona: str) -> None:
        """Write the session's persona to the user's profile when it is new or changed (a
        bounded memory of what was written keeps it to one write per session and persona);
        a failed write is retried on the next confident answer."""
        with self._profiled_lock:
            if self._profiled.get(session_id) == persona:
                return
        try:
            self.pipeline.profiles.record(user_id, session_id, persona, time.time())
        except StoreUnavailable:
            return
        with self._profiled_lock:
            self._profiled[session_id] = persona
            self._profiled.move_to_end(session_id)
            while len(self._profiled) > PROFILED_MEMORY:
                self._profiled.popitem(last=False)

    def persona(self, session_id: str, device: str | None = None) -> dict[str, Any]:
        result, segment, source, features, channel_prior, profile = self._classify(
            session_id, device
        )
        session = None
        if features is not None:
            session = {
                "events": features.events,
                "page_views": features.page_views,
                "duration_s": round(features.duration_s, 3),
                "cart_adds": features.cart_adds,
                "cart": list(features.cart),
                "purchases": features.purchases,
                "rec_clicks": features.rec_clicks,
                "widget_interactions": features.widget_interactions,
            }
        return {
            "session_id": session_id,
            "persona": result.persona,
            "tag": result.tag,
            "interest": result.interest,
            "probabilities": {k: round(v, 6) for k, v in result.probabilities.items()},
            "confident": result.confident,
            "reason": result.reason,
            "segment": {
                "persona": segment.persona,
                "device": segment.device,
                "channel": segment.channel,
                "key": segment.key,
            },
            "channel_prior": channel_prior.to_dict() if channel_prior is not None else None,
            # whether a profile was used, not its contents: the answer goes to the page
            "profile": {"used": True} if profile else None,
            "source": source,
            "fallback": source == "fallback",
            "session": session,
            "model": result.model,
        }

    # ---------------------------------------------------------------- decisions

    def in_control(self, session_id: str) -> bool:
        return analytics.in_holdout(session_id, self.settings.holdout)

    def decide(
        self,
        session_id: str,
        slot: str,
        device: str | None = None,
        now: dt.datetime | None = None,
    ) -> dict[str, Any]:
        if slot not in ARMS:
            raise ServiceError(422, "validation_error", f"slot: one of {sorted(ARMS)}", "slot")
        now = now or self.clock()
        result, segment, source, _ = self.classify(session_id, device)
        decision: Decision | None = None
        if self.in_control(session_id):
            group, arm, propensity = CONTROL, DEFAULT_ARM[slot], 1.0
            decision_id = f"{CONTROL_PREFIX}{uuid.uuid4().hex[:20]}"
            policy_version, burn_in = CONTROL, False
        else:
            decision = self.bandit.decide(segment, slot)
            group, arm, propensity = analytics.BANDIT, decision.arm, decision.propensity
            decision_id = decision.decision_id
            policy_version, burn_in = f"bandit-{decision.policy_version}", decision.burn_in
        with self._write_lock:
            self._log_decision(
                decision_id,
                now,
                session_id,
                segment,
                slot,
                arm,
                propensity,
                policy_version,
                burn_in,
            )
        served = self.settings.impressions == "served"
        if decision is not None and served:
            self.bandit.record(decision, "impression")
        return {
            "decision_id": decision_id,
            "session_id": session_id,
            "slot": slot,
            "arm": arm,
            "propensity": propensity,
            "group": group,
            "policy_version": policy_version,
            "burn_in": burn_in,
            "segment": segment.key,
            "persona": result.persona,
            "persona_source": source,
            "content": ARMS[slot][arm],
            "report_impression": not served,
        }

    def _log_decision(
        self,
        decision_id: str,
        now: dt.datetime,
        session_id: str,
        segment: Segment,
        slot: str,
        arm: str,
        propensity: float,
        policy_version: str,
        burn_in: bool,
    ) -> None:
        self.log.log_decision(
            decision_id=decision_id,
            ts=now,
            session_id=session_id,
            persona=segment.persona,
            device=segment.device,
            channel=segment.channel,
            slot=slot,  # type: ignore[arg-type]
            arm=arm,
            propensity=propensity,
            policy_version=policy_version,
            burn_in=burn_in,
        )
        if self.settings.impressions == "served":
            # a client that reports no impressions: serving counts as the impression
            self.log.log_outcome(
                event_id=f"imp-{decision_id}"[:64],
                decision_id=decision_id,
                kind="impression",
                ts=now,
            )

    # ---------------------------------------------------------------- recommendations

    def recommendations(
        self,
        session_id: str,
        *,
        cart: tuple[str, ...] | None = None,
        current: str | None = None,
        k: int = 6,
        max_price: float | None = None,
        category: str | None = None,
    ) -> dict[str, Any]:
        if category is not None and category not in self.catalog.categories:
            raise ServiceError(
                422,
                "validation_error",
                f"category: {category!r} is not a catalog category",
                "category",
            )
        result, segment, source, features = self.classify(session_id)
        # the page's cart, when it sends one, is fresher than the features (its last cart
        # event may still be in the stream): it wins; else the session's cart
        cart_source = "request" if cart is not None else "session"
        if cart is None:
            cart = features.cart if features is not None else ()
        recs = self.advisor.recommend(
            features,
            result,
            cart=cart,
            current=current,
            k=k,
            max_price=max_price,
            category=category,
            session_id=session_id,
        )
        body = recs.to_dict()
        body["cart"] = list(cart)
        body["cart_source"] = cart_source
        body["persona_source"] = source
        body["segment"] = segment.key
        return body

    # ---------------------------------------------------------------- status

    def health(self) -> dict[str, Any]:
        kind = "redis" if self.settings.redis_url else "memory"
        try:
            self.pipeline.features.get("__health__")
            store_ok = True
        except StoreUnavailable:
            store_ok = False
        try:
            backlog: int | None = len(self.pipeline.stream)
            stream_ok = True
        except StoreUnavailable:
            backlog, stream_ok = None, False
        status = self.pipeline.status()
        buffer = status["publisher"]
        ok = store_ok and stream_ok
        return {
            "status": "ok" if ok else "degraded",
            "stream": {"kind": kind, "ok": stream_ok, "length": backlog},
            "store": {"kind": kind, "ok": store_ok},
            "buffer": buffer,
            "consumer": status["consumer"],
            "logs": {"dialect": self.log.engine.dialect.name},
            "bandit": {
                "policy_version": self.bandit.policy_version,
                "restored": self.restored,
                "sync": {
                    **self.bandit_sync.status(time.monotonic()),
                    "sync_s": self.settings.bandit_sync_s,
                },
            },
            "channel_priors": {
                "sessions": self.channel_priors.sessions(),
                "restored": self.channel_sessions_restored,
            },
            "engagement": {
                **self.engagement.status(),
                "flush_s": self.settings.engagement_flush_s,
            },
            "holdout": self.settings.holdout,
            "impressions": self.settings.impressions,
            "started_at": self.started_at.isoformat(),
        }

    def analytics(self, days: int = 28) -> dict[str, Any]:
        """The report; this process's dirty session summaries are written first, so its own
        sessions are current (other processes' lag by up to their flush interval)."""
        self.flush_engagement()
        return analytics.report(
            self.log,
            latency=self.latency,
            engagement=self.engagement,
            holdout=self.settings.holdout,
            now=self.clock(),
            days=days,
        )


# --------------------------------------------------------------------------- pages


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cxagent.storefront", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = _money
    env.filters["label"] = _label
    env.filters["pct"] = _pct
    return env


def _money(value: float | None) -> str:
    if value is None:
        return "–"
    return "free" if value == 0 else f"${value:,.2f}".replace(".00", "")


def _label(category: str) -> str:
    interest, _, rest = category.partition("-")
    return f"{rest.replace('-', ' ').capitalize()}" if rest else category.capitalize()


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}%"


def _catalog_json(catalog: Catalog) -> str:
    """The slice of the catalog the page script needs (cart rendering), as JSON."""
    items = {
        i.id: {"name": i.name, "price": i.price, "category": i.category, "url": i.url}
        for i in catalog.items
    }
    # "</" cannot end the script element early
    return json.dumps(items, separators=(",", ":")).replace("</", "<\\/")


class Pages:
    """Renders the demo shop's pages and the analytics page."""

    def __init__(self, storefront: Storefront) -> None:
        self.sf = storefront
        self.catalog = storefront.catalog
        self.catalog_json = _catalog_json(self.catalog)
        groups: dict[str, list[str]] = {}
        for category in self.catalog.categories:
            groups.setdefault(category.split("-", 1)[0], []).append(category)
        self.nav = groups

    def render(self, name: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        page = {
            "page_type": "home",
            "product_id": "",
            "category": "",
            "title": self.catalog.brand,
        }
        page.update(context.pop("page", {}))
        html = (
            _templates()
            .get_template(name)
            .render(
                brand=self.catalog.brand,
                nav=self.nav,
                catalog_json=self.catalog_json,
                page=page,
                **context,
            )
        )
        return HTMLResponse(html, status_code=status)

    def item(self, item_id: str, *, tutorial: bool) -> Any:
        item = self.catalog.get(item_id)
        if item is None or (item.type == "tutorial") != tutorial:
            kind = "tutorial" if tutorial else "product"
            raise ServiceError(404, "not_found", f"no {kind} {item_id!r} in the catalog", "id")
        return item


# --------------------------------------------------------------------------- the app


def create_app(
    settings: StorefrontSettings | None = None,
    *,
    storefront: Storefront | None = None,
    **parts: Any,
) -> FastAPI:
    """The storefront service. ``parts`` are passed to ``Storefront`` (``pipeline``,
    ``experiment_log``, ``bandit``, ``advisor``, ``model``, ``clock``) to inject them."""
    sf = storefront or Storefront(settings or StorefrontSettings.from_env(), **parts)
    pages = Pages(sf)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sf.start()
        try:
            yield
        finally:
            sf.stop()

    app = FastAPI(
        title="Storefront persona agent",
        description="Events, persona, bandit decisions and recommendations of the demo shop.",
        docs_url=None,  # the interactive docs load assets from a CDN: not offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.storefront = sf
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)

    # ---------------------------------------------------------------- the JSON API

    @app.post("/v1/events", status_code=202)
    def post_event(event: Event) -> JSONResponse:
        """Publish one event to the stream (or the buffer while Redis is down)."""
        body = sf.publish(event)
        if body["status"] == "dropped":
            err = error_body(
                "unavailable",
                "the event stream is down and the buffer is full: retry with the same event_id",
            )
            err["error"].update(body)
            return JSONResponse(err, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse(body, status_code=202)

    @app.post("/v1/persona")
    def post_persona(request: PersonaRequest) -> JSONResponse:
        """The session's persona now, with probabilities and its micro-segment."""
        return JSONResponse(sf.persona(request.session_id, request.device))

    @app.post("/v1/decide")
    def post_decide(request: DecideRequest) -> JSONResponse:
        """The variant to show in a slot: the bandit's choice, or the default in control."""
        return JSONResponse(sf.decide(request.session_id, request.slot, request.device))

    @app.get("/v1/recommendations")
    def get_recommendations(
        session_id: Annotated[str, Query(min_length=1, max_length=64)],
        cart: Annotated[
            str | None,
            Query(
                max_length=2000,
                description="Comma-separated ids (given, even empty, it wins; absent: the "
                "session's cart from the features).",
            ),
        ] = None,
        current: Annotated[str | None, Query(max_length=64)] = None,
        k: Annotated[int, Query(ge=3, le=12)] = 6,
        max_price: Annotated[float | None, Query(ge=0)] = None,
        category: Annotated[str | None, Query(max_length=64)] = None,
    ) -> JSONResponse:
        """The advisor's carousel, best tutorial and (with a cart) checkout add-ons."""
        items = (
            None if cart is None else tuple(c for c in (p.strip() for p in cart.split(",")) if c)
        )
        return JSONResponse(
            sf.recommendations(
                session_id,
                cart=items,
                current=current,
                k=k,
                max_price=max_price,
                category=category,
            )
        )

    @app.get("/v1/health")
    def get_health() -> JSONResponse:
        """Stream, store and buffer status, and the consumer's counters."""
        return JSONResponse(sf.health())

    @app.get("/v1/analytics")
    def get_analytics(days: Annotated[int, Query(ge=1, le=365)] = 28) -> JSONResponse:
        """Lift against control, experiment velocity, engagement and latency."""
        return JSONResponse(sf.analytics(days))

    # ---------------------------------------------------------------- pages

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/storefront", status_code=307)

    @app.get("/storefront", include_in_schema=False)
    def home() -> HTMLResponse:
        featured = [i for i in sf.catalog.items if i.type != "tutorial"][::4][:8]
        return pages.render("home.html", featured=featured)

    @app.get("/storefront/c/{category}", include_in_schema=False)
    def category_page(category: str) -> HTMLResponse:
        if category not in sf.catalog.categories:
            raise ServiceError(404, "not_found", f"no category {category!r}", "category")
        items = [i for i in sf.catalog.items if i.category == category]
        page = {"page_type": "category", "category": category, "title": _label(category)}
        return pages.render("category.html", page=page, items=items)

    @app.get("/storefront/p/{item_id}", include_in_schema=False)
    def product_page(item_id: str) -> HTMLResponse:
        item = pages.item(item_id, tutorial=False)
        tutorial = next(
            (i for i in sf.catalog.items if i.type == "tutorial" and i.category == item.category),
            None,
        )
        page = {
            "page_type": "product",
            "category": item.category,
            "product_id": item.id,
            "title": item.name,
        }
        return pages.render("product.html", page=page, item=item, tutorial=tutorial)

    @app.get("/storefront/learn/{item_id}", include_in_schema=False)
    def tutorial_page(item_id: str) -> HTMLResponse:
        item = pages.item(item_id, tutorial=True)
        related = [
            i for i in sf.catalog.items if i.category == item.category and i.type != "tutorial"
        ]
        page = {
            "page_type": "tutorial",
            "category": item.category,
            "product_id": item.id,
            "title": item.name,
        }
        return pages.render("learn.html", page=page, item=item, related=related)

    @app.get("/storefront/cart", include_in_schema=False)
    def cart_page() -> HTMLResponse:
        return pages.render("cart.html", page={"page_type": "cart", "title": "Your cart"})

    @app.get("/storefront/checkout", include_in_schema=False)
    def checkout_page() -> HTMLResponse:
        return pages.render("checkout.html", page={"page_type": "checkout", "title": "Checkout"})

    @app.get("/analytics", include_in_schema=False)
    def analytics_page(days: Annotated[int, Query(ge=1, le=365)] = 28) -> HTMLResponse:
        report = sf.analytics(days)
        return pages.render(
            "analytics.html",
            page={"page_type": "about", "title": "Storefront analytics"},
            report=report,
        )

    app.mount("/static", StaticFiles(packages=[("cxagent.storefront", "static")]), name="static")
    app.add_middleware(TimingMiddleware, recorder=sf.latency)
    return app


# --------------------------------------------------------------------------- serving


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket whose accepted connections have Nagle off: without it a
    response's headers and body, written separately, can wait on the client's delayed ACK
    (about 40 ms per keep-alive request)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


def serve(
    settings: StorefrontSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8100,
    seed_sessions: int = 0,
    access_log: bool = False,
) -> None:
    """Serve the storefront until interrupted (one worker per call; several processes on one
    log database share what their bandits learn through ``sync_bandit``)."""
    import uvicorn

    sf = Storefront(settings)
    if seed_sessions:
        seeded = seed_demo(sf, seed_sessions)
        print(
            f"seeded {seeded['sessions']} synthetic sessions ({seeded['decisions']} decisions, "
            f"{seeded['impressions']} impressions reported)"
        )
    app = create_app(storefront=sf)
    sock = listening_socket(host, port)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{sock.getsockname()[1]}"
    mode = "Redis at " + settings.redis_url if settings.redis_url else "in-process stream and store"
    print(f"storefront on {base}/storefront  analytics on {base}/analytics  ({mode})", flush=True)
    config = uvicorn.Config(app, log_level="info", access_log=access_log, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


# --------------------------------------------------------------------------- demo data


def seed_demo(
    sf: Storefront, sessions: int = 300, *, seed: int = 7, weeks: int = 4
) -> dict[str, int]:
    """Fill the demo with synthetic sessions (``sessions.generate_sessions``): their events go
    through the real pipeline, moved in time to start when its hero and CTA decisions are
    made, spread over the last ``weeks`` weeks (so its engagement falls in the analytics
    window with its decisions). A decision is shown (an ``impression`` event, as the page sends it) with
    probability ``SEED_SHOWN`` (with ``impressions = "served"``: always, serving is the
    impression); shown ones get clicks drawn from made-up click rates per arm, and a
    purchase is credited to the CTA if shown, else the hero if shown (a demo, not evidence).
    Returns counts."""
    from cxagent.storefront.sessions import generate_sessions

    rng = random.Random(seed)
    ctr = {
        "hero-studio": 0.06,
        "hero-sketch": 0.09,
        "hero-learn": 0.12,
        "cta-shop": 0.05,
        "cta-trial": 0.08,
        "cta-bundle": 0.06,
    }
    now = sf.clock()
    decisions = impressions = 0
    started_here = not sf.running
    if started_here:
        sf.start()
    try:
        generated = generate_sessions(sessions, seed=seed)
        starts = [
            now - dt.timedelta(seconds=rng.uniform(0, weeks * 7 * 86400.0)) for _ in generated
        ]
        for synthetic, at in zip(generated, starts, strict=True):
            shift = at - synthetic.events[0].ts
            for event in synthetic.events:
                sf.pipeline.publisher.publish(event.model_copy(update={"ts": event.ts + shift}))
        _drain(sf)
        publish = sf.pipeline.publisher.publish
        for synthetic, at in zip(generated, starts, strict=True):
            sid = synthetic.session_id
            last = synthetic.events[-1].ts + (at - synthetic.events[0].ts)
            shown: list[dict[str, Any]] = []
            for slot in ("hero", "cta"):
                d = sf.decide(sid, slot, now=at)
                decisions += 1
                if d["report_impression"]:
                    if rng.random() >= SEED_SHOWN:
                        continue  # the visitor left before the slot came into view
                    publish(_demo_event(sid, "impression", last, d["decision_id"], after_s=2))
                    impressions += 1
                shown.append(d)
                if rng.random() < ctr[d["arm"]]:
                    kind = "hero_click" if slot == "hero" else "cta_click"
                    publish(_demo_event(sid, kind, last, d["decision_id"]))
            if synthetic.purchased or rng.random() < 0.01:
                value = sum(e.value or 0.0 for e in synthetic.events) or 24.0
                credited = shown[-1]["decision_id"] if shown else None  # the CTA, else the hero
                publish(_demo_event(sid, "purchase", last, credited, value=value, after_s=60))
        _drain(sf)
    finally:
        if started_here:
            sf.stop()
    return {"sessions": sessions, "decisions": decisions, "impressions": impressions}


SEED_SHOWN: Final = 0.95  # share of the demo's decisions whose slot comes into view


def _demo_event(
    session_id: str,
    kind: str,
    ts: dt.datetime,
    decision_id: str | None,
    value: float | None = None,
    *,
    after_s: float = 5.0,
) -> Event:
    return Event(
        event_id=f"demo-{uuid.uuid4().hex[:16]}",
        session_id=session_id,
        kind=kind,  # type: ignore[arg-type]
        ts=ts + dt.timedelta(seconds=after_s),
        decision_id=decision_id,
        value=value,
    )


def _drain(sf: Storefront, timeout_s: float = 60.0) -> None:
    """Wait until the consumer has caught up with the publisher (or ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        published = sf.pipeline.publisher.stats.published
        stats = sf.pipeline.consumer.stats
        if stats.applied + stats.duplicates + stats.dead_lettered + stats.lost >= published:
            return
        time.sleep(0.05)


__all__ = [
    "ARMS",
    "DEFAULT_ARM",
    "Pages",
    "ServiceError",
    "Storefront",
    "StorefrontSettings",
    "create_app",
    "seed_demo",
    "serve",
]
