"""The JSON API under ``/api``: the twin of every page, and the state changes.

Every route has an explicit ``operation_id`` (clients generated from the OpenAPI document keep
their method names) and declares its error responses. Reads of the dashboard, the summary
and the merchant report are open to both roles; everything else needs the ML engineer.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from cxagent.web import schemas, views
from cxagent.web.auth import CurrentUser, Engineer, User, require_engineer_csrf
from cxagent.workbench.reader import Workbench

IncidentId = Annotated[str, Path(min_length=1, max_length=40, description="The incident id.")]
Rank = Annotated[int, Path(ge=1, le=100, description="The recommendation's rank (1 = top).")]
SliceKey = Annotated[
    str | None,
    Query(max_length=512, description="Slice key 'k=v;k=v' (default: the incident's)."),
]
StatusFilter = Annotated[list[schemas.Status] | None, Query(description="Any of these.")]
SeverityFilter = Annotated[list[schemas.Severity] | None, Query(description="Any of these.")]
EngineerChange = Annotated[User, Depends(require_engineer_csrf)]
CauseName = Annotated[schemas.Cause, Path(description="A ranked cause of the incident.")]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "Not signed in"},
    403: {"model": schemas.ErrorResponse, "description": "Not allowed for this role"},
    422: {"model": schemas.ErrorResponse, "description": "A field is not valid"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": schemas.ErrorResponse, "description": "No such incident (or part of it)"}
}
CHANGE: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: {"model": schemas.ErrorResponse, "description": "The incident is too contended"},
}

router = APIRouter(prefix="/api", tags=["workbench"], responses=ERRORS)
public = APIRouter(prefix="/api", tags=["health"])


def workbench(request: Request) -> Workbench:
    wb: Workbench = request.app.state.workbench
    return wb


Store = Annotated[Workbench, Depends(workbench)]


@public.get("/health", operation_id="health", response_model=schemas.Health)
def health() -> schemas.Health:
    """Liveness: the one route that answers without authentication."""
    return schemas.Health(status="ok")


@router.get("/me", operation_id="get_me", response_model=schemas.Me)
def me(user: CurrentUser) -> schemas.Me:
    """Who the request is authenticated as, and whether they may change things."""
    return schemas.Me(
        name=user.name,
        role=user.role,
        role_label=user.role_label,
        can_edit=user.is_engineer,
    )


@router.get("/overview", operation_id="get_overview", response_model=schemas.Overview)
def get_overview(
    _: CurrentUser, wb: Store, status: StatusFilter = None, severity: SeverityFilter = None
) -> schemas.Overview:
    """The dashboard: CX Score trends (7 and 30 days), quick stats, the incident feed."""
    return views.overview(wb, status=status, severity=severity)


@router.get("/incidents", operation_id="list_incidents", response_model=schemas.IncidentList)
def list_incidents(
    _: CurrentUser,
    wb: Store,
    status: StatusFilter = None,
    severity: SeverityFilter = None,
    metric: Annotated[str | None, Query(max_length=64)] = None,
) -> schemas.IncidentList:
    """The incident feed, most severe and most recent first."""
    return views.incident_list(wb, status=status, severity=severity, metric=metric)


@router.get(
    "/incidents/{incident_id}",
    operation_id="get_incident",
    response_model=schemas.IncidentDetail,
    responses=NOT_FOUND,
)
def get_incident(incident_id: IncidentId, _: Engineer, wb: Store) -> schemas.IncidentDetail:
    """An incident: metrics before and after, top slices, trend, audit trail."""
    return views.incident_detail(wb, incident_id)


@router.post(
    "/incidents/{incident_id}/status",
    operation_id="set_incident_status",
    response_model=schemas.IncidentWithEvents,
    responses=CHANGE,
)
def set_incident_status(
    incident_id: IncidentId, body: schemas.StatusChange, user: EngineerChange, wb: Store
) -> dict[str, Any]:
    """Move the incident to another status; recorded in its audit trail with the actor."""
    return wb.set_status(incident_id, body.status, actor=user.name, note=body.note)


@router.post(
    "/incidents/{incident_id}/feedback",
    operation_id="set_incident_feedback",
    response_model=schemas.IncidentWithEvents,
    responses=CHANGE,
)
def set_incident_feedback(
    incident_id: IncidentId, body: schemas.Feedback, user: EngineerChange, wb: Store
) -> dict[str, Any]:
    """Label the incident a false positive (or not); feeds detector calibration."""
    return wb.set_false_positive(incident_id, body.false_positive, actor=user.name, note=body.note)


@router.post(
    "/incidents/{incident_id}/causes/{cause}/feedback",
    operation_id="set_cause_feedback",
    response_model=schemas.CauseFeedbackState,
    responses={
        404: {
            "model": schemas.ErrorResponse,
            "description": "No such incident, or the cause is not among its ranked causes",
        },
        409: {
            "model": schemas.ErrorResponse,
            "description": "The verdict contradicts itself (actual_cause), or the incident "
            "is too contended",
        },
    },
)
def set_cause_feedback(
    incident_id: IncidentId,
    cause: CauseName,
    body: schemas.CauseFeedback,
    user: EngineerChange,
    wb: Store,
) -> schemas.CauseFeedbackState:
    """Mark a ranked cause confirmed or wrong (optionally naming the actual cause): the
    latest verdict per cause wins, each one is in the audit trail with the actor; feeds
    cause accuracy and the recalibration of the confidence."""
    return views.set_cause_feedback(wb, incident_id, cause, body, actor=user.name)


@router.get(
    "/incidents/{incident_id}/drilldown",
    operation_id="get_drilldown",
    response_model=schemas.Drilldown,
    responses=NOT_FOUND,
)
def get_drilldown(
    incident_id: IncidentId,
    _: Engineer,
    wb: Store,
    slice: SliceKey = None,
) -> schemas.Drilldown:
    """A slice of the incident: its metrics and its sub-slices."""
    return views.drilldown(wb, incident_id, slice)


@router.get(
    "/incidents/{incident_id}/rca",
    operation_id="get_rca",
    response_model=schemas.RCA,
    responses=NOT_FOUND,
)
def get_rca(incident_id: IncidentId, _: Engineer, wb: Store) -> schemas.RCA:
    """Ranked causes with confidence, impact and evidence; causes ruled out; narrative."""
    return views.rca(wb, incident_id)


@router.get(
    "/incidents/{incident_id}/recommendations",
    operation_id="get_recommendations",
    response_model=schemas.Recommendations,
    responses=NOT_FOUND,
)
def get_recommendations(incident_id: IncidentId, _: Engineer, wb: Store) -> schemas.Recommendations:
    """Fixes with expected CX gain and efficiency cost (90% intervals), and the tradeoff."""
    return views.recommendations(wb, incident_id)


@router.get(
    "/incidents/{incident_id}/plans",
    operation_id="list_plans",
    response_model=schemas.PlanList,
    responses=NOT_FOUND,
)
def list_plans(incident_id: IncidentId, _: Engineer, wb: Store) -> schemas.PlanList:
    """The experiment plans stored for the incident's recommendations."""
    return views.plan_list(wb, incident_id)


@router.get(
    "/incidents/{incident_id}/plans/{rank}",
    operation_id="get_plan",
    response_model=schemas.Plan,
    responses=NOT_FOUND,
)
def get_plan(incident_id: IncidentId, rank: Rank, _: Engineer, wb: Store) -> schemas.Plan:
    """The experiment plan of the recommendation of this rank, with its markdown."""
    return views.plan(wb, incident_id, rank)


@router.get(
    "/incidents/{incident_id}/plans/{rank}/markdown",
    operation_id="export_plan_markdown",
    response_class=Response,
    responses={
        **NOT_FOUND,
        200: {"content": {"text/markdown": {}}, "description": "The plan as a file"},
    },
)
def export_plan_markdown(incident_id: IncidentId, rank: Rank, _: Engineer, wb: Store) -> Response:
    """Download the plan as markdown (an attachment named after the incident and rank)."""
    found = views.plan(wb, incident_id, rank)
    name = f"{incident_id}-plan-{rank}.md"
    return Response(
        found.markdown,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/incidents/{incident_id}/experiment",
    operation_id="get_experiment",
    response_model=schemas.Experiment,
    responses=NOT_FOUND,
)
def get_experiment(incident_id: IncidentId, _: Engineer, wb: Store) -> schemas.Experiment:
    """The experiment against its plan: phases, progress, guardrails, the next step."""
    return views.experiment(wb, incident_id)


@router.get("/summary", operation_id="get_summary", response_model=schemas.Summary)
def get_summary(_: CurrentUser, wb: Store) -> schemas.Summary:
    """For product managers: what broke, why, what we recommend, the tradeoff, the impact."""
    return views.summary(wb)


@router.get("/merchants", operation_id="get_merchants", response_model=schemas.Merchants)
def get_merchants(
    _: CurrentUser, wb: Store, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> schemas.Merchants:
    """Stores ranked by CX risk, with their specific issues."""
    return views.merchants(wb, limit)


@router.get("/accuracy", operation_id="get_accuracy", response_model=schemas.Accuracy)
def get_accuracy(_: CurrentUser, wb: Store) -> schemas.Accuracy:
    """The agent's own record from the feedback: detection precision, top-1 cause accuracy,
    calibration and Brier score by week, and the recalibration of the confidence."""
    return views.accuracy(wb)
