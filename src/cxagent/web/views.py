"""The data of every page and of its JSON twin, read from the store.

Each function reads the incident row and the stored view it needs (no recomputation) and
returns the response model; a page renders exactly what its ``/api`` twin returns. A view
the builder has not stored yet gives ``investigated``/``available`` False and empty parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cxagent.store.repository import slice_key
from cxagent.web import schemas
from cxagent.web.errors import NotFound
from cxagent.web.format import stars
from cxagent.workbench.reader import Workbench, slice_label


def _incident(record: dict[str, Any]) -> schemas.Incident:
    return schemas.Incident.model_validate(record)


def _events(record: dict[str, Any]) -> list[schemas.Event]:
    return [schemas.Event.model_validate(e) for e in record.get("events", [])]


def _payload(wb: Workbench, incident_id: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The incident (404 naming it when unknown) and its stored view (None if missing)."""
    record = wb.get_incident(incident_id)
    return record, wb.get_analysis("incident", incident_id)


def _part(payload: dict[str, Any] | None, name: str) -> dict[str, Any]:
    value = (payload or {}).get(name)
    return value if isinstance(value, dict) else {}


def incident_links(incident_id: str) -> dict[str, str]:
    base = f"/incidents/{incident_id}"
    return {
        "page": base,
        "rca": f"{base}/rca",
        "recommendations": f"{base}/recommendations",
        "experiment": f"{base}/experiment",
        "api": f"/api{base}",
    }


def with_stars(slices: Sequence[Any]) -> list[dict[str, Any]]:
    """Top slices with significance stars (from q, else p, when the payload has none)."""
    out = []
    for s in slices:
        if not isinstance(s, dict):
            continue
        row = dict(s)
        if not row.get("stars"):
            row["stars"] = stars(row.get("q_value", row.get("p_value")))
        row.setdefault("label", slice_label(row.get("slice") or {}))
        row.setdefault("key", slice_key(row.get("slice") or {}))
        out.append(row)
    return out


# --- dashboard and feed --------------------------------------------------------------------------


def incident_list(
    wb: Workbench,
    *,
    status: Sequence[str] | None = None,
    severity: Sequence[str] | None = None,
    metric: str | None = None,
) -> schemas.IncidentList:
    rows = [
        _incident(r) for r in wb.list_incidents(status=status, severity=severity, metric=metric)
    ]
    return schemas.IncidentList(count=len(rows), incidents=rows)


def overview(
    wb: Workbench,
    *,
    status: Sequence[str] | None = None,
    severity: Sequence[str] | None = None,
) -> schemas.Overview:
    stored = wb.get_analysis("overview")
    incidents = incident_list(wb, status=status, severity=severity).incidents
    if stored is None:
        return schemas.Overview(available=False, incidents=incidents)
    return schemas.Overview(
        available=True,
        dataset=stored.get("dataset"),
        as_of=stored.get("as_of"),
        recent_window=stored.get("recent_window"),
        baseline_window=stored.get("baseline_window"),
        orders_last_7d=stored.get("orders_last_7d"),
        trend_30d=stored.get("trend_30d"),
        trend_7d=stored.get("trend_7d"),
        quick_stats=list(stored.get("quick_stats") or []),
        incidents=incidents,
    )


# --- an incident ----------------------------------------------------------------------------------


def _drilldown_root(record: dict[str, Any], tree: dict[str, Any], investigated: Any) -> str | None:
    for candidate in (record["slice_key"], slice_key(investigated or {})):
        if candidate in tree:
            return candidate
    return next(iter(tree), None)


def incident_detail(wb: Workbench, incident_id: str) -> schemas.IncidentDetail:
    record, payload = _payload(wb, incident_id)
    investigation = _part(payload, "investigation")
    tree = _part(payload, "drilldown")
    return schemas.IncidentDetail(
        incident=_incident(record),
        events=_events(record),
        investigated=payload is not None,
        narrative=investigation.get("narrative"),
        metrics=list((payload or {}).get("metrics") or []),
        metrics_label=slice_label(investigation["investigated_slice"])
        if investigation.get("investigated_slice") is not None
        else None,
        top_slices=[
            dict(s, drillable=s["key"] in tree)
            for s in with_stars(investigation.get("top_slices") or record["top_slices"] or [])
        ],
        trend=_part(payload, "trend") or None,
        drilldown_root=_drilldown_root(record, tree, investigation.get("investigated_slice")),
        links=incident_links(incident_id),
    )


def drilldown(wb: Workbench, incident_id: str, key: str | None) -> schemas.Drilldown:
    record, payload = _payload(wb, incident_id)
    tree = _part(payload, "drilldown")
    investigation = _part(payload, "investigation")
    root = _drilldown_root(record, tree, investigation.get("investigated_slice"))
    key = key or root
    node = tree.get(key) if key else None
    if not isinstance(node, dict):
        if not tree:
            raise NotFound(f"incident {incident_id!r} has no stored drilldown yet", field="slice")
        raise NotFound(f"no drilldown for slice {key!r} of incident {incident_id!r}", field="slice")
    children = [dict(c, drillable=c.get("key") in tree) for c in node.get("children") or []]
    slice_ = node.get("slice") or {}
    return schemas.Drilldown(
        incident_id=incident_id,
        key=str(key),
        root=str(root),
        slice=slice_,
        label=node.get("label") or slice_label(slice_),
        metrics=list(node.get("metrics") or []),
        children=with_stars(children),
    )


def rca(wb: Workbench, incident_id: str) -> schemas.RCA:
    record, payload = _payload(wb, incident_id)
    inv = _part(payload, "investigation")
    matched = {c.get("change_id") for c in inv.get("causes") or [] if c.get("change_id")}
    changes = [
        dict(c, matched=c.get("change_id") in matched)
        for c in (payload or {}).get("changes") or inv.get("changes") or []
        if isinstance(c, dict)
    ]
    return schemas.RCA(
        incident=_incident(record),
        investigated=bool(inv),
        investigated_slice=inv.get("investigated_slice"),
        causes=list(inv.get("causes") or []),
        ruled_out=list(inv.get("ruled_out") or []),
        not_testable=list(inv.get("not_testable") or []),
        narrative=inv.get("narrative"),
        confidence_calibrated=inv.get("confidence_calibrated"),
        contrast=inv.get("contrast"),
        shift_attribution=inv.get("shift_attribution"),
        timing=inv.get("timing") or {},
        changes=changes,
        trend=_part(payload, "trend") or None,
        cause_feedback=_verdicts(wb.cause_feedback(incident_id)),
    )


# --- feedback and the agent's accuracy ------------------------------------------------------------


def _verdicts(stored: dict[str, dict[str, Any]]) -> dict[str, schemas.CauseVerdict]:
    return {cause: schemas.CauseVerdict.model_validate(v) for cause, v in stored.items()}


def set_cause_feedback(
    wb: Workbench, incident_id: str, cause: str, body: schemas.CauseFeedback, *, actor: str
) -> schemas.CauseFeedbackState:
    """Record a verdict on one cause; the latest verdict on each cause of the incident."""
    stored = wb.set_cause_feedback(
        incident_id,
        cause,
        body.verdict,
        actor=actor,
        actual_cause=body.actual_cause,
        note=body.note,
    )
    return schemas.CauseFeedbackState(
        incident_id=incident_id, causes=list(_verdicts(stored).values())
    )


def accuracy(wb: Workbench) -> schemas.Accuracy:
    """Detection precision, cause accuracy and calibration, and the recalibration."""
    found = wb.feedback_report()
    return schemas.Accuracy.model_validate(
        {**found, "recalibration_applied": found["recalibration"]["n"] > 0}
    )


def _plans(payload: dict[str, Any] | None) -> list[dict[str, Any]]:
    plans = (payload or {}).get("plans") or []
    return [p for p in plans if isinstance(p, dict) and isinstance(p.get("rank"), int)]


def _plan_text(entry: dict[str, Any]) -> str | None:
    """The plan's markdown, or None when it could not be planned (``error`` says why)."""
    text = entry.get("markdown")
    return text if isinstance(text, str) and text else None


def recommendations(wb: Workbench, incident_id: str) -> schemas.Recommendations:
    record, payload = _payload(wb, incident_id)
    recs = _part(payload, "recommendations")
    plans = {p["rank"]: p for p in _plans(payload)}
    items = []
    for i, r in enumerate(recs.get("recommendations") or [], start=1):
        if isinstance(r, dict):
            entry = plans.get(i, {})
            has_plan = _plan_text(entry) is not None
            items.append(dict(r, rank=i, has_plan=has_plan, plan_error=entry.get("error")))
    return schemas.Recommendations(
        incident=_incident(record),
        investigated=bool(recs),
        message=recs.get("message"),
        exchange_rate=recs.get("exchange_rate"),
        recommendations=items,
        tradeoff=list(recs.get("tradeoff") or []),
    )


def plan_list(wb: Workbench, incident_id: str) -> schemas.PlanList:
    _, payload = _payload(wb, incident_id)
    return schemas.PlanList(
        incident_id=incident_id,
        plans=[schemas.PlanSummary.model_validate(p) for p in _plans(payload)],
    )


def plan(wb: Workbench, incident_id: str, rank: int) -> schemas.Plan:
    record, payload = _payload(wb, incident_id)
    entry = next((p for p in _plans(payload) if p["rank"] == rank), None)
    if entry is None or _plan_text(entry) is None:
        why = f": {entry['error']}" if entry and entry.get("error") else ""
        raise NotFound(
            f"incident {incident_id!r} has no experiment plan of rank {rank}{why}", field="rank"
        )
    return schemas.Plan.model_validate(
        {**entry, "incident_id": incident_id, "incident": _incident(record)}
    )


# --- the experiment -------------------------------------------------------------------------------


def _look_row(phase: dict[str, Any]) -> dict[str, Any]:
    """A phase with the figures of its latest look: progress, day, the primary's estimate."""
    looks = phase.get("looks") or []
    last = looks[-1] if looks else {}
    primary = last.get("primary") or {}
    valid = primary.get("always_valid") or {}
    row = {k: v for k, v in phase.items() if k != "looks"}
    row.update(
        progress=last.get("progress"),
        day=last.get("day"),
        date=last.get("date"),
        primary=primary.get("name"),
        estimate=primary.get("estimate"),
        lower=valid.get("lower"),
        upper=valid.get("upper"),
        look_recommendation=last.get("recommendation"),
    )
    return row


def _guardrails(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The guardrails at the decisive look, else at the latest look of any phase."""
    source = report.get("final")
    if not source:
        looks = [look for p in report.get("phases") or [] for look in p.get("looks") or []]
        source = looks[-1] if looks else {}
    return [
        {
            "name": g.get("name"),
            "estimate": g.get("estimate"),
            "lower": (g.get("always_valid") or {}).get("lower"),
            "upper": (g.get("always_valid") or {}).get("upper"),
            "margin": g.get("margin"),
            "state": g.get("state"),
        }
        for g in source.get("guardrails") or []
    ]


def _progress(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every look's primary estimate and always-valid interval (the progress chart)."""
    rows = []
    for phase in report.get("phases") or []:
        for look in phase.get("looks") or []:
            primary = look.get("primary") or {}
            valid = primary.get("always_valid") or {}
            rows.append(
                {
                    "phase": phase.get("name"),
                    "date": look.get("date"),
                    "progress": look.get("progress"),
                    "estimate": primary.get("estimate"),
                    "lower": valid.get("lower"),
                    "upper": valid.get("upper"),
                }
            )
    return rows


def next_step(report: dict[str, Any] | None, incident_status: str) -> str:
    """What to do now, from the experiment's state and the incident's."""
    if not report:
        return (
            "No experiment has run yet: open the recommendations, take the plan of the fix "
            "you choose and run it; its status appears here once recorded."
        )
    status = report.get("status")
    if status == "resolved":
        if incident_status == "resolved":
            return "Done: the fix met its go criteria in every phase and the incident is resolved."
        return "The fix met its go criteria in every phase: mark the incident resolved."
    if status == "rolled back":
        return (
            "The experiment was rolled back: return to the root-cause analysis and try the "
            "next recommendation."
        )
    phases = report.get("phases") or []
    current = next((p for p in phases if p.get("status") == "in progress"), None)
    if current is None:
        return "The experiment is in progress: keep collecting data."
    reasons = "; ".join(current.get("reasons") or [])
    action = {
        "proceed": f"Proceed: phase '{current.get('name')}' met its go criteria",
        "roll back": f"Roll back now: phase '{current.get('name')}' met a rollback criterion",
    }.get(
        str(current.get("recommendation")),
        f"Hold: keep phase '{current.get('name')}' running and collecting data",
    )
    return f"{action}{f' ({reasons})' if reasons else ''}."


def experiment(wb: Workbench, incident_id: str) -> schemas.Experiment:
    record = wb.get_incident(incident_id)
    stored = wb.get_analysis("experiment", incident_id)
    report = (stored or {}).get("report") or None
    plan_summary = (stored or {}).get("plan")
    plan_summary = plan_summary if isinstance(plan_summary, dict) else None
    markdown = (stored or {}).get("markdown")
    if not isinstance(report, dict):
        return schemas.Experiment(
            incident=_incident(record),
            available=False,
            plan=plan_summary,
            markdown=markdown,
            next_step=next_step(None, record["status"]),
        )
    return schemas.Experiment(
        incident=_incident(record),
        available=True,
        title=report.get("title"),
        status=report.get("status"),
        resolved=report.get("resolved"),
        path=(stored or {}).get("path"),
        plan=plan_summary,
        markdown=markdown,
        phases=[_look_row(p) for p in report.get("phases") or []],
        guardrails=_guardrails(report),
        progress=_progress(report),
        final=report.get("final"),
        evidence=[str(e) for e in report.get("evidence") or []],
        next_step=next_step(report, record["status"]),
    )


# --- product manager and ops ----------------------------------------------------------------------


def summary(wb: Workbench) -> schemas.Summary:
    stored = wb.analyses("incident")
    items = []
    for row in wb.list_incidents():
        payload = stored.get(row["id"])
        text = _part(payload, "summary")
        items.append(
            schemas.SummaryItem(
                incident=_incident(row),
                available=bool(text),
                title=text.get("title"),
                what_broke=text.get("what_broke"),
                why=text.get("why"),
                recommendation=text.get("recommendation"),
                tradeoff=text.get("tradeoff"),
                projection=text.get("projection"),
                rollout=list(text.get("rollout") or []),
                tradeoff_points=list(_part(payload, "recommendations").get("tradeoff") or []),
            )
        )
    return schemas.Summary(incidents=items)


def merchants(wb: Workbench, limit: int) -> schemas.Merchants:
    stored = wb.get_analysis("merchants")
    stores = [s for s in (stored or {}).get("stores") or [] if isinstance(s, dict)]
    return schemas.Merchants(
        available=stored is not None,
        count=len(stores),
        stores_at_risk=(stored or {}).get("stores_at_risk"),
        marketplace_cx=(stored or {}).get("marketplace_cx"),
        recent_window=(stored or {}).get("recent_window"),
        baseline_window=(stored or {}).get("baseline_window"),
        stores=stores[:limit],
    )
