"""The JSON API: every route as the ML engineer, its errors, and the OpenAPI contract."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cxagent.web import create_app
from tests.web.conftest import ENGINEER_TOKEN, Seeded
from tests.web.payloads import NO_PLAN, demo_incidents, demo_plan_markdown

OPERATIONS = {
    "health",
    "get_me",
    "get_overview",
    "list_incidents",
    "get_incident",
    "set_incident_status",
    "set_incident_feedback",
    "set_cause_feedback",
    "get_drilldown",
    "get_rca",
    "get_recommendations",
    "list_plans",
    "get_plan",
    "export_plan_markdown",
    "get_experiment",
    "get_summary",
    "get_merchants",
    "get_accuracy",
}


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert set(body) >= {"type", "message", "field"}
    assert "Traceback" not in r.text
    return body


def test_openapi_has_a_stable_operation_id_on_every_route(engineer: TestClient) -> None:
    spec = engineer.get("/api/openapi.json").json()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert ids == OPERATIONS
    assert all(p.startswith("/api/") for p in spec["paths"])
    status = spec["paths"]["/api/incidents/{incident_id}/status"]["post"]
    assert {"401", "403", "404", "422"} <= set(status["responses"])


def test_overview_and_feed(engineer: TestClient, seeded: Seeded) -> None:
    body = engineer.get("/api/overview").json()
    assert body["available"] and body["as_of"] == "2024-01-06T00:00:00"
    assert [s["metric"] for s in body["quick_stats"]] == ["cx_score", "on_time_rate", "avg_rating"]
    assert len(body["trend_30d"]["x"]) == 31 and body["trend_7d"]["x"]
    feed = engineer.get("/api/incidents").json()
    assert feed["count"] == 3
    assert [i["severity"] for i in feed["incidents"]] == ["high", "medium", "low"]
    sf = feed["incidents"][0]
    assert sf["id"] == seeded.ids["sf"] and sf["label"] == "region=SF + category=grocery"
    assert sf["delta"] == pytest.approx(-12.325) and sf["status"] == "new"


def test_feed_filters(engineer: TestClient, seeded: Seeded) -> None:
    high = engineer.get("/api/incidents", params={"severity": "high"}).json()
    assert [i["id"] for i in high["incidents"]] == [seeded.ids["sf"]]
    some = engineer.get("/api/incidents", params=[("severity", "low"), ("severity", "medium")])
    assert some.json()["count"] == 2
    assert engineer.get("/api/incidents", params={"status": "resolved"}).json()["count"] == 0
    assert (
        engineer.get("/api/overview", params={"severity": "low"}).json()["incidents"][0]["id"]
        == (seeded.ids["store"])
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/incidents", {"status": "closed"}, "status"),
        ("/api/incidents", {"severity": "critical"}, "severity"),
        ("/api/overview", {"status": "done"}, "status"),
        ("/api/merchants", {"limit": 0}, "limit"),
        ("/api/merchants", {"limit": "many"}, "limit"),
    ],
)
def test_bad_query_values_name_their_field(
    engineer: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    body = error(engineer.get(path, params=params), 422)
    assert body["type"] == "validation_error" and body["field"] == field
    assert body["message"].startswith(f"{field}: ")


def test_unknown_incident_is_a_404_naming_it(engineer: TestClient) -> None:
    for suffix in ("", "/rca", "/recommendations", "/drilldown", "/plans", "/experiment"):
        body = error(engineer.get(f"/api/incidents/inc-nope{suffix}"), 404)
        assert body == {
            "type": "not_found",
            "message": "no incident 'inc-nope'",
            "field": "incident_id",
        }
    body = error(engineer.post("/api/incidents/inc-nope/status", json={"status": "resolved"}), 404)
    assert body["field"] == "incident_id"


def test_unknown_route_and_method_answer_in_json(engineer: TestClient) -> None:
    assert error(engineer.get("/api/nothing"), 404)["message"] == "nothing at /api/nothing"
    r = engineer.delete("/api/incidents")
    assert error(r, 405)["type"] == "method_not_allowed" and r.headers["allow"] == "GET"


def test_incident_detail(engineer: TestClient, seeded: Seeded) -> None:
    body = engineer.get(f"/api/incidents/{seeded.ids['sf']}").json()
    assert body["investigated"] and body["incident"]["severity"] == "high"
    assert body["metrics"][0]["metric"] == "cx_score"
    assert body["metrics"][0]["delta"] == pytest.approx(-12.325)
    assert body["top_slices"][0]["stars"] == "***"  # from q when the payload has none
    assert body["top_slices"][0]["key"] == "category=grocery;daypart=dinner;region=SF"
    assert [s["drillable"] for s in body["top_slices"]] == [True, False, False, False]
    assert body["trend"]["window_start"] == "2024-01-03T16:00:00"
    assert body["drilldown_root"] == "category=grocery;region=SF"
    assert body["links"]["rca"] == f"/incidents/{seeded.ids['sf']}/rca"
    assert [e["action"] for e in body["events"]] == ["created"]


def test_an_incident_not_investigated_yet_still_answers(
    engineer: TestClient, seeded: Seeded
) -> None:
    bare = seeded.ids["bare"]
    detail = engineer.get(f"/api/incidents/{bare}").json()
    assert detail["investigated"] is False and detail["metrics"] == []
    assert engineer.get(f"/api/incidents/{bare}/rca").json()["investigated"] is False
    assert engineer.get(f"/api/incidents/{bare}/recommendations").json()["recommendations"] == []
    assert engineer.get(f"/api/incidents/{bare}/plans").json()["plans"] == []
    experiment = engineer.get(f"/api/incidents/{bare}/experiment").json()
    assert experiment["available"] is False and "No experiment" in experiment["next_step"]
    body = error(engineer.get(f"/api/incidents/{bare}/drilldown"), 404)
    assert body["field"] == "slice" and "no stored drilldown" in body["message"]


def test_drilldown_walks_into_sub_slices(engineer: TestClient, seeded: Seeded) -> None:
    url = f"/api/incidents/{seeded.ids['sf']}/drilldown"
    root = engineer.get(url).json()
    assert root["key"] == "category=grocery;region=SF"
    assert root["metrics"] and len(root["children"]) == 4
    first = root["children"][0]
    assert first["drillable"] is True and root["children"][1]["drillable"] is False
    child = engineer.get(url, params={"slice": first["key"]}).json()
    assert child["label"] == first["label"]
    assert child["children"][0]["delta"] == -18.5 and child["children"][0]["stars"] == "***"
    body = error(engineer.get(url, params={"slice": "region=Mars"}), 404)
    assert body["field"] == "slice" and "region=Mars" in body["message"]


def test_rca(engineer: TestClient, seeded: Seeded) -> None:
    inv = demo_incidents()[0]["investigation"]
    body = engineer.get(f"/api/incidents/{seeded.ids['sf']}/rca").json()
    assert [c["cause"] for c in body["causes"]] == ["batching_policy", "prep_time_drift"]
    assert body["causes"][0]["confidence"] == inv["causes"][0]["confidence"]
    assert [r["cause"] for r in body["ruled_out"]] == [r["cause"] for r in inv["ruled_out"]]
    assert body["narrative"] == inv["narrative"]
    assert body["contrast"]["drivers"]["batching_policy"]["pretrend_p"] is not None
    assert body["shift_attribution"]["features"]
    assert [c["matched"] for c in body["changes"]] == [True, False]  # chg-001 is the cause's


def test_recommendations_and_plans(engineer: TestClient, seeded: Seeded) -> None:
    base = f"/api/incidents/{seeded.ids['sf']}"
    recs = engineer.get(f"{base}/recommendations").json()
    top = recs["recommendations"][0]
    assert top["rank"] == 1 and top["has_plan"] is True
    assert (
        top["estimate"]["cx_gain"]
        == demo_incidents()[0]["recommendations"]["recommendations"][0]["estimate"]["cx_gain"]
    )
    assert recs["recommendations"][1]["plan_error"] == NO_PLAN
    assert len(recs["tradeoff"]) == 3
    plans = engineer.get(f"{base}/plans").json()["plans"]
    assert [(p["rank"], p["error"]) for p in plans] == [(1, None), (2, NO_PLAN)]
    plan = engineer.get(f"{base}/plans/1").json()
    assert plan["markdown"] == demo_plan_markdown()
    assert plan["summary"]["days_to_launch"] == 42
    body = error(engineer.get(f"{base}/plans/2"), 404)
    assert body["field"] == "rank" and NO_PLAN in body["message"]
    assert error(engineer.get(f"{base}/plans/0"), 422)["field"] == "rank"


def test_markdown_export_is_the_plan_as_an_attachment(engineer: TestClient, seeded: Seeded) -> None:
    inc = seeded.ids["sf"]
    r = engineer.get(f"/api/incidents/{inc}/plans/1/markdown")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/markdown; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="{inc}-plan-1.md"'
    assert r.text == demo_plan_markdown()
    assert error(engineer.get(f"/api/incidents/{inc}/plans/9/markdown"), 404)["field"] == "rank"


def test_experiment(engineer: TestClient, seeded: Seeded) -> None:
    body = engineer.get(f"/api/incidents/{seeded.ids['sf']}/experiment").json()
    assert body["available"] and body["status"] == "resolved" and body["resolved"] is True
    assert [p["name"] for p in body["phases"]] == [
        "10% safety",
        "50% experiment",
        "100% launch, 5% holdback",
    ]
    assert all(p["status"] == "completed" and p["progress"] == 1.0 for p in body["phases"])
    assert body["guardrails"][0]["name"] == "dasher_min_per_delivery"
    assert body["guardrails"][0]["state"] == "undecided"
    assert body["plan"]["primary"]["expected_effect"] == 10.8
    assert (
        body["next_step"]
        == "The fix met its go criteria in every phase: mark the incident resolved."
    )
    assert len(body["progress"]) == 9 and body["markdown"] == demo_plan_markdown()


def test_summary_and_merchants(engineer: TestClient, seeded: Seeded) -> None:
    items = {i["incident"]["id"]: i for i in engineer.get("/api/summary").json()["incidents"]}
    sf = items[seeded.ids["sf"]]
    assert sf["available"] and sf["what_broke"].startswith("Customer experience in SF grocery")
    assert sf["projection"]["time_to_impact_days"] == 42 and len(sf["tradeoff_points"]) == 3
    assert items[seeded.ids["bare"]]["available"] is False
    merchants = engineer.get("/api/merchants", params={"limit": 1}).json()
    assert merchants["count"] == 2 and merchants["stores_at_risk"] == 2
    assert [s["store_id"] for s in merchants["stores"]] == [1160]


def test_status_change_is_audited_with_the_actor(fresh: Seeded) -> None:
    inc = fresh.ids["sf"]
    with fresh.client(ENGINEER_TOKEN) as client:
        r = client.post(
            f"/api/incidents/{inc}/status", json={"status": "monitoring", "note": "fix ramping"}
        )
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "monitoring" and body["version"] == 2
        last = body["events"][-1]
        assert last["action"] == "status" and last["actor"] == "engineer"
        assert last["detail"] == {"from": {"status": "new"}, "to": {"status": "monitoring"}}
        assert last["note"] == "fix ramping"
        assert client.get("/api/incidents", params={"status": "monitoring"}).json()["count"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "closed"}, "status"),
        ({}, "status"),
        ({"status": "resolved", "colour": "red"}, "colour"),
        ({"status": "resolved", "note": "x" * 2001}, "note"),
    ],
)
def test_bad_status_bodies_name_their_field(
    engineer: TestClient, seeded: Seeded, body: dict[str, Any], field: str
) -> None:
    r = engineer.post(f"/api/incidents/{seeded.ids['sf']}/status", json=body)
    assert error(r, 422)["field"] == field


def test_bad_feedback_and_malformed_json_name_the_field(
    engineer: TestClient, seeded: Seeded
) -> None:
    url = f"/api/incidents/{seeded.ids['sf']}/feedback"
    for value in ("perhaps", 0, "true"):
        r = engineer.post(url, json={"false_positive": value})
        assert error(r, 422)["field"] == "false_positive"
    r = engineer.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert error(r, 422)["type"] == "validation_error"


class Broken:
    """A store that fails like a lost database connection."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("database is gone: secret connection string")

        return fail


def test_unexpected_errors_show_no_details(seeded: Seeded) -> None:
    app = create_app(seeded.settings, Broken())  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ENGINEER_TOKEN}"
        r = client.get("/api/overview")
        page = client.get("/")
    body = error(r, 500)
    assert body["message"] == "internal error: see the server log"
    assert "secret" not in r.text and "secret" not in page.text
    assert page.status_code == 500 and "Something went wrong" in page.text
