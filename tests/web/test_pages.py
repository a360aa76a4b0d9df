"""The pages: each renders what its JSON twin holds, charts included, and degrades when a
view is missing."""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

from fastapi.testclient import TestClient

from cxagent.web.format import pct, signed, signed_pct
from tests.web.conftest import Seeded
from tests.web.payloads import demo_experiment, demo_incidents


def page(client: TestClient, path: str) -> str:
    r = client.get(path)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    return r.text


def charts(html: str) -> list[dict[str, Any]]:
    """The figures embedded in a page (what app.js hands to plotly)."""
    found = re.findall(r'<script type="application/json">(.*?)</script>', html, re.S)
    return [json.loads(f) for f in found]


def test_every_page_links_its_json_twin_and_loads_plotly_offline(
    engineer: TestClient, seeded: Seeded
) -> None:
    inc = seeded.ids["sf"]
    twins = {
        "/": "/api/overview",
        f"/incidents/{inc}": f"/api/incidents/{inc}",
        f"/incidents/{inc}/rca": f"/api/incidents/{inc}/rca",
        f"/incidents/{inc}/recommendations": f"/api/incidents/{inc}/recommendations",
        f"/incidents/{inc}/plans/1": f"/api/incidents/{inc}/plans/1",
        f"/incidents/{inc}/experiment": f"/api/incidents/{inc}/experiment",
        "/summary": "/api/summary",
        "/merchants": "/api/merchants?limit=100",
    }
    for path, twin in twins.items():
        html = page(engineer, path)
        assert f'href="{twin}"' in html, path
        assert engineer.get(twin).status_code == 200
        assert "cdn" not in html.lower()
        if charts(html):
            assert '<script src="/vendor/plotly.min.js?v=' in html, path


def test_dashboard(engineer: TestClient, seeded: Seeded) -> None:
    html = page(engineer, "/")
    assert "ML engineer" in html and "Sign out" in html
    assert "77.6" in html and "−0.8" in html  # CX Score now, against its baseline
    assert "85.7%" in html and "−1.3 pts" in html  # on-time rate, in points
    assert "141,230 orders in the last 7 days" in html
    assert f'href="/incidents/{seeded.ids["sf"]}"' in html
    assert "region=SF + category=grocery" in html and "−12.3" in html and "Jan 03 21:00" in html
    trend_30d, trend_7d = charts(html)
    shapes = trend_30d["layout"]["shapes"]
    assert {s["x0"] for s in shapes} >= {"2024-01-03T21:00:00"}  # the SF incident's marker
    assert trend_30d["data"][0]["x"][0] == "2023-12-06" and trend_7d["data"][0]["y"]


def test_dashboard_filters(engineer: TestClient, seeded: Seeded) -> None:
    html = page(engineer, "/?status=&severity=low")
    assert "store_id=1160" in html and "region=CHI" not in html
    assert '<option value="low" selected>' in html
    r = engineer.get("/?severity=critical")
    assert r.status_code == 422 and "severity must be one of" in r.text


def test_incident_page(engineer: TestClient, seeded: Seeded) -> None:
    inc = seeded.ids["sf"]
    html = page(engineer, f"/incidents/{inc}")
    inv = demo_incidents()[0]["investigation"]
    assert escape(inv["narrative"][:40]) in html
    assert "74.5" in html and "62.1" in html and "−12.3" in html
    assert "28.2%" in html and "+13.9 pts" in html  # late rate before/after, in points
    assert "store_id=1006 + basket_size=medium + daypart=dinner" in html and "***" in html
    assert 'data-drill="/incidents/' in html and 'id="drilldown"' in html
    assert f'action="/incidents/{inc}/status"' in html and 'name="csrf_token"' in html
    (trend,) = charts(html)
    assert trend["layout"]["shapes"][0]["x0"] == "2024-01-03T16:00:00"  # the incident window
    assert trend["data"][1]["type"] == "bar"  # orders a day


def test_drilldown_slice_on_the_page_and_as_a_fragment(
    engineer: TestClient, seeded: Seeded
) -> None:
    inc = seeded.ids["sf"]
    key = "category=grocery;daypart=dinner;region=SF"
    html = page(engineer, f"/incidents/{inc}?slice={key}")
    assert "Sub-slices" in html
    fragment = engineer.get(f"/incidents/{inc}/drilldown", params={"slice": key})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "basket_size=large" in fragment.text and "−18.5" in fragment.text
    assert "back to the incident" in fragment.text
    assert engineer.get(f"/incidents/{inc}/drilldown", params={"slice": "x=y"}).status_code == 404


def test_rca_page_shows_causes_evidence_and_charts(engineer: TestClient, seeded: Seeded) -> None:
    html = page(engineer, f"/incidents/{seeded.ids['sf']}/rca")
    inv = demo_incidents()[0]["investigation"]
    top = inv["causes"][0]
    assert "batching policy" in html and pct(top["confidence"], 0) in html  # 98%
    assert signed(top["impact"]) in html and "chg-001" in html
    assert top["evidence"][0] in html
    assert "Ruled out" in html and inv["ruled_out"][0]["reason"][:40] in html
    shap, did, timeline = charts(html)
    assert shap["data"][0]["type"] == "bar" and shap["data"][0]["error_x"]["arrayminus"]
    assert len(did["data"]) == len(inv["contrast"]["drivers"])
    assert "pre-trend" in did["data"][0]["y"][0]
    texts = [a["text"] for a in timeline["layout"]["annotations"]]
    assert "chg-001 batching_policy" in texts and "regression starts" in texts


def test_recommendations_page(engineer: TestClient, seeded: Seeded) -> None:
    inc = seeded.ids["sf"]
    html = page(engineer, f"/incidents/{inc}/recommendations")
    top = demo_incidents()[0]["recommendations"]["recommendations"][0]
    est = top["estimate"]
    assert top["title"] in html and "complexity <strong>low</strong>" in html
    assert signed(est["cx_gain"]) in html and signed_pct(est["efficiency_change"]) in html
    assert f'href="/incidents/{inc}/plans/1"' in html and "Generate experiment plan" in html
    assert f'href="/api/incidents/{inc}/plans/1/markdown"' in html
    assert "too few orders in scope" in html
    (tradeoff,) = charts(html)
    trace = tradeoff["data"][0]
    assert trace["error_x"]["array"] and trace["error_y"]["arrayminus"]
    assert trace["y"][0] == demo_incidents()[0]["recommendations"]["tradeoff"][0]["cx_gain"]


def test_plan_page_renders_the_markdown_safely(engineer: TestClient, seeded: Seeded) -> None:
    html = page(engineer, f"/incidents/{seeded.ids['sf']}/plans/1")
    assert "<h2>Hypothesis</h2>" in html and "<table>" in html
    assert "Export markdown" in html and "Until launch" in html


def test_experiment_page(engineer: TestClient, seeded: Seeded) -> None:
    html = page(engineer, f"/incidents/{seeded.ids['sf']}/experiment")
    assert "mark the incident resolved" in html and "Mark resolved" in html
    assert "50% experiment" in html and "+12.94" in html and "undecided" in html
    report = demo_experiment()["report"]
    assert report["evidence"][-1] in html
    (progress,) = charts(html)
    assert progress["layout"]["shapes"][1]["y0"] == 10.8  # the expected effect


def test_pages_say_when_nothing_is_stored_yet(engineer: TestClient, seeded: Seeded) -> None:
    bare = seeded.ids["bare"]
    for suffix in ("", "/rca", "/recommendations"):
        assert "Not investigated yet" in page(engineer, f"/incidents/{bare}{suffix}")
    assert "No experiment recorded yet" in page(engineer, f"/incidents/{bare}/experiment")
    assert "No drilldown stored" in page(engineer, f"/incidents/{bare}")


def test_summary_page_in_business_language(pm: TestClient, seeded: Seeded) -> None:
    html = page(pm, "/summary")
    assert "What broke?" in html and "Why are customers unhappy?" in html
    assert "What do we recommend?" in html and "The tradeoff" in html
    assert "Rating lift" in html and "Time to full impact" in html and "about 42 days" in html
    assert "Retention" in html and "Not investigated yet" in html
    assert charts(html)  # the tradeoff chart: product managers see it too


def test_merchants_page(pm: TestClient) -> None:
    html = page(pm, "/merchants")
    assert "1160" in html and "missing or substituted items 2.0% -&gt; 13.2%" in html
    assert "30,210" in html and "Stores at risk" in html


def test_forms_change_status_and_feedback_then_come_back(fresh: Seeded) -> None:
    browser = fresh.browser(name="Ada")
    inc = fresh.ids["sf"]
    html = browser.get(f"/incidents/{inc}/experiment").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert token
    back = f"/incidents/{inc}/experiment"
    r = browser.post(
        f"/incidents/{inc}/status",
        data={"status": "resolved", "csrf_token": token.group(1), "next": back},
    )
    assert r.status_code == 303 and r.headers["location"] == back
    r = browser.post(
        f"/incidents/{inc}/feedback",
        data={"false_positive": "true", "csrf_token": token.group(1), "next": "//evil"},
    )
    assert r.headers["location"] == "/"
    row = fresh.workbench.get_incident(inc)
    assert row["status"] == "resolved" and row["false_positive"] is True
    assert [e["actor"] for e in row["events"][1:]] == ["Ada", "Ada"]
    assert "Done: the fix met its go criteria" in browser.get(back).text
    bad = browser.post(
        f"/incidents/{inc}/status", data={"status": "closed", "csrf_token": token.group(1)}
    )
    assert bad.status_code == 422 and "status" in bad.text


def test_html_errors_name_the_problem(engineer: TestClient) -> None:
    r = engineer.get("/incidents/inc-nope")
    assert r.status_code == 404 and "no incident &#39;inc-nope&#39;" in r.text
    assert "incident_id" in r.text


def test_plotly_and_static_files_are_served_with_long_caching(anonymous: TestClient) -> None:
    r = anonymous.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    plain = anonymous.get("/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.content.startswith(b"/**") and len(plain.content) > 1_000_000
    assert r.content == plain.content  # httpx undid the gzip
    css = anonymous.get("/static/app.css")
    assert css.status_code == 200 and "max-age" in css.headers["cache-control"]
    assert anonymous.get("/static/app.js").status_code == 200


def test_security_headers(anonymous: TestClient) -> None:
    r = anonymous.get("/api/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
