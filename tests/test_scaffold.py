"""`channelhub plugin new`: the scaffold writes a plugin that is discovered and passes its own tests.

The generated plugin is never pip-installed into the shared virtualenv: a throwaway site folder
holds a dist-info whose entry_points.txt is read from the generated pyproject.toml, and the package
is found on PYTHONPATH, which is how an editable install looks to importlib.metadata.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hub.scaffold import PluginNames, ScaffoldError, planned_files, render, scaffold_plugin

NAME = "scaffoldprobe"
ROOMS = [
    "README.md",
    "pyproject.toml",
    f"channelhub_{NAME}/__init__.py",
    f"channelhub_{NAME}/channel.py",
    f"channelhub_{NAME}/client.py",
    f"channelhub_{NAME}/mapping.py",
    f"channelhub_{NAME}/sandbox.py",
    "tests/conftest.py",
    "tests/test_channel.py",
    "tests/test_conformance.py",
]
# The generated suite composes every conformance suite; fewer than this means a suite went missing.
MIN_GENERATED_TESTS = 30


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return scaffold_plugin(NAME, tmp_path_factory.mktemp("plugins"))


@pytest.fixture(scope="module")
def site(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site folder holding the dist-info a pip install of the generated pyproject would write."""
    project = tomllib.loads((generated / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = project["entry-points"]["channelhub"]
    (info / "entry_points.txt").write_text("[channelhub]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    return site


def run_installed(site: Path, generated: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python args...`` with the generated plugin installed (dist-info + package on the path)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CHANNELHUB_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(generated)])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=generated.parent,
                          timeout=120)


@pytest.mark.parametrize("name", ["Acme", "1shop", "my-shop", "", "shop!", "a" * 41, "_private"])
def test_a_name_that_is_not_a_lower_case_identifier_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="lower-case Python identifier"):
        scaffold_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused name"


def test_a_refusal_suggests_a_usable_name() -> None:
    with pytest.raises(ScaffoldError, match="try 'my_shop'"):
        PluginNames.of("My-Shop")


@pytest.mark.parametrize("name", ["class", "shop_"])
def test_a_keyword_or_a_trailing_underscore_is_refused(name: str) -> None:
    with pytest.raises(ScaffoldError, match="keyword or ends in '_'"):
        PluginNames.of(name)


def test_every_name_comes_from_the_one_chosen() -> None:
    names = PluginNames.of("acme_shop")
    assert (names.package, names.distribution, names.class_prefix, names.title) == (
        "channelhub_acme_shop", "channelhub-acme-shop", "AcmeShop", "Acme Shop")


def test_the_plugin_has_the_rooms_every_plugin_has(generated: Path) -> None:
    written = sorted(str(path.relative_to(generated)) for path in generated.rglob("*") if path.is_file())
    assert written == sorted(ROOMS) == [str(path) for path in planned_files(NAME)]
    for path in generated.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), f"{path.name} kept a template placeholder"
        if path.suffix == ".py":
            compile(path.read_text(), str(path), "exec")


def test_the_pyproject_declares_the_distribution_and_its_entry_point(generated: Path) -> None:
    project = tomllib.loads((generated / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"channelhub-{NAME}"
    assert any(re.match(r"channelhub\b", requirement) for requirement in project["dependencies"])
    assert project["entry-points"]["channelhub"] == {NAME: f"channelhub_{NAME}"}


def test_an_existing_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    root = scaffold_plugin("twice", tmp_path)
    channel = root / "channelhub_twice" / "channel.py"
    original = channel.read_text()
    channel.write_text("# edited by the author\n")
    (root / "NOTES.md").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists.*--force"):
        scaffold_plugin("twice", tmp_path)
    assert channel.read_text() == "# edited by the author\n"
    assert scaffold_plugin("twice", tmp_path, force=True) == root
    assert channel.read_text() == original
    assert (root / "NOTES.md").read_text() == "mine", "force writes the scaffold's files and leaves others alone"


def test_a_target_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "plugins.txt"
    target.write_text("not a folder")
    with pytest.raises(ScaffoldError, match="is not a folder"):
        scaffold_plugin("acme", target)


def test_a_template_token_the_scaffold_does_not_define_is_named() -> None:
    assert render("name = {{name}}", {"name": "acme"}) == "name = acme"
    with pytest.raises(ScaffoldError, match="channel.py.tmpl uses {{colour}}"):
        render("x = '{{colour}}'", {"name": "acme"}, "channel.py.tmpl")


def test_the_hub_discovers_the_plugin_through_its_entry_point(site: Path, generated: Path) -> None:
    listed = run_installed(site, generated, "-m", "hub", "plugins")
    assert listed.returncode == 0, listed.stderr
    assert f"{NAME} 0.1.0 (channelhub_{NAME})" in listed.stdout
    assert f"channels: {NAME}" in listed.stdout


def test_the_generated_tests_pass_out_of_the_box(site: Path, generated: Path) -> None:
    result = run_installed(site, generated, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(generated / "tests"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) > MIN_GENERATED_TESTS, output
    assert not re.search(r"\d+ (failed|skipped|error)", output), output
