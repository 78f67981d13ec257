"""``hub.netpolicy.check_base_url``: a production account cannot be aimed at this machine or the
private network (SSRF); sandbox accounts may use loopback. The resolver is injected: no real DNS."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import ValidationError
from hub.netpolicy import address_problem, check_base_url

PUBLIC_V4, PUBLIC_V6 = "93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"


def resolver(*addresses: str) -> Any:
    """A getaddrinfo stand-in answering ``addresses`` for every name, and recording the questions."""
    asked: list[tuple[Any, ...]] = []

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        asked.append((host, port))
        return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in addresses]

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


def no_dns(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("this URL must be decided without a DNS lookup")


def refused(url: str, environment: str = "production", resolve: Any = no_dns) -> str:
    with pytest.raises(ValidationError) as caught:
        check_base_url(url, environment, resolve=resolve)
    assert caught.value.field == "base_url" and list(caught.value.messages) == ["base_url"]
    return str(caught.value)


def test_a_public_https_host_is_accepted_and_trimmed() -> None:
    resolve = resolver(PUBLIC_V4, PUBLIC_V6)
    assert check_base_url("  https://api.example.com/v2 ", "production", resolve=resolve) == "https://api.example.com/v2"
    assert resolve.asked == [("api.example.com", 443)]
    assert check_base_url("https://api.example.com:8443", "production", resolve=resolve)
    assert resolve.asked[-1] == ("api.example.com", 8443)


def test_production_needs_https() -> None:
    assert "https" in refused("http://api.example.com")
    assert "https" in refused("HTTP://api.example.com", "staging")


@pytest.mark.parametrize("url", ["ftp://api.example.com", "file:///etc/passwd", "gopher://127.0.0.1:6379/_PING",
                                 "javascript:alert(1)", "api.example.com", "//api.example.com", ""])
@pytest.mark.parametrize("environment", ["sandbox", "production"])
def test_only_http_and_https_urls_in_any_environment(url: str, environment: str) -> None:
    refused(url, environment)


@pytest.mark.parametrize("url", ["https://user:pw@api.example.com", "https://user@api.example.com",
                                 "https://api.example.com@127.0.0.1/", "http://:pw@localhost"])
@pytest.mark.parametrize("environment", ["sandbox", "production"])
def test_credentials_in_the_url_are_refused_in_any_environment(url: str, environment: str) -> None:
    assert "user name or password" in refused(url, environment)


@pytest.mark.parametrize("url", ["https://api.exa mple.com", "https://api.example.com/\r\nHost: evil", "https://a\x00b.com",
                                 "https://api.example.com:99999", "https://[::1", "https://"])
def test_malformed_urls_are_refused_with_a_message(url: str) -> None:
    refused(url, "sandbox")


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.255.255.254", "[::1]", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "[fe80::1]", "[fc00::1]", "[fd12:3456::1]", "0.0.0.0", "[::]", "100.64.0.1", "224.0.0.1", "240.0.0.1",
    "255.255.255.255", "198.18.0.1", "192.0.2.10", "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]",
    "[2002:7f00:1::]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # 6to4 and Teredo wrapping loopback
    "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "0x7f.0.0.1",  # what resolvers accept as 127.0.0.1
])
def test_non_public_ip_literals_are_refused_without_dns(host: str) -> None:
    message = refused(f"https://{host}/api")
    assert "public host" in message


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST.", "api.localhost", "x.y.localhost"])
def test_localhost_names_are_refused_without_dns(host: str) -> None:
    assert "this machine" in refused(f"https://{host}:8443")


@pytest.mark.parametrize("answer", ["127.0.0.1", "10.0.0.8", "169.254.169.254", "::1", "fd00::5", "::ffff:192.168.0.1"])
def test_a_name_resolving_to_a_non_public_address_is_refused(answer: str) -> None:
    message = refused("https://innocent.example.com", resolve=resolver(answer))
    assert f"resolves to {ipaddress.ip_address(answer)}" in message


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    # A name answering several addresses is tried address by address; any of them may be the one used.
    refused("https://mixed.example.com", resolve=resolver(PUBLIC_V4, "10.0.0.1"))


def test_an_unresolvable_name_is_refused_with_a_hint() -> None:
    def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    assert "cannot be resolved" in refused("https://no-such-host.example", resolve=fail)
    assert "no address" in refused("https://empty.example", resolve=lambda *a, **k: [])


@pytest.mark.parametrize("url", ["http://127.0.0.1:8001", "http://localhost:5000/api", "https://[::1]:8443",
                                 "http://10.0.0.5", "http://sandbox.internal"])
def test_sandbox_accounts_may_use_loopback_and_private_hosts(url: str) -> None:
    assert check_base_url(url, "sandbox", resolve=no_dns) == url


@pytest.mark.parametrize("address", [PUBLIC_V4, PUBLIC_V6, "8.8.8.8", "1.1.1.1"])
def test_public_addresses_have_no_problem(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None
    assert check_base_url(f"https://{address if ':' not in address else f'[{address}]'}/", "production", resolve=no_dns)


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_every_address_python_does_not_call_global_is_refused(address: Any) -> None:
    """Property: the policy never lets through what the ipaddress module says is not global."""
    embedded = getattr(address, "ipv4_mapped", None) or getattr(address, "sixtofour", None)
    verdict = address_problem(address)
    if not address.is_global or address.is_multicast or (embedded is not None and not embedded.is_global):
        assert verdict is not None, address
    host = f"[{address}]" if address.version == 6 else str(address)
    try:
        check_base_url(f"https://{host}/", "production", resolve=no_dns)
    except ValidationError as error:
        assert verdict is not None and error.field == "base_url"
    else:
        assert verdict is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_gives_a_url_or_a_validation_error(text: str) -> None:
    try:
        check_base_url(text, "production", resolve=resolver(PUBLIC_V4))
    except ValidationError as error:
        assert error.field == "base_url" and str(error)


def test_the_api_refuses_an_inward_base_url_for_a_production_account(app: Any, world: Any, hub: Any) -> None:
    """Wiring: ``PATCH /api/v1/accounts/{id}`` runs the policy with the account's environment."""
    from hub.models import ChannelAccount

    headers = {"Authorization": f"Bearer {world.tokens['a-admin']}"}
    client = app.test_client()
    created = client.post("/api/v1/accounts", headers=headers, json={
        "name": "Live shop", "plugin": "memory", "environment": "production",
        "credentials": {"token": "tok-0123456789abcdef"}, "settings": {"remote": "live"}}).get_json()
    for url in ("https://127.0.0.1:6379/", "http://api.example.com", "https://169.254.169.254/latest/meta-data",
                "https://admin:pw@api.example.com", "https://localhost/"):
        response = client.patch(f"/api/v1/accounts/{created['id']}", headers=headers, json={"hub": {"base_url": url}})
        assert response.status_code == 400 and "base_url" in response.get_json()["fields"], url
    sandbox = world.ids["a"]["account"]
    ok = client.patch(f"/api/v1/accounts/{sandbox}", headers=headers, json={"hub": {"base_url": "http://127.0.0.1:8001"}})
    assert ok.status_code == 200, ok.get_json()
    with hub.db.session() as session:
        assert session.get(ChannelAccount, created["id"]).base_url is None
        assert session.get(ChannelAccount, sandbox).base_url == "http://127.0.0.1:8001"
