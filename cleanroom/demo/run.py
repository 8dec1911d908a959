"""The end-to-end demo: three brands, an auditor and an operator, on one machine.

It does what real users do, with the real commands, each printed before it runs: the
operator makes certificates and a configuration and starts the server (mutual TLS, even
here); each brand prepares its customer file with the shared secret and uploads the
digests; a marketer asks for a three-way report split by segment; the auditor reads the
query log; the operator stops the server.

Every command is printed whole on one line (never wrapped), relative to the demo's folder,
so that it can be pasted into a shell there: the connection settings are printed once as
`export CLEANROOM_...` lines and the commands after them rely on them, as a user's would.
`Transcript` records what was printed, so that a test can run it again as a new shell.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.rule import Rule

from cleanroom.demo.customers import CustomerFiles, write_customer_files
from cleanroom.demo.deployment import config_toml, free_loopback_port
from cleanroom.proofs.cosignature import WitnessSigner
from cleanroom.proofs.signed_note import NoteSigner
from cleanroom.tls.pki import DemoPki, create_demo_pki, write_private_file
from partners.preparation.digest import key_check_value, new_secret, write_secret

COLLABORATION = "spring-launch"
LOG_KEY_NAME = "cleanroom.demo"
WITNESS_NAME = "witness.ledger.demo"
BRANDS = ("acme", "brightmart", "corvid")
AUDITOR, OPERATOR = "ledger", "operator"
MARKER = ".cleanroom-demo"
START_TIMEOUT = 30.0
DEFAULT_PORT = 50051  # the README's quick start assumes it; another is taken when it is busy
REFUSED = "  # refused: "  # how a command that is meant to fail says so on its line


@dataclass
class Transcript:
    """The shell lines the demo printed, in order, and who was connected for the next ones."""

    lines: list[str] = field(default_factory=list)
    connected_as: str | None = None

    def show(self, console: Console, line: str) -> None:
        """Prints `$ line` on one line, as it is (no markup, no wrapping), and records it."""
        self.lines.append(line)
        console.print(f"$ {line}", markup=False, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class DemoWorld:
    """The files of one demo run."""

    root: Path
    pki: DemoPki
    config: Path
    secret: Path
    customers: CustomerFiles
    port: int
    transcript: Transcript


def run_demo(*, work_dir: Path, rows: int, console: Console) -> int:
    """Runs the demo in `work_dir` (emptied first) and returns the exit status."""
    return run_demo_world(work_dir=work_dir, rows=rows, console=console)[0]


def run_demo_world(*, work_dir: Path, rows: int, console: Console) -> tuple[int, DemoWorld]:
    """Runs the demo in `work_dir` (emptied first): the exit status and the world it made."""
    started = time.monotonic()
    cpu_before = _cpu_seconds()
    world = _set_up(work_dir, rows, console)
    server = _start_server(world, console)
    try:
        _brands_upload(world, console)
        _marketer_reports(world, console)
        _auditor_reads_log(world, console)
    finally:
        _stop_server(server, console)
    _step(console, "Operator: check the stored logs offline")
    world.transcript.show(console, f"cleanroom audit check --config {world.config.name}")
    subprocess.run(
        [sys.executable, "-m", "cleanroom", "audit", "check", "--config", str(world.config)],
        check=True,
        cwd=world.root,
    )
    console.print(Rule())
    console.print(
        f"[bold green]demo finished in {time.monotonic() - started:.1f} s[/]"
        f" ({_cpu_seconds() - cpu_before:.1f} s of CPU, the server's and commands' included)"
    )
    console.print(
        f"Its files stay in {world.root}. To try the commands yourself, put the project's"
        " .venv/bin on your PATH (`. .venv/bin/activate`), start the server again with"
        " the line below, then paste the `export` and `cleanroom-partner` lines above into"
        " another shell in that folder:"
    )
    console.print(
        f"cd {world.root} && cleanroom serve --config {world.config.name}",
        markup=False, highlight=False, soft_wrap=True,
    )  # fmt: skip
    return 0, world


def _cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _step(console: Console, title: str) -> None:
    console.print()
    console.print(Rule(f"[bold]{title}"))


def _fresh_directory(path: Path) -> Path:
    if path.exists():
        if not (path / MARKER).exists():
            raise SystemExit(
                f"{path} exists and is not a demo directory; choose another --work-dir"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by `cleanroom demo`; removed by the next run\n")
    return path.resolve()


def _set_up(work_dir: Path, rows: int, console: Console) -> DemoWorld:
    root = _fresh_directory(work_dir)
    _step(console, "Operator: certificates and configuration")
    pki = create_demo_pki(root / "certs", partners=[*BRANDS, AUDITOR, OPERATOR])
    console.print(f"CA, server and {len(pki.partners)} client certificates in {root / 'certs'}")

    _step(console, "Brands: a shared collaboration secret (never sent to the clean room)")
    secret = root / "brands" / "collaboration.secret"
    secret.parent.mkdir()
    value = new_secret()
    write_secret(secret, value)
    kcv = key_check_value(value, COLLABORATION)
    transcript = Transcript()
    transcript.show(
        console,
        f"cleanroom-partner keygen --collaboration {COLLABORATION}"
        f" --out {secret.relative_to(root)}",
    )
    console.print(f"key check value given to the operator: [bold]{kcv}[/]")

    _step(console, "Operator: the key that signs the query log's checkpoints")
    signing_key = root / "certs" / "log-signing.key"
    transcript.show(
        console,
        f"cleanroom audit keygen --name {LOG_KEY_NAME} --out {signing_key.relative_to(root)}",
    )
    signer = NoteSigner.generate(LOG_KEY_NAME)
    write_private_file(signing_key, signer.key_text() + "\n")
    log_key = root / "auditor" / "log-verifier.key"
    log_key.parent.mkdir()
    log_key.write_text(signer.verifier_key + "\n")
    console.print(f"verifier key, pinned by the auditor in {log_key}: {signer.verifier_key}")

    _step(console, "ledger (auditor): its own key, to witness the log's checkpoints")
    witness_key = root / "auditor" / "witness.key"
    transcript.show(
        console,
        f"cleanroom-partner audit witness-keygen --name {WITNESS_NAME}"
        f" --out {witness_key.relative_to(root)}",
    )
    witness = WitnessSigner.generate(WITNESS_NAME)
    write_private_file(witness_key, witness.key_text() + "\n")
    (root / "auditor" / "witness.pub").write_text(witness.verifier_key + "\n")
    console.print(f"public key, listed by the operator as a witness: {witness.verifier_key}")

    port = _demo_port()
    config = root / "cleanroom.toml"
    config.write_text(
        config_toml(
            root=root,
            pki=pki,
            port=port,
            collaboration=COLLABORATION,
            key_check_value=kcv,
            members={**{b: ("uploader", "analyst") for b in BRANDS}, AUDITOR: ("auditor",)},
            administrators=[OPERATOR],
            identifier_types=["email", "phone", "maid"],
            policy={
                "minimum_threshold": 50,
                "minimum_dataset_size": 1000,
                "noise": True,
                "epsilon_budget": 10.0,
                "epsilon_per_report": 1.0,
                "match_rate_cap": 0.85,
            },
            comment="The demo's clean room: three brands, an auditor and an operator.",
            witnesses={AUDITOR: witness.verifier_key},
        )
    )
    console.print(f"configuration written to {config}")

    _step(console, f"Brands: synthetic customer files ({rows:,} customers each)")
    customers = write_customer_files(root / "brands", rows=rows)
    for brand, path in customers.paths.items():
        console.print(f"{brand}: {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
    return DemoWorld(root, pki, config, secret, customers, port, transcript)


def _demo_port() -> int:
    """The README's port when it is free, else any free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return free_loopback_port()
    return DEFAULT_PORT


def connection_settings(world: DemoWorld, partner: str | None) -> dict[str, str]:
    """The environment a shell in the demo's folder needs to reach the server.

    With `partner`, its certificate and key too; paths are relative to the demo's folder.
    """
    settings = {
        "CLEANROOM_SERVER": f"127.0.0.1:{world.port}",
        "CLEANROOM_CA": str(world.pki.ca.certificate.relative_to(world.root)),
        "CLEANROOM_SERVER_NAME": "localhost",
    }
    if partner is not None:
        files = world.pki.partners[partner]
        settings["CLEANROOM_CERT"] = str(files.certificate.relative_to(world.root))
        settings["CLEANROOM_KEY"] = str(files.private_key.relative_to(world.root))
    return settings


def _exports(settings: dict[str, str]) -> str:
    return "export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items())


def _partner(
    world: DemoWorld, console: Console, who: str, *args: str, refused: str | None = None
) -> None:
    """Runs `cleanroom-partner ARGS` as `who`, as printed: the same words, the same settings.

    When `who` is not the partner the shell was set up for, the `export` lines that make
    it so are printed first. A command meant to be refused says why on its line and must
    fail.
    """
    transcript = world.transcript
    if transcript.connected_as is None:
        transcript.show(console, _exports(connection_settings(world, None)))
    if transcript.connected_as != who:
        settings = connection_settings(world, who)
        transcript.show(
            console, _exports({k: settings[k] for k in ("CLEANROOM_CERT", "CLEANROOM_KEY")})
        )
        transcript.connected_as = who
    transcript.show(
        console,
        f"cleanroom-partner {shlex.join(args)}" + (f"{REFUSED}{refused}" if refused else ""),
    )
    env = {
        **os.environ,
        **connection_settings(world, who),
        "COLUMNS": os.environ.get("COLUMNS", "120"),
    }
    command = [sys.executable, "-m", "partners", *args]
    done = subprocess.run(command, check=False, env=env, cwd=world.root)
    if refused is None and done.returncode:
        raise subprocess.CalledProcessError(done.returncode, ["cleanroom-partner", *args])
    if refused is not None and not done.returncode:
        raise RuntimeError(f"`cleanroom-partner {shlex.join(args)}` was not refused")


def _start_server(world: DemoWorld, console: Console) -> subprocess.Popen[bytes]:
    _step(console, "Operator: start the server (mutual TLS on loopback)")
    world.transcript.show(console, f"cleanroom serve --config {world.config.name}")
    with (world.root / "server.log").open("wb") as log:  # the server keeps its own copy
        server = subprocess.Popen(
            [sys.executable, "-m", "cleanroom", "serve", "--config", str(world.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=world.root,
        )
    try:
        wait_until_serving(world)
    except Exception:
        server.kill()
        console.print((world.root / "server.log").read_text())
        raise
    console.print(f"serving on 127.0.0.1:{world.port} (log: {world.root / 'server.log'})")
    return server


def wait_until_serving(world: DemoWorld) -> None:
    """Returns once the server of `world` answers its health check (raises after a while)."""
    files = world.pki.partners[OPERATOR]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=world.pki.ca.certificate.read_bytes(),
        private_key=files.private_key.read_bytes(),
        certificate_chain=files.certificate.read_bytes(),
    )
    target = f"127.0.0.1:{world.port}"
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT
        )
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"server is not serving: {response.status}")


def _brands_upload(world: DemoWorld, console: Console) -> None:
    customers = world.customers
    for brand in BRANDS:
        _step(console, f"{brand}: prepare on the brand's machine, then upload digests only")
        digests = world.root / "brands" / f"{brand}-digests.parquet"
        columns = [f"--column={c}={t}" for c, t in customers.identifier_columns[brand].items()]
        _partner(
            world, console, brand, "prepare",
            str(customers.paths[brand].relative_to(world.root)),
            str(digests.relative_to(world.root)),
            f"--collaboration={COLLABORATION}",
            f"--secret-file={world.secret.relative_to(world.root)}",
            *columns,
            f"--segment={customers.segment_columns[brand]}",
            f"--default-region={customers.default_region}",
        )  # fmt: skip
        _partner(
            world, console, brand, "upload", str(digests.relative_to(world.root)),
            f"--dataset-id={brand}-customers",
        )  # fmt: skip


def _marketer_reports(world: DemoWorld, console: Console) -> None:
    _step(console, "acme's marketer: a three-way overlap report by loyalty tier")
    segment = world.customers.segment_columns["acme"]
    _partner(
        world, console, "acme", "report", "create", f"--collaboration={COLLABORATION}",
        "--base=acme-customers", "--other=brightmart-customers", "--other=corvid-customers",
        f"--segment={segment}",
    )  # fmt: skip
    planted = ", ".join(
        f"{pair.replace('&', ' & ')}: {count:,}"
        for pair, count in world.customers.planted_overlaps.items()
    )
    console.print(
        f"[dim]Planted in the synthetic data (persons): {planted}. The report's counts"
        " carry differential privacy noise, so they differ from these by a little.[/]"
    )
    _step(console, "acme's marketer: the same question again costs nothing")
    _partner(
        world, console, "acme", "report", "create", f"--collaboration={COLLABORATION}",
        "--base=acme-customers", "--other=brightmart-customers", "--other=corvid-customers",
        f"--segment={segment}", "--csv",
    )  # fmt: skip
    _partner(world, console, "acme", "budget", f"--collaboration={COLLABORATION}")
    _step(console, "acme's marketer: the report as a page with charts")
    _partner(
        world, console, "acme", "datasets", "list", "--shared", f"--collaboration={COLLABORATION}"
    )
    _partner(world, console, "acme", "report", "list", f"--collaboration={COLLABORATION}")
    page = world.root / "acme-report.html"
    # The stored report again (free), written as a page: `report html ID` does the same
    # for a report id, which differs from run to run.
    _partner(
        world, console, "acme", "report", "create", f"--collaboration={COLLABORATION}",
        "--base=acme-customers", "--other=brightmart-customers", "--other=corvid-customers",
        f"--segment={segment}", "--format=html", f"--out={page.name}",
    )  # fmt: skip
    console.print(
        f"The three-way report as one self-contained HTML page: [bold]{page}[/]"
        " (open it in a browser; it needs no network)."
    )


def _auditor_reads_log(world: DemoWorld, console: Console) -> None:
    _step(console, "ledger (auditor): the collaboration's query log")
    _partner(world, console, AUDITOR, "audit", "list", f"--collaboration={COLLABORATION}")
    _step(console, "ledger (auditor): prove the log complete, with the pinned key only")
    verify = (
        "audit", "verify", f"--collaboration={COLLABORATION}",
        "--log-key=auditor/log-verifier.key", "--state-dir=auditor/state",
    )  # fmt: skip
    _partner(world, console, AUDITOR, *verify)
    _partner(world, console, AUDITOR, "audit", "export", f"--collaboration={COLLABORATION}",
             "--format=csv", "--out=auditor/query-log.csv")  # fmt: skip
    _step(console, "ledger (auditor): may read the log, but not ask for counts")
    _partner(
        world, console, AUDITOR, "report", "list", f"--collaboration={COLLABORATION}",
        refused="auditors may not read reports",
    )  # fmt: skip
    _step(console, "ledger (auditor): as a witness, cosign the checkpoint if it extends the last")
    _partner(
        world, console, AUDITOR, "audit", "witness", f"--collaboration={COLLABORATION}",
        "--witness-key=auditor/witness.key", "--log-key=auditor/log-verifier.key",
        "--state-dir=auditor/state/witness",
    )  # fmt: skip
    _step(console, "ledger (auditor): later, the log only grew, as witnessed; the budget holds")
    _partner(
        world, console, AUDITOR, *verify, "--witness-key=auditor/witness.pub", "--quorum=1",
        "--privacy",
    )  # fmt: skip


def _stop_server(server: subprocess.Popen[bytes], console: Console) -> None:
    _step(console, "Operator: stop the server (SIGTERM, graceful)")
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        raise RuntimeError("the server did not stop within 30 s of SIGTERM") from None
    console.print(f"server exited with status {code}")
    if code != 0:
        raise RuntimeError(f"the server exited with status {code}")
