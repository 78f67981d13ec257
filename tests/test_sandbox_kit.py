"""The sandbox kit injects the faults it is told to, and counts every call."""

from __future__ import annotations

import httpx
import pytest

from hub.sandbox import Faults, FaultMiddleware, serve


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"hello": "world", "padding": "xxxxxxxxxxxxxxxx"}']


def client_for(middleware: FaultMiddleware) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=middleware), base_url="http://sandbox")


def test_no_faults_passes_through_and_counts():
    middleware = FaultMiddleware(hello)
    with client_for(middleware) as client:
        for _ in range(3):
            assert client.get("/v2/things").json()["hello"] == "world"
    assert middleware.calls[("GET", "/v2/things")] == 3


def test_429_carries_retry_after_and_the_sandbox_error_body():
    middleware = FaultMiddleware(hello, Faults(rate_429=1.0, retry_after=7),
                                 error_body=lambda status, message: (f"<e>{status}</e>".encode(), "text/xml"))
    with client_for(middleware) as client:
        response = client.get("/x")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.text == "<e>429</e>"


@pytest.mark.parametrize("knob,exception", [("rate_timeout", httpx.ReadTimeout), ("rate_drop", httpx.RemoteProtocolError)])
def test_in_process_network_faults_raise_what_httpx_would(knob, exception):
    with client_for(FaultMiddleware(hello, Faults(**{knob: 1.0}))) as client, pytest.raises(exception):
        client.get("/x")


def test_malformed_body_is_truncated_json():
    with client_for(FaultMiddleware(hello, Faults(rate_malformed=1.0))) as client:
        response = client.get("/x")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()


def test_rates_are_shares_of_requests_with_a_seed():
    middleware = FaultMiddleware(hello, Faults(rate_5xx=0.3, seed=42))
    with client_for(middleware) as client:
        statuses = [client.get("/x").status_code for _ in range(400)]
    failures = sum(status >= 500 for status in statuses)
    assert 80 <= failures <= 160
    assert middleware.injected["5xx"] == failures


def test_control_endpoint_turns_knobs_and_refuses_bad_ones():
    middleware = FaultMiddleware(hello)
    with client_for(middleware) as client:
        assert client.put("/_control/faults", json={"rate_429": 1}).json()["rate_429"] == 1.0
        assert client.get("/x").status_code == 429
        refused = client.put("/_control/faults", json={"rate_teapot": 1})
        assert refused.status_code == 400 and "unknown fault knob 'rate_teapot'" in refused.json()["error"]
        assert client.put("/_control/faults", json={"rate_5xx": 2}).status_code == 400


def test_served_over_loopback():
    sandbox = serve(FaultMiddleware(hello))
    try:
        assert httpx.get(f"{sandbox.url}/x", timeout=5).json()["hello"] == "world"
    finally:
        sandbox.stop()
