"""Every hookspec is exercised: a plugin implementing it is called where the hub promises.

The channel hooks of the flows (transform_order, transform_listing, adjust_quantity) are exercised in
the flow tests; this module covers the rest and fails when a hookspec has no test implementing it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet

from hub.app import Hub
from hub.config import Config
from hub.db import Database
from hub.events import emit
from hub.hookdocs import hookspec_functions
from hub.hookspecs import hookimpl
from hub.models import Organisation
from hub.plugins import ChannelhubPluginManager, set_plugin_manager
from hub.scheduling import run_tick_hooks
from tests.fixtures.fakedist import install_fake_plugin

TESTS = Path(__file__).resolve().parent


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.ticks: list[datetime] = []

    @hookimpl
    def channelhub_event(self, event):  # type: ignore[no-untyped-def]
        self.events.append(event.kind)

    @hookimpl
    def channelhub_tick(self, db, now):  # type: ignore[no-untyped-def]
        self.ticks.append(now)

    @hookimpl
    def channelhub_register_routes(self, app):  # type: ignore[no-untyped-def]
        from web.access import allow

        @app.route("/hello-plugin")
        @allow("viewer")
        def hello_plugin():  # type: ignore[no-untyped-def]
            return "hello from a plugin"


class Broken:
    @hookimpl
    def channelhub_event(self, event):  # type: ignore[no-untyped-def]
        raise RuntimeError("the notifier is down")

    @hookimpl
    def channelhub_tick(self, db, now):  # type: ignore[no-untyped-def]
        raise RuntimeError("housekeeping failed")


def plugin_manager(*plugins: object) -> ChannelhubPluginManager:
    pm = ChannelhubPluginManager()
    for number, plugin in enumerate(plugins):
        pm.register_plugin(plugin, f"test-{number}")
    set_plugin_manager(pm)
    return pm


def database(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'hooks.db'}")
    db.create_all()
    return db


def test_every_hookspec_has_a_test_that_implements_it():
    sources = "\n".join(path.read_text() for path in TESTS.rglob("*.py"))
    untested = [hook.__name__ for hook in hookspec_functions()
                if not re.search(rf"def {hook.__name__}\(", sources)]
    assert not untested, f"hookspecs no test implements: {untested}"


def test_channelhub_event_sees_every_event_and_a_failing_one_changes_nothing(tmp_path):
    recorder = Recorder()
    plugin_manager(Broken(), recorder)
    db = database(tmp_path)
    with db.session() as session:
        organisation = Organisation(name="Acme", slug="acme")
        session.add(organisation)
        session.flush()
        emit(session, organisation_id=organisation.id, kind="test.happened", message="it happened")
    assert recorder.events == ["test.happened"]
    with db.session() as session:
        assert session.query(Organisation).count() == 1  # the broken plugin did not roll the work back


def test_channelhub_tick_runs_on_every_embedded_tick(tmp_path):
    from hub.embedded import EmbeddedRuntime

    recorder = Recorder()
    plugin_manager(Broken(), recorder)
    db = database(tmp_path)
    run_tick_hooks(db)
    runtime = EmbeddedRuntime(db)
    runtime.tick()
    assert len(recorder.ticks) == 2
    assert all(moment.tzinfo is not None for moment in recorder.ticks)


def test_channelhub_register_routes_adds_a_page(tmp_path):
    from web import create_app

    pm = plugin_manager(Recorder())
    config = Config(instance_dir=tmp_path / "instance", database_url=f"sqlite:///{tmp_path / 'web.db'}",
                    secret_key=Fernet.generate_key().decode())
    hub = Hub(config=config, db=Database(config.database_url))
    hub.db.create_all()
    assert hub.pm is pm
    app = create_app(hub, {"TESTING": True, "SECRET_KEY": "test"})
    assert "/hello-plugin" in {rule.rule for rule in app.url_map.iter_rules()}
    anonymous = app.test_client().get("/hello-plugin")
    assert anonymous.status_code in (302, 401)  # the plugin's page is behind sign-in like the others
    hub.close()


COMMAND_PLUGIN = '''
    import click

    from hub.hookspecs import hookimpl


    @hookimpl
    def channelhub_register_commands(cli):
        @cli.command("hello")
        @click.argument("name")
        def hello(name):
            """Say hello (added by a plugin)."""
            click.echo(f"hello {name} from a plugin")
'''


def test_channelhub_register_commands_adds_a_command(tmp_path):
    site = tmp_path / "site"
    install_fake_plugin(site, dist_name="channelhub-hello", version="1.0", entry_name="hello",
                        module="channelhub_hello", source=COMMAND_PLUGIN)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CHANNELHUB_")},
           "PYTHONPATH": str(site), "CHANNELHUB_INSTANCE": str(tmp_path / "instance")}
    result = subprocess.run([sys.executable, "-m", "hub", "hello", "Ada"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello Ada from a plugin"
    listed = subprocess.run([sys.executable, "-m", "hub", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert "Say hello (added by a plugin)" in listed.stdout
