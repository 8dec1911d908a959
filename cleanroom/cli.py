"""`cleanroom`: the command line of the clean room's operators."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler

from cleanroom.audit.check import check_logs
from cleanroom.config import Config, load_config
from cleanroom.demo.run import run_demo
from cleanroom.errors import CleanRoomError
from cleanroom.names import SERVER_LOG
from cleanroom.proofs.signed_note import NoteError, NoteSigner, NoteVerifier
from cleanroom.service.server import serve as run_server
from cleanroom.tls.files import read_tls
from cleanroom.tls.pki import create_demo_pki, partner_dns_name, write_private_file
from cleanroom.usecases.clean_room import load_signer

console = Console()
errors = Console(stderr=True)


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)


# Every command that reads the server's configuration takes it from --config or from
# CLEANROOM_CONFIG, and says so in its help.
config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    envvar="CLEANROOM_CONFIG",
    show_envvar=True,
    help="The server's TOML configuration, e.g. cleanroom.toml.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cleanroom")
def main() -> None:
    r"""Run and operate the clean room server.

    Commands that read the configuration take --config or CLEANROOM_CONFIG, for example:

    \b
        export CLEANROOM_CONFIG=cleanroom.toml
        cleanroom check-config
        cleanroom serve
    """


@main.command()
@config_option
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
@config_option
def check_config(config_path: Path) -> None:
    """Check a configuration file and summarize it, without starting anything."""
    config = _config(config_path)
    try:
        read_tls(config.server.tls)
        load_signer(config.server.audit_signing_key)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)
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


@main.group()
def audit() -> None:
    """The key that signs the query logs, and the offline check of the stored logs."""


@audit.command(name="keygen")
@click.option("--name", required=True, help="The key's name, e.g. cleanroom.example.com/log.")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the signing key (created with mode 0600).")  # fmt: skip
def audit_keygen(name: str, out: Path) -> None:
    """Create the Ed25519 key that signs checkpoints; print the verifier key to publish."""
    try:
        signer = NoteSigner.generate(name)
    except NoteError as error:
        errors.print(f"[bold red]error:[/] --name: {error}")
        sys.exit(2)
    write_private_file(out, signer.key_text() + "\n")
    console.print(f"signing key written to {out}; set server.audit.signing_key to it")
    console.print("verifier key for auditors to pin (the next line, whole):")
    click.echo(signer.verifier_key)  # never wrapped: auditors copy it as it is


@audit.command(name="verifier-key")
@config_option
def audit_verifier_key(config_path: Path) -> None:
    """Print the verifier key that auditors pin, from the configured signing key."""
    click.echo(_signer(_config(config_path)).verifier_key)


@audit.command(name="check")
@config_option
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Check this data directory instead of the configured one.")  # fmt: skip
def audit_check(config_path: Path, data_dir: Path | None) -> None:
    """Verify every stored query log offline (the server may be stopped or crashed)."""
    config = _config(config_path)
    verifier = NoteVerifier(_signer(config).verifier_key)
    results = check_logs(data_dir or config.server.data_dir, verifier)
    for result in results:
        name = "server log" if result.log == SERVER_LOG else f"collaborations/{result.log}"
        if result.ok:
            console.print(
                f"[green]ok[/] {name}: {result.events:,} events,"
                f" {result.checkpoints:,} signed checkpoints verified"
            )
        else:
            console.print(
                f"[bold red]FAILED[/] {name}: first bad index {result.first_bad_index}:"
                f" {result.problem}"
            )
    if not all(r.ok for r in results):
        sys.exit(1)


def _signer(config: Config) -> NoteSigner:
    try:
        return load_signer(config.server.audit_signing_key)
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)


@main.command()
@click.option("--rows", default=100_000, show_default=True, help="Customers per brand.")
@click.option("--work-dir", default=Path("demo-run"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Where the demo writes certificates, files and the server's data.")  # fmt: skip
def demo(rows: int, work_dir: Path) -> None:
    """Run the whole path once: three brands, a three-way report, the query log."""
    sys.exit(run_demo(work_dir=work_dir, rows=rows, console=console))
