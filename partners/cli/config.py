"""The partner config file: `config show`."""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from partners import profiles
from partners.cli._common import console, reported_errors


@click.group()
def config() -> None:
    """Show the connection settings in force and where each comes from."""


@config.command(name="show")
@click.option("--server", default=None, help="As a command would be given it.")
@click.option("--cert", default=None, help="As a command would be given it.")
@click.option("--key", default=None, help="As a command would be given it.")
@click.option("--ca", default=None, help="As a command would be given it.")
@click.option("--server-name", default=None, help="As a command would be given it.")
@click.option("--collaboration", default=None, help="As a command would be given it.")
@click.option("--blind-key", default=None, help="As a command would be given it.")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@click.pass_context
def config_show(ctx: click.Context, /, as_json: bool, **flags: str | None) -> None:
    """Show each setting, and whether a flag, the environment or the profile gives it.

    Flags win over the environment (CLEANROOM_SERVER, CLEANROOM_CERT, CLEANROOM_KEY,
    CLEANROOM_CA, CLEANROOM_SERVER_NAME, CLEANROOM_COLLABORATION, CLEANROOM_BLIND_KEY),
    which wins over the profile chosen by --profile or CLEANROOM_PROFILE or the file's
    default_profile.
    """
    with reported_errors():
        name = profiles.profile_name(ctx.find_root().params.get("profile"))
        found = profiles.resolved(flags, name)
        path = profiles.config_path()
        if as_json:
            document = {
                "config_file": str(path),
                "profile": name,
                "settings": {k: {"value": s.value, "source": s.source} for k, s in found.items()},
            }
            click.echo(json.dumps(document, indent=2))
            return
        exists = "" if path.is_file() else " (none)"
        console.print(f"config file: {escape(str(path))}{exists}", highlight=False)
        console.print(f"profile: {escape(name or '(none)')}", highlight=False)
        table = Table("setting", "value", "from")
        for key, setting in found.items():
            table.add_row(key, escape(setting.value or "-"), setting.source)
        console.print(table)
