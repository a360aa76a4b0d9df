"""Tables of the incident store."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
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
