"""A small threaded HTTP/1.1 WSGI server with keep-alive, for sandboxes on loopback.

Why not werkzeug's development server: it answers every request with ``Connection: close``, so
each request to a sandbox cost a new TCP connection, a new server thread and, in the hub, a new
connection in its pool; the real channel APIs keep connections open. Why not waitress or cheroot:
they turn an exception from the app into a 500 answer, and the sandboxes' "dropped connection"
fault needs the connection to close with no answer at all. What is left for this module is the
WSGI glue on top of the standard library's request parsing: building the environ, sending the
status and headers, and choosing between ``Content-Length`` and chunked bodies.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes

from hub import defaults

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]  # hub.sandbox and hub.testing use this one too


class LoopbackServer(ThreadingHTTPServer):
    """One thread per connection; a connection serves requests until the client closes it or it
    stays idle for ``defaults.LOOPBACK_IDLE_SECONDS``."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for clients that keep their connections open

    def __init__(self, host: str, port: int, app: WSGIApp) -> None:
        self.app = app
        super().__init__((host, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer
    timeout = defaults.LOOPBACK_IDLE_SECONDS
    # Head and body leave in one write (flushed after each answer), and small writes are never held
    # back for an ACK: a kept-alive connection would otherwise wait out the client's delayed ACK.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # a sandbox answers thousands of requests a second in the benchmarks: no access log

    def handle_expect_100(self) -> bool:
        answered = super().handle_expect_100()
        self.wfile.flush()  # buffered writes: the client waits for this before it sends the body
        return answered

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _serve(self) -> None:
        body = self._read_body()
        if body is None:
            return
        response = _Response(self)
        try:
            result = self.server.app(self._environ(body), response.start)
            try:
                for chunk in result:
                    response.write(chunk)
            finally:
                if hasattr(result, "close"):
                    result.close()
            response.finish()
        except ConnectionError:
            self.close_connection = True  # a dropped connection (or the sandbox's drop fault): no answer
        except Exception as error:  # noqa: BLE001 - the app failed: tell the client, as any server would
            self.close_connection = True
            if not response.started:
                self.send_error(500, f"{type(error).__name__}: {error}")

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def _read_body(self) -> bytes | None:
        """The request body, or None once a 400 has answered a body that cannot be read."""
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            if chunked:
                return self._read_chunked()
            length = self.headers.get("Content-Length")
            size = int(length) if length else 0
        except ValueError:
            self.close_connection = True  # the rest of the stream cannot be trusted to start a request
            self.send_error(400, "a chunk size is not hexadecimal" if chunked else "Content-Length is not a number")
            return None
        return self.rfile.read(size) if size > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _environ(self, body: bytes) -> dict[str, Any]:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"), "QUERY_STRING": query,
            "SERVER_NAME": str(host), "SERVER_PORT": str(port), "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0], "CONTENT_LENGTH": str(len(body)) if body else "",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
                continue
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ


class _Response:
    """The WSGI ``start_response`` / write side of one request."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.started = False
        self.chunked = False

    def start(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        if not self.started:
            self._send_head(known_length=False)
        if not data or self.handler.command == "HEAD":
            return
        if self.chunked:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.handler.wfile.write(data)

    def finish(self) -> None:
        if not self.started:
            self._send_head(known_length=True)
        elif self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()

    def _send_head(self, *, known_length: bool) -> None:
        if self.status is None:
            raise RuntimeError("the WSGI app sent a body before calling start_response")
        handler = self.handler
        code, _, reason = self.status.partition(" ")
        handler.send_response(int(code), reason)
        names = {name.lower() for name, _ in self.headers}
        for name, value in self.headers:
            handler.send_header(name, value)
        bodiless = handler.command == "HEAD" or int(code) in (204, 304) or 100 <= int(code) < 200
        if "content-length" not in names and not bodiless:
            if known_length:  # an empty body
                handler.send_header("Content-Length", "0")
            else:
                self.chunked = True
                handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()
        self.started = True


def start(app: WSGIApp, host: str, port: int) -> tuple[LoopbackServer, threading.Thread]:
    """The server, already accepting connections in a daemon thread."""
    server = LoopbackServer(host, port, app)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox:{server.server_port}", daemon=True)
    thread.start()
    return server, thread
