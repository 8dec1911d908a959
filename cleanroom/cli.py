"""`cleanroom`: the command line of the clean room's operators.

Every command that reads the server's configuration takes `--config` or, failing that,
the environment variable `CLEANROOM_CONFIG`. gRPC is imported only by the commands that
use it, so that `serve` can set GRPC_VERBOSITY before gRPC reads it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from cleanroom.audit.check import check_logs
from cleanroom.config import BUILTIN_IDENTIFIER_TYPES, Config, load_config
from cleanroom.errors import CleanRoomError, ConfigError, ConfigProblemsError
from cleanroom.matching.spark import check_java, check_master
from cleanroom.names import SERVER_LOG
from cleanroom.ops.backup import backup_data_dir, restore_data_dir
from cleanroom.ops.checks import check_files
from cleanroom.ops.logs import LEVELS, capture_native_stderr, configure_logging, grpc_verbosity
from cleanroom.proofs.signed_note import KeyRing, NoteError, NoteSigner
from cleanroom.tls.pki import create_demo_pki, partner_dns_name, write_private_file
from cleanroom.usecases.clean_room import load_signer

console = Console()
errors = Console(stderr=True)


def _problems(error: CleanRoomError) -> list[str]:
    if isinstance(error, ConfigProblemsError):
        return [p.message for p in error.problems]
    return [error.message]


def _fail(problems: list[str], code: int = 2) -> None:
    for problem in problems:
        errors.print(f"[bold red]error:[/] {escape(problem)}", soft_wrap=True)
    if len(problems) > 1:
        errors.print(f"{len(problems)} problems", soft_wrap=True)
    sys.exit(code)


def _engine_problems(config: Config) -> list[str]:
    """What start would refuse of a Spark engine, found without starting a JVM."""
    if config.server.engine.kind != "spark":
        return []
    problems = []
    for check in (check_java, lambda: check_master(config.server.engine.master)):
        try:
            check()
        except ConfigError as error:
            problems.append(error.message)
    return problems


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except CleanRoomError as error:
        _fail(_problems(error))
        raise  # not reached: _fail exits


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
@click.option("--log-level", default="INFO", type=click.Choice(LEVELS), show_default=True,
              help="DEBUG adds probes and gRPC's own details; INFO logs every call.")  # fmt: skip
@click.option("--log-format", default="json", type=click.Choice(["json", "text"]),
              show_default=True, help="One JSON object a line, or key=value text.")  # fmt: skip
def serve(config_path: Path, log_level: str, log_format: str) -> None:
    """Serve the clean room until SIGTERM or Ctrl-C; SIGHUP reloads the configuration."""
    grpc_verbosity(log_level)
    configure_logging(
        log_level, "json" if log_format == "json" else "text", capture_native_stderr()
    )
    try:
        config = load_config(config_path)
        from cleanroom.service.server import serve as run_server  # noqa: PLC0415 - see above

        run_server(config, config_path=config_path)
    except CleanRoomError as error:
        for problem in error.problems if isinstance(error, ConfigProblemsError) else [error]:
            key = problem.key if isinstance(problem, ConfigError) else ""
            logging.getLogger("cleanroom").error(
                "cannot serve", extra={"key": key, "problem": problem.message}
            )
        sys.exit(2 if isinstance(error, ConfigError) else 1)


@main.command(name="check-config")
@config_option
def check_config(config_path: Path) -> None:
    """Check a configuration and the files it names, all at once, without starting."""
    config = _config(config_path)
    files = check_files(config)
    problems = [p.message for p in files.problems] + _engine_problems(config)
    if problems:
        _fail(problems)
    for warning in files.warnings:
        errors.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    server = config.server
    console.print(
        f"listen {server.listen}; ops (probes, metrics) {server.ops_listen};"
        f" data in {server.data_dir}", soft_wrap=True
    )  # fmt: skip
    if config.server.engine.kind == "spark":
        engine = config.server.engine
        console.print(f"matching on Spark {engine.master}; range copies at {engine.location}")
    for partner in config.partners.values():
        role = " (administrator)" if partner.administrator else ""
        console.print(f"partner {partner.id}{role}: {', '.join(partner.certificate_names)}")
    for c in config.collaborations.values():
        kcv = c.key_check_value + (
            f" (and the previous {c.previous_key_check_value} during a rotation)"
            if c.previous_key_check_value
            else ""
        )
        builtin = [t for t in c.identifier_types if t in BUILTIN_IDENTIFIER_TYPES]
        console.print(
            f"collaboration {c.id}: matching {c.matching.value.replace('_', '-')}; KCV {kcv};"
            f" built-in types {', '.join(builtin) or 'none'};"
            f" declared types {', '.join(c.declared_identifier_types) or 'none'};"
            f" threshold {c.policy.minimum_threshold},"
            f" minimum dataset size {c.policy.minimum_dataset_size}",
            soft_wrap=True,
        )
        for partner_id, roles in sorted(c.members.items()):
            console.print(f"  {partner_id}: {', '.join(sorted(roles))}")
        if c.witnesses:
            names = ", ".join(w.partner for w in c.witnesses)
            console.print(f"  witnesses {names}; quorum {c.witness_quorum}")
    console.print("[green]configuration is valid[/]")


@main.group()
def pki() -> None:
    """Certificates for trying the clean room out (use your own CA in production)."""


@pki.command(name="init")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Where the certificates and keys to hand out go.")  # fmt: skip
@click.option("--ca-key-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the CA's private key goes (mode 0700), apart from what is handed"
              " out; default: OUT/ca-private.")  # fmt: skip
@click.option("--partner", "partners", multiple=True, required=True,
              help="A partner id to issue a client certificate for. Repeat for each.")  # fmt: skip
@click.option("--host", "hosts", multiple=True, default=("localhost", "127.0.0.1"),
              show_default=True, help="A name or address of the server.")  # fmt: skip
def pki_init(
    out: Path, ca_key_dir: Path | None, partners: tuple[str, ...], hosts: tuple[str, ...]
) -> None:
    """Create a CA, a server certificate and one client certificate per partner."""
    try:
        made = create_demo_pki(
            out,
            partners=partners,
            server_hosts=hosts,
            ca_key_directory=ca_key_dir or out / "ca-private",
        )
    except CleanRoomError as error:
        errors.print(f"[bold red]error:[/] {error.message}")
        sys.exit(2)
    console.print(f"CA: {made.ca.certificate} (its key apart: {made.ca.private_key})")
    console.print(f"server: {made.server.certificate}")
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
    results = check_logs(data_dir or config.server.data_dir, _key_ring(config))
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


@audit.command(name="rotate-key")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="The server's configuration (for its current key and data).")  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the new signing key (created with mode 0600).")  # fmt: skip
def audit_rotate_key(config_path: Path, out: Path) -> None:
    """Make the next signing key, under the current key's name; print what to change.

    The logs are checked first: a key is never rotated over a log that does not verify.
    At its next start the server signs each log's latest checkpoint with the new key
    beside the old one (the handover), then signs with the new key only.
    """
    config = _config(config_path)
    signer = _signer(config)
    if out.exists():
        errors.print(f"[bold red]error:[/] --out: {out} exists; choose a new file")
        sys.exit(2)
    database = config.server.data_dir / "cleanroom.sqlite3"
    if database.exists():
        bad = [r for r in check_logs(config.server.data_dir, _key_ring(config)) if not r.ok]
        for result in bad:
            errors.print(
                f"[bold red]FAILED[/] {result.log}: first bad index {result.first_bad_index}:"
                f" {result.problem}"
            )
        if bad:
            errors.print("[bold red]error:[/] not rotating over logs that do not verify")
            sys.exit(1)
    new = NoteSigner.generate(signer.name)
    write_private_file(out, new.key_text() + "\n")
    previous = [*config.server.audit_previous_verifier_keys, signer.verifier_key]
    console.print(f"new signing key written to {out} (key id {new.key_id})")
    console.print("With the server stopped, set in the configuration's [server.audit]:")
    console.print(f'  signing_key = "{out}"', markup=False, highlight=False)
    console.print(
        "  previous_verifier_keys = [" + ", ".join(f'"{k}"' for k in previous) + "]",
        markup=False,
        highlight=False,
    )
    console.print("then start the server, and give auditors and witnesses the new verifier key:")
    console.print(f"[bold]{new.verifier_key}[/]")


def _key_ring(config: Config) -> KeyRing:
    """The log keys: the retired ones of the configuration, then the current one."""
    try:
        return KeyRing.of(*config.server.audit_previous_verifier_keys, _signer(config).verifier_key)
    except NoteError as error:
        errors.print(f"[bold red]error:[/] server.audit.previous_verifier_keys: {error}")
        sys.exit(2)


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
    from cleanroom.demo.run import run_demo  # noqa: PLC0415 - it loads gRPC

    sys.exit(run_demo(work_dir=work_dir, rows=rows, console=console))


@main.command()
@config_option
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="A new directory for the copy (mode 0700).")  # fmt: skip
def backup(config_path: Path, out: Path) -> None:
    """Copy the data directory consistently, while the server runs (uploads included)."""
    config = _config(config_path)
    try:
        made = backup_data_dir(config.server.data_dir, out)
    except CleanRoomError as error:
        _fail([error.message])
    console.print(
        f"backed up {made.datasets} dataset files and the database"
        f" ({made.bytes:,} bytes) to {made.directory}", soft_wrap=True
    )  # fmt: skip
    console.print(
        "check it with: cleanroom audit check --data-dir "
        f"{made.directory}; the signing key and TLS files are not in it: keep them apart",
        soft_wrap=True,
    )


@main.command()
@config_option
@click.option("--from", "source", required=True,
              type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="A directory written by `cleanroom backup`.")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Restore here instead of the configured data directory.")  # fmt: skip
def restore(config_path: Path, source: Path, data_dir: Path | None) -> None:
    """Restore a backup into an empty data directory (the server stopped)."""
    config = _config(config_path)
    target = data_dir or config.server.data_dir
    try:
        made = restore_data_dir(source, target)
    except CleanRoomError as error:
        _fail([error.message])
    console.print(
        f"restored {made.datasets} dataset files and the database to {made.directory};"
        " check it with `cleanroom audit check` before serving it", soft_wrap=True
    )  # fmt: skip
