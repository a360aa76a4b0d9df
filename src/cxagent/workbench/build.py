"""Compute the workbench's views and keep them in the store.

``store_views`` takes what the CLI has already computed (investigations and their
recommendations) and adds what pages show besides: each incident's metric table, trend,
drilldown, experiment plans and product-manager summary, the dashboard overview and the
merchant-risk report. ``build`` runs the whole chain first (detect, investigate, recommend).
Every view is one row of the ``analyses`` table, written in its own transaction; pages only
read them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ibis
from sqlalchemy.orm import Session, sessionmaker

from cxagent.data.io import json_safe
from cxagent.engine.connection import Engine, connect
from cxagent.engine.cube import build_cube
from cxagent.engine.storage import Location, remote_url
from cxagent.errors import CXAgentError
from cxagent.experiments.plan import plan_summary
from cxagent.incidents.config import DetectConfig
from cxagent.incidents.pipeline import detect_incidents, store_info
from cxagent.rca.investigate import Investigation, investigate_reports
from cxagent.recommend.planning import plan_for
from cxagent.recommend.recommend import Recommendations, recommend
from cxagent.store.db import default_url, session_factory
from cxagent.store.feedback import stored_recalibration
from cxagent.store.repository import list_incidents, save_analysis
from cxagent.workbench.merchants import merchant_risk
from cxagent.workbench.overview import RECENT_DAYS, data_end, overview
from cxagent.workbench.slices import SliceViews, daily_trend, window_sums
from cxagent.workbench.summary import summary

BASELINE_DAYS = 14  # as the investigation's baseline
TREND_DAYS = 30

Progress = Callable[[Iterable[Any], str], Iterable[Any]]


def _quiet(items: Iterable[Any], _description: str) -> Iterable[Any]:
    return items


def _plans(recs: Recommendations) -> list[dict[str, Any]]:
    """The plan of every estimated fix that should raise the CX Score, by rank (1 = top)."""
    out = []
    estimated = [r for r in recs.items if r.estimate is not None]
    for rank, rec in enumerate(estimated, start=1):
        entry: dict[str, Any] = {"rank": rank, "action": rec.action.name, "title": rec.action.title}
        if recs.frame is None:
            continue
        try:
            plan = plan_for(recs.frame, rec, incident_id=recs.incident_id)
        except (CXAgentError, ValueError) as exc:
            entry["error"] = str(exc)
        else:
            entry["markdown"] = plan.to_markdown()
            entry["summary"] = plan_summary(plan)
        out.append(entry)
    return out


SCOPE_COLUMNS = {
    "region": "scope_regions",
    "category": "scope_categories",
    "daypart": "scope_dayparts",
    "store_id": "scope_stores",
}


def changes_in_scope(
    engine: Engine, slice_: Mapping[str, Any], start: dt.datetime, end: dt.datetime
) -> list[dict[str, Any]]:
    """Logged changes that took effect in [start, end) and whose scope covers the slice
    (an empty scope list means everywhere), oldest first: the timeline's events."""
    if not engine.has("change_events"):
        return []
    table = engine.table("change_events")
    rows = table.filter(
        (table.started_at >= ibis.literal(start)) & (table.started_at < ibis.literal(end))
    ).to_pyarrow()
    out = []
    for row in sorted(rows.to_pylist(), key=lambda r: r["started_at"]):
        covers = all(
            not row.get(column) or slice_[dim] in row[column]
            for dim, column in SCOPE_COLUMNS.items()
            if dim in slice_
        )
        if covers:
            out.append(
                {k: row.get(k) for k in ("change_id", "kind", "name", "description", "started_at")}
            )
    return out


def incident_view(
    engine: Engine, views: SliceViews, inv: Investigation, recs: Recommendations
) -> dict[str, Any]:
    """Everything the incident, RCA, recommendations and summary pages show of one incident."""
    draft = inv.report.draft
    before = (draft.window_start - dt.timedelta(days=BASELINE_DAYS), draft.window_start)
    after = (draft.window_start, draft.window_end)
    investigation = json_safe(inv.as_dict())
    recommendations = json_safe(recs.as_dict())
    plans = _plans(recs)
    focus = [inv.slice, *(t["slice"] for t in draft.top_slices)]
    drilldown: dict[str, Any] = {}
    for s in [dict(draft.slice), *focus]:
        node = views.node(s, before, after)
        drilldown.setdefault(node["key"], node)
    top_plan = next((p for p in plans if "summary" in p), None)
    top = recs.top
    scope = dict(top.action.scope) if top is not None else inv.slice
    end = data_end(views)
    weekly = window_sums(views.rows(scope), end - dt.timedelta(days=RECENT_DAYS), end)["orders"]
    trend = daily_trend(views.rows(inv.slice), TREND_DAYS)
    shown = (dt.datetime.fromisoformat(trend["x"][0]), end) if trend["x"] else before
    return {
        "incident_id": inv.report.incident_id,
        "investigation": investigation,
        "changes": changes_in_scope(engine, inv.slice, *shown),
        "recommendations": recommendations,
        "plans": plans,
        "metrics": drilldown[next(iter(drilldown))]["metrics"]
        if inv.slice == dict(draft.slice)
        else views.node(inv.slice, before, after)["metrics"],
        "trend": {
            **trend,
            "window_start": draft.window_start.isoformat(),
            "window_end": draft.window_end.isoformat(),
            "baseline_start": before[0].isoformat(),
        },
        "drilldown": drilldown,
        "summary": summary(
            investigation,
            recommendations,
            weekly_orders=weekly,
            plan_days=top_plan["summary"]["days_to_launch"] if top_plan else None,
            phases=top_plan["summary"]["phases"] if top_plan else (),
        ),
    }


def store_views(
    factory: sessionmaker[Session],
    engine: Engine,
    found: Sequence[Investigation],
    recs: Sequence[Recommendations],
    *,
    dataset: dict[str, Any],
    progress: Progress = _quiet,
) -> None:
    """Compute and store the overview, the merchant report and each incident's view."""
    cube = build_cube(engine)
    views = SliceViews(cube, store_info(engine, cube.implied_by_store))
    for inv, rec in progress(list(zip(found, recs, strict=True)), "storing the workbench views"):
        if inv.report.incident_id is None:
            continue  # a requested slice, not a stored incident
        payload = incident_view(engine, views, inv, rec)
        save_analysis(factory, "incident", json_safe(payload), incident_id=inv.report.incident_id)
    save_analysis(factory, "overview", json_safe({"dataset": dataset, **overview(views)}))
    open_by_store: dict[Any, list[str]] = {}
    for inc in list_incidents(factory, status=("new", "investigating", "monitoring")):
        if "store_id" in inc.slice:
            open_by_store.setdefault(inc.slice["store_id"], []).append(inc.id)
    save_analysis(factory, "merchants", json_safe(merchant_risk(views, open_by_store)))


def dataset_info(data_dir: Path) -> dict[str, Any]:
    """Where the views came from: the dataset's path, source and time range."""
    from cxagent.data.io import load_manifest

    manifest = load_manifest(data_dir)
    return json_safe(
        {
            "path": Location.of(data_dir).url if remote_url(data_dir) else str(data_dir.resolve()),
            "source": manifest.source,
            "start": manifest.start,
            "end": manifest.end,
            "description": manifest.description,
            "currency": manifest.currency,
        }
    )


def build(
    data_dir: Path | str,
    *,
    store_url: str | None = None,
    n_bootstrap: int = 100,
    exchange_rate: float = 1.0,
    progress: Progress = _quiet,
    config: DetectConfig | None = None,
) -> list[str]:
    """Detect (with ``config``, default settings when None), investigate and recommend on
    ``data_dir``, then store every view; returns the ids of the incidents investigated."""
    data_dir = Path(data_dir)
    url = store_url or default_url(data_dir)
    reports = detect_incidents(data_dir, store_url=url, config=config)
    engine = connect(data_dir)
    found = investigate_reports(
        engine,
        progress(reports, "investigating root causes"),
        n_bootstrap=n_bootstrap,
        recalibration=stored_recalibration(url),  # None until engineers label causes
    )
    recs = [
        recommend(engine, inv, exchange_rate=exchange_rate, n_bootstrap=n_bootstrap)
        for inv in progress(found, "estimating fixes")
    ]
    store_views(
        session_factory(url), engine, found, recs, dataset=dataset_info(data_dir), progress=progress
    )
    return [r.incident_id for r in reports if r.incident_id is not None]


__all__ = ["build", "incident_view", "store_views"]
