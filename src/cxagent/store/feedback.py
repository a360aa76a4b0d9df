"""Feedback on incidents and their causes: keyword-only functions over a session factory.

An engineer labels an incident a true or a false positive (``repository.set_false_positive``,
re-exported here as ``label_incident``) and marks each ranked cause ``confirmed`` or
``wrong``, optionally naming the actual cause (``set_cause_feedback``). A cause verdict
keeps what the agent had shown (rank, confidence, the shipped model's confidence and
features) from the stored investigation; the latest verdict per incident and cause wins
(``cause_feedback`` table) and every verdict is appended to the incident's audit trail
(action ``cause_feedback``) in the same transaction.

``report`` turns the labels into detection precision, cause accuracy, calibration and the
recalibration (``cxagent.rca.feedback``: the maths, no I/O); ``stored_recalibration`` is
what investigations apply after the shipped confidence model when the store holds labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from cxagent.errors import CXAgentError
from cxagent.rca.feedback import (
    ACTUAL_CAUSES,
    BINS,
    CAUSES,
    PRIOR_SD,
    VERDICTS,
    CauseLabel,
    IncidentLabel,
    Recalibration,
    feedback_report,
    recalibrate,
)
from cxagent.store.models import Analysis, CauseFeedback, Incident, IncidentEvent, utcnow
from cxagent.store.repository import NotFoundError, analysis_key, set_false_positive

ACTION = "cause_feedback"  # the audit trail's action of a cause verdict
label_incident = set_false_positive  # a true positive is false_positive=False


class InvalidFeedbackError(CXAgentError):
    """A verdict, cause or actual cause outside the vocabulary; ``field`` names it."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownCauseError(NotFoundError):
    """The cause is not among the ranked causes of the incident's stored investigation."""

    field = "cause"


class ContradictoryFeedbackError(CXAgentError):
    """A verdict that contradicts itself: 'wrong' naming the cause itself as the actual one,
    or 'confirmed' naming another."""

    field = "actual_cause"


def check_feedback(cause: str, verdict: str, actual_cause: str | None) -> None:
    """Refuse names outside the vocabulary and verdicts that contradict themselves."""
    if cause not in CAUSES:
        raise InvalidFeedbackError(
            f"cause must be one of {', '.join(CAUSES)}, not {cause!r}", field="cause"
        )
    if verdict not in VERDICTS:
        raise InvalidFeedbackError(
            f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}", field="verdict"
        )
    if actual_cause is not None and actual_cause not in ACTUAL_CAUSES:
        raise InvalidFeedbackError(
            f"actual cause must be one of {', '.join(ACTUAL_CAUSES)}, not {actual_cause!r}",
            field="actual_cause",
        )
    if verdict == "wrong" and actual_cause == cause:
        raise ContradictoryFeedbackError(
            f"actual_cause: {cause} is marked wrong, so it cannot be the actual cause"
        )
    if verdict == "confirmed" and actual_cause not in (None, cause):
        raise ContradictoryFeedbackError(
            f"actual_cause: a confirmed {cause} is the actual cause; name another one "
            "only with 'wrong'"
        )


def _shown(session: Session, incident_id: str, cause: str) -> dict[str, Any]:
    """What the stored investigation showed of ``cause``: its rank, confidence, the shipped
    model's confidence and its features. Nothing when the incident was not investigated;
    ``UnknownCauseError`` when it was and ``cause`` is not among its ranked causes."""
    row = session.get(Analysis, analysis_key("incident", incident_id))
    investigation = (row.payload or {}).get("investigation") if row is not None else None
    if not isinstance(investigation, dict):
        return {}
    ranked = [c for c in investigation.get("causes") or [] if isinstance(c, dict)]
    for rank, c in enumerate(ranked, start=1):
        if c.get("cause") == cause:
            confidence = c.get("confidence")
            model = c.get("model_confidence", confidence)
            features = c.get("features")
            return {
                "rank": rank,
                "confidence": float(confidence) if confidence is not None else None,
                "model_confidence": float(model) if model is not None else None,
                "features": features if isinstance(features, dict) and features else None,
            }
    names = ", ".join(str(c.get("cause")) for c in ranked) or "none"
    raise UnknownCauseError(
        f"{cause} is not a ranked cause of incident {incident_id!r} (ranked: {names})"
    )


def _record(row: CauseFeedback) -> dict[str, Any]:
    return {
        "incident_id": row.incident_id,
        "cause": row.cause,
        "verdict": row.verdict,
        "actual_cause": row.actual_cause,
        "rank": row.rank,
        "confidence": row.confidence,
        "model_confidence": row.model_confidence,
        "features": row.features,
        "actor": row.actor,
        "at": row.at,
        "note": row.note,
    }


def set_cause_feedback(
    factory: sessionmaker[Session],
    incident_id: str,
    *,
    cause: str,
    verdict: str,
    actor: str,
    actual_cause: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Record a verdict on one cause of an incident (one transaction: the incident row is
    locked where the database can, so concurrent verdicts on it serialise) and append it to
    the audit trail; returns the stored verdict."""
    check_feedback(cause, verdict, actual_cause)
    with factory.begin() as s:
        inc = s.get(Incident, incident_id, with_for_update=True, populate_existing=True)
        if inc is None:
            raise NotFoundError(f"no incident {incident_id!r}")
        shown = _shown(s, incident_id, cause)
        row = s.scalars(
            select(CauseFeedback).where(
                CauseFeedback.incident_id == incident_id, CauseFeedback.cause == cause
            )
        ).first()
        before = None if row is None else {"verdict": row.verdict, "actual_cause": row.actual_cause}
        if row is None:
            row = CauseFeedback(incident_id=incident_id, cause=cause)
            s.add(row)
        row.verdict, row.actual_cause, row.actor, row.note = verdict, actual_cause, actor, note
        row.at = utcnow()
        row.rank = shown.get("rank")
        row.confidence = shown.get("confidence")
        row.model_confidence = shown.get("model_confidence")
        row.features = shown.get("features")
        s.add(
            IncidentEvent(
                incident_id=incident_id,
                actor=actor,
                action=ACTION,
                detail={
                    "cause": cause,
                    "from": before,
                    "to": {"verdict": verdict, "actual_cause": actual_cause},
                    "rank": row.rank,
                    "confidence": row.confidence,
                },
                note=note,
            )
        )
        s.flush()
        return _record(row)


def cause_feedback(factory: sessionmaker[Session], incident_id: str) -> dict[str, dict[str, Any]]:
    """The latest verdict on each cause of an incident, by cause (empty when none)."""
    with factory() as s:
        rows = s.scalars(
            select(CauseFeedback)
            .where(CauseFeedback.incident_id == incident_id)
            .order_by(CauseFeedback.rank, CauseFeedback.cause)
        )
        return {row.cause: _record(row) for row in rows}


def incident_labels(factory: sessionmaker[Session]) -> list[IncidentLabel]:
    """Every incident labelled a true or a false positive, oldest detection first."""
    with factory() as s:
        rows = s.execute(
            select(Incident.id, Incident.detected_at, Incident.false_positive)
            .where(Incident.false_positive.is_not(None))
            .order_by(Incident.detected_at, Incident.id)
        )
        return [IncidentLabel(i, t, bool(fp)) for i, t, fp in rows]


def cause_labels(factory: sessionmaker[Session]) -> list[CauseLabel]:
    """Every cause verdict with its incident's detection time, oldest detection first."""
    with factory() as s:
        rows = s.execute(
            select(CauseFeedback, Incident.detected_at)
            .join(Incident, Incident.id == CauseFeedback.incident_id)
            .order_by(Incident.detected_at, CauseFeedback.incident_id, CauseFeedback.cause)
        )
        return [
            CauseLabel(
                incident_id=row.incident_id,
                detected_at=detected_at,
                cause=row.cause,
                verdict=row.verdict,
                actual_cause=row.actual_cause,
                rank=row.rank,
                confidence=row.confidence,
                model_confidence=row.model_confidence,
            )
            for row, detected_at in rows
        ]


def report(
    factory: sessionmaker[Session], *, bins: int = BINS, prior_sd: float = PRIOR_SD
) -> dict[str, Any]:
    """The agent's own precision, cause accuracy, calibration and recalibration."""
    return feedback_report(
        incident_labels(factory), cause_labels(factory), bins=bins, prior_sd=prior_sd
    )


def _missing_sqlite_file(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(str(database)).exists()
    )


def stored_recalibration(store: str | sessionmaker[Session] | None) -> Recalibration | None:
    """The recalibration the store's cause verdicts support, or None when there are none to
    learn from (so investigations stay exactly as the shipped model makes them). ``store``
    is a URL or a session factory; a SQLite file that does not exist yet is not created."""
    if store is None:
        return None
    if isinstance(store, str):
        if _missing_sqlite_file(store):
            return None
        from cxagent.store.db import session_factory

        store = session_factory(store)
    fitted = recalibrate(cause_labels(store))
    return fitted if fitted.n else None


__all__ = [
    "ACTION",
    "ContradictoryFeedbackError",
    "InvalidFeedbackError",
    "UnknownCauseError",
    "cause_feedback",
    "cause_labels",
    "check_feedback",
    "incident_labels",
    "label_incident",
    "report",
    "set_cause_feedback",
    "stored_recalibration",
]
