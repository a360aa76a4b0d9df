"""Feedback in the workbench: cause verdicts through the API and the root-cause page's forms,
the agent-accuracy report and page, and who may do what."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tests.web.conftest import ENGINEER_TOKEN, Seeded


def error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()["error"]
    assert "Traceback" not in r.text
    return body


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found
    return found.group(1)


def test_the_openapi_document_declares_the_feedback_routes(engineer: TestClient) -> None:
    spec = engineer.get("/api/openapi.json").json()
    route = spec["paths"]["/api/incidents/{incident_id}/causes/{cause}/feedback"]["post"]
    assert route["operationId"] == "set_cause_feedback"
    assert {"200", "401", "403", "404", "409", "422"} <= set(route["responses"])
    cause = next(p for p in route["parameters"] if p["name"] == "cause")
    assert "batching_policy" in cause["schema"]["enum"] and "other" not in cause["schema"]["enum"]
    assert spec["paths"]["/api/accuracy"]["get"]["operationId"] == "get_accuracy"


def test_cause_verdicts_are_stored_with_what_was_shown_and_audited(fresh: Seeded) -> None:
    inc = fresh.ids["sf"]
    base = f"/api/incidents/{inc}/causes"
    with fresh.client(ENGINEER_TOKEN) as client:
        r = client.post(f"{base}/batching_policy/feedback", json={"verdict": "confirmed"})
        assert r.status_code == 200, r.text
        (verdict,) = r.json()["causes"]
        assert verdict["cause"] == "batching_policy" and verdict["rank"] == 1
        assert verdict["confidence"] == 0.979 and verdict["actor"] == "engineer"
        assert verdict["at"].endswith("+00:00")
        r = client.post(
            f"{base}/prep_time_drift/feedback",
            json={"verdict": "wrong", "actual_cause": "dasher_shortage", "note": "couriers"},
        )
        assert [c["cause"] for c in r.json()["causes"]] == ["batching_policy", "prep_time_drift"]
        rca = client.get(f"/api/incidents/{inc}/rca").json()
        prep = rca["cause_feedback"]["prep_time_drift"]
        assert (prep["verdict"], prep["actual_cause"], prep["rank"]) == (
            "wrong",
            "dasher_shortage",
            2,
        )
        events = client.get(f"/api/incidents/{inc}").json()["events"]
        last = events[-1]
        assert last["action"] == "cause_feedback" and last["note"] == "couriers"
        assert last["detail"]["to"] == {"verdict": "wrong", "actual_cause": "dasher_shortage"}
        # the latest verdict wins
        client.post(f"{base}/prep_time_drift/feedback", json={"verdict": "confirmed"})
        rca = client.get(f"/api/incidents/{inc}/rca").json()
        assert rca["cause_feedback"]["prep_time_drift"]["verdict"] == "confirmed"
        assert rca["cause_feedback"]["prep_time_drift"]["actual_cause"] is None


def test_bad_cause_verdicts_name_their_field(engineer: TestClient, seeded: Seeded) -> None:
    base = f"/api/incidents/{seeded.ids['sf']}/causes"
    body = error(engineer.post(f"{base}/weather/feedback", json={"verdict": "wrong"}), 422)
    assert body["field"] == "cause"
    for payload, field in (
        ({"verdict": "maybe"}, "verdict"),
        ({}, "verdict"),
        ({"verdict": "wrong", "actual_cause": "aliens"}, "actual_cause"),
        ({"verdict": "wrong", "colour": "red"}, "colour"),
        ({"verdict": "wrong", "note": "x" * 2001}, "note"),
    ):
        r = engineer.post(f"{base}/batching_policy/feedback", json=payload)
        assert error(r, 422)["field"] == field, payload
    # well formed, but not a cause this incident ranks, or a verdict contradicting itself
    body = error(engineer.post(f"{base}/eta_model_bias/feedback", json={"verdict": "wrong"}), 404)
    assert (
        body["field"] == "cause" and "ranked: batching_policy, prep_time_drift" in body["message"]
    )
    r = engineer.post(
        f"{base}/batching_policy/feedback",
        json={"verdict": "wrong", "actual_cause": "batching_policy"},
    )
    assert error(r, 409)["field"] == "actual_cause"
    r = engineer.post(
        f"{base}/batching_policy/feedback", json={"verdict": "confirmed", "actual_cause": "other"}
    )
    assert error(r, 409)["field"] == "actual_cause"
    r = engineer.post(
        "/api/incidents/inc-nope/causes/batching_policy/feedback", json={"verdict": "wrong"}
    )
    assert error(r, 404)["field"] == "incident_id"
    assert engineer.get(f"/api/incidents/{seeded.ids['sf']}/rca").json()["cause_feedback"] == {}


def test_an_incident_not_investigated_takes_any_cause(fresh: Seeded) -> None:
    with fresh.client(ENGINEER_TOKEN) as client:
        r = client.post(
            f"/api/incidents/{fresh.ids['bare']}/causes/inventory_drop/feedback",
            json={"verdict": "confirmed"},
        )
    assert r.status_code == 200 and r.json()["causes"][0]["rank"] is None


def test_product_managers_read_the_accuracy_but_label_nothing(
    pm: TestClient, seeded: Seeded
) -> None:
    url = f"/api/incidents/{seeded.ids['sf']}/causes/batching_policy/feedback"
    body = error(pm.post(url, json={"verdict": "wrong"}), 403)
    assert "read-only access" in body["message"]
    assert pm.get("/api/accuracy").status_code == 200
    html = pm.get("/accuracy").text
    assert "Agent accuracy" in html and "No labels yet" in html and 'href="/api/accuracy"' in html
    assert seeded.workbench.cause_feedback(seeded.ids["sf"]) == {}


def test_cookie_sessions_need_the_csrf_header_for_cause_verdicts(fresh: Seeded) -> None:
    browser = fresh.browser(name="Grace")
    url = f"/api/incidents/{fresh.ids['sf']}/causes/batching_policy/feedback"
    r = browser.post(url, json={"verdict": "confirmed"})
    assert error(r, 403)["field"] == "csrf_token"
    token = csrf(browser.get("/").text)
    r = browser.post(url, json={"verdict": "confirmed"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["causes"][0]["actor"] == "Grace"


def test_the_accuracy_report_follows_the_labels(fresh: Seeded) -> None:
    sf, store = fresh.ids["sf"], fresh.ids["store"]
    with fresh.client(ENGINEER_TOKEN) as client:
        empty = client.get("/api/accuracy").json()
        assert empty["detection"]["labelled"] == 0 and empty["detection"]["precision"] is None
        assert empty["recalibration"] == {
            "a": 0.0,
            "b": 1.0,
            "n": 0,
            "prior_sd": 0.3,
            "a_sd": 0.3,
            "b_sd": 0.3,
        }
        assert empty["recalibration_applied"] is False
        client.post(f"/api/incidents/{sf}/feedback", json={"false_positive": False})
        client.post(f"/api/incidents/{store}/feedback", json={"false_positive": True})
        base = f"/api/incidents/{sf}/causes"
        client.post(f"{base}/batching_policy/feedback", json={"verdict": "confirmed"})
        client.post(f"{base}/prep_time_drift/feedback", json={"verdict": "wrong"})
        client.post(
            f"/api/incidents/{store}/causes/normal_variance/feedback", json={"verdict": "confirmed"}
        )
        found = client.get("/api/accuracy").json()
    det = found["detection"]
    assert (det["labelled"], det["true_positives"], det["precision"]) == (2, 1, 0.5)
    lo, hi = det["interval"]
    assert 0 < lo < 0.5 < hi < 1
    causes = found["causes"]
    assert causes["top1"]["incidents"] == 2 and causes["top1"]["accuracy"] == 1.0
    assert causes["labelled"] == 3 and causes["confirmed"] == 2
    assert sum(b["n"] for b in causes["calibration"]) == 3
    # normal_variance's confidence is not the model's: two labels recalibrate
    assert found["recalibration"]["n"] == 2 and found["recalibration_applied"] is True
    weeks = [w["week"] for w in det["by_week"]]
    assert weeks == sorted(weeks) and len(causes["by_week"]) >= 1


def test_the_root_cause_page_confirms_and_rejects_causes(fresh: Seeded) -> None:
    browser = fresh.browser(name="Ada")
    inc = fresh.ids["sf"]
    page = f"/incidents/{inc}/rca"
    html = browser.get(page).text
    for cause in ("batching_policy", "prep_time_drift"):
        assert f'action="/incidents/{inc}/causes/{cause}/feedback"' in html
    assert "Confirm cause" in html and "Wrong cause" in html and 'name="actual_cause"' in html
    assert f'action="/incidents/{inc}/feedback"' in html and "Real regression" in html
    token = csrf(html)
    r = browser.post(
        f"/incidents/{inc}/causes/batching_policy/feedback",
        data={"verdict": "confirmed", "csrf_token": token, "next": page},
    )
    assert r.status_code == 303 and r.headers["location"] == page
    r = browser.post(
        f"/incidents/{inc}/causes/prep_time_drift/feedback",
        data={"verdict": "wrong", "actual_cause": "dasher_shortage", "csrf_token": token},
    )
    assert r.status_code == 303 and r.headers["location"] == page  # back to the causes
    r = browser.post(
        f"/incidents/{inc}/feedback",
        data={"false_positive": "false", "csrf_token": token, "next": page},
    )
    assert r.headers["location"] == page
    html = browser.get(page).text
    assert 'Marked <strong class="good">confirmed</strong> by Ada' in html
    assert "(actually dasher shortage) by Ada" in html and "labelled a true positive" in html
    assert "prep time drift wrong (actually dasher shortage)" in re.sub(
        r"\s+", " ", browser.get(f"/incidents/{inc}").text
    )
    accuracy = browser.get("/accuracy").text
    assert "100%" in accuracy and "Applied to the confidence of new investigations" in accuracy
    assert '<a href="/accuracy" class="active">Accuracy</a>' in accuracy


def test_cause_forms_need_the_csrf_token_and_valid_values(fresh: Seeded) -> None:
    browser = fresh.browser()
    inc = fresh.ids["sf"]
    url = f"/incidents/{inc}/causes/batching_policy/feedback"
    r = browser.post(url, data={"verdict": "confirmed"})
    assert r.status_code == 403 and "CSRF" in r.text
    token = csrf(browser.get(f"/incidents/{inc}/rca").text)
    r = browser.post(url, data={"verdict": "wrong", "actual_cause": "aliens", "csrf_token": token})
    assert r.status_code == 422 and "actual_cause" in r.text
    r = browser.post(url, data={"verdict": "perhaps", "csrf_token": token})
    assert r.status_code == 422 and "verdict" in r.text
    assert fresh.workbench.cause_feedback(inc) == {}
