"""The one job API: flows, their run records, and the job body both executors run.

A *flow* is a function ``func(ctx: FlowContext) -> None`` registered under a name with
``register_flow``. Every execution of a flow is a ``SyncRun`` row, created ``queued`` by the runtime
before anything is queued, so the job itself carries nothing but the run id (never credentials).

``execute_run`` is the job body shared by the embedded pool and the RQ worker: it loads the run,
takes the per-(account, flow) lock, runs the flow, records counts, progress and the outcome, and
turns the error vocabulary of ``hub.errors`` into a verdict the executor acts on:

==================  ==========================================================================
raised              verdict
==================  ==========================================================================
nothing             DONE: ok, or partial when any item was rejected/failed
TransientError      RETRY (attempt + 1) while retries are left, else DONE failed
RateLimited         DEFER by ``retry_after``; spends no retry
LockBusy / busy     DEFER by the busy delay; the flow never runs twice at once
AuthError           DONE failed, no retry, an error event telling the admin to fix credentials
anything else       DONE failed, the traceback's last line in ``error``, an error event
==================  ==========================================================================
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import pkgutil
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from hub import defaults
from hub.db import Database
from hub.errors import AuthError, LockBusy, NotFound, RateLimited, TransientError
from hub.events import emit
from hub.locks import LockProvider
from hub.models import ChannelAccount, RunStatus, SyncRun, SyncRunItem, utcnow

log = logging.getLogger("channelhub.jobs")

FlowFunc = Callable[["FlowContext"], None]
ProgressSink = Callable[[int, int | None], None]

ITEM_OUTCOMES = ("ok", "rejected", "skipped", "failed")
# An item outcome that makes the run partial rather than ok.
PROBLEM_OUTCOMES = ("rejected", "failed")
TERMINAL = (RunStatus.OK, RunStatus.PARTIAL, RunStatus.FAILED)
PENDING = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.DEFERRED)
WEBHOOK = "webhook"  # the trigger of runs an inbound webhook queued
# The param a continuation run carries (FlowContext.continue_later): the flow picks up its queued work
# and skips what the yielding run already did (pulling the channel again).
CONTINUATION = "continuation"
# Flows whose webhook runs merge into one waiting run per account (see ``_coalesce``).
COALESCED_FLOWS = ("orders",)


# -- the flow registry -------------------------------------------------------


@dataclass(frozen=True)
class FlowSpec:
    name: str
    func: FlowFunc
    lane: str
    # Optional scheduling filter: enqueue_due skips accounts it returns False for (e.g. catalog only
    # for SOURCE channels). Manual enqueues are not filtered.
    applies: Callable[[ChannelAccount], bool] | None = None


_flows: dict[str, FlowSpec] = {}
_flows_guard = threading.Lock()
_builtins_loaded = False
# module -> why it failed to import; named when a flow it should have registered is missing.
_import_errors: dict[str, str] = {}


def register_flow(
    name: str,
    func: FlowFunc,
    lane: str | None = None,
    *,
    applies: Callable[[ChannelAccount], bool] | None = None,
) -> FlowSpec:
    """Make ``func`` runnable as flow ``name`` on ``lane`` (default: ``FLOW_LANES[name]``)."""
    lane = lane or defaults.FLOW_LANES.get(name)
    if lane not in defaults.LANES:
        raise ValueError(f"flow {name!r} needs a lane, one of {', '.join(defaults.LANES)} (got {lane!r})")
    spec = FlowSpec(name=name, func=func, lane=lane, applies=applies)
    with _flows_guard:
        existing = _flows.get(name)
        if existing is not None and not _same_function(existing.func, func):
            raise ValueError(f"flow {name!r} is already registered by {_describe(existing.func)}")
        _flows[name] = spec
    return spec


def unregister_flow(name: str) -> None:
    with _flows_guard:
        _flows.pop(name, None)


def get_flow(name: str) -> FlowSpec:
    """The registered flow, loading ``hub.flows`` on a miss; ``NotFound`` if nobody registered it."""
    spec = _flows.get(name)
    if spec is None:
        load_builtin_flows()
        spec = _flows.get(name)
    if spec is None:
        broken = "; ".join(f"{module} failed to import: {error}" for module, error in _import_errors.items())
        raise NotFound(f"no flow named {name!r} is registered" + (f" ({broken})" if broken else ""))
    return spec


def registered_flows() -> dict[str, FlowSpec]:
    with _flows_guard:
        return dict(_flows)


def lane_for(flow: str) -> str:
    """The lane a flow's jobs go to: the registered one, else the default table."""
    spec = _flows.get(flow)
    if spec is not None:
        return spec.lane
    if flow in defaults.FLOW_LANES:
        return defaults.FLOW_LANES[flow]
    return get_flow(flow).lane


def load_builtin_flows() -> None:
    """Import every module of ``hub.flows`` once; each registers its flow when imported."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True  # set first: a flow module importing hub.jobs must not recurse
    try:
        package = importlib.import_module("hub.flows")
    except ModuleNotFoundError:
        return
    for module in pkgutil.iter_modules(package.__path__, prefix="hub.flows."):
        try:
            importlib.import_module(module.name)
        except Exception as exc:  # one broken flow must not stop the others from running
            _import_errors[module.name] = _last_line(exc)
            log.exception("flow module %s failed to import", module.name)


def _same_function(a: FlowFunc, b: FlowFunc) -> bool:
    # The same source function imported under two module names (tests.x vs x) is the same flow.
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    if a is b:
        return True
    return (
        code_a is not None
        and code_b is not None
        and a.__qualname__ == b.__qualname__
        and code_a.co_filename == code_b.co_filename
    )


def _describe(func: FlowFunc) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


# -- what a flow sees --------------------------------------------------------


class RunRecorder:
    """Buffers a run's item outcomes, counts, API calls and progress, and writes them in batches.

    Flows report per item; writing a transaction per SKU would make the run log the bottleneck, so
    items go out every ``ITEM_FLUSH_BATCH`` rows and progress at most every ``PROGRESS_FLUSH_SECONDS``.
    """

    def __init__(self, db: Database, run_id: int, on_progress: ProgressSink | None = None) -> None:
        self.db = db
        self.run_id = run_id
        self.on_progress = on_progress
        self.counts: dict[str, int] = {}
        self.done = 0
        self.total: int | None = None
        self._items: list[tuple[str, str, str | None, str]] = []  # (key, outcome, field, message) per SyncRunItem
        self._api_calls = 0
        self._last_flush = 0.0
        self._guard = threading.Lock()  # a flow may fan out over threads

    def item(self, key: str, outcome: str, message: str = "", field: str | None = None) -> None:
        if outcome not in ITEM_OUTCOMES:
            raise ValueError(f"item outcome must be one of {', '.join(ITEM_OUTCOMES)}, not {outcome!r}")
        with self._guard:
            self._items.append((str(key)[:200], outcome, field, message))
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
            full = len(self._items) >= defaults.ITEM_FLUSH_BATCH
        if full:
            self.flush()

    def items(self, rows: Iterable[tuple[str, str, str, str | None]]) -> None:
        """``item(key, outcome, message, field)`` for each row: a flow reporting a whole import at its
        end, written ``ITEM_BULK_BATCH`` rows per flush (one call and one lock per row were the cost)."""
        batch: list[tuple[str, str, str | None, str]] = []
        try:
            for key, outcome, message, field in rows:
                if outcome not in ITEM_OUTCOMES:
                    raise ValueError(f"item outcome must be one of {', '.join(ITEM_OUTCOMES)}, not {outcome!r}")
                batch.append((str(key)[:200], outcome, field, message))
                if len(batch) >= defaults.ITEM_BULK_BATCH:
                    self._add(batch)
                    batch = []
                    self.flush()
        finally:
            if batch:
                self._add(batch)
        with self._guard:
            full = len(self._items) >= defaults.ITEM_FLUSH_BATCH
        if full:
            self.flush()

    def _add(self, batch: list[tuple[str, str, str | None, str]]) -> None:
        with self._guard:
            self._items.extend(batch)
            counts = self.counts
            for _, outcome, _, _ in batch:
                counts[outcome] = counts.get(outcome, 0) + 1

    def progress(self, done: int, total: int | None = None) -> None:
        with self._guard:
            self.done = done
            if total is not None:
                self.total = total
            finished = self.total is not None and done >= self.total
            due = finished or time.monotonic() - self._last_flush >= defaults.PROGRESS_FLUSH_SECONDS
        if due:
            self.flush()

    def add_api_calls(self, n: int) -> None:
        with self._guard:
            self._api_calls += n

    @property
    def has_problems(self) -> bool:
        return any(self.counts.get(outcome) for outcome in PROBLEM_OUTCOMES)

    def flush(self) -> None:
        """Write what was buffered to the run row (and the progress sink)."""
        with self._guard:
            items, self._items = self._items, []
            api_calls, self._api_calls = self._api_calls, 0
            counts, done, total = dict(self.counts), self.done, self.total
            self._last_flush = time.monotonic()
        with self.db.session() as session:
            # Core, not ORM objects: a run of 100k SKUs spent more time in the unit of work than in the flow.
            written = session.execute(
                update(SyncRun).where(SyncRun.id == self.run_id)
                .values(counts=counts, api_calls=func.coalesce(SyncRun.api_calls, 0) + api_calls,
                        progress_done=done, progress_total=total)
                .execution_options(synchronize_session=False)
            )
            if written.rowcount == 0:
                return  # the run is gone
            if items:
                self._insert_items(session, items)
        if self.on_progress is not None:
            try:
                self.on_progress(done, total)
            except Exception:  # progress display must never fail the sync it reports on
                log.warning("could not publish progress of run %s", self.run_id, exc_info=True)

    def _insert_items(self, session: Session, items: list[tuple[str, str, str | None, str]]) -> None:
        """PostgreSQL gets the rows as one JSON document, in order (psycopg's executemany costs the
        hub tens of µs a row); other databases an executemany."""
        table = SyncRunItem.__table__
        if session.get_bind().dialect.name != "postgresql":
            session.execute(insert(table), [{"run_id": self.run_id, "key": key, "outcome": outcome, "field": field,
                                             "message": message} for key, outcome, field, message in items])
            return
        source = text("SELECT CAST(:run_id AS INTEGER), r->>0, r->>1, r->>2, r->>3 "
                      "FROM json_array_elements(CAST(:rows AS json)) WITH ORDINALITY AS t(r, n) ORDER BY n")
        source = source.bindparams(run_id=self.run_id, rows=json.dumps(items)).columns(
            table.c.run_id, table.c.key, table.c.outcome, table.c.field, table.c.message)
        session.execute(insert(table).from_select(["run_id", "key", "outcome", "field", "message"], source))


@dataclass
class FlowContext:
    """Everything a flow gets: the database, which account and run, its parameters, and the recorder."""

    db: Database
    run_id: int
    account_id: int | None
    organisation_id: int
    flow: str
    trigger: str
    attempt: int
    params: dict[str, Any]
    recorder: RunRecorder = field(repr=False)
    # Does other work wait for a worker? The executor's answer (None: never yield).
    others_waiting: WaitingProbe | None = field(default=None, repr=False)
    started: float = field(default_factory=time.monotonic, repr=False)
    continues_later: bool = False  # set by continue_later()
    queued_at: datetime | None = None  # when the run was queued (None: not known)

    def time_to_yield(self) -> bool:
        """True once the run has had its slice (``RUN_SLICE_SECONDS``) and other runs wait for a worker.

        A flow asks at safe points (after a batch is recorded); on True it calls ``continue_later()``
        and returns. The run ends ok and a continuation goes to the back of the queue, so one long
        write-back or backlog holds a worker for a slice, not for minutes, while other accounts wait.
        Webhook runs never yield: they are one customer's orders, and short.
        """
        if self.others_waiting is None or self.trigger == WEBHOOK:
            return False
        if time.monotonic() - self.started < defaults.RUN_SLICE_SECONDS:
            return False
        try:
            return bool(self.others_waiting())
        except Exception:  # a probe that fails (Redis hiccup) must not stop the flow: keep going
            log.warning("could not tell whether other runs wait; run %s goes on", self.run_id, exc_info=True)
            return False

    def continue_later(self) -> None:
        """The flow stopped at a safe point with work left: queue the same flow again when this run ends."""
        self.continues_later = True

    def item(self, key: str, outcome: str, message: str = "", field: str | None = None) -> None:
        """Record one SKU/order outcome: ok | rejected | skipped | failed."""
        self.recorder.item(key, outcome, message, field)

    def progress(self, done: int, total: int | None = None) -> None:
        """Report how far the flow is (``total`` may come later, once it is known)."""
        self.recorder.progress(done, total)

    def add_api_calls(self, n: int = 1) -> None:
        self.recorder.add_api_calls(n)

    @property
    def is_continuation(self) -> bool:
        """This run continues one that yielded (``continue_later``): its pull was that run's."""
        return bool(self.params.get(CONTINUATION))

    def pull_is_due(self, interval: timedelta) -> bool:
        """Should a flow that pulls on a schedule (every ``interval``) pull in this run?

        Yes, unless the run is a continuation that started within ``interval`` of being queued: it
        finishes what its run pulled. One that waited longer stands in for a scheduled run: the
        schedule queues no run of a flow while one is pending, so without its pull the channel would
        go unread until it ends and the next scheduled run has queued and waited in turn.
        """
        if not self.is_continuation:
            return True
        if self.queued_at is None:
            return False
        return datetime.now(timezone.utc) - self.queued_at >= interval

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.recorder.counts)


# -- follow-up work ------------------------------------------------------------
# A flow sometimes starts another (an imported order pushes stock to the other marketplaces now).
# The executor running this process's jobs registers its ``enqueue`` here; flows reach it through
# ``enqueuer()`` without knowing which runtime they are in.

EnqueueFn = Callable[..., int]
WaitingProbe = Callable[[], bool]
_enqueuer: EnqueueFn | None = None


def set_enqueuer(enqueue: EnqueueFn | None) -> None:
    global _enqueuer
    _enqueuer = enqueue


def clear_enqueuer(enqueue: EnqueueFn) -> None:
    """Forget ``enqueue`` if it is still the registered one (a stopped runtime)."""
    global _enqueuer
    if _enqueuer == enqueue:
        _enqueuer = None


def enqueuer() -> EnqueueFn | None:
    """The running executor's ``enqueue(account_id, flow, trigger=, params=)``, or None."""
    return _enqueuer


# -- creating runs -----------------------------------------------------------


def create_run(
    db: Database,
    account_id: int,
    flow: str,
    *,
    trigger: str = "manual",
    job_id: Callable[[int], str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> int:
    """Insert the run row, status queued, and return its id; ``job_id`` names the executor's job."""
    return open_run(db, account_id, flow, trigger=trigger, job_id=job_id, params=params)[0]


def open_run(
    db: Database,
    account_id: int,
    flow: str,
    *,
    trigger: str = "manual",
    job_id: Callable[[int], str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """``create_run`` for executors: (run id, True) for a new run they must queue, or (id, False)
    when a webhook-triggered orders run joined the account's webhook run still waiting to start."""
    if trigger == WEBHOOK and flow in COALESCED_FLOWS:
        joined = _coalesce(db, account_id, flow, dict(params or {}))
        if joined is not None:
            return joined, False
    return _insert_run(db, account_id, flow, trigger=trigger, job_id=job_id, params=params), True


def _insert_run(
    db: Database,
    account_id: int,
    flow: str,
    *,
    trigger: str,
    job_id: Callable[[int], str] | None,
    params: Mapping[str, Any] | None,
) -> int:
    with db.session() as session:
        account = session.get(ChannelAccount, account_id)
        if account is None:
            raise NotFound(f"no channel account {account_id}")
        run = SyncRun(
            organisation_id=account.organisation_id,
            account_id=account.id,
            flow=flow,
            trigger=trigger,
            status=RunStatus.QUEUED,
            queued_at=utcnow(),
            params=dict(params or {}),
        )
        session.add(run)
        session.flush()
        if job_id is not None:
            run.job_id = job_id(run.id)
        return run.id


def _coalesce(db: Database, account_id: int, flow: str, params: dict[str, Any]) -> int | None:
    """Merge ``params["order_ids"]`` into the account's newest webhook run that has not started.

    The candidate row is locked first with an UPDATE whose WHERE repeats the "not started" test
    (PostgreSQL re-checks it after waiting for the row; SQLite takes its write lock), and ``_start``
    marks a run running with an UPDATE before it reads the params: so either the merge lands before
    the run reads its params, or the run has started and the merge finds nothing and a new run is
    written. Two webhooks merging at once take turns on the row lock; neither loses its ids.
    """
    ids = [str(order_id) for order_id in params.get("order_ids") or []]
    if not ids:
        return None  # an untargeted webhook run (a full pull) is its own run
    waiting = (SyncRun.account_id == account_id, SyncRun.flow == flow, SyncRun.trigger == WEBHOOK,
               SyncRun.status.in_((RunStatus.QUEUED, RunStatus.DEFERRED)), SyncRun.started_at.is_(None))
    with db.session() as session:
        run_id = session.scalar(select(SyncRun.id).where(*waiting).order_by(SyncRun.id.desc()).limit(1))
        if run_id is None:
            return None
        held = session.execute(update(SyncRun).where(SyncRun.id == run_id, *waiting).values(id=SyncRun.id)
                               .execution_options(synchronize_session=False))
        if held.rowcount != 1:
            return None  # started (or finished) since we looked: this webhook gets a run of its own
        stored = dict(session.scalar(select(SyncRun.params).where(SyncRun.id == run_id)) or {})
        merged = list(dict.fromkeys([*(str(i) for i in stored.get("order_ids") or []), *ids]))
        if (not stored.get("order_ids") or _other_params(stored) != _other_params(params)
                or len(merged) > defaults.WEBHOOK_COALESCE_MAX_IDS):
            return None
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(params={**stored, "order_ids": merged})
                        .execution_options(synchronize_session=False))
    log.info("webhook order(s) %s joined waiting run %s", ", ".join(ids), run_id)
    return run_id


def _other_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key != "order_ids"}


def _effective_params(stored: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The params a run executes with: the executor's copy, plus order ids webhooks merged into the row."""
    chosen = dict(given) if given is not None else dict(stored)
    if given is not None and stored.get("order_ids"):
        chosen["order_ids"] = list(dict.fromkeys([*(given.get("order_ids") or []), *stored["order_ids"]]))
    return chosen


def fail_run(db: Database, run_id: int, message: str) -> None:
    """Mark a run failed from outside a job (e.g. it could not be queued at all)."""
    with db.session() as session:
        run = session.get(SyncRun, run_id)
        if run is not None and run.status not in TERMINAL:
            _set_outcome(session, run_id, RunStatus.FAILED, message)


# -- running one ----------------------------------------------------------------


class Verdict(str, enum.Enum):
    DONE = "done"  # finished (ok / partial / failed): nothing more to do
    RETRY = "retry"  # TransientError with retries left: run again after the backoff
    DEFER = "defer"  # rate limited or busy: run again after ``delay``, no retry spent
    SKIP = "skip"  # the run is gone or already finished (a duplicate delivery)


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    status: RunStatus | None = None
    delay: float = 0.0
    error: BaseException | None = None
    continues_later: bool = False  # the flow yielded its worker with work left (FlowContext.continue_later)


@dataclass(frozen=True)
class _RunView:
    """The columns of a run the job needs, read once, so no ORM object outlives its session."""

    id: int
    organisation_id: int
    account_id: int | None
    flow: str
    trigger: str
    status: RunStatus
    attempt: int
    params: dict[str, Any]
    queued_at: datetime | None = None


def execute_run(
    db: Database,
    run_id: int,
    *,
    locks: LockProvider,
    retries_left: int,
    busy_delay: float | None = None,
    params: Mapping[str, Any] | None = None,
    on_progress: ProgressSink | None = None,
    others_waiting: WaitingProbe | None = None,
) -> Outcome:
    """Run one attempt of a SyncRun and record the result; the executor acts on the verdict.

    ``others_waiting`` tells a long flow whether to yield its worker (``FlowContext.time_to_yield``)."""
    busy = defaults.LOCK_BUSY_DELAY if busy_delay is None else busy_delay
    view = _load(db, run_id)
    if view is None:
        log.warning("run %s does not exist; dropping its job", run_id)
        return Outcome(Verdict.SKIP)
    if view.trigger == WEBHOOK:
        busy = min(busy, defaults.WEBHOOK_BUSY_DELAY)  # someone waits for this one order
    if view.status in TERMINAL:
        # RQ may deliver a job again after a worker crash; a finished run stays finished.
        log.info("run %s is already %s; not running it again", run_id, view.status.value)
        return Outcome(Verdict.SKIP, view.status)
    try:
        spec = get_flow(view.flow)
    except NotFound as exc:
        return _fail(db, view, exc, kind="flow.failed", message=str(exc))
    lock = locks.lock(view.account_id, view.flow)
    if not lock.acquire():
        return _defer(db, view, busy, "waiting: this flow is already running for this account")
    try:
        outcome = _run_locked(db, view, spec, retries_left, busy, params, on_progress, others_waiting)
    finally:
        lock.release()
    if outcome.continues_later:
        _continue(db, view)  # after the lock is free, so the continuation never finds its flow busy
    return outcome


def _run_locked(
    db: Database,
    view: _RunView,
    spec: FlowSpec,
    retries_left: int,
    busy: float,
    given: Mapping[str, Any] | None,
    on_progress: ProgressSink | None,
    others_waiting: WaitingProbe | None = None,
) -> Outcome:
    params = _effective_params(_start(db, view.id), given)
    recorder = RunRecorder(db, view.id, on_progress)
    ctx = FlowContext(
        db=db,
        run_id=view.id,
        account_id=view.account_id,
        organisation_id=view.organisation_id,
        flow=view.flow,
        trigger=view.trigger,
        attempt=view.attempt,
        params=params,
        recorder=recorder,
        others_waiting=others_waiting,
        queued_at=view.queued_at,
    )
    try:
        spec.func(ctx)
    except BaseException as exc:
        recorder.flush()  # keep what the attempt did record: it explains the failure
        return _on_error(db, view, exc, retries_left, busy)
    recorder.flush()
    status = RunStatus.PARTIAL if recorder.has_problems else RunStatus.OK
    _finish(db, view.id, status, error=None)
    return Outcome(Verdict.DONE, status, continues_later=ctx.continues_later)


def _continue(db: Database, view: _RunView) -> None:
    """Queue the rest of a run that yielded, unless a run of the same flow already waits (it will do it)."""
    enqueue = enqueuer()
    if enqueue is None or view.account_id is None:
        return  # no executor in this process: the schedule picks the rest up
    with db.session() as session:
        waiting = session.scalar(select(SyncRun.id).where(
            SyncRun.account_id == view.account_id, SyncRun.flow == view.flow, SyncRun.id != view.id,
            SyncRun.status.in_((RunStatus.QUEUED, RunStatus.DEFERRED))).limit(1))
    if waiting is not None:
        return
    try:
        enqueue(view.account_id, view.flow, trigger=view.trigger, params={**view.params, CONTINUATION: True})
    except Exception:  # the schedule picks the rest up; the run itself went well
        log.warning("could not queue the rest of run %s (%s)", view.id, view.flow, exc_info=True)


def _on_error(db: Database, view: _RunView, exc: BaseException, retries_left: int, busy: float) -> Outcome:
    if isinstance(exc, TransientError):
        if retries_left > 0:
            return _retry(db, view, exc)
        message = f"gave up after {view.attempt} attempts: {_last_line(exc)}"
        return _fail(db, view, exc, kind="flow.failed", message=message)
    if isinstance(exc, RateLimited):
        return _defer(db, view, max(float(exc.retry_after), 0.0), f"rate limited by the channel: {exc}")
    if isinstance(exc, LockBusy):
        return _defer(db, view, busy, f"waiting: {exc}")
    if isinstance(exc, AuthError):
        message = f"the channel refused the account's credentials ({exc}); fix them on the account page, then run again"
        return _fail(db, view, exc, kind="flow.auth_failed", message=message)
    if not isinstance(exc, Exception):  # worker shutdown, KeyboardInterrupt: record, then let it through
        _finish(db, view.id, RunStatus.FAILED, error=f"interrupted: {type(exc).__name__}")
        raise exc
    return _fail(db, view, exc, kind="flow.failed", message=_last_line(exc))


def _load(db: Database, run_id: int) -> _RunView | None:
    with db.session() as session:
        run = session.get(SyncRun, run_id)
        if run is None:
            return None
        return _RunView(
            id=run.id,
            organisation_id=run.organisation_id,
            account_id=run.account_id,
            flow=run.flow,
            trigger=run.trigger,
            status=RunStatus(run.status),
            attempt=run.attempt or 1,
            params=dict(run.params or {}),
            queued_at=run.queued_at,
        )


def _start(db: Database, run_id: int) -> dict[str, Any]:
    """Mark the run running and return its stored params.

    Counts and items describe the latest attempt: a retried flow starts over (bindings make that
    safe), so the earlier attempt's items would only double-count. API calls accumulate: they were
    real calls against the channel's rate budget. The status is written (locking the row) *before*
    the params are read, so a webhook merging order ids into this run (``_coalesce``) either lands
    first and is read here, or sees the run started and queues a run of its own.
    """
    with db.session() as session:
        session.execute(update(SyncRun).where(SyncRun.id == run_id).values(
            status=RunStatus.RUNNING, started_at=utcnow(), finished_at=None, error=None, counts={},
            progress_done=0, progress_total=None).execution_options(synchronize_session=False))
        session.execute(delete(SyncRunItem).where(SyncRunItem.run_id == run_id))
        stored = session.scalar(select(SyncRun.params).where(SyncRun.id == run_id))
        return dict(stored or {})


def _finish(db: Database, run_id: int, status: RunStatus, *, error: str | None) -> None:
    with db.session() as session:
        _set_outcome(session, run_id, status, error)


def _retry(db: Database, view: _RunView, exc: BaseException) -> Outcome:
    with db.session() as session:
        run = session.get(SyncRun, view.id)
        assert run is not None
        run.status = RunStatus.QUEUED
        run.attempt = view.attempt + 1
        run.error = f"attempt {view.attempt} failed, retrying: {_last_line(exc)}"
    log.info("run %s (%s) attempt %s failed, will retry: %s", view.id, view.flow, view.attempt, exc)
    return Outcome(Verdict.RETRY, RunStatus.QUEUED, error=exc)


def _defer(db: Database, view: _RunView, delay: float, reason: str) -> Outcome:
    with db.session() as session:
        run = session.get(SyncRun, view.id)
        if run is not None:
            run.status = RunStatus.DEFERRED
            run.error = f"{reason} (again in {delay:g}s)"
    return Outcome(Verdict.DEFER, RunStatus.DEFERRED, delay=delay)


def _fail(db: Database, view: _RunView, exc: BaseException, *, kind: str, message: str) -> Outcome:
    log.warning("run %s (%s) failed: %s", view.id, view.flow, message)
    try:
        # The outcome and its event commit together, so whoever sees the failed run sees why.
        with db.session() as session:
            _set_outcome(session, view.id, RunStatus.FAILED, message)
            emit(
                session,
                organisation_id=view.organisation_id,
                account_id=view.account_id,
                run_id=view.id,
                kind=kind,
                level="error",
                message=f"{view.flow} failed: {message}",
                data={"flow": view.flow, "attempt": view.attempt, "error": type(exc).__name__},
            )
    except Exception:
        # Writing the event failed: the run's outcome must still be recorded.
        log.exception("could not write the %s event of run %s", kind, view.id)
        _finish(db, view.id, RunStatus.FAILED, error=message)
    return Outcome(Verdict.DONE, RunStatus.FAILED, error=exc)


def _set_outcome(session: Session, run_id: int, status: RunStatus, error: str | None) -> None:
    run = session.get(SyncRun, run_id)
    if run is not None:
        run.status = status
        run.error = error
        run.finished_at = utcnow()


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(type(exc), exc)[-1].strip()
