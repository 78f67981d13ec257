"""hub.tokens: access tokens shared by a process's channel clients."""

from __future__ import annotations

from hub.tokens import TokenCache


class Transport:  # any object a test injects; weak-referenceable like httpx's transports
    pass


def test_a_token_serves_until_its_moment_and_only_its_own_transport() -> None:
    cache, sandbox, other = TokenCache(), Transport(), Transport()
    cache.put(sandbox, ("url", "app"), "t1", expires_at=100.0)
    assert cache.get(sandbox, ("url", "app"), now=99.0) == ("t1", 100.0)
    assert cache.get(sandbox, ("url", "app"), now=100.0) is None  # run out
    assert cache.get(other, ("url", "app"), now=1.0) is None  # another sandbox never sees it
    assert cache.get(None, ("url", "app"), now=1.0) is None  # nor the real network
    assert cache.get(sandbox, ("url", "another app"), now=1.0) is None


def test_a_refused_token_is_dropped_unless_another_client_replaced_it_already() -> None:
    cache, sandbox = TokenCache(), Transport()
    cache.put(sandbox, "key", "t1", 100.0)
    cache.put(sandbox, "key", "t2", 100.0)  # another run renewed it meanwhile
    cache.drop(sandbox, "key", "t1")
    assert cache.get(sandbox, "key", 1.0) == ("t2", 100.0)
    cache.drop(sandbox, "key", "t2")
    assert cache.get(sandbox, "key", 1.0) is None
    cache.drop(sandbox, "key", "t2")  # twice is harmless


def test_tokens_of_a_transport_go_with_it() -> None:
    cache, sandbox = TokenCache(), Transport()
    cache.put(sandbox, "key", "t1", 100.0)
    assert len(cache._tables) == 1
    del sandbox
    assert len(cache._tables) == 0


def test_each_transport_has_its_own_and_the_network_one_more() -> None:
    from hub.tokens import ByTransport

    tables: ByTransport[dict[str, str]] = ByTransport(dict)
    one, two = Transport(), Transport()
    tables.of(one)["k"] = "one"
    assert tables.of(one) == {"k": "one"} and tables.of(two) == {} and tables.of(None) == {}
    tables.of(None)["k"] = "network"
    assert tables.of(one)["k"] == "one" and len(tables) == 2
    del one
    assert len(tables) == 1 and tables.of(None)["k"] == "network"
