"""Alert deliveries: what each alert channel has been told about each incident.

One row per incident and channel (unique). A delivered message moves the row's ``sequence``
on by one and records the material state it carried, so the next dispatch can tell an update
from a repeat; a failed one records the error and leaves the sequence alone, so the same
message is sent again next time. Every write is one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cxagent.store.models import AlertDelivery, utcnow

_INSERT_TRIES = 3  # a concurrent dispatcher may insert the same row first: read it and go on


def get_delivery(
    factory: sessionmaker[Session], incident_id: str, channel: str
) -> AlertDelivery | None:
    """The delivery record of one incident on one channel, or None if nothing was tried."""
    with factory() as s:
        return s.scalars(
            select(AlertDelivery).where(
                AlertDelivery.incident_id == incident_id, AlertDelivery.channel == channel
            )
        ).first()


def list_deliveries(
    factory: sessionmaker[Session],
    *,
    incident_ids: Iterable[str] | None = None,
    channel: str | None = None,
) -> list[AlertDelivery]:
    """Delivery records, by incident then channel (all of them unless filtered)."""
    q = select(AlertDelivery).order_by(AlertDelivery.incident_id, AlertDelivery.channel)
    if incident_ids is not None:
        q = q.where(AlertDelivery.incident_id.in_(list(incident_ids)))
    if channel is not None:
        q = q.where(AlertDelivery.channel == channel)
    with factory() as s:
        return list(s.scalars(q))


def _locked(s: Session, incident_id: str, channel: str) -> AlertDelivery | None:
    return s.scalars(
        select(AlertDelivery)
        .where(AlertDelivery.incident_id == incident_id, AlertDelivery.channel == channel)
        .with_for_update()
    ).first()


def _write(
    factory: sessionmaker[Session], incident_id: str, channel: str, apply: Any
) -> AlertDelivery:
    """Lock (or create) the row and apply a change to it, in one transaction."""
    for attempt in range(_INSERT_TRIES):
        try:
            with factory.begin() as s:
                row = _locked(s, incident_id, channel)
                if row is None:
                    row = AlertDelivery(
                        incident_id=incident_id, channel=channel, sequence=0, attempts=0
                    )
                    s.add(row)
                apply(row)
            return row
        except IntegrityError:  # inserted by another dispatcher meanwhile
            if attempt == _INSERT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def record_sent(
    factory: sessionmaker[Session],
    *,
    incident_id: str,
    channel: str,
    sequence: int,
    event: str,
    incident_version: int,
    fingerprint: dict[str, Any],
    attempts: int,
    thread_ref: str | None = None,
    at: dt.datetime | None = None,
) -> AlertDelivery:
    """Record that message number ``sequence`` reached the channel after ``attempts`` tries.

    The first message's thread reference (an email Message-ID) is kept for good. A record
    that already holds this sequence or a later one (another dispatcher delivered it first)
    is left as it is: sequences only move forward.
    """
    when = at or utcnow()

    def apply(row: AlertDelivery) -> None:
        row.last_attempt_at = when
        if row.sequence >= sequence:
            return
        row.attempts = (row.attempts if row.last_error else 0) + attempts
        row.sequence = sequence
        row.last_event = event
        row.last_incident_version = incident_version
        row.last_fingerprint = fingerprint
        row.first_sent_at = row.first_sent_at or when
        row.last_sent_at = when
        row.thread_ref = row.thread_ref or thread_ref
        row.last_error = None

    return _write(factory, incident_id, channel, apply)


def record_failure(
    factory: sessionmaker[Session],
    *,
    incident_id: str,
    channel: str,
    attempts: int,
    error: str,
    at: dt.datetime | None = None,
) -> AlertDelivery:
    """Record that the next message could not be delivered after ``attempts`` tries.

    The sequence, fingerprint and thread stay as they were, so the next dispatch sends the
    message again; ``attempts`` adds up over dispatches until it goes through.
    """
    when = at or utcnow()

    def apply(row: AlertDelivery) -> None:
        row.attempts = (row.attempts if row.last_error else 0) + attempts
        row.last_error = error[:2000]
        row.last_attempt_at = when

    return _write(factory, incident_id, channel, apply)
