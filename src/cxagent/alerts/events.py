"""What an alert says: the event, the incident as sent, and what changed since the last one.

A channel hears of an incident once ("opened"), again only when something that matters has
moved ("updated"), and when it is resolved ("resolved"). What matters is the incident's
*fingerprint*: severity, status, its CX delta and its most likely causes. The last
fingerprint a channel received is kept with its delivery record; ``material_changes``
compares the current one with it:

- severity or status: any change;
- delta: a move of at least 1 CX point or 10% of the delta last sent, whichever is larger
  (detection re-estimates the delta every run; a tenth of a point is noise, not news);
- causes: a different top three, or the top cause's confidence moving by 0.10 or more.

Comparing with the last *sent* fingerprint (not the previous run) lets a slow drift add up
to an update instead of slipping through in small steps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cxagent.store.models import Incident

EVENTS = ("opened", "updated", "resolved")
SCHEMA = "cxagent.alert.v1"
DELTA_MATERIAL_POINTS = 1.0
DELTA_MATERIAL_SHARE = 0.10
CONFIDENCE_MATERIAL = 0.10
TOP_CAUSES = 3

Causes = Sequence[Mapping[str, Any]]


def normalise_causes(causes: Causes | None) -> list[dict[str, Any]] | None:
    """Causes as alerts carry them, most likely first: ``cause`` and ``confidence``, with
    ``impact`` (CX points, negative = lost) and ``change_id`` when given. Accepts the dicts of
    ``Cause.as_dict()`` or of a stored investigation; None when causes are not known."""
    if causes is None:
        return None
    out = []
    for c in causes:
        item: dict[str, Any] = {"cause": str(c["cause"]), "confidence": float(c["confidence"])}
        for key in ("impact", "change_id"):
            if c.get(key) is not None:
                item[key] = c[key]
        out.append(item)
    return out


def fingerprint(incident: Incident, causes: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The material state of an incident: what an update is sent for (JSON-able)."""
    return {
        "severity": incident.severity,
        "status": incident.status,
        "delta": round(float(incident.delta), 3),
        "causes": None
        if causes is None
        else [
            {"cause": c["cause"], "confidence": round(c["confidence"], 3)}
            for c in causes[:TOP_CAUSES]
        ],
    }


def _top(causes: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return causes[0] if causes else None


def _causes_moved(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> bool:
    if [c["cause"] for c in old or []] != [c["cause"] for c in new]:
        return True
    before, after = _top(old), _top(new)
    if before is None or after is None:
        return False
    return abs(after["confidence"] - before["confidence"]) >= CONFIDENCE_MATERIAL


def delta_moved(old: float, new: float) -> bool:
    """Whether the CX delta moved by a material amount since ``old`` was sent."""
    return abs(new - old) >= max(DELTA_MATERIAL_POINTS, DELTA_MATERIAL_SHARE * abs(old))


def material_changes(
    old: Mapping[str, Any] | None, new: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """What moved materially from the fingerprint last sent to the current one, as
    ``{field: {"from": ..., "to": ...}}`` (empty: nothing worth a message). Unknown causes
    (None) in ``new`` are no change: causes are compared only when known."""
    if old is None:
        return {}
    changes: dict[str, dict[str, Any]] = {}
    for key in ("severity", "status"):
        if old.get(key) != new[key]:
            changes[key] = {"from": old.get(key), "to": new[key]}
    before = old.get("delta")
    if before is None or delta_moved(float(before), float(new["delta"])):
        changes["delta"] = {"from": before, "to": new["delta"]}
    if new.get("causes") is not None and _causes_moved(old.get("causes"), new["causes"]):
        changes["causes"] = {"from": _top(old.get("causes")), "to": _top(new["causes"])}
    return changes


def _iso(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds")


def incident_payload(
    incident: Incident, causes: list[dict[str, Any]] | None, url: str | None
) -> dict[str, Any]:
    """The incident as an alert carries it (the ``incident`` object of the JSON event)."""
    d: dict[str, Any] = {
        "id": incident.id,
        "metric": incident.metric,
        "slice": dict(incident.slice),
        "slice_key": incident.slice_key,
        "severity": incident.severity,
        "status": incident.status,
        "baseline": incident.baseline,
        "current": incident.current,
        "delta": incident.delta,
        "affected_orders": incident.affected_orders,
        "window_start": _iso(incident.window_start),
        "window_end": _iso(incident.window_end),
        "detected_at": _iso(incident.detected_at),
        "version": incident.version,
    }
    if causes is not None:
        d["causes"] = causes
    if url is not None:
        d["url"] = url
    return d


@dataclass(frozen=True)
class Alert:
    """One message about one incident to one channel: message number ``sequence`` of the
    incident on that channel (1 is the "opened" one)."""

    event: str
    sequence: int
    incident: dict[str, Any]
    sent_at: dt.datetime  # UTC
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {', '.join(EVENTS)}, not {self.event!r}")
        if self.sequence < 1:
            raise ValueError("sequence starts at 1")

    @property
    def incident_id(self) -> str:
        return str(self.incident["id"])

    @property
    def idempotency_key(self) -> str:
        """``<incident id>:<sequence>``: the same for every retry of this message, so a
        receiver can drop a duplicate (a retry after a reply that was lost)."""
        return f"{self.incident_id}:{self.sequence}"

    def as_event(self) -> dict[str, Any]:
        """The JSON event of the generic webhook (documented in docs/alerts.md)."""
        sent = self.sent_at
        if sent.tzinfo is not None:
            sent = sent.astimezone(dt.UTC).replace(tzinfo=None)
        return {
            "schema": SCHEMA,
            "event": self.event,
            "sequence": self.sequence,
            "sent_at": _iso(sent) + "Z",
            "incident": self.incident,
            "changes": self.changes,
        }


def build_alert(
    incident: Incident,
    *,
    event: str,
    sequence: int,
    sent_at: dt.datetime,
    causes: list[dict[str, Any]] | None = None,
    changes: dict[str, dict[str, Any]] | None = None,
    workbench_url: str | None = None,
) -> Alert:
    """The alert of one incident; ``workbench_url`` (the workbench's base URL) adds a link."""
    url = None if not workbench_url else f"{workbench_url.rstrip('/')}/incidents/{incident.id}"
    return Alert(
        event=event,
        sequence=sequence,
        incident=incident_payload(incident, causes, url),
        sent_at=sent_at,
        changes=dict(changes or {}),
    )
