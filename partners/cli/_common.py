"""What every command shares: consoles, errors, connection options, resource names."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from partners.errors import InputError, PartnerError, ServerError
from partners.inert import inert

if TYPE_CHECKING:
    from partners.client import CleanRoomClient


class Timestamp(click.ParamType[datetime]):
    """A time in ISO 8601: `2026-11-01`, `2026-11-01T08:00:00Z`, `...+07:00`; UTC if no offset."""

    name = "timestamp"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO 8601 time: use e.g. 2026-11-01, 2026-11-01T08:00:00Z"
                " or 2026-11-01T15:00:00+07:00",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TIMESTAMP = Timestamp()
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turns toolkit errors into a clear message on stderr and exit status 1 (2 for input)."""
    try:
        yield
    except ServerError as error:
        errors.print(
            f"[bold red]error:[/] {inert(error.code)} {inert(error.reason)}: {inert(error.message)}"
        )
        sys.exit(1)
    except PartnerError as error:
        errors.print(f"[bold red]error:[/] {inert(error.reason)}: {inert(error.message)}")
        sys.exit(2 if isinstance(error, InputError) else 1)


def connection_options(command: F) -> F:
    """Adds the options that say where the server is and who we are."""
    options = [
        click.option("--server", "target", envvar="CLEANROOM_SERVER", required=True,
                     help="host:port of the clean room server [env CLEANROOM_SERVER]."),
        click.option("--cert", "certificate", envvar="CLEANROOM_CERT", required=True,
                     type=click.Path(path_type=Path),
                     help="Your client certificate (PEM) [env CLEANROOM_CERT]."),
        click.option("--key", "private_key", envvar="CLEANROOM_KEY", required=True,
                     type=click.Path(path_type=Path),
                     help="Its private key (PEM) [env CLEANROOM_KEY]."),
        click.option("--ca", "ca_certificate", envvar="CLEANROOM_CA", required=True,
                     type=click.Path(path_type=Path),
                     help="The CA certificate that signed the server's [env CLEANROOM_CA]."),
        click.option("--server-name", envvar="CLEANROOM_SERVER_NAME", default=None,
                     help="The name in the server's certificate, if not the host of --server."),
        click.option("--timeout", envvar="CLEANROOM_TIMEOUT", default=300.0, show_default=True,
                     type=click.FloatRange(min=0.1, max=7 * 86400.0),
                     help="Seconds each call may take, and at most 20 to connect"
                          " [env CLEANROOM_TIMEOUT]."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def client_for(options: dict[str, Any]) -> CleanRoomClient:
    """The client for the connection options a command was given (taken out of `options`)."""
    from partners.client import CleanRoomClient, Connection  # noqa: PLC0415 (gRPC on use)

    keys = ("target", "certificate", "private_key", "ca_certificate", "server_name")
    connection = Connection(**{k: options.pop(k) for k in keys})
    return CleanRoomClient(connection, timeout=options.pop("timeout"))


def resource_name(collaboration: str, collection: str, value: str) -> str:
    """A full resource name from a short id, or the name itself."""
    if "/" in value:
        return value
    return f"collaborations/{collaboration}/{collection}/{value}"


def column_types(values: tuple[str, ...]) -> dict[str, str]:
    """COLUMN=TYPE options as a mapping of column to type."""
    mapping = {}
    for value in values:
        column, sep, identifier_type = value.partition("=")
        if not sep or not column or not identifier_type:
            raise click.BadParameter(f"{value!r}: use COLUMN=TYPE, e.g. mobile=phone")
        mapping[column] = identifier_type
    return mapping


def output_options(command: F) -> F:
    """Adds --table (the default), --json and --csv, which choose one `output`."""
    for flag, help_text in [
        ("csv", "CSV for spreadsheets: one figure a row."),
        ("json", "JSON with the API's field names."),
        ("table", "Tables for people (the default)."),
    ]:
        command = click.option(
            f"--{flag}", "output", flag_value=flag, default=flag == "table", help=help_text
        )(command)
    return command
