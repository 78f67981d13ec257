"""The plugin manager: loads every plugin from the ``channelhub`` entry-point group.

Built-in plugins (the four channels, the audit logger) are declared in pyproject.toml through the
same group as third-party ones, so there is one way in. ``CHANNELHUB_PLUGINS`` restricts loading to
a named subset, which is how an operator switches a misbehaving plugin off.
"""

from __future__ import annotations

import importlib.metadata
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from hub import hookspecs
from hub.config import parse_plugin_list
from hub.errors import ConfigurationError

if TYPE_CHECKING:
    from hub.channel import Channel

ENTRY_POINT_GROUP = "channelhub"


@dataclass
class PluginInfo:
    """What ``channelhub plugins`` shows about one loaded plugin."""

    name: str
    module: str
    version: str
    distribution: str
    hooks: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)


class ChannelhubPluginManager(pluggy.PluginManager):
    """A pluggy PluginManager that also keeps the channel registry and plugin metadata."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._channels: dict[str, type[Channel]] | None = None

    def register_plugin(self, plugin: Any, name: str, *, version: str = "", distribution: str = "") -> None:
        """Register one plugin object (usually a module) under ``name``, keeping its metadata."""
        self.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(name=name, module=module, version=version, distribution=distribution)
        self._channels = None

    @property
    def channels(self) -> dict[str, type[Channel]]:
        """Channel classes by ``Channel.name``, collected from ``channelhub_register_channels``."""
        return self.load_channels()

    def load_channels(self) -> dict[str, type[Channel]]:
        """Collect the channel classes now (importing their modules) rather than on first use."""
        if self._channels is None:
            self._channels = self._collect_channels()
        return self._channels

    def channel_class(self, name: str) -> type[Channel]:
        try:
            return self.channels[name]
        except KeyError:
            known = ", ".join(sorted(self.channels)) or "none"
            raise ConfigurationError(f"no channel named {name!r} is loaded (loaded: {known})") from None

    def describe(self) -> list[PluginInfo]:
        """Every loaded plugin with the hooks it implements and the channels it registers."""
        owners = self._channel_owners()
        for name, info in self.infos.items():
            plugin = self.get_plugin(name)
            info.hooks = sorted(caller.name for caller in self.get_hookcallers(plugin) or [])
            info.channels = sorted(owners.get(name, []))
        return sorted(self.infos.values(), key=lambda info: info.name)

    def _collect_channels(self) -> dict[str, type[Channel]]:
        from hub.channel import check_channel_class

        found: dict[str, type[Channel]] = {}

        def register(channel_class: type[Channel]) -> None:
            check_channel_class(channel_class)
            if channel_class.name in found and found[channel_class.name] is not channel_class:
                raise ConfigurationError(f"two plugins register a channel named {channel_class.name!r}")
            found[channel_class.name] = channel_class

        self.hook.channelhub_register_channels(register=register)
        return found

    def _channel_owners(self) -> dict[str, list[str]]:
        owners: dict[str, list[str]] = {}
        for impl in self.hook.channelhub_register_channels.get_hookimpls():
            collected: list[str] = []
            impl.function(register=lambda cls: collected.append(cls.name))
            owners[impl.plugin_name] = collected
        return owners


def load_plugin_manager(only: tuple[str, ...] | None = None) -> ChannelhubPluginManager:
    """Build a plugin manager from the installed entry points, optionally only the named ones."""
    pm = ChannelhubPluginManager()
    available = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    _refuse_unknown_names(only, available)
    for name, entry_point in sorted(available.items()):
        if only is not None and name not in only:
            continue
        dist = entry_point.dist
        pm.register_plugin(
            entry_point.load(),
            name,
            version=dist.version if dist else "",
            distribution=dist.name if dist else "",
        )
    check_plugins(pm)
    return pm


def check_plugins(pm: pluggy.PluginManager) -> None:
    """Fail start-up on a misnamed hook implementation, naming the plugin and the hook."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as error:
        name = pm.get_name(error.plugin) or repr(error.plugin)
        unknown = _unknown_hooks(pm, error.plugin)
        detail = f"it implements unknown hooks: {', '.join(unknown)}" if unknown else str(error)
        raise ConfigurationError(f"plugin {name!r} is invalid: {detail} (see docs/hooks.md)") from error


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    return sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or []
        if not caller.has_spec()
    )


def _refuse_unknown_names(only: tuple[str, ...] | None, available: dict[str, Any]) -> None:
    unknown = sorted(set(only or ()) - set(available))
    if unknown:
        installed = ", ".join(sorted(available)) or "none"
        raise ConfigurationError(
            f"CHANNELHUB_PLUGINS names {', '.join(unknown)}, which is not installed (installed: {installed})"
        )


_lock = threading.Lock()
_current: ChannelhubPluginManager | None = None


def get_plugin_manager() -> ChannelhubPluginManager:
    """The process-wide plugin manager, loaded on first use from ``CHANNELHUB_PLUGINS``."""
    global _current
    with _lock:
        if _current is None:
            import os

            _current = load_plugin_manager(parse_plugin_list(os.environ.get("CHANNELHUB_PLUGINS")))
        return _current


def set_plugin_manager(pm: ChannelhubPluginManager | None) -> None:
    """Replace (or with None, forget) the process-wide plugin manager; tests use this."""
    global _current
    with _lock:
        _current = pm
