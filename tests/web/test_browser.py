"""The admin journey in real Chromium (Debian's package) through Playwright's sync API.

The app is served on a loopback port by werkzeug in a thread, with the embedded runtime running a
stand-in ``listings`` flow that reports progress, so the live progress bar is exercised for real.
Screenshots go to the test's tmp folder (printed on failure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from hub.app import Hub
from hub.jobs import FlowContext, register_flow, registered_flows, unregister_flow
from web import create_app

from .conftest import PASSWORD, World
from tests.services import CHROMIUM, require_chromium

ITEMS = 6


def slow_listings(ctx: FlowContext) -> None:
    """Stands in for the listings flow: one item every 0.3 s, so the bar is seen moving."""
    for done in range(1, ITEMS + 1):
        time.sleep(0.3)
        ctx.item(f"SKU-{done}", "ok")
        ctx.progress(done, ITEMS)


@pytest.fixture
def live_flow() -> Iterator[None]:
    previous = registered_flows().get("listings")
    unregister_flow("listings")
    register_flow("listings", slow_listings, "catalog")
    yield
    unregister_flow("listings")
    if previous is not None:
        register_flow(previous.name, previous.func, previous.lane, applies=previous.applies)


@pytest.fixture
def server(hub: Hub, world: World, live_flow: None) -> Iterator[str]:
    require_chromium()
    from hub.embedded import EmbeddedRuntime

    runtime = EmbeddedRuntime(hub.db, workers=1, tick_seconds=3600)
    hub._runtime = runtime
    runtime.start(ticker=False)
    app = create_app(hub, {"SECRET_KEY": "browser-test"})
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    runtime.stop()


@pytest.fixture
def page(server: str, tmp_path: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("dialog", lambda dialog: dialog.accept())
        yield page
        browser.close()


def test_admin_journey(page, world: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    page.goto("/")
    assert "/login" in page.url
    page.fill("#email", world.emails["a-admin"])
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Dashboard')")
    shot("01-dashboard")

    page.click("text=Add a channel")
    page.click("text=In-memory test channel")
    page.fill("#name", "Shop Z")
    page.select_option("#environment", "sandbox")
    page.fill("#cred-token", "tok-zzzzzzzzzzzzzzzz")
    page.fill("#set-remote", "shop-z")
    shot("02-add-channel")
    page.click("button[value=save]")
    page.wait_for_selector("h1:has-text('Shop Z')")
    assert "tok-zzzzzzzzzzzzzzzz" not in page.content()

    page.click("button:has-text('Test connection')")
    page.wait_for_selector("#connection-result:has-text('Connected')")
    assert "shop-z" in page.inner_text("#connection-result")
    shot("03-test-connection")
    account_url = page.url.split("/test")[0]

    page.goto("/catalogue")
    page.check(f"input[name=variant_id][value='{world.ids['a']['variant']}']")
    page.select_option("#bulk-label", label="Iconic")
    page.click("button:has-text('Assign label')")
    page.wait_for_selector(".flash.ok:has-text('given to')")
    shot("04-label-assigned")

    page.goto(account_url)
    page.select_option("#hub-label_id", label="Iconic")
    page.click("button:has-text('Save hub settings')")
    page.wait_for_selector(".flash.ok:has-text('Hub settings saved')")
    page.click("button:has-text('Save and Activate')")
    page.wait_for_selector(".badge.s-testing")
    page.click("tr:has(td:text-is('Listings')) button:has-text('Turn on')")
    page.wait_for_selector(".flash.ok:has-text('Listings turned on')")
    shot("05-testing")

    page.click("tr:has(td:text-is('listings')) button:has-text('Run now')")
    page.wait_for_selector(".progress[data-run]")
    shot("06-run-progress")
    page.wait_for_selector(".run-status:text-is('ok')", timeout=20_000)
    assert f"ok {ITEMS}" in page.inner_text("dl.kv")
    shot("07-run-done")

    page.goto("/runs")
    page.wait_for_selector(".progress[data-status=ok]")
    shot("08-runs")

    page.goto(account_url)
    page.click("text=Go Live…")
    page.fill("#confirm_name", "Shop Z")
    shot("09-go-live-confirm")
    page.click("button:has-text('Go Live')")
    page.wait_for_selector(".badge.s-live")
    shot("10-live")

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto("/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400, "the dashboard scrolls sideways on a phone"
    shot("11-phone-dashboard")
    assert len(list(shots.iterdir())) == 11
