"""What every benchmark shares: sandboxes served over loopback in a child process, a throw-away
database (a fresh PostgreSQL schema, or a SQLite file), memory and CPU meters, and RESULTS.md.

Sandboxes run in a **separate process** so their CPU and memory are not counted as the hub's: the
hub's CPU is the bench process's own ``process_time`` and its peak RSS is the bench process's
``VmHWM`` (reset between phases through ``/proc/self/clear_refs``).
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "RESULTS.md"
POSTGRES_URL = os.environ.get("CHANNELHUB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CHANNELHUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


# -- meters ------------------------------------------------------------------------------------------


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last reset, in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every live process: pid -> (parent pid, command name, CPU seconds of it and its reaped children)."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # fields[1] is the parent; utime, stime, cutime, cstime are fields 14-17 of stat(5)
        found[int(entry.name)] = (int(fields[1]), name, sum(int(v) for v in fields[11:15]) / tick)
    return found


def tree_cpu_seconds(roots: list[int] | None = None, *, command: str | None = None) -> float:
    """CPU seconds used so far by the ``roots`` (or every process named ``command`` whose parent is
    not) and all their descendants. A child that exited counts in its parent's reaped-children
    time, so the difference of two readings is what the tree did between them, work horses forked
    and gone included. Linux only (0.0 without /proc)."""
    if not Path("/proc").is_dir():
        return 0.0
    processes = _processes()
    if command is not None:
        roots = [pid for pid, (parent, name, _) in processes.items()
                 if name == command and processes.get(parent, (0, "", 0.0))[1] != command]
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0.0, [pid for pid in roots or [] if pid in processes]
    while stack:
        pid = stack.pop()
        total += processes[pid][2]
        stack.extend(children.get(pid, []))
    return total


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    peak_rss_mb: float = 0.0


@contextmanager
def measured() -> Iterator[Measure]:
    """Wall time, this process's CPU time (all threads) and peak RSS of the block."""
    result = Measure()
    reset_peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.wall = time.perf_counter() - wall
        result.cpu = time.process_time() - cpu
        result.peak_rss_mb = peak_rss_mb()


# -- RESULTS.md --------------------------------------------------------------------------------------


def machine() -> str:
    memory = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{platform.node() or 'host'} ({os.cpu_count()} cores{memory}, Python {platform.python_version()})"


def loop_seconds(steps: int = 20_000_000) -> float:
    """Seconds a fixed pure-Python loop takes now: how fast the host's cores are at the time of a
    run (on shared hosts the same machine has given 1.1 s and 3.5 s in one day), so figures
    recorded at different times can be read side by side."""
    started, total = time.perf_counter(), 0
    for step in range(steps):
        total += step
    return time.perf_counter() - started


_LOOP_AT_START = loop_seconds()  # read as the bench starts, before its own load


def commit() -> str:
    """The short commit, with "+ uncommitted changes" when code (not documentation) differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":(exclude,glob)**/*.md"], cwd=REPO, capture_output=True, text=True,
                                 timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes" if changed else head


def record(bench: str, summary: str, lines: list[str]) -> None:
    """Print the figures and append them to bench/RESULTS.md with date, machine and commit."""
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = (f"## {bench} — {stamp} — commit {commit()} — {machine()} — 20M-step loop "
              f"{_LOOP_AT_START:.1f} s at the start, {loop_seconds():.1f} s at the end")
    block = "\n".join([header, "", f"`{' '.join(sys.argv)}`", "", *lines, "", f"**Summary:** {summary}", "", ""])
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in `bench/` (see bench/README.md).\n\n")
    with RESULTS.open("a") as handle:
        handle.write(block)
    print("\n".join(lines))
    print(f"SUMMARY {bench}: {summary}")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


# -- sandboxes in a child process --------------------------------------------------------------------


class _Counting:
    """WSGI wrapper of a sandbox: counts (method, path) and answer status, beside FaultMiddleware."""

    def __init__(self, app: Any) -> None:
        import threading

        self.app = app
        self.calls: Counter = Counter()
        self.statuses: Counter = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_control"):
            return self.app(environ, start_response)

        def counting_start(status: str, headers: list, exc_info: Any = None) -> Any:
            with self.lock:
                self.statuses[status.split(" ", 1)[0]] += 1
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        with self.lock:
            self.calls[(environ.get("REQUEST_METHOD", "GET"), path)] += 1
        return self.app(environ, counting_start)


class SandboxProcess:
    """One sandbox WSGI app served over loopback HTTP by a child process (a ``SandboxGroup`` of one).

    ``factory`` builds the app in the child; ``call(fn, *args)`` runs ``fn(app, *args)`` there
    (seeding, reading state); ``calls()`` gives requests per (method, path) and answers per status.
    """

    NAME = "sandbox"

    def __init__(self, factory: Callable[[], Any], *, quiet: bool = True) -> None:
        self._group = SandboxGroup(lambda: {self.NAME: factory()}, quiet=quiet)
        self.process = self._group.process
        self.url: str = self._group.urls[self.NAME]

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return self._group.call(self.NAME, function, *args)

    def calls(self) -> tuple[Counter, Counter]:
        return self._group.calls()[self.NAME]

    def reset(self) -> None:
        self._group.reset()

    def stop(self) -> None:
        self._group.stop()


# -- a throw-away database -----------------------------------------------------------------------------


@contextmanager
def bench_database(backend: str, folder: Path) -> Iterator[Any]:
    """A migrated, empty database: a fresh PostgreSQL schema (dropped afterwards) or a SQLite file."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from hub.db import Database

    if backend == "sqlite":
        db = Database(f"sqlite:///{folder / 'bench.db'}")
        db.create_all()
        try:
            yield db
        finally:
            db.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    db = Database(url.render_as_string(hide_password=False))
    try:
        db.create_all()
        yield db
    finally:
        db.dispose()
        with admin.begin() as connection:
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def insert_rows(db: Any, table: Any, rows: list[dict[str, Any]], chunk: int = 5000) -> None:
    """Bulk insert with Core (executemany), in chunks."""
    with db.engine.begin() as connection:
        for start in range(0, len(rows), chunk):
            connection.execute(table.insert(), rows[start : start + chunk])


def hub_connector() -> Any:
    """A process connector with a fresh credential key and the installed plugins."""
    from cryptography.fernet import Fernet

    from hub.connections import Connector, set_connector
    from hub.plugins import get_plugin_manager
    from hub.secrets import CredentialBox

    connector = Connector(box=CredentialBox(Fernet.generate_key()), pm=get_plugin_manager())
    set_connector(connector)
    return connector


def fmt_rss(mb: float) -> str:
    return f"{mb:.0f} MB"


# -- The Iconic: a listed catalogue in step with its sandbox (stock_sync, listings_sync) ---------------

ICONIC_CREDENTIALS = {"application_id": "sandbox-app", "application_secret": "sandbox-secret-0000"}
VARIANTS_PER_PRODUCT = 4
PRODUCT_ID0, SET_ID0 = 1_000_000, 5_000_000


def make_iconic() -> Any:
    """The Iconic sandbox app (runs in the child)."""
    from plugins.iconic.sandbox import create_app

    return create_app(seed=1, first_id=9_000_000)


def seed_iconic(app: Any, rows: list[tuple[str, str, int, int, int]]) -> int:
    """(sku, parent sku, product id, set id, quantity) -> products already listed and approved (in the child)."""
    state = app.state
    now = time.time()
    stamp = "2026-01-01T00:00:00+00:00"
    for sku, parent, product_id, set_id, quantity in rows:
        if set_id not in state.product_sets:
            state.product_sets[set_id] = {
                "id": set_id, "name": f"Product {parent}", "sellerSku": sku, "parentSku": parent, "brandId": 1,
                "primaryCategoryId": 11, "description": "", "attributes": {}, "createdAt": stamp, "updatedAt": stamp}
        state.products[product_id] = {
            "id": product_id, "uuid": f"prod-{product_id}", "sellerSku": sku, "shopSku": f"S{product_id}",
            "srcId": str(product_id), "productSetId": set_id, "approvalStatus": "approved", "status": "active",
            "variation": "M", "productIdentifier": "", "name": f"Product {parent}", "price": 49.95,
            "salePrice": None, "saleStartDate": None, "saleEndDate": None, "quantity": quantity,
            "fulfilledByVenture": False, "createdAt": stamp, "updatedAt": stamp, "_createdAt": now}
    return len(state.products)


def iconic_quantities(app: Any, ids: list[int]) -> list[int]:
    return [app.state.products[i]["quantity"] for i in ids]


def quantity_of(index: int) -> int:
    return 3 + index % 17


def product_layout(count: int, sizes: tuple[int, ...] = (VARIANTS_PER_PRODUCT,)) -> list[int]:
    """Product index of each of ``count`` variants: products take ``sizes`` variants in turn (4, or 3, 5, ...)."""
    layout: list[int] = []
    product = 0
    while len(layout) < count:
        layout.extend([product] * sizes[product % len(sizes)])
        product += 1
    return layout[:count]


def seed_hub(db: Any, url: str, count: int, layout: list[int] | None = None) -> tuple[int, list[tuple[int, str, int]]]:
    """N variants listed on an Iconic account, in step. Returns (account id, [(variant id, sku, product id)]).

    Variant ``i`` (id ``i + 1``, SKU ``SKU-{i:07d}``) belongs to product ``layout[i]`` (default: 4 sizes each).
    """
    from hub import accounts
    from hub.bindings import LISTING
    from hub.connections import get_connector
    from hub.flows.stock import STOCK
    from hub.models import (
        Binding,
        Label,
        LabelAssignment,
        Organisation,
        Product,
        StockLevel,
        Variant,
    )

    layout = layout if layout is not None else product_layout(count)
    with db.session() as session:
        organisation = Organisation(name="Bench brand", slug=f"bench-{time.time_ns()}")
        session.add(organisation)
        session.flush()
        label = Label(organisation_id=organisation.id, name="Iconic")
        session.add(label)
        session.flush()
        account = accounts.create_account(session, organisation.id, "Iconic AU", "iconic", "sandbox", ICONIC_CREDENTIALS,
                                          {}, get_connector().box, "bench")
        account.base_url = url
        accounts.activate(session, account, "bench")
        account.listings_enabled = True
        account.label_id = label.id
        org_id, label_id, account_id = organisation.id, label.id, account.id

    products = [{"id": p + 1, "organisation_id": org_id, "parent_sku": f"P{p:06d}", "title": f"Product P{p:06d}",
                 "description": "Soft organic cotton.", "brand": "Brand 1", "category": "Women > Tops > Tees",
                 "gender": "female", "season": "SS25", "tags": [], "images": [], "attributes": {}, "active": True}
                for p in range(layout[-1] + 1 if layout else 0)]
    insert_rows(db, Product.__table__, products)
    variants, levels, assignments, bindings, listed = [], [], [], [], []
    for i in range(count):
        vid, sku = i + 1, f"SKU-{i:07d}"
        variants.append({"id": vid, "organisation_id": org_id, "product_id": layout[i] + 1, "sku": sku,
                         "barcode": f"93{i:011d}", "size": "SML"[i % 3], "colour": "Black", "price_retail": 49.95,
                         "price_msrp": 59.95, "price_wholesale": 20, "active": True, "duplicate": False,
                         "attributes": {}})
        levels.append({"variant_id": vid, "location": "SYD", "available": quantity_of(i),
                       "available_from_stock": quantity_of(i), "on_hand": quantity_of(i)})
        assignments.append({"label_id": label_id, "variant_id": vid, "source": "manual"})
        product_id = PRODUCT_ID0 + i
        bindings.append({"account_id": account_id, "kind": LISTING, "internal_id": str(vid),
                         "external_id": str(product_id), "fingerprint": "seeded"})
        bindings.append({"account_id": account_id, "kind": STOCK, "internal_id": str(vid), "external_id": sku,
                         "fingerprint": str(quantity_of(i))})
        listed.append((vid, sku, product_id))
    for table, rows in ((Variant.__table__, variants), (StockLevel.__table__, levels),
                        (LabelAssignment.__table__, assignments), (Binding.__table__, bindings)):
        insert_rows(db, table, rows)
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with db.engine.begin() as connection:
            for table in ("products", "variants", "stock_levels", "label_assignments", "bindings"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT coalesce(max(id), 1) FROM {table}))"))
            connection.execute(text("ANALYZE"))
    return account_id, listed


def seed_listed_catalogue(db: Any, sandbox: SandboxProcess, count: int,
                          layout: list[int] | None = None) -> tuple[int, list[tuple[int, str, int]]]:
    """``seed_hub`` and the same N products, listed and approved, in the Iconic sandbox (one set per product)."""
    layout = layout if layout is not None else product_layout(count)
    account_id, listed = seed_hub(db, sandbox.url, count, layout)
    sandbox.call(seed_iconic, [(sku, f"P{layout[vid - 1]:06d}", pid, SET_ID0 + layout[vid - 1], quantity_of(vid - 1))
                               for vid, sku, pid in listed])
    return account_id, listed


def run_flow(db: Any, account_id: int, flow: str, params: dict[str, Any] | None = None) -> Any:
    """Run ``flow`` once for the account, in this process (no lock contention, no retries): the SyncRun."""
    from hub.jobs import create_run, execute_run
    from hub.locks import LocalLocks
    from hub.models import SyncRun

    run_id = create_run(db, account_id, flow, trigger="manual")
    execute_run(db, run_id, locks=LocalLocks(), retries_left=0, params=params or {})
    with db.session() as session:
        return session.get(SyncRun, run_id)


def take_calls(sandbox: SandboxProcess) -> Counter:
    """Requests per (method, path) the sandbox received since the last call; resets the count."""
    calls, _ = sandbox.calls()
    sandbox.reset()
    return calls


def profile_to(path: Path | None):  # type: ignore[no-untyped-def]
    """A pyinstrument profile of the block written to ``path`` (nothing when ``path`` is None)."""
    if path is None:
        from contextlib import nullcontext

        return nullcontext()
    from pyinstrument import Profiler

    class _Profile:
        def __enter__(self) -> None:
            self.profiler = Profiler(interval=0.001)
            self.profiler.start()

        def __exit__(self, *exc: object) -> None:
            self.profiler.stop()
            path.write_text(self.profiler.output_text(unicode=True, color=False, show_all=False))
            print(f"profile written to {path}")

    return _Profile()


# -- sandboxes in a child process ----------------------------------------------------------------------


def _group_child(conn: Any, factory: Callable[[], dict[str, Any]], quiet: bool) -> None:
    import logging

    from hub.memory import freeze_startup_objects
    from hub.sandbox import serve

    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
    apps = factory()
    counting = {name: _Counting(app) for name, app in apps.items()}
    freeze_startup_objects()  # the simulated services' garbage collection is no part of the hub's work
    served = {}
    for name, app in apps.items():
        if hasattr(app, "served"):
            app.served = True
        served[name] = serve(counting[name])
    conn.send({name: s.url for name, s in served.items()})
    while True:
        try:
            command, args = conn.recv()
        except EOFError:
            break
        if command == "stop":
            break
        try:
            if command == "calls":
                result = {}
                for name, wrapper in counting.items():
                    with wrapper.lock:
                        result[name] = (dict(wrapper.calls), dict(wrapper.statuses))
                conn.send(("ok", result))
            elif command == "reset":
                for wrapper in counting.values():
                    with wrapper.lock:
                        wrapper.calls.clear()
                        wrapper.statuses.clear()
                conn.send(("ok", None))
            elif command == "call":
                name, function, payload = args
                conn.send(("ok", function(apps[name], *payload)))
            else:
                conn.send(("error", f"unknown command {command}"))
        except Exception as error:  # noqa: BLE001 - reported to the parent
            conn.send(("error", f"{type(error).__name__}: {error}"))
    for s in served.values():
        s.stop()


class SandboxGroup:
    """Several sandbox WSGI apps (``factory() -> {name: app}``) served over loopback by ONE child
    process, each on its own port: ``urls[name]``; ``call(name, fn, *args)`` runs ``fn(app, *args)``
    in the child; ``calls()`` gives ``{name: (requests per (method, path), answers per status)}``."""

    def __init__(self, factory: Callable[[], dict[str, Any]], *, quiet: bool = True) -> None:
        context = multiprocessing.get_context("fork")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_group_child, args=(child, factory, quiet), daemon=True)
        self.process.start()
        self.urls: dict[str, str] = self._conn.recv()

    def _ask(self, command: str, args: Any = None) -> Any:
        self._conn.send((command, args))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"sandbox group {command}: {value}")
        return value

    def call(self, name: str, function: Callable[..., Any], *args: Any) -> Any:
        return self._ask("call", (name, function, args))

    def calls(self) -> dict[str, tuple[Counter, Counter]]:
        return {name: (Counter(c), Counter(s)) for name, (c, s) in self._ask("calls").items()}

    def reset(self) -> None:
        """Forget the requests counted so far."""
        self._ask("reset")

    def stop(self) -> None:
        try:
            self._conn.send(("stop", None))
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (share 0.5 = p50, 0.95 = p95); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-share * len(ordered) // 1))))
    return ordered[rank - 1]
