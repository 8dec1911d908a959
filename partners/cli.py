"""`cleanroom-partner`: the command line of brands' engineers, marketers and auditors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cleanroom.signed_note import NoteError, NoteVerifier
from partners import render
from partners.audit_export import FORMATS, export_events
from partners.audit_verify import AuditorState, verify_log
from partners.client import CleanRoomClient, Connection
from partners.digest import key_check_value, new_secret, read_secret, write_secret
from partners.errors import InputError, PartnerError, ServerError
from partners.preparation import PreparationSummary, prepare, read_digest_file
from partners.resolve import (
    DEFAULT_MAX_RECORDS_PER_PERSON,
    ResolutionSummary,
    Source,
    resolve,
)

console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _reported_errors() -> Iterator[None]:
    """Turns toolkit errors into a clear message on stderr and exit status 1 (2 for input)."""
    try:
        yield
    except ServerError as error:
        errors.print(f"[bold red]error:[/] {error.code} {error.reason}: {error.message}")
        sys.exit(1)
    except PartnerError as error:
        errors.print(f"[bold red]error:[/] {error.reason}: {error.message}")
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
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def _client(options: dict[str, Any]) -> CleanRoomClient:
    keys = ("target", "certificate", "private_key", "ca_certificate", "server_name")
    return CleanRoomClient(Connection(**{k: options.pop(k) for k in keys}))


def _name(collaboration: str, collection: str, value: str) -> str:
    """A full resource name from a short id, or the name itself."""
    if "/" in value:
        return value
    return f"collaborations/{collaboration}/{collection}/{value}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleanroom")
def main() -> None:
    """The partner toolkit of the clean room: prepare, upload, report, audit.

    Your customer file never leaves your machine: `prepare` turns it into salted digests
    with the collaboration secret, and only those are uploaded.
    """


@main.command()
@click.option("--collaboration", required=True, help="The collaboration id the secret is for.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Where to write the new secret (created with mode 0600).")  # fmt: skip
def keygen(collaboration: str, out: Path) -> None:
    """Create a new collaboration secret and print its key check value (KCV).

    Share the secret with the other brands out of band, never with the clean room; give
    the operator only the KCV.
    """
    with _reported_errors():
        secret = new_secret()
        write_secret(out, secret)
        console.print(f"secret written to {out}")
        console.print(f"key check value: [bold]{key_check_value(secret, collaboration)}[/]")


@main.command()
@click.option("--collaboration", required=True, help="The collaboration id.")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path),
              help="The collaboration secret, as `keygen` wrote it.")  # fmt: skip
def kcv(collaboration: str, secret_file: Path) -> None:
    """Print the key check value of a secret, to compare with the collaboration's."""
    with _reported_errors():
        click.echo(key_check_value(read_secret(secret_file), collaboration))


def _mapping(values: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for value in values:
        column, sep, identifier_type = value.partition("=")
        if not sep or not column or not identifier_type:
            raise click.BadParameter(f"{value!r}: use COLUMN=TYPE, e.g. mobile=phone")
        mapping[column] = identifier_type
    return mapping


@main.command(name="prepare")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("destination", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--collaboration", required=True, help="The collaboration id.")
@click.option("--secret-file", required=True, type=click.Path(path_type=Path),
              help="The collaboration secret, as `keygen` wrote it.")  # fmt: skip
@click.option("--column", "columns", multiple=True, metavar="COLUMN=TYPE",
              help="An identifier column and its type (email, phone, maid or a declared type)."
                   " Repeat for each.")  # fmt: skip
@click.option("--hashed-column", "hashed_columns", multiple=True, metavar="COLUMN=TYPE",
              help="A column of SHA-256 hashes of normalized identifiers of TYPE (64 hex digits"
                   " or 44 base64 characters), as UID2 and ad platforms take them. Repeat for"
                   " each.")  # fmt: skip
@click.option("--segment", "segments", multiple=True, metavar="COLUMN",
              help="A segment column to keep (few distinct labels). Repeat for each.")  # fmt: skip
@click.option("--default-region", default=None, metavar="CC",
              help="Region of phone numbers without a country code, e.g. US or GB.")  # fmt: skip
@click.option(
    "--declared-type", "declared", multiple=True, help="A type the collaboration declared."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def prepare_command(
    source: Path,
    destination: Path,
    collaboration: str,
    secret_file: Path,
    columns: tuple[str, ...],
    hashed_columns: tuple[str, ...],
    segments: tuple[str, ...],
    default_region: str | None,
    declared: tuple[str, ...],
    as_json: bool,
) -> None:
    """Normalize and digest SOURCE (CSV or Parquet) into the digests file DESTINATION.

    Give each identifier column with --column (raw values) or --hashed-column (SHA-256 of
    the normalized value); both give the same digests. Repeated digests keep their first row.
    """
    with _reported_errors():
        secret = read_secret(secret_file)
        with Progress(
            TextColumn("preparing"), BarColumn(), TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(), console=errors, disable=as_json, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("prepare", total=None)
            summary = prepare(
                source,
                destination,
                secret=secret,
                collaboration_id=collaboration,
                columns=_mapping(columns),
                hashed_columns=_mapping(hashed_columns),
                segment_columns=segments,
                default_region=default_region,
                declared_types=declared,
                progress=lambda rows: progress.advance(task, rows),
            )
        if as_json:
            click.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            _print_summary(summary, destination)


def _print_summary(summary: PreparationSummary, destination: Path) -> None:
    console.print(
        f"read {summary.rows_read:,} rows; wrote {summary.rows_written:,} to {destination}"
        f" ({summary.rows_without_identifier:,} rows had no valid identifier)"
    )
    for identifier_type, s in summary.types.items():
        data = s.to_dict()
        invalid = ", ".join(f"{n:,} {r}" for r, n in sorted(data["invalid_by_reason"].items()))
        changes = ", ".join(f"{n:,} {c}" for c, n in sorted(data["changes"].items()))
        console.print(
            f"  {identifier_type}: {data['values_read']:,} values, {data['valid']:,} valid,"
            f" {data['duplicates']:,} duplicates dropped"
            + (f"; invalid: {invalid}" if invalid else "")
            + (f"; normalized: {changes}" if changes else "")
        )


def _source(value: str) -> Source:
    """A resolve source from FILE:COLUMN=TYPE[,COLUMN=TYPE...] (the last ':' splits)."""
    path, sep, mapping = value.rpartition(":")
    if not sep or not path or not mapping:
        raise click.BadParameter(
            f"{value!r}: use FILE:COLUMN=TYPE[,COLUMN=TYPE...],"
            " e.g. crm.csv:email=email,mobile=phone"
        )
    return Source(Path(path), _mapping(tuple(mapping.split(","))))


@main.command(name="resolve")
@click.option("--source", "sources", multiple=True, required=True,
              metavar="FILE:COLUMN=TYPE[,COLUMN=TYPE...]",
              help="A file (CSV or Parquet) and its identifier columns with their types."
                   " Repeat for each file, the preferred first.")  # fmt: skip
@click.option("--out", "destination", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The people file to write: .parquet or .csv.")  # fmt: skip
@click.option("--default-region", default=None, metavar="CC",
              help="Region of phone numbers without a country code, e.g. US or GB.")  # fmt: skip
@click.option(
    "--declared-type", "declared", multiple=True, help="A type the collaboration declared."
)
@click.option("--max-records-per-person", type=click.IntRange(min=1),
              default=DEFAULT_MAX_RECORDS_PER_PERSON, show_default=True,
              help="Identifiers that would join more records into one person are not used"
                   " to link (a shared or junk identifier) and are reported.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def resolve_command(
    sources: tuple[str, ...],
    destination: Path,
    default_region: str | None,
    declared: tuple[str, ...],
    max_records_per_person: int,
    as_json: bool,
) -> None:
    """Link records of your sources that share an identifier into persons.

    Writes one row per person (person_id, records, then one normalized value per
    identifier type), ready for `prepare`. A person with several values of a type keeps
    the one of its earliest record, in the order the sources are given.
    """
    with _reported_errors():
        parsed = [_source(value) for value in sources]
        with Progress(
            TextColumn("reading"), BarColumn(), TextColumn("{task.completed:,} records"),
            TimeElapsedColumn(), console=errors, disable=as_json, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("resolve", total=None)
            summary = resolve(
                parsed,
                destination,
                default_region=default_region,
                declared_types=declared,
                max_records_per_person=max_records_per_person,
                progress=lambda rows: progress.advance(task, rows),
            )
        if as_json:
            click.echo(json.dumps(summary.to_dict(), indent=2))
        else:
            _print_resolution(summary, destination)


def _print_resolution(summary: ResolutionSummary, destination: Path) -> None:
    console.print(
        f"read {summary.records:,} records; wrote {summary.persons:,} persons to {destination}"
    )
    for source in summary.sources:
        console.print(f"  {source.path}: {source.records:,} records")
        for identifier_type, s in source.types.items():
            invalid = ", ".join(f"{n:,} {r}" for r, n in s.invalid_by_reason.items())
            console.print(
                f"    {identifier_type}: {s.values_read:,} values, {s.valid:,} valid"
                + (f"; invalid: {invalid}" if invalid else "")
            )
    sizes = ", ".join(f"{p:,} with {r}" for r, p in summary.records_per_person.items())
    console.print(f"records per person: {sizes}")
    for identifier_type, counts in summary.identifiers_per_person.items():
        spread = ", ".join(f"{p:,} with {n}" for n, p in counts.items())
        several = summary.persons_with_several_values[identifier_type]
        console.print(
            f"  {identifier_type} values per person: {spread}"
            + (f" ({several:,} kept their first)" if several else "")
        )
    if summary.shared_identifiers_excluded:
        console.print(
            f"[yellow]{summary.shared_identifiers_excluded:,} identifiers were not used to link:"
            f" they would join more than {summary.max_records_per_person} records into one"
            " person (shared or junk values; clean them up at the source). The most held:[/]"
        )
        for shared in summary.shared_identifiers:
            console.print(
                f"  {shared.identifier_type} {shared.value!r}: {shared.records:,} records"
            )
    if summary.records_not_merged:
        console.print(
            f"[yellow]{summary.records_not_merged:,} records stayed in groups too large to be"
            " one person and were left unmerged.[/]"
        )


@main.command()
@click.argument("digests", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--dataset-id", required=True, help="The new dataset's id, e.g. acme-customers.")
@connection_options
def upload(digests: Path, dataset_id: str, **options: Any) -> None:
    """Upload a digests file written by `prepare` as a new dataset."""
    with _reported_errors():
        info = read_digest_file(digests)
        with _client(options) as client, Progress(
            TextColumn("uploading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=errors, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("upload", total=info.row_count)
            dataset = client.upload(
                digests, dataset_id=dataset_id, progress=lambda rows: progress.advance(task, rows)
            )
        console.print(f"uploaded {dataset.name}: {dataset.row_count:,} rows")
        for stats in dataset.identifier_stats:
            console.print(
                f"  {stats.identifier_type}: {stats.present_count:,} digests,"
                f" {stats.duplicate_count:,} repeats dropped by the server"
            )


@main.group()
def datasets() -> None:
    """List, show and delete your brand's datasets."""


@datasets.command(name="list")
@click.option("--collaboration", required=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def datasets_list(collaboration: str, as_json: bool, **options: Any) -> None:
    """List your brand's datasets in a collaboration."""
    with _reported_errors(), _client(options) as client:
        items = list(client.list_datasets(f"collaborations/{collaboration}"))
        if as_json:
            click.echo(render.as_json(items))
        else:
            console.print(render.datasets_table(items))


@datasets.command(name="show")
@click.argument("dataset")
@click.option("--collaboration", default="", help="Needed when DATASET is a short id.")
@connection_options
def datasets_show(dataset: str, collaboration: str, **options: Any) -> None:
    """Show one dataset (a full name, or an id with --collaboration) as JSON."""
    with _reported_errors(), _client(options) as client:
        click.echo(render.as_json(client.get_dataset(_name(collaboration, "datasets", dataset))))


@datasets.command(name="delete")
@click.argument("dataset")
@click.option("--collaboration", default="", help="Needed when DATASET is a short id.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def datasets_delete(dataset: str, collaboration: str, yes: bool, **options: Any) -> None:
    """Delete one of your datasets and its data, for good."""
    name = _name(collaboration, "datasets", dataset)
    if not yes:
        click.confirm(f"Delete {name} and all its data?", abort=True)
    with _reported_errors(), _client(options) as client:
        client.delete_dataset(name)
        console.print(f"deleted {name}")


def _print_report(report: Any, output: str) -> None:
    if output == "json":
        click.echo(render.as_json(report))
    elif output == "csv":
        click.echo(render.report_csv(report), nl=False)
    else:
        console.print(render.report_tables(report))


def _output(command: F) -> F:
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


@main.group()
def report() -> None:
    """Create, get and list overlap reports."""


@report.command(name="create")
@click.option("--collaboration", required=True)
@click.option("--base", required=True, help="Your dataset (id or name).")
@click.option("--other", "others", multiple=True, required=True,
              help="A dataset to compare with (id or name); 1 to 7 of them.")  # fmt: skip
@click.option("--segment", default=None, help="A segment column of the base to split by.")
@_output
@connection_options
def report_create(
    collaboration: str,
    base: str,
    others: tuple[str, ...],
    segment: str | None,
    output: str,
    **options: Any,
) -> None:
    """Ask how your base dataset overlaps the others."""
    with _reported_errors(), _client(options) as client:
        response = client.create_report_response(
            f"collaborations/{collaboration}",
            base=_name(collaboration, "datasets", base),
            others=[_name(collaboration, "datasets", o) for o in others],
            segment_column=segment,
        )
        if response.reused:
            errors.print(
                "This question was asked before: here is the report released then"
                " (no privacy budget spent)."
            )
        _print_report(response.overlap_report, output)


@report.command(name="get")
@click.argument("name")
@click.option("--collaboration", default="", help="Needed when NAME is a short id.")
@_output
@connection_options
def report_get(name: str, collaboration: str, output: str, **options: Any) -> None:
    """Show a report released earlier."""
    with _reported_errors(), _client(options) as client:
        _print_report(client.get_report(_name(collaboration, "overlapReports", name)), output)


@report.command(name="list")
@click.option("--collaboration", required=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def report_list(collaboration: str, as_json: bool, **options: Any) -> None:
    """List the reports released to your brand."""
    with _reported_errors(), _client(options) as client:
        reports = list(client.list_reports(f"collaborations/{collaboration}"))
        if as_json:
            click.echo(render.as_json(reports))
            return
        for r in reports:
            console.print(
                f"{r.name}  base {render.short(r.base_dataset)} vs"
                f" {', '.join(render.short(o) for o in r.other_datasets)}"
                f"  ({r.create_time.ToDatetime():%Y-%m-%d %H:%M})"
            )


@main.command()
@click.option("--collaboration", required=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def budget(collaboration: str, as_json: bool, **options: Any) -> None:
    """Show the collaboration's privacy budget: spent and remaining epsilon."""
    with _reported_errors(), _client(options) as client:
        found = client.get_budget(f"collaborations/{collaboration}")
        if as_json:
            click.echo(render.as_json(found))
            return
        if not found.noise:
            console.print("reports are exact (no noise): they spend no privacy budget")
        console.print(
            f"epsilon: {found.remaining_epsilon:g} remaining of {found.total_epsilon:g}"
            f" ({found.spent_epsilon:g} spent by {found.released_reports} reports;"
            f" {found.epsilon_per_report:g} per new noisy report)"
        )


@main.group()
def audit() -> None:
    """Read the collaboration's query log (auditors)."""


@audit.command(name="list")
@click.option("--collaboration", required=True, help="The collaboration id ('-': server log).")
@click.option("--since", type=click.DateTime(), default=None, help="Events at or after (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Events before (UTC).")
@click.option("--method", default=None, help="Only this method, e.g. CreateOverlapReport.")
@click.option("--caller", default=None, help="Only this caller, e.g. partners/acme.")
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
    with _reported_errors(), _client(options) as client:
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
    with _reported_errors():
        verifier = _verifier(log_key)
        parent = f"collaborations/{collaboration}"
        state = AuditorState((state_dir or _default_state_dir()) / collaboration)
        with _client(options) as client:
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
    with _reported_errors(), _client(options) as client:
        events = client.list_audit_events(f"collaborations/{collaboration}", page_size=1000)
        count = export_events(events, destination, file_format)
        console.print(f"exported {count:,} events to {destination}")
