"""Benchmark 2: Shopify catalogue import, by paging and by bulk operation.

    .venv/bin/python bench/catalog_import.py --skus 100000 [--modes bulk,paged] [--db postgresql]
    .venv/bin/python bench/catalog_import.py --quick

The Shopify sandbox (child process, loopback HTTP) is seeded with ``--skus`` variants (4 sizes per
product, 2 locations). Two measurements per mode:

1. **enumeration** — the channel's ``list_products()`` consumed and dropped: the plugin's own cost
   (HTTP, JSON/JSONL parsing, mapping to canonical records) and whether it streams;
2. **catalog flow** — the ``catalog`` flow run as a worker runs it, into the database (upsert of
   products, variants and stock levels, duplicate detection, label rules).

Variants per second are given on hub CPU time ("excluding network waits": the time the hub spends
waiting for the sandbox or for Shopify's cost bucket is not counted) and on wall time. The
sandbox's cost bucket is set very large so pacing does not dominate; the real Standard-plan
bucket (100 points/s) time is projected from the points the paged queries reserved.
Peak RSS is this process's high-water mark for the phase (the sandbox's memory is its own).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SandboxProcess,
    bench_database,
    fmt_rss,
    hub_connector,
    measured,
    record,
)
from bench.rate_limits import SHOPIFY_CREDENTIALS, Inspecting, services
from bench.stock_sync import profile_to

SIZES = ("S", "M", "L", "XL")


def make_shop(variants: int) -> Any:
    from plugins.shopify.sandbox import create_app

    return create_app(products=max(1, variants // len(SIZES)), sizes=SIZES, bucket_size=1e9, restore_rate=1e9,
                      bulk_polls_to_complete=1)


def variant_count(app: Any) -> int:
    return len(app.state.variants)


class StreamingInspecting(Inspecting):
    """``Inspecting`` for GraphQL answers only: it reads each body whole (to find THROTTLED and the
    cost), which for the bulk result download held the whole JSONL file in this process and made
    the enumeration's peak RSS the bench's, not the plugin's. The download is counted, left streaming."""

    def inspects(self, request: Any) -> bool:
        return "graphql" in request.url.path


def enumerate_only(url: str, mode: str) -> tuple[int, Any, Inspecting]:
    from plugins.shopify.channel import ShopifyChannel

    transport = StreamingInspecting()
    channel = ShopifyChannel(services("Shopify", url, SHOPIFY_CREDENTIALS,
                                      {"catalogue_mode": mode, "bulk_poll_seconds": 0.05}, transport))
    count = 0
    with measured() as meter:
        for product in channel.list_products(None):
            count += len(product.variants)
    return count, meter, transport


def run_flow(db: Any, url: str, mode: str) -> tuple[Any, Any]:
    from hub import accounts
    from hub.connections import get_connector
    from hub.jobs import create_run, execute_run, load_builtin_flows
    from hub.locks import LocalLocks
    from hub.models import Organisation, SyncRun

    load_builtin_flows()
    with db.session() as session:
        organisation = Organisation(name="Bench brand", slug=f"bench-{time.time_ns()}")
        session.add(organisation)
        session.flush()
        account = accounts.create_account(session, organisation.id, f"Shopify {mode}", "shopify", "sandbox",
                                          SHOPIFY_CREDENTIALS, {"catalogue_mode": mode, "bulk_poll_seconds": 0.05},
                                          get_connector().box, "bench")
        account.base_url = url
        accounts.activate(session, account, "bench")
        account_id = account.id
    run_id = create_run(db, account_id, "catalog", trigger="manual", params={"full": True})
    with measured() as meter:
        execute_run(db, run_id, locks=LocalLocks(), retries_left=0, params={"full": True})
    with db.session() as session:
        run = session.get(SyncRun, run_id)
    return run, meter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--modes", default="bulk,paged")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--no-flow", action="store_true", help="measure the enumeration only")
    parser.add_argument("--quick", action="store_true", help="3,000 variants, bulk only")
    parser.add_argument("--profile", metavar="DIR", help="write pyinstrument profiles of each phase to DIR")
    args = parser.parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.skus, args.modes = 3_000, "bulk"
    import logging

    logging.basicConfig(level=logging.WARNING)
    hub_connector()
    started = time.perf_counter()
    sandbox = SandboxProcess(lambda: make_shop(args.skus))
    total = sandbox.call(variant_count)
    print(f"sandbox seeded with {total:,} variants in {time.perf_counter() - started:.1f}s", flush=True)
    lines = [f"Shopify sandbox: {total:,} variants ({len(SIZES)} sizes per product, 2 locations). Database: {args.db}.", "",
             "| mode | phase | variants | hub CPU | variants/s (CPU) | wall | variants/s (wall) | peak RSS | requests | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    summary = []
    try:
        for mode in [m for m in args.modes.split(",") if m]:
            with profile_to(Path(args.profile) / f"catalog-{mode}-enumerate.txt" if args.profile else None):
                count, meter, transport = enumerate_only(sandbox.url, mode)
            note = ""
            if mode == "paged":
                projected = transport.requested / 100.0
                note = (f"{transport.requested:,.0f} points reserved: {projected / 3600:.1f} h on a Standard bucket "
                        f"(100 pts/s), {projected / 36000:.2f} h on Plus (1,000 pts/s)")
            lines.append(f"| {mode} | enumeration | {count:,} | {meter.cpu:.1f} s | {count / meter.cpu:,.0f} | "
                         f"{meter.wall:.1f} s | {count / meter.wall:,.0f} | {fmt_rss(meter.peak_rss_mb)} | "
                         f"{transport.requests} | {note} |")
            print(lines[-1], flush=True)
            summary.append(f"{mode} enumeration {count / meter.cpu:,.0f} variants/s CPU, peak {fmt_rss(meter.peak_rss_mb)}")
            if args.no_flow:
                continue
            with tempfile.TemporaryDirectory() as folder, bench_database(args.db, Path(folder)) as db:
                with profile_to(Path(args.profile) / f"catalog-{mode}-flow.txt" if args.profile else None):
                    run, meter = run_flow(db, sandbox.url, mode)
                counts = dict(run.counts or {})
                lines.append(f"| {mode} | catalog flow -> {args.db} | {total:,} | {meter.cpu:.1f} s | "
                             f"{total / meter.cpu:,.0f} | {meter.wall:.1f} s | {total / meter.wall:,.0f} | "
                             f"{fmt_rss(meter.peak_rss_mb)} | — | run {run.status.value}: {counts} {run.error or ''} |")
                print(lines[-1], flush=True)
                summary.append(f"{mode} flow {total / meter.cpu:,.0f} variants/s CPU, peak {fmt_rss(meter.peak_rss_mb)}")
    finally:
        sandbox.stop()
    record("catalog_import", "; ".join(summary), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
