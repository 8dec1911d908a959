"""`cleanroom`: the command line of the clean room's operators."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler

from cleanroom.config import Config, load_config
from cleanroom.demo.run import run_demo
from cleanroom.errors import CleanRoomError
from cleanroom.pki import create_demo_pki, partner_dns_name
from cleanroom.service.server import serve as run_server

console = Console()
errors = Console(stderr=True)


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleanroom")
def main() -> None:
    """Run and operate the clean room server."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              envvar="CLEANROOM_CONFIG", help="The server's TOML configuration.")  # fmt: skip
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING"]))
def serve(config_path: Path, log_level: str) -> None:
    """Serve the clean room until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level, format="%(message)s", handlers=[RichHandler(console=errors)]
    )
    config = _config(config_path)
    try:
        run_server(config)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(1)


@main.command(name="check-config")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path))
def check_config(config_path: Path) -> None:
    """Check a configuration file and summarize it, without starting anything."""
    config = _config(config_path)
    console.print(f"listen {config.server.listen}; data in {config.server.data_dir}")
    for partner in config.partners.values():
        role = " (administrator)" if partner.administrator else ""
        console.print(f"partner {partner.id}{role}: {', '.join(partner.certificate_names)}")
    for c in config.collaborations.values():
        console.print(
            f"collaboration {c.id}: KCV {c.key_check_value}, types {', '.join(c.identifier_types)},"
            f" threshold {c.policy.minimum_threshold},"
            f" minimum dataset size {c.policy.minimum_dataset_size}"
        )
        for partner_id, roles in sorted(c.members.items()):
            console.print(f"  {partner_id}: {', '.join(sorted(roles))}")
    console.print("[green]configuration is valid[/]")


@main.group()
def pki() -> None:
    """Certificates for trying the clean room out (use your own CA in production)."""


@pki.command(name="init")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--partner", "partners", multiple=True, required=True,
              help="A partner id to issue a client certificate for. Repeat for each.")  # fmt: skip
@click.option("--host", "hosts", multiple=True, default=("localhost", "127.0.0.1"),
              show_default=True, help="A name or address of the server.")  # fmt: skip
def pki_init(out: Path, partners: tuple[str, ...], hosts: tuple[str, ...]) -> None:
    """Create a CA, a server certificate and one client certificate per partner."""
    try:
        made = create_demo_pki(out, partners=partners, server_hosts=hosts)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)
    console.print(f"CA: {made.ca.certificate}\nserver: {made.server.certificate}")
    for partner_id, files in made.partners.items():
        console.print(f"{partner_id}: {files.certificate} (SAN {partner_dns_name(partner_id)})")


@main.command()
@click.option("--rows", default=100_000, show_default=True, help="Customers per brand.")
@click.option("--work-dir", default=Path("demo-run"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Where the demo writes certificates, files and the server's data.")  # fmt: skip
def demo(rows: int, work_dir: Path) -> None:
    """Run the whole path once: three brands, a three-way report, the query log."""
    sys.exit(run_demo(work_dir=work_dir, rows=rows, console=console))
