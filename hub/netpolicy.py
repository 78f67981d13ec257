"""Where an account's HTTP may go: the base-URL policy that keeps the hub from being aimed inwards.

An admin can point an account at a custom API host (``ChannelAccount.base_url``). Left unchecked,
that is a server-side request forgery: the hub's workers would send the account's credentials and
requests to ``http://127.0.0.1:6379/``, the cloud metadata service at ``169.254.169.254`` or any
host on the private network. :func:`check_base_url` refuses such URLs:

- every environment: only ``http://`` and ``https://``; no user name or password in the URL (they
  would be logged and sent in clear; credentials belong in the account's encrypted credentials);
  no whitespace or control characters; a host is required;
- every environment but ``sandbox`` (``staging`` is a remote's staging system, as public as its
  production): ``https://`` only, and the host must be public. An IP literal (also the legacy forms
  ``127.1``, ``0x7f000001``, ``2130706433`` that resolvers accept) and *every* address the name
  resolves to must be globally routable: loopback, private, link-local, shared (CGNAT), reserved,
  multicast, unspecified and documentation ranges are refused, including IPv4 addresses hidden in
  IPv6 (``::ffff:10.0.0.1``, 6to4, Teredo). ``localhost`` and ``*.localhost`` are refused unresolved.

Sandbox accounts may use any http(s) host, loopback included: that is how the demo and the tests
reach the bundled sandboxes.

The check runs when the URL is saved. DNS can change afterwards (rebinding), so the HTTP service
should check the connected address again; see docs/security.md.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from hub.errors import ValidationError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

SANDBOX = "sandbox"
SCHEMES = ("http", "https")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
# What inet_aton accepts besides dotted quads: 1 to 4 parts, decimal, octal or hex ("0x7f.1", "2130706433").
_LEGACY_IPV4 = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$")


def check_base_url(url: str, environment: str, *, resolve: Resolver = socket.getaddrinfo) -> str:
    """``url`` (trimmed) when an account in ``environment`` may use it; else ``ValidationError``
    with ``field="base_url"`` and a message saying what to change.

    ``resolve`` is ``socket.getaddrinfo`` or a stand-in with its signature (tests inject one).
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise _refuse("is empty; give the API's address, e.g. https://api.example.com")
    if _CONTROL_OR_SPACE.search(text):
        raise _refuse("contains spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise _refuse(f"is not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _refuse(f"must start with https:// (not {parts.scheme + ':' if parts.scheme else 'a bare host'})")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _refuse("must not contain a user name or password; enter credentials in the account's credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse("has no host name")
    if environment == SANDBOX:
        return text
    if scheme != "https":
        raise _refuse(f"must use https:// for a {environment} account (http:// is allowed only for sandbox accounts)")
    literal = _ip_literal(host)
    if literal is not None:
        problem = address_problem(literal)
        if problem:
            raise _refuse(f"points to {literal}, {problem}; a {environment} account must use a public host")
        return text
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        raise _refuse(f"points to {host}, this machine; a {environment} account must use a public host")
    for address in _resolve(host, port or (443 if scheme == "https" else 80), resolve):
        problem = address_problem(address)
        if problem:
            raise _refuse(f"host {host} resolves to {address}, {problem}; a {environment} account must use a public host")
    return text


def address_problem(address: Address) -> str | None:
    """Why the hub must not connect to ``address`` for a non-sandbox account; None when it is public."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = address_problem(embedded)
        return f"which carries {embedded}: {inner}" if inner else None
    if address.is_loopback:
        return "a loopback address (this machine)"
    if address.is_link_local:
        return "a link-local address (e.g. a cloud metadata service)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private-network address"
    if address.is_reserved or not address.is_global:
        return "a reserved or non-public address"
    return None


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]  # (server, client): the client is where traffic ends up
    return None


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None  # e.g. 999.1.1.1: not an address, so it would be looked up as a name
    return None


def _resolve(host: str, port: int, resolve: Resolver) -> list[Address]:
    try:
        answers = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise _refuse(f"host {host} cannot be resolved ({error}); check the address") from None
    addresses: list[Address] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(str(answer[4][0]).split("%", 1)[0]))
        except (IndexError, TypeError, ValueError):
            raise _refuse(f"host {host} resolved to something that is not an address: {answer!r}") from None
    if not addresses:
        raise _refuse(f"host {host} resolves to no address")
    return addresses


def _refuse(problem: str) -> ValidationError:
    return ValidationError({"base_url": [f"the base URL {problem}"]}, field="base_url")


__all__ = ["Resolver", "address_problem", "check_base_url"]
