"""Benchmark 1: the stock flow against The Iconic's sandbox over loopback HTTP.

    .venv/bin/python bench/stock_sync.py --skus 10000,100000 --changed 1,10,100
    .venv/bin/python bench/stock_sync.py --quick

For each size N: seed N listed variants in the hub (catalogue, label, listing and stock bindings all
in step with the sandbox), then

1. run the stock flow with nothing changed: the **planning cost** (hub CPU for N unchanged SKUs);
2. for each P: change the available stock of P% of the variants at the source, run the stock flow,
   and count the requests the Iconic sandbox received: stock writes (``PUT /v2/stock/product``)
   against the minimum ``ceil(changed / 100)``, and every request (token, reservation reads) too;
3. the same P% through a **naive per-SKU loop** (one ``PUT`` of one row per changed SKU, through the
   same HTTP client, rate limiter and token): ``changed`` calls. It is measured on up to
   ``--naive-cap`` SKUs and its wall time and CPU are scaled to ``changed`` (marked "scaled").

The sandbox runs in a child process: hub CPU is this process's CPU, sandbox excluded. With
PostgreSQL the database server's CPU is not the hub's either (with ``--db sqlite`` it is included).
"""

from __future__ import annotations

import argparse
import math
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
    iconic_quantities,
    make_iconic,
    measured,
    profile_to,
    quantity_of,
    ratio,
    record,
    run_flow,
    seed_listed_catalogue,
    take_calls,
)

WRITE = ("PUT", "/v2/stock/product")


# -- the hub side ----------------------------------------------------------------------------------------


def change_stock(db: Any, variant_ids: list[int]) -> None:
    """The source's available stock of these variants goes up by one (as a catalogue import writes it)."""
    from sqlalchemy import bindparam, update

    from hub.models import StockLevel

    statement = (update(StockLevel).where(StockLevel.variant_id == bindparam("vid"))
                 .values(available=StockLevel.available + 1))
    with db.engine.begin() as connection:
        for start in range(0, len(variant_ids), 5000):
            connection.execute(statement.execution_options(synchronize_session=False),
                               [{"vid": vid} for vid in variant_ids[start : start + 5000]])


def run_stock(db: Any, account_id: int) -> Any:
    return run_flow(db, account_id, "stock")


def naive_loop(db: Any, account_id: int, targets: list[tuple[int, str, int]]) -> None:
    """A simple connector: for each changed SKU, read its stock and PUT it alone (one call per SKU)."""
    from sqlalchemy import func, select

    from hub.connections import open_channel
    from hub.models import ChannelAccount, StockLevel

    with db.session() as session:
        channel = open_channel(session.get(ChannelAccount, account_id))
    for variant_id, _sku, product_id in targets:
        with db.engine.connect() as connection:
            quantity = connection.execute(select(func.sum(StockLevel.available))
                                          .where(StockLevel.variant_id == variant_id)).scalar() or 0
        channel.client.put("/v2/stock/product", [{"productId": product_id, "quantity": int(quantity)}])


def calls_between(sandbox: SandboxProcess) -> tuple[int, int, dict]:
    calls = take_calls(sandbox)
    return calls.get(WRITE, 0), sum(calls.values()), dict(calls)


def bench_size(args: argparse.Namespace, count: int, lines: list[str], summary: list[str]) -> dict[str, Any]:
    from hub.jobs import load_builtin_flows

    load_builtin_flows()
    sandbox = SandboxProcess(make_iconic)
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as folder, bench_database(args.db, Path(folder)) as db:
            started = time.perf_counter()
            account_id, listed = seed_listed_catalogue(db, sandbox, count)
            print(f"[{count}] seeded in {time.perf_counter() - started:.1f}s", flush=True)
            sandbox.reset()

            profile_dir = Path(args.profile) if args.profile else None
            with profile_to(profile_dir / f"stock-plan-{count}.txt" if profile_dir else None), measured() as plan:
                run = run_stock(db, account_id)
            writes, total, _ = calls_between(sandbox)
            figures["plan_cpu"] = plan.cpu
            lines.append(f"| {count:,} | 0% (unchanged) | 0 | {writes} / 0 | {total} | — | {plan.cpu:.2f} s "
                         f"({plan.cpu / count * 1e6:.1f} µs/SKU) | {plan.wall:.2f} s | {fmt_rss(plan.peak_rss_mb)} | "
                         f"run {run.status.value} | — |")
            summary.append(f"{count // 1000}k unchanged: {plan.cpu:.2f}s CPU ({plan.cpu / count * 1e6:.1f}µs/SKU)")

            bumped: dict[int, int] = {}  # variant id -> units added at the source so far
            for percent in args.changed:
                changed = max(1, round(count * percent / 100))
                step = count / changed
                chosen = [listed[int(k * step)] for k in range(changed)]
                change_stock(db, [vid for vid, _, _ in chosen])
                for vid, _, _ in chosen:
                    bumped[vid] = bumped.get(vid, 0) + 1
                minimum = math.ceil(changed / 100)
                name = f"stock-{count}-{percent}.txt"
                with profile_to(profile_dir / name if profile_dir else None), measured() as hub:
                    run = run_stock(db, account_id)
                writes, total, detail = calls_between(sandbox)
                # the sandbox now shows the new quantities?
                sample = chosen[:: max(1, len(chosen) // 50)]
                shown = sandbox.call(iconic_quantities, [pid for _, _, pid in sample])
                right = all(q == quantity_of(vid - 1) + bumped[vid] for (vid, _, _), q in zip(sample, shown))
                assert run.status.value == "ok", f"stock run {run.status.value}: {run.error}"

                naive_n = min(changed, args.naive_cap)
                with measured() as naive:
                    naive_loop(db, account_id, chosen[:naive_n])
                n_writes, n_total, _ = calls_between(sandbox)
                scale = changed / naive_n
                naive_wall, naive_cpu = naive.wall * scale, naive.cpu * scale
                scaled = "" if naive_n == changed else f" (measured on {naive_n}, scaled)"
                lines.append(
                    f"| {count:,} | {percent}% | {changed:,} | {writes} / {minimum} = **{ratio(writes, minimum)}** | "
                    f"{total} ({ratio(total, minimum)}) | naive {changed:,} / {minimum} = {ratio(changed, minimum)} | "
                    f"hub {hub.cpu:.2f} s ({hub.cpu / changed * 1e6:.0f} µs/changed SKU); naive {naive_cpu:.2f} s{scaled} | "
                    f"hub {hub.wall:.2f} s; naive {naive_wall:.1f} s{scaled} | {fmt_rss(hub.peak_rss_mb)} | "
                    f"quantities {'right' if right else 'WRONG'} | {', '.join(f'{m} {p}: {n}' for (m, p), n in sorted(detail.items()))} |")
                assert n_writes == naive_n and n_total >= naive_n
                summary.append(f"{count // 1000}k@{percent}%: calls/min {ratio(writes, minimum)} "
                               f"(all requests {ratio(total, minimum)}; naive {ratio(changed, minimum)}), "
                               f"wall {hub.wall:.1f}s vs naive {naive_wall:.0f}s")
                print(lines[-1], flush=True)
    finally:
        sandbox.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", default="10000,100000", help="comma-separated sizes N (default 10000,100000)")
    parser.add_argument("--changed", default="1,10,100", help="comma-separated percentages P (default 1,10,100)")
    parser.add_argument("--db", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--naive-cap", type=int, default=200, help="naive loop measured on at most this many SKUs")
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s): 2,000 SKUs, 1%% and 10%%")
    parser.add_argument("--profile", metavar="DIR", help="write a pyinstrument profile of each hub run to DIR")
    args = parser.parse_args(argv)
    if args.quick:
        args.skus, args.changed, args.naive_cap = "2000", "1,10", 40
    sizes = [int(s) for s in str(args.skus).split(",") if s]
    args.changed = [float(p) if "." in p else int(p) for p in str(args.changed).split(",") if p]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    import logging

    logging.basicConfig(level=logging.WARNING)
    hub_connector()
    from plugins.iconic.channel import DEFAULT_REQUESTS_PER_SECOND

    lines = [f"Database: {args.db}. Iconic sandbox in a child process over loopback HTTP; the account's rate limit "
             f"({DEFAULT_REQUESTS_PER_SECOND:g} requests/s) applies to the hub and to the naive loop alike.", "",
             "| SKUs | changed | SKUs pushed | stock writes / minimum | all requests (ratio) | naive calls / minimum | "
             "hub CPU | wall | peak RSS | check | requests |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary: list[str] = []
    for count in sizes:
        bench_size(args, count, lines, summary)
    record("stock_sync", "; ".join(summary), lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
