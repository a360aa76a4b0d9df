"""The pages over views the builder really stored: a small generated scenario with a planted
cause, built by ``cxagent.workbench.build``, then every page and API route of every incident."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from cxagent.data.scenario.generator import generate
from cxagent.data.scenario.spec import parse_spec
from cxagent.web import app_for_store
from cxagent.web.settings import Settings
from cxagent.workbench.build import build
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
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, list[str]]:
    root = tmp_path_factory.mktemp("built")
    generate(parse_spec(SPEC), root / "data", workers=1)
    url = f"sqlite:///{root / 'store.db'}"
    ids = build(root / "data", store_url=url, n_bootstrap=20)
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
