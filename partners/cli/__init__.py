"""`cleanroom-partner`: the command line of brands' engineers, marketers and auditors.

Each group of commands is a module of this package, loaded only when one of its commands
runs, so that `--help` and every command start without loading what they do not use. The
command modules import the rest of the toolkit; this file imports only click, and reads the
connection profile (`partners.profiles`) when a command runs, to give its options defaults.
"""

from __future__ import annotations

import importlib
import os

import click

from partners.cli._examples import annotate

# Command name: (module of this package, the command's attribute, its one-line help). The
# help is repeated here so that `--help` lists the commands without importing them; a
# test checks it against each command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "audit": ("audit", "audit", "Read the collaboration's query log (auditors)."),
    "config": (
        "config",
        "config",
        "Show the connection settings in force and where each comes from.",
    ),
    "blind": ("masking", "blind", "Take the masking hops of a double-blind collaboration."),
    "blind-key": (
        "masking",
        "blind_key_command",
        "Create your brand's blind key for a double-blind collaboration.",
    ),
    "budget": (
        "reports",
        "budget",
        "Show the collaboration's privacy budget: spent and remaining epsilon.",
    ),
    "datasets": ("datasets", "datasets", "List, show and delete your brand's datasets."),
    "kcv": (
        "secrets",
        "kcv",
        "Print the key check value of a secret, to compare with the collaboration's.",
    ),
    "keygen": (
        "secrets",
        "keygen",
        "Create a new collaboration secret and print its key check value (KCV).",
    ),
    "prepare": (
        "preparation",
        "prepare_command",
        "Normalize and digest SOURCE (CSV, TSV, XLSX, Parquet) into the digests file DESTINATION.",
    ),
    "report": ("reports", "report", "Create, get and list overlap reports."),
    "resolve": (
        "preparation",
        "resolve_command",
        "Link records of your sources that share an identifier into persons.",
    ),
    "upload": (
        "datasets",
        "upload",
        "Upload a digests file written by `prepare` as a new dataset.",
    ),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported when they are looked up to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        if not isinstance(command, click.Command):  # a wrong table: a bug
            raise TypeError(f"{module}.{attribute} is not a command")
        annotate(command, cmd_name)
        if ctx is not None and cmd_name != "config":  # config shows them, not as flags
            ctx.default_map = {
                **(ctx.default_map or {}),
                cmd_name: _defaults_for(command, _profile_defaults(ctx)),
            }
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [
            (name, click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit))
            for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


# A setting of a connection profile (`partners.profiles`) and the parameter it defaults.
_PARAMETERS = {
    "server": "target",
    "cert": "certificate",
    "key": "private_key",
    "ca": "ca_certificate",
    "server_name": "server_name",
    "collaboration": "collaboration",
    "blind_key": "blind_key",
}


def _profile_defaults(ctx: click.Context) -> dict[str, str]:
    """The profile's settings, and CLEANROOM_COLLABORATION over its collaboration.

    They become the defaults of the command's options: a flag beats them, and so does each
    connection option's environment variable (click reads it before the defaults).
    """
    from partners import profiles  # noqa: PLC0415 (read only when a command runs)
    from partners.errors import InputError  # noqa: PLC0415

    try:
        name = profiles.profile_name(ctx.params.get("profile"))
        settings = profiles.load_profile(name)
    except InputError as error:
        raise click.UsageError(f"{error.reason}: {error.message}") from None
    collaboration = os.environ.get(profiles.SETTINGS["collaboration"])
    if collaboration:
        settings["collaboration"] = collaboration
    return {_PARAMETERS[key]: value for key, value in settings.items()}


def _defaults_for(command: click.Command, values: dict[str, str]) -> dict[str, object]:
    """The default map of a command or group: the values its options take."""
    if isinstance(command, click.Group):
        return {name: _defaults_for(sub, values) for name, sub in command.commands.items()}
    multiple = {p.name: getattr(p, "multiple", False) for p in command.params}
    # An option that may be repeated (`blind work --blind-key`) takes the profile's one value
    # as a list of one.
    return {
        key: [value] if multiple[key] else value for key, value in values.items() if key in multiple
    }


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleanroom")
@click.option("--profile", default=None, metavar="NAME",
              help="The connection profile of the partner config file to use"
                   " [env CLEANROOM_PROFILE].")  # fmt: skip
def main(profile: str | None) -> None:
    r"""The partner toolkit of the clean room: prepare, upload, report, audit.

    Your customer file never leaves your machine: `prepare` turns it into salted digests
    with the collaboration secret, and only those are uploaded.

    Commands that talk to the server read where it is and who you are from these
    environment variables (or the matching options; `COMMAND --help` lists them):

    \b
        CLEANROOM_SERVER       host:port of the server        (--server)
        CLEANROOM_CERT         your client certificate, PEM   (--cert)
        CLEANROOM_KEY          its private key, PEM           (--key)
        CLEANROOM_CA           the CA of the server's cert    (--ca)
        CLEANROOM_SERVER_NAME  the name in the server's cert  (--server-name)
        CLEANROOM_COLLABORATION  the collaboration            (--collaboration)
        CLEANROOM_LOG_KEY      the log's pinned verifier key  (audit verify --log-key)
        CLEANROOM_BLIND_KEY    your double-blind key    (upload, blind work --blind-key)

    Options and the environment win over a connection profile of
    ~/.config/cleanroom-partner/config.toml (--profile, CLEANROOM_PROFILE; see
    `config show`).

    For example:

    \b
        export CLEANROOM_SERVER=cleanroom.example:50051 CLEANROOM_CA=ca.pem
        export CLEANROOM_CERT=acme.pem CLEANROOM_KEY=acme-key.pem
        cleanroom-partner datasets list --collaboration spring-launch
    """


__all__ = ["COMMANDS", "main"]
