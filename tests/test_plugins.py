"""Plugins load from the ``channelhub`` entry-point group, can be restricted, and are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.errors import ConfigurationError
from hub.plugins import get_plugin_manager, load_plugin_manager
from tests.fixtures.fakedist import MISNAMED_HOOK_SOURCE, TEST_CHANNEL_SOURCE, install_fake_plugin


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    site = tmp_path / "site"
    install_fake_plugin(site, dist_name="channelhub-echo", version="1.2.3", entry_name="echo",
                        module="channelhub_echo", source=TEST_CHANNEL_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_point_plugin_is_discovered(site):
    pm = load_plugin_manager()
    assert "echo" in pm.channels
    assert pm.channel_class("echo").title == "Echo (test channel)"
    echo = {info.name: info for info in pm.describe()}["echo"]
    assert echo.version == "1.2.3"
    assert echo.distribution == "channelhub-echo"
    assert echo.channels == ["echo"]
    assert echo.hooks == ["channelhub_adjust_quantity", "channelhub_register_channels"]


def test_builtin_plugins_come_through_the_same_group(site):
    names = {info.name for info in load_plugin_manager().describe()}
    assert {"audit_log", "echo"} <= names


def test_restricting_to_a_subset(site):
    pm = load_plugin_manager(("audit_log",))
    assert [info.name for info in pm.describe()] == ["audit_log"]
    assert "echo" not in pm.channels


def test_restriction_from_the_environment(site, monkeypatch):
    monkeypatch.setenv("CHANNELHUB_PLUGINS", "echo")
    assert [info.name for info in get_plugin_manager().describe()] == ["echo"]


def test_unknown_name_in_restriction_is_a_clear_error(site):
    with pytest.raises(ConfigurationError, match="CHANNELHUB_PLUGINS names nosuch, which is not installed"):
        load_plugin_manager(("echo", "nosuch"))


def test_misnamed_hookimpl_is_caught_at_start_up(site):
    install_fake_plugin(site, dist_name="channelhub-typo", version="0.1", entry_name="typo",
                        module="channelhub_typo", source=MISNAMED_HOOK_SOURCE)
    with pytest.raises(ConfigurationError, match="channelhub_register_channel"):
        load_plugin_manager()
    # Leaving the broken plugin out lets the hub start.
    assert "echo" in load_plugin_manager(("echo",)).channels


def test_unknown_channel_name_lists_the_loaded_ones(site):
    with pytest.raises(ConfigurationError, match="no channel named 'nope' is loaded \\(loaded: echo"):
        load_plugin_manager().channel_class("nope")


def _cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(site), **env}
    environment.pop("CHANNELHUB_PLUGINS", None) if "CHANNELHUB_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-c", "from hub.cli import main; main()", *args],
                          capture_output=True, text=True, env=environment, timeout=60)


def test_cli_lists_plugins_with_version_channels_and_hooks(site):
    result = _cli(["plugins"], site)
    assert result.returncode == 0, result.stderr
    assert "echo 1.2.3 (channelhub_echo)" in result.stdout
    assert "channels: echo" in result.stdout
    assert "hooks:    channelhub_adjust_quantity, channelhub_register_channels" in result.stdout
    listed = json.loads(_cli(["plugins", "--json"], site).stdout)
    assert {entry["name"] for entry in listed} >= {"audit_log", "echo"}


def test_cli_respects_the_restriction_and_reports_a_broken_plugin(site):
    only_audit = _cli(["plugins"], site, CHANNELHUB_PLUGINS="audit_log")
    assert "echo" not in only_audit.stdout and "audit_log" in only_audit.stdout
    install_fake_plugin(site, dist_name="channelhub-typo", version="0.1", entry_name="typo",
                        module="channelhub_typo", source=MISNAMED_HOOK_SOURCE)
    broken = _cli(["plugins"], site)
    assert broken.returncode == 1
    assert "plugin 'typo' is invalid" in broken.stderr and "Traceback" not in broken.stderr


def test_cli_help_runs():
    result = subprocess.run([sys.executable, "-m", "hub", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("plugins", "channels", "db", "worker", "scheduler", "docs"):
        assert command in result.stdout
