"""Benchmark 4: how close the hub runs to each channel's published rate limit, and how often it is refused.

    .venv/bin/python bench/rate_limits.py [--seconds 60] [--quick]

- **Shopify** (GraphQL cost bucket: 2,000 points, refilled at 100 points/s in the sandbox, as a
  Standard plan): a paged catalogue read (``list_products``, catalogue_mode=paged) runs for
  ``--seconds``. Allowed = the bucket plus the refill over the run (``2000 + 100 x T`` points);
  achieved = the points charged (``extensions.cost.actualQueryCost``: Shopify reserves a query's
  requested cost while it runs and refunds the difference at once, so what empties the bucket is
  the actual cost). The steady-state ratio leaves the initial bucket out:
  ``(charged - 2000) / (100 x T)``. Refusals =
  THROTTLED answers + HTTP 429.
- **Starshipit** (developer tier: 2 requests/s, counted by the gateway per second): order look-ups
  (``GET /api/orders?order_number=``) for ``--seconds``. Achieved = requests answered (not 429)
  per second / 2. The client paces at 90 % of the tier on purpose (see
  plugins/starshipit/client.py, PACING_HEADROOM).

Both sandboxes run in a child process over loopback HTTP; answers are inspected by a transport
wrapper on the hub's side.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SandboxProcess, record

SHOPIFY_CREDENTIALS = {"shop_domain": "channelhub-demo.myshopify.com", "access_token": "shpat_sandbox_token",
                       "client_secret": "sandbox-client-secret"}
STARSHIPIT_CREDENTIALS = {"api_key": "sandbox-api-key", "subscription_key": "sandbox-developer-subscription"}


class Inspecting(httpx.HTTPTransport):
    """Counts answers, 429s, Shopify THROTTLED answers and Shopify's charged query cost."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.requests = self.refused_429 = self.throttled = 0
        self.cost = self.requested = 0.0
        self.first_at: float | None = None
        self.last_at = 0.0

    def inspects(self, request: httpx.Request) -> bool:
        """Whether the answer is read whole (to find THROTTLED and the charged cost)."""
        return True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        inspected = self.inspects(request)
        if inspected:
            response.read()
        now = time.perf_counter()
        with self.lock:
            self.first_at = self.first_at or now
            self.last_at = now
            self.requests += 1
            if response.status_code == 429:
                self.refused_429 += 1
            elif inspected and "graphql" in request.url.path:
                try:
                    body = json.loads(response.content)
                except ValueError:
                    body = {}
                errors = body.get("errors") or []
                if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors if isinstance(e, dict)):
                    self.throttled += 1
                cost = (body.get("extensions") or {}).get("cost") or {}
                self.cost += float(cost.get("actualQueryCost") or 0)
                if cost.get("actualQueryCost") is not None:
                    self.requested += float(cost.get("requestedQueryCost") or 0)
        return response


def services(name: str, url: str, credentials: dict[str, Any], settings: dict[str, Any], transport: Any) -> Any:
    from hub.channel import AccountInfo, ChannelServices
    from hub.ratelimit import RateLimiterRegistry

    return ChannelServices(account=AccountInfo(id=1, organisation_id=1, name=name, base_url=url),
                           credentials=credentials, settings=settings, transport=transport,
                           rate_limiter_registry=RateLimiterRegistry())


def make_shopify(products: int) -> Any:
    from plugins.shopify.sandbox import create_app

    return create_app(products=products)


def make_starshipit() -> Any:
    from plugins.starshipit.sandbox import create_app

    return create_app(seed=3)


def shopify(seconds: float) -> tuple[list[str], str]:
    from plugins.shopify.channel import ShopifyChannel

    sandbox = SandboxProcess(lambda: make_shopify(4000))
    try:
        transport = Inspecting()
        channel = ShopifyChannel(services("Shopify", sandbox.url, SHOPIFY_CREDENTIALS, {"catalogue_mode": "paged"},
                                          transport))
        bucket, restore = 2000.0, 100.0
        started = time.perf_counter()
        variants = 0
        for product in channel.list_products(None):
            variants += len(product.variants)
            if time.perf_counter() - started >= seconds:
                break
        elapsed = time.perf_counter() - started
        allowed = bucket + restore * elapsed
        steady = (transport.cost - bucket) / (restore * elapsed)
        refused = transport.throttled + transport.refused_429
        share = refused / transport.requests if transport.requests else 0.0
        lines = [f"| Shopify cost bucket (2000 pts, 100 pts/s) | {elapsed:.1f} s | {transport.requests} | "
                 f"{transport.cost:,.0f} pts charged of {allowed:,.0f} allowed = {transport.cost / allowed:.2f} "
                 f"(requested {transport.requested:,.0f}: reserved per query, refunded at once) | "
                 f"steady state {steady:.2f} of 100 pts/s | THROTTLED {transport.throttled}, 429 {transport.refused_429} "
                 f"({share:.1%}) | {variants:,} variants read |"]
        summary = (f"Shopify {transport.cost / allowed:.2f} of allowed points ({steady:.2f} steady state), "
                   f"refused {share:.1%}")
        return lines, summary
    finally:
        sandbox.stop()


def starshipit(seconds: float) -> tuple[list[str], str]:
    from plugins.starshipit.channel import StarshipitChannel

    sandbox = SandboxProcess(make_starshipit)
    try:
        transport = Inspecting()
        channel = StarshipitChannel(services("Starshipit", sandbox.url, STARSHIPIT_CREDENTIALS, {"tier": "developer"},
                                             transport))
        client = channel.client
        started = time.perf_counter()
        number = 0
        while time.perf_counter() - started < seconds:
            client.get_order(order_number=f"BENCH-{number}")
            number += 1
        elapsed = time.perf_counter() - started
        answered = transport.requests - transport.refused_429
        rate = answered / elapsed
        share = transport.refused_429 / transport.requests if transport.requests else 0.0
        lines = [f"| Starshipit developer tier (2 req/s) | {elapsed:.1f} s | {transport.requests} | "
                 f"{rate:.2f} req/s of 2.00 = {rate / 2:.2f} | — | 429 {transport.refused_429} ({share:.1%}) | "
                 f"{number} look-ups |"]
        return lines, f"Starshipit {rate / 2:.2f} of 2 req/s, 429 {share:.1%}"
    finally:
        sandbox.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each channel is driven (default 60)")
    parser.add_argument("--quick", action="store_true", help="15 s per channel")
    args = parser.parse_args(argv)
    seconds = 15.0 if args.quick else args.seconds
    lines = ["| channel / limit | run | requests | achieved / allowed | steady state | refused | work |",
             "|---|---|---|---|---|---|---|"]
    summaries = []
    for bench in (shopify, starshipit):
        more, summary = bench(seconds)
        lines += more
        summaries.append(summary)
        print(more[-1], flush=True)
    record("rate_limits", "; ".join(summaries), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
