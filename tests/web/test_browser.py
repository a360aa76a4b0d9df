"""End to end in a real browser: the real server (``cxagent serve`` in a subprocess) over
views built from the demo story, driven by Debian's headless Chromium through Playwright.

The ML engineer signs in with the form, finds the SF grocery incident on the dashboard,
drills into it, reads its root causes and recommendations, opens and exports the experiment
plan and moves the incident to ``investigating``; the product manager signs in, reads the
summary and is refused every change and every engineering page. No page may log a console
error or have a request fail. A full-page screenshot of each step goes to
``$CXAGENT_ARTIFACTS`` (default ``test-artifacts/screenshots``).

Chromium (``/usr/bin/chromium``, or ``$CXAGENT_CHROMIUM``) is required where ``CI`` is set:
without it the tests fail, saying so; elsewhere they skip.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cxagent.web.format import pct
from cxagent.workbench.build import build
from tests.browser import SHOTS, chromium_browser
from tests.web.conftest import ENGINEER_TOKEN, PM_TOKEN

with suppress(ImportError):  # the dev extra installs it; chromium_browser() says if not
    from playwright.sync_api import (
        Browser,
        ConsoleMessage,
        Locator,
        Page,
        Request,
        Response,
        expect,
    )
    from playwright.sync_api import Error as PlaywrightError

VIEWPORT = {"width": 1400, "height": 1000}
SF_GROCERY = "region=SF + category=grocery"
DINNER = "region=SF + category=grocery + daypart=dinner"
ENGINEER_NAME = "Ada Lovelace"


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def problems(self) -> list[str]:
        """Server errors in its log: tracebacks and 5xx answers (uvicorn's access log)."""
        return [
            line
            for line in self.output().splitlines()
            if "Traceback" in line or "ERROR" in line or '" 5' in line
        ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cxagent_command() -> list[str]:
    """The installed console script next to this interpreter, else the CLI through it."""
    script = Path(sys.executable).with_name("cxagent")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cxagent.cli import main; main()"]


def wait_for_health(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            pytest.fail(
                f"cxagent serve exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/api/health", timeout=2) as r:
                if json.load(r) == {"status": "ok"}:
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"cxagent serve did not answer /api/health in {timeout:.0f} s:\n{server.output()}"
            )
        time.sleep(0.1)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (never a browser Playwright downloads)."""
    for stale in SHOTS.glob("FAILED-*.png"):  # from an earlier run
        stale.unlink()
    with chromium_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(
    chromium: Browser,  # first: nothing to build where there is no browser
    demo_dataset: tuple[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """``cxagent serve`` over a store of its own, built from the demo story."""
    root, _ = demo_dataset
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'store.db'}"
    build(root, store_url=url, n_bootstrap=30)
    env = {
        **os.environ,
        "CXAGENT_ENV": "development",
        "CXAGENT_ENGINEER_TOKEN": ENGINEER_TOKEN,
        "CXAGENT_PM_TOKEN": PM_TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CXAGENT_DB_URL", None)
    port = free_port()
    command = [*cxagent_command(), "serve", "--data", str(root), "--db", url]
    log = folder / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    running = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for_health(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- pages and what goes wrong on them -----------------------------------------------------------


class Watched:
    """A page with every console error, uncaught exception, failed request and HTTP error
    answer it met. A download is not a failure: Chromium reports the navigation a download
    replaces as aborted (``net::ERR_ABORTED``)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.downloads: set[str] = set()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("download", lambda d: self.downloads.add(d.url))

    @property
    def problems(self) -> list[str]:
        failed = [
            f"failed: {url}: {why}"
            for url, why in self.failed
            if not (why == "net::ERR_ABORTED" and url in self.downloads)
        ]
        return self.errors + failed

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text} at {message.location}")

    def _failed(self, request: Request) -> None:
        self.failed.append((request.url, request.failure or "?"))

    def _response(self, response: Response) -> None:
        if response.status >= 400:
            self.errors.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@contextmanager
def signed_out_page(browser: Browser) -> Iterator[Watched]:
    """A page in a browser context of its own (its own cookies), at desktop size."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    context.set_default_timeout(15_000)
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@contextmanager
def screenshot_on_failure(page: Page, name: str) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with suppress(PlaywrightError):
            shot(page, f"FAILED-{name}")
        raise


def charts_drawn(page: Page, count: int) -> None:
    """Every chart of the page is a drawn plotly figure with data (app.js consumes the
    embedded JSON once plotly has drawn it)."""
    charts = page.locator(".chart")
    expect(charts).to_have_count(count)
    for i in range(count):
        expect(charts.nth(i).locator("svg.main-svg").first).to_be_visible()
        assert charts.nth(i).locator("g.trace").count() > 0, f"chart {i} has no trace"
    expect(page.locator(".chart script[type='application/json']")).to_have_count(0)


def card(page: Page, heading: str) -> Locator:
    """The card whose heading is exactly ``heading``."""
    return page.locator("section.card").filter(
        has=page.get_by_role("heading", name=heading, exact=True)
    )


def sign_in(page: Page, token: str, name: str = "") -> None:
    expect(page).to_have_title("Sign in · CX-Fulfillment Agent")
    page.get_by_label("Token").fill(token)
    if name:
        page.get_by_label("Your name (for the audit trail, optional)").fill(name)
    page.get_by_role("button", name="Sign in").click()


def api(server: Server, path: str, token: str = ENGINEER_TOKEN) -> Any:
    request = urllib.request.Request(
        f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def sf_incident(server: Server) -> dict[str, Any]:
    feed = api(server, "/api/incidents")["incidents"]
    return next(i for i in feed if i["slice"] == {"region": "SF", "category": "grocery"})


# --- the journeys --------------------------------------------------------------------------------


def test_the_ml_engineer_investigates_the_sf_grocery_incident(
    chromium: Browser, server: Server
) -> None:
    with signed_out_page(chromium) as watched, screenshot_on_failure(watched.page, "engineer"):
        page = watched.page
        base = server.url
        # sign in with the form: the dashboard sends a visitor there, and back after
        page.goto(f"{base}/")
        expect(page).to_have_url(f"{base}/login?next=/")
        shot(page, "01-engineer-sign-in")
        sign_in(page, ENGINEER_TOKEN, ENGINEER_NAME)
        expect(page).to_have_url(f"{base}/")

        # the dashboard: the feed lists the incident, the CX trends are drawn
        expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
        expect(page.locator("header .who span").first).to_have_text(ENGINEER_NAME)
        expect(page.locator("header .who .role")).to_have_text("ML engineer")
        feed = card(page, "Incidents")
        row = feed.locator("tbody tr").filter(
            has=page.get_by_role("link", name=SF_GROCERY, exact=True)
        )
        expect(row).to_have_count(1)
        expect(row).to_contain_text("high")
        expect(row).to_contain_text("new")
        charts_drawn(page, 2)
        expect(card(page, "CX Score, last 30 days").locator("svg.main-svg").first).to_be_visible()
        expect(page.locator(".stats .stat .k").first).to_have_text("CX Score")
        shot(page, "02-engineer-dashboard")

        # the incident: metric table, top regressing slices, before/after trend
        row.get_by_role("link", name=SF_GROCERY, exact=True).click()
        expect(page).to_have_url(f"{base}/incidents/{sf_incident(server)['id']}")
        incident_url = page.url
        incident_id = incident_url.rsplit("/", 1)[1]
        expect(page.get_by_role("heading", level=1)).to_contain_text(SF_GROCERY)
        metrics = card(
            page,
            f"Metrics of {DINNER}: the 14 days before against the incident window",
        )
        for name in ("CX Score", "on-time rate", "orders per trip"):
            expect(metrics.locator("tbody tr").filter(has_text=name).first).to_be_visible()
        top = card(page, "Top regressing slices")
        dinner_row = top.locator("tbody tr").filter(
            has=page.get_by_role("link", name=DINNER, exact=True)
        )
        expect(dinner_row).to_have_count(1)
        expect(dinner_row.locator(".stars")).to_have_text("***")
        assert top.locator("tbody tr").count() >= 3
        charts_drawn(page, 1)
        shot(page, "03-engineer-incident")

        # the drilldown: clicking a slice swaps the panel in place with its sub-slices
        panel = page.locator("#drilldown")
        expect(panel.get_by_role("heading", level=3).first).to_have_text(SF_GROCERY)
        panel.get_by_role("link", name=DINNER, exact=True).click()
        expect(panel.get_by_role("heading", level=3).first).to_have_text(DINNER)
        expect(panel.get_by_role("link", name="back to the incident's slice")).to_be_visible()
        sub_slices = panel.locator(
            "xpath=.//h3[normalize-space()='Sub-slices']/following-sibling::table[1]"
        )
        children = sub_slices.locator("tbody tr")
        assert children.count() >= 3
        for text in children.locator("td:first-child").all_inner_texts():
            assert "daypart=dinner" in text and "category=grocery" in text, text
        assert page.url == incident_url  # swapped by the script, no navigation
        panel.scroll_into_view_if_needed()
        shot(page, "04-engineer-drilldown")

        # root causes: batching first with its confidence, prep-time drift second
        page.locator("nav.tabs").get_by_role("link", name="Root causes").click()
        expect(page).to_have_url(f"{incident_url}/rca")
        causes = page.locator("section.cause")
        expect(causes.nth(0).get_by_role("heading", level=3)).to_contain_text("batching policy")
        expect(causes.nth(1).get_by_role("heading", level=3)).to_contain_text("prep time drift")
        ranked = api(server, f"/api/incidents/{incident_id}/rca")["causes"]
        assert [c["cause"] for c in ranked[:2]] == ["batching_policy", "prep_time_drift"]
        confidence = causes.nth(0).locator(".facts > div").filter(has_text="Confidence")
        expect(confidence.locator(".v")).to_have_text(pct(ranked[0]["confidence"], 0))
        expect(
            causes.nth(1).locator(".facts > div").filter(has_text="Confidence").locator(".v")
        ).to_have_text(pct(ranked[1]["confidence"], 0))
        assert ranked[0]["confidence"] > 0.5
        charts_drawn(page, 3)  # SHAP shift, diff-in-diff, timeline
        for heading in ("SHAP shift attribution", "Difference-in-differences"):
            expect(card(page, heading).locator("svg.main-svg").first).to_be_visible()
        shot(page, "05-engineer-root-causes")

        # the engineer confirms the first cause: a plain form, back on the root causes
        causes.nth(0).get_by_role("button", name="Confirm cause").click()
        expect(page).to_have_url(f"{incident_url}/rca")
        expect(causes.nth(0).locator(".verdict-state")).to_contain_text(
            f"Marked confirmed by {ENGINEER_NAME}"
        )
        verdict = api(server, f"/api/incidents/{incident_id}/rca")["cause_feedback"]
        assert verdict["batching_policy"]["rank"] == 1

        # recommendations: reducing batching first, the tradeoff drawn
        page.locator("nav.tabs").get_by_role("link", name="Recommendations").click()
        expect(page).to_have_url(f"{incident_url}/recommendations")
        first = page.locator("section.cause").first
        expect(first.get_by_role("heading", level=3)).to_contain_text(
            "Reduce batching in SF grocery dinner"
        )
        expect(first.locator(".rank")).to_have_text("1")
        expect(first).to_contain_text("Expected CX gain")
        charts_drawn(page, 1)
        expect(card(page, "CX against efficiency").locator("svg.main-svg").first).to_be_visible()
        shot(page, "06-engineer-recommendations")

        # the experiment plan of rank 1, and its markdown export
        first.get_by_role("link", name="Generate experiment plan").click()
        expect(page).to_have_url(f"{incident_url}/plans/1")
        expect(page.locator("article.markdown h1")).to_contain_text(
            "Experiment plan: reduce_batching"
        )
        shot(page, "07-engineer-experiment-plan")
        with page.expect_download() as download_info:
            page.get_by_role("link", name="Export markdown").click()
        download = download_info.value
        assert download.suggested_filename == f"{incident_id}-plan-1.md"
        exported = Path(download.path()).read_text(encoding="utf-8")
        assert exported.startswith("# Experiment plan: reduce_batching"), exported[:200]

        # the incident moves to investigating, recorded with the engineer's name
        page.locator("nav.tabs").get_by_role("link", name="Incident").click()
        expect(page).to_have_url(incident_url)
        status_form = page.locator(f"form[action='/incidents/{incident_id}/status']")
        status_form.get_by_label("status").select_option("investigating")
        status_form.get_by_placeholder("note (optional)").fill("batching change suspected")
        status_form.get_by_role("button", name="Update status").click()
        expect(page).to_have_url(incident_url)
        expect(page.locator("h1 .pill.st-investigating")).to_have_text("investigating")
        latest = page.locator("ul.events li").first
        expect(latest).to_contain_text(f"status by {ENGINEER_NAME}")
        expect(latest).to_contain_text("new → investigating")
        expect(latest).to_contain_text("batching change suspected")
        assert api(server, f"/api/incidents/{incident_id}")["incident"]["status"] == "investigating"
        page.locator("ul.events").scroll_into_view_if_needed()
        shot(page, "08-engineer-status-investigating")

        # the agent's accuracy counts the confirmed cause
        page.locator("header nav").get_by_role("link", name="Accuracy").click()
        expect(page).to_have_url(f"{base}/accuracy")
        top1 = page.locator(".stats .stat").filter(has_text="Top-1 cause accuracy")
        expect(top1.locator(".v")).to_have_text("100%")
        shot(page, "08b-engineer-accuracy")

        assert watched.problems == [], "\n".join(watched.problems)
        assert server.problems() == [], server.output()


def test_the_product_manager_reads_the_summary_and_changes_nothing(
    chromium: Browser, server: Server
) -> None:
    with signed_out_page(chromium) as watched, screenshot_on_failure(watched.page, "pm"):
        page = watched.page
        base = server.url
        incident = sf_incident(server)
        incident_id = incident["id"]
        page.goto(f"{base}/")
        sign_in(page, PM_TOKEN)
        expect(page).to_have_url(f"{base}/")
        expect(page.locator("header .who .role")).to_have_text("Product manager")
        link = page.get_by_role("link", name=SF_GROCERY, exact=True)
        expect(link).to_have_attribute("href", f"/summary#{incident_id}")
        expect(page.locator("form[action*='/status'], form[action*='/feedback']")).to_have_count(0)
        charts_drawn(page, 2)
        shot(page, "09-pm-dashboard")

        # the summary in business language, with the projection and the tradeoff
        link.click()
        expect(page).to_have_url(f"{base}/summary#{incident_id}")
        item = page.locator(f"section.card[id='{incident_id}']")
        for question in ("What broke?", "Why are customers unhappy?", "What do we recommend?"):
            heading = item.get_by_role("heading", name=question, exact=True)
            expect(heading).to_be_visible()
            answer = heading.locator("xpath=following-sibling::p[1]")
            expect(answer).not_to_be_empty()
        expect(
            item.get_by_role("heading", name="Impact projection of the recommended fix")
        ).to_be_visible()
        projection = item.locator(".stack table").first
        expect(projection).to_be_visible()
        assert projection.locator("tr").count() >= 2
        expect(item.locator(".chart svg.main-svg").first).to_be_visible()
        expect(item.get_by_role("link", name="engineering view →")).to_have_count(0)
        expect(page.locator("form[action*='/status'], form[action*='/feedback']")).to_have_count(0)
        shot(page, "10-pm-summary")

        # no change goes through: the API with the session (and its CSRF token) or the
        # PM's token, and the page form's route, all answer 403
        csrf = page.locator("meta[name='csrf-token']").get_attribute("content")
        assert csrf
        change = {"status": "resolved", "note": "pm tries"}
        with_cookie = page.request.post(
            f"{base}/api/incidents/{incident_id}/status",
            data=change,
            headers={"X-CSRF-Token": csrf},
        )
        with_token = page.request.post(
            f"{base}/api/incidents/{incident_id}/status",
            data=change,
            headers={"Authorization": f"Bearer {PM_TOKEN}"},
        )
        for refused in (with_cookie, with_token):
            assert refused.status == 403, refused.text()
            assert refused.json()["error"]["type"] == "forbidden"
        form = page.request.post(
            f"{base}/incidents/{incident_id}/status",
            form={"status": "resolved", "csrf_token": csrf},
            max_redirects=0,
        )
        assert form.status == 403, form.text()
        assert api(server, f"/api/incidents/{incident_id}")["incident"]["status"] != "resolved"

        # an engineering page answers the 403 page, saying why
        forbidden = Watched(page.context.new_page())
        response = forbidden.page.goto(f"{base}/incidents/{incident_id}/rca")
        assert response is not None and response.status == 403
        expect(forbidden.page.get_by_role("heading", level=1)).to_contain_text("Not allowed")
        expect(forbidden.page.locator(".callout.error")).to_contain_text("read-only access")
        shot(forbidden.page, "11-pm-forbidden")
        assert forbidden.problems, "the 403 was seen"
        assert all("403" in p for p in forbidden.problems), forbidden.problems

        assert watched.problems == [], "\n".join(watched.problems)
        assert server.problems() == [], server.output()
