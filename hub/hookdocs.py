"""Generates the hook reference (docs/hooks.md) from the hookspec docstrings."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from hub import hookspecs

HEADER = """# Hook reference

Generated from `hub/hookspecs.py` by `channelhub docs hooks`; do not edit by hand.
A plugin implements any of these with `@hookimpl` (from `hub.hookspecs`) and is loaded from the
`channelhub` entry-point group. Channel *methods* (`list_products`, `push_listings`, ...) are
described in [plugins.md](plugins.md).
"""


def hookspec_functions() -> list[Callable]:
    return [
        function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("channelhub_")
    ]


def render_hooks_markdown() -> str:
    parts = [HEADER]
    for function in hookspec_functions():
        signature = str(inspect.signature(function)).replace("'", "")
        parts.append(f"\n## `{function.__name__}{signature}`\n\n{inspect.cleandoc(function.__doc__ or '')}\n")
    return "".join(parts)
