"""Inbound webhooks: verified by the channel, answered fast, queued once per delivery, refusals logged."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from hub.app import Hub
from hub.models import Binding, Event, SyncRun
from web import services
from web.webhooks import DELIVERY

from .conftest import World


def test_verified_webhook_queues_a_targeted_run_once(app: Flask, world: World, hub: Hub) -> None:
    client, account_id = app.test_client(), world.ids["a"]["account"]
    first = client.post(f"/webhooks/{account_id}/s3cret", data=b'{"event":"order"}', headers={"X-Delivery": "d-1"})
    assert first.status_code == 202
    again = client.post(f"/webhooks/{account_id}/s3cret", data=b'{"event":"order"}', headers={"X-Delivery": "d-1"})
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    with hub.db.session() as session:
        runs = session.scalars(select(SyncRun).where(SyncRun.trigger == "webhook")).all()
        assert [(run.id, run.flow) for run in runs] == [(first.get_json()["run_id"], "orders")]


def test_bad_secret_is_refused_and_logged(app: Flask, world: World, hub: Hub) -> None:
    response = app.test_client().post(f"/webhooks/{world.ids['a']['account']}/wrong", data=b"{}")
    assert response.status_code == 401
    with hub.db.session() as session:
        event = session.scalar(select(Event).where(Event.kind == "webhook.rejected"))
        assert event.level == "warning" and event.organisation_id == world.ids["a"]["organisation"]
        assert session.scalar(select(SyncRun).where(SyncRun.trigger == "webhook")) is None


def test_unknown_account_is_not_found(app: Flask, world: World) -> None:
    assert app.test_client().post("/webhooks/9999/s3cret", data=b"{}").status_code == 404


def test_a_repeat_arriving_while_the_first_delivery_is_being_recorded_is_a_duplicate(
    app: Flask, world: World, hub: Hub
) -> None:
    account_id = world.ids["a"]["account"]
    in_flight, answers = threading.Event(), {}

    def hold_the_first_insert(session: Session, _context: object) -> None:
        # The first delivery's row is inserted but not committed while the repeat comes in.
        if not in_flight.is_set() and any(isinstance(row, Binding) and row.kind == DELIVERY for row in session.new):
            in_flight.set()
            time.sleep(0.5)

    def post(name: str) -> None:
        response = app.test_client().post(f"/webhooks/{account_id}/s3cret", data=b"{}", headers={"X-Delivery": "d-9"})
        answers[name] = (response.status_code, response.get_json()["status"])

    event.listen(Session, "after_flush", hold_the_first_insert)
    try:
        first = threading.Thread(target=post, args=("first",))
        first.start()
        assert in_flight.wait(10)
        post("repeat")
        first.join(10)
    finally:
        event.remove(Session, "after_flush", hold_the_first_insert)
    assert answers == {"first": (202, "queued"), "repeat": (200, "duplicate")}
    with hub.db.session() as session:
        assert len(session.scalars(select(SyncRun).where(SyncRun.trigger == "webhook")).all()) == 1
        assert session.scalar(select(Event).where(Event.kind == "webhook.duplicate")) is not None


def test_a_delivery_that_could_not_be_queued_is_taken_again(
    app: Flask, world: World, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    account_id, client = world.ids["a"]["account"], app.test_client()

    def refuse(*_args: object, **_kwargs: object) -> int:
        raise RuntimeError("queue unavailable")

    monkeypatch.setattr(services, "enqueue", refuse)
    with pytest.raises(RuntimeError):  # the test app lets it through; a server answers 500, so the sender retries
        client.post(f"/webhooks/{account_id}/s3cret", data=b"{}", headers={"X-Delivery": "d-7"})
    monkeypatch.undo()
    again = client.post(f"/webhooks/{account_id}/s3cret", data=b"{}", headers={"X-Delivery": "d-7"})
    assert again.status_code == 202 and again.get_json()["status"] == "queued"
