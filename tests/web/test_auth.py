"""Authentication, roles and CSRF: who may read and change what, and how each refusal reads."""

from __future__ import annotations

import re
import time

import pytest
from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner

from cxagent.web import create_app
from cxagent.web.auth import SESSION_COOKIE
from cxagent.web.settings import Settings
from tests.web.conftest import ENGINEER_TOKEN, PM_TOKEN, Seeded


def csrf_of(page: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def test_health_is_the_only_api_route_open_to_visitors(anonymous: TestClient) -> None:
    assert anonymous.get("/api/health").json() == {"status": "ok"}
    for path in ("/api/overview", "/api/incidents", "/api/summary", "/api/merchants", "/api/me"):
        r = anonymous.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "not_authenticated"
    assert anonymous.get("/api/openapi.json").status_code == 401


def test_a_wrong_token_is_refused_not_ignored(seeded: Seeded) -> None:
    with seeded.client("not-a-token") as client:
        r = client.get("/api/overview")
    assert r.status_code == 401
    assert r.json()["error"] == {
        "type": "not_authenticated",
        "message": "the API token is not valid",
        "field": "Authorization",
    }


def test_pages_send_visitors_to_sign_in_and_back(anonymous: TestClient) -> None:
    r = anonymous.get("/merchants?limit=5")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/merchants%3Flimit%3D5"
    form = anonymous.get(r.headers["location"])
    assert form.status_code == 200 and 'name="token"' in form.text
    assert 'value="/merchants?limit=5"' in form.text


def test_signing_in_sets_a_strict_http_only_cookie(seeded: Seeded) -> None:
    with seeded.client() as client:
        r = client.post("/login", data={"token": ENGINEER_TOKEN, "name": "Ada", "next": "/summary"})
        assert r.status_code == 303 and r.headers["location"] == "/summary"
        cookie = r.headers["set-cookie"]
        assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # development serves plain HTTP
        me = client.get("/api/me").json()
    assert me == {"name": "Ada", "role": "engineer", "role_label": "ML engineer", "can_edit": True}


def test_the_demo_link_signs_in_and_redirects(seeded: Seeded) -> None:
    with seeded.client() as client:
        r = client.get(f"/login?token={PM_TOKEN}&next=/summary")
        assert r.status_code == 303 and r.headers["location"] == "/summary"
        assert client.get("/api/me").json()["role"] == "pm"
        bad = client.get("/login?token=nope")
    assert bad.status_code == 401 and "That token is not valid" in bad.text


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil", ""])
def test_sign_in_never_redirects_off_site(seeded: Seeded, target: str) -> None:
    with seeded.client() as client:
        r = client.post("/login", data={"token": ENGINEER_TOKEN, "next": target})
    assert r.headers["location"] == "/"


def test_a_tampered_or_expired_session_is_refused(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = seeded.browser()
    value = browser.cookies[SESSION_COOKIE]
    with seeded.client() as client:
        client.cookies.set(
            SESSION_COOKIE, value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
        )
        assert client.get("/api/me").status_code == 401
        client.cookies.set(SESSION_COOKIE, value)
        assert client.get("/api/me").status_code == 200
        later = int(time.time()) + seeded.settings.session_max_age + 60
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
        assert client.get("/api/me").status_code == 401


def test_rotating_a_token_ends_its_sessions(seeded: Seeded) -> None:
    value = seeded.browser().cookies[SESSION_COOKIE]
    rotated = Settings(
        secret_key=seeded.settings.secret_key,
        engineer_token="a-brand-new-engineer-token-0123456789",
        pm_token=PM_TOKEN,
    )
    with TestClient(create_app(rotated, seeded.workbench)) as client:
        client.cookies.set(SESSION_COOKIE, value)
        assert client.get("/api/me").status_code == 401


def test_sign_out_needs_the_csrf_token_and_clears_the_cookie(seeded: Seeded) -> None:
    browser = seeded.browser()
    token = csrf_of(browser.get("/").text)
    assert browser.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    r = browser.post("/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert SESSION_COOKIE not in browser.cookies
    assert browser.get("/api/me").status_code == 401


def test_pm_reads_the_dashboard_summary_and_merchants(pm: TestClient) -> None:
    for path in ("/api/overview", "/api/incidents", "/api/summary", "/api/merchants", "/api/me"):
        assert pm.get(path).status_code == 200, path
    for path in ("/", "/summary", "/merchants"):
        assert pm.get(path).status_code == 200, path


def test_pm_is_refused_engineering_pages_exports_and_changes(
    pm: TestClient, seeded: Seeded
) -> None:
    inc = seeded.ids["sf"]
    base = f"/api/incidents/{inc}"
    reads = [
        base,
        f"{base}/rca",
        f"{base}/recommendations",
        f"{base}/drilldown",
        f"{base}/plans",
        f"{base}/plans/1",
        f"{base}/plans/1/markdown",
        f"{base}/experiment",
    ]
    for path in reads:
        r = pm.get(path)
        assert r.status_code == 403, path
        assert r.json()["error"]["type"] == "forbidden"
        assert "product managers have read-only access" in r.json()["error"]["message"]
    assert pm.post(f"{base}/status", json={"status": "resolved"}).status_code == 403
    assert pm.post(f"{base}/feedback", json={"false_positive": True}).status_code == 403
    page = pm.get(f"/incidents/{inc}/rca")
    assert page.status_code == 403 and "Not allowed" in page.text
    assert "read-only access" in page.text and "Traceback" not in page.text
    assert seeded.workbench.get_incident(inc)["status"] == "new"


def test_pm_sees_no_buttons_that_would_be_refused(seeded: Seeded) -> None:
    browser = seeded.browser(PM_TOKEN)
    dashboard = browser.get("/").text
    assert "Product manager" in dashboard
    assert f'href="/summary#{seeded.ids["sf"]}"' in dashboard
    assert f'href="/incidents/{seeded.ids["sf"]}"' not in dashboard
    assert "engineering view" not in browser.get("/summary").text


def test_cookie_sessions_need_the_csrf_header_for_api_changes(fresh: Seeded) -> None:
    browser = fresh.browser(name="Grace")
    inc = fresh.ids["sf"]
    url = f"/api/incidents/{inc}/status"
    r = browser.post(url, json={"status": "investigating"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "csrf_token"
    token = csrf_of(browser.get("/").text)
    r = browser.post(url, json={"status": "investigating"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["status"] == "investigating"
    assert r.json()["events"][-1]["actor"] == "Grace"


def test_forms_need_the_csrf_token(fresh: Seeded) -> None:
    browser = fresh.browser()
    inc = fresh.ids["sf"]
    r = browser.post(f"/incidents/{inc}/status", data={"status": "monitoring"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert fresh.workbench.get_incident(inc)["status"] == "new"


def test_bearer_tokens_need_no_csrf(fresh: Seeded) -> None:
    with fresh.client(ENGINEER_TOKEN) as client:
        r = client.post(f"/api/incidents/{fresh.ids['sf']}/feedback", json={"false_positive": True})
    assert r.status_code == 200 and r.json()["false_positive"] is True
    assert r.json()["events"][-1]["actor"] == "engineer"
