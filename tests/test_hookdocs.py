"""Every hook is documented, with an example, and docs/hooks.md matches the hookspecs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.hookdocs import hookspec_functions, render_hooks_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "hooks.md"


@pytest.mark.parametrize("hook", hookspec_functions(), ids=lambda function: function.__name__)
def test_every_hook_has_a_docstring_with_an_example(hook):
    doc = hook.__doc__ or ""
    assert len(doc.strip()) > 40, f"{hook.__name__} is undocumented"
    assert "Example" in doc, f"{hook.__name__} has no example"


def test_the_hook_reference_is_up_to_date():
    assert DOCS.read_text() == render_hooks_markdown(), "run `channelhub docs hooks` and commit docs/hooks.md"


def test_the_reference_names_every_hook():
    text = DOCS.read_text()
    for hook in hookspec_functions():
        assert f"## `{hook.__name__}(" in text
