"""Inbound webhooks: verified by the channel, answered fast, queued once per delivery, refusals logged."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from hub.app import Hub
from hub.models import Event, SyncRun

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
