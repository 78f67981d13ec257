"""The REST API fuzzed from its own OpenAPI document with schemathesis, in process (WSGI), as org A's
admin (a real bearer token): schema-valid and schema-invalid requests, path ids random or real.
No request gets a 500; every refusal is JSON with an ``error`` message; nothing of the other
organisation changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy import func, select

from hub.app import Hub
from hub.models import ChannelAccount, Label, Order, Product
from hub.plugins import ChannelhubPluginManager

from tests.security.helpers import built_in_plugin_manager
from tests.web.conftest import World

EXAMPLES = 40  # per operation and generation mode (19 operations x 2 modes), about 15 s in all
REAL = {"account_id": "account", "label_id": "label", "product_id": "product", "order_id": "order", "run_id": "run"}


def other_organisation(hub: Hub, world: World) -> dict[str, Any]:
    """A fingerprint of organisation B's rows that any request of A's admin could conceivably touch."""
    b = world.ids["b"]["organisation"]
    with hub.db.session() as session:
        return {model.__name__: sorted(repr(sorted((c.key, getattr(row, c.key)) for c in model.__table__.columns
                                                   if c.key not in ("updated_at",)))
                                       for row in session.scalars(select(model).where(model.organisation_id == b)))
                for model in (ChannelAccount, Label, Order, Product)}


def test_the_api_never_answers_500_and_always_explains_a_refusal(app: Flask, hub: Hub, world: World) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    headers = {"Authorization": f"Bearer {world.tokens['a-admin']}"}
    real = {name: world.ids["a"][key] for name, key in REAL.items()} | {"flow": "listings"}
    before = other_organisation(hub, world)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 19, [op.label for op in operations]
    problems = [problem for operation in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                for problem in fuzz(operation, mode, headers, real)]
    assert not problems, "\n".join(problems)
    assert other_organisation(hub, world) == before


def fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str], real: dict[str, Any]) -> list[str]:
    """EXAMPLES requests of one operation; the first problem found, if any (no shrinking: fast)."""
    fixed = {p.name: real[p.name] for p in operation.path_parameters if p.name in real}
    strategies = [operation.as_strategy(generation_mode=mode)]
    if fixed:
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=fixed))

    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=st.one_of(strategies))
    def call(case: Any) -> None:
        response = case.call(headers=headers)
        where = f"{operation.label} [{mode.value}] {case.path_parameters} {case.query} {str(case.body)[:200]}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            body = response.json()
            assert isinstance(body, dict) and str(body.get("error", "")).strip(), f"{where}: {response.text[:300]}"

    try:
        call()
    except AssertionError as error:
        return [str(error).splitlines()[0]]
    except Exception as error:  # noqa: BLE001 - an exception escaping the app is a 500 too
        return [f"{operation.label} [{mode.value}]: {type(error).__name__}: {str(error)[:300]}"]
    return []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30) | st.sampled_from(["", "x" * 20_000, "\x00", "https://127.0.0.1/", "AU"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def channel_fields(plugin: str) -> st.SearchStrategy[dict[str, Any]]:
    from hub.plugins import get_plugin_manager

    channel = get_plugin_manager().channel_class(plugin)
    names = sorted({*channel.credentials_schema().fields, *channel.settings_schema().fields, "unknown"})
    return st.dictionaries(st.sampled_from(names), json_values, max_size=5)


@pytest.fixture
def plugin_manager() -> Iterator[ChannelhubPluginManager]:
    yield from built_in_plugin_manager()


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
@given(data=st.data())
def test_creating_accounts_of_every_channel_with_junk_is_refused_cleanly(app: Flask, hub: Hub, world: World,
                                                                         data: st.DataObject) -> None:
    """The channels' own schemas (nested, lists, numbers, e-mails) meet junk through the API: 201 or a
    400 naming the fields, and a refused request leaves no account behind."""
    plugin = data.draw(st.sampled_from(["memory", "shopify", "uphance", "starshipit"]))
    body = {"name": data.draw(st.text(min_size=1, max_size=20)), "plugin": plugin,
            "environment": data.draw(st.sampled_from(["sandbox", "production", "staging", "moon"])),
            "credentials": data.draw(channel_fields(plugin)), "settings": data.draw(channel_fields(plugin))}
    with hub.db.session() as session:
        before = session.scalar(select(func.count()).select_from(ChannelAccount))
    response = app.test_client().post("/api/v1/accounts", json=body,
                                      headers={"Authorization": f"Bearer {world.tokens['a-admin']}"})
    assert response.status_code in (201, 400), response.get_data(as_text=True)[:500]
    with hub.db.session() as session:
        after = session.scalar(select(func.count()).select_from(ChannelAccount))
    if response.status_code == 400:
        assert response.get_json()["error"] and after == before
    else:
        assert after == before + 1
