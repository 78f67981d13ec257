"""The ``channelhub`` command line. Library code lives elsewhere; this only parses and prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from hub import __version__, defaults
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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Workers and the scheduler log their progress at INFO; one-shot commands print what matters.
    logging.getLogger("channelhub").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("channelhub.audit").setLevel(logging.DEBUG if verbose else logging.WARNING)


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
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to supervise; SIGTERM drains them (jobs in flight finish).")
@click.option("--fork/--no-fork", default=defaults.WORKER_FORKS_PER_JOB, show_default=True,
              help="Run each job in a forked work horse (a crash or leak stays in the job, at more CPU per "
                   "job) instead of in the worker process.")
def worker(lanes: tuple[str, ...], burst: bool, processes: int, fork: bool) -> None:
    """Run RQ workers for the fleet (needs CHANNELHUB_REDIS_URL)."""
    if processes > 1:
        from hub.workerpool import run_worker_pool

        sys.exit(run_worker_pool(_fleet_config(), processes, lanes=list(lanes) or None, burst=burst, fork=fork))
    from hub.runtime import run_worker

    run_worker(_fleet_config(), lanes=list(lanes) or None, burst=burst, fork=fork)


@cli.command()
def scheduler() -> None:
    """Run the fleet's scheduler: enqueues each account's flows when due (needs CHANNELHUB_REDIS_URL)."""
    from hub.runtime import run_scheduler

    run_scheduler(_fleet_config())


@cli.group()
def plugin() -> None:
    """Tools for plugin authors."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Where to create channelhub-NAME/.")
@click.option("--force", is_flag=True, help="Rewrite the scaffold's own files in an existing folder.")
def plugin_new(name: str, directory: Path, force: bool) -> None:
    """Scaffold an external channel plugin package that passes the conformance kit out of the box."""
    from hub.scaffold import scaffold_plugin

    created = scaffold_plugin(name, directory, force=force)
    click.echo(f"created {created}")
    click.echo(f"next: pip install -e {created} && pytest {created}/tests")


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


# -- operators' commands: organisations, users, accounts, runs, events ---------------------


@cli.group()
def org() -> None:
    """Organisations (brands)."""


@org.command("create")
@click.argument("name")
@click.option("--slug", required=True, help="Short unique name, e.g. acme.")
def org_create(name: str, slug: str) -> None:
    """Create an organisation."""
    from hub.users import create_organisation

    with _session() as session:
        organisation = create_organisation(session, name, slug, actor="cli")
        click.echo(f"organisation {organisation.slug} created (id {organisation.id})")


@cli.group()
def user() -> None:
    """People who sign in to the admin UI."""


@user.command("create")
@click.argument("email")
@click.option("--org", "org_slug", required=True, help="The organisation's slug.")
@click.option("--role", type=click.Choice(["admin", "operator", "viewer"]), default="viewer", show_default=True)
@click.password_option(help="Asked for when not given (never echoed).")
def user_create(email: str, org_slug: str, role: str, password: str) -> None:
    """Create a user with a hashed password."""
    from hub.users import create_user, get_organisation

    with _session() as session:
        created = create_user(session, get_organisation(session, org_slug), email, password, role=role, actor="cli")
        click.echo(f"user {created.email} created ({created.role.value})")


@cli.group()
def account() -> None:
    """Channel accounts: create them, move them Setup -> Testing -> Live, switch flows."""


@account.command("create")
@click.option("--org", "org_slug", required=True)
@click.option("--name", required=True)
@click.option("--plugin", required=True, help="A channel name from `channelhub channels`.")
@click.option("--environment", type=click.Choice(["sandbox", "staging", "production"]), default="sandbox", show_default=True)
@click.option("--base-url", default=None, help="Override the API's base URL (sandboxes).")
@click.option("--credential", "credentials", multiple=True, metavar="KEY=VALUE")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE")
def account_create(org_slug: str, name: str, plugin: str, environment: str, base_url: str | None,
                   credentials: tuple[str, ...], settings: tuple[str, ...]) -> None:
    """Create an account in Setup; credentials are validated by the channel and stored encrypted."""
    from hub.accounts import create_account
    from hub.netpolicy import check_base_url
    from hub.users import get_organisation

    hub = _hub()
    channel = hub.pm.channel_class(plugin)
    creds = channel.validate_credentials(_pairs(credentials)) if credentials else {}
    chosen = channel.validate_settings(_pairs(settings)) if settings else {}
    with hub.db.session() as session:
        created = create_account(session, get_organisation(session, org_slug).id, name, plugin, environment,
                                 creds, chosen, hub.box, "cli", fulfilment_mandatory=channel.fulfilment_mandatory)
        created.base_url = check_base_url(base_url, environment) if base_url else None
        click.echo(f"account {created.id} {created.name!r} created in {created.status.value}")


@account.command("list")
@click.option("--org", "org_slug", default=None)
def account_list(org_slug: str | None) -> None:
    """List accounts with status, flows and testing days left."""
    from sqlalchemy import select

    from hub.accounts import days_left_in_testing, flows
    from hub.models import ChannelAccount, Organisation

    with _session() as session:
        query = select(ChannelAccount).join(Organisation).order_by(ChannelAccount.id)
        if org_slug:
            query = query.where(Organisation.slug == org_slug)
        for item in session.scalars(query):
            on = ", ".join(flow for flow, enabled in flows(item).items() if enabled) or "no flows"
            left = days_left_in_testing(item)
            suffix = f", {left} days of testing left" if left is not None else ""
            click.echo(f"{item.id:>4}  {item.name:<24} {item.plugin:<12} {item.status.value:<8} {on}{suffix}")


@account.command("transition")
@click.argument("account_id", type=int)
@click.argument("action", type=click.Choice(["activate", "go-live", "pause", "resume", "back-to-setup"]))
def account_transition(account_id: int, action: str) -> None:
    """Move an account: activate (Save and Activate), go-live, pause, resume, back-to-setup."""
    from hub import accounts

    with _session() as session:
        item = _account(session, account_id)
        getattr(accounts, action.replace("-", "_"))(session, item, "cli")
        click.echo(f"account {item.id} {item.name!r} is now {item.status.value}")


@account.command("flow")
@click.argument("account_id", type=int)
@click.argument("flow", type=click.Choice(["listings", "reconciler", "orders", "fulfilments"]))
@click.argument("state", type=click.Choice(["on", "off"]))
def account_flow(account_id: int, flow: str, state: str) -> None:
    """Switch one of an account's flows on or off."""
    from hub.accounts import set_flow

    hub = _hub()
    with hub.db.session() as session:
        item = _account(session, account_id)
        mandatory = _fulfilment_mandatory(hub, item.plugin)
        set_flow(session, item, flow, state == "on", "cli", fulfilment_mandatory=mandatory)
        click.echo(f"account {item.id}: {flow} {state}")


@cli.command()
@click.argument("account_id", type=int)
@click.argument("flow")
@click.option("--wait/--no-wait", default=True, help="Embedded: run now and wait for the outcome.")
def run(account_id: int, flow: str, wait: bool) -> None:
    """Run one flow for one account now (catalog, listings, stock, orders, fulfilment, reconcile, reset)."""
    hub = _hub()
    runtime = hub.runtime
    run_id = runtime.enqueue(account_id, flow, trigger="manual")
    click.echo(f"run {run_id} queued")
    if wait and not hub.config.fleet:
        runtime.start(ticker=False)
        runtime.wait_idle(timeout=600)
        runtime.close()
        _print_run(hub, run_id)


@cli.command()
@click.option("--account", "account_id", type=int, default=None)
@click.option("--limit", default=20, show_default=True)
def runs(account_id: int | None, limit: int) -> None:
    """The latest sync runs with their counts and outcome."""
    from sqlalchemy import select

    from hub.models import SyncRun

    hub = _hub()
    with hub.db.session() as session:
        query = select(SyncRun.id).order_by(SyncRun.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(SyncRun.account_id == account_id)
        ids = list(session.scalars(query))
    for run_id in ids:
        _print_run(hub, run_id)


@cli.command()
@click.option("--org", "org_slug", default=None)
@click.option("--limit", default=30, show_default=True)
def events(org_slug: str | None, limit: int) -> None:
    """The audit log, newest first."""
    from sqlalchemy import select

    from hub.models import Event, Organisation

    with _session() as session:
        query = select(Event).order_by(Event.id.desc()).limit(limit)
        if org_slug:
            query = query.join(Organisation, Organisation.id == Event.organisation_id).where(Organisation.slug == org_slug)
        for event in session.scalars(query):
            click.echo(f"{event.created_at:%Y-%m-%d %H:%M:%S} {event.level:<7} {event.kind:<22} [{event.actor}] {event.message}")


def _print_run(hub, run_id: int) -> None:  # type: ignore[no-untyped-def]
    from hub.models import SyncRun

    with hub.db.session() as session:
        item = session.get(SyncRun, run_id)
        counts = ", ".join(f"{k} {v}" for k, v in sorted((item.counts or {}).items())) or "no items"
        error = f" - {item.error}" if item.error else ""
        click.echo(f"run {item.id} {item.flow} account {item.account_id}: {item.status.value} ({counts}; "
                   f"{item.api_calls} API calls){error}")


_current_hub = None


def current_hub():  # type: ignore[no-untyped-def]
    """This command's Hub (opened on first use); commands that plugins add use it too."""
    global _current_hub
    if _current_hub is None:
        from hub.app import open_hub

        _current_hub = open_hub()
    return _current_hub


_hub = current_hub


def _session():  # type: ignore[no-untyped-def]
    return _hub().db.session()


def _account(session, account_id: int):  # type: ignore[no-untyped-def]
    from hub.errors import NotFound
    from hub.models import ChannelAccount

    item = session.get(ChannelAccount, account_id)
    if item is None:
        raise NotFound(f"no account with id {account_id}")
    return item


def _fulfilment_mandatory(hub, plugin: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return hub.pm.channel_class(plugin).fulfilment_mandatory
    except ChannelhubError:
        return False


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        pairs[key.strip()] = value
    return pairs


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
