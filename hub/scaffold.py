"""Scaffold a channel plugin: what ``channelhub plugin new NAME`` writes.

``scaffold_plugin("acme", Path("."))`` writes ``./channelhub-acme/``: a distribution
``channelhub-acme`` whose package ``channelhub_acme`` registers a MARKETPLACE channel through the
``channelhub`` entry point, with the rooms every plugin has (channel, client, mapping, sandbox),
tests that compose every suite of the conformance kit (``hub.testing``), and a README saying what to
change. It passes its own tests as generated, so an author starts from green.

The files come from ``hub/scaffold_templates/`` (``*.tmpl``, shipped as package data). A template is
plain source with ``{{token}}`` placeholders; ``__package__`` in a path becomes the package name.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path, PurePosixPath

from hub import __version__
from hub.errors import ChannelhubError

TEMPLATE_DIR = "scaffold_templates"
TEMPLATE_SUFFIX = ".tmpl"
PACKAGE_PLACEHOLDER = "__package__"
# A plugin name becomes a channel name, an entry-point name and part of a module name, so it is the
# intersection of what all three allow; 40 characters keeps generated class names readable.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TOKEN = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class ScaffoldError(ChannelhubError):
    """The scaffold cannot be written: a bad name, or a folder that already exists."""


@dataclass(frozen=True)
class PluginNames:
    """Every name the scaffold derives from the one the author chose."""

    name: str  # channel and entry-point name: "acme_shop"
    package: str  # "channelhub_acme_shop"
    distribution: str  # "channelhub-acme-shop"
    class_prefix: str  # "AcmeShop", as in AcmeShopChannel
    title: str  # "Acme Shop", shown in the UI

    @classmethod
    def of(cls, name: str) -> PluginNames:
        name = validate_name(name)
        words = [word for word in name.split("_") if word]
        return cls(
            name=name,
            package=f"channelhub_{name}",
            distribution=f"channelhub-{name.replace('_', '-')}",
            class_prefix="".join(word.capitalize() for word in words),
            title=" ".join(word.capitalize() for word in words),
        )

    def tokens(self) -> dict[str, str]:
        return {
            "name": self.name,
            "package": self.package,
            "distribution": self.distribution,
            "Class": self.class_prefix,
            "title": self.title,
            "hub_version": __version__,
        }


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a plugin, else raise ScaffoldError saying what to use instead."""
    if not NAME_PATTERN.match(name or ""):
        hint = _suggestion(name or "")
        raise ScaffoldError(
            f"plugin name {name!r} is not usable: use a lower-case Python identifier (letters, digits, "
            f"underscores; starting with a letter; at most 40 characters){hint}"
        )
    if keyword.iskeyword(name) or name.endswith("_"):
        raise ScaffoldError(f"plugin name {name!r} is not usable: it is a Python keyword or ends in '_'")
    return name


def scaffold_plugin(name: str, target: Path, *, force: bool = False) -> Path:
    """Write ``target/channelhub-NAME/`` and return its path.

    Refuses when that folder exists unless ``force``; with ``force`` the scaffold's own files are
    written over and any other file in the folder is left alone.
    """
    names = PluginNames.of(name)
    if Path(target).exists() and not Path(target).is_dir():
        raise ScaffoldError(f"{target} is not a folder")
    root = Path(target) / names.distribution
    if root.exists() and not force:
        raise ScaffoldError(f"{root} already exists; choose another --dir, or pass --force to write over it")
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} exists and is not a folder")
    tokens = names.tokens()
    for relative, template in _templates():
        destination = root / _destination(relative, names)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(render(template.read_text(encoding="utf-8"), tokens, str(relative)), encoding="utf-8")
    return root


def render(text: str, tokens: dict[str, str], source: str = "template") -> str:
    """Replace every ``{{token}}``; an unknown token is a bug in the template, reported by name."""

    def substitute(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in tokens:
            raise ScaffoldError(f"{source} uses {{{{{token}}}}}, which the scaffold does not define")
        return tokens[token]

    return _TOKEN.sub(substitute, text)


def planned_files(name: str) -> list[PurePosixPath]:
    """The files ``scaffold_plugin`` writes for ``name``, relative to the plugin folder."""
    names = PluginNames.of(name)
    return sorted(_destination(relative, names) for relative, _ in _templates())


def _templates() -> Iterator[tuple[PurePosixPath, Traversable]]:
    """Every template under hub/scaffold_templates, with its path relative to that folder."""
    root = files("hub") / TEMPLATE_DIR
    pending: list[tuple[PurePosixPath, Traversable]] = [(PurePosixPath(), root)]
    while pending:
        relative, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((relative / entry.name, entry))
            elif entry.name.endswith(TEMPLATE_SUFFIX):
                yield relative / entry.name, entry


def _destination(relative: PurePosixPath, names: PluginNames) -> PurePosixPath:
    parts = [names.package if part == PACKAGE_PLACEHOLDER else part for part in relative.parts]
    parts[-1] = parts[-1].removesuffix(TEMPLATE_SUFFIX)
    return PurePosixPath(*parts)


def _suggestion(name: str) -> str:
    candidate = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    candidate = re.sub(r"^[0-9_]+", "", candidate)[:40].rstrip("_")
    if candidate and NAME_PATTERN.match(candidate) and not keyword.iskeyword(candidate):
        return f"; try {candidate!r}"
    return ""


__all__ = ["NAME_PATTERN", "PluginNames", "ScaffoldError", "planned_files", "render", "scaffold_plugin",
           "validate_name"]
