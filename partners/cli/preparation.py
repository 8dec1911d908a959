"""Preparing customer files: `prepare` and `resolve`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from partners.cli._common import (
    column_types,
    console,
    reported_errors,
)
from partners.cli._progress import progress_of
from partners.errors import InputError
from partners.preparation.digest import read_secret
from partners.preparation.pipeline import PreparationSummary, prepare
from partners.preparation.resolve import (
    DEFAULT_MAX_RECORDS_PER_PERSON,
    ResolutionSummary,
    Source,
    resolve,
)


@click.command(name="prepare")
@click.argument("source", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("destination", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--collaboration", required=True,
              help="The collaboration id [env CLEANROOM_COLLABORATION, or the profile's]."
              )  # fmt: skip
@click.option("--secret-file", required=True, type=click.Path(path_type=Path),
              help="The collaboration secret, as `keygen` wrote it.")  # fmt: skip
@click.option("--column", "columns", multiple=True, metavar="COLUMN=TYPE",
              help="An identifier column and its type (email, phone, maid or a declared type)."
                   " Repeat for each.")  # fmt: skip
@click.option("--hashed-column", "hashed_columns", multiple=True, metavar="COLUMN=TYPE",
              help="A column of SHA-256 hashes of normalized identifiers of TYPE (64 hex digits"
                   " or 44 base64 characters), as UID2 and ad platforms take them. Phones must"
                   " be hashed in E.164 with the '+' (+66812345678). Repeat for each.")  # fmt: skip
@click.option("--hashed-phone-form", type=click.Choice(["e164", "digits"]), default="e164",
              show_default=True,
              help="How hashed phones were made: e164 (with '+') matches; digits (without"
                   " '+', Meta's form) cannot be converted and is refused.")  # fmt: skip
@click.option("--segment", "segments", multiple=True, metavar="COLUMN[=NAME]",
              help="A segment column to keep (few distinct labels), renamed to NAME in the"
                   " room, e.g. \"Member Tier=member_tier\". Repeat for each.")  # fmt: skip
@click.option("--default-region", default=None, metavar="CC",
              help="Region of phone numbers without a country code, e.g. TH or VN.")  # fmt: skip
@click.option("--region-column", default=None, metavar="COLUMN",
              help="A column with each row's region (TH, VN, or a country name such as"
                   " Thailand or Việt Nam) for its phone number; the default region applies"
                   " where it is empty.")  # fmt: skip
@click.option("--delimiter", default=None, metavar="CHAR",
              help="The CSV delimiter (\\t for tab); sniffed by default.")  # fmt: skip
@click.option("--encoding", default=None, metavar="NAME",
              help="The CSV encoding (utf-8, cp1252, cp874, utf-16...); detected by default."
              )  # fmt: skip
@click.option("--sheet", default=None, metavar="NAME",
              help="The sheet of an XLSX file to read; the first by default.")  # fmt: skip
@click.option("--strict", is_flag=True,
              help="Fail (and write nothing) if any value is invalid, instead of dropping it."
              )  # fmt: skip
@click.option(
    "--declared-type", "declared", multiple=True, help="A type the collaboration declared."
)
@click.option("--blind-key", "blind_key", envvar="CLEANROOM_BLIND_KEY", default=None,
              type=click.Path(path_type=Path, dir_okay=False),
              help="In a double-blind collaboration, your blind key (from `blind-key`): the"
                   " digests are masked with it and the rows shuffled, so that `upload` sends"
                   " the file as it is [env CLEANROOM_BLIND_KEY].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def prepare_command(
    source: Path,
    destination: Path,
    collaboration: str,
    secret_file: Path,
    columns: tuple[str, ...],
    hashed_columns: tuple[str, ...],
    hashed_phone_form: str,
    segments: tuple[str, ...],
    default_region: str | None,
    region_column: str | None,
    delimiter: str | None,
    encoding: str | None,
    sheet: str | None,
    strict: bool,
    declared: tuple[str, ...],
    blind_key: Path | None,
    as_json: bool,
) -> None:
    """Normalize and digest SOURCE (CSV, TSV, XLSX, Parquet) into the digests file DESTINATION.

    Give each identifier column with --column (raw values) or --hashed-column (SHA-256 of
    the normalized value); both give the same digests. Repeated digests keep their first row.
    """
    with reported_errors():
        secret = read_secret(secret_file)
        key = None
        if blind_key is not None:
            from partners.masking.keys import read_blind_key  # noqa: PLC0415 (libsodium)

            key = read_blind_key(blind_key, collaboration=collaboration)
        with progress_of("preparing", "rows", quiet=as_json) as advance:
            summary = prepare(
                source,
                destination,
                secret=secret,
                collaboration_id=collaboration,
                columns=column_types(columns),
                hashed_columns=column_types(hashed_columns),
                segment_columns=segment_names(segments),
                default_region=default_region,
                region_column=region_column,
                declared_types=declared,
                delimiter="\t" if delimiter in ("\\t", "tab", "TAB") else delimiter,
                encoding=encoding,
                sheet=sheet,
                strict=strict,
                hashed_phone_form="digits" if hashed_phone_form == "digits" else "e164",
                progress=advance,
            )
        if key is not None:
            from partners.masking.files import mask_digest_file  # noqa: PLC0415

            total = summary.rows_written * len(summary.types)
            with progress_of("masking", "values", total=total, quiet=as_json) as advance:
                mask_digest_file(destination, key, progress=advance)
        if as_json:
            document = summary.to_dict()
            document["matching"] = "shared_secret" if key is None else "double_blind"
            click.echo(json.dumps(document, indent=2))
        else:
            _print_summary(summary, destination)
            if key is not None:
                console.print("masked with your blind key, rows shuffled: upload it as it is")


def segment_names(values: tuple[str, ...]) -> dict[str, str]:
    """--segment COLUMN[=NAME] options as source column to name in the room.

    The last `=` splits, so that a column name may hold one.
    """
    mapping: dict[str, str] = {}
    for value in values:
        column, sep, name = value.rpartition("=")
        if not sep:
            column, name = value, value
        if not column or not name:
            raise click.BadParameter(f"{value!r}: use COLUMN or COLUMN=NAME, e.g. tier=tier")
        if column in mapping:
            raise InputError(
                "DUPLICATE_SEGMENT_COLUMN",
                f"Segment column {column!r} is given more than once; name each segment once.",
                {"column": column},
            )
        mapping[column] = name
    return mapping


def _print_summary(summary: PreparationSummary, destination: Path) -> None:
    console.print(f"read {escape(summary.source)}", highlight=False)
    console.print(
        f"read {summary.rows_read:,} rows; wrote {summary.rows_written:,} to"
        f" {escape(str(destination))}"
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
            + (f"; first invalid on {s.first_invalid}" if s.first_invalid else "")
        )
    for hint in summary.hints:
        console.print(f"[yellow]hint:[/] {escape(hint)}", highlight=False)


def _source(value: str) -> Source:
    """A resolve source from FILE:COLUMN=TYPE[,COLUMN=TYPE...] (the last ':' splits)."""
    path, sep, mapping = value.rpartition(":")
    if not sep or not path or not mapping:
        raise click.BadParameter(
            f"{value!r}: use FILE:COLUMN=TYPE[,COLUMN=TYPE...],"
            " e.g. crm.csv:email=email,mobile=phone"
        )
    return Source(Path(path), column_types(tuple(mapping.split(","))))


@click.command(name="resolve")
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
    with reported_errors():
        parsed = [_source(value) for value in sources]
        with progress_of("reading", "records", quiet=as_json) as advance:
            summary = resolve(
                parsed,
                destination,
                default_region=default_region,
                declared_types=declared,
                max_records_per_person=max_records_per_person,
                progress=advance,
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
