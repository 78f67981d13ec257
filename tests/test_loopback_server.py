"""The loopback server the sandboxes are served with: HTTP/1.1 with kept-alive connections, and the
network faults of the sandbox kit acting on a real socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from hub.sandbox import FaultMiddleware, Faults, ServedSandbox, serve


def echo(environ: dict, start_response) -> list[bytes]:  # type: ignore[no-untyped-def]
    if environ["PATH_INFO"] == "/boom":
        raise ValueError("the app broke")
    body = environ["wsgi.input"].read()
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])  # no length: sent chunked
        return [b"one,", b"two,", b"three"]
    answer = json.dumps({
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
        "body": body.decode(), "content_type": environ.get("CONTENT_TYPE"), "token": environ.get("HTTP_AUTHORIZATION"),
        "peer": environ["REMOTE_ADDR"],
    }).encode()
    start_response("201 Created", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
    return [answer]


@pytest.fixture
def served() -> Iterator[ServedSandbox]:
    sandbox = serve(echo)
    yield sandbox
    sandbox.stop()


def _connections(client: httpx.Client) -> int:
    return len(client._transport._pool.connections)  # type: ignore[attr-defined]


def test_requests_share_one_kept_alive_connection(served: ServedSandbox) -> None:
    with httpx.Client(base_url=served.url, timeout=5) as client:
        answers = [client.post("/orders/a%20b", params={"page": i}, json={"n": i},
                               headers={"Authorization": "Bearer t"}) for i in range(20)]
        assert _connections(client) == 1
    assert all(a.status_code == 201 and "close" not in a.headers.get("connection", "") for a in answers)
    first = answers[0].json()
    assert first == {"method": "POST", "path": "/orders/a b", "query": "page=0", "body": '{"n":0}',
                     "content_type": "application/json", "token": "Bearer t", "peer": "127.0.0.1"}
    assert answers[19].json()["body"] == '{"n":19}'


def test_a_body_of_unknown_length_is_sent_chunked_and_a_chunked_request_is_read(served: ServedSandbox) -> None:
    with httpx.Client(base_url=served.url, timeout=5) as client:
        streamed = client.get("/stream")
        assert streamed.text == "one,two,three" and streamed.headers["transfer-encoding"] == "chunked"
        sent = client.post("/upload", content=iter([b"part 1, ", b"part 2"]))  # a generator: chunked upload
        assert sent.json()["body"] == "part 1, part 2"
        assert client.head("/x").content == b""
        assert _connections(client) == 1


def test_an_app_error_is_a_500_and_the_server_goes_on(served: ServedSandbox) -> None:
    with httpx.Client(base_url=served.url, timeout=5) as client:
        failed = client.get("/boom")
        assert failed.status_code == 500 and "ValueError: the app broke" in failed.text
        assert client.get("/after").status_code == 201


def test_a_dropped_connection_gets_no_answer_at_all() -> None:
    sandbox = serve(FaultMiddleware(echo, faults=Faults(rate_drop=1.0)))
    try:
        with httpx.Client(base_url=sandbox.url, timeout=5) as client, pytest.raises(httpx.RemoteProtocolError):
            client.get("/x")
    finally:
        sandbox.stop()


def test_a_served_timeout_outlasts_the_client() -> None:
    sandbox = serve(FaultMiddleware(echo, faults=Faults(rate_timeout=1.0, timeout_seconds=2.0)))
    try:
        with httpx.Client(base_url=sandbox.url, timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
            client.get("/x")
    finally:
        sandbox.stop()


def test_a_bad_request_line_is_refused_and_stop_does_not_wait_for_open_connections(served: ServedSandbox) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))  # a client that keeps its connection and says nothing
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
        assert bad.recv(1024).startswith(b"HTTP/1.1 400")
    with socket.create_connection(("127.0.0.1", port)) as bad:
        bad.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        refused = bad.recv(1024)
        assert refused.startswith(b"HTTP/1.1 400") and b"hexadecimal" in refused
    started = time.monotonic()
    served.stop()
    assert time.monotonic() - started < 2
    idle.close()


def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(served: ServedSandbox) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert client.recv(1024).startswith(b"HTTP/1.1 100 Continue")  # not held in the server's buffer
        client.sendall(b"hello")
        answer = b""
        while b"}" not in answer:
            answer += client.recv(4096)
    assert answer.startswith(b"HTTP/1.1 201") and b'"body": "hello"' in answer
