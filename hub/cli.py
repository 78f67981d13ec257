"""The ``channelhub`` command line. Library code lives elsewhere; this only parses and prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from hub import __version__
from hub.config import load_config
from hub.errors import ChannelhubError


class HubGroup(click.Group):
    """Turns the hub's own errors into one clear line and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except ChannelhubError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)


@click.group(cls=HubGroup)
@click.version_option(__version__, prog_name="channelhub")
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def cli(verbose: bool) -> None:
    """channelhub: list labelled products on marketplaces, keep stock and prices in step,
    route orders to the order system and fulfilment, and write tracking back."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List every loaded plugin with its version, channels and hooks."""
    from hub.plugins import get_plugin_manager

    infos = get_plugin_manager().describe()
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    for info in infos:
        click.echo(f"{info.name} {info.version} ({info.module})")
        click.echo(f"  channels: {', '.join(info.channels) or '-'}")
        click.echo(f"  hooks:    {', '.join(info.hooks) or '-'}")


@cli.command()
def channels() -> None:
    """List the channels the loaded plugins provide, with roles and limits."""
    from hub.plugins import get_plugin_manager

    for name, channel in sorted(get_plugin_manager().channels.items()):
        roles = ", ".join(sorted(role.value for role in channel.roles))
        limits = channel.limits
        click.echo(f"{name}: {channel.title} [{roles}] batch {limits.max_batch}, {limits.requests_per_second}/s")


@cli.group()
def db() -> None:
    """Database migrations."""


@db.command()
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Create or migrate the database to the latest schema."""
    from hub.migrate import upgrade as run_upgrade

    config = load_config()
    run_upgrade(config.database_url, revision)
    click.echo(f"database at {_safe_url(config.database_url)} is at {revision}")


@db.command()
def current() -> None:
    """Show the migration the database is at."""
    from hub.migrate import current as current_revision

    click.echo(current_revision(load_config().database_url) or "empty (run `channelhub db upgrade`)")


@cli.command()
@click.option("--lane", "lanes", multiple=True, help="Only these lanes (orders, stock, catalog, reconcile).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
def worker(lanes: tuple[str, ...], burst: bool) -> None:
    """Run an RQ worker for the fleet (needs CHANNELHUB_REDIS_URL)."""
    from hub.runtime import run_worker

    run_worker(_fleet_config(), lanes=list(lanes) or None, burst=burst)


@cli.command()
def scheduler() -> None:
    """Run the fleet's scheduler: enqueues each account's flows when due (needs CHANNELHUB_REDIS_URL)."""
    from hub.runtime import run_scheduler

    run_scheduler(_fleet_config())


@cli.group()
def docs() -> None:
    """Generated documentation."""


@docs.command()
@click.option("--output", type=click.Path(path_type=Path), default=Path("docs/hooks.md"), show_default=True)
@click.option("--check", is_flag=True, help="Fail if the file is out of date instead of writing it.")
def hooks(output: Path, check: bool) -> None:
    """Write the hook reference generated from hub/hookspecs.py."""
    from hub.hookdocs import render_hooks_markdown

    text = render_hooks_markdown()
    if check:
        if not output.exists() or output.read_text() != text:
            raise click.ClickException(f"{output} is out of date: run `channelhub docs hooks`")
        click.echo(f"{output} is up to date")
        return
    output.write_text(text)
    click.echo(f"wrote {output}")


def _fleet_config():  # type: ignore[no-untyped-def]
    config = load_config()
    if not config.redis_url:
        raise click.ClickException("set CHANNELHUB_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run the fleet")
    return config


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _register_plugin_commands() -> None:
    from hub.plugins import get_plugin_manager

    get_plugin_manager().hook.channelhub_register_commands(cli=cli)


def main() -> None:
    try:
        _register_plugin_commands()
    except ChannelhubError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    cli()
