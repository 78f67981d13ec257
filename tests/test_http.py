"""The hub HTTP client: retries, Retry-After, rate limiting, redaction and counters.

No network and no real sleeping: requests go to httpx.MockTransport or a WSGI app, and time is a
fake that only moves when the client or the bucket sleeps.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify, request

from hub.errors import AuthError, ConfigurationError, RateLimited, RejectedItem, TransientError
from hub.http import (
    REDACTED,
    HubHttpClient,
    RedactingFilter,
    RetryPolicy,
    make_client,
    parse_retry_after,
    raise_for_status,
    redact,
    redact_headers,
    shared_ssl_context,
)
from hub.ratelimit import RateLimiterRegistry

BASE_URL = "https://api.example.test"
EPOCH = 1_750_000_000.0  # the fake wall clock's "now"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """Monotonic + wall clocks that move only when slept; records who slept how long."""

    def __init__(self) -> None:
        self.mono = 500.0
        self.wall = EPOCH
        self.client_sleeps: list[float] = []
        self.bucket_sleeps: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            return self.mono

    def time(self) -> float:
        with self._lock:
            return self.wall

    def _advance(self, seconds: float, log: list[float]) -> None:
        with self._lock:
            log.append(seconds)
            self.mono += seconds
            self.wall += seconds

    def client_sleep(self, seconds: float) -> None:
        self._advance(seconds, self.client_sleeps)

    def bucket_sleep(self, seconds: float) -> None:
        self._advance(seconds, self.bucket_sleeps)


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def registry(fake: FakeTime) -> RateLimiterRegistry:
    return RateLimiterRegistry(clock=fake.monotonic, sleep=fake.bucket_sleep)


@pytest.fixture
def build(fake: FakeTime, registry: RateLimiterRegistry) -> Iterator[Callable[..., HubHttpClient]]:
    made: list[HubHttpClient] = []

    def _build(handler: Handler | None = None, **overrides: Any) -> HubHttpClient:
        options: dict[str, Any] = {
            "base_url": BASE_URL,
            "account_key": "test:1",
            "retry": RetryPolicy(jitter=0.0),
            "sleep": fake.client_sleep,
            "wallclock": fake.time,
            "registry": registry,
        }
        if handler is not None:
            options["transport"] = httpx.MockTransport(handler)
        options.update(overrides)
        client = make_client(**options)
        made.append(client)
        return client

    yield _build
    for client in made:
        client.close()


def scripted(*steps: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]) -> Handler:
    """A handler answering with ``steps`` in order, repeating the last one forever."""
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        step = steps[min(len(seen), len(steps) - 1)]
        seen.append(req)
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(req)
        return step

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


def ok(body: object | None = None) -> httpx.Response:
    return httpx.Response(200, json=body if body is not None else {"ok": True})


# --- retries --------------------------------------------------------------------------------------


def test_retries_503_then_succeeds(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    client = build(scripted(httpx.Response(503), ok()))
    response = client.get("/products")
    assert response.status_code == 200
    assert client.calls == 2
    assert fake.client_sleeps == [0.5]


def test_backoff_grows_exponentially_then_gives_up_with_transient_error(
    build: Callable[..., HubHttpClient], fake: FakeTime
) -> None:
    handler = scripted(httpx.Response(500, text="boom: database on fire"))
    client = build(handler)
    with pytest.raises(TransientError) as caught:
        client.get("/orders")
    assert caught.value.status == 500
    assert caught.value.detail["attempts"] == 4
    assert "database on fire" in caught.value.detail["body"]
    assert client.calls == 4 == len(handler.seen)
    assert fake.client_sleeps == [0.5, 1.0, 2.0]


def test_max_attempts_is_configurable(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.Response(502)), retry=RetryPolicy(max_attempts=2, jitter=0))
    with pytest.raises(TransientError):
        client.get("/x")
    assert client.calls == 2


def test_other_4xx_are_returned_not_raised(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.Response(422, json={"errors": {"sku": ["taken"]}})))
    response = client.post("/products", json={"sku": "A"})
    assert response.status_code == 422
    assert client.calls == 1


def test_get_retries_read_timeouts_and_dropped_connections(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(
        httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("peer closed connection"), ok()
    )
    client = build(handler)
    assert client.get("/x").status_code == 200
    assert client.calls == 3


def test_transport_errors_exhausted_raise_transient_error(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.ReadError("connection reset")))
    with pytest.raises(TransientError) as caught:
        client.get("/x")
    assert caught.value.status is None
    assert "ReadError" in caught.value.detail["error"]


def test_post_is_not_replayed_after_a_500(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    handler = scripted(httpx.Response(500), ok())
    client = build(handler)
    with pytest.raises(TransientError):
        client.post("/orders", json={"name": "#1001"})
    assert len(handler.seen) == 1 and client.calls == 1
    assert fake.client_sleeps == []


def test_post_is_replayed_after_a_500_when_declared_idempotent(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(httpx.Response(500), ok())
    client = build(handler)
    assert client.post("/orders", json={"name": "#1001"}, idempotent=True).status_code == 200
    assert len(handler.seen) == 2
    assert json.loads(handler.seen[1].content) == {"name": "#1001"}  # the body is replayed intact


def test_post_is_not_replayed_after_a_read_timeout(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(httpx.ReadTimeout("no answer"), ok())
    client = build(handler)
    with pytest.raises(TransientError):
        client.post("/orders", json={})
    assert len(handler.seen) == 1


def test_post_is_replayed_after_connect_errors(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(httpx.ConnectError("refused"), httpx.ConnectTimeout("syn lost"), ok())
    client = build(handler)
    assert client.post("/orders", json={}).status_code == 200
    assert len(handler.seen) == 3
    assert client.calls == 1  # only the attempt that reached the server counts as a call


def test_patch_follows_post_rules(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.Response(504), ok()))
    with pytest.raises(TransientError):
        client.patch("/orders/1", json={})


def test_put_and_delete_are_replayed(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.Response(502), ok()))
    assert client.put("/stock", json={}).status_code == 200
    client = build(scripted(httpx.Response(502), ok()), account_key="test:2")
    assert client.delete("/listing/1").status_code == 200


def test_unsupported_protocol_is_a_configuration_error_not_retried(
    build: Callable[..., HubHttpClient],
) -> None:
    handler = scripted(httpx.UnsupportedProtocol("ftp is not http"))
    client = build(handler)
    with pytest.raises(ConfigurationError):
        client.get("/x")
    assert len(handler.seen) == 1


# --- Retry-After and rate limiting ----------------------------------------------------------------


def test_retry_after_seconds_on_503_is_honoured(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    client = build(scripted(httpx.Response(503, headers={"Retry-After": "7"}), ok()))
    assert client.get("/x").status_code == 200
    assert fake.client_sleeps == [7.0]
    assert fake.bucket_sleeps == []  # the client slept the pause; the bucket had nothing left to wait


def test_retry_after_http_date_on_429_is_honoured(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    later = formatdate(EPOCH + 42, usegmt=True)
    client = build(scripted(httpx.Response(429, headers={"Retry-After": later}), ok()))
    assert client.get("/x").status_code == 200
    assert fake.client_sleeps == pytest.approx([42.0])


def test_retry_after_does_not_spend_attempts(build: Callable[..., HubHttpClient]) -> None:
    limited = httpx.Response(429, headers={"Retry-After": "1"})
    client = build(scripted(limited, limited, limited, httpx.Response(500), httpx.Response(500), ok()))
    assert client.get("/x").status_code == 200
    assert client.calls == 6


def test_429_forever_raises_rate_limited_with_retry_after(
    build: Callable[..., HubHttpClient], fake: FakeTime
) -> None:
    client = build(scripted(httpx.Response(429, headers={"Retry-After": "3"})))
    with pytest.raises(RateLimited) as caught:
        client.get("/x")
    assert caught.value.retry_after == 3.0
    assert caught.value.status == 429
    waits = client.retry_policy.max_rate_limit_waits
    assert client.calls == waits + 1
    assert fake.client_sleeps == [3.0] * waits


def test_retry_after_beyond_the_cap_defers_at_once(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    client = build(scripted(httpx.Response(503, headers={"Retry-After": "3600"})))
    with pytest.raises(RateLimited) as caught:
        client.get("/x")
    assert caught.value.retry_after == 3600.0
    assert client.calls == 1 and fake.client_sleeps == []


def test_429_without_retry_after_waits_the_default(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    client = build(scripted(httpx.Response(429), ok()))
    assert client.get("/x").status_code == 200
    assert fake.client_sleeps == [1.0]


def test_post_is_replayed_after_429(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(httpx.Response(429, headers={"Retry-After": "2"}), ok())
    client = build(handler)
    assert client.post("/orders", json={}).status_code == 200
    assert len(handler.seen) == 2


def test_429_pauses_every_client_of_the_same_account(
    build: Callable[..., HubHttpClient], fake: FakeTime
) -> None:
    other = build(scripted(ok()))
    paused_seen: list[float | None] = []

    def client_sleep(seconds: float) -> None:
        paused_seen.append(other.bucket.paused_until)  # as seen by the other client, mid-wait
        assert not other.bucket.try_acquire()
        fake.client_sleep(seconds)

    client = build(scripted(httpx.Response(429, headers={"Retry-After": "9"}), ok()), sleep=client_sleep)
    assert client.bucket is other.bucket
    client.get("/x")
    assert paused_seen == [pytest.approx(500.0 + 9.0)]


def test_requests_take_tokens_from_the_account_bucket(
    build: Callable[..., HubHttpClient], fake: FakeTime
) -> None:
    client = build(scripted(ok()), rate=4.0, burst=2.0)
    for _ in range(4):
        client.get("/x")
    assert fake.bucket_sleeps == pytest.approx([0.25, 0.25])
    assert fake.client_sleeps == []


def test_fake_sleep_without_a_registry_never_waits_for_real() -> None:
    """Callers that fake only sleep (ChannelServices does) get buckets on that fake's time."""
    slept: list[float] = []
    limited = httpx.Response(429, headers={"Retry-After": "30"})
    options: dict[str, Any] = {"base_url": BASE_URL, "rate": 1.0, "burst": 1.0, "sleep": slept.append,
                               "retry": RetryPolicy(jitter=0)}
    first = make_client(account_key="fake-sleep:1", transport=httpx.MockTransport(scripted(limited, ok())),
                        **options)
    second = make_client(account_key="fake-sleep:1", transport=httpx.MockTransport(scripted(ok())), **options)
    with first, second:
        started = time.monotonic()
        assert first.get("/x").status_code == 200
        assert second.bucket is first.bucket  # one fake, one registry: the account still shares
        second.get("/y")
        assert time.monotonic() - started < 5.0
    assert slept[0] == 30.0  # Retry-After, once: the bucket's pause was waited out with it
    assert slept[1:] == [pytest.approx(1.0, abs=0.01)]  # then the 1/s rate, on fake time


@pytest.mark.parametrize(
    "value, expected",
    [
        ("5", 5.0),
        ("2.0", 2.0),
        (" 0 ", 0.0),
        ("-3", 0.0),
        (formatdate(EPOCH + 90, usegmt=True), 90.0),
        (formatdate(EPOCH - 90, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    parsed = parse_retry_after(value, now=lambda: EPOCH)
    assert parsed == (pytest.approx(expected) if expected is not None else None)


def test_retry_policy_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_factor=3.0, backoff_max=10.0, jitter=0.5)
    assert policy.backoff(1, rand=lambda: 0.5) == 1.0
    assert policy.backoff(2, rand=lambda: 0.0) == 1.5
    assert policy.backoff(2, rand=lambda: 1.0) == 4.5
    assert policy.backoff(9, rand=lambda: 1.0) == 10.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# --- raise_for_status -----------------------------------------------------------------------------


def response_for(status: int, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", f"{BASE_URL}/x?token=abc"), **kwargs)


@pytest.mark.parametrize(
    "status, error",
    [(401, AuthError), (403, AuthError), (429, RateLimited), (500, TransientError), (503, TransientError),
     (400, RejectedItem), (404, RejectedItem), (422, RejectedItem)],
)
def test_raise_for_status_maps_onto_the_error_vocabulary(status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        raise_for_status(response_for(status, text="nope"))
    assert caught.value.status == status
    assert caught.value.detail == "nope"
    assert "abc" not in str(caught.value)


def test_raise_for_status_passes_success_and_redirects() -> None:
    raise_for_status(response_for(200))
    raise_for_status(response_for(304))


def test_raise_for_status_reads_retry_after_and_takes_body_detail() -> None:
    with pytest.raises(RateLimited) as caught:
        raise_for_status(response_for(429, headers={"Retry-After": "12"}), body_detail={"code": "E429"})
    assert caught.value.retry_after == 12.0
    assert caught.value.detail == {"code": "E429"}


def test_401_through_the_client_helper_is_an_auth_error(build: Callable[..., HubHttpClient]) -> None:
    client = build(scripted(httpx.Response(401, json={"errors": "[API] Invalid API key"})))
    response = client.get("/shop.json")
    assert response.status_code == 401
    with pytest.raises(AuthError) as caught:
        client.raise_for_status(response)
    assert caught.value.status == 401


# --- counters and lifecycle -----------------------------------------------------------------------


def test_call_counters_follow_attempts_per_path(build: Callable[..., HubHttpClient]) -> None:
    handler = scripted(lambda req: httpx.Response(503) if req.url.path == "/flaky" and len(handler.seen) == 1
                       else ok())
    client = build(handler)
    client.get("/flaky")
    client.get("/products", params={"page": 2})
    client.get("/products", params={"page": 3})
    assert client.calls == 4 == len(handler.seen)
    assert client.calls_by_path == {"/flaky": 2, "/products": 2}
    assert client.reset_counts() == 4
    assert client.calls == 0 and not client.calls_by_path


def test_context_manager_closes(build: Callable[..., HubHttpClient]) -> None:
    with build(scripted(ok())) as client:
        client.get("/x")
    assert client.closed
    with pytest.raises(RuntimeError):
        client.get("/x")


def test_each_attempt_rebuilds_the_request_so_auth_re_signs(build: Callable[..., HubHttpClient]) -> None:
    signatures: list[str] = []

    class CountingAuth(httpx.Auth):
        def auth_flow(self, req: httpx.Request) -> Iterator[httpx.Request]:
            req.headers["X-Signature"] = f"sig-{len(signatures)}"
            signatures.append(req.headers["X-Signature"])
            yield req

    handler = scripted(httpx.Response(503), ok())
    client = build(handler, auth=CountingAuth())
    client.get("/x")
    assert [req.headers["X-Signature"] for req in handler.seen] == ["sig-0", "sig-1"]


def test_event_hooks_and_default_headers_pass_through(build: Callable[..., HubHttpClient]) -> None:
    hooked: list[str] = []
    handler = scripted(ok())
    client = build(handler, headers={"Accept": "application/json"},
                   event_hooks={"request": [lambda req: hooked.append(req.url.path)]})
    client.get("/hooked")
    assert hooked == ["/hooked"]
    assert handler.seen[0].headers["Accept"] == "application/json"
    assert handler.seen[0].headers["User-Agent"].startswith("channelhub/")


# --- logging and redaction ------------------------------------------------------------------------

API_KEY = "s3cr3t-api-key-9f8e7d"
BEARER = "bearer-token-abc123xyz"
SHOPIFY_TOKEN = "shpat_0123456789abcdef"
QUERY_TOKEN = "qtok-55aa66bb"


def test_secrets_never_reach_log_records(
    build: Callable[..., HubHttpClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def echo_secrets(req: httpx.Request) -> httpx.Response:
        # A remote that echoes credentials back in its error body.
        return httpx.Response(500, text=f"bad key {API_KEY} for {req.headers['Authorization']}")

    client = build(
        scripted(echo_secrets, ok(), echo_secrets),
        secrets=[API_KEY],
        headers={"Authorization": f"Bearer {BEARER}", "X-Shopify-Access-Token": SHOPIFY_TOKEN},
    )
    client.get("/orders.json", params={"token": QUERY_TOKEN, "page": "2"})
    with pytest.raises(TransientError) as caught:
        client.post(f"/orders.json?api_key={API_KEY}", json={})

    attempt_lines = [r for r in caplog.records if r.name == "channelhub.http"]
    assert len(attempt_lines) == 3  # one per attempt
    assert attempt_lines[0].http_status == 500 and attempt_lines[0].http_attempt == 1
    assert attempt_lines[1].http_status == 200 and attempt_lines[1].http_attempt == 2
    assert "token=***" in attempt_lines[0].getMessage() and "page=2" in attempt_lines[0].getMessage()
    assert attempt_lines[0].http_request_headers["authorization"] == REDACTED
    assert any(r.name == "httpx" for r in caplog.records)  # httpx's own request log was captured too

    secrets = (API_KEY, BEARER, SHOPIFY_TOKEN, QUERY_TOKEN)
    for record in caplog.records:
        rendered = record.getMessage() + repr(vars(record))
        assert not any(secret in rendered for secret in secrets), rendered
    error_text = str(caught.value) + repr(caught.value.detail)
    assert not any(secret in error_text for secret in secrets), error_text


def test_transport_error_messages_are_redacted(
    build: Callable[..., HubHttpClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = build(scripted(httpx.ReadError(f"reset while reading ?token={QUERY_TOKEN}")), secrets=[API_KEY])
    with pytest.raises(TransientError) as caught:
        client.get("/x", headers={"X-Api-Key": API_KEY})
    rendered = str(caught.value) + repr(caught.value.detail) + "".join(
        r.getMessage() + repr(vars(r)) for r in caplog.records
    )
    assert QUERY_TOKEN not in rendered and API_KEY not in rendered


def test_injected_logger_receives_the_attempt_lines(
    build: Callable[..., HubHttpClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("channelhub.plugins.testchannel")
    build(scripted(httpx.Response(404)), logger=logger).get("/missing")
    (record,) = [r for r in caplog.records if r.name == logger.name]
    assert record.levelno == logging.INFO  # failures are visible at INFO, successes only at DEBUG
    assert "GET https://api.example.test/missing -> 404" in record.getMessage()


def test_redact_masks_secrets_and_credential_looking_values() -> None:
    text = (
        "Authorization: Bearer abc.def.ghi "
        'body={"access_token": "tok-1", "client_secret":"cs-2", "sku": "A-1"} '
        "url=https://user:pa55@host/x?token=t0k&page=3&signature=ff&apiKey=k1 "
        "raw s3cr3t and encoded s%2Fcr%2Bt"
    )
    out = redact(text, ["s3cr3t", "s/cr+t"])
    for leaked in ("abc.def.ghi", "tok-1", "cs-2", "pa55", "t0k", "=ff", "k1", "s3cr3t", "s%2Fcr%2Bt"):
        assert leaked not in out, (leaked, out)
    for kept in ("Bearer ***", '"sku": "A-1"', "page=3", "user:***@host"):
        assert kept in out, (kept, out)


def test_redact_headers() -> None:
    headers = httpx.Headers({"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "k", "Accept": "text/plain",
                             "X-Note": "has s3cr3t inside"})
    assert redact_headers(headers, ["s3cr3t"]) == {
        "authorization": REDACTED, "x-api-key": REDACTED, "accept": "text/plain", "x-note": "has *** inside",
    }


def test_redacting_filter_for_plugin_loggers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("channelhub.plugins.filtered")
    redactor = RedactingFilter(["hunter2"])
    logger.addFilter(redactor)
    try:
        logger.info("logging in with %s", "hunter2")
        try:
            raise ValueError("password hunter2 rejected")
        except ValueError:
            logger.exception("failed for %s", {"password": "hunter2"})
        redactor.add_secrets(["late-token"])
        logger.warning("token late-token arrived")
        logger.info("broken format %s %s", "hunter2")  # must not raise into the caller
    finally:
        logger.removeFilter(redactor)
    text = "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "hunter2" not in text and "late-token" not in text
    assert "ValueError" in text  # the traceback survives, redacted


def test_redacting_filter_reference_counts_shared_secrets() -> None:
    redactor = RedactingFilter()
    redactor.add_secrets(["shared"])
    redactor.add_secrets(["shared"])
    redactor.remove_secrets(["shared"])
    assert redactor.secrets == ("shared",)
    redactor.remove_secrets(["shared"])
    assert redactor.secrets == ()


# --- end to end through a WSGI sandbox ------------------------------------------------------------


def sandbox_app() -> Flask:
    """A tiny remote: wants a bearer token, rate-limits the first call, pages products."""
    app = Flask("sandbox")
    state = {"calls": 0}

    @app.get("/products")
    def products() -> Any:
        state["calls"] += 1
        if request.headers.get("Authorization") != f"Bearer {BEARER}":
            return jsonify(errors="unauthorised"), 401
        if state["calls"] == 1:
            return jsonify(errors="slow down"), 429, {"Retry-After": "2"}
        page = int(request.args.get("page", 1))
        return jsonify(products=[{"sku": f"SKU-{page}"}], next_page=page + 1 if page < 2 else None)

    @app.post("/orders")
    def create_order() -> Any:
        return jsonify(id=1, name=request.get_json()["name"]), 201

    return app


def test_end_to_end_through_a_wsgi_sandbox(build: Callable[..., HubHttpClient], fake: FakeTime) -> None:
    transport = httpx.WSGITransport(app=sandbox_app())
    with build(transport=transport, headers={"Authorization": f"Bearer {BEARER}"}) as client:
        skus: list[str] = []
        page: int | None = 1
        while page is not None:
            body = client.get("/products", params={"page": page}).json()
            skus += [product["sku"] for product in body["products"]]
            page = body["next_page"]
        created = client.post("/orders", json={"name": "#1001"})
        client.raise_for_status(created)

    assert skus == ["SKU-1", "SKU-2"]
    assert created.status_code == 201 and created.json()["name"] == "#1001"
    assert fake.client_sleeps == [2.0]
    assert client.calls == 4
    assert client.calls_by_path == {"/products": 3, "/orders": 1}


def test_wsgi_sandbox_refuses_bad_credentials(build: Callable[..., HubHttpClient]) -> None:
    client = build(transport=httpx.WSGITransport(app=sandbox_app()), headers={"Authorization": "Bearer nope"})
    with pytest.raises(AuthError):
        client.raise_for_status(client.get("/products"))


def test_clients_share_one_tls_context_so_opening_a_channel_does_not_reload_the_ca_bundle() -> None:
    first = make_client(base_url="https://one.example", account_key="a")
    second = make_client(base_url="https://two.example", account_key="b")
    try:
        contexts = [client._client._transport._pool._ssl_context for client in (first, second)]
        assert contexts[0] is contexts[1] is shared_ssl_context()
        assert contexts[0].verify_mode.name == "CERT_REQUIRED"
    finally:
        first.close()
        second.close()


def test_response_json_parses_json_and_raises_a_json_decode_error_for_anything_else() -> None:
    from hub.http import response_json

    assert response_json(httpx.Response(200, content=b'{"items": [1, 2], "n": 1.5}')) == {"items": [1, 2], "n": 1.5}
    for body in (b"<html>gateway</html>", b'{"cut": ', b"\xff\xfe"):  # not JSON, cut off, not UTF-8
        with pytest.raises(json.JSONDecodeError):
            response_json(httpx.Response(200, content=body))
