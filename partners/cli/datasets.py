"""Uploading and managing datasets: `upload` and `datasets`."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from partners import render
from partners.cli._common import (
    client_for,
    connection_options,
    console,
    reported_errors,
    resource_name,
)
from partners.cli._progress import progress_of
from partners.inert import inert
from partners.preparation.pipeline import DOUBLE_BLIND, read_digest_file


@click.command()
@click.argument("digests", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--dataset-id", required=True, help="The new dataset's id, e.g. acme-customers.")
@click.option("--blind-key", "blind_key", envvar="CLEANROOM_BLIND_KEY", default=None,
              type=click.Path(path_type=Path, dir_okay=False),
              help="In a double-blind collaboration, your brand's blind key (from `blind-key`):"
                   " the digests are masked with it and the rows shuffled before they leave"
                   " [env CLEANROOM_BLIND_KEY].")  # fmt: skip
@connection_options
@click.pass_context
def upload(
    ctx: click.Context, /, digests: Path, dataset_id: str, blind_key: Path | None, **options: Any
) -> None:
    """Upload a digests file written by `prepare` as a new dataset."""
    with reported_errors():
        info = read_digest_file(digests)
        key = None
        premasked = info.matching == DOUBLE_BLIND
        from_flag = ctx.get_parameter_source("blind_key") == click.core.ParameterSource.COMMANDLINE
        # A file `prepare --blind-key` masked goes as it is: a key from the environment or
        # the profile is not for it (one given as a flag is, and is refused: twice masked).
        if blind_key is not None and (from_flag or not premasked):
            from partners.masking.keys import read_blind_key  # noqa: PLC0415 (libsodium)

            key = read_blind_key(blind_key, collaboration=info.collaboration_id)
        with client_for(options) as client, ExitStack() as stack:
            masking = None
            if key is not None:
                total = info.row_count * len(info.identifier_types)
                masking = stack.enter_context(progress_of("masking", "values", total=total))
            advance = stack.enter_context(progress_of("uploading", "rows", total=info.row_count))
            dataset = client.upload(
                digests,
                dataset_id=dataset_id,
                progress=advance,
                blind_key=key,
                masking_progress=masking,
            )
        blind = " (masked with your blind key, rows shuffled)" if key or premasked else ""
        console.print(f"uploaded {inert(dataset.name)}: {dataset.row_count:,} rows{blind}")
        for stats in dataset.identifier_stats:
            console.print(
                f"  {inert(stats.identifier_type)}: {stats.present_count:,} digests,"
                f" {stats.duplicate_count:,} repeats dropped by the server"
            )


@click.group()
def datasets() -> None:
    """List, show and delete your brand's datasets."""


@datasets.command(name="list")
@click.option("--collaboration", required=True)
@click.option(
    "--shared",
    is_flag=True,
    help="Every member's datasets in the collaboration (owner, types, segments; no sizes).",
)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def datasets_list(collaboration: str, shared: bool, as_json: bool, **options: Any) -> None:
    """List your brand's datasets in a collaboration, or with --shared every member's."""
    with reported_errors(), client_for(options) as client:
        parent = f"collaborations/{collaboration}"
        if shared:
            found = list(client.list_shared_datasets(parent))
            if as_json:
                click.echo(render.as_json(found))
            else:
                console.print(render.shared_datasets_table(found, plain=not console.is_terminal))
            return
        items = list(client.list_datasets(parent))
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
    with reported_errors(), client_for(options) as client:
        click.echo(
            render.as_json(client.get_dataset(resource_name(collaboration, "datasets", dataset)))
        )


@datasets.command(name="delete")
@click.argument("dataset")
@click.option("--collaboration", default="", help="Needed when DATASET is a short id.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@connection_options
def datasets_delete(dataset: str, collaboration: str, yes: bool, **options: Any) -> None:
    """Delete one of your datasets and its data, for good."""
    name = resource_name(collaboration, "datasets", dataset)
    if not yes:
        click.confirm(f"Delete {name} and all its data?", abort=True)
    with reported_errors(), client_for(options) as client:
        client.delete_dataset(name)
        console.print(f"deleted {inert(name)}")
