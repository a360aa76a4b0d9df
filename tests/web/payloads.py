"""Realistic stored views for the web tests, following the contract of ``cxagent.workbench``.

The investigations and recommendations are trimmed real outputs of ``cxagent investigate
--json`` on the demo (fixtures/demo_incidents.json), the plan and the experiment status are
real outputs of ``cxagent plan`` and ``cxagent experiment status --json``; the overview, the
trends, the drilldown, the PM summary and the merchant report are made by hand here in the
contract's shape, until the builder produces them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cxagent.store.repository import IncidentDraft, save_analysis, slice_key, upsert_incident
from cxagent.workbench.summary import summary

FIXTURES = Path(__file__).parent / "fixtures"
DAYS = [(dt.date(2023, 12, 6) + dt.timedelta(days=i)).isoformat() for i in range(31)]
NO_PLAN = "too few orders in scope to power an experiment"


def demo_incidents() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "demo_incidents.json").read_text())["incidents"]


def demo_experiment() -> dict[str, Any]:
    return json.loads((FIXTURES / "demo_experiment.json").read_text())


def demo_plan_markdown() -> str:
    return (FIXTURES / "demo_plan.md").read_text()


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def draft(inv: dict[str, Any]) -> IncidentDraft:
    """The incident row detection stored for an investigation."""
    return IncidentDraft(
        metric=inv["metric"],
        slice=inv["slice"],
        window_start=_time(inv["window_start"]),
        window_end=_time(inv["window_end"]),
        detected_at=_time(inv["detected_at"]),
        severity=inv["severity"],
        baseline=inv["baseline"],
        current=inv["current"],
        delta=inv["delta"],
        affected_orders=inv["affected_orders"],
        p_value=inv["p_value"],
        q_value=inv["q_value"],
        detector=inv["detector"],
        top_slices=inv["top_slices"],
    )


def metric_rows(inv: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "metric": "cx_score",
            "label": "CX Score",
            "unit": "points",
            "better": "higher",
            "before": inv["baseline"],
            "after": inv["current"],
            "delta": inv["delta"],
        }
    ]
    for name, c in inv["components"].items():
        rows.append(
            {
                "metric": name,
                "label": name.replace("_", " "),
                "unit": "share",
                "better": "lower",
                "before": c["baseline"],
                "after": c["current"],
                "delta": c["delta"],
            }
        )
    return rows


def trend(inv: dict[str, Any]) -> dict[str, Any]:
    start = inv["window_start"][:10]
    return {
        "x": DAYS,
        "cx_score": [inv["baseline"] if d < start else inv["current"] for d in DAYS],
        "orders": [900 + 10 * (i % 7) for i in range(len(DAYS))],
        "window_start": inv["window_start"],
        "window_end": inv["window_end"],
    }


def drilldown(inv: dict[str, Any]) -> dict[str, Any]:
    """The incident's slice with its top slices as children; the first child drills on."""
    root = inv["slice"]
    children = []
    for s in inv["top_slices"]:
        children.append(
            {
                "key": slice_key(s["slice"]),
                "slice": s["slice"],
                "label": s["label"],
                "orders": s["orders"],
                "before": inv["baseline"],
                "after": inv["baseline"] + s["delta"],
                "delta": s["delta"],
                "p_value": s.get("q_value", s.get("p_value")),
                "stars": s.get("stars", ""),
            }
        )
    tree = {
        slice_key(root): {
            "slice": root,
            "label": " + ".join(f"{k}={v}" for k, v in root.items()),
            "metrics": metric_rows(inv),
            "children": children,
        }
    }
    if children:
        first = children[0]
        tree[first["key"]] = {
            "slice": first["slice"],
            "label": first["label"],
            "metrics": metric_rows(inv)[:1],
            "children": [
                {
                    "key": first["key"] + ";basket_size=large",
                    "slice": {**first["slice"], "basket_size": "large"},
                    "label": first["label"] + " + basket_size=large",
                    "orders": 412,
                    "before": 74.0,
                    "after": 55.5,
                    "delta": -18.5,
                    "p_value": 0.0004,
                    "stars": "***",
                }
            ],
        }
    return tree


def incident_view(inv: dict[str, Any], recs: dict[str, Any], plan_markdown: str) -> dict[str, Any]:
    top = next((r for r in recs.get("recommendations") or [] if r.get("estimate")), None)
    plan = demo_experiment()["plan"]
    plans = []
    if top:
        plans = [
            {
                "rank": 1,
                "action": top["action"],
                "title": top["title"],
                "markdown": plan_markdown,
                "summary": plan,
            },
            {"rank": 2, "action": "stop_batching", "title": "Stop batching", "error": NO_PLAN},
        ]
    text = summary(
        inv,
        recs,
        weekly_orders=8200,
        plan_days=plan["days_to_launch"] if top else None,
        phases=plan["phases"] if top else (),
    )
    return {
        "investigation": inv,
        "recommendations": recs,
        "plans": plans,
        "metrics": metric_rows(inv),
        "trend": trend(inv),
        "drilldown": drilldown(inv),
        "changes": [
            {
                "change_id": "chg-001",
                "kind": "policy",
                "name": "batching_policy",
                "started_at": "2024-01-03T00:00:00",
                "description": "batching_policy: max 2 -> 4 orders per trip",
            },
            {
                "change_id": "bg-001",
                "kind": "model",
                "name": "search_ranking",
                "started_at": "2023-12-26T00:00:00",
                "description": "Search ranking model retrained on the latest month.",
            },
        ],
        "summary": text,
    }


def overview() -> dict[str, Any]:
    start = dt.datetime(2023, 12, 30)
    hours = [(start + dt.timedelta(hours=h)).isoformat() for h in range(0, 24 * 7, 3)]
    return {
        "dataset": {
            "path": "demo-data",
            "source": "scenario:demo-batching-grocery",
            "start": "2023-12-04",
            "end": "2024-01-05",
            "description": "Generated by cxagent from scenario 'demo-batching-grocery' (seed 7).",
            "currency": "USD",
        },
        "as_of": "2024-01-06T00:00:00",
        "recent_window": ["2023-12-30T00:00:00", "2024-01-06T00:00:00"],
        "baseline_window": ["2023-12-02T00:00:00", "2023-12-30T00:00:00"],
        "orders_last_7d": 141230,
        "trend_30d": {
            "x": DAYS,
            "cx_score": [78.4 - (0.9 if d >= "2024-01-03" else 0) for d in DAYS],
            "orders": [20000] * len(DAYS),
        },
        "trend_7d": {"x": hours, "cx_score": [78.0] * len(hours), "orders": [800] * len(hours)},
        "quick_stats": [
            {
                "metric": "cx_score",
                "label": "CX Score",
                "unit": "points",
                "better": "higher",
                "current": 77.61,
                "baseline": 78.42,
                "delta": -0.81,
            },
            {
                "metric": "on_time_rate",
                "label": "On-time rate",
                "unit": "share",
                "better": "higher",
                "current": 0.8568,
                "baseline": 0.8699,
                "delta": -0.0131,
            },
            {
                "metric": "avg_rating",
                "label": "Average rating",
                "unit": "stars",
                "better": "higher",
                "current": 4.41,
                "baseline": 4.45,
                "delta": -0.04,
            },
        ],
    }


def merchants(sf_id: str) -> dict[str, Any]:
    return {
        "recent_window": ["2023-12-30T00:00:00", "2024-01-06T00:00:00"],
        "baseline_window": ["2023-12-02T00:00:00", "2023-12-30T00:00:00"],
        "marketplace_cx": 77.6,
        "stores_at_risk": 2,
        "stores": [
            {
                "store_id": 1160,
                "region": "NYC",
                "category": "restaurant",
                "orders": 212,
                "cx_score": 44.3,
                "baseline": 71.7,
                "delta": -27.4,
                "p_value": 0.000012,
                "stars": "***",
                "risk": 30210.4,
                "issues": [
                    "missing or substituted items 2.0% -> 13.2%",
                    "late deliveries 12.1% -> 19.8%",
                ],
                "incidents": [],
            },
            {
                "store_id": 1002,
                "region": "SF",
                "category": "grocery",
                "orders": 1830,
                "cx_score": 58.2,
                "baseline": 73.9,
                "delta": -15.7,
                "p_value": 0.0021,
                "stars": "**",
                "risk": 28731.0,
                "issues": ["late deliveries 16.4% -> 24.6%"],
                "incidents": [sf_id],
            },
        ],
    }


UNINVESTIGATED = IncidentDraft(
    metric="cx_score",
    slice={"region": "CHI", "category": "convenience"},
    window_start=dt.datetime(2024, 1, 2, 5),
    window_end=dt.datetime(2024, 1, 4, 9),
    detected_at=dt.datetime(2024, 1, 2, 9),
    severity="medium",
    baseline=86.9,
    current=81.8,
    delta=-5.1,
    affected_orders=1200,
    p_value=1e-6,
    q_value=1e-5,
    detector="ewma",
)


def seed(factory: sessionmaker[Session]) -> dict[str, str]:
    """Store the incidents and every view; returns the ids: ``sf`` (investigated, with
    recommendations, a plan and an experiment), ``store`` (investigated, nothing to do) and
    ``bare`` (not investigated)."""
    ids = {}
    plan_md = demo_plan_markdown()
    for name, item in zip(("sf", "store"), demo_incidents(), strict=True):
        inv, recs = dict(item["investigation"]), dict(item["recommendations"])
        inc, _ = upsert_incident(factory, draft(inv))
        inv["id"] = recs["incident_id"] = inc.id
        save_analysis(factory, "incident", incident_view(inv, recs, plan_md), incident_id=inc.id)
        ids[name] = inc.id
    inc, _ = upsert_incident(factory, UNINVESTIGATED)
    ids["bare"] = inc.id
    experiment = demo_experiment()
    experiment["report"]["incident_id"] = ids["sf"]
    experiment["markdown"] = plan_md
    save_analysis(factory, "experiment", experiment, incident_id=ids["sf"])
    save_analysis(factory, "overview", overview())
    save_analysis(factory, "merchants", merchants(ids["sf"]))
    return ids
