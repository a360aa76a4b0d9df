"""Tables of the incident store."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("new", "investigating", "monitoring", "resolved")
SEVERITIES = ("low", "medium", "high")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Incident(Base):
    """A metric regressing in a slice over a window."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_key", "metric", "slice_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric: Mapped[str] = mapped_column(String(64))
    slice_key: Mapped[str] = mapped_column(String(512))  # canonical "k=v;k=v"
    slice: Mapped[dict[str, Any]] = mapped_column(JSON)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime)
    window_end: Mapped[dt.datetime] = mapped_column(DateTime)
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime)
    severity: Mapped[str] = mapped_column(String(16))
    baseline: Mapped[float] = mapped_column(Float)
    current: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    affected_orders: Mapped[int] = mapped_column(Integer)
    p_value: Mapped[float] = mapped_column(Float)
    q_value: Mapped[float] = mapped_column(Float)
    detector: Mapped[str] = mapped_column(String(32))
    top_slices: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="new")
    false_positive: Mapped[bool | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)

    events: Mapped[list[IncidentEvent]] = relationship(
        back_populates="incident", order_by="IncidentEvent.id", cascade="all, delete-orphan"
    )


class IncidentEvent(Base):
    """The audit trail: every change to an incident, who made it and when."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text, default=None)

    incident: Mapped[Incident] = relationship(back_populates="events")


class CauseFeedback(Base):
    """An engineer's latest verdict on one ranked cause of an incident (one row per incident
    and cause: the latest wins; every verdict is also in the audit trail), with what the
    agent had shown: the cause's rank, its confidence, the shipped model's confidence before
    any recalibration, and the model's features (None when the investigation was not
    stored). See ``cxagent.store.feedback``."""

    __tablename__ = "cause_feedback"
    __table_args__ = (
        Index("ux_cause_feedback_incident_cause", "incident_id", "cause", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    cause: Mapped[str] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(String(16))  # confirmed | wrong
    actual_cause: Mapped[str | None] = mapped_column(String(32), default=None)
    rank: Mapped[int | None] = mapped_column(Integer, default=None)  # 1 = ranked first
    confidence: Mapped[float | None] = mapped_column(Float, default=None)  # as shown
    model_confidence: Mapped[float | None] = mapped_column(Float, default=None)
    features: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    actor: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(Text, default=None)


class Analysis(Base):
    """A computed view kept for the workbench: the overview, an incident's investigation with
    its recommendations and plans, the merchant-risk report, an experiment's status. Pages read
    these rows instead of recomputing (``key`` e.g. ``overview``, ``incident:inc-...``)."""

    __tablename__ = "analyses"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    incident_id: Mapped[str | None] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True, default=None
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class AlertDelivery(Base):
    """What one alert channel has been told about one incident, so that every later message
    is grouped to the first (its sequence number, the email thread) and an unchanged incident
    is not sent again. A message that failed after all its retries leaves ``last_error`` set
    and ``sequence`` where it was: the next dispatch sends it again, it is never marked sent."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        UniqueConstraint("incident_id", "channel", name="uq_alert_deliveries_incident_channel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(64))  # the channel's configured name
    first_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)
    last_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)
    sequence: Mapped[int] = mapped_column(Integer, default=0)  # messages delivered so far
    last_event: Mapped[str | None] = mapped_column(String(16), default=None)
    last_incident_version: Mapped[int | None] = mapped_column(Integer, default=None)
    # the material state last delivered (severity, status, delta, causes); see alerts.events
    last_fingerprint: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    thread_ref: Mapped[str | None] = mapped_column(String(255), default=None)  # Message-ID
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # tries of the latest message
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime, default=None)


class WatchState(Base):
    """The watch loop's memory between ticks and across restarts (``cxagent watch``): the
    fitted detection state of one dataset (the pickled ``DetectionState``: calibrated models
    and every processed window's results) and what the last tick did."""

    __tablename__ = "watch_states"

    dataset: Mapped[str] = mapped_column(String(1024), primary_key=True)  # path or URL
    state: Mapped[bytes] = mapped_column(LargeBinary)
    next_window: Mapped[int] = mapped_column(Integer)  # first window id not processed yet
    ticks: Mapped[int] = mapped_column(Integer, default=0)
    last_tick: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
