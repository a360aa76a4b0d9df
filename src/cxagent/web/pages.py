"""The server-rendered pages. Each one renders what its ``/api`` twin returns (the same
``views`` function) plus the charts built from it; forms post state changes with the
session's CSRF token and come back to the page they were sent from."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from markdown_it import MarkdownIt

from cxagent.rca.feedback import ACTUAL_CAUSES
from cxagent.store.models import SEVERITIES, STATUSES
from cxagent.web import charts, views
from cxagent.web.api import CauseName, IncidentId, Rank, SliceKey, Store
from cxagent.web.auth import CurrentUser, Engineer, authenticator, safe_next
from cxagent.web.errors import InvalidField
from cxagent.web.schemas import Status, Verdict
from cxagent.web.templating import render

router = APIRouter(include_in_schema=False)
CSRFField = Annotated[str, Form()]
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def _choices(values: list[str] | None, allowed: tuple[str, ...], field: str) -> list[str] | None:
    chosen = [v for v in values or [] if v]
    for v in chosen:
        if v not in allowed:
            raise InvalidField(
                f"{field} must be one of {', '.join(allowed)}, not {v!r}", field=field
            )
    return chosen or None


def _page(request: Request, name: str, nav: str, json_url: str, **context: Any) -> Response:
    return render(request, name, {"nav": nav, "json_url": json_url, **context})


@router.get("/")
def dashboard(
    request: Request,
    _: CurrentUser,
    wb: Store,
    status: Annotated[list[str] | None, Query()] = None,
    severity: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The dashboard; its filter form sends empty values for 'any', which mean no filter."""
    status = _choices(status, STATUSES, "status")
    severity = _choices(severity, SEVERITIES, "severity")
    data = views.overview(wb, status=status, severity=severity)
    query = request.url.query
    return _page(
        request,
        "dashboard.html",
        "dashboard",
        "/api/overview" + (f"?{query}" if query else ""),
        data=data,
        filters={"status": status or [], "severity": severity or []},
        trend_30d=charts.cx_trend(data.trend_30d, data.incidents),
        trend_7d=charts.cx_trend(data.trend_7d, data.incidents),
    )


@router.get("/incidents/{incident_id}")
def incident_page(
    request: Request, incident_id: IncidentId, _: Engineer, wb: Store, slice: SliceKey = None
) -> Response:
    data = views.incident_detail(wb, incident_id)
    drill = None
    if data.drilldown_root is not None:
        drill = views.drilldown(wb, incident_id, slice or data.drilldown_root)
    return _page(
        request,
        "incident.html",
        "dashboard",
        f"/api/incidents/{incident_id}",
        data=data,
        inc=data.incident,
        drill=drill,
        trend=charts.incident_trend(data.trend, data.incident),
    )


@router.get("/incidents/{incident_id}/drilldown")
def drilldown_fragment(
    request: Request, incident_id: IncidentId, _: Engineer, wb: Store, slice: SliceKey = None
) -> Response:
    """The drilldown panel alone: what the incident page swaps in when a slice is clicked."""
    return render(request, "_drilldown.html", {"drill": views.drilldown(wb, incident_id, slice)})


@router.get("/incidents/{incident_id}/rca")
def rca_page(request: Request, incident_id: IncidentId, _: Engineer, wb: Store) -> Response:
    data = views.rca(wb, incident_id)
    return _page(
        request,
        "rca.html",
        "dashboard",
        f"/api/incidents/{incident_id}/rca",
        data=data,
        inc=data.incident,
        shap=charts.shap_shift(data.shift_attribution),
        did=charts.did_effects(data.contrast),
        timeline=charts.timeline(data.trend, data.incident, data.changes),
        actual_causes=ACTUAL_CAUSES,
    )


@router.get("/incidents/{incident_id}/recommendations")
def recommendations_page(
    request: Request, incident_id: IncidentId, _: Engineer, wb: Store
) -> Response:
    data = views.recommendations(wb, incident_id)
    return _page(
        request,
        "recommendations.html",
        "dashboard",
        f"/api/incidents/{incident_id}/recommendations",
        data=data,
        inc=data.incident,
        tradeoff=charts.tradeoff(data.tradeoff),
    )


@router.get("/incidents/{incident_id}/plans/{rank}")
def plan_page(
    request: Request, incident_id: IncidentId, rank: Rank, _: Engineer, wb: Store
) -> Response:
    data = views.plan(wb, incident_id, rank)
    return _page(
        request,
        "plan.html",
        "dashboard",
        f"/api/incidents/{incident_id}/plans/{rank}",
        data=data,
        inc=data.incident,
        html=_markdown.render(data.markdown),
    )


@router.get("/incidents/{incident_id}/experiment")
def experiment_page(request: Request, incident_id: IncidentId, _: Engineer, wb: Store) -> Response:
    data = views.experiment(wb, incident_id)
    return _page(
        request,
        "experiment.html",
        "dashboard",
        f"/api/incidents/{incident_id}/experiment",
        data=data,
        inc=data.incident,
        progress=charts.experiment_progress(data.progress, data.plan),
        markdown_html=_markdown.render(data.markdown or ""),
    )


@router.get("/summary")
def summary_page(request: Request, _: CurrentUser, wb: Store) -> Response:
    data = views.summary(wb)
    figures = {item.incident.id: charts.tradeoff(item.tradeoff_points) for item in data.incidents}
    return _page(request, "summary.html", "summary", "/api/summary", data=data, tradeoffs=figures)


@router.get("/merchants")
def merchants_page(
    request: Request,
    _: CurrentUser,
    wb: Store,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    data = views.merchants(wb, limit)
    return _page(request, "merchants.html", "merchants", f"/api/merchants?limit={limit}", data=data)


@router.get("/accuracy")
def accuracy_page(request: Request, _: CurrentUser, wb: Store) -> Response:
    """The agent's own record from the engineers' feedback."""
    data = views.accuracy(wb)
    return _page(request, "accuracy.html", "accuracy", "/api/accuracy", data=data)


# --- forms -----------------------------------------------------------------------------------------


def _back(incident_id: str, target: str) -> Response:
    return RedirectResponse(safe_next(target or f"/incidents/{incident_id}"), status_code=303)


@router.post("/incidents/{incident_id}/status")
def status_form(
    request: Request,
    incident_id: IncidentId,
    user: Engineer,
    wb: Store,
    status: Annotated[Status, Form()],
    csrf_token: CSRFField = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    authenticator(request).check_csrf(user, csrf_token)
    wb.set_status(incident_id, status, actor=user.name, note=note or None)
    return _back(incident_id, next)


@router.post("/incidents/{incident_id}/feedback")
def feedback_form(
    request: Request,
    incident_id: IncidentId,
    user: Engineer,
    wb: Store,
    false_positive: Annotated[bool, Form()],
    csrf_token: CSRFField = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    authenticator(request).check_csrf(user, csrf_token)
    wb.set_false_positive(incident_id, false_positive, actor=user.name, note=note or None)
    return _back(incident_id, next)


@router.post("/incidents/{incident_id}/causes/{cause}/feedback")
def cause_feedback_form(
    request: Request,
    incident_id: IncidentId,
    cause: CauseName,
    user: Engineer,
    wb: Store,
    verdict: Annotated[Verdict, Form()],
    csrf_token: CSRFField = "",
    actual_cause: Annotated[str, Form(max_length=32)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Confirm a ranked cause or mark it wrong (an empty actual cause: not named)."""
    authenticator(request).check_csrf(user, csrf_token)
    wb.set_cause_feedback(
        incident_id,
        cause,
        verdict,
        actor=user.name,
        actual_cause=actual_cause or None,
        note=note or None,
    )
    return _back(incident_id, next or f"/incidents/{incident_id}/rca")
