"""The sandbox kit: what every plugin's ``sandbox.py`` shares.

A sandbox is a WSGI app that behaves like the remote API. This module gives each of them the same
fault knobs (latency, 429 with Retry-After, 5xx, timeouts, dropped connections, malformed bodies),
request counters, a ``/_control/faults`` endpoint to turn the knobs at run time, and a loopback HTTP
server for the demo and the benchmarks. The sandbox supplies the error bodies, so a 429 from the
Iconic sandbox carries The Iconic's envelope and one from Starshipit carries Starshipit's.

In-process (``httpx.WSGITransport``) a timeout or a dropped connection is raised as the httpx
exception a real network would produce; served over loopback the server sleeps past the client's
timeout, or aborts the connection.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import httpx

from hub.loopback_server import WSGIApp, start

CONTROL_PREFIX = "/_control"

ErrorBody = Callable[[int, str], tuple[bytes, str]]  # (status, message) -> (body, content type)


@dataclass
class Faults:
    """Fault knobs; each rate is the share of requests (0.0-1.0) that get the fault."""

    latency: float = 0.0  # seconds added to every request
    rate_429: float = 0.0
    retry_after: float = 1.0  # seconds, sent with each injected 429
    rate_5xx: float = 0.0
    rate_timeout: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    timeout_seconds: float = 35.0  # how long a served timeout stalls: longer than a client waits
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        """Apply knob changes from the control API, refusing unknown knobs and bad values by name."""
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r} (knobs: {', '.join(sorted(known))})")
            if name == "seed":
                self.seed = None if value is None else int(value)
                continue
            number = float(value)
            if name.startswith("rate_") and not 0.0 <= number <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            if number < 0:
                raise ValueError(f"{name} must not be negative")
            setattr(self, name, number)


def json_error_body(status: int, message: str) -> tuple[bytes, str]:
    return json.dumps({"status": status, "message": message}).encode(), "application/json"


@dataclass
class FaultMiddleware:
    """Wraps a sandbox's WSGI app with fault injection, counters and the faults control endpoint."""

    app: WSGIApp
    faults: Faults = field(default_factory=Faults)
    error_body: ErrorBody = json_error_body
    served: bool = False  # set by serve(): faults then act on a real socket
    sleep: Callable[[float], None] = time.sleep
    calls: Counter = field(default_factory=Counter)  # (method, path) -> requests, faults included
    injected: Counter = field(default_factory=Counter)  # fault name -> times injected

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(self.faults.seed)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == f"{CONTROL_PREFIX}/faults":
            return self._control(environ, start_response)
        if path.startswith(CONTROL_PREFIX):
            return self.app(environ, start_response)
        with self._lock:
            self.calls[(environ.get("REQUEST_METHOD", "GET"), path)] += 1
            fault = self._roll()
        if self.faults.latency:
            self.sleep(self.faults.latency)
        if fault:
            self.injected[fault] += 1
            return getattr(self, f"_inject_{fault}")(environ, start_response)
        return self.app(environ, start_response)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.injected.clear()

    def _roll(self) -> str | None:
        if self.faults.seed is not None and getattr(self, "_seeded_with", None) != self.faults.seed:
            self._rng.seed(self.faults.seed)
            self._seeded_with = self.faults.seed
        draw = self._rng.random()
        for name in ("429", "5xx", "timeout", "drop", "malformed"):
            rate = getattr(self.faults, f"rate_{name}")
            if draw < rate:
                return name
            draw -= rate
        return None

    def _inject_429(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body, content_type = self.error_body(429, "Too many requests: slow down")
        retry_after = f"{self.faults.retry_after:g}"
        start_response("429 Too Many Requests", [("Content-Type", content_type), ("Retry-After", retry_after)])
        return [body]

    def _inject_5xx(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status = self._rng.choice([500, 502, 503, 504])
        body, content_type = self.error_body(status, "sandbox fault: the server failed")
        start_response(f"{status} Sandbox Fault", [("Content-Type", content_type)])
        return [body]

    def _inject_timeout(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not self.served:
            raise httpx.ReadTimeout("sandbox fault: the server did not answer in time")
        self.sleep(self.faults.timeout_seconds)
        return self._inject_5xx(environ, start_response)

    def _inject_drop(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not self.served:
            raise httpx.RemoteProtocolError("sandbox fault: server disconnected without sending a response")
        raise ConnectionAbortedError("sandbox fault: connection dropped")

    def _inject_malformed(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        start_response(captured["status"], headers)
        return [body[: max(1, len(body) // 2)]]  # a truncated body: valid status, unparseable JSON

    def _control(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") in ("PUT", "POST", "PATCH"):
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                self.faults.update(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            except (ValueError, TypeError) as error:
                return _json(start_response, "400 Bad Request", {"error": str(error)})
        state = {**asdict(self.faults), "calls": self.total_calls, "injected": dict(self.injected)}
        return _json(start_response, "200 OK", state)


def _json(start_response: Callable, status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@dataclass
class ServedSandbox:
    """A sandbox listening on loopback; ``url`` is its base URL."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(app: WSGIApp, *, host: str = "127.0.0.1", port: int = 0) -> ServedSandbox:
    """Serve a sandbox over loopback HTTP/1.1 (kept-alive connections) in a background thread; port 0
    picks a free port."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("sandboxes only listen on loopback")
    if isinstance(app, FaultMiddleware):
        app.served = True
    server, thread = start(app, host, port)
    return ServedSandbox(url=f"http://{host}:{server.server_port}", server=server, thread=thread)
