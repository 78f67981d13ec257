"""The hub's HTTP service for channel plugins.

A plugin's ``client.py`` never builds a bare ``httpx.Client``; it asks :func:`make_client` for a
:class:`HubHttpClient`, which adds what every channel needs and none should re-implement:

- timeouts on every call;
- retries with exponential backoff and jitter on timeouts, dropped connections and 500/502/503/504;
- ``Retry-After`` (seconds or HTTP-date) honoured on 429 and 503, pausing the account's token bucket
  so every caller of that account waits, and without spending a retry attempt;
- a per-account token bucket (:mod:`hub.ratelimit`) taken before every attempt;
- one log line per attempt with secrets redacted, and call counters for SyncRun and benchmarks;
- an injectable transport, so tests and the demo reach the WSGI sandboxes without sockets.

Error mapping stays with the plugin: :meth:`HubHttpClient.request` returns 4xx responses (other than
429) untouched so the channel can read its own error envelope, and :func:`raise_for_status` maps
whatever the plugin did not handle onto the vocabulary in :mod:`hub.errors`.

Retries and idempotency: GET, HEAD, OPTIONS, PUT and DELETE are replayed after any transient failure.
POST and PATCH are replayed only when the request provably never reached the server (connect
errors, pool timeouts) or the server explicitly refused it (429, 503 with ``Retry-After``). A POST
that timed out mid-read or got a 500 may already have been applied; replaying it could create a
second order. Plugins make creates idempotent by searching first, and may then pass
``idempotent=True`` to opt in to full retries.

Requests are rebuilt for every attempt, so an ``httpx.Auth`` that signs requests (timestamps,
HMACs) signs each retry afresh. Bodies must therefore be replayable: bytes, str, ``json=`` or
``data=``, not a one-shot generator.
"""

from __future__ import annotations

import logging
import math
import random
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import httpx
import orjson

from hub import __version__
from hub.errors import (
    AuthError,
    ChannelhubError,
    ConfigurationError,
    RateLimited,
    RejectedItem,
    TransientError,
)
from hub.ratelimit import RateLimiterRegistry, TokenBucket, registry_for_sleep

_T = TypeVar("_T")

# --- Tunables -------------------------------------------------------------------------------------
# hub/defaults.py holds the hub's tunables; each value below is read from it under the HTTP_* name
# in brackets when it defines one, else the fallback here applies. A channel overrides them per
# client through make_client() arguments and its own RetryPolicy.


def _tunable(name: str, fallback: _T) -> _T:
    try:
        from hub import defaults
    except ImportError:
        return fallback
    return getattr(defaults, name, fallback)


#: Seconds for the read/write/pool phases of one attempt [HTTP_TIMEOUT_SECONDS].
DEFAULT_TIMEOUT_SECONDS: float = _tunable("HTTP_TIMEOUT_SECONDS", 30.0)
#: A dead host should fail fast; connect errors are always safe to retry [HTTP_CONNECT_TIMEOUT_SECONDS].
DEFAULT_CONNECT_TIMEOUT_SECONDS: float = _tunable("HTTP_CONNECT_TIMEOUT_SECONDS", 10.0)
#: Requests per second per account: Shopify's and Uphance's developer tiers allow 2/s [HTTP_RATE_PER_SECOND].
DEFAULT_RATE_PER_SECOND: float = _tunable("HTTP_RATE_PER_SECOND", 2.0)
#: Bucket capacity: how many calls a fresh account may make back to back [HTTP_BURST].
DEFAULT_BURST: float = _tunable("HTTP_BURST", 10.0)
#: Attempts in total (first try included) for transient failures [HTTP_MAX_ATTEMPTS].
DEFAULT_MAX_ATTEMPTS: int = _tunable("HTTP_MAX_ATTEMPTS", 4)
#: First backoff delay, multiplied by the factor per retry [HTTP_BACKOFF_BASE_SECONDS, HTTP_BACKOFF_FACTOR].
DEFAULT_BACKOFF_BASE_SECONDS: float = _tunable("HTTP_BACKOFF_BASE_SECONDS", 0.5)
DEFAULT_BACKOFF_FACTOR: float = _tunable("HTTP_BACKOFF_FACTOR", 2.0)
#: No single backoff sleep is longer than this [HTTP_BACKOFF_MAX_SECONDS].
DEFAULT_BACKOFF_MAX_SECONDS: float = _tunable("HTTP_BACKOFF_MAX_SECONDS", 30.0)
#: Backoff spread, +/- this fraction, so a fleet that failed together does not retry together [HTTP_JITTER].
DEFAULT_JITTER: float = _tunable("HTTP_JITTER", 0.25)
#: A longer Retry-After is not slept through in-process: RateLimited is raised so the runtime defers
#: the job instead of holding a worker [HTTP_MAX_RETRY_AFTER_SECONDS].
DEFAULT_MAX_RETRY_AFTER_SECONDS: float = _tunable("HTTP_MAX_RETRY_AFTER_SECONDS", 120.0)
#: In-process waits on 429 / 503+Retry-After per request before RateLimited [HTTP_MAX_RATE_LIMIT_WAITS].
DEFAULT_MAX_RATE_LIMIT_WAITS: int = _tunable("HTTP_MAX_RATE_LIMIT_WAITS", 5)
#: Wait for a 429 that carries no readable Retry-After [HTTP_RATE_LIMIT_WAIT_SECONDS].
DEFAULT_RATE_LIMIT_WAIT_SECONDS: float = _tunable("HTTP_RATE_LIMIT_WAIT_SECONDS", 1.0)
#: Characters of a response body kept in error details [HTTP_BODY_EXCERPT_CHARS].
BODY_EXCERPT_CHARS: int = _tunable("HTTP_BODY_EXCERPT_CHARS", 500)

LOGGER_NAME = "channelhub.http"
REDACTED = "***"

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})

# Transport failures where the request provably never left this process, so replaying it cannot
# apply a write twice.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Transport failures that are our own fault; retrying cannot help.
_NOT_TRANSIENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
# Keyword arguments that belong to httpx.Client.send(), not build_request().
_SEND_OPTIONS = ("auth", "follow_redirects")

LoggerLike = logging.Logger | logging.LoggerAdapter


# --- Redaction ------------------------------------------------------------------------------------

# Query parameter names whose values are never logged ("named like token/secret/password/key/
# signature"). Over-redacting a harmless "keyword=" is cheap; leaking a token is not.
_SENSITIVE_PARAM = (
    r"(?:[\w.\-\[\]]*(?:token|secret|passw|pwd|key|signature|credential)[\w.\-\[\]]*|sig|auth|code)"
)
_QUERY_PARAM_RE = re.compile(rf"(?i)([?&;]{_SENSITIVE_PARAM}=)([^&#\s\"'<>]*)")
# "name: value" / "name=value" / '"name": "value"' in free text, headers and JSON bodies. Narrower
# than the query list so ordinary messages ("sku key: ABC") stay readable.
_SENSITIVE_FIELD = (
    r"(?:authorization|proxy-authorization|x-shopify-access-token|x-api-key|api[_-]?key|apikey"
    r"|[\w-]*(?:token|secret|password|passwd|signature))"
)
_KEY_VALUE_RE = re.compile(
    rf"(?i)(\b{_SENSITIVE_FIELD}[\"']?\s*[:=]\s*[\"']?)((?:bearer|basic|token|digest|hmac)\s+)?([^\s\"',;&}}]+)"
)
_USERINFO_RE = re.compile(r"(//[^/:@\s]+:)([^@/\s]+)(@)")
_SENSITIVE_HEADER_RE = re.compile(r"(?i)(authorization|cookie|token|secret|key|signature|password|auth)")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret and every credential-looking value replaced by ``***``.

    Replaces each value in ``secrets`` (also in its URL-encoded forms), the password in
    ``scheme://user:password@host``, the values of query parameters named like token / secret /
    password / key / signature, and ``Authorization: ...``-style header or JSON fields.
    """
    for secret in _secret_forms(secrets):
        text = text.replace(secret, REDACTED)
    text = _USERINFO_RE.sub(rf"\1{REDACTED}\3", text)
    text = _QUERY_PARAM_RE.sub(rf"\1{REDACTED}", text)
    return _KEY_VALUE_RE.sub(_redact_field, text)


def redact_headers(headers: httpx.Headers | Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``headers`` fit for logs: credential headers masked, secrets redacted elsewhere."""
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers.items()
    secrets = tuple(secrets)
    return {
        name: REDACTED if is_sensitive_header(name) else redact(value, secrets) for name, value in items
    }


def is_sensitive_header(name: str) -> bool:
    """True for Authorization, cookies and any header named like a token, key, secret or signature."""
    return bool(_SENSITIVE_HEADER_RE.search(name))


def _redact_field(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2) or ''}{REDACTED}"


def _secret_forms(secrets: Iterable[str]) -> list[str]:
    forms = {
        form for secret in secrets if secret for form in (secret, quote(secret, safe=""), quote_plus(secret))
    }
    # Longest first, so a secret containing another secret is masked whole.
    return sorted(forms, key=len, reverse=True)


def _header_secrets(headers: Mapping[str, str]) -> Iterator[str]:
    """The credential values in ``headers``, with and without their scheme ("Bearer abc" -> "abc")."""
    for name, value in headers.items():
        if is_sensitive_header(name) and value:
            yield value
            scheme, _, credential = value.partition(" ")
            if credential and scheme.isalpha():
                yield credential.strip()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from records before any handler sees them.

    Attach it to a plugin's logger (``logger.addFilter(RedactingFilter(credentials.values()))``).
    Secrets are reference-counted so several clients can share one filter and withdraw their own
    secrets on close without unmasking another client's.
    """

    def __init__(self, secrets: Iterable[str] = (), name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._secrets: Counter[str] = Counter(secret for secret in secrets if secret)

    @property
    def secrets(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(secret for secret in secrets if secret)

    def remove_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.subtract(secret for secret in secrets if secret)
            self._secrets = +self._secrets  # drop counts that reached zero

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        record.msg = redact(_message_of(record), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when set, so the traceback is rendered once, redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def _message_of(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not escape into the caller
        # Still redact rather than let the raw args through unformatted.
        return f"{record.msg} {record.args!r}"


# httpx logs every request's full URL (query string included) at INFO on its own logger. One shared
# filter there masks what our clients know to be secret; installed once, on first client.
_THIRD_PARTY_FILTER = RedactingFilter()
_THIRD_PARTY_LOGGERS = ("httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.proxy")
_third_party_lock = threading.Lock()
_third_party_installed = False


def _guard_third_party_loggers() -> None:
    global _third_party_installed
    with _third_party_lock:
        if not _third_party_installed:
            for name in _THIRD_PARTY_LOGGERS:
                logging.getLogger(name).addFilter(_THIRD_PARTY_FILTER)
            _third_party_installed = True


# --- Retry policy and Retry-After -----------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before giving up; immutable, so one instance can be shared."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE_SECONDS
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR
    backoff_max: float = DEFAULT_BACKOFF_MAX_SECONDS
    jitter: float = DEFAULT_JITTER
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER_SECONDS
    max_rate_limit_waits: int = DEFAULT_MAX_RATE_LIMIT_WAITS
    default_rate_limit_wait: float = DEFAULT_RATE_LIMIT_WAIT_SECONDS
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_rate_limit_waits < 0:
            raise ValueError("max_rate_limit_waits must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter is a fraction between 0 and 1")
        if min(self.backoff_base, self.backoff_max, self.max_retry_after, self.default_rate_limit_wait) < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        raw = self.backoff_base * self.backoff_factor ** max(0, retry_number - 1)
        spread = raw * self.jitter * (2.0 * rand() - 1.0)
        return max(0.0, min(self.backoff_max, raw + spread))


DEFAULT_RETRY_POLICY = RetryPolicy()


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); None if unreadable.

    ``now`` is the wall clock (epoch seconds), needed for the HTTP-date form. Past dates give 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)  # Shopify sends "2.0", not only the RFC's integers
    except ValueError:
        seconds = _seconds_until(text, now())
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # HTTP-dates are GMT by definition
    return moment.timestamp() - now


# --- Bodies ---------------------------------------------------------------------------------------


def response_json(response: httpx.Response) -> Any:
    """The response's body parsed as JSON; ``ValueError`` (a ``json.JSONDecodeError``) when it is not.

    orjson rather than the standard library: parsing the channels' answers (order pages, shipment
    lists) was a twentieth of a busy worker's CPU, and orjson does it in a fraction of the time.
    """
    return orjson.loads(response.content)


# --- Status mapping -------------------------------------------------------------------------------


def raise_for_status(
    response: httpx.Response,
    *,
    body_detail: object = None,
    secrets: Iterable[str] = (),
    now: Callable[[], float] = time.time,
) -> None:
    """Raise the hub error for an unsuccessful ``response``; return quietly for 1xx-3xx.

    401/403 -> AuthError, 429 -> RateLimited, 5xx -> TransientError, other 4xx -> RejectedItem.
    Plugins call this after trying their own error-envelope mapping. ``body_detail`` replaces the
    (redacted) body excerpt as the error's ``detail``, e.g. the parsed envelope.
    """
    status = response.status_code
    if status < 400:
        return
    secrets = tuple(secrets)
    message = f"{status} {response.reason_phrase} from {_describe_request(response.request, secrets)}"
    detail = body_detail if body_detail is not None else _body_excerpt(response, secrets)
    if status in (401, 403):
        raise AuthError(message, status=status, detail=detail)
    if status == 429:
        wait = parse_retry_after(response.headers.get("Retry-After"), now=now)
        retry_after = wait if wait is not None else DEFAULT_RATE_LIMIT_WAIT_SECONDS
        raise RateLimited(message, retry_after=retry_after, status=status, detail=detail)
    if status >= 500:
        raise TransientError(message, status=status, detail=detail)
    raise RejectedItem(message, status=status, detail=detail)


def _describe_request(request: httpx.Request | None, secrets: Iterable[str]) -> str:
    if request is None:
        return "(unknown request)"
    return f"{request.method} {redact(str(request.url), secrets)}"


def _body_excerpt(response: httpx.Response, secrets: Iterable[str]) -> str:
    try:
        text = response.text
    except (httpx.ResponseNotRead, httpx.StreamError, UnicodeDecodeError):
        return ""
    return redact(text[:BODY_EXCERPT_CHARS], secrets)


def _safe_request(response: httpx.Response) -> httpx.Request | None:
    try:
        return response.request
    except RuntimeError:  # a Response built by hand has no request
        return None


# --- The client -----------------------------------------------------------------------------------


@dataclass
class _Attempts:
    """Progress of one logical request across its attempts."""

    number: int = 0  # attempts made, rate-limited ones included
    failures: int = 0  # transient failures, counted against max_attempts
    rate_waits: int = 0  # in-process Retry-After waits, counted against max_rate_limit_waits


@dataclass
class _Outcome:
    """What to do after one attempt: return ``response``, sleep ``delay`` and retry, or raise."""

    response: httpx.Response | None = None
    delay: float | None = None
    error: ChannelhubError | None = None
    note: str = ""


class HubHttpClient:
    """An ``httpx.Client`` with the hub's retries, rate limit, redacted logging and call counts.

    Build it with :func:`make_client`. Thread-safe: share one per account across threads.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        account_key: str,
        bucket: TokenBucket,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        secrets: Iterable[str] = (),
        logger: LoggerLike | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wallclock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._account_key = account_key
        self._bucket = bucket
        self._retry = retry
        self._secrets: list[str] = []
        self._logger: LoggerLike = logger or logging.getLogger(LOGGER_NAME)
        self._sleep = sleep
        self._wallclock = wallclock
        self._rand = rand
        self._lock = threading.Lock()
        self._closed = False
        self.calls = 0
        self.calls_by_path: Counter[str] = Counter()
        _guard_third_party_loggers()
        self.add_secrets(list(secrets) + list(_header_secrets(client.headers)))

    # -- public surface --------------------------------------------------------------------------

    @property
    def account_key(self) -> str:
        return self._account_key

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retry

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self._secrets)

    @property
    def closed(self) -> bool:
        return self._closed

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask more values from now on, e.g. an OAuth access token fetched at run time."""
        with self._lock:
            fresh = list(dict.fromkeys(s for s in secrets if s and s not in self._secrets))
            self._secrets.extend(fresh)
        _THIRD_PARTY_FILTER.add_secrets(fresh)

    def redact(self, text: str) -> str:
        """``text`` with this client's secrets and credential-looking values masked."""
        return redact(text, self._secrets)

    def raise_for_status(self, response: httpx.Response, *, body_detail: object = None) -> None:
        """:func:`raise_for_status` with this client's secrets and clock."""
        raise_for_status(response, body_detail=body_detail, secrets=self._secrets, now=self._wallclock)

    def reset_counts(self) -> int:
        """Zero the call counters (at the start of a SyncRun); return the old total."""
        with self._lock:
            total, self.calls = self.calls, 0
            self.calls_by_path.clear()
            return total

    def request(
        self, method: str, url: httpx.URL | str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request with the hub's rate limit and retry rules (see the module docstring).

        ``idempotent`` overrides the method's default replay safety. ``kwargs`` are those of
        ``httpx.Client.request``. Returns every response except retried-out 5xx and 429, which
        raise TransientError and RateLimited.
        """
        verb = method.upper()
        replay_safe = verb in IDEMPOTENT_METHODS if idempotent is None else idempotent
        send_options = {key: kwargs.pop(key) for key in _SEND_OPTIONS if key in kwargs}
        attempts = _Attempts()
        while True:
            throttled = self._bucket.acquire()
            request = self._client.build_request(verb, url, **kwargs)
            attempts.number += 1
            outcome = self._attempt(request, send_options, replay_safe, attempts, throttled)
            if outcome.error is not None:
                raise outcome.error
            if outcome.delay is None and outcome.response is not None:
                return outcome.response
            self._sleep(outcome.delay or 0.0)

    def get(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._client.close()
        _THIRD_PARTY_FILTER.remove_secrets(self._secrets)

    def __enter__(self) -> HubHttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HubHttpClient(account_key={self._account_key!r}, base_url={str(self.base_url)!r})"

    # -- one attempt -----------------------------------------------------------------------------

    def _attempt(
        self,
        request: httpx.Request,
        send_options: dict[str, Any],
        replay_safe: bool,
        attempts: _Attempts,
        throttled: float,
    ) -> _Outcome:
        started = time.perf_counter()
        try:
            response = self._client.send(request, **send_options)
        except httpx.TransportError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            if not isinstance(exc, _NEVER_SENT):
                self._count(request)
            outcome = self._after_transport_error(exc, request, replay_safe, attempts)
            self._log_attempt(request, None, exc, elapsed_ms, attempts, throttled, outcome)
            return outcome
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._count(request)
        outcome = self._after_response(response, replay_safe, attempts)
        self._log_attempt(request, response, None, elapsed_ms, attempts, throttled, outcome)
        return outcome

    def _after_transport_error(
        self, exc: httpx.TransportError, request: httpx.Request, replay_safe: bool, attempts: _Attempts
    ) -> _Outcome:
        described = _describe_request(request, self._secrets)
        reason = self.redact(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, _NOT_TRANSIENT):
            return _Outcome(error=ConfigurationError(f"{described} cannot be sent: {reason}"))
        attempts.failures += 1
        may_replay = replay_safe or isinstance(exc, _NEVER_SENT)
        if may_replay and attempts.failures < self._retry.max_attempts:
            delay = self._retry.backoff(attempts.failures, self._rand)
            return _Outcome(delay=delay, note=f"retry in {delay:.2f} s")
        detail = {"method": request.method, "url": self.redact(str(request.url)), "attempts": attempts.number,
                  "error": reason}
        return _Outcome(error=TransientError(f"{described} failed: {reason}", detail=detail), note="giving up")

    def _after_response(self, response: httpx.Response, replay_safe: bool, attempts: _Attempts) -> _Outcome:
        status = response.status_code
        hinted = "Retry-After" in response.headers
        if status == 429 or (status == 503 and hinted):
            # The server refused before doing anything, so even a POST may be replayed.
            return self._after_rate_limit(response, attempts)
        if status in self._retry.retry_statuses:
            return self._after_server_error(response, replay_safe, attempts)
        return _Outcome(response=response)

    def _after_rate_limit(self, response: httpx.Response, attempts: _Attempts) -> _Outcome:
        hinted = parse_retry_after(response.headers.get("Retry-After"), now=self._wallclock)
        if hinted is None:
            backoff = self._retry.backoff(attempts.rate_waits + 1, self._rand)
            hinted = max(self._retry.default_rate_limit_wait, backoff)
        too_long = hinted > self._retry.max_retry_after
        if too_long or attempts.rate_waits >= self._retry.max_rate_limit_waits:
            # Hand the wait to the runtime (defer the job) rather than hold a worker hostage.
            error = RateLimited(self._failure_message(response, attempts), retry_after=hinted,
                                status=response.status_code, detail=self._failure_detail(response, attempts))
            return _Outcome(error=error, note="deferring")
        attempts.rate_waits += 1
        self._bucket.penalise(hinted)  # every caller of this account waits, not only this one
        return _Outcome(delay=hinted, note=f"rate limited, waiting {hinted:.2f} s")

    def _after_server_error(self, response: httpx.Response, replay_safe: bool, attempts: _Attempts) -> _Outcome:
        attempts.failures += 1
        if replay_safe and attempts.failures < self._retry.max_attempts:
            delay = self._retry.backoff(attempts.failures, self._rand)
            return _Outcome(delay=delay, note=f"retry in {delay:.2f} s")
        error = TransientError(self._failure_message(response, attempts), status=response.status_code,
                               detail=self._failure_detail(response, attempts))
        return _Outcome(error=error, note="giving up" if replay_safe else "not replayed (not idempotent)")

    def _failure_message(self, response: httpx.Response, attempts: _Attempts) -> str:
        described = _describe_request(_safe_request(response), self._secrets)
        status = f"{response.status_code} {response.reason_phrase}"
        return f"{status} from {described} after {attempts.number} attempt(s)"

    def _failure_detail(self, response: httpx.Response, attempts: _Attempts) -> dict[str, object]:
        request = _safe_request(response)
        return {
            "method": request.method if request else None,
            "url": self.redact(str(request.url)) if request else None,
            "attempts": attempts.number,
            "body": _body_excerpt(response, self._secrets),
        }

    # -- bookkeeping -----------------------------------------------------------------------------

    def _count(self, request: httpx.Request) -> None:
        with self._lock:
            self.calls += 1
            self.calls_by_path[request.url.path] += 1

    def _log_attempt(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        exc: Exception | None,
        elapsed_ms: float,
        attempts: _Attempts,
        throttled: float,
        outcome: _Outcome,
    ) -> None:
        failed = response is None or response.status_code >= 400
        level = logging.INFO if failed else logging.DEBUG
        if not self._logger.isEnabledFor(level):
            return  # redacting the headers of every request cost more than the request's own headers
        status: int | str = response.status_code if response is not None else type(exc).__name__
        url = self.redact(str(request.url))
        suffix = f"; {outcome.note}" if outcome.note else ""
        extra = {
            "http_account": self._account_key,
            "http_method": request.method,
            "http_url": url,
            "http_status": status,
            "http_elapsed_ms": round(elapsed_ms, 1),
            "http_attempt": attempts.number,
            "http_throttled_ms": round(throttled * 1000.0, 1),
            "http_request_headers": redact_headers(request.headers, self._secrets),
        }
        self._logger.log(
            level,
            "%s %s -> %s in %.1f ms (attempt %d)%s",
            request.method, url, status, elapsed_ms, attempts.number, suffix,
            extra=extra,
        )


def make_client(
    *,
    base_url: httpx.URL | str,
    account_key: str,
    rate: float = DEFAULT_RATE_PER_SECOND,
    burst: float = DEFAULT_BURST,
    timeout: float | httpx.Timeout | None = None,
    retry: RetryPolicy = DEFAULT_RETRY_POLICY,
    transport: httpx.BaseTransport | None = None,
    secrets: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
    logger: LoggerLike | None = None,
    sleep: Callable[[float], None] = time.sleep,
    wallclock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    registry: RateLimiterRegistry | None = None,
    event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    follow_redirects: bool = False,
) -> HubHttpClient:
    """Build the HTTP client a channel uses for one account.

    ``account_key`` names the account's token bucket in ``registry`` (the process-wide one by
    default), so every client for the same account shares one ``rate``/``burst`` budget.
    ``transport`` replaces the network (``httpx.MockTransport``, ``httpx.WSGITransport`` to a
    sandbox). ``secrets`` are masked in logs and errors, as are credential headers in ``headers``.
    ``sleep``, ``wallclock`` and ``rand`` are injectable for tests. Buckets take clock and sleep from
    ``registry``; without one, a real ``sleep`` means the process-wide registry and a fake ``sleep``
    a registry on that fake's time (:func:`hub.ratelimit.registry_for_sleep`), so nothing waits
    for real.
    """
    if not account_key:
        raise ConfigurationError("an HTTP client needs an account key for its rate limiter")
    if registry is None:
        # With a fake sleep the buckets must run on the same fake time, and the client must sleep
        # through the registry so its Retry-After waits move the buckets' clock too.
        registry = registry_for_sleep(sleep)
        sleep = registry.sleep
    bucket = registry.bucket(account_key, rate=rate, capacity=burst)
    client = httpx.Client(
        base_url=base_url,
        verify=shared_ssl_context(),
        timeout=_timeout(timeout),
        transport=transport,
        headers={"User-Agent": f"channelhub/{__version__}", **(headers or {})},
        auth=auth,
        event_hooks={key: list(hooks) for key, hooks in (event_hooks or {}).items()},
        follow_redirects=follow_redirects,
    )
    return HubHttpClient(
        client, account_key=account_key, bucket=bucket, retry=retry, secrets=secrets,
        logger=logger, sleep=sleep, wallclock=wallclock, rand=rand,
    )


_ssl_context: ssl.SSLContext | None = None
_ssl_context_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The process's one verifying TLS context.

    Building a context loads the CA bundle (about 10 ms of CPU) and every run opens its channels'
    clients afresh: profiled, that was a sixth of the hub's CPU in the order flow. A context is safe
    to share between clients and threads.
    """
    global _ssl_context
    with _ssl_context_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


def load_transport() -> None:
    """Load, in a process about to fork, what every client's first request needs: the TLS context
    and httpx's transport (httpx imports httpcore on a client's first use). A forked RQ work horse
    then inherits both instead of paying for them in every job."""
    httpx.HTTPTransport(verify=shared_ssl_context()).close()


def _timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    seconds = DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout
    return httpx.Timeout(seconds, connect=min(seconds, DEFAULT_CONNECT_TIMEOUT_SECONDS))


__all__ = [
    "BODY_EXCERPT_CHARS",
    "DEFAULT_RETRY_POLICY",
    "IDEMPOTENT_METHODS",
    "LOGGER_NAME",
    "REDACTED",
    "RETRYABLE_STATUSES",
    "HubHttpClient",
    "RedactingFilter",
    "RetryPolicy",
    "is_sensitive_header",
    "make_client",
    "parse_retry_after",
    "raise_for_status",
    "redact",
    "redact_headers",
    "shared_ssl_context",
]
