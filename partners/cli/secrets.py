"""Collaboration secrets: `keygen` and `kcv`."""

from __future__ import annotations

from pathlib import Path

import click

from partners.cli._common import (
    console,
    reported_errors,
)
from partners.preparation.digest import key_check_value, new_secret, read_secret, write_secret


@click.command()
@click.option("--collaboration", required=True, help="The collaboration id the secret is for.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Where to write the new secret (created with mode 0600).")  # fmt: skip
def keygen(collaboration: str, out: Path) -> None:
    """Create a new collaboration secret and print its key check value (KCV).

    Share the secret with the other brands out of band, never with the clean room; give
    the operator only the KCV.
    """
    with reported_errors():
        secret = new_secret()
        write_secret(out, secret)
        console.print(f"secret written to {out}")
        console.print(f"key check value: [bold]{key_check_value(secret, collaboration)}[/]")


@click.command()
@click.option("--collaboration", required=True, help="The collaboration id.")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path),
              help="The collaboration secret, as `keygen` wrote it.")  # fmt: skip
def kcv(collaboration: str, secret_file: Path) -> None:
    """Print the key check value of a secret, to compare with the collaboration's."""
    with reported_errors():
        click.echo(key_check_value(read_secret(secret_file), collaboration))
