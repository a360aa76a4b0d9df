"""Reading the stored views, and recording what people decide about incidents.

The web pages and the JSON API go through ``Workbench`` only: it reads the incident rows and
the analyses the builder stored (never recomputing anything, so a page costs a few indexed
reads), and it records status changes and false-positive feedback through the repository's
compare-and-set writes with the signed-in person as the actor of the audit trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cxagent.store import feedback, repository
from cxagent.store.db import session_factory
from cxagent.store.models import Analysis, Incident, IncidentEvent

INCIDENT_FIELDS = (
    "id",
    "metric",
    "slice_key",
    "slice",
    "severity",
    "status",
    "false_positive",
    "detected_at",
    "window_start",
    "window_end",
    "baseline",
    "current",
    "delta",
    "affected_orders",
    "p_value",
    "q_value",
    "detector",
    "top_slices",
    "version",
    "created_at",
    "updated_at",
)


def slice_label(slice_: dict[str, Any]) -> str:
    """A slice as people read it: ``region=SF + category=grocery`` (``all`` when empty)."""
    return " + ".join(f"{k}={v}" for k, v in slice_.items()) or "all"


def incident_record(incident: Incident, events: Sequence[IncidentEvent] = ()) -> dict[str, Any]:
    """An incident row as plain data, with its label and (when given) its audit trail."""
    record = {name: getattr(incident, name) for name in INCIDENT_FIELDS}
    record["label"] = slice_label(incident.slice)
    record["events"] = [
        {"at": e.at, "actor": e.actor, "action": e.action, "detail": e.detail, "note": e.note}
        for e in events
    ]
    return record


class Workbench:
    """The store as the workbench sees it: incidents, their audit trail and stored views."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    @classmethod
    def from_url(cls, url: str) -> Workbench:
        """Open (and create if needed) the store at a SQLAlchemy URL."""
        return cls(session_factory(url))

    def list_incidents(
        self,
        *,
        status: Sequence[str] | None = None,
        severity: Sequence[str] | None = None,
        metric: str | None = None,
    ) -> list[dict[str, Any]]:
        """Incidents, most severe and most recent first (without their audit trail)."""
        rows = repository.list_incidents(
            self.factory, status=status, severity=severity, metric=metric
        )
        return [incident_record(r) for r in rows]

    def get_incident(self, incident_id: str) -> dict[str, Any]:
        """One incident with its audit trail; ``NotFoundError`` names the id."""
        inc = repository.get_incident(self.factory, incident_id)
        return incident_record(inc, inc.events)

    def get_analysis(self, kind: str, incident_id: str | None = None) -> dict[str, Any] | None:
        """A stored view, or None when it has not been computed yet."""
        return repository.get_analysis(self.factory, kind, incident_id)

    def analyses(self, kind: str) -> dict[str | None, dict[str, Any]]:
        """Every stored view of one kind in one read, by incident id."""
        with self.factory() as s:
            rows = s.execute(
                select(Analysis.incident_id, Analysis.payload).where(Analysis.kind == kind)
            )
            return {incident_id: payload for incident_id, payload in rows}

    def set_status(
        self, incident_id: str, status: str, *, actor: str, note: str | None = None
    ) -> dict[str, Any]:
        """Move an incident to another status (compare-and-set, audited)."""
        inc = repository.set_status(
            self.factory, incident_id, status=status, actor=actor, note=note
        )
        return incident_record(inc, inc.events)

    def set_false_positive(
        self, incident_id: str, false_positive: bool, *, actor: str, note: str | None = None
    ) -> dict[str, Any]:
        """Record whether the incident was a false alarm (compare-and-set, audited)."""
        inc = repository.set_false_positive(
            self.factory, incident_id, false_positive=false_positive, actor=actor, note=note
        )
        return incident_record(inc, inc.events)

    def set_cause_feedback(
        self,
        incident_id: str,
        cause: str,
        verdict: str,
        *,
        actor: str,
        actual_cause: str | None = None,
        note: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Mark a ranked cause confirmed or wrong (audited); returns the latest verdict on
        each cause of the incident."""
        feedback.set_cause_feedback(
            self.factory,
            incident_id,
            cause=cause,
            verdict=verdict,
            actor=actor,
            actual_cause=actual_cause,
            note=note,
        )
        return self.cause_feedback(incident_id)

    def cause_feedback(self, incident_id: str) -> dict[str, dict[str, Any]]:
        """The latest verdict on each cause of an incident, by cause."""
        return feedback.cause_feedback(self.factory, incident_id)

    def feedback_report(self) -> dict[str, Any]:
        """Detection precision, cause accuracy, calibration and recalibration."""
        return feedback.report(self.factory)
