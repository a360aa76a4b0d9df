"""Incident repository: keyword-only functions over a session factory.

Every write is one transaction. Writers never lose each other's changes: status updates are
compare-and-set on the row's ``version`` (retried on conflict), and every change appends to
the audit trail in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from cxagent.errors import CXAgentError
from cxagent.store.models import (
    SEVERITIES,
    STATUSES,
    Analysis,
    Incident,
    IncidentEvent,
    utcnow,
)

MERGE_GAP = dt.timedelta(hours=24)  # windows closer than this are the same incident
MAX_RETRIES = 20


class NotFoundError(CXAgentError):
    """No incident with that id."""


class InvalidStatusError(CXAgentError):
    """A status outside new, investigating, monitoring, resolved."""


@dataclass(frozen=True)
class IncidentDraft:
    """What detection found; the store turns it into a new or an updated incident."""

    metric: str
    slice: dict[str, Any]
    window_start: dt.datetime
    window_end: dt.datetime
    detected_at: dt.datetime
    severity: str
    baseline: float
    current: float
    delta: float
    affected_orders: int
    p_value: float
    q_value: float
    detector: str
    top_slices: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}")


def slice_key(slice_: dict[str, Any]) -> str:
    """Canonical text of a slice: sorted ``key=value`` pairs joined by ';' ('all' if empty)."""
    return ";".join(f"{k}={slice_[k]}" for k in sorted(slice_)) or "all"


def upsert_incident(
    factory: sessionmaker[Session], draft: IncidentDraft, *, actor: str = "detector"
) -> tuple[Incident, bool]:
    """Create an incident, or update the open one with the same metric and slice whose window
    overlaps (or lies within a day of) the draft's. Returns (incident, created)."""
    key = slice_key(draft.slice)
    with factory.begin() as s:
        existing = s.scalars(
            select(Incident)
            .where(
                Incident.metric == draft.metric,
                Incident.slice_key == key,
                Incident.status != "resolved",
                Incident.window_end >= draft.window_start - MERGE_GAP,
                Incident.window_start <= draft.window_end + MERGE_GAP,
            )
            .order_by(Incident.detected_at)
            .with_for_update()
        ).first()
        values = {k: v for k, v in asdict(draft).items() if k not in ("slice",)}
        if existing is None:
            inc = Incident(
                id=f"inc-{uuid.uuid4().hex[:10]}", slice_key=key, slice=draft.slice, **values
            )
            inc.events.append(
                IncidentEvent(actor=actor, action="created", detail=_jsonable(values))
            )
            s.add(inc)
            return inc, True
        changes = {}
        values["window_start"] = min(existing.window_start, draft.window_start)
        values["window_end"] = max(existing.window_end, draft.window_end)
        values["detected_at"] = existing.detected_at  # first detection stands
        for k, v in values.items():
            if getattr(existing, k) != v:
                changes[k] = v
                setattr(existing, k, v)
        if changes:
            existing.version += 1
            existing.updated_at = utcnow()
            existing.events.append(
                IncidentEvent(actor=actor, action="updated", detail=_jsonable(changes))
            )
        return existing, False


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in d.items()}


def _change(
    factory: sessionmaker[Session],
    incident_id: str,
    *,
    actor: str,
    action: str,
    values: dict[str, Any],
    note: str | None,
) -> Incident:
    for _ in range(MAX_RETRIES):
        with factory.begin() as s:
            # lock the row where the database can (PostgreSQL); SQLite writers are serialised
            inc = s.get(Incident, incident_id, with_for_update=True, populate_existing=True)
            if inc is None:
                raise NotFoundError(f"no incident {incident_id!r}")
            before = {k: getattr(inc, k) for k in values}
            done: CursorResult[Any] = s.execute(  # type: ignore[assignment]
                update(Incident)
                .where(Incident.id == incident_id, Incident.version == inc.version)
                .values(**values, version=inc.version + 1, updated_at=utcnow())
            )
            if done.rowcount != 1:  # someone else changed it first: read again and retry
                s.rollback()
                continue
            s.add(
                IncidentEvent(
                    incident_id=incident_id,
                    actor=actor,
                    action=action,
                    detail={"from": before, "to": values},
                    note=note,
                )
            )
        return get_incident(factory, incident_id)
    raise CXAgentError(f"incident {incident_id!r} is too contended to update; try again")


def set_status(
    factory: sessionmaker[Session],
    incident_id: str,
    *,
    status: str,
    actor: str,
    note: str | None = None,
) -> Incident:
    if status not in STATUSES:
        raise InvalidStatusError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    return _change(
        factory, incident_id, actor=actor, action="status", values={"status": status}, note=note
    )


def set_false_positive(
    factory: sessionmaker[Session],
    incident_id: str,
    *,
    false_positive: bool,
    actor: str,
    note: str | None = None,
) -> Incident:
    return _change(
        factory,
        incident_id,
        actor=actor,
        action="label",
        values={"false_positive": false_positive},
        note=note,
    )


def get_incident(factory: sessionmaker[Session], incident_id: str) -> Incident:
    with factory() as s:
        inc = s.scalars(
            select(Incident)
            .options(selectinload(Incident.events))
            .where(Incident.id == incident_id)
        ).first()
        if inc is None:
            raise NotFoundError(f"no incident {incident_id!r}")
        return inc


def list_incidents(
    factory: sessionmaker[Session],
    *,
    status: Sequence[str] | None = None,
    severity: Sequence[str] | None = None,
    metric: str | None = None,
) -> list[Incident]:
    """Incidents, most severe and most recent first."""
    q = select(Incident)
    if status:
        q = q.where(Incident.status.in_(status))
    if severity:
        q = q.where(Incident.severity.in_(severity))
    if metric:
        q = q.where(Incident.metric == metric)
    with factory() as s:
        rows = list(s.scalars(q))
    rank = {v: i for i, v in enumerate(reversed(SEVERITIES))}
    return sorted(rows, key=lambda i: (rank[i.severity], -i.detected_at.timestamp()))


ANALYSIS_KINDS = ("overview", "incident", "merchants", "experiment")


def analysis_key(kind: str, incident_id: str | None = None) -> str:
    """The row key of an analysis: the kind, and the incident it belongs to if any."""
    if kind not in ANALYSIS_KINDS:
        raise ValueError(f"analysis kind must be one of {', '.join(ANALYSIS_KINDS)}, not {kind!r}")
    return kind if incident_id is None else f"{kind}:{incident_id}"


def save_analysis(
    factory: sessionmaker[Session],
    kind: str,
    payload: dict[str, Any],
    *,
    incident_id: str | None = None,
) -> None:
    """Insert or replace one analysis (one transaction; the payload must be JSON-able)."""
    key = analysis_key(kind, incident_id)
    with factory.begin() as s:
        row = s.get(Analysis, key, with_for_update=True)
        if row is None:
            s.add(Analysis(key=key, kind=kind, incident_id=incident_id, payload=payload))
        else:
            row.payload, row.computed_at = payload, utcnow()


def analysis_times(factory: sessionmaker[Session], kind: str) -> dict[str, dt.datetime]:
    """When each incident's ``kind`` analysis was last computed (incident id -> time; an
    incident without one is absent). Reads two columns, never the payloads."""
    analysis_key(kind)  # refuses an unknown kind
    q = select(Analysis.incident_id, Analysis.computed_at).where(
        Analysis.kind == kind, Analysis.incident_id.is_not(None)
    )
    with factory() as s:
        return {str(i): t for i, t in s.execute(q)}


def get_analysis(
    factory: sessionmaker[Session], kind: str, incident_id: str | None = None
) -> dict[str, Any] | None:
    """The stored payload, or None when it has not been computed."""
    with factory() as s:
        row = s.get(Analysis, analysis_key(kind, incident_id))
        return None if row is None else row.payload
