"""Deciding, per incident and channel, what to send; sending it; recording the outcome.

For each incident x channel the delivery record (``cxagent.store.alerts``) says what the
channel has already been told. Nothing yet: the incident is "opened" there once its severity
reaches the channel's ``min_severity`` (an incident that rises later is opened then), unless
it is already resolved. Told before: an "updated" goes out when the incident's fingerprint
has moved materially since the last message (see ``cxagent.alerts.events``), a "resolved"
when it has been resolved; updates of an opened incident go out whatever its severity now,
so a channel that heard of it also hears it calm down. Each outcome is recorded in its own
transaction: a message that failed after its retries is recorded as failed, never as sent,
and is sent again by the next dispatch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cxagent.alerts.channels import Sender
from cxagent.alerts.events import (
    Causes,
    build_alert,
    fingerprint,
    material_changes,
    normalise_causes,
)
from cxagent.alerts.settings import Channel, check_names, check_secrets
from cxagent.store.alerts import list_deliveries, record_failure, record_sent
from cxagent.store.models import AlertDelivery, Incident, utcnow
from cxagent.store.repository import analysis_times, get_analysis

log = logging.getLogger(__name__)
OUTCOMES = ("sent", "failed", "skipped")


@dataclass(frozen=True)
class Decision:
    """What to send a channel about an incident: an event, or None and why not."""

    event: str | None
    reason: str
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DispatchResult:
    """The outcome of one incident on one channel in one dispatch."""

    incident_id: str
    channel: str
    outcome: str  # sent | failed | skipped
    event: str | None = None
    sequence: int | None = None  # the message's number on this channel (1 = opened)
    attempts: int = 0
    detail: str = ""  # why it was skipped, or the error that failed it

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "channel": self.channel,
            "outcome": self.outcome,
            "event": self.event,
            "sequence": self.sequence,
            "attempts": self.attempts,
            "detail": self.detail,
        }


def decide(
    incident: Incident,
    channel: Channel,
    delivery: AlertDelivery | None,
    state: Mapping[str, Any],
) -> Decision:
    """The event (if any) ``channel`` should get for ``incident`` in its current ``state``
    (its fingerprint), given what its delivery record says was sent."""
    if delivery is None or delivery.sequence == 0:
        return _opening(incident, channel, delivery)
    last = delivery.last_fingerprint or {}
    if last.get("status") == "resolved" and state["status"] == "resolved":
        return Decision(None, f"resolution already sent (update {delivery.sequence})")
    changes = material_changes(last, state)
    if not changes:
        return Decision(None, f"no material change since update {delivery.sequence}")
    event = "resolved" if state["status"] == "resolved" else "updated"
    return Decision(event, ", ".join(changes) + " changed", changes)


def _opening(incident: Incident, channel: Channel, delivery: AlertDelivery | None) -> Decision:
    """Whether a channel never told of ``incident`` gets its first message now: not once it
    is resolved, nor while it is below the channel's minimum severity."""
    if incident.status == "resolved":
        return Decision(None, "resolved before this channel was told of it")
    if not channel.accepts(incident.severity):
        return Decision(
            None,
            f"severity {incident.severity} is below the channel's minimum ({channel.min_severity})",
        )
    retry = delivery is not None and delivery.last_error is not None
    return Decision("opened", "sending again after a failure" if retry else "new incident")


def _naive_utc(when: dt.datetime | None) -> dt.datetime:
    if when is None:
        return utcnow()
    return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


def dispatch(
    factory: sessionmaker[Session],
    incidents: Iterable[Incident],
    channels: Iterable[Channel],
    *,
    sender: Sender | None = None,
    now: dt.datetime | None = None,
    causes: Mapping[str, Causes] | None = None,
    workbench_url: str | None = None,
) -> list[DispatchResult]:
    """Send each channel what it has not been told about ``incidents`` and record it.

    ``causes`` maps incident ids to their ranked causes (``Cause.as_dict()`` dicts, or
    ``stored_causes``); an incident without an entry keeps the causes last sent.
    ``workbench_url`` (the workbench's base URL) adds a link to each message. ``now`` (UTC)
    stamps the messages and records. Raises AlertConfigError before sending anything when a
    channel's secret is missing from the environment or two channels share a name.
    """
    sender = sender or Sender()
    channels = list(channels)
    check_names(channels)
    check_secrets(channels, sender.env)
    when = _naive_utc(now)
    incidents = list({i.id: i for i in incidents}.values())  # each incident once
    rows = {
        (d.incident_id, d.channel): d
        for d in list_deliveries(factory, incident_ids=[i.id for i in incidents])
    }
    given = causes or {}
    results = []
    for inc in incidents:
        provided = normalise_causes(given.get(inc.id))
        for channel in channels:
            row = rows.get((inc.id, channel.name))
            last = row.last_fingerprint if row is not None else None
            known = provided if provided is not None else (last or {}).get("causes")
            state = fingerprint(inc, known)
            decision = decide(inc, channel, row, state)
            if decision.event is None:
                results.append(
                    DispatchResult(inc.id, channel.name, "skipped", detail=decision.reason)
                )
                continue
            results.append(
                _send(
                    factory, sender, inc, channel, row, decision, state, known, when, workbench_url
                )
            )
    return results


def _send(
    factory: sessionmaker[Session],
    sender: Sender,
    inc: Incident,
    channel: Channel,
    row: AlertDelivery | None,
    decision: Decision,
    state: dict[str, Any],
    known: list[dict[str, Any]] | None,
    when: dt.datetime,
    workbench_url: str | None,
) -> DispatchResult:
    assert decision.event is not None
    sequence = (row.sequence if row is not None else 0) + 1
    alert = build_alert(
        inc,
        event=decision.event,
        sequence=sequence,
        sent_at=when,
        causes=known,
        changes=decision.changes,
        workbench_url=workbench_url,
    )
    outcome = sender.deliver(channel, alert, thread_ref=row.thread_ref if row is not None else None)
    if outcome.delivered:
        record_sent(
            factory,
            incident_id=inc.id,
            channel=channel.name,
            sequence=sequence,
            event=decision.event,
            incident_version=inc.version,
            fingerprint=state,
            attempts=outcome.attempts,
            thread_ref=outcome.value.thread_ref if outcome.value is not None else None,
            at=when,
        )
        return DispatchResult(
            inc.id,
            channel.name,
            "sent",
            decision.event,
            sequence,
            outcome.attempts,
            decision.reason,
        )
    error = outcome.error or "failed"
    log.warning("alert %s %s of %s not delivered: %s", decision.event, sequence, inc.id, error)
    record_failure(
        factory,
        incident_id=inc.id,
        channel=channel.name,
        attempts=outcome.attempts,
        error=error,
        at=when,
    )
    return DispatchResult(
        inc.id, channel.name, "failed", decision.event, sequence, outcome.attempts, error
    )


def pending_incidents(
    factory: sessionmaker[Session], incidents: Iterable[Incident], channels: Iterable[Channel]
) -> list[Incident]:
    """The incidents some channel may have to be told about now; ``dispatch`` would skip
    every other one ("no material change"), so a caller can dispatch these alone and read
    only their causes, and stay bounded as resolved incidents pile up.

    Per channel: never told (and ``decide`` would open it: not resolved, severe enough), the
    last message failed, or since the last message the incident changed (its version) or
    was investigated again (its stored ``incident`` analysis is newer). Reads the delivery
    records and the analyses' times, not their payloads.
    """
    incidents = list({i.id: i for i in incidents}.values())
    channels = list(channels)
    rows = {
        (d.incident_id, d.channel): d
        for d in list_deliveries(factory, incident_ids=[i.id for i in incidents])
    }
    analysed = analysis_times(factory, "incident")

    def due(inc: Incident, channel: Channel) -> bool:
        row = rows.get((inc.id, channel.name))
        if row is None or row.sequence == 0:  # never told: the same rule as dispatch's
            return _opening(inc, channel, row).event is not None
        if row.last_error is not None or row.last_incident_version != inc.version:
            return True
        when = analysed.get(inc.id)
        return when is not None and (row.last_sent_at is None or when > row.last_sent_at)

    return [inc for inc in incidents if any(due(inc, ch) for ch in channels)]


def stored_causes(factory: sessionmaker[Session], incident_ids: Iterable[str]) -> dict[str, Any]:
    """The ranked causes of each incident the workbench has investigated (its stored
    ``incident`` analysis), for ``dispatch(causes=...)``; incidents without one are left out."""
    out: dict[str, Any] = {}
    for incident_id in incident_ids:
        payload = get_analysis(factory, "incident", incident_id) or {}
        found = (payload.get("investigation") or {}).get("causes")
        if found is not None:
            out[incident_id] = found
    return out
