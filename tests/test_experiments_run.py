"""An experiment on disk: simulate the demo's recommended fix, read its status, record the
outcome on the incident; the CLI commands around it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cxagent.cli import app
from cxagent.data.scenario.spec import parse_spec
from cxagent.engine.connection import connect
from cxagent.errors import CXAgentError
from cxagent.experiments.run import DATA_FILE, PLAN_FILE, PLAN_MD, load, simulate_plan, status
from cxagent.incidents import detect_incidents
from cxagent.rca.investigate import investigate_report
from cxagent.recommend.in_engine import engine_fix, failing_fix
from cxagent.recommend.planning import plan_for
from cxagent.recommend.recommend import recommend
from cxagent.store.db import default_url, session_factory
from cxagent.store.repository import get_analysis, get_incident


@pytest.fixture(scope="module")
def demo_plan(demo_dataset: tuple[Path, dict[str, Any]]) -> Any:
    root, truth = demo_dataset
    engine = connect(root)
    report = [r for r in detect_incidents(root) if r.draft.slice.get("region") == "SF"][0]
    inv = investigate_report(engine, report, n_bootstrap=30)
    recs = recommend(engine, inv, n_bootstrap=30)
    plan = plan_for(recs.frame, recs.top, incident_id=report.incident_id)
    spec = parse_spec(truth["spec"])
    fix = engine_fix(recs.top.action, truth, spec.end_time)
    assert fix is not None
    return spec, plan, fix, report.incident_id


def test_a_working_fix_resolves_the_incident(
    demo_plan: Any, demo_dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    spec, plan, fix, incident = demo_plan
    root, _ = demo_dataset
    out = tmp_path / "works"
    url = default_url(root)
    simulate_plan(spec, plan, fix, out, start=spec.end_time, store_url=url)
    assert {p.name for p in out.iterdir()} == {PLAN_FILE, PLAN_MD, DATA_FILE}
    report = status(out)
    assert report.status == "resolved" and report.resolved
    assert [p.status for p in report.phases] == ["completed"] * 3
    assert [p.recommendation for p in report.phases] == ["proceed"] * 3
    final = report.final
    assert final is not None and final.primary.always_valid.lower > 0
    inc = get_incident(session_factory(url), incident)
    assert inc.status == "resolved"
    assert "resolved" in (inc.events[-1].note or "")
    kept = get_analysis(session_factory(url), "experiment", incident)  # for the workbench
    assert kept is not None and kept["report"]["status"] == "resolved"
    assert kept["path"] == str(out.resolve()) and kept["markdown"] == plan.to_markdown()
    assert [p["name"] for p in kept["plan"]["phases"]] == [p.name for p in plan.phases]


def test_a_failing_fix_is_rolled_back(demo_plan: Any, tmp_path: Path) -> None:
    spec, plan, fix, _ = demo_plan
    out = tmp_path / "fails"
    simulate_plan(spec, plan, failing_fix(fix), out, start=spec.end_time)
    report = status(out)  # no store: nothing recorded
    assert report.status == "rolled back" and not report.resolved
    assert report.phases[0].recommendation == "roll back"
    assert report.phases[0].last is not None
    assert report.phases[0].last.primary.always_valid.upper < 0
    assert all(p.status == "not reached" for p in report.phases[1:])


def test_plan_file_round_trips_and_bad_files_are_named(demo_plan: Any, tmp_path: Path) -> None:
    spec, plan, fix, _ = demo_plan
    out = tmp_path / "short"
    simulate_plan(spec, plan, fix, out, start=spec.end_time, phases=1)
    rebuilt, data, url = load(out)
    assert rebuilt.to_markdown() == plan.to_markdown()
    assert url is None and len(data.meta.phases) == 1
    (out / PLAN_FILE).write_text("{not json")
    with pytest.raises(CXAgentError, match="plan.json: not valid JSON"):
        load(out)
    raw = {"plan": {"action": {}, "primary": {}, "guardrails": [], "context": {}}}
    (out / PLAN_FILE).write_text(json.dumps(raw))
    with pytest.raises(CXAgentError, match="plan.json"):
        load(out)
    with pytest.raises(CXAgentError, match="not found"):
        load(tmp_path / "nowhere")


def test_cli_experiment_journey(
    demo_plan: Any, demo_dataset: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, _ = demo_dataset
    _, _, _, incident = demo_plan
    runner = CliRunner()
    out = tmp_path / "cli-fails"
    sim = runner.invoke(
        app,
        [
            "experiment",
            "simulate",
            "--data",
            str(root),
            "--incident",
            incident,
            "--out",
            str(out),
            "--outcome",
            "fails",
            "--bootstrap",
            "20",
        ],
    )
    assert sim.exit_code == 0, sim.output
    shown = runner.invoke(app, ["experiment", "status", "--experiment", str(out), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["status"] == "rolled back"
    bad = runner.invoke(
        app,
        [
            "experiment",
            "simulate",
            "--data",
            str(root),
            "--incident",
            incident,
            "--out",
            str(out),
            "--outcome",
            "maybe",
        ],
    )
    assert bad.exit_code != 0 and "--outcome" in bad.output
    missing = runner.invoke(app, ["experiment", "status", "--experiment", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "plan.json" in missing.output


def test_cli_simulate_needs_a_generated_scenario(tmp_path: Path) -> None:
    data = tmp_path / "imported"
    data.mkdir()
    args = ["experiment", "simulate", "--data", str(data), "--incident", "inc-x"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "exp")])
    assert result.exit_code != 0
    assert "--data" in result.output and "truth.json" in result.output
    assert not (tmp_path / "exp").exists()  # nothing written
