"""Overlap reports and the privacy budget: `report` and `budget`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from partners import render
from partners.cli._common import (
    client_for,
    connection_options,
    console,
    errors,
    output_options,
    reported_errors,
    resource_name,
)
from partners.errors import AccessDeniedError

if TYPE_CHECKING:
    from cleanroom.v1.overlap_report_pb2 import OverlapReport
    from partners.client import CleanRoomClient

F = TypeVar("F", bound=Callable[..., Any])


def report_output_options(command: F) -> F:
    """--table, --json and --csv, plus `--csv wide` and `--format xlsx|html --out FILE`."""
    command = click.option(
        "--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help="The file to write with --format.",
    )(command)  # fmt: skip
    command = click.option(
        "--format", "file_format", type=click.Choice(["xlsx", "html"]), default=None,
        help="Write a file into --out: xlsx, an Excel workbook (facts, datasets, pairwise,"
        " membership); html, the page of `report html`.",
    )(command)  # fmt: skip
    command = click.option(
        "--csv-shape", "csv_shape", type=click.Choice(["long", "wide"]), default="long",
        help="With --csv: long (one figure a row) or wide (one row per membership pattern).",
    )(command)  # fmt: skip
    return output_options(command)


def _csv_wide_argument(args: list[str]) -> list[str]:
    """`--csv wide` / `--csv long` as click sees them: --csv --csv-shape wide."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] == "--csv" and arg in ("wide", "long"):
            out.append(f"--csv-shape={arg}")
        else:
            out.append(arg)
    return out


class _ReportCommand(click.Command):
    """A command whose `--csv` takes an optional shape: `--csv` or `--csv wide`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _csv_wide_argument(args))


def _check_file_options(file_format: str | None, out: Path | None) -> None:
    """Refuses `--format` without `--out` before anything is asked of the server."""
    if file_format and out is None:
        raise click.UsageError(f"--format {file_format} writes a file: add --out FILE.")


def _parent(report_name: str) -> str:
    return report_name.split("/overlapReports/", 1)[0]


def report_context(client: CleanRoomClient, report: OverlapReport) -> dict[str, Any]:
    """The owners of a report's datasets and the exact sizes of the caller's own.

    Both come from listings the caller may read (every member's shared datasets, its own
    datasets with their sizes); a caller who may read neither gets the report without them.
    """
    parent = _parent(report.name)
    owners: dict[str, str] = {}
    exact_sizes: dict[str, int] = {}
    try:
        owners = {d.name: d.owner for d in client.list_shared_datasets(parent)}
        wanted = {report.base_dataset, *report.other_datasets}
        exact_sizes = {
            d.name: d.row_count for d in client.list_datasets(parent) if d.name in wanted
        }
    except AccessDeniedError:
        pass
    return {"owners": owners, "exact_sizes": exact_sizes}


def _print_report(
    report: Any,
    output: str,
    client: CleanRoomClient,
    *,
    csv_shape: str = "long",
    file_format: str | None = None,
    out: Path | None = None,
) -> None:
    if file_format and out is not None:
        from partners.reports import write_html, write_workbook  # noqa: PLC0415 (on use)

        write = write_workbook if file_format == "xlsx" else write_html
        write(report, out, **report_context(client, report))
        console.print(f"wrote {out}", markup=False)
    elif output == "json":
        click.echo(render.as_json(report))
    elif output == "csv":
        text = render.report_csv_wide(report) if csv_shape == "wide" else render.report_csv(report)
        click.echo(text, nl=False)
    else:
        console.print(
            render.report_tables(
                report, **report_context(client, report), plain=not console.is_terminal
            )
        )


def _print_estimate(estimate: Any, output: str) -> None:
    if output in ("json", "csv"):  # one record: JSON serves machines either way
        click.echo(render.as_json(estimate))
        return
    if estimate.reused:
        console.print("asked before: the stored report would be returned, spending nothing")
    elif not estimate.noise:
        console.print("exact counts (no noise): no privacy budget spent")
    else:
        console.print(
            f"would spend epsilon {estimate.epsilon_cost:g} of your"
            f" {estimate.member_remaining_epsilon:g} left; each measured count would carry"
            f" discrete Laplace noise of scale {estimate.noise_scale:g}, within"
            f" ±{estimate.interval_half_width:,} of the exact count 95% of the time"
        )
    if not estimate.allowed:
        console.print(f"it would be refused: {estimate.refusal_reason}")


@click.group()
def report() -> None:
    """Create, get and list overlap reports."""


@report.command(name="create", cls=_ReportCommand)
@click.option("--collaboration", required=True)
@click.option("--base", required=True, help="Your dataset (id or name).")
@click.option("--other", "others", multiple=True, required=True,
              help="A dataset to compare with (id or name); 1 to 7 of them.")  # fmt: skip
@click.option("--segment", default=None, help="A segment column of the base to split by.")
@click.option(
    "--estimate",
    is_flag=True,
    help="A dry run: show what the report would cost and how accurate it would be.",
)
@report_output_options
@connection_options
def report_create(
    collaboration: str,
    base: str,
    others: tuple[str, ...],
    segment: str | None,
    output: str,
    csv_shape: str,
    file_format: str | None,
    out: Path | None,
    estimate: bool = False,
    **options: Any,
) -> None:
    """Ask how your base dataset overlaps the others."""
    _check_file_options(file_format, out)
    with reported_errors(), client_for(options) as client:
        response = client.create_report_response(
            f"collaborations/{collaboration}",
            base=resource_name(collaboration, "datasets", base),
            others=[resource_name(collaboration, "datasets", o) for o in others],
            segment_column=segment,
            validate_only=estimate,
        )
        if estimate:
            _print_estimate(response.estimate, output)
            return
        if response.reused:
            errors.print(
                "This question was asked before: here is the report released then"
                " (no privacy budget spent)."
            )
        _print_report(
            response.overlap_report, output, client,
            csv_shape=csv_shape, file_format=file_format, out=out,
        )  # fmt: skip


@report.command(name="get", cls=_ReportCommand)
@click.argument("name")
@click.option("--collaboration", default="", help="Needed when NAME is a short id.")
@report_output_options
@connection_options
def report_get(
    name: str,
    collaboration: str,
    output: str,
    csv_shape: str,
    file_format: str | None,
    out: Path | None,
    **options: Any,
) -> None:
    """Show a report released earlier."""
    _check_file_options(file_format, out)
    with reported_errors(), client_for(options) as client:
        _print_report(
            client.get_report(resource_name(collaboration, "overlapReports", name)), output,
            client, csv_shape=csv_shape, file_format=file_format, out=out,
        )  # fmt: skip


@report.command(name="html")
@click.argument("name")
@click.option("--collaboration", default="", help="Needed when NAME is a short id.")
@click.option(
    "--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
    help="The HTML file to write (one self-contained file that opens offline).",
)  # fmt: skip
@connection_options
def report_html(name: str, collaboration: str, out: Path, **options: Any) -> None:
    """Write a report as one self-contained HTML page with charts."""
    with reported_errors(), client_for(options) as client:
        from partners.reports import write_html  # noqa: PLC0415 (matplotlib on use)

        found = client.get_report(resource_name(collaboration, "overlapReports", name))
        write_html(found, out, **report_context(client, found))
        console.print(f"wrote {out}", markup=False)


@report.command(name="list")
@click.option("--collaboration", required=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def report_list(collaboration: str, as_json: bool, **options: Any) -> None:
    """List the reports released to your brand."""
    with reported_errors(), client_for(options) as client:
        reports = list(client.list_reports(f"collaborations/{collaboration}"))
        if as_json:
            click.echo(render.as_json(reports))
            return
        console.print(render.reports_table(reports, plain=not console.is_terminal))


@click.command()
@click.option("--collaboration", required=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def budget(collaboration: str, as_json: bool, **options: Any) -> None:
    """Show the collaboration's privacy budget: spent and remaining epsilon."""
    with reported_errors(), client_for(options) as client:
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
        if found.member:
            console.print(
                f"your brand ({render.short(found.member)}): {found.member_remaining_epsilon:g}"
                f" remaining of its share of {found.member_share_epsilon:g}"
                f" ({found.member_spent_epsilon:g} spent)"
            )
