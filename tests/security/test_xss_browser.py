"""Markup in data is shown as text, in real Chromium: a product titled ``<img src=x onerror=alert(1)>``
(and the same in brands, SKUs, order lines, customer names, labels, run items, audit messages, search
boxes) fires no dialog, injects no element and no event handler; a remote's ``javascript:`` tracking
URL is not made a link. Every page also carries the CSP and anti-framing headers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.serving import make_server

from hub.app import Hub
from hub.events import emit
from hub.labels import create_label
from hub.models import (
    ChannelAccount, Fulfilment, Order, OrderLine, OrderStatus, Product, RunStatus, SyncRun, SyncRunItem, Variant,
)
from web import SECURITY_HEADERS, create_app

from tests.web.conftest import PASSWORD, World
from tests.services import CHROMIUM, require_chromium

IMG = "<img src=x onerror=alert(1)>"
SVG = '"><svg onload=alert(2)>'
SCRIPT = "</td><script>alert(3)</script>"


def seed_markup(hub: Hub, world: World) -> dict[str, int]:
    org = world.ids["a"]["organisation"]
    account_id = world.ids["a"]["account"]
    with hub.db.session() as session:
        product = Product(organisation_id=org, parent_sku="XSS-1", title=IMG, brand=SVG, season=SCRIPT, category=IMG,
                          description=SCRIPT)
        product.variants = [Variant(organisation_id=org, sku="XSS-1-<b>8</b>", size=SVG, colour=IMG,
                                    price_retail=Decimal("10.00"))]
        session.add(product)
        order = Order(organisation_id=org, account_id=account_id, channel_order_id="XSS-O-1", order_number=f"O-{SVG}",
                      status=OrderStatus.FULFILLED, placed_at=datetime.now(timezone.utc), customer_name=IMG,
                      shipping_address={"name": IMG, "city": SCRIPT}, error=SVG)
        order.lines = [OrderLine(sku="XSS-1-<b>8</b>", quantity=1, title=IMG)]
        order.fulfilments = [Fulfilment(external_id="F-1", carrier=IMG, tracking_number=SVG,
                                        tracking_url="javascript:alert(4)", status="error", error=SCRIPT)]
        session.add(order)
        create_label(session, org, IMG)
        run = SyncRun(organisation_id=org, account_id=account_id, flow="listings", status=RunStatus.PARTIAL, error=IMG,
                      counts={"ok": 0, "rejected": 1}, finished_at=datetime.now(timezone.utc))
        run.items = [SyncRunItem(key=IMG, outcome="rejected", field=SVG, message=SCRIPT)]
        session.add(run)
        session.flush()
        emit(session, organisation_id=org, account_id=account_id, kind="order.imported", message=IMG,
             data={"order_id": order.id, "explanation": SVG})
        session.get(ChannelAccount, account_id).name = f"Memory {IMG}"
        return {"product": product.id, "order": order.id, "run": run.id, "account": account_id}


@pytest.fixture
def server(hub: Hub, world: World) -> Iterator[str]:
    require_chromium()
    app = create_app(hub, {"SECRET_KEY": "xss-test"})
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(base_url=server)
        page = context.new_page()
        page.set_default_timeout(10_000)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.dialogs = dialogs
        yield page
        browser.close()


INJECTED = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const attr of el.attributes) {
      if (attr.name.startsWith('on')) bad.push(el.tagName + ' ' + attr.name);
      if (['href', 'src', 'action'].includes(attr.name) && /^\\s*javascript:/i.test(attr.value)) bad.push(el.tagName + ' ' + attr.value);
    }
  }
  for (const el of document.querySelectorAll('img[src="x"], svg[onload], b, script:not([src])')) bad.push(el.outerHTML);
  return bad;
}"""


def test_markup_in_data_is_shown_as_text_and_never_runs(page: Any, hub: Hub, world: World) -> None:
    ids = seed_markup(hub, world)
    page.goto("/login")
    page.fill("#email", world.emails["a-admin"])
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("h1:has-text('Dashboard')")
    shown_as_text = {
        "/catalogue": IMG, f"/catalogue/products/{ids['product']}": IMG, "/orders": IMG, f"/orders/{ids['order']}": IMG,
        "/catalogue/labels": IMG, f"/runs/{ids['run']}": "alert(3)", "/audit": IMG, "/": IMG,
        f"/accounts/{ids['account']}": IMG, f"/catalogue?q={quote(SVG)}": None, f"/orders?status={quote(SVG)}": None,
        f"/audit?kind={quote(IMG)}": None, f"/catalogue/listings?state={quote(SVG)}": None,
    }
    problems = []
    for path, text in shown_as_text.items():
        response = page.goto(path)
        assert response is not None and response.status < 500, path
        headers = response.headers
        assert all(headers.get(name.lower()) == value for name, value in SECURITY_HEADERS.items()), path
        page.wait_for_timeout(50)
        injected = page.evaluate(INJECTED)
        if injected:
            problems.append(f"{path}: injected {injected}")
        if text is not None and page.get_by_text(text, exact=False).count() == 0:
            problems.append(f"{path}: the markup is not shown as text")
    assert not problems, "\n".join(problems)
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.locator("a[href^='javascript']").count() == 0
