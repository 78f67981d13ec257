"""Benchmark: the listings flow against The Iconic's sandbox over loopback HTTP.

    .venv/bin/python bench/listings_sync.py --skus 10000,100000 --changed 1,10,100
    .venv/bin/python bench/listings_sync.py --quick

For each size N: seed N listed variants in product sets of ``--sizes`` sizes (default 4; ``3,4,5``
cycles set sizes) in the hub and in the sandbox, all in step (listing bindings carry the fingerprint
the flow itself computes, so nothing is due), then

1. run the listings flow with nothing changed: the **planning cost** (hub CPU, and zero requests);
2. for each P: raise the retail price of P% of the variants at the source — whole product sets, a
   price is a product's, so every size of a chosen set changes — run the listings flow and count the
   requests the sandbox received per endpoint kind, against the honest minimum for n changed
   listings in s product sets (docs/performance.md, shared/reference/iconic-api.md §4.4, §9):

       ceil(n/100) product reads   GET /v2/product/seller-skus   (at most 100 SKUs per call)
     + s price writes              PUT /v2/product-set/{id}/prices (one set per call, no cross-set write)
     + ceil(n/100) stock writes    PUT /v2/stock/product           (at most 100 rows per call)

   plus a run's fixed cost (one OAuth token, the reservation read: two paged GET /v2/order-items);
3. the same change through a **naive per-SKU loop**: one price write
   (``PUT /v2/product/{id}/prices/{country}``) and one stock write (one row) per changed SKU, through
   the same HTTP client, token and rate limiter: 2n calls. Measured on up to ``--naive-cap`` SKUs,
   its CPU and wall time scaled to n (marked "scaled").

The sandbox runs in a child process: hub CPU is this process's CPU, sandbox excluded; with PostgreSQL
the database server's CPU is not the hub's either. Wall time is dominated by the channel's politeness
limit; ``--rate`` changes it for the hub and the naive loop alike (the counts do not
depend on it).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SandboxProcess,
    bench_database,
    fmt_rss,
    hub_connector,
    make_iconic,
    measured,
    product_layout,
    profile_to,
    ratio,
    record,
    run_flow,
    seed_listed_catalogue,
    take_calls,
)

BASE_PRICE = 49.95
# endpoint kinds: (method, path pattern) -> kind; anything else is "other"
KINDS = (
    ("read", "GET", re.compile(r"^/v2/product/seller-skus$")),
    ("price", "PUT", re.compile(r"^/v2/product-set/\d+/prices$")),
    ("stock", "PUT", re.compile(r"^/v2/stock/product$")),
    ("status", "PUT", re.compile(r"^/v2/product-set/\d+/products/\d+/status$")),
    ("price (one product)", "PUT", re.compile(r"^/v2/product/\d+/prices/[A-Za-z]+$")),
    ("reservations", "GET", re.compile(r"^/v2/order-items$")),
    ("token", "POST", re.compile(r"^/oauth/")),
)


def kind_of(method: str, path: str) -> str:
    for kind, wanted, pattern in KINDS:
        if method == wanted and pattern.search(path):
            return kind
    return f"other {method} {path}"


def by_kind(calls: Counter) -> Counter:
    kinds: Counter = Counter()
    for (method, path), n in calls.items():
        kinds[kind_of(method, path)] += n
    return kinds


# -- the sandbox side (runs in the child) ------------------------------------------------------------


def iconic_prices(app: Any, ids: list[int]) -> list[float]:
    return [app.state.products[i]["price"] for i in ids]


# -- the hub side ----------------------------------------------------------------------------------------


def mark_listings_sent(db: Any, account_id: int, chunk: int = 2000) -> None:
    """Put every LISTING binding in step: the fingerprint the flow computes (its own functions) and sent now."""
    from sqlalchemy import bindparam, select, update
    from sqlalchemy.orm import selectinload

    from hub.bindings import LISTING
    from hub.flows.listings import build_listing, listing_fingerprint
    from hub.models import Binding, ChannelAccount, Variant, utcnow

    now = utcnow()
    statement = (update(Binding).where(Binding.account_id == account_id, Binding.kind == LISTING,
                                       Binding.internal_id == bindparam("iid"))
                 .values(fingerprint=bindparam("fp"), last_sent_at=now))
    with db.session() as session:
        account = session.get(ChannelAccount, account_id)
        ids = list(session.scalars(select(Variant.id).order_by(Variant.id)))
        for start in range(0, len(ids), chunk):
            variants = session.scalars(select(Variant).where(Variant.id.in_(ids[start : start + chunk]))
                                       .options(selectinload(Variant.product))).all()
            rows = [{"iid": str(v.id), "fp": listing_fingerprint(build_listing(v, account, 0))} for v in variants]
            session.connection().execute(statement.execution_options(synchronize_session=False), rows)
            session.expunge_all()


def change_prices(db: Any, variant_ids: list[int]) -> None:
    """The source's retail price of these variants goes up by 1.00 (as a catalogue import writes it)."""
    from sqlalchemy import bindparam, update

    from hub.models import Variant

    statement = update(Variant).where(Variant.id == bindparam("vid")).values(price_retail=Variant.price_retail + 1)
    with db.engine.begin() as connection:
        for start in range(0, len(variant_ids), 5000):
            connection.execute(statement.execution_options(synchronize_session=False),
                               [{"vid": vid} for vid in variant_ids[start : start + 5000]])


def naive_loop(db: Any, account_id: int, targets: list[tuple[int, str, int]]) -> None:
    """A simple connector: for each changed SKU, read it, write its price alone, write its stock alone."""
    from sqlalchemy import func, select

    from hub.connections import open_channel
    from hub.models import ChannelAccount, StockLevel, Variant

    with db.session() as session:
        channel = open_channel(session.get(ChannelAccount, account_id))
    country = channel._setting("price_country")
    for variant_id, _sku, product_id in targets:
        with db.engine.connect() as connection:
            price = connection.execute(select(Variant.price_retail).where(Variant.id == variant_id)).scalar()
            quantity = connection.execute(select(func.sum(StockLevel.available))
                                          .where(StockLevel.variant_id == variant_id)).scalar() or 0
        channel.client.put(f"/v2/product/{product_id}/prices/{country}",
                           {"price": float(price), "salePrice": None, "saleStartDate": None, "saleEndDate": None})
        channel.client.put("/v2/stock/product", [{"productId": product_id, "quantity": int(quantity)}])


def choose_sets(layout: list[int], percent: float) -> tuple[list[int], list[int]]:
    """P% of the product sets, evenly spread: (their product indexes, the indexes of all their variants)."""
    products = layout[-1] + 1
    wanted = max(1, round(products * percent / 100))
    step = products / wanted
    chosen = sorted({int(k * step) for k in range(wanted)})
    members = set(chosen)
    return chosen, [i for i, p in enumerate(layout) if p in members]


def requests_text(calls: Counter) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(by_kind(calls).items()))


def bench_size(args: argparse.Namespace, count: int, lines: list[str], summary: list[str]) -> None:
    from hub.jobs import load_builtin_flows

    load_builtin_flows()
    sandbox = SandboxProcess(make_iconic)
    layout = product_layout(count, args.sizes)
    profile_dir = Path(args.profile) if args.profile else None
    try:
        with tempfile.TemporaryDirectory() as folder, bench_database(args.db, Path(folder)) as db:
            started = time.perf_counter()
            account_id, listed = seed_listed_catalogue(db, sandbox, count, layout)
            mark_listings_sent(db, account_id)
            apply_rate(db, account_id, args.rate)
            print(f"[{count}] seeded in {time.perf_counter() - started:.1f}s ({layout[-1] + 1:,} product sets)", flush=True)
            take_calls(sandbox)

            with profile_to(profile_dir / f"listings-plan-{count}.txt" if profile_dir else None), measured() as plan:
                run = run_flow(db, account_id, "listings")
            calls = take_calls(sandbox)
            assert run.status.value == "ok", f"listings run {run.status.value}: {run.error}"
            lines.append(f"| {count:,} | 0% (unchanged) | 0 / 0 | {sum(calls.values())} / 0 | — | — | — | — | "
                         f"{plan.cpu:.2f} s ({plan.cpu / count * 1e6:.0f} µs/SKU) | {plan.wall:.2f} s | "
                         f"{fmt_rss(plan.peak_rss_mb)} | run {run.status.value} | {requests_text(calls) or 'none'} |")
            summary.append(f"{count // 1000}k unchanged: {sum(calls.values())} requests, {plan.cpu:.2f}s CPU "
                           f"({plan.cpu / count * 1e6:.0f}µs/SKU)")
            print(lines[-1], flush=True)

            bumped: Counter = Counter()  # variant index -> price rises so far
            for percent in args.changed:
                sets, members = choose_sets(layout, percent)
                changed, s = len(members), len(sets)
                change_prices(db, [i + 1 for i in members])
                bumped.update(members)
                per100 = math.ceil(changed / 100)
                minimum = {"read": per100, "price": s, "stock": per100}
                honest = sum(minimum.values())
                with profile_to(profile_dir / f"listings-{count}-{percent}.txt" if profile_dir else None), \
                        measured() as hub:
                    run = run_flow(db, account_id, "listings")
                calls = take_calls(sandbox)
                assert run.status.value == "ok", f"listings run {run.status.value}: {run.error}"
                kinds = by_kind(calls)
                flow_calls = sum(kinds[k] for k in minimum) + kinds["status"]
                total = sum(calls.values())
                sample = members[:: max(1, len(members) // 50)]
                shown = sandbox.call(iconic_prices, [listed[i][2] for i in sample])
                right = all(abs(p - (BASE_PRICE + bumped[i])) < 0.005 for i, p in zip(sample, shown))

                naive_n = min(changed, args.naive_cap)
                with measured() as naive:
                    naive_loop(db, account_id, [listed[i] for i in members[:naive_n]])
                n_kinds = by_kind(take_calls(sandbox))
                assert n_kinds["price (one product)"] == naive_n and n_kinds["stock"] == naive_n, n_kinds
                scale = changed / naive_n
                naive_calls, naive_wall, naive_cpu = 2 * changed, naive.wall * scale, naive.cpu * scale
                scaled = "" if naive_n == changed else f" (measured on {naive_n}, scaled)"
                per_kind = "; ".join(f"{k} {kinds[k]:,} / {m:,} = {ratio(kinds[k], m)}" for k, m in minimum.items())
                lines.append(
                    f"| {count:,} | {percent}% | {changed:,} in {s:,} sets | {flow_calls:,} / {honest:,} = "
                    f"**{ratio(flow_calls, honest)}** | {per_kind}; status {kinds['status']} | "
                    f"{total:,} ({ratio(total, honest)}) | {flow_calls:,} / {changed:,} = {flow_calls / changed:.3f} | "
                    f"naive {naive_calls:,} / {honest:,} = {ratio(naive_calls, honest)} | "
                    f"hub {hub.cpu:.2f} s ({hub.cpu / changed * 1e6:.0f} µs/changed SKU); naive {naive_cpu:.2f} s{scaled} | "
                    f"hub {hub.wall:.1f} s; naive {naive_wall:.1f} s{scaled} | {fmt_rss(hub.peak_rss_mb)} | "
                    f"prices {'right' if right else 'WRONG'} | {requests_text(calls)} |")
                summary.append(f"{count // 1000}k@{percent}%: calls/min {ratio(flow_calls, honest)} "
                               f"(all requests {ratio(total, honest)}; naive {ratio(naive_calls, honest)}), "
                               f"hub CPU {hub.cpu:.1f}s")
                print(lines[-1], flush=True)
    finally:
        sandbox.stop()


def set_rate(rate: float | None) -> str:
    """The Iconic's politeness limit for this run, for the hub and the naive loop alike: ``--rate`` when
    given (the account's ``requests_per_second`` setting where the channel has one, else its class
    limits), else the channel's default. Returns it as text."""
    import dataclasses

    from plugins.iconic import channel as iconic

    field = iconic.IconicSettings().fields.get("requests_per_second")
    if field is not None and hasattr(iconic, "limits_for_rate"):
        limits = iconic.limits_for_rate(float(rate or field.load_default))
    else:
        if rate:
            iconic.IconicChannel.limits = dataclasses.replace(iconic.IconicChannel.limits, requests_per_second=rate,
                                                              burst=max(iconic.IconicChannel.limits.burst, int(rate * 2)))
        limits = iconic.IconicChannel.limits
    return f"{limits.requests_per_second:g} requests/s, burst {limits.burst}"


def apply_rate(db: Any, account_id: int, rate: float | None) -> None:
    """``--rate`` as the account's ``requests_per_second`` setting, where the Iconic channel has that setting."""
    from plugins.iconic.channel import IconicSettings

    if not rate or "requests_per_second" not in IconicSettings().fields:
        return
    from hub.models import ChannelAccount

    with db.session() as session:
        account = session.get(ChannelAccount, account_id)
        account.settings = {**(account.settings or {}), "requests_per_second": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", default="10000,100000", help="comma-separated sizes N (default 10000,100000)")
    parser.add_argument("--changed", default="1,10,100", help="comma-separated percentages P (default 1,10,100)")
    parser.add_argument("--sizes", default="4", help="variants per product set, cycled (default 4; e.g. 3,4,5)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--naive-cap", type=int, default=200, help="naive loop measured on at most this many SKUs")
    parser.add_argument("--rate", type=float, default=None,
                        help="requests/s for The Iconic (default: the channel's own); counts and hub CPU do not depend on it")
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s): 2,000 SKUs, 1%% and 10%%")
    parser.add_argument("--profile", metavar="DIR", help="write a pyinstrument profile of each hub run to DIR")
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.changed, args.naive_cap = "2000", "1,10", 40
    sizes = [int(s) for s in str(args.skus).split(",") if s]
    args.changed = [float(p) if "." in p else int(p) for p in str(args.changed).split(",") if p]
    args.sizes = tuple(int(s) for s in str(args.sizes).split(",") if s)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    import logging

    logging.basicConfig(level=logging.WARNING)
    hub_connector()
    rate = set_rate(args.rate)
    lines = [(f"Database: {args.db}. Iconic sandbox in a child process over loopback HTTP; the channel's rate limit "
             f"({rate}) applies to the hub and to the naive loop alike. Product sets of "
             f"{'/'.join(map(str, args.sizes))} sizes; a changed set has its retail price raised on every size. "
             "Honest minimum for n listings in s sets: ceil(n/100) reads + s price writes + ceil(n/100) stock "
             "writes. All requests add the run's fixed cost (token, 2 reservation reads)."), "",
             ("| SKUs | changed | listings pushed | calls / honest minimum | per endpoint kind (calls / minimum) | "
              "all requests (ratio) | calls per changed SKU | naive calls / minimum | hub CPU | wall | peak RSS | "
              "check | requests |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    summary: list[str] = []
    for count in sizes:
        bench_size(args, count, lines, summary)
    record("listings_sync", "; ".join(summary), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
