"""The embedded runtime: in-process pool, retries, deferrals, locks and the due-flow schedule."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

import tests.runtime_flows  # noqa: F401 - registers the rt-* flows
from hub import defaults, jobs, scheduling
from hub.db import Database
from hub.embedded import EmbeddedRuntime
from hub.errors import NotFound
from hub.jobs import FlowContext, Verdict, create_run, execute_run, register_flow
from hub.locks import LocalLocks
from hub.models import AccountStatus, RunStatus, SyncRun
from hub.runtime import Runtime, make_runtime
from tests.runtime_fixtures import (  # noqa: F401 - sqlite_db, pg_db, pg_url are fixtures
    add_run,
    get_run,
    make_account,
    overlaps,
    pg_db,
    pg_url,
    read_intervals,
    run_events,
    run_items,
    sqlite_db,
)


@pytest.fixture
def runtime(sqlite_db: Database) -> Iterator[EmbeddedRuntime]:
    rt = EmbeddedRuntime(sqlite_db, workers=3, retry_intervals=[0.1, 0.2], busy_delay=0.05)
    rt.start(ticker=False)
    yield rt
    rt.stop()


def test_runs_record_ok_partial_and_failed(runtime: EmbeddedRuntime, sqlite_db: Database) -> None:
    account = make_account(sqlite_db)
    ok = runtime.enqueue(account, "rt-items", params={"items": [["A-1", "ok"], ["A-2", "ok"], ["A-3", "skipped"]]})
    partial = runtime.enqueue(account, "rt-items", params={"items": [["B-1", "ok"], ["B-2", "rejected"]]})
    failed = runtime.enqueue(account, "rt-boom")
    assert runtime.wait_idle(10)

    run = get_run(sqlite_db, ok)
    assert (run.status, run.counts, run.api_calls) == (RunStatus.OK, {"ok": 2, "skipped": 1}, 3)
    assert (run.progress_done, run.progress_total, run.trigger, run.attempt) == (3, 3, "manual", 1)
    assert run.started_at is not None and run.finished_at is not None and run.error is None
    assert run_items(sqlite_db, ok) == [("A-1", "ok"), ("A-2", "ok"), ("A-3", "skipped")]

    run = get_run(sqlite_db, partial)
    assert (run.status, run.counts) == (RunStatus.PARTIAL, {"ok": 1, "rejected": 1})

    run = get_run(sqlite_db, failed)
    assert run.status is RunStatus.FAILED
    assert run.error == "ValueError: boom: the flow has a bug"
    assert run.counts == {"ok": 1}  # what the attempt did before it broke is kept
    [event] = run_events(sqlite_db, failed)
    assert (event.kind, event.level, event.account_id) == ("flow.failed", "error", account)


def test_transient_error_is_retried_and_succeeds(runtime: EmbeddedRuntime, sqlite_db: Database, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    run_id = runtime.enqueue(make_account(sqlite_db), "rt-flaky", params={"succeed_on": 2, "calls": str(calls)})
    assert runtime.wait_idle(10)

    run = get_run(sqlite_db, run_id)
    assert (run.status, run.attempt, run.counts, run.error) == (RunStatus.OK, 2, {"ok": 1}, None)
    times = [float(line.split()[2]) for line in calls.read_text().splitlines()]
    assert len(times) == 2 and times[1] - times[0] >= 0.1  # waited the first backoff interval


def test_transient_error_gives_up_after_the_retries(sqlite_db: Database) -> None:
    rt = EmbeddedRuntime(sqlite_db, workers=1, retries=2, retry_intervals=[0.05])
    rt.start(ticker=False)
    try:
        run_id = rt.enqueue(make_account(sqlite_db), "rt-flaky", params={"succeed_on": 99})
        assert rt.wait_idle(10)
    finally:
        rt.stop()
    run = get_run(sqlite_db, run_id)
    assert (run.status, run.attempt) == (RunStatus.FAILED, 3)
    assert run.error == "gave up after 3 attempts: hub.errors.TransientError: 503 from the channel"
    assert [event.kind for event in run_events(sqlite_db, run_id)] == ["flow.failed"]


def test_auth_error_is_not_retried_and_tells_the_admin(
    runtime: EmbeddedRuntime, sqlite_db: Database, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    account = make_account(sqlite_db)
    run_id = runtime.enqueue(account, "rt-auth", params={"calls": str(calls)})
    assert runtime.wait_idle(10)

    run = get_run(sqlite_db, run_id)
    assert (run.status, run.attempt) == (RunStatus.FAILED, 1)
    assert len(calls.read_text().splitlines()) == 1
    [event] = run_events(sqlite_db, run_id)
    assert (event.kind, event.level, event.account_id) == ("flow.auth_failed", "error", account)
    assert "credentials" in event.message and "401" in event.message


def test_rate_limited_is_deferred_without_spending_a_retry(sqlite_db: Database, tmp_path: Path) -> None:
    # No retries at all: if the deferral spent one, the run would fail.
    rt = EmbeddedRuntime(sqlite_db, workers=1, retries=0)
    rt.start(ticker=False)
    calls = tmp_path / "calls"
    try:
        params = {"marker": str(tmp_path / "limited"), "retry_after": 0.3, "calls": str(calls)}
        run_id = rt.enqueue(make_account(sqlite_db), "rt-ratelimited", params=params)
        assert rt.wait_idle(10)
    finally:
        rt.stop()
    run = get_run(sqlite_db, run_id)
    assert (run.status, run.attempt, run.counts) == (RunStatus.OK, 1, {"ok": 1})
    times = [float(line.split()[2]) for line in calls.read_text().splitlines()]
    assert len(times) == 2 and times[1] - times[0] >= 0.3  # honoured retry_after


def test_rate_limited_run_shows_deferred_while_it_waits(sqlite_db: Database, tmp_path: Path) -> None:
    rt = EmbeddedRuntime(sqlite_db, workers=1)
    rt.start(ticker=False)
    try:
        params = {"marker": str(tmp_path / "limited"), "retry_after": 30}
        run_id = rt.enqueue(make_account(sqlite_db), "rt-ratelimited", params=params)
        for _ in range(100):
            if get_run(sqlite_db, run_id).status is RunStatus.DEFERRED:
                break
            time.sleep(0.05)
        run = get_run(sqlite_db, run_id)
        assert run.status is RunStatus.DEFERRED
        assert "rate limited" in (run.error or "") and run.attempt == 1
    finally:
        rt.stop(timeout=1)


def test_same_account_and_flow_never_overlap(runtime: EmbeddedRuntime, sqlite_db: Database, tmp_path: Path) -> None:
    log = tmp_path / "intervals"
    first, second = make_account(sqlite_db), make_account(sqlite_db)
    params = {"log": str(log), "sleep": 0.2}
    runs = [runtime.enqueue(account, "rt-sleepy", params=params) for account in (first, first, first, second)]
    assert runtime.wait_idle(15)

    assert {get_run(sqlite_db, run_id).status for run_id in runs} == {RunStatus.OK}
    intervals = read_intervals(log)
    assert len(intervals) == 4
    mine = [(start, end) for account, _, start, end in intervals if account == first]
    assert not any(overlaps(a, b) for a, b in itertools.combinations(mine, 2))
    other = [(start, end) for account, _, start, end in intervals if account == second]
    assert any(overlaps(a, b) for a in mine for b in other)  # different accounts do run side by side


def test_unknown_flow_is_refused_before_a_run_is_written(runtime: EmbeddedRuntime, sqlite_db: Database) -> None:
    with pytest.raises(NotFound):
        runtime.enqueue(make_account(sqlite_db), "no-such-flow")
    with sqlite_db.session() as session:
        assert session.query(SyncRun).count() == 0


def test_make_runtime_is_embedded_without_redis(sqlite_db: Database, tmp_path: Path) -> None:
    from hub.config import load_config

    config = load_config({"CHANNELHUB_INSTANCE": str(tmp_path)})
    rt = make_runtime(config, sqlite_db)
    assert isinstance(rt, EmbeddedRuntime) and isinstance(rt, Runtime)
    rt.close()


# -- the schedule --------------------------------------------------------------


def _due_pairs(db: Database, run_ids: list[int]) -> set[tuple[int, str]]:
    with db.session() as session:
        runs = [session.get(SyncRun, run_id) for run_id in run_ids]
        assert all(run is not None and run.trigger == "schedule" and run.status is RunStatus.QUEUED for run in runs)
        return {(run.account_id, run.flow) for run in runs}  # type: ignore[union-attr]


@pytest.fixture
def toggles_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge by the toggle table alone: the real flows' ``applies`` filters need installed plugins."""
    monkeypatch.setattr(scheduling, "registered_flows", dict)


@pytest.mark.usefixtures("toggles_only")
def test_enqueue_due_only_enabled_due_flows_of_testing_and_live_accounts(sqlite_db: Database) -> None:
    now = datetime.now(timezone.utc)
    rt = EmbeddedRuntime(sqlite_db)  # not started: the runs stay queued for inspection
    testing = make_account(sqlite_db, AccountStatus.TESTING, orders_enabled=True)
    make_account(sqlite_db, AccountStatus.SETUP, listings_enabled=True, orders_enabled=True, reconciler_enabled=True)
    make_account(sqlite_db, AccountStatus.PAUSED, listings_enabled=True, orders_enabled=True)
    live = make_account(sqlite_db, AccountStatus.LIVE, listings_enabled=True, schedules={"stock": 60, "catalog": 600})
    add_run(sqlite_db, live, "listings", RunStatus.OK, now - timedelta(minutes=10))  # hourly: not due
    add_run(sqlite_db, live, "stock", RunStatus.OK, now - timedelta(minutes=2))  # every 60 s: due
    add_run(sqlite_db, live, "catalog", RunStatus.RUNNING, now - timedelta(minutes=20))  # due, but still running
    other = make_account(sqlite_db, AccountStatus.LIVE, reconciler_enabled=True, fulfilments_enabled=True)
    add_run(sqlite_db, other, "reconcile", RunStatus.FAILED, now - timedelta(hours=1))  # daily: not due

    run_ids = rt.enqueue_due(now)
    assert _due_pairs(sqlite_db, run_ids) == {
        (testing, "catalog"),
        (testing, "orders"),
        (live, "stock"),
        (other, "catalog"),
        (other, "fulfilment"),
    }
    assert rt.enqueue_due(now + timedelta(minutes=30)) == []  # all of them are still pending

    with sqlite_db.session() as session:
        from hub.models import ChannelAccount

        account = session.get(ChannelAccount, live)
        assert account is not None
        assert abs(rt.next_due(account, "listings") - (now + timedelta(minutes=50))) < timedelta(seconds=1)


@pytest.mark.usefixtures("toggles_only")
def test_stale_pending_runs_are_failed_and_stop_blocking(sqlite_db: Database) -> None:
    now = datetime.now(timezone.utc)
    account = make_account(sqlite_db, AccountStatus.LIVE, orders_enabled=True)
    stale = add_run(
        sqlite_db, account, "orders", RunStatus.RUNNING, now - timedelta(seconds=defaults.RUN_STALE_AFTER + 60)
    )
    run_ids = EmbeddedRuntime(sqlite_db).enqueue_due(now)
    assert (account, "orders") in _due_pairs(sqlite_db, run_ids)
    run = get_run(sqlite_db, stale)
    assert run.status is RunStatus.FAILED and (run.error or "").startswith("abandoned")


def test_a_flow_can_narrow_the_accounts_it_is_scheduled_for(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "FLOW_TOGGLES", {"rt-source": None})
    monkeypatch.setitem(defaults.FLOW_INTERVALS, "rt-source", 60)
    source = make_account(sqlite_db, AccountStatus.TESTING, plugin="src")
    make_account(sqlite_db, AccountStatus.TESTING, plugin="iconic")
    run_ids = EmbeddedRuntime(sqlite_db).enqueue_due()
    assert _due_pairs(sqlite_db, run_ids) == {(source, "rt-source")}


def test_the_ticker_enqueues_and_runs_due_flows(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "FLOW_TOGGLES", {"rt-source": None})
    monkeypatch.setitem(defaults.FLOW_INTERVALS, "rt-source", 3600)
    source = make_account(sqlite_db, AccountStatus.LIVE, plugin="src")
    rt = EmbeddedRuntime(sqlite_db, workers=1, tick_seconds=0.05)
    rt.start()
    try:
        for _ in range(100):
            with sqlite_db.session() as session:
                runs = session.query(SyncRun).filter_by(account_id=source).all()
                if runs and runs[0].status is RunStatus.OK:
                    break
            time.sleep(0.05)
    finally:
        rt.stop()
    assert [(run.flow, run.trigger, run.status) for run in runs] == [("rt-source", "schedule", RunStatus.OK)]


def test_the_tick_promotes_accounts_whose_testing_period_ended(sqlite_db: Database) -> None:
    from hub.models import ChannelAccount

    started = datetime.now(timezone.utc) - timedelta(days=31)
    due = make_account(sqlite_db, AccountStatus.TESTING, testing_started_at=started, testing_days=30)
    young = make_account(sqlite_db, AccountStatus.TESTING, testing_started_at=datetime.now(timezone.utc))
    EmbeddedRuntime(sqlite_db).tick()  # not started: the runs it enqueues just wait
    with sqlite_db.session() as session:
        assert session.get(ChannelAccount, due).status is AccountStatus.LIVE  # type: ignore[union-attr]
        assert session.get(ChannelAccount, young).status is AccountStatus.TESTING  # type: ignore[union-attr]


# -- webhook runs: coalesced, and a short busy delay ------------------------------------------------


def _ids(ctx: FlowContext) -> None:
    """Records each order id of its params, after ``params["sleep"]`` seconds."""
    time.sleep(float(ctx.params.get("sleep", 0)))
    for order_id in ctx.params.get("order_ids", []):
        ctx.item(order_id, "ok")


register_flow("rt-ids", _ids, lane="orders")


@pytest.fixture
def coalesced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "COALESCED_FLOWS", ("rt-ids",))


def test_webhook_runs_of_an_account_join_the_one_still_waiting(sqlite_db: Database, coalesced: None) -> None:
    rt = EmbeddedRuntime(sqlite_db, workers=1)
    account, other = make_account(sqlite_db), make_account(sqlite_db)
    first = rt.enqueue(account, "rt-ids", trigger="webhook", params={"order_ids": ["A"]})
    assert rt.enqueue(account, "rt-ids", trigger="webhook", params={"order_ids": ["B", "A"]}) == first
    separate = [
        rt.enqueue(other, "rt-ids", trigger="webhook", params={"order_ids": ["C"]}),  # another account
        rt.enqueue(account, "rt-ids", params={"order_ids": ["D"]}),  # not a webhook
        rt.enqueue(account, "rt-ids", trigger="webhook", params={"order_ids": ["E"], "sleep": 0.01}),  # other params
    ]
    assert len({first, *separate}) == 4 and rt.pending == 4  # the joined webhook queued nothing
    assert get_run(sqlite_db, first).params == {"order_ids": ["A", "B"]}
    rt.start(ticker=False)
    try:
        assert rt.wait_idle(10)
        assert run_items(sqlite_db, first) == [("A", "ok"), ("B", "ok")]  # the job ran what was merged
        later = rt.enqueue(account, "rt-ids", trigger="webhook", params={"order_ids": ["F"]})
        assert later not in (first, *separate)  # a started run takes nothing more
        assert rt.wait_idle(10) and run_items(sqlite_db, later) == [("F", "ok")]
    finally:
        rt.stop()


def test_a_webhook_run_that_finds_its_flow_busy_tries_again_soon(sqlite_db: Database, coalesced: None) -> None:
    locks, account = LocalLocks(), make_account(sqlite_db)
    assert locks.lock(account, "rt-ids").acquire()
    webhook = create_run(sqlite_db, account, "rt-ids", trigger="webhook", params={"order_ids": ["A"]})
    scheduled = create_run(sqlite_db, account, "rt-ids", trigger="schedule")
    outcome = execute_run(sqlite_db, webhook, locks=locks, retries_left=0)
    assert (outcome.verdict, outcome.delay) == (Verdict.DEFER, defaults.WEBHOOK_BUSY_DELAY)
    assert execute_run(sqlite_db, scheduled, locks=locks, retries_left=0).delay == defaults.LOCK_BUSY_DELAY
    # Deferred for a busy lock, it has not started: the next webhook still joins it.
    assert create_run(sqlite_db, account, "rt-ids", trigger="webhook", params={"order_ids": ["B"]}) == webhook


@pytest.mark.postgres
def test_concurrent_webhooks_lose_no_order_id_while_runs_start(pg_db: Database, coalesced: None) -> None:
    """Webhooks merging into a run race the workers starting it: every id runs exactly once."""
    account = make_account(pg_db)
    rt = EmbeddedRuntime(pg_db, workers=2, busy_delay=0.01)
    rt.start(ticker=False)
    ids = [f"{thread}-{n}" for thread in range(6) for n in range(15)]

    def deliver(thread: int) -> None:
        for n in range(15):
            rt.enqueue(account, "rt-ids", trigger="webhook", params={"order_ids": [f"{thread}-{n}"], "sleep": 0.01})
            time.sleep(0.002)

    try:
        threads = [threading.Thread(target=deliver, args=(thread,)) for thread in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert rt.wait_idle(30)
    finally:
        rt.stop()
    with pg_db.session() as session:
        runs = list(session.scalars(select(SyncRun.id).where(SyncRun.account_id == account)))
    seen = [key for run_id in runs for key, _ in run_items(pg_db, run_id)]
    assert sorted(seen) == sorted(ids)  # none lost, none run twice
    assert len(runs) < len(ids)  # and they did coalesce


def test_a_long_run_yields_its_worker_to_waiting_runs_and_continues(sqlite_db: Database, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "RUN_SLICE_SECONDS", 0.0)  # every step is past the slice
    calls = tmp_path / "calls"
    long_account, other_account = make_account(sqlite_db), make_account(sqlite_db)
    rt = EmbeddedRuntime(sqlite_db, workers=1, busy_delay=0.05)
    first = rt.enqueue(long_account, "rt-sliced", params={"count": 3, "done": str(tmp_path / "done"), "calls": str(calls)})
    waiting = rt.enqueue(other_account, "rt-items", params={"items": [["B-1", "ok"]], "calls": str(calls)})
    rt.start(ticker=False)
    try:
        assert rt.wait_idle(15)
    finally:
        rt.stop()

    with sqlite_db.session() as session:
        sliced = list(session.scalars(select(SyncRun).where(SyncRun.flow == "rt-sliced").order_by(SyncRun.id)))
    assert [run.id for run in sliced][0] == first
    assert [(run.status, run.counts) for run in sliced] == [(RunStatus.OK, {"ok": 1}), (RunStatus.OK, {"ok": 2})]
    assert sliced[1].trigger == sliced[0].trigger
    assert sliced[1].params == {**sliced[0].params, jobs.CONTINUATION: True}
    order = [int(line.split()[0]) for line in calls.read_text().splitlines()]
    assert order == [first, waiting, sliced[1].id]  # the waiting run went in between


def test_a_run_alone_or_a_webhook_run_does_not_yield(sqlite_db: Database, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "RUN_SLICE_SECONDS", 0.0)
    account = make_account(sqlite_db)
    rt = EmbeddedRuntime(sqlite_db, workers=1, busy_delay=0.05)
    alone = rt.enqueue(account, "rt-sliced", params={"count": 3, "done": str(tmp_path / "a")})
    rt.start(ticker=False)
    try:
        assert rt.wait_idle(15)
        hooked = rt.enqueue(account, "rt-sliced", trigger=jobs.WEBHOOK, params={"count": 3, "done": str(tmp_path / "b")})
        rt.enqueue(make_account(sqlite_db), "rt-sleepy", params={"log": str(tmp_path / "log"), "sleep": 0.2})
        assert rt.wait_idle(15)
    finally:
        rt.stop()

    assert get_run(sqlite_db, alone).counts == {"ok": 3}  # nobody waited: no reason to stop
    assert get_run(sqlite_db, hooked).counts == {"ok": 3}
    with sqlite_db.session() as session:
        assert len(list(session.scalars(select(SyncRun).where(SyncRun.flow == "rt-sliced")))) == 2


def test_time_to_yield_waits_for_the_slice_and_survives_a_failing_probe(sqlite_db: Database,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def context(probe: object, trigger: str = "schedule") -> FlowContext:
        return FlowContext(db=sqlite_db, run_id=1, account_id=1, organisation_id=1, flow="rt-sliced", trigger=trigger,
                           attempt=1, params={}, recorder=jobs.RunRecorder(sqlite_db, 1), others_waiting=probe)

    def broken() -> bool:
        raise ConnectionError("redis went away")

    assert not context(lambda: True).time_to_yield()  # inside its slice (RUN_SLICE_SECONDS = 5)
    monkeypatch.setattr(defaults, "RUN_SLICE_SECONDS", 0.0)
    assert context(lambda: True).time_to_yield()
    assert not context(lambda: False).time_to_yield()
    assert not context(None).time_to_yield()
    assert not context(lambda: True, trigger=jobs.WEBHOOK).time_to_yield()
    assert not context(broken).time_to_yield()
