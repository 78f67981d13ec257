"""Adding and running a channel account through the admin pages."""

from __future__ import annotations

from sqlalchemy import select

from hub import notify
from hub.accounts import account_credentials
from hub.app import Hub
from hub.models import AccountStatus, ChannelAccount, Event, Organisation, SyncRun

from .conftest import World


def _account(hub: Hub, name: str) -> ChannelAccount:
    with hub.db.session() as session:
        return session.scalar(select(ChannelAccount).where(ChannelAccount.name == name))


def test_form_is_generated_from_the_plugin_schemas(signed_in, world: World) -> None:
    body = signed_in("admin").get("/accounts/new?plugin=memory").get_data(as_text=True)
    assert 'name="cred-token"' in body and 'type="password"' in body  # token is a secret: never shown back
    assert 'name="set-remote"' in body and 'abbr title="required"' in body


def test_validation_errors_keep_what_was_typed_and_save_nothing(signed_in, hub: Hub, world: World) -> None:
    response = signed_in("admin").post("/accounts/new", {"plugin": "memory", "name": "Shop X", "environment": "sandbox",
                                                         "cred-token": "s3cret-token-value"})
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Missing data for required field" in body and 'value="Shop X"' in body
    assert "s3cret-token-value" not in body  # a secret is never echoed, even back into its own form
    assert _account(hub, "Shop X") is None


def test_add_test_activate_and_go_live_with_confirmation(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    created = admin.post("/accounts/new", {"plugin": "memory", "name": "Shop X", "environment": "sandbox",
                                           "cred-token": "tok-0123456789abcdefXYZ", "set-remote": "shop-x", "submit": "save"})
    assert created.status_code == 302
    account = _account(hub, "Shop X")
    assert account.status == AccountStatus.SETUP
    page = admin.get(f"/accounts/{account.id}").get_data(as_text=True)
    assert "tok-0123456789abcdefXYZ" not in page and "••••" in page
    tested = admin.post(f"/accounts/{account.id}/test").get_data(as_text=True)
    assert "Connected" in tested and "shop-x" in tested
    assert admin.post(f"/accounts/{account.id}/transition", {"action": "activate"}).status_code == 302
    assert _account(hub, "Shop X").status == AccountStatus.TESTING
    unconfirmed = admin.post(f"/accounts/{account.id}/transition", {"action": "go_live"})
    assert "/go-live" in unconfirmed.headers["Location"] and _account(hub, "Shop X").status == AccountStatus.TESTING
    admin.post(f"/accounts/{account.id}/transition", {"action": "go_live", "confirm_name": "wrong"})
    assert _account(hub, "Shop X").status == AccountStatus.TESTING
    admin.post(f"/accounts/{account.id}/transition", {"action": "go_live", "confirm_name": "Shop X"})
    assert _account(hub, "Shop X").status == AccountStatus.LIVE
    refused = admin.post(f"/accounts/{account.id}/transition", {"action": "back_to_setup"}, follow_redirects=True)
    assert "Pause it instead" in refused.get_data(as_text=True)


def test_empty_secret_keeps_the_stored_value(signed_in, hub: Hub, world: World) -> None:
    account_id = world.ids["a"]["account"]
    assert signed_in("admin").post(f"/accounts/{account_id}/credentials", {"cred-token": ""}).status_code == 302
    with hub.db.session() as session:
        assert account_credentials(session.get(ChannelAccount, account_id), hub.box) == {"token": "tok-a-0123456789abcdef"}


def test_flow_rules_are_enforced_with_a_message(signed_in, hub: Hub, world: World) -> None:
    admin, account_id = signed_in("admin"), world.ids["a"]["account"]
    refused = admin.post(f"/accounts/{account_id}/flows", {"flow": "reconciler", "enabled": "on"}, follow_redirects=True)
    assert "Turn Listings on first" in refused.get_data(as_text=True)
    admin.post(f"/accounts/{account_id}/flows", {"flow": "listings", "enabled": "on"})
    assert _account(hub, "Memory A").listings_enabled


def test_hub_settings_validate_and_refuse_other_organisations_ids(signed_in, hub: Hub, world: World) -> None:
    admin, account_id = signed_in("admin"), world.ids["a"]["account"]
    bad = admin.post(f"/accounts/{account_id}/hub-settings", {"hub-label_id": world.ids["b"]["label"], "hub-reserve_stock": "-1"})
    assert bad.status_code == 400
    ok = admin.post(f"/accounts/{account_id}/hub-settings", {"hub-label_id": world.ids["a"]["label"], "hub-reserve_stock": "2",
                                                             "hub-brand_filter": "Acme, Other"})
    assert ok.status_code == 302
    account = _account(hub, "Memory A")
    assert (account.label_id, account.reserve_stock, account.brand_filter) == (world.ids["a"]["label"], 2, ["Acme", "Other"])


def test_run_now_queues_a_manual_run(signed_in, hub: Hub, world: World) -> None:
    response = signed_in("operator").post(f"/accounts/{world.ids['a']['account']}/run", {"flow": "listings"})
    assert response.status_code == 302 and "/runs/" in response.headers["Location"]
    with hub.db.session() as session:
        run = session.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
        assert (run.flow, run.trigger, run.status.value) == ("listings", "manual", "queued")


def test_catalogue_labels_csv_report_and_bulk_assign(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    report = admin.post("/catalogue/labels/import", {"csv": "sku,label\nDRESS-a-10,Iconic\nNOPE,Iconic\nDRESS-a-8,Missing\n"})
    body = report.get_data(as_text=True)
    assert report.status_code == 200 and "1 added" in body and "2 row(s) refused" in body
    assert "<td>3</td>" in body and "<td>4</td>" in body  # each refused row named by its line
    bulk = admin.post("/catalogue/labels/assign", {"label_id": world.ids["a"]["label"], "variant_id": world.ids["a"]["variant"], "remove": "1"})
    assert bulk.status_code == 302
    page = admin.get(f"/catalogue/products/{world.ids['a']['product']}").get_data(as_text=True)
    assert "E026 missing colour" in page  # the marketplace's reason for the rejection


def test_order_actions_queue_flows_and_cancel_needs_a_reason(signed_in, hub: Hub, world: World) -> None:
    operator, order_id = signed_in("operator"), world.ids["a"]["order"]
    page = operator.get(f"/orders/{order_id}").get_data(as_text=True)
    assert "order.imported" in page and "Sydney" in page
    operator.post(f"/orders/{order_id}/action", {"action": "retry_routing"})
    refused = operator.post(f"/orders/{order_id}/action", {"action": "cancel"}, follow_redirects=True)
    assert "Give a reason" in refused.get_data(as_text=True)
    with hub.db.session() as session:
        runs = session.scalars(select(SyncRun).where(SyncRun.flow == "orders")).all()
        assert len(runs) == 1
        assert session.scalar(select(Event).where(Event.kind == "order.retry_routing_requested")) is not None


def test_users_cannot_lock_themselves_out(signed_in, world: World) -> None:
    admin = signed_in("admin")
    response = admin.post(f"/users/{world.ids['a']['user_admin']}", {"role": "viewer", "active": "on"}, follow_redirects=True)
    assert "cannot demote or deactivate yourself" in response.get_data(as_text=True)


def test_notifications_keep_the_stored_password(signed_in, hub: Hub, world: World) -> None:
    admin = signed_in("admin")
    form = {"host": "smtp.example", "port": "587", "security": "starttls", "from_address": "hub@brand.example",
            "username": "hub", "password": "smtp-password-123456", "recipients": "ops@brand.example", "enabled": "on"}
    assert admin.post("/settings/notifications", form).status_code == 302
    assert admin.post("/settings/notifications", {**form, "password": ""}).status_code == 302
    page = admin.get("/settings/notifications").get_data(as_text=True)
    assert "smtp-password-123456" not in page and "••••" in page
    with hub.db.session() as session:  # still there, encrypted, after a save with an empty password field
        settings = notify.smtp_settings(session.get(Organisation, world.ids["a"]["organisation"]))
        assert notify.smtp_password(settings, hub.box) == "smtp-password-123456"
    bad = admin.post("/settings/notifications", {**form, "from_address": "not-an-address"})
    assert bad.status_code == 400 and 'value="smtp.example"' in bad.get_data(as_text=True)


def test_retry_repeats_the_runs_work_but_not_an_admins_confirmation(signed_in, hub: Hub, world: World) -> None:
    from hub.models import RunStatus

    account_id = world.ids["a"]["account"]
    with hub.db.session() as session:
        failed = SyncRun(organisation_id=world.ids["a"]["organisation"], account_id=account_id, flow="reconcile",
                         status=RunStatus.FAILED, params={"skus": ["DRESS-a-10"], "confirm_removals": True,
                                                          "actor": "boss@a.example"})
        session.add(failed)
        session.flush()
        failed_id = failed.id
    response = signed_in("operator").post(f"/runs/{failed_id}/retry", {})
    assert response.status_code == 302
    with hub.db.session() as session:
        again = session.scalars(select(SyncRun).order_by(SyncRun.id.desc())).first()
        assert again.id != failed_id and again.flow == "reconcile"
        assert again.params == {"skus": ["DRESS-a-10"]}
