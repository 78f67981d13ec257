"""The Uphance client: the three-step login, token renewal, paging and error mapping."""

from __future__ import annotations

import httpx
import pytest

from hub.errors import AuthError, ContractError, RejectedItem, TransientError
from plugins.uphance.client import RENEW_MARGIN_SECONDS


def auth_calls(app):
    return [app.calls[("POST", "/oauth/token")], app.calls[("GET", "/organisations")],
            app.calls[("POST", "/organisations/set_current_org")]]


def test_login_takes_three_steps_and_selects_the_configured_organisation(channel, sandbox):
    assert channel.client.organisation == {"id": 9579, "name": "Harbour Lane Pty Ltd"}
    assert auth_calls(sandbox) == [1, 1, 1]
    token = next(iter(sandbox.state.tokens.values()))
    assert token.organisation_id == 9579  # the organisation is tied to the token server-side


def test_a_login_with_several_organisations_needs_organisation_id(make_channel, sandbox):
    channel = make_channel(organisation_id=None)
    with pytest.raises(AuthError, match=r"set organisation_id to one of: 9579 \(Harbour Lane Pty Ltd\), 9580"):
        channel.client.organisation


def test_an_organisation_the_login_cannot_see_is_refused(make_channel):
    with pytest.raises(AuthError, match="organisation_id 1234 is not visible"):
        make_channel(organisation_id=1234).client.organisation


def test_a_wrong_password_is_an_auth_error_with_uphance_reason(make_channel):
    channel = make_channel(credentials={"email": "admin@harbourlane.example", "password": "nope"})
    with pytest.raises(AuthError, match="refused the password grant: The provided authorization grant is invalid"):
        channel.test_connection()


def test_the_other_organisation_sees_its_own_records(make_channel):
    assert list(make_channel(organisation_id=9580).client.products()) == []


def test_the_token_is_renewed_by_refresh_grant_before_it_expires(channel, sandbox, clock):
    channel.client.get("/seasons")
    first = next(iter(sandbox.state.tokens))
    clock.now += 604800 - RENEW_MARGIN_SECONDS + 1  # inside the renewal margin, not yet expired
    channel.client.get("/seasons")
    assert auth_calls(sandbox) == [2, 1, 2]  # refresh grant + set_current_org again; no new password login
    assert first not in sandbox.state.tokens  # the old token was replaced
    assert next(iter(sandbox.state.tokens.values())).organisation_id == 9579


def test_a_refused_refresh_token_falls_back_to_a_password_login(channel, sandbox, clock):
    channel.client.get("/seasons")
    sandbox.state.refresh_tokens.clear()
    clock.now += 604800
    assert channel.client.get("/seasons")["seasons"]
    assert auth_calls(sandbox) == [3, 2, 2]  # refused refresh, then password, organisations, selection


def test_a_401_on_a_live_looking_token_renews_and_replays_once(channel, sandbox):
    channel.client.get("/seasons")
    for token in sandbox.state.tokens.values():
        token.expires_in = 0  # revoked early, as an admin resetting the password would do
    assert channel.client.get("/seasons")["seasons"]
    assert sandbox.calls[("GET", "/seasons")] == 3  # the 401, then the replay


def test_runs_in_one_process_share_the_login_until_it_is_due_for_renewal(make_channel, sandbox, clock):
    network = httpx.WSGITransport(app=sandbox)  # one process's network: the runs' channels share it
    first, second = make_channel(transport=network), make_channel(transport=network)
    first.client.get("/seasons")
    assert second.client.get("/seasons")["seasons"]
    assert auth_calls(sandbox) == [1, 1, 1]  # the second run did not log in again
    assert second.client.organisations == first.client.organisations  # what the login saw comes along
    other_organisation = make_channel(transport=network, organisation_id=9580)
    assert list(other_organisation.client.products()) == []  # its own token: the organisation is tied to it
    assert auth_calls(sandbox) == [2, 2, 2]
    clock.now += 604800 - RENEW_MARGIN_SECONDS + 1  # the shared session is due for renewal
    first.client.get("/seasons")  # renews it by the refresh grant...
    make_channel(transport=network).client.get("/seasons")  # ...and the next run starts with the renewed one
    assert auth_calls(sandbox) == [3, 2, 3]


def test_a_shared_session_refused_with_401_is_renewed_once_for_every_run(make_channel, sandbox):
    network = httpx.WSGITransport(app=sandbox)
    first, second = make_channel(transport=network), make_channel(transport=network)
    first.client.get("/seasons")
    for token in sandbox.state.tokens.values():
        token.expires_in = 0  # revoked early
    assert first.client.get("/seasons")["seasons"]  # 401, renewed, replayed
    assert second.client.get("/seasons")["seasons"]  # starts with the renewed session: no 401
    assert sandbox.calls[("GET", "/seasons")] == 4
    assert auth_calls(sandbox) == [2, 1, 2]


def test_a_run_refused_with_a_session_another_run_already_renewed_takes_the_renewed_one(make_channel, sandbox):
    network = httpx.WSGITransport(app=sandbox)
    first, second = make_channel(transport=network), make_channel(transport=network)
    first.client.get("/seasons")
    second.client.get("/seasons")  # both hold the same session
    for token in sandbox.state.tokens.values():
        token.expires_in = 0  # revoked early
    assert first.client.get("/seasons")["seasons"]  # 401, renewed by the refresh grant, replayed
    assert second.client.get("/seasons")["seasons"]  # 401, then the renewed session: no second renewal
    assert auth_calls(sandbox) == [2, 1, 2]  # the refresh token had rotated: renewing again would fail
    assert sandbox.calls[("GET", "/seasons")] == 6


def test_a_sandbox_never_sees_a_session_another_sandbox_issued(make_channel, sandbox):
    make_channel().client.get("/seasons")
    make_channel().client.get("/seasons")  # a transport of its own: as if another sandbox
    assert auth_calls(sandbox) == [2, 2, 2]


def test_another_password_never_borrows_the_session(make_channel, sandbox):
    network = httpx.WSGITransport(app=sandbox)
    make_channel(transport=network).client.get("/seasons")
    stranger = make_channel(transport=network, credentials={"email": "admin@harbourlane.example", "password": "nope"})
    with pytest.raises(AuthError, match="refused the password grant"):
        stranger.client.get("/seasons")


def test_paging_follows_meta_next_page_to_the_end(make_sandbox, make_channel):
    app = make_sandbox(products=250)
    products = list(make_channel(app).client.products())
    assert len(products) == 250 and len({p["id"] for p in products}) == 250
    assert app.calls[("GET", "/products")] == 3  # ceil(250 / 100)


def _mock_channel(make_channel, handler):
    return make_channel(transport=httpx.MockTransport(handler))


def _auth_ok(request):
    if request.url.path == "/oauth/token":
        return httpx.Response(200, json={"access_token": "tok-abcdef", "token_type": "Bearer", "expires_in": 604800,
                                         "refresh_token": "ref-abcdef", "created_at": 1_780_000_000})
    if request.url.path == "/organisations":
        return httpx.Response(200, json={"organisations": [{"id": 9579, "name": "HL"}]})
    if request.url.path == "/organisations/set_current_org":
        return httpx.Response(201, json={"Status": "Updated"})
    return None


def test_a_next_page_that_does_not_move_forward_is_a_contract_error(make_channel):
    def handler(request):
        return _auth_ok(request) or httpx.Response(200, json={"products": [], "meta": {"next_page": 1}})

    with pytest.raises(ContractError, match="does not move forward"):
        list(_mock_channel(make_channel, handler).client.products())


def test_a_page_without_meta_is_a_contract_error(make_channel):
    def handler(request):
        return _auth_ok(request) or httpx.Response(200, json={"products": []})

    with pytest.raises(ContractError, match="expected 'products' and 'meta'"):
        list(_mock_channel(make_channel, handler).client.products())


def test_an_unconfirmed_organisation_selection_is_a_contract_error(make_channel):
    def handler(request):
        if request.url.path == "/organisations/set_current_org":
            return httpx.Response(200, json={"Status": "Nope"})
        return _auth_ok(request)

    with pytest.raises(ContractError, match="did not confirm organisation 9579"):
        _mock_channel(make_channel, handler).client.organisation


def test_a_422_envelope_becomes_a_rejected_item_naming_the_field(channel):
    with pytest.raises(RejectedItem) as raised:
        channel.client.stock_operation({"line_quantities": [{"sku_id": 1, "quantity": 1}]}, "k-1")
    assert raised.value.field == "stock_operation.line_quantities[0].sku_id"
    assert "sku_id is not a SKU" in str(raised.value)


def test_the_unknown_rate_limit_is_a_sandbox_setting_answered_with_retry_after(make_sandbox, make_channel, clock):
    app = make_sandbox(rate_limit_per_second=3)
    channel = make_channel(app)
    for _ in range(4):
        channel.client.get("/seasons")  # 3 auth calls + 4 reads in the same virtual second
    assert app.calls[("GET", "/seasons")] > 4  # at least one 429 was answered and replayed
    assert 1.0 in clock.slept  # the Retry-After was honoured (on virtual time)


def test_server_errors_on_reads_are_retried(make_sandbox, make_channel):
    app = make_sandbox()
    channel = make_channel(app)
    channel.client.organisation
    app.faults.update({"rate_5xx": 0.5, "seed": 3})
    assert len(list(channel.client.products())) == 12
    assert app.injected["5xx"] >= 1


def test_a_cut_off_body_is_a_transient_error(make_sandbox, make_channel):
    app = make_sandbox()
    channel = make_channel(app)
    channel.client.organisation
    app.faults.update({"rate_malformed": 1.0})
    with pytest.raises(TransientError, match="not JSON"):
        channel.client.get("/seasons")


def test_tokens_and_passwords_never_reach_the_logs(channel, sandbox, caplog):
    caplog.set_level("DEBUG")
    channel.client.get("/seasons")
    token = next(iter(sandbox.state.tokens.values()))
    assert any("/seasons" in record.getMessage() for record in caplog.records)  # the calls were logged
    for secret in (token.access_token, token.refresh_token, channel.credentials["password"]):
        assert secret not in caplog.text
