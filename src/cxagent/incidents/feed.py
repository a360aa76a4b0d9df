"""Episodes to incident drafts: window, detection time, effect, severity and top slices."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxagent.incidents.config import DetectConfig
from cxagent.incidents.detection import BAD_EVENT_RATE, COMPONENTS
from cxagent.incidents.episodes import Finding
from cxagent.incidents.grouping import Grouper
from cxagent.incidents.ranking import TopSlicesFn
from cxagent.incidents.windows import daypart_of_window, window_end, window_start
from cxagent.store.repository import IncidentDraft

METRIC = "cx_score"


@dataclass
class IncidentReport:
    """One row of the incident feed: the draft as stored, plus what moved."""

    draft: IncidentDraft
    components: dict[str, dict[str, float]]  # bad-event rate (late_rate, ...) -> before/after/delta
    label: str
    impact: float  # CX points x affected orders / orders of an average day
    incident_id: str | None = None
    created: bool = False
    alarmed_slices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = self.draft
        return {
            "id": self.incident_id,
            "metric": d.metric,
            "slice": d.slice,
            "label": self.label,
            "severity": d.severity,
            "detected_at": d.detected_at.isoformat(),
            "window_start": d.window_start.isoformat(),
            "window_end": d.window_end.isoformat(),
            "baseline": d.baseline,
            "current": d.current,
            "delta": d.delta,
            "affected_orders": d.affected_orders,
            "impact": round(self.impact, 3),
            "p_value": d.p_value,
            "q_value": d.q_value,
            "detector": d.detector,
            "components": self.components,
            "top_slices": d.top_slices,
        }


def stored_report(store_url: str, incident_id: str) -> IncidentReport:
    """The incident as the store keeps it (any status, resolved ones included), as a report
    to investigate again; raises ``NotFoundError`` when there is no such incident."""
    from cxagent.store.db import session_factory
    from cxagent.store.repository import get_incident

    inc = get_incident(session_factory(store_url), incident_id)
    draft = IncidentDraft(
        metric=inc.metric,
        slice=dict(inc.slice),
        window_start=inc.window_start,
        window_end=inc.window_end,
        detected_at=inc.detected_at,
        severity=inc.severity,
        baseline=inc.baseline,
        current=inc.current,
        delta=inc.delta,
        affected_orders=inc.affected_orders,
        p_value=inc.p_value,
        q_value=inc.q_value,
        detector=inc.detector,
        top_slices=list(inc.top_slices or []),
    )
    label = " + ".join(f"{k}={v}" for k, v in draft.slice.items()) or "all"
    return IncidentReport(draft, {}, label, 0.0, incident_id=inc.id)


def severity(points: float, impact: float, config: DetectConfig) -> str:
    """``high`` / ``medium`` / ``low`` from CX points lost and the impact in
    marketplace-days (points x affected orders / orders of an average day)."""
    if points >= config.high_points and impact >= config.high_impact:
        return "high"
    if points >= config.medium_points and impact >= config.medium_impact:
        return "medium"
    return "low"


def _time(window_id: int, end: bool) -> dt.datetime:
    stamp = (window_end if end else window_start)(np.array([window_id]))[0]
    hours = int((stamp - np.datetime64("1970-01-01T00", "h")).astype(np.int64))
    return dt.datetime(1970, 1, 1) + dt.timedelta(hours=hours)


def detector_name(detector: str, episode: list[Finding]) -> str:
    """What raised the episode: the outcome detector, the driver checks, or both."""
    if not any(f.driver for f in episode):
        return detector
    return "drivers" if all(f.driver for f in episode) else f"{detector}+drivers"


def build_report(
    episode: list[Finding],
    grouper: Grouper,
    win_first: int,
    top_fn: TopSlicesFn,
    config: DetectConfig,
    day_orders: float,
) -> IncidentReport:
    """The draft of one episode (positions are columns of the window series from
    ``win_first``)."""
    focus = episode[0].focus
    start = min(f.start for f in episode)
    last = max(f.column for f in episode)
    cols = np.arange(start, last + 1)
    eff = grouper.effects
    totals = eff.sums([focus], cols)
    current, baseline = totals.cx_scores()
    delta = current - baseline
    impact = max(-delta, 0.0) * totals.orders / max(day_orders, 1.0)
    comps = set().union(*(f.components for f in episode))
    primary = max(comps, key=totals.loss)
    moved = {}
    for c in COMPONENTS:
        if c in comps:
            n = max(totals.trials[c], 1e-12)
            was, now = totals.expected[c] / n, totals.observed[c] / n
            moved[BAD_EVENT_RATE[c]] = {
                "baseline": round(was, 4),
                "current": round(now, 4),
                "delta": round(now - was, 4),
            }
    dayparts = daypart_of_window(win_first + np.arange(eff.stats["orders"].shape[1]))
    tops = top_fn(
        effects=eff,
        loss=grouper.loss,
        hier=grouper.hier,
        models=grouper.models,
        focus=focus,
        cols=cols,
        dayparts=dayparts,
        primary=primary,
        limit=config.top_slices,
    )
    draft = IncidentDraft(
        metric=METRIC,
        slice=dict(grouper.hier.slices[focus]),
        window_start=_time(win_first + start, end=False),
        window_end=_time(win_first + last, end=True),
        detected_at=_time(win_first + episode[0].column, end=True),
        severity=severity(-delta, impact, config),
        baseline=round(baseline, 3),
        current=round(current, 3),
        delta=round(delta, 3),
        affected_orders=int(round(totals.orders)),
        p_value=min(f.p_value for f in episode),
        q_value=min(f.q_value for f in episode),
        detector=detector_name(config.detector, episode),
        top_slices=tops,
    )
    members = sorted(set().union(*(f.members for f in episode)))
    return IncidentReport(
        draft=draft,
        components=moved,
        label=grouper.hier.label(focus),
        impact=impact,
        alarmed_slices=[grouper.hier.label(m) for m in members],
    )
