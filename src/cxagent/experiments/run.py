"""An experiment on disk: its plan, its data, and its status against the plan.

An experiment directory holds ``plan.json`` (the plan's inputs: the fix, the metrics, the
traffic context, and where the incident lives), ``plan.md`` (the plan as written for people)
and ``experiment.parquet`` (assignment and outcomes per cluster, ``simulate``'s format, which
a production pipeline would fill from its own logs). ``status`` rebuilds the plan from its
inputs, replays the monitor over the data and, when the store is given, records the result on
the incident: resolved with the evidence attached, or back to investigating after a rollback.
Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from cxagent.data.io import write_json_atomic
from cxagent.data.scenario.fixes import Fix
from cxagent.data.scenario.spec import ScenarioSpec
from cxagent.errors import CXAgentError
from cxagent.experiments.monitor import MonitorReport, monitor
from cxagent.experiments.plan import (
    ActionSpec,
    ExperimentPlan,
    MetricSpec,
    PlanContext,
    build_plan,
    plan_summary,
    write_markdown,
)
from cxagent.experiments.simulate import (
    ExperimentData,
    RandomisationUnit,
    read_experiment,
    simulate_experiment,
    write_experiment,
)

PLAN_FILE: Final = "plan.json"
PLAN_MD: Final = "plan.md"
DATA_FILE: Final = "experiment.parquet"


def plan_inputs(plan: ExperimentPlan) -> dict[str, Any]:
    """What ``build_plan`` needs to rebuild ``plan``, as plain JSON-able data."""
    return {
        "action": _plain(dataclasses.asdict(plan.action)),
        "primary": dataclasses.asdict(plan.primary),
        "secondary": [dataclasses.asdict(m) for m in plan.secondary],
        "guardrails": [dataclasses.asdict(m) for m in plan.guardrails],
        "context": dataclasses.asdict(plan.context),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def plan_from_inputs(raw: Mapping[str, Any], *, source: str = PLAN_FILE) -> ExperimentPlan:
    """Rebuild a plan from ``plan_inputs``; an error names the file and the field."""
    try:
        return build_plan(
            ActionSpec(**raw["action"]),
            MetricSpec(**raw["primary"]),
            [MetricSpec(**m) for m in raw["guardrails"]],
            PlanContext(**raw["context"]),
            secondary=[MetricSpec(**m) for m in raw.get("secondary", [])],
        )
    except KeyError as exc:
        raise CXAgentError(f"{source}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CXAgentError(f"{source}: {exc}") from None


def simulate_plan(
    spec: ScenarioSpec,
    plan: ExperimentPlan,
    fix: Fix,
    out: Path,
    *,
    start: dt.datetime,
    store_url: str | None = None,
    seed: int = 0,
    phases: int | None = None,
) -> ExperimentData:
    """Run ``plan`` in the scenario from ``start`` with ``fix`` as the treatment (its first
    ``phases`` phases, all by default) and write the experiment directory ``out``."""
    planned = [(p.treated_share, p.min_days) for p in plan.phases][:phases]
    days_needed = (start - spec.start_time).days + sum(d for _, d in planned) + 1
    longer = spec.model_copy(update={"days": max(spec.days, days_needed)})
    unit: RandomisationUnit = "store" if plan.unit.unit == "store" else "region_x_window"
    data = simulate_experiment(
        longer,
        fix.model_copy(update={"start": start, "end": None}),
        start,
        phases=planned,
        unit=unit,
        window_hours=plan.context.window_hours,
        burn_in_minutes=plan.context.burn_in_minutes,
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_experiment(data, out / DATA_FILE)
    write_markdown(plan, out / PLAN_MD)
    # a server URL may carry credentials: only a local SQLite store is remembered
    remembered = store_url if store_url and store_url.startswith("sqlite") else None
    record = {"plan": plan_inputs(plan), "store_url": remembered}
    write_json_atomic(out / PLAN_FILE, record)
    return data


def load(experiment: Path) -> tuple[ExperimentPlan, ExperimentData, str | None]:
    """The plan, the data and the incident store of an experiment directory."""
    path = experiment / PLAN_FILE
    if not path.exists():
        raise CXAgentError(f"{path}: not found; is {experiment} an experiment directory?")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CXAgentError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, dict) or "plan" not in record:
        raise CXAgentError(f"{path}: missing field 'plan'")
    plan = plan_from_inputs(record["plan"], source=str(path))
    return plan, read_experiment(experiment / DATA_FILE), record.get("store_url")


def status(
    experiment: Path, *, store_url: str | None = None, actor: str = "cxagent"
) -> MonitorReport:
    """The experiment's status against its plan; records the outcome on the incident when an
    incident store is known (``store_url``, else the local one saved with the experiment):
    resolved with the evidence as the note, or back to investigating after a rollback, once
    per change of status; the report itself is kept for the workbench's experiment page."""
    plan, data, saved_url = load(experiment)
    report = monitor(plan, data)
    url = store_url or saved_url
    incident = plan.context.incident_id
    if url and incident:
        from cxagent.store.db import session_factory
        from cxagent.store.repository import get_incident, save_analysis, set_status

        factory = session_factory(url)
        view = {
            "path": str(experiment.resolve()),
            "plan": plan_summary(plan),
            "markdown": plan.to_markdown(),
            "report": report.to_dict(),
        }
        save_analysis(factory, "experiment", view, incident_id=incident)
        if report.status != "in progress":
            note = f"experiment {experiment.name}: {report.status}. " + " ".join(report.evidence)
            target = "resolved" if report.resolved else "investigating"
            if get_incident(factory, incident).status != target:  # record a change once
                set_status(factory, incident, status=target, actor=actor, note=note)
    return report
