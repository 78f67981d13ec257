"""HTTP client for the Starshipit API: both keys, the response envelope, paging and pacing.

Every call carries ``StarShipIT-Api-Key`` (which account) and ``Ocp-Apim-Subscription-Key`` (which
API tier). The tier decides the rate: 2 requests/s for a developer subscription, 20 for
production, so the hub's token bucket is built from the account's tier. Starshipit answers
``{"<resource>": ..., "success": true}`` or ``{"success": false, "errors": [{"message",
"details"}]}`` (some endpoints say ``succeeded``); both are mapped here onto hub.errors, so the
channel only ever sees payloads or the hub's error vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from hub.channel import ChannelServices, Limits
from hub.errors import AuthError, ContractError, RejectedItem
from hub.http import response_json

BASE_URL = "https://api.starshipit.com"
TIER_RATES: dict[str, float] = {"developer": 2.0, "production": 20.0}
IMPORT_MAX = 50  # orders per POST /api/orders/import
PAGE_MAX = 250  # `limit` on the order lists


# The gateway counts requests as they arrive; network jitter bunches requests that left evenly
# spaced (the first call of a connection arrives late), so pacing exactly at the limit still earns
# 429s. A tenth of headroom avoids them; Retry-After remains the backstop.
PACING_HEADROOM = 0.9


def limits_for_tier(tier: str) -> Limits:
    """The hub limits for a subscription tier. Starshipit counts requests per second, so the
    bucket holds one token: a burst would only earn a 429."""
    rate = TIER_RATES[tier]
    return Limits(max_batch=IMPORT_MAX, requests_per_second=rate * PACING_HEADROOM, burst=1, page_size=PAGE_MAX,
                  documented=f"Starshipit API fundamentals: {rate:g} requests/s on the {tier} subscription (paced "
                             f"at {PACING_HEADROOM:.0%} of it); import takes at most 50 orders; lists page at most 250")


class DuplicateOrder(RejectedItem):
    """Starshipit refused an order_number it already holds (some accounts do, some do not)."""


class StarshipitClient:
    """One Starshipit account, through the hub's HTTP client (retries, Retry-After, token bucket)."""

    def __init__(self, services: ChannelServices, *, api_key: str, subscription_key: str, tier: str,
                 base_url: str | None = None) -> None:
        self.limits = limits_for_tier(tier)
        self.http = services.http_client(
            (base_url or BASE_URL).rstrip("/"),
            limits=self.limits,
            headers={
                "StarShipIT-Api-Key": api_key,
                "Ocp-Apim-Subscription-Key": subscription_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )

    @property
    def calls(self) -> int:
        return self.http.calls

    def close(self) -> None:
        self.http.close()

    def probe(self) -> int:
        """One cheap authenticated call; returns how many unshipped orders of the last day exist."""
        envelope = self._call("GET", "/api/orders/unshipped", params={"limit": 1, "page": 1, "ids_only": "true"}) or {}
        return _total_pages(envelope)

    # -- orders ---------------------------------------------------------------------------

    def get_order(self, *, order_id: str | None = None, order_number: str | None = None) -> dict[str, Any] | None:
        """The full order, or None when Starshipit holds no such order (archived ones included)."""
        params = {"order_id": order_id} if order_id else {"order_number": order_number}
        envelope = self._call("GET", "/api/orders", params=params, missing_ok=True)
        return None if envelope is None else _resource(envelope, "order", dict)

    def create_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """POST one order. Not replayed by the HTTP client after a timeout: the caller searches first."""
        envelope = self._call("POST", "/api/orders", body={"order": order})
        return _resource(envelope, "order", dict)

    def import_orders(self, orders: list[dict[str, Any]]) -> dict[str, Any]:
        """POST up to 50 orders in one call; returns the raw envelope (its shape is not documented)."""
        if not 1 <= len(orders) <= IMPORT_MAX:
            raise ValueError(f"import takes 1 to {IMPORT_MAX} orders, got {len(orders)}")
        return self._call("POST", "/api/orders/import", body={"orders": orders}, tolerate_failure=True) or {}

    def update_order(self, order: dict[str, Any]) -> dict[str, Any]:
        envelope = self._call("PUT", "/api/orders", body={"order": order})
        return _resource(envelope, "order", dict)

    def delete_order(self, order_id: str) -> None:
        self._call("DELETE", "/api/orders/delete", params={"order_id": order_id})

    def list_orders(self, kind: str, **since: str) -> Iterator[dict[str, Any]]:
        """Every order of ``/api/orders/<kind>`` (``unshipped`` or ``shipped``), paging to the end.

        ``since`` takes ``since_last_updated`` / ``since_order_date`` (RFC 3339 UTC). Without one,
        Starshipit answers only about the last day, so callers pass one whenever they can.
        """
        if kind not in ("unshipped", "shipped"):
            raise ValueError(f"unknown order list {kind!r}")
        page, total = 1, 1
        while page <= total:
            params = {**{k: v for k, v in since.items() if v}, "limit": PAGE_MAX, "page": page}
            envelope = self._call("GET", f"/api/orders/{kind}", params=params) or {}
            yield from _resource(envelope, "orders", list)
            total = _total_pages(envelope)
            page += 1

    def track(self, *, order_number: str | None = None, tracking_number: str | None = None) -> dict[str, Any] | None:
        params = {"tracking_number": tracking_number} if tracking_number else {"order_number": order_number}
        envelope = self._call("GET", "/api/track", params=params, missing_ok=True)
        return None if envelope is None else _resource(envelope, "results", dict)

    # -- the envelope ---------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None, missing_ok: bool = False,
              tolerate_failure: bool = False) -> dict[str, Any] | None:
        response = self.http.request(method, path, params=params, json=body)
        if missing_ok and response.status_code == 404:
            return None
        envelope = _parse(response)
        if response.status_code >= 400:
            self._raise(response, envelope)
        if _succeeded(envelope) is False and not tolerate_failure:
            if missing_ok and _says_not_found(envelope):
                return None
            raise RejectedItem(f"Starshipit refused {method} {path}: {_message(envelope)}", detail=envelope)
        return envelope

    def _raise(self, response: httpx.Response, envelope: dict[str, Any]) -> None:
        status = response.status_code
        what = f"{response.request.method} {response.request.url.path}"
        message = _message(envelope)
        if status in (401, 403):
            raise AuthError(
                f"Starshipit refused the credentials ({status}) on {what}: {message}. Check the API key and the "
                "subscription key under Starshipit Settings > API.", status=status, detail=envelope)
        if status == 409:
            raise DuplicateOrder(f"Starshipit already holds this order: {message}", status=status,
                                 field="order_number", detail=envelope)
        if 400 <= status < 500 and status != 429:
            raise RejectedItem(f"Starshipit refused {what} ({status}): {message}", status=status, detail=envelope)
        self.http.raise_for_status(response, body_detail=envelope)


def _parse(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response_json(response)
    except (json.JSONDecodeError, UnicodeDecodeError):
        if response.status_code >= 400:
            return {"errors": [{"message": response.text[:200]}]}
        raise ContractError(
            f"Starshipit answered {response.request.method} {response.request.url.path} with a body that is not "
            "JSON (truncated?)", status=response.status_code) from None
    if not isinstance(payload, dict):
        raise ContractError(f"Starshipit answered with a JSON {type(payload).__name__}, not an object")
    return payload


def _succeeded(envelope: dict[str, Any]) -> bool | None:
    flag = envelope.get("success", envelope.get("succeeded"))
    return None if flag is None else bool(flag)


def _message(envelope: dict[str, Any]) -> str:
    """The errors' messages with their details (where carriers put the actionable part)."""
    errors = envelope.get("errors")
    if isinstance(errors, list) and errors:
        parts = []
        for error in errors:
            if isinstance(error, dict):
                text = " - ".join(str(error[k]) for k in ("message", "details") if error.get(k))
                parts.append(text or json.dumps(error))
            else:
                parts.append(str(error))
        return "; ".join(parts)
    # The API gateway (APIM) answers key problems in its own shape.
    return str(envelope.get("message") or envelope.get("Message") or "no error message")


def _says_not_found(envelope: dict[str, Any]) -> bool:
    return "not found" in _message(envelope).lower()


def _resource(envelope: dict[str, Any] | None, key: str, kind: type) -> Any:
    value = (envelope or {}).get(key)
    if not isinstance(value, kind):
        raise ContractError(f"Starshipit answered without `{key}` ({kind.__name__})", detail={"field": key})
    return value


def _total_pages(envelope: dict[str, Any]) -> int:
    total = envelope.get("total_pages")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise ContractError(f"Starshipit list without a valid total_pages: {total!r}", detail={"field": "total_pages"})
    return total
