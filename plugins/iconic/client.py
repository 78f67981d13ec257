"""HTTP client for The Iconic's Seller Center API v2: OAuth2 tokens, paging and error mapping.

Every call goes through the hub's HubHttpClient (rate limit, retries, Retry-After on 429/503,
redacted logs). This module adds what is The Iconic's own:

- OAuth2 client credentials: ``POST /oauth/client-credentials`` with Basic auth of the Application
  ID and Secret. The token lives ``expires_in`` seconds (3600); it is renewed a little before that,
  and once more when a call answers 401 (a token can be revoked or the clock can drift). The
  account's clients in one process share it (``hub.tokens.TOKENS``): a worker runs run after run, and each
  fetched a token of its own, one more round trip at the start of every run.
- ``limit``/``offset`` paging read to the end by ``pagination.totalCount`` (or ``hasNext``).
- The ``{type, title, status, detail}`` error body mapped onto hub.errors.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from hub.channel import ChannelServices, Limits
from hub.errors import AuthError, ContractError, RateLimited, RejectedItem, TransientError
from hub.http import response_json
from hub.parallel import map_limited
from hub.tokens import TOKENS

LIVE_URL = "https://sellercenter-api.theiconic.com.au"
STAGING_URL = "https://sellercenter-api-preprod.theiconic.com.au"
TOKEN_PATH = "/oauth/client-credentials"
# Renew this share of the lifetime early (capped), so a token never expires mid-sync.
RENEW_EARLY_SHARE = 0.1
RENEW_EARLY_MAX_SECONDS = 300.0

Params = Mapping[str, Any] | list[tuple[str, Any]]


class IconicClient:
    """One account's connection to the Seller Center API v2."""

    def __init__(self, services: ChannelServices, base_url: str, limits: Limits,
                 application_id: str, application_secret: str) -> None:
        self._services = services
        self._clock = services.clock
        self._app_id = application_id
        self._app_secret = application_secret
        self.page_size = limits.page_size
        self.http = services.http_client(base_url, limits=limits, secrets=[application_secret])
        self._token: str | None = None
        self._expires_at = 0.0
        self._transport = services.transport
        self._token_key = (base_url, application_id, hashlib.sha256(application_secret.encode()).hexdigest())

    # -- auth -------------------------------------------------------------------------------

    def token(self) -> str:
        """A valid access token: this account's from an earlier run, or fetched (renewed when it is
        about to run out)."""
        if self._token is None or self._clock() >= self._expires_at:
            held = TOKENS.get(self._transport, self._token_key, self._clock())
            if held is not None:
                self._token, self._expires_at = held
                self.http.add_secrets([self._token])
            else:
                self._fetch_token()
        assert self._token is not None
        return self._token

    def _forget_token(self) -> None:
        if self._token is not None:
            TOKENS.drop(self._transport, self._token_key, self._token)
        self._token = None

    def _fetch_token(self) -> None:
        basic = base64.b64encode(f"{self._app_id}:{self._app_secret}".encode()).decode()
        response = self.http.post(TOKEN_PATH, headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
                                  data={"grant_type": "client_credentials"}, idempotent=True)
        if response.status_code in (400, 401, 403):
            raise AuthError("The Iconic refused the Application ID / Application Secret: check the OAuth "
                            "application in Seller Center (Settings > Integration Management > OAuth Applications)",
                            status=response.status_code, detail=_envelope(response))
        body = self._body(response, TOKEN_PATH)
        token, lifetime = body.get("access_token") if isinstance(body, dict) else None, _lifetime(body)
        if not isinstance(token, str) or not token:
            raise ContractError("The Iconic's token response has no access_token", detail=body)
        self.http.add_secrets([token])
        self._token = token
        self._expires_at = self._clock() + lifetime - min(RENEW_EARLY_MAX_SECONDS, lifetime * RENEW_EARLY_SHARE)
        TOKENS.put(self._transport, self._token_key, token, self._expires_at)

    # -- calls ------------------------------------------------------------------------------

    def call(self, method: str, path: str, *, params: Params | None = None, json_body: Any = None) -> Any:
        """Send one /v2 call and return its parsed JSON; errors raise from hub.errors."""
        response = self._send(method, path, params, json_body)
        if response.status_code == 401:
            self._forget_token()  # revoked or expired early: one fresh token, one more try
            response = self._send(method, path, params, json_body)
        return self._body(response, path)

    def get(self, path: str, params: Params | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, json_body=body)

    def put(self, path: str, body: Any = None, params: Params | None = None) -> Any:
        return self.call("PUT", path, params=params, json_body=body)

    def paged(self, path: str, params: Params | None = None, *, page_size: int | None = None,
              in_flight: int = 1, expect: int | None = None) -> Iterator[Any]:
        """Yield every item of a ``{items, pagination}`` list, page by page to the end.

        With ``in_flight`` above 1, once the first page is full and gives a ``totalCount``, the pages
        up to that count are read that many at a time (the account's pace still holds). ``expect``
        (how long the list was last time, when the caller knows) lets the pages it covers be read at
        once from the start, without waiting for the first page to tell the count: a list read
        again and again, such as an orders window, then costs one round trip less each time; when
        the list has shrunk, the pages past its new end come back empty (at most ``in_flight`` - 1
        requests spent). From the first page that comes back short (the list ended, or the server
        shortened it) the rest is read one page at a time, and so is a list that grew meanwhile. A
        failing page raises; callers never see a partial enumeration as complete.
        """
        limit = page_size or self.page_size
        base = list(params.items()) if isinstance(params, Mapping) else list(params or [])

        def page(offset: int) -> Any:
            return self.get(path, [*base, ("limit", limit), ("offset", offset)])

        def read(offsets: list[int]) -> Iterator[tuple[int, list[Any], Any, int | None]]:
            for start, body in zip(offsets, map_limited(page, offsets, in_flight, name="iconic-pages")):
                yield (start, *_page_of(body, path, start))

        ahead = min(in_flight, -(-expect // limit)) if in_flight > 1 and expect else 1
        offset, items, more, total = 0, [], None, None
        for start, items, more, total in read(list(range(0, ahead * limit, limit))):
            yield from items
            offset = start + len(items)
            if len(items) < limit:
                break  # the pages after this one were read at offsets that may no longer hold
        if in_flight > 1 and total is not None and len(items) == limit and offset < total:
            for start, items, more, _ in read(list(range(offset, total, limit))):
                yield from items
                offset = start + len(items)
                if len(items) < limit:
                    break
        while items and more(offset):
            items, more, _ = _page_of(page(offset), path, offset)
            yield from items
            offset += len(items)

    def _send(self, method: str, path: str, params: Params | None, json_body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        return self.http.request(method, path, params=params, json=json_body, headers=headers)

    def _body(self, response: httpx.Response, path: str) -> Any:
        if response.status_code >= 400:
            raise_mapped(response, self.http.redact)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response_json(response)
        except ValueError:
            # A truncated or non-JSON answer (gateway page, cut connection): trying again may help.
            raise TransientError(f"The Iconic answered {path} with a body that is not JSON",
                                 status=response.status_code,
                                 detail=self.http.redact(response.text[:300])) from None

    def close(self) -> None:
        self.http.close()


def raise_mapped(response: httpx.Response, redact: Any = str) -> None:
    """Raise the hub error for a GeneralError response (401/403 auth, 429 rate, 5xx transient, 4xx item)."""
    envelope = _envelope(response)
    status = response.status_code
    title = str(envelope.get("title") or response.reason_phrase)
    detail = str(envelope.get("detail") or "")
    message = redact(f"The Iconic: {title}" + (f": {detail}" if detail else "") + f" ({status})")
    if status in (401, 403):
        raise AuthError(message, status=status, detail=envelope)
    if status == 429:
        raise RateLimited(message, retry_after=_retry_after(response), status=status, detail=envelope)
    if status >= 500:
        raise TransientError(message, status=status, detail=envelope)
    raise RejectedItem(message, field=_field_of(detail), status=status, detail=envelope)


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return {"status": response.status_code, "detail": response.text[:300]}
    return body if isinstance(body, dict) else {"status": response.status_code, "detail": str(body)[:300]}


def _field_of(detail: str) -> str | None:
    """The Iconic's validation details start with the field: ``"price: must be a positive number"``."""
    head, sep, _ = detail.partition(":")
    return head.strip() if sep and head.strip() and " " not in head.strip() else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def _lifetime(body: Any) -> float:
    try:
        lifetime = float(body.get("expires_in", 3600))
    except (AttributeError, TypeError, ValueError):
        raise ContractError("The Iconic's token response has no usable expires_in", detail=body) from None
    return lifetime if lifetime > 0 else 3600.0


def _page_of(body: Any, path: str, offset: int) -> tuple[list[Any], Any, int | None]:
    """The items of one page, a predicate saying whether another page follows ``offset``, and the
    list's ``totalCount`` when it gives one."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise ContractError(f"{path}: a paged list must be {{items: [...], pagination: {{...}}}}", detail=body)
    pagination = body.get("pagination") or {}
    if "totalCount" in pagination:
        total = pagination["totalCount"]
        if not isinstance(total, int):
            raise ContractError(f"{path}: pagination.totalCount is not an integer", detail=pagination)
        return body["items"], lambda seen: seen < total, total
    if "hasNext" in pagination:
        return body["items"], lambda seen: bool(pagination["hasNext"]), None
    raise ContractError(f"{path}: pagination has neither totalCount nor hasNext", detail=pagination)


def items_of(body: Any, path: str) -> list[Any]:
    """A list answer, bare or wrapped in ``items`` (the spec uses both)."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return body["items"]
    raise ContractError(f"{path}: expected a list", detail=body)
