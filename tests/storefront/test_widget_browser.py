"""The demo shop and its Creative Concierge in a real browser: the real server
(``cxagent storefront serve`` in a subprocess, in-process stream, a SQLite log of its own,
no holdout so every decision is the bandit's) driven by Debian's headless Chromium through
Playwright, on a desktop and a mobile viewport.

Checked: the concierge opens on the third page (not before), with three option cards;
advanced options appear only after the second interaction; the carousel scrolls (buttons on
desktop, a touch swipe on mobile); the checkout assistant suggests add-ons on the cart page;
the hero and CTA shown are the arms ``/v1/decide`` chose; the page reports each decision's
impression once, when its slot is in view (not while it is scrolled out of view); clicks,
cart adds, a cart removal and the purchase reach the feature store and the experiment log
(with the decision they answer), and the session's cart in the features follows the page's.
No console error, uncaught exception or failed request. Screenshots go to
``test-artifacts/screenshots/storefront-*.png`` (or ``$CXAGENT_ARTIFACTS``).

Chromium (``/usr/bin/chromium`` or ``$CXAGENT_CHROMIUM``) is required where ``CI`` is set: the
tests fail without it; elsewhere they skip.
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
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cxagent.storefront.logs import ExperimentLog
from cxagent.storefront.service import ARMS
from tests.browser import SHOTS, chromium_browser

with suppress(ImportError):  # the dev extra installs it; chromium_browser() says if not
    from playwright.sync_api import Browser, BrowserContext, Page, expect

DESKTOP: dict[str, Any] = {"viewport": {"width": 1400, "height": 1000}}
MOBILE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "has_touch": True,
    "is_mobile": True,
    "device_scale_factor": 2,
}


# --- the server ------------------------------------------------------------------------------


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    db_url: str

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.load(r)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            return json.load(r)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cxagent_command() -> list[str]:
    script = Path(sys.executable).with_name("cxagent")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cxagent.cli import main; main()"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless (never a browser Playwright downloads)."""
    with chromium_browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def server(chromium: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("storefront-browser")
    db_url = f"sqlite:///{folder / 'storefront.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CXAGENT_STOREFRONT_HOLDOUT": "0"}
    env.pop("CXAGENT_REDIS_URL", None)
    env.pop("CXAGENT_STOREFRONT_DB_URL", None)
    port = free_port()
    log_path = folder / "server.log"
    command = [*cxagent_command(), "storefront", "serve", "--port", str(port), "--db", db_url]
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    running = Server(f"http://127.0.0.1:{port}", process, log_path, db_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"storefront serve exited {process.returncode}:\n{running.output()}")
            try:
                if running.get("/v1/health")["status"] == "ok":
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"storefront serve did not answer in 30 s:\n{running.output()}")
            time.sleep(0.1)
        yield running
        problems = [
            line for line in running.output().splitlines() if "Traceback" in line or "ERROR" in line
        ]
        assert not problems, running.output()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- pages and what goes wrong on them -----------------------------------------------------------


@dataclass
class Watched:
    page: Page
    problems: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # what the page posted
    navigations: int = 0  # top-level navigations the page has started
    # the number of navigations started when each request was issued
    issued_at: dict[Any, int] = field(default_factory=dict)

    def sent(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("kind") == kind and all(e.get(k) == v for k, v in match.items())
        ]

    def wait_sent(self, kind: str, timeout_ms: int = 5000, **match: Any) -> list[dict[str, Any]]:
        """``sent``, waiting for it in the browser's time (the sync API delivers the page's
        request events only while a Playwright call runs, never during a plain sleep)."""
        for _ in range(timeout_ms // 50):
            if found := self.sent(kind, **match):
                return found
            self.page.wait_for_timeout(50)
        return self.sent(kind, **match)

    def shot(self, name: str, *, full: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"storefront-{name}.png"), full_page=full)


def watch(context: BrowserContext) -> Watched:
    page = context.new_page()
    watched = Watched(page)
    page.on(
        "console",
        lambda m: (
            watched.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))

    def failed(request: Any) -> None:
        aborted = "ERR_ABORTED" in (request.failure or "")
        # a keep-alive event beacon still in flight when the page navigates is handed over
        # to the browser; Chromium reports it aborted although the server gets it
        if aborted and request.url.endswith("/v1/events"):
            return
        # a fetch still in flight when the user moves to another page is cancelled by the
        # browser (a refresh of the recommendations after a click, say): not a failure
        if aborted and watched.issued_at.get(request, watched.navigations) < watched.navigations:
            return
        watched.problems.append(f"request failed: {request.url} {request.failure}")

    page.on("requestfailed", failed)

    def posted(request: Any) -> None:
        if request.is_navigation_request() and request.frame == page.main_frame:
            watched.navigations += 1
        else:
            watched.issued_at[request] = watched.navigations
        if request.method == "POST" and request.url.endswith("/v1/events"):
            watched.events.append(json.loads(request.post_data or "{}"))

    page.on("request", posted)
    page.on(
        "response",
        lambda r: watched.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    return watched


def visit(w: Watched, url: str) -> None:
    w.page.goto(url)
    w.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=10_000)


def session_id(w: Watched) -> str:
    sid: str = w.page.evaluate("sessionStorage.getItem('lq.sid')")
    assert sid
    return sid


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def assert_slot_from_bandit(server: Server, w: Watched, slot: str) -> str:
    node = w.page.locator(f"[data-slot='{slot}']")
    expect(node).not_to_have_attribute("data-pending", "")
    arm = node.get_attribute("data-arm")
    decision_id = node.get_attribute("data-decision-id")
    assert arm in ARMS[slot] and decision_id
    content = ARMS[slot][arm]
    link = node.locator("[data-slot-link]")
    expect(link).to_have_text(content["button"] if slot == "hero" else content["text"])
    if slot == "hero":
        expect(node.locator("[data-hero-headline]")).to_have_text(content["headline"])
    row = logged(server, slot, decision_id)
    assert row is not None, f"decision {decision_id} is not in the log"
    assert row["action"] == arm
    assert 0 < row["propensity"] <= 1
    assert row["policy_version"].startswith("bandit-")
    # the slot is in view: the page reports its impression, once, and it reaches the log
    assert w.wait_sent("impression", decision_id=decision_id)
    assert wait_for(lambda: bool((logged(server, slot, decision_id) or {}).get("shown")))
    return decision_id


def logged(server: Server, slot: str, decision_id: str) -> dict[str, Any] | None:
    """The decision's row of the experiment log's rounds, or None."""
    log = ExperimentLog(server.db_url)
    try:
        rounds = log.rounds(slot)  # type: ignore[arg-type]
    finally:
        log.close()
    rows: list[dict[str, Any]] = rounds[rounds["decision_id"] == decision_id].to_dict("records")
    return rows[0] if rows else None


def swipe(context: BrowserContext, page: Page, box: dict[str, float]) -> None:
    """A finger drags right to left across ``box`` (real touch events, through CDP)."""
    cdp = context.new_cdp_session(page)
    x, y = box["x"] + box["width"] * 0.85, box["y"] + box["height"] / 2
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for i in range(1, 16):
        point = {"x": x - box["width"] * 0.05 * i, "y": y}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        page.wait_for_timeout(16)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def outcome_kinds(server: Server, decision_id: str) -> set[str]:
    log = ExperimentLog(server.db_url)
    try:
        kinds = set()
        for slot in ("hero", "cta"):
            for reward in ("click", "add_to_cart", "purchase"):
                frame = log.rounds(slot, reward=reward)  # type: ignore[arg-type]
                hit = frame[(frame["decision_id"] == decision_id) & (frame["reward"] > 0)]
                if len(hit):
                    kinds.add(reward)
        return kinds
    finally:
        log.close()


# --- the journeys ----------------------------------------------------------------------------------


def test_desktop_journey(chromium: Browser, server: Server) -> None:
    context = chromium.new_context(**DESKTOP)
    w = watch(context)
    page = w.page
    try:
        visit(w, f"{server.url}/storefront")
        shown = [assert_slot_from_bandit(server, w, slot) for slot in ("hero", "cta")]
        expect(page.locator("[data-concierge]")).to_be_hidden()
        w.shot("desktop-home")
        page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
        page.wait_for_timeout(200)
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(300)
        for decision_id in shown:  # once per decision, however often it comes into view
            assert len(w.sent("impression", decision_id=decision_id)) == 1

        visit(w, f"{server.url}/storefront/c/photo-cameras")
        expect(page.locator("[data-concierge]")).to_be_hidden()
        visit(w, f"{server.url}/storefront/p/lq-lumen-m5")

        # the third page: the concierge opens with three option cards
        modal = page.locator("[data-concierge]")
        expect(modal).to_be_visible()
        cards = modal.locator(".option-card")
        expect(cards).to_have_count(3)
        roles = [cards.nth(i).get_attribute("data-role") for i in range(3)]
        assert roles == ["primary", "alternative", "learn"]
        advanced = modal.locator("[data-advanced]")
        expect(advanced).to_be_hidden()
        w.shot("desktop-concierge")

        cards.nth(0).click()
        expect(cards.nth(0)).to_have_class("option-card selected")
        expect(advanced).to_be_hidden()  # one interaction: still simple
        cards.nth(1).locator("h3").click()
        expect(advanced).to_be_visible()  # the second: advanced options
        modal.locator("[data-budget='100']").click()
        expect(modal.locator("[data-budget='100']")).to_have_class("chip chip-on")
        page.wait_for_timeout(300)
        for role in ("primary", "alternative"):
            price = modal.locator(f".option-card[data-role='{role}'] .price").inner_text()
            assert price == "free" or float(price.strip("$").replace(",", "")) <= 100, price
        w.shot("desktop-concierge-advanced")
        modal.locator(".concierge-head [data-concierge-close]").click()
        expect(modal).to_be_hidden()

        # the product page's carousel scrolls with its buttons
        section = page.locator("[data-carousel='product']")
        expect(section).to_be_visible()
        assert section.locator(".rec-card").count() >= 3
        callouts = section.locator(".rec-callout").all_inner_texts()
        assert all(callouts)
        track = section.locator("[data-carousel-track]")
        track.scroll_into_view_if_needed()
        section.locator("[data-carousel-next]").click()
        assert wait_for(lambda: track.evaluate("t => t.scrollLeft") > 0), "carousel did not move"
        w.shot("desktop-product-carousel")

        # a hero click, then a cart add, the assistant's add-on, and the purchase
        visit(w, f"{server.url}/storefront")
        hero_decision = page.locator("[data-slot='hero']").get_attribute("data-decision-id")
        assert hero_decision
        page.locator("[data-slot='hero'] [data-slot-link]").click()
        page.wait_for_selector("body[data-ready='1']", state="attached")
        visit(w, f"{server.url}/storefront/p/lq-slate-mini")
        expect(page.locator("[data-concierge]")).to_be_hidden()  # shown once per session
        page.locator(".product [data-add-to-cart]").click()
        expect(page.locator("[data-cart-count]")).to_have_text("1")
        visit(w, f"{server.url}/storefront/cart")
        assistant = page.locator("[data-assistant]")
        expect(assistant).to_be_visible()
        expect(assistant.locator("h2")).to_have_text("Need help?")
        addons = assistant.locator(".addon")
        expect(addons.first).to_be_visible()
        cart_ids = page.evaluate("JSON.parse(sessionStorage.getItem('lq.cart'))")
        assert "lq-slate-mini" in cart_ids
        w.shot("desktop-cart-assistant")
        addon = addons.first.locator("[data-add-to-cart]")
        addon_id = addon.get_attribute("data-add-to-cart")
        addon.click()
        expect(page.locator("[data-cart-count]")).to_have_text("2")
        sid = session_id(w)

        def session() -> dict[str, Any]:
            got: dict[str, Any] = server.post("/v1/persona", {"session_id": sid})["session"]
            return got

        assert wait_for(lambda: session()["cart"] == ["lq-slate-mini", addon_id])
        # the cart page's "Remove": the page's cart and the session's both lose the item
        page.locator(f"[data-remove-from-cart='{addon_id}']").click()
        expect(page.locator("[data-cart-count]")).to_have_text("1")
        assert w.wait_sent("remove_from_cart", product_id=addon_id)
        assert wait_for(lambda: session()["cart"] == ["lq-slate-mini"])
        recs = server.get(f"/v1/recommendations?session_id={sid}")  # no cart: the session's
        assert recs["cart"] == ["lq-slate-mini"] and recs["cart_source"] == "session"
        assert recs["addons"] and "lq-slate-mini" not in {i["id"] for i in recs["items"]}
        addon.click()  # back in, for the order
        expect(page.locator("[data-cart-count]")).to_have_text("2")
        visit(w, f"{server.url}/storefront/checkout")
        expect(page.locator("[data-assistant]")).to_be_visible()
        page.locator("[data-place-order]").click()
        expect(page.locator("[data-thanks]")).to_be_visible()
        w.shot("desktop-checkout")

        # every click reached the stream, the feature store and the experiment log
        assert wait_for(lambda: session()["purchases"] == 1)
        s = session()
        assert s["page_views"] >= 8
        assert s["cart_adds"] == 3 and s["cart"] == []  # the order emptied the cart
        assert s["rec_clicks"] >= 1
        assert s["widget_interactions"] >= 5  # open, two cards, budget, dismiss
        assert wait_for(
            lambda: {"click", "add_to_cart", "purchase"} <= outcome_kinds(server, hero_decision)
        )
        assert not w.problems, w.problems
    finally:
        context.close()


def test_a_slot_out_of_view_is_reported_only_once_it_comes_into_view(
    chromium: Browser, server: Server
) -> None:
    context = chromium.new_context(viewport={"width": 1400, "height": 600})
    # the home page opens scrolled to its end, before the decisions arrive
    context.add_init_script(
        "addEventListener('DOMContentLoaded', () =>"
        " window.scrollTo(0, document.documentElement.scrollHeight))"
    )
    w = watch(context)
    page = w.page
    try:
        visit(w, f"{server.url}/storefront")
        hero = page.locator("[data-slot='hero']")
        expect(hero).not_to_have_attribute("data-pending", "")
        decisions = {
            slot: page.locator(f"[data-slot='{slot}']").get_attribute("data-decision-id")
            for slot in ("hero", "cta")
        }
        assert all(decisions.values())
        assert hero.evaluate("n => n.getBoundingClientRect().bottom") <= 0  # out of view
        page.wait_for_timeout(800)
        assert not w.sent("impression"), w.sent("impression")
        for slot, decision_id in decisions.items():
            row = logged(server, slot, str(decision_id))
            assert row is not None and not row["shown"]  # served, not shown
        page.evaluate("window.scrollTo(0, 0)")
        for slot, decision_id in decisions.items():
            assert w.wait_sent("impression", decision_id=decision_id)
            assert wait_for(lambda s=slot, d=decision_id: (logged(server, s, d) or {})["shown"])
        assert len(w.sent("impression")) == 2
        assert not w.problems, w.problems
    finally:
        context.close()


def test_mobile_journey(chromium: Browser, server: Server) -> None:
    context = chromium.new_context(**MOBILE)
    w = watch(context)
    page = w.page
    try:
        for path in ("/storefront", "/storefront/c/supplies-paper", "/storefront/p/lq-paper-cold"):
            expect(
                page.locator("[data-concierge]")
            ).to_be_hidden() if path != "/storefront" else None
            visit(w, f"{server.url}{path}")
            if path == "/storefront":
                w.shot("mobile-home")
        modal = page.locator("[data-concierge]")
        expect(modal).to_be_visible()
        expect(modal.locator(".option-card")).to_have_count(3)
        expect(modal.locator("[data-advanced]")).to_be_hidden()
        w.shot("mobile-concierge")
        modal.locator(".option-card").nth(2).tap()
        modal.locator(".option-card").nth(0).tap()
        expect(modal.locator("[data-advanced]")).to_be_visible()
        modal.locator(".concierge-head [data-concierge-close]").tap()
        expect(modal).to_be_hidden()

        # the carousel: no buttons on touch screens, a swipe scrolls it
        section = page.locator("[data-carousel='product']")
        expect(section).to_be_visible()
        expect(section.locator("[data-carousel-next]")).to_be_hidden()
        track = section.locator("[data-carousel-track]")
        track.scroll_into_view_if_needed()
        box = track.bounding_box()
        assert box is not None
        before = track.evaluate("t => t.scrollLeft")
        swipe(context, page, box)
        moved = wait_for(lambda: track.evaluate("t => t.scrollLeft") > before + 100)
        assert moved, "a swipe did not scroll the carousel"
        w.shot("mobile-carousel")

        sid = session_id(w)
        persona = server.post("/v1/persona", {"session_id": sid})
        assert persona["segment"]["device"] == "mobile"
        page.locator(".product [data-add-to-cart]").tap()
        visit(w, f"{server.url}/storefront/cart")
        expect(page.locator("[data-assistant] .addon").first).to_be_visible()
        w.shot("mobile-cart-assistant", full=True)
        assert not w.problems, w.problems
    finally:
        context.close()


def test_concierge_opens_on_entry_from_a_campaign(chromium: Browser, server: Server) -> None:
    context = chromium.new_context(**DESKTOP)
    w = watch(context)
    try:
        visit(w, f"{server.url}/storefront?utm_source=newsletter&utm_campaign=spring")
        expect(w.page.locator("[data-concierge]")).to_be_visible()
        persona = server.post("/v1/persona", {"session_id": session_id(w)})
        assert persona["segment"]["channel"] == "newsletter"
        assert not w.problems, w.problems
    finally:
        context.close()


def test_analytics_page(chromium: Browser, server: Server) -> None:
    context = chromium.new_context(**DESKTOP)
    w = watch(context)
    try:
        w.page.goto(f"{server.url}/analytics")
        for section in ("lift", "velocity", "engagement", "latency", "arms"):
            expect(w.page.locator(f"[data-section='{section}']")).to_be_visible()
        expect(w.page.locator("[data-section='latency']")).to_contain_text("POST /v1/decide")
        w.shot("analytics", full=True)
        assert not w.problems, w.problems
    finally:
        context.close()
