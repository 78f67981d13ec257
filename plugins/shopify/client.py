"""HTTP client for the Shopify GraphQL Admin API (pinned to version 2026-07).

One endpoint, ``POST /admin/api/2026-07/graphql.json`` with ``X-Shopify-Access-Token``, sent through
the hub's HubHttpClient. This module owns what is Shopify-specific about talking to it:

- **Errors.** Top-level ``errors`` (validation, throttling, access) and mutation ``userErrors`` (business
  rules, HTTP 200) are both surfaced: the first as hub errors, the second as :class:`UserErrors`.
- **Calculated query cost.** Every answer reports ``extensions.cost.throttleStatus``; the client models
  the leaky bucket from it and waits *before* a query whose last requested cost would not fit, so it
  paces instead of bouncing off THROTTLED. A THROTTLED answer, whether sent with HTTP 200 or 429, is
  handled the same way: wait for the bucket to refill by the requested cost, then retry. This is the
  pacing that binds: the channel's request-rate limit (hub token bucket) sits above any plan's bucket.
- **Paging.** ``first``/``after`` with ``pageInfo`` to the end; a page that claims more but gives no
  cursor (or the same cursor again) is a broken contract, never a silently short enumeration.
- **Bulk operations.** ``bulkOperationRunQuery``, polling, and streaming the JSONL result file from its
  signed URL with a separate client that never carries the access token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from hub.channel import ChannelServices, Limits
from hub.errors import AuthError, ContractError, RateLimited, RejectedItem, TransientError
from hub.http import RetryPolicy, response_json

API_VERSION = "2026-07"
GRAPHQL_PATH = f"/admin/api/{API_VERSION}/graphql.json"
#: Waits for the cost bucket per request before the job is deferred with RateLimited.
MAX_THROTTLE_WAITS = 8
#: Shopify refuses a single query over 1,000 points before running it.
MAX_QUERY_COST = 1000
#: Every Admin API input array is capped at 250 items; so is every connection page.
MAX_INPUT_ITEMS = 250
MAX_PAGE_SIZE = 250
#: A wait for the bucket longer than this is handed to the runtime (RateLimited) rather than slept.
MAX_IN_PROCESS_WAIT = 120.0
#: A mutation's requested cost, assumed until Shopify reports it (so the first one is paced too).
MUTATION_COST = 10.0
#: Headroom over the requested cost when pacing: reported figures are rounded.
SAFETY_POINTS = 1.0
BULK_FINISHED = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}


class UserErrors(RejectedItem):
    """A mutation answered with ``userErrors``: Shopify refused the input (HTTP 200)."""

    def __init__(self, mutation: str, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {}
        path = ".".join(str(part) for part in first.get("field") or [])
        described = "; ".join(
            f"{'.'.join(str(p) for p in e.get('field') or []) or mutation}: {e.get('message')}"
            + (f" ({e['code']})" if e.get("code") else "")
            for e in errors
        )
        super().__init__(f"Shopify refused {mutation}: {described}", field=path or None, detail=errors)

    @property
    def codes(self) -> set[str]:
        return {str(error.get("code")) for error in self.errors if error.get("code")}


@dataclass
class CostBudget:
    """The app's cost bucket as the last answer described it, refilled in between by the clock."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    observed_at: float | None = None

    def observe(self, status: dict[str, Any], now: float, *, others_in_flight: bool = False) -> None:
        """Take the bucket an answer reports. While other requests are out, the answer may predate
        their charge, so it can lower the estimate but not raise it."""
        reported = float(status.get("currentlyAvailable", self.available))
        if others_in_flight and self.observed_at is not None:
            reported = min(reported, self._refilled(now))
        self.maximum = float(status.get("maximumAvailable", self.maximum))
        self.available = reported
        self.restore_rate = float(status.get("restoreRate", self.restore_rate)) or self.restore_rate
        self.observed_at = now

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` points are in the bucket (0 when unknown or already there)."""
        if self.observed_at is None or cost <= 0:
            return 0.0
        cost += SAFETY_POINTS
        refilled = self._refilled(now)
        return 0.0 if refilled >= cost else (cost - refilled) / self.restore_rate

    def spend(self, cost: float, now: float) -> None:
        """Count ``cost`` points as gone the moment a request is sent, so calls sent at the same time
        see each other's share before any answer reports the bucket (the next answer corrects it)."""
        if self.observed_at is not None and cost > 0:
            self.available, self.observed_at = self._refilled(now) - cost, now

    def _refilled(self, now: float) -> float:
        assert self.observed_at is not None
        return min(self.maximum, self.available + (now - self.observed_at) * self.restore_rate)


class ShopifyClient:
    """GraphQL Admin API calls for one shop, paced by the calculated query cost."""

    def __init__(self, services: ChannelServices, *, base_url: str, access_token: str, limits: Limits) -> None:
        self._services = services
        self._limits = limits
        self._clock = services.clock
        self._sleep = services.sleep
        self._log = services.logger
        # 429s come back to this client (no in-process waits in the hub client) so a THROTTLED 429
        # and a THROTTLED 200 share one pacing rule, driven by the bucket Shopify reports.
        self.http = services.http_client(
            base_url, limits=limits, secrets=[access_token],
            headers={"X-Shopify-Access-Token": access_token, "Accept": "application/json"},
            retry=RetryPolicy(max_rate_limit_waits=0),
        )
        self.budget = CostBudget()
        self._pacing = threading.Lock()  # one caller at a time waits for points
        self._books = threading.Lock()  # the budget and the requests in flight
        self._in_flight = 0
        self._costs: dict[str, float] = {}  # query text -> last requested cost
        self.throttled = 0  # THROTTLED answers met, for sync statistics and tests
        self._retry_after = 0.0  # Retry-After of the last plain 429, if any

    # -- public surface ----------------------------------------------------------------------------

    def query(self, document: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a read-only query and return its ``data``; reads are safe to replay after a failure."""
        return self._execute(document, variables or {}, replayable=True)

    def mutate(self, document: str, variables: dict[str, Any], payload: str, *, replayable: bool = False) -> dict[str, Any]:
        """Run a mutation and return its payload; non-empty ``userErrors`` raise :class:`UserErrors`.

        ``replayable`` marks mutations that carry an ``@idempotent`` key, which Shopify deduplicates,
        so the hub client may resend them after a timeout or 5xx.
        """
        data = self._execute(document, variables, replayable=replayable, cost=MUTATION_COST)
        result = data.get(payload)
        if not isinstance(result, dict):
            raise ContractError(f"Shopify answered {payload} without a payload", detail=data)
        errors = [e for key, value in result.items() if key.endswith("serErrors") and value for e in value]
        if errors:
            raise UserErrors(payload, errors)
        return result

    def paginate(self, document: str, variables: dict[str, Any], path: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        """Yield every node of the connection at ``path``, page after page, to the end."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            data = self.query(document, {**variables, "after": cursor})
            page = dig(data, path)
            if page is None:
                return  # the parent object (e.g. a product) no longer exists
            yield from nodes_of(page, ".".join(path))
            info = page.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            cursor = info.get("endCursor")
            if not cursor or cursor in seen:
                raise ContractError(f"Shopify said {'.'.join(path)} has another page but gave no new cursor",
                                    detail=info)
            seen.add(cursor)

    def bulk_export(self, document: str, *, poll_seconds: float, timeout_seconds: float) -> Iterator[dict[str, Any]]:
        """Run ``document`` as a bulk query and yield the objects of its JSONL result, in file order."""
        started = self.mutate(BULK_RUN, {"query": document}, "bulkOperationRunQuery")
        operation = started.get("bulkOperation") or {}
        deadline = self._clock() + timeout_seconds
        while operation.get("status") not in BULK_FINISHED:
            if self._clock() > deadline:
                raise TransientError(f"bulk operation {operation.get('id')} did not finish in {timeout_seconds:.0f} s")
            self._sleep(poll_seconds)
            operation = self.query(BULK_POLL, {"id": operation["id"]}).get("bulkOperation") or {}
        if operation["status"] != "COMPLETED":
            error = f"bulk operation {operation.get('id')} ended {operation['status']} ({operation.get('errorCode')})"
            raise AuthError(error) if operation.get("errorCode") == "ACCESS_DENIED" else TransientError(error)
        if operation.get("url"):
            yield from self._download_jsonl(operation["url"])

    def close(self) -> None:
        self.http.close()

    # -- one request -----------------------------------------------------------------------------

    def _execute(self, document: str, variables: dict[str, Any], *, replayable: bool,
                 cost: float = 0.0) -> dict[str, Any]:
        self._costs.setdefault(document, cost)
        for _ in range(MAX_THROTTLE_WAITS + 1):
            self._pace(document)
            try:
                body = self._post(document, variables, replayable)
            finally:
                with self._books:
                    self._in_flight -= 1
            if body is None or _throttled(body):
                self.throttled += 1
                self._wait(self._throttle_wait(document))
                continue
            return self._data(body)
        raise RateLimited("Shopify kept answering THROTTLED; deferring",
                          retry_after=max(1.0, self._throttle_wait(document)))

    def _pace(self, document: str) -> None:
        """Wait for the query's points and take them; concurrent callers (create_orders) queue here."""
        cost = self._costs.get(document, 0.0)
        with self._pacing:
            with self._books:
                wait = self.budget.wait_for(cost, self._clock())
            self._wait(wait)
            with self._books:
                self.budget.spend(cost, self._clock())
                self._in_flight += 1

    def _wait(self, seconds: float) -> None:
        if seconds > MAX_IN_PROCESS_WAIT:
            raise RateLimited(f"Shopify's cost bucket needs {seconds:.0f} s to refill; deferring", retry_after=seconds)
        if seconds > 0:
            self._sleep(seconds)

    def _throttle_wait(self, document: str) -> float:
        """The bucket's refill time for this query, or a 429's Retry-After when that is longer."""
        needed = self._costs.get(document) or self.budget.restore_rate
        hinted, self._retry_after = self._retry_after, 0.0
        return max(self.budget.wait_for(needed, self._clock()), 1.0 / max(self.budget.restore_rate, 1.0), hinted)

    def _post(self, document: str, variables: dict[str, Any], replayable: bool) -> dict[str, Any] | None:
        """POST once; None means "throttled at the HTTP level" (a 429, whose body we may not see)."""
        try:
            response = self.http.post(GRAPHQL_PATH, json={"query": document, "variables": variables},
                                      idempotent=replayable)
        except RateLimited as limited:
            self._observe(_body_from_detail(limited.detail), document)
            self._retry_after = limited.retry_after
            return None
        body = _json(response)
        if response.status_code >= 400:
            self._raise_for_status(response, body)
        if not isinstance(body, dict):
            raise TransientError(f"Shopify answered {response.status_code} with a body that is not JSON",
                                 status=response.status_code)
        self._observe(body, document)
        return body

    def _observe(self, body: Any, document: str) -> None:
        cost = (body or {}).get("extensions", {}).get("cost") if isinstance(body, dict) else None
        if not isinstance(cost, dict):
            return
        if isinstance(cost.get("throttleStatus"), dict):
            with self._books:
                self.budget.observe(cost["throttleStatus"], self._clock(), others_in_flight=self._in_flight > 1)
        if isinstance(cost.get("requestedQueryCost"), (int, float)):
            self._costs[document] = float(cost["requestedQueryCost"])

    def _raise_for_status(self, response: httpx.Response, body: Any) -> None:
        message = body.get("errors") if isinstance(body, dict) else None
        if response.status_code in (402, 423):
            # A frozen (402) or locked (423) shop: only the merchant can fix it.
            raise AuthError(f"the shop is {'frozen' if response.status_code == 402 else 'locked'}: {message}",
                            status=response.status_code, detail=body)
        self.http.raise_for_status(response, body_detail=message)

    def _data(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = body.get("errors")
        if errors:
            raise _error_from(errors)
        data = body.get("data")
        if not isinstance(data, dict):
            raise ContractError("Shopify answered without data or errors", detail=body)
        return data

    # -- bulk result -----------------------------------------------------------------------------

    def _download_jsonl(self, url: str) -> Iterator[dict[str, Any]]:
        """The bulk result file, streamed line by line: memory stays flat whatever the file's size."""
        # The file sits behind a signed storage URL: a separate client, without the access token.
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._services.http_client(origin, limits=self._limits) as storage, _stream_get(storage, url) as response:
            number = 0
            try:
                for line in response.iter_lines():
                    number += 1
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line)
                    except ValueError:
                        raise ContractError(f"bulk result line {number} is not JSON") from None
            except httpx.TransportError as error:
                raise TransientError(f"the bulk result download broke off after line {number}: {error}") from None


@contextmanager
def _stream_get(storage: Any, url: str) -> Iterator[httpx.Response]:
    """GET ``url`` through the hub client as a streaming response (its body is read as it is consumed).

    ``HubHttpClient`` has no streaming call (hub/http.py), so this takes its rate-limit token, sends
    with the underlying httpx client (same transport, headers and redaction) and counts the request.
    A failed status is read and raised the hub's way; the download is not replayed here: a broken
    file download fails the import (TransientError), which the job retries as a whole.
    """
    client = getattr(storage, "_client", None)
    if not isinstance(client, httpx.Client):  # a client without the hub internals: whole body
        response = storage.get(url)
        storage.raise_for_status(response)
        yield response
        return
    storage.bucket.acquire()
    request = client.build_request("GET", url)
    try:
        response = client.send(request, stream=True)
    except httpx.TransportError as error:
        raise TransientError(f"the bulk result download failed: {error}") from None
    try:
        count = getattr(storage, "_count", None)
        if count is not None:
            count(request)
        if response.status_code >= 400:
            response.read()
            storage.raise_for_status(response)
        yield response
    finally:
        response.close()


# -- documents used by the client itself ------------------------------------------------------------

BULK_RUN = """
mutation RunBulk($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}"""

BULK_POLL = """
query PollBulk($id: ID!) {
  bulkOperation(id: $id) { id status errorCode objectCount url }
}"""


# -- helpers ----------------------------------------------------------------------------------------


def dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            raise ContractError(f"Shopify's answer has no {'.'.join(path)}", detail=data)
        data = data.get(key)
    return data


def nodes_of(connection: Any, where: str) -> list[dict[str, Any]]:
    """The nodes of a connection given as ``nodes`` or ``edges { node }``."""
    if not isinstance(connection, dict):
        raise ContractError(f"{where} is not a connection", detail=connection)
    if isinstance(connection.get("nodes"), list):
        return connection["nodes"]
    if isinstance(connection.get("edges"), list):
        return [edge.get("node") for edge in connection["edges"]]
    raise ContractError(f"{where} has neither nodes nor edges", detail=connection)


def _json(response: httpx.Response) -> Any:
    try:
        return response_json(response)
    except ValueError:
        return None


def _throttled(body: dict[str, Any]) -> bool:
    return any(_code(error) == "THROTTLED" for error in body.get("errors") or [] if isinstance(error, dict))


def _code(error: dict[str, Any]) -> str | None:
    extensions = error.get("extensions")
    return extensions.get("code") if isinstance(extensions, dict) else None


def _body_from_detail(detail: Any) -> Any:
    """The JSON body of a 429 from the hub client's error detail, when it fits in the excerpt."""
    text = detail.get("body") if isinstance(detail, dict) else None
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _error_from(errors: Any) -> Exception:
    """Map top-level GraphQL errors onto the hub's vocabulary."""
    if not isinstance(errors, list):
        return ContractError(f"Shopify error: {errors}", detail=errors)
    codes = {_code(e) for e in errors if isinstance(e, dict)}
    message = "; ".join(str(e.get("message")) for e in errors if isinstance(e, dict)) or str(errors)
    if "ACCESS_DENIED" in codes:
        return AuthError(f"Shopify denied access: {message}", detail=errors)
    if "INTERNAL_SERVER_ERROR" in codes:
        return TransientError(f"Shopify failed: {message}", detail=errors)
    if any(isinstance(e, dict) and (e.get("extensions") or {}).get("problems") for e in errors):
        return RejectedItem(f"Shopify refused the input: {message}", detail=errors)
    # Anything else means the query itself is wrong for this API version: a bug to report.
    return ContractError(f"Shopify refused the query: {message}", detail=errors)
