"""Double-blind matching on the brand's side: `blind-key` and `blind work`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from partners.audit.witness import parse_interval
from partners.cli._common import client_for, connection_options, console, errors, reported_errors
from partners.cli._progress import progress_of
from partners.errors import InputError, ServerError
from partners.inert import inert
from partners.masking.hops import HopSummary, work
from partners.masking.journal import default_journal
from partners.masking.keys import (
    blind_key_collaboration,
    new_blind_key,
    read_blind_key,
    write_blind_key,
)

BLIND_KEY_HELP = (
    "Your brand's blind key for the collaboration, as `blind-key` wrote it"
    " [env CLEANROOM_BLIND_KEY]."
)


@click.command(name="blind-key")
@click.option("--collaboration", required=True, help="The collaboration id the key is for.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the new key (created with mode 0600).")  # fmt: skip
def blind_key_command(collaboration: str, out: Path) -> None:
    """Create your brand's blind key for a double-blind collaboration.

    The key masks every identifier your brand uploads and every hop it takes. Keep it on
    your machine like the collaboration secret, never share it, not even with the other
    brands, and keep it as long as the collaboration's datasets are used: one key per
    brand and collaboration.
    """
    with reported_errors():
        write_blind_key(out, new_blind_key(), collaboration=collaboration)
        console.print(f"blind key for {inert(collaboration)} written to {inert(str(out))}")


@click.group()
def blind() -> None:
    """Take the masking hops of a double-blind collaboration."""


@blind.command(name="work")
@click.option("--blind-key", "blind_key", envvar="CLEANROOM_BLIND_KEY", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help=BLIND_KEY_HELP)  # fmt: skip
@click.option("--collaboration", default=None,
              help="The collaboration id [default: the blind key's].")  # fmt: skip
@click.option("--every", default=None, metavar="INTERVAL",
              help="Keep taking hops at this interval (90, 60s, 5m) until Ctrl-C.")  # fmt: skip
@click.option("--journal", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where results wait until the server has applied them"
                   " [default: $XDG_STATE_HOME/cleanroom-partner/hops].")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar or progress lines.")
@connection_options
def blind_work(
    blind_key: Path,
    collaboration: str | None,
    every: str | None,
    journal: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Mask the datasets that wait for your brand: every pending hop, once or --every.

    Each hop's rows, blinded by the server, are multiplied by your blind key, shuffled and
    sent back. A result is kept in the journal until the server has applied it, so an
    interrupted run loses nothing: the next one sends it again, or starts the hop afresh
    if the server has begun a newer attempt. No hop is ever applied twice.
    """
    with reported_errors():
        collaboration = collaboration or blind_key_collaboration(blind_key)
        key = read_blind_key(blind_key, collaboration=collaboration)
        try:
            interval = parse_interval(every) if every else None
        except ValueError as error:
            raise InputError("INVALID_INTERVAL", f"--every: {error}") from None
        folder = journal or default_journal()
        parent = f"collaborations/{collaboration}"
        with client_for(options) as client:
            try:
                while True:
                    try:
                        pending = list(client.list_masking_hops(parent))
                        total = sum(h.row_count * len(h.identifier_types) for h in pending)
                        with progress_of("masking", "values", total=total, quiet=quiet) as done:
                            summary = work(client, parent, key, journal=folder, progress=done)
                    except ServerError as error:
                        if interval is None:
                            raise
                        # A server restarting or busy: the next round tries again.
                        errors.print(f"[yellow]skipped[/]: {error.code} {inert(error.message)}")
                    else:
                        _print_summary(summary)
                    if interval is None:
                        return
                    time.sleep(interval)  # the worker's own schedule
            except KeyboardInterrupt:
                errors.print(
                    "stopped: results not yet applied stay in the journal"
                    f" {inert(str(folder))} and are sent by the next run",
                    highlight=False,
                    soft_wrap=True,  # a path to copy, not to cut
                )
                raise SystemExit(130) from None


def _print_summary(summary: HopSummary) -> None:
    if not summary.applied:
        console.print("no masking hop was waiting")
    else:
        console.print(
            f"masked {len(summary.applied):,} datasets ({summary.rows:,} rows)"
            + (f", {summary.resent:,} sent again from the journal" if summary.resent else "")
        )
    for dataset in summary.matchable:
        console.print(f"  {inert(dataset)} is now matchable")
    if summary.superseded:
        console.print(f"  {summary.superseded:,} results dropped: a newer attempt had begun")
    if summary.gone:
        console.print(f"  {summary.gone:,} hops vanished meanwhile (their datasets deleted)")
