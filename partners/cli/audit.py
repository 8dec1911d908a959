"""The query log for auditors: `audit list`, `verify` and `export`."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from cleanroom.proofs.cosignature import WitnessSigner, WitnessVerifier
from cleanroom.proofs.signed_note import KeyRing, NoteError, NoteVerifier
from partners import render
from partners.audit.export import FORMATS, export_events
from partners.audit.privacy import compare_budget, recompute, until_budget_read
from partners.audit.verify import AuditorState, Verdict, shown_problem, verify_log
from partners.audit.witness import WitnessState, parse_interval, witness_once
from partners.cli._common import (
    TIMESTAMP,
    client_for,
    connection_options,
    console,
    errors,
    reported_errors,
)
from partners.errors import InputError, ServerError
from partners.inert import inert


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
        shown = list(events)
        if as_json:
            for event in shown:
                click.echo(render.json_line(event))
        else:
            console.print(render.audit_table(shown))
        problems = [p for p in (shown_problem(event) for event in shown) if p]
        for problem in problems:
            errors.print(f"[bold red]FAILED[/]: {inert(problem)}")
        if problems:
            sys.exit(1)


def _key_text(value: str, option: str) -> str:
    """A key given as itself or as a file holding it."""
    path = Path(value)
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else value
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(
            "KEY_FILE_UNREADABLE", f"{option}: cannot read {path}: {error}", {"path": str(path)}
        ) from None


def _key_ring(log_keys: tuple[str, ...]) -> KeyRing:
    """The pinned verifier keys of the log, oldest first."""
    try:
        return KeyRing([NoteVerifier(_key_text(key, "--log-key")) for key in log_keys])
    except NoteError as error:
        raise InputError(
            "INVALID_LOG_KEY",
            f"--log-key is not a verifier key ({error}); ask the operator for the output of"
            " `cleanroom audit verifier-key` (and, after a rotation, every earlier key).",
        ) from None


def _witness_keys(keys: tuple[str, ...]) -> list[WitnessVerifier]:
    try:
        return [WitnessVerifier(_key_text(key, "--witness-key")) for key in keys]
    except NoteError as error:
        raise InputError(
            "INVALID_WITNESS_KEY",
            f"--witness-key is not a witness key ({error}); use what the witness's"
            " `cleanroom-partner audit witness-keygen` printed.",
        ) from None


def _default_state_dir(kind: str = "audit") -> Path:
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "cleanroom-partner" / kind


_LOG_KEY_HELP = (
    "The server's pinned verifier key, or a file holding it; repeat for the keys it"
    " replaced, oldest first [env CLEANROOM_LOG_KEY]."
)


@audit.command(name="verify")
@click.option("--collaboration", required=True, help="The collaboration id ('-': server log).")
@click.option("--log-key", "log_keys", envvar="CLEANROOM_LOG_KEY", required=True,
              multiple=True, help=_LOG_KEY_HELP)  # fmt: skip
@click.option("--witness-key", "witness_keys", multiple=True,
              help="A witness's public key, or a file holding it. Repeat for each.")  # fmt: skip
@click.option("--quorum", type=click.IntRange(min=0), default=None,
              help="Trust only checkpoints this many of the witnesses cosigned"
              " [default: all given].")  # fmt: skip
@click.option("--privacy", is_flag=True,
              help="Also recompute the epsilon spent from the log and check every release"
              " and the server's budget against it.")  # fmt: skip
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the last verified checkpoint is kept"
    " [default: $XDG_DATA_HOME/cleanroom-partner/audit].",
)
@connection_options
def audit_verify(
    collaboration: str,
    log_keys: tuple[str, ...],
    witness_keys: tuple[str, ...],
    quorum: int | None,
    privacy: bool,
    state_dir: Path | None,
    **options: Any,
) -> None:
    """Prove the query log complete and append-only since the last verification.

    Checks the checkpoint's signature against the pinned keys (and, with witnesses, a
    quorum of their cosignatures), recomputes the Merkle root from every event, checks
    the fields shown against the hashed bytes, and that the log extends the checkpoint
    saved by the previous run. Exits 1 naming the first bad index on any failure.
    """
    with reported_errors():
        ring = _key_ring(log_keys)
        witnesses = _witness_keys(witness_keys)
        needed = len(witnesses) if quorum is None else quorum
        if needed > len(witnesses):
            raise InputError(
                "QUORUM_TOO_LARGE",
                f"--quorum is {needed} but only {len(witnesses)} --witness-key were given.",
            )
        parent = f"collaborations/{collaboration}"
        state = AuditorState((state_dir or _default_state_dir()) / collaboration)
        with client_for(options) as client:
            budget = client.get_budget(parent) if privacy else None
            verdict = verify_log(client, parent, ring, state, witnesses=witnesses, quorum=needed)
        _print_verdict(verdict, ring)
        problems: list[str] = []
        if verdict.ok and budget is not None:
            problems = _print_privacy(verdict, budget.spent_epsilon, budget.released_reports)
        if not verdict.ok:
            where = (
                f"at index {verdict.first_bad_index}"
                if verdict.first_bad_index is not None
                else "at the checkpoint"
            )
            errors.print(f"[bold red]FAILED[/] {where}: {inert(verdict.problem or '')}")
            sys.exit(1)
        if problems:
            for problem in problems:
                errors.print(f"[bold red]FAILED[/] privacy: {inert(problem)}")
            sys.exit(1)
        console.print("[bold green]VERIFIED[/]: complete and append-only; checkpoint saved")


def _print_verdict(verdict: Verdict, ring: KeyRing) -> None:
    checkpoint = verdict.checkpoint
    console.print(f"log {inert(verdict.log)}")
    console.print(f"  events checked: {verdict.events_checked:,}")
    if checkpoint:
        console.print(
            f"  checkpoint: size {checkpoint.tree_size:,}, root"
            f" {checkpoint.root_hash.hex()[:16]}..., signed by {ring.name}"
            + (f" (key {verdict.signed_by})" if verdict.signed_by else "")
        )
    if verdict.witnesses:
        console.print(f"  cosigned by: {inert(', '.join(verdict.witnesses))}")
    signed = checkpoint.tree_size if checkpoint else 0
    if verdict.ok and signed > verdict.events_checked:
        console.print(
            f"  signed, not yet cosigned by the quorum: events {verdict.events_checked:,} to"
            f" {signed - 1:,}"
        )
    if verdict.ok and verdict.events_listed > signed:
        console.print(
            f"  not yet under the checkpoint: events {signed:,} to"
            f" {verdict.events_listed - 1:,} (verify again later)"
        )
    if verdict.previous_size is None:
        console.print("  previous checkpoint: none saved (first verification)")
    else:
        console.print(f"  previous checkpoint: size {verdict.previous_size:,}")


def _print_privacy(verdict: Verdict, spent: float, released: int) -> list[str]:
    """Prints the log's privacy accounting; returns what contradicts it."""
    try:
        account = recompute(until_budget_read(verdict.entries))
    except (ValueError, KeyError, TypeError) as error:
        return [f"an event lacks a field the accounting needs ({error})"]
    console.print(
        f"  privacy: epsilon {account.spent:g} spent over {account.reports} released reports"
        f" (the server reports {spent:g} over {released})"
    )
    for member, micro in sorted(account.per_member_micro.items()):
        console.print(f"    {inert(member)}: epsilon {micro / 1_000_000:g}")
    problems = [problem for _, problem in account.problems]
    return problems + compare_budget(account, spent, released)


@audit.command(name="witness-keygen")
@click.option("--name", required=True, help="The witness's name, e.g. witness.acme.example.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the private key (created with mode 0600).")  # fmt: skip
def audit_witness_keygen(name: str, out: Path) -> None:
    """Create a witness's Ed25519 key; print the public key for the operator to list."""
    with reported_errors():
        try:
            signer = WitnessSigner.generate(name)
        except NoteError as error:
            raise InputError("INVALID_WITNESS_NAME", f"--name: {error}") from None
        if out.exists():
            raise InputError("KEY_FILE_EXISTS", f"--out: {out} exists; choose a new file.")
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(signer.key_text() + "\n")
        console.print(f"witness key written to {out}")
        console.print(
            f"public key for the collaboration's `witnesses`: [bold]{signer.verifier_key}[/]"
        )


@audit.command(name="witness")
@click.option("--collaboration", required=True, help="The collaboration id.")
@click.option("--witness-key", "witness_key", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="This witness's private key file (from `audit witness-keygen`).")  # fmt: skip
@click.option("--log-key", "log_keys", envvar="CLEANROOM_LOG_KEY", required=True,
              multiple=True, help=_LOG_KEY_HELP)  # fmt: skip
@click.option("--every", default=None,
              help="Keep witnessing at this interval (e.g. 60s, 5m) until stopped.")  # fmt: skip
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the last cosigned checkpoint is kept"
    " [default: $XDG_DATA_HOME/cleanroom-partner/witness].",
)
@connection_options
def audit_witness(
    collaboration: str,
    witness_key: Path,
    log_keys: tuple[str, ...],
    every: str | None,
    state_dir: Path | None,
    **options: Any,
) -> None:
    """Cosign the log's latest checkpoint if it extends the last one this witness cosigned.

    A checkpoint that forks from or rolls back the saved one is refused: nothing is
    cosigned, and the command exits 1.
    """
    with reported_errors():
        ring = _key_ring(log_keys)
        try:
            signer = WitnessSigner.from_key(_key_text(str(witness_key), "--witness-key"))
        except NoteError as error:
            raise InputError("INVALID_WITNESS_KEY", f"--witness-key: {error}") from None
        try:
            interval = parse_interval(every) if every else None
        except ValueError as error:
            raise InputError("INVALID_INTERVAL", f"--every: {error}") from None
        parent = f"collaborations/{collaboration}"
        state = WitnessState((state_dir or _default_state_dir("witness")) / collaboration)
        with client_for(options) as client:
            while True:
                try:
                    result = witness_once(client, parent, ring, signer, state)
                except ServerError as error:
                    if interval is None:
                        raise
                    # A server restarting or busy: the next round tries again.
                    errors.print(f"[yellow]skipped[/]: {error.code} {inert(error.message)}")
                    time.sleep(interval)
                    continue
                if not result.ok:
                    errors.print(f"[bold red]REFUSED[/]: {inert(result.problem or '')}")
                    sys.exit(1)
                size = result.checkpoint.tree_size if result.checkpoint else 0
                console.print(f"cosigned checkpoint {size:,} of {inert(result.log)}")
                if interval is None:
                    return
                time.sleep(interval)  # the witness's own schedule, not a test's wait


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
