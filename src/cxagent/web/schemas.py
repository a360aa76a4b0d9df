"""Request bodies and response models of the JSON API (and the data of each page).

The stored payloads keep their own shape (see ``cxagent.workbench``): models type the parts
the API promises and pass the payload parts through as JSON objects, so a field the builder
adds later reaches clients without a change here.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

Status = Literal["new", "investigating", "monitoring", "resolved"]
Severity = Literal["low", "medium", "high"]
Json = dict[str, Any]

# Times of the data are the marketplace's local time, kept without an offset; times of the
# audit trail are UTC, kept naive by the store and given their offset here.
LocalTime = Annotated[
    dt.datetime,
    PlainSerializer(lambda t: t.isoformat(), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}",
            "description": "the marketplace's local time, ISO 8601 without an offset",
        }
    ),
]
UTCTime = Annotated[
    dt.datetime,
    PlainSerializer(lambda t: t.replace(tzinfo=dt.UTC).isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class ErrorBody(BaseModel):
    type: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class StatusChange(BaseModel):
    """Move an incident to another status."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 0 is not False
    status: Status
    note: str | None = Field(default=None, max_length=2000)


class Feedback(BaseModel):
    """Label an incident as a false alarm (or take the label back)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    false_positive: bool
    note: str | None = Field(default=None, max_length=2000)


Cause = Literal[
    "batching_policy",
    "prep_time_drift",
    "dasher_shortage",
    "eta_model_bias",
    "inventory_drop",
    "normal_variance",
]
ActualCause = Literal[
    "batching_policy",
    "prep_time_drift",
    "dasher_shortage",
    "eta_model_bias",
    "inventory_drop",
    "normal_variance",
    "other",
]
Verdict = Literal["confirmed", "wrong"]


class CauseFeedback(BaseModel):
    """Mark a ranked cause confirmed or wrong; with 'wrong', optionally name the actual
    cause (not the cause itself: that contradiction is a 409 naming ``actual_cause``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    verdict: Verdict
    actual_cause: ActualCause | None = None
    note: str | None = Field(default=None, max_length=2000)


class CauseVerdict(BaseModel):
    """The latest verdict on one cause, with what the agent had shown of it (rank 1 =
    first; the shipped model's confidence before any recalibration; None when the
    investigation was not stored)."""

    incident_id: str
    cause: str
    verdict: Verdict
    actual_cause: str | None = None
    rank: int | None = None
    confidence: float | None = None
    model_confidence: float | None = None
    actor: str
    at: UTCTime
    note: str | None = None


class CauseFeedbackState(BaseModel):
    """The latest verdict on each labelled cause of an incident."""

    incident_id: str
    causes: list[CauseVerdict]


class Health(BaseModel):
    status: Literal["ok"]


class Me(BaseModel):
    name: str
    role: Literal["engineer", "pm"]
    role_label: str
    can_edit: bool


class Event(BaseModel):
    at: UTCTime
    actor: str
    action: str
    detail: Json
    note: str | None = None


class Incident(BaseModel):
    """An incident as the feed shows it."""

    id: str
    metric: str
    slice: Json
    slice_key: str
    label: str
    severity: Severity
    status: Status
    false_positive: bool | None
    detected_at: LocalTime
    window_start: LocalTime
    window_end: LocalTime
    baseline: float
    current: float
    delta: float
    affected_orders: int
    p_value: float
    q_value: float
    detector: str
    version: int
    updated_at: UTCTime


class IncidentList(BaseModel):
    count: int
    incidents: list[Incident]


class IncidentWithEvents(Incident):
    events: list[Event]


class Overview(BaseModel):
    """The dashboard: CX Score trends, quick stats against the baseline, the incident feed."""

    available: bool
    dataset: Json | None = None
    as_of: str | None = None
    recent_window: list[str] | None = None
    baseline_window: list[str] | None = None
    orders_last_7d: int | None = None
    trend_30d: Json | None = None
    trend_7d: Json | None = None
    quick_stats: list[Json] = []
    incidents: list[Incident]


class IncidentDetail(BaseModel):
    """The incident page: its metrics before and after, its top slices, its trend."""

    incident: Incident
    events: list[Event]
    investigated: bool
    narrative: str | None = None
    metrics: list[Json] = []
    metrics_label: str | None = None  # the slice the metric table and trend are of
    top_slices: list[Json] = []
    trend: Json | None = None
    drilldown_root: str | None = None
    links: dict[str, str]


class Drilldown(BaseModel):
    """One slice of an incident: its metrics and its sub-slices (each one drillable when
    the stored drilldown has it)."""

    incident_id: str
    key: str
    root: str
    slice: Json
    label: str
    metrics: list[Json] = []
    children: list[Json] = []


class RCA(BaseModel):
    """Ranked causes with confidence, impact and evidence; what was ruled out; the narrative."""

    incident: Incident
    investigated: bool
    investigated_slice: Json | None = None
    causes: list[Json] = []
    ruled_out: list[Json] = []
    not_testable: list[Any] = []
    narrative: str | None = None
    confidence_calibrated: bool | None = None
    contrast: Json | None = None
    shift_attribution: Json | None = None
    timing: Json = {}
    changes: list[Json] = []
    trend: Json | None = None
    cause_feedback: dict[str, CauseVerdict] = {}  # the latest verdict by cause


class Recommendations(BaseModel):
    """Fixes ranked by net benefit, their tradeoff points and which ones have a plan."""

    incident: Incident
    investigated: bool
    message: str | None = None
    exchange_rate: float | None = None
    recommendations: list[Json] = []
    tradeoff: list[Json] = []


class PlanSummary(BaseModel):
    """A recommendation's experiment plan: its key figures (``summary``), or why it could
    not be planned (``error``)."""

    rank: int
    action: str | None = None
    title: str | None = None
    summary: Any = None
    error: str | None = None


class PlanList(BaseModel):
    incident_id: str
    plans: list[PlanSummary]


class Plan(PlanSummary):
    incident_id: str
    incident: Incident
    markdown: str


class Experiment(BaseModel):
    """An experiment against its plan: phases, progress, guardrails and the next step."""

    incident: Incident
    available: bool
    title: str | None = None
    status: str | None = None
    resolved: bool | None = None
    path: str | None = None
    plan: Json | None = None
    markdown: str | None = None
    phases: list[Json] = []
    guardrails: list[Json] = []
    progress: list[Json] = []
    final: Json | None = None
    evidence: list[str] = []
    next_step: str


class SummaryItem(BaseModel):
    """One incident in business language."""

    incident: Incident
    available: bool
    title: str | None = None
    what_broke: Any = None
    why: Any = None
    recommendation: Any = None
    tradeoff: Any = None
    projection: Any = None
    rollout: list[Any] = []
    tradeoff_points: list[Json] = []


class Summary(BaseModel):
    """The product manager's read: what broke, why, what we recommend, at what cost."""

    incidents: list[SummaryItem]


class Merchants(BaseModel):
    """Stores ranked by CX risk with their specific issues."""

    available: bool
    count: int
    stores_at_risk: int | None = None
    marketplace_cx: float | None = None
    recent_window: list[str] | None = None
    baseline_window: list[str] | None = None
    stores: list[Json]


class DetectionPrecision(BaseModel):
    """Precision of detection over the incidents labelled true or false positive, with its
    95% Wilson interval; ``by_week`` the same per week of detection (Monday)."""

    labelled: int
    true_positives: int
    false_positives: int
    precision: float | None = None
    interval: list[float] | None = None
    by_week: list[Json] = []


class CauseAccuracy(BaseModel):
    """Top-1 accuracy (first-ranked cause confirmed), confirmed rate, Brier score, expected
    calibration error and the calibration table (confidence bins against the confirmed
    rate, with counts and 95% Wilson intervals); ``by_week`` per week of detection."""

    labelled: int
    confirmed: int
    wrong: int
    confirmed_rate: float | None = None
    top1: Json
    with_confidence: int
    brier: float | None = None
    ece: float | None = None
    calibration: list[Json]
    actual_causes: dict[str, int] = {}
    by_week: list[Json] = []


class ConfidenceRecalibration(BaseModel):
    """``p' = sigmoid(a + b logit(p))`` after the shipped confidence model, the MAP fit on
    ``n`` labelled causes under a Gaussian prior (sd ``prior_sd``) centred on the identity;
    ``a_sd``/``b_sd`` the posterior standard deviations."""

    a: float
    b: float
    n: int
    prior_sd: float
    a_sd: float
    b_sd: float


class Accuracy(BaseModel):
    """The agent's own record from the engineers' feedback."""

    detection: DetectionPrecision
    causes: CauseAccuracy
    recalibration: ConfidenceRecalibration
    recalibration_applied: bool
