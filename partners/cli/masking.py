"""Double-blind matching on the brand's side: `blind-key` and `blind work`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from partners.client import CleanRoomClient


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
              multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Your brand's blind key of a collaboration, as `blind-key` wrote it; repeat"
                   " for each collaboration to work in [env CLEANROOM_BLIND_KEY, several"
                   " separated by ':'].")  # fmt: skip
@click.option("--collaboration", default=None,
              help="Work in this collaboration only [default: each blind key's].")  # fmt: skip
@click.option("--every", default=None, metavar="INTERVAL",
              help="Keep taking hops at this interval (90, 60s, 5m) until Ctrl-C.")  # fmt: skip
@click.option("--journal", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where results wait until the server has applied them"
                   " [default: ~/.local/state/cleanroom-partner/hops, or under"
                   " $XDG_STATE_HOME].")  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar or progress lines.")
@connection_options
def blind_work(
    blind_key: tuple[Path, ...],
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
        keys = _keys(blind_key, collaboration)
        try:
            interval = parse_interval(every) if every else None
        except ValueError as error:
            raise InputError("INVALID_INTERVAL", f"--every: {error}") from None
        folder = journal or default_journal()
        with client_for(options) as client:
            try:
                while True:
                    for name, key in keys.items():
                        try:
                            summary = _work_in(client, name, key, folder, quiet=quiet)
                        except ServerError as error:
                            if interval is None:
                                raise
                            # A server restarting or busy: the next round tries again.
                            errors.print(
                                f"[yellow]skipped[/] {inert(name)}: {error.code}"
                                f" {inert(error.message)}"
                            )
                        else:
                            _print_summary(name, summary)
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


def _keys(files: tuple[Path, ...], collaboration: str | None) -> dict[str, bytes]:
    """Each collaboration to work in and the brand's key of it, from the key files.

    Raises:
        InputError: A file is not a key, two are of one collaboration
            (DUPLICATE_BLIND_KEY), or none is of `collaboration`
            (BLIND_KEY_OF_ANOTHER_COLLABORATION).
    """
    keys: dict[str, bytes] = {}
    for file in files:
        written_for = blind_key_collaboration(file)
        if collaboration is not None and written_for != collaboration and len(files) > 1:
            continue
        if written_for in keys:
            raise InputError(
                "DUPLICATE_BLIND_KEY",
                f"Two of the blind keys given are of collaboration {written_for!r}; a brand has"
                " one key per collaboration: give the one its datasets were masked with.",
                {"collaboration": written_for, "path": str(file)},
            )
        keys[written_for] = read_blind_key(file, collaboration=collaboration)
    if not keys:
        raise InputError(
            "BLIND_KEY_OF_ANOTHER_COLLABORATION",
            f"None of the blind keys given is of collaboration {collaboration!r}: pass the key"
            f" made for {collaboration!r}, or leave out --collaboration.",
            {"collaboration": str(collaboration)},
        )
    return keys


def _work_in(
    client: CleanRoomClient, collaboration: str, key: bytes, journal: Path, *, quiet: bool
) -> HopSummary:
    """One pass over the hops of one collaboration, with its progress."""
    parent = f"collaborations/{collaboration}"
    pending = list(client.list_masking_hops(parent))
    total = sum(h.row_count * len(h.identifier_types) for h in pending)
    with progress_of(f"masking ({collaboration})", "values", total=total, quiet=quiet) as done:
        return work(client, parent, key, journal=journal, progress=done)


def _print_summary(collaboration: str, summary: HopSummary) -> None:
    where = f"{inert(collaboration)}: "
    if not summary.applied:
        console.print(f"{where}no masking hop was waiting")
    else:
        count = len(summary.applied)
        console.print(
            f"{where}masked {count:,} dataset{'s' if count != 1 else ''} ({summary.rows:,} rows)"
            + (f", {summary.resent:,} sent again from the journal" if summary.resent else "")
        )
    for dataset in summary.matchable:
        console.print(f"  {inert(dataset)} is now matchable")
    if summary.superseded:
        console.print(f"  {summary.superseded:,} results dropped: a newer attempt had begun")
    if summary.gone:
        console.print(f"  {summary.gone:,} hops vanished meanwhile (their datasets deleted)")
