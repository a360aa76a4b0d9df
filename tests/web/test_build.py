"""The pages over views the builder really stored: a small generated scenario with a planted
cause, built by ``cxagent.workbench.build``, then every page and API route of every incident."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cxagent.cli import app as cli
from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec
from cxagent.web import app_for_store
from cxagent.web.settings import Settings
from cxagent.workbench.reader import Workbench
from tests.web.conftest import ENGINEER_TOKEN, PM_TOKEN

SPEC = {
    "name": "web",
    "seed": 5,
    "start": "2024-03-04",
    "days": 28,
    "orders_per_day": 4000,
    "regions": ["SF", "NYC"],
    "background_changes": 1,
    "interventions": [
        {
            "cause": "batching_policy",
            "start": "2024-03-28T00:00",
            "scope": {"region": "SF", "category": "grocery"},
        }
    ],
}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("built")
    generate(parse_spec(SPEC), root / "data", workers=1)
    return root


def serve_views(data: Path, url: str, *extra: str) -> None:
    """Run ``cxagent serve`` up to the server (not started), which computes the views."""
    served: list[Any] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cxagent.web.server.uvicorn.run", lambda app, **kw: served.append(app))
        args = ["serve", "--data", str(data), "--db", url, "--bootstrap", "20", *extra]
        result = CliRunner().invoke(cli, args, env={"CXAGENT_ENV": "development"})
    assert result.exit_code == 0, result.output
    assert "computing the workbench views" in result.output and served


def quick_stat(url: str, metric: str) -> float:
    overview = Workbench.from_url(url).get_analysis("overview")
    assert overview is not None
    return next(r["current"] for r in overview["quick_stats"] if r["metric"] == metric)


@pytest.fixture(scope="module")
def built(scenario: Path) -> tuple[TestClient, list[str]]:
    """The views as ``cxagent serve`` computes them when the store has none."""
    url = f"sqlite:///{scenario / 'store.db'}"
    serve_views(scenario / "data", url)
    ids = [i["id"] for i in Workbench.from_url(url).list_incidents()]
    settings = Settings(db_url=url, engineer_token=ENGINEER_TOKEN, pm_token=PM_TOKEN)
    client = TestClient(
        app_for_store(url, settings), headers={"Authorization": f"Bearer {ENGINEER_TOKEN}"}
    )
    return client, ids


def test_the_planted_cause_reaches_every_page(built: tuple[TestClient, list[str]]) -> None:
    client, ids = built
    assert ids, "the planted regression was not detected"
    for path in ("/", "/summary", "/merchants"):
        assert client.get(path).status_code == 200, path
    sf = next(
        i["id"]
        for i in client.get("/api/incidents").json()["incidents"]
        if i["slice"].get("region") == "SF"
    )
    for suffix in ("", "/rca", "/recommendations", "/experiment", "/drilldown"):
        assert client.get(f"/incidents/{sf}{suffix}").status_code == 200, suffix
        assert client.get(f"/api/incidents/{sf}{suffix}").status_code == 200, suffix
    rca = client.get(f"/api/incidents/{sf}/rca").json()
    assert rca["causes"][0]["cause"] == "batching_policy"
    assert "batching policy" in client.get(f"/incidents/{sf}/rca").text
    detail = client.get(f"/api/incidents/{sf}").json()
    assert detail["drilldown_root"] == detail["incident"]["slice_key"]
    assert detail["metrics"][0]["metric"] == "cx_score" and detail["trend"]["x"]
    plans = client.get(f"/api/incidents/{sf}/plans").json()["plans"]
    top = next(p for p in plans if p["error"] is None)
    assert client.get(f"/incidents/{sf}/plans/{top['rank']}").status_code == 200
    md = client.get(f"/api/incidents/{sf}/plans/{top['rank']}/markdown")
    assert md.status_code == 200 and md.text.startswith("# Experiment plan")
    summary = client.get("/api/summary").json()["incidents"]
    assert any(s["available"] and s["projection"] for s in summary)
    assert client.get("/api/overview").json()["quick_stats"]


def test_serve_computes_the_views_with_the_configurations_detection_and_weights(
    scenario: Path, built: tuple[TestClient, list[str]]
) -> None:
    """``serve --config``: no alarm can reach the file's minimum support, so no incident is
    stored; the CX Score weighs on-time deliveries alone, so it is the on-time rate on the
    component's 0-100 scale (0 at 50% on time, 100 at all on time)."""
    config = scenario / "agent.yaml"
    weights = "on_time: 1.0, item_accuracy: 0, cancellation: 0, refund: 0"
    config.write_text(
        "metrics:\n"
        f"  cx_weights: {{{weights}, support_contact: 0, rating: 0}}\n"
        "detection:\n  min_excess: 1000000\n"
    )
    url = f"sqlite:///{scenario / 'configured.db'}"
    serve_views(scenario / "data", url, "--config", str(config))
    assert built[1] and Workbench.from_url(url).list_incidents() == []
    default = f"sqlite:///{scenario / 'store.db'}"
    assert quick_stat(url, "cx_score") != pytest.approx(quick_stat(default, "cx_score"))
    on_time = quick_stat(url, "on_time_rate")
    assert quick_stat(url, "cx_score") == pytest.approx(
        (on_time - 0.5) / 0.5 * 100, abs=0.05
    )  # stored rounded
