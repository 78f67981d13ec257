"""The HTTP client for the Uphance API: the three-step login, token renewal, paging and errors.

Uphance logs in with the user's own email and password (an OAuth2 password grant), then the client
lists the user's organisations and registers one as current. The current organisation is server-side
state tied to the token, so every new token (refreshed or not) selects it again. Tokens are renewed
with the refresh grant shortly before they expire, falling back to a fresh password login when the
refresh token is refused, and once more when a call is answered 401 despite a live-looking token.
The session (token, refresh token, organisation) is shared by the clients of one process
(``hub.tokens.TOKENS``): a worker's next run of the same login starts with it instead of logging in
again, three round trips fewer.

Lists come 100 records a page under a plural key beside a ``meta`` block; ``pages`` follows
``meta.next_page`` until it is null. Errors: the body shape is undocumented (clients read ``message``
or ``error``), so this client reads either, plus ``errors`` for the field when present.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from hub.errors import AuthError, ContractError, RejectedItem, TransientError
from hub.http import response_json
from hub.tokens import TOKENS

DEFAULT_BASE_URL = "https://api.uphance.com"
# Renew this long before the announced expiry, so a token never dies between check and use.
RENEW_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str | None
    expires_at: float
    organisation: dict[str, Any]
    organisations: list[dict[str, Any]] = field(default_factory=list)  # what the login could see


class UphanceClient:
    """Talks to one Uphance account through the hub's HTTP client (retries, rate limit, redaction)."""

    def __init__(self, http: Any, *, email: str, password: str, organisation_id: int | None,
                 clock: Callable[[], float], base_url: str = DEFAULT_BASE_URL, transport: Any = None) -> None:
        self.http = http
        self._email = email
        self._password = password
        self._organisation_id = organisation_id
        self._clock = clock
        self._session: Session | None = None
        # Sessions are shared per login and organisation (the organisation is tied to the token), and
        # per injected transport, so a sandbox never sees a token another one issued.
        self._transport = transport
        self._session_key = (base_url, email.lower(), hashlib.sha256(password.encode()).hexdigest(), organisation_id)

    # -- session ----------------------------------------------------------

    @property
    def organisation(self) -> dict[str, Any]:
        return self._ensure_session().organisation

    @property
    def organisations(self) -> list[dict[str, Any]]:
        """The organisations the login sees (listed at its password login)."""
        return self._ensure_session().organisations

    def login(self) -> Session:
        """All three steps: a password-grant token, the organisations, the current organisation."""
        token = self._token({"grant_type": "password", "email": self._email, "password": self._password})
        organisations = self._list_organisations(token["access_token"])
        return self._open(token, self._choose_organisation(organisations), organisations)

    def renew(self) -> Session:
        """A new token by the refresh grant (a password login if that is refused), organisation re-selected."""
        old = self._session
        if old is None or not old.refresh_token:
            return self.login()
        try:
            token = self._token({"grant_type": "refresh_token", "refresh_token": old.refresh_token})
        except AuthError:
            return self.login()
        return self._open(token, old.organisation, old.organisations)

    def _ensure_session(self) -> Session:
        now = self._clock()
        if self._session is None or now >= self._renew_at(self._session):
            shared = TOKENS.get(self._transport, self._session_key, now)  # another run's, or one renewed meanwhile
            if shared is not None:
                self._adopt(shared[0])
            elif self._session is None:
                return self.login()
            else:
                return self.renew()
        assert self._session is not None
        return self._session

    def _adopt(self, session: Session) -> None:
        self.http.add_secrets([session.access_token, session.refresh_token or ""])
        self._session = session

    def _after_refusal(self, refused: Session) -> Session:
        """A session to replay a call answered 401: one another run renewed meanwhile (its refresh
        token has rotated, so ours would be refused), else renewed here. No run starts with the
        refused one again."""
        TOKENS.drop(self._transport, self._session_key, refused)
        shared = TOKENS.get(self._transport, self._session_key, self._clock())
        if shared is not None and shared[0] != refused:
            self._adopt(shared[0])
            return shared[0]
        return self.renew()

    def _open(self, token: dict[str, Any], organisation: dict[str, Any], organisations: list[dict[str, Any]]) -> Session:
        self._session = None
        response = self.http.post("/organisations/set_current_org", json={"organizationId": organisation["id"]},
                                  headers=_bearer(token["access_token"]), idempotent=True)
        body = self._decode(response, "POST /organisations/set_current_org")
        if response.status_code != 201 and body.get("Status") != "Updated":
            raise ContractError(f"Uphance did not confirm organisation {organisation['id']} as current: {body!r}")
        session = Session(token["access_token"], token.get("refresh_token"), _expiry(token, self._clock()),
                          organisation, organisations)
        TOKENS.put(self._transport, self._session_key, session, self._renew_at(session))
        self._session = session
        return session

    @staticmethod
    def _renew_at(session: Session) -> float:
        return session.expires_at - RENEW_MARGIN_SECONDS

    def _token(self, grant: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/oauth/token", json=grant, idempotent=True)
        if response.status_code in (400, 401):
            body = _json_or_empty(response)
            reason = body.get("error_description") or body.get("error") or response.reason_phrase
            raise AuthError(f"Uphance refused the {grant['grant_type']} grant: {reason}", status=response.status_code,
                            detail=body)
        token = self._decode(response, "POST /oauth/token")
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise ContractError("Uphance's token response has no access_token")
        self.http.add_secrets([token["access_token"], token.get("refresh_token") or ""])
        return token

    def _list_organisations(self, access_token: str) -> list[dict[str, Any]]:
        body = self._decode(self.http.get("/organisations", headers=_bearer(access_token)), "GET /organisations")
        organisations = body.get("organisations")
        if not isinstance(organisations, list) or not all(isinstance(o, dict) and "id" in o for o in organisations):
            raise ContractError("Uphance's /organisations answer has no organisations[].id")
        return organisations

    def _choose_organisation(self, organisations: list[dict[str, Any]]) -> dict[str, Any]:
        listed = ", ".join(f"{o['id']} ({o.get('name', '')})" for o in organisations) or "none"
        if self._organisation_id is None:
            if len(organisations) == 1:
                return organisations[0]
            raise AuthError(f"this Uphance login sees several organisations; set organisation_id to one of: {listed}")
        found = next((o for o in organisations if o["id"] == self._organisation_id), None)
        if found is None:
            raise AuthError(f"organisation_id {self._organisation_id} is not visible to this login; it sees: {listed}")
        return found

    # -- requests ---------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One call with a live session; a 401 renews the session once and replays the call."""
        session = self._ensure_session()
        response = self.http.request(method, path, headers=_bearer(session.access_token), **kwargs)
        if response.status_code == 401:
            session = self._after_refusal(session)
            response = self.http.request(method, path, headers=_bearer(session.access_token), **kwargs)
        return self._decode(response, f"{method} {path}")

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params)

    def pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a paged list, following ``meta.next_page`` to the end (or raising)."""
        page = 1
        while True:
            body = self.request("GET", path, params={**(params or {}), "page": page})
            records, meta = body.get(key), body.get("meta")
            if not isinstance(records, list) or not isinstance(meta, dict):
                raise ContractError(f"GET {path} page {page}: expected {key!r} and 'meta', got {sorted(body)}")
            yield from records
            following = meta.get("next_page")
            if following is None:
                return
            if not isinstance(following, int) or following <= page:
                raise ContractError(f"GET {path} page {page}: meta.next_page {following!r} does not move forward")
            page = following

    def _decode(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            self._raise(response, what)
        try:
            body = response_json(response)
        except ValueError:
            # A cut-off body is a transport failure; the call (or the job) may be replayed safely.
            raise TransientError(f"{what}: Uphance answered {response.status_code} with a body that is not JSON",
                                 status=response.status_code) from None
        if not isinstance(body, dict):
            raise ContractError(f"{what}: Uphance answered a JSON {type(body).__name__}, not an object")
        return body

    def _raise(self, response: httpx.Response, what: str) -> None:
        envelope = _json_or_empty(response)
        message = envelope.get("message") or envelope.get("error_description") or envelope.get("error") or ""
        errors = envelope.get("errors")
        field = next(iter(errors), None) if isinstance(errors, dict) else None
        status = response.status_code
        if status in (400, 404, 409, 422):
            raise RejectedItem(f"Uphance refused {what}: {message or response.reason_phrase}", field=field,
                               status=status, detail=envelope)
        self.http.raise_for_status(response, body_detail=envelope or None)

    # -- resources --------------------------------------------------------

    def channels(self) -> list[dict[str, Any]]:
        return _listed(self.get("/channels"), "channels")

    def seasons(self) -> list[dict[str, Any]]:
        return _listed(self.get("/seasons"), "seasons")

    def warehouses(self) -> list[dict[str, Any]] | None:
        """Warehouses, or None where the endpoint does not exist (it is not documented)."""
        try:
            return _listed(self.get("/warehouses"), "warehouses")
        except RejectedItem as error:
            if error.status == 404:
                return None
            raise

    def products(self) -> Iterator[dict[str, Any]]:
        return self.pages("/products", "products")

    def sales_orders_by_number(self, number: str) -> list[dict[str, Any]]:
        return list(self.pages("/sales_orders", "sales_orders", {"by_order_number": number}))

    def create_sales_order(self, sales_order: dict[str, Any]) -> dict[str, Any]:
        body = self.request("POST", "/sales_orders", json={"sales_order": sales_order})
        return _record(body, "sales_order")

    def pick_tickets(self, since_created_at: str | None = None) -> Iterator[dict[str, Any]]:
        params = {"since_created_at": since_created_at} if since_created_at else {}
        return self.pages("/pick_tickets", "pick_tickets", params)

    def stock_operation(self, operation: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        # The key makes a replay harmless, so even a POST may be retried after a timeout or 5xx.
        body = self.request("POST", "/stock_operations", idempotent=True,
                            json={"stock_operation": operation, "idempotency_key": idempotency_key})
        return _record(body, "stock_operation")

    def close(self) -> None:
        self.http.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _expiry(token: dict[str, Any], now: float) -> float:
    lifetime = token.get("expires_in")
    created = token.get("created_at")
    if not isinstance(lifetime, (int, float)):
        raise ContractError("Uphance's token response has no numeric expires_in")
    # created_at is the server's clock; trust ours if the two disagree wildly (skewed server clocks).
    start = created if isinstance(created, (int, float)) and abs(created - now) < 3600 else now
    return float(start) + float(lifetime)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response_json(response)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _listed(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    records = body.get(key)
    if not isinstance(records, list):
        raise ContractError(f"Uphance's answer has no {key!r} list")
    return records


def _record(body: dict[str, Any], key: str) -> dict[str, Any]:
    record = body.get(key)
    if not isinstance(record, dict) or "id" not in record:
        raise ContractError(f"Uphance's answer has no {key!r} object with an id")
    return record
