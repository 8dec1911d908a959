"""Overlap reports and the privacy budget: `report` and `budget`."""

from __future__ import annotations

from typing import Any

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
from partners.inert import inert


def _print_report(report: Any, output: str) -> None:
    if output == "json":
        click.echo(render.as_json(report))
    elif output == "csv":
        click.echo(render.report_csv(report), nl=False)
    else:
        console.print(render.report_tables(report))


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


@report.command(name="create")
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
@output_options
@connection_options
def report_create(
    collaboration: str,
    base: str,
    others: tuple[str, ...],
    segment: str | None,
    output: str,
    estimate: bool = False,
    **options: Any,
) -> None:
    """Ask how your base dataset overlaps the others."""
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
        _print_report(response.overlap_report, output)


@report.command(name="get")
@click.argument("name")
@click.option("--collaboration", default="", help="Needed when NAME is a short id.")
@output_options
@connection_options
def report_get(name: str, collaboration: str, output: str, **options: Any) -> None:
    """Show a report released earlier."""
    with reported_errors(), client_for(options) as client:
        _print_report(
            client.get_report(resource_name(collaboration, "overlapReports", name)), output
        )


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
        for r in reports:
            console.print(
                f"{inert(r.name)}  base {inert(render.short(r.base_dataset))} vs"
                f" {inert(', '.join(render.short(o) for o in r.other_datasets))}"
                f"  ({r.create_time.ToDatetime():%Y-%m-%d %H:%M})"
            )


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
