"""The query log for auditors: `audit list`, `verify` and `export`."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cleanroom.proofs.signed_note import NoteError, NoteVerifier
from partners import render
from partners.audit.export import FORMATS, export_events
from partners.audit.verify import AuditorState, verify_log
from partners.cli._common import (
    TIMESTAMP,
    client_for,
    connection_options,
    console,
    errors,
    reported_errors,
)
from partners.errors import InputError


@click.group()
def audit() -> None:
    """Read the collaboration's query log (auditors)."""


@audit.command(name="list")
@click.option("--collaboration", required=True, help="The collaboration id ('-': server log).")
@click.option(
    "--since",
    type=TIMESTAMP,
    default=None,
    help="Events at or after this ISO 8601 time (UTC unless it has an offset).",
)
@click.option(
    "--until",
    type=TIMESTAMP,
    default=None,
    help="Events before this ISO 8601 time (UTC unless it has an offset).",
)
@click.option("--method", default=None, help="Only this method, e.g. CreateOverlapReport.")
@click.option("--caller", default=None, help="Only this caller: acme or partners/acme.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@connection_options
def audit_list(
    collaboration: str,
    since: datetime | None,
    until: datetime | None,
    method: str | None,
    caller: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """List the query log's events, oldest first."""
    with reported_errors(), client_for(options) as client:
        events = client.list_audit_events(
            f"collaborations/{collaboration}",
            start_time=since,
            end_time=until,
            method=method,
            caller=caller,
        )
        if as_json:
            for event in events:
                click.echo(render.json_line(event))
        else:
            console.print(render.audit_table(events))


def _verifier(log_key: str) -> NoteVerifier:
    """The pinned verifier key, given as the key itself or as a file holding it."""
    text = Path(log_key).read_text(encoding="utf-8") if Path(log_key).is_file() else log_key
    try:
        return NoteVerifier(text)
    except NoteError as error:
        raise InputError(
            "INVALID_LOG_KEY",
            f"--log-key is not a verifier key ({error}); ask the operator for the output of"
            " `cleanroom audit verifier-key`.",
        ) from None


def _default_state_dir() -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "cleanroom-partner" / "audit"


@audit.command(name="verify")
@click.option("--collaboration", required=True, help="The collaboration id ('-': server log).")
@click.option(
    "--log-key",
    envvar="CLEANROOM_LOG_KEY",
    required=True,
    help="The server's pinned verifier key, or a file holding it [env CLEANROOM_LOG_KEY].",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the last verified checkpoint is kept"
    " [default: $XDG_DATA_HOME/cleanroom-partner/audit].",
)
@connection_options
def audit_verify(collaboration: str, log_key: str, state_dir: Path | None, **options: Any) -> None:
    """Prove the query log complete and append-only since the last verification.

    Checks the latest checkpoint's signature against the pinned key, recomputes the Merkle
    root from every event, and checks that the log extends the checkpoint saved by the
    previous run. Exits 1 naming the first bad index on any failure.
    """
    with reported_errors():
        verifier = _verifier(log_key)
        parent = f"collaborations/{collaboration}"
        state = AuditorState((state_dir or _default_state_dir()) / collaboration)
        with client_for(options) as client:
            verdict = verify_log(client, parent, verifier, state)
        checkpoint = verdict.checkpoint
        console.print(f"log {verdict.log}")
        console.print(f"  events checked: {verdict.events_checked:,}")
        if checkpoint:
            console.print(
                f"  checkpoint: size {checkpoint.tree_size:,}, root"
                f" {checkpoint.root_hash.hex()[:16]}..., signed by {verifier.name}"
            )
        if verdict.previous_size is None:
            console.print("  previous checkpoint: none saved (first verification)")
        else:
            console.print(f"  previous checkpoint: size {verdict.previous_size:,}")
        if not verdict.ok:
            errors.print(
                f"[bold red]FAILED[/] at index {verdict.first_bad_index}: {verdict.problem}"
            )
            sys.exit(1)
        console.print("[bold green]VERIFIED[/]: complete and append-only; checkpoint saved")


@audit.command(name="export")
@click.option("--collaboration", required=True, help="The collaboration id ('-': server log).")
@click.option(
    "--format", "file_format", type=click.Choice(FORMATS), default="jsonl", show_default=True
)
@click.option(
    "--out", "destination", required=True, type=click.Path(path_type=Path, dir_okay=False)
)
@connection_options
def audit_export(collaboration: str, file_format: str, destination: Path, **options: Any) -> None:
    """Write every event with its leaf index and hash, as JSON Lines, CSV or Parquet."""
    with reported_errors(), client_for(options) as client:
        events = client.list_audit_events(f"collaborations/{collaboration}", page_size=1000)
        count = export_events(events, destination, file_format)
        console.print(f"exported {count:,} events to {destination}")
