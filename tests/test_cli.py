"""The command line as an operator uses it: a fresh instance folder, real subprocesses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    return tmp_path / "instance"


REPO = Path(__file__).resolve().parent.parent


def channelhub(instance: Path, *args: str, input: str | None = None, site: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELHUB_")}
    env["CHANNELHUB_INSTANCE"] = str(instance)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, env=env,
                          input=input, timeout=120, cwd=instance.parent)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_database_upgrade_is_repeatable(instance):
    assert "is at head" in ok(channelhub(instance, "db", "upgrade"))
    assert "is at head" in ok(channelhub(instance, "db", "upgrade"))
    assert ok(channelhub(instance, "db", "current")).strip() != ""
    assert (instance / "channelhub.db").exists()


def test_operator_sets_up_an_organisation_and_an_admin(instance):
    assert "organisation acme created" in ok(channelhub(instance, "org", "create", "Acme Fashion", "--slug", "acme"))
    created = channelhub(instance, "user", "create", "Boss@Acme.test", "--org", "acme", "--role", "admin",
                         input="a long enough secret\na long enough secret\n")
    assert "user boss@acme.test created (admin)" in ok(created)
    events = ok(channelhub(instance, "events"))
    assert "organisation.created" in events and "user.created" in events
    database = sqlite3.connect(instance / "channelhub.db")
    (password_hash,) = database.execute("select password_hash from users").fetchone()
    assert "a long enough secret" not in password_hash and password_hash.startswith("scrypt:")


@pytest.mark.parametrize("args,message", [
    (["org", "create", "Acme", "--slug", "Bad Slug"], "slug: use lower-case letters"),
    (["user", "create", "nobody@x.test", "--org", "ghost", "--password", "long enough pw"], "no organisation called 'ghost'"),
    (["account", "transition", "999", "activate"], "no account with id 999"),
    (["run", "1", "orders"], "no channel account 1"),
])
def test_bad_input_gets_one_clear_line_and_no_traceback(instance, args, message):
    result = channelhub(instance, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_short_password_is_refused(instance):
    ok(channelhub(instance, "org", "create", "Acme", "--slug", "acme"))
    result = channelhub(instance, "user", "create", "a@acme.test", "--org", "acme", "--password", "short")
    assert result.returncode == 1 and "password: must be at least 10 characters" in result.stderr


def test_fleet_commands_need_redis(instance):
    result = channelhub(instance, "worker", "--burst")
    assert result.returncode != 0 and "CHANNELHUB_REDIS_URL" in result.stderr


MEMORY_PLUGIN = """
    from tests.memory_channel import MemoryPlugin

    plugin = MemoryPlugin()
    channelhub_register_channels = plugin.channelhub_register_channels
"""


def test_account_lifecycle_from_the_command_line(instance, tmp_path):
    from tests.fixtures.fakedist import install_fake_plugin

    site = tmp_path / "site"
    install_fake_plugin(site, dist_name="channelhub-memory", version="0.0.1", entry_name="memory",
                        module="channelhub_memory", source=MEMORY_PLUGIN)
    run = lambda *args: channelhub(instance, *args, site=site)  # noqa: E731
    assert "memory: In-memory test channel" in ok(run("channels"))
    ok(run("org", "create", "Acme", "--slug", "acme"))
    missing = run("account", "create", "--org", "acme", "--name", "Mem", "--plugin", "memory", "--credential", "nope=1")
    assert missing.returncode == 1 and "token: Missing data for required field" in missing.stderr
    created = ok(run("account", "create", "--org", "acme", "--name", "Mem", "--plugin", "memory",
                     "--credential", "token=tok-very-secret-123", "--setting", "remote=cli"))
    assert "account 1 'Mem' created in setup" in created
    assert "now testing" in ok(run("account", "transition", "1", "activate"))
    assert "30 days of testing left" in ok(run("account", "list"))
    assert "orders on" in ok(run("account", "flow", "1", "orders", "on"))
    refused = run("account", "flow", "1", "reconciler", "on")
    assert refused.returncode == 1 and "Turn Listings on first" in refused.stderr
    assert "now live" in ok(run("account", "transition", "1", "go-live"))
    illegal = run("account", "transition", "1", "back-to-setup")
    assert illegal.returncode == 1 and "cannot go back to Setup" in illegal.stderr
    assert "now paused" in ok(run("account", "transition", "1", "pause"))
    assert "now live" in ok(run("account", "transition", "1", "resume"))
    events = ok(run("events"))
    assert events.count("account.transition") == 4 and "[cli]" in events
    raw = (instance / "channelhub.db").read_bytes() + b"".join(p.read_bytes() for p in instance.glob("*-wal"))
    assert b"tok-very-secret-123" not in raw


def test_a_production_account_needs_an_https_public_base_url(instance, tmp_path):
    from tests.fixtures.fakedist import install_fake_plugin

    site = tmp_path / "site"
    install_fake_plugin(site, dist_name="channelhub-memory", version="0.0.1", entry_name="memory",
                        module="channelhub_memory", source=MEMORY_PLUGIN)
    ok(channelhub(instance, "org", "create", "Acme", "--slug", "acme", site=site))
    refused = channelhub(instance, "account", "create", "--org", "acme", "--name", "Prod", "--plugin", "memory",
                         "--environment", "production", "--base-url", "http://127.0.0.1:8101",
                         "--credential", "token=t0ken-xyz", "--setting", "remote=x", site=site)
    assert refused.returncode == 1 and "base_url" in refused.stderr and "Traceback" not in refused.stderr
    listed = ok(channelhub(instance, "account", "list", site=site))
    assert "Prod" not in listed  # refused before anything was stored
