"""`make demo`'s job, small: the whole path from certificates to the query log exits 0."""

from __future__ import annotations

import dataclasses
import io
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cleanroom.demo.run import REFUSED, DemoWorld, run_demo_world, wait_until_serving


@pytest.fixture(scope="module")
def narrow_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, DemoWorld]:
    """The demo's output on an 80-column console, and what it made."""
    out = io.StringIO()
    status, world = run_demo_world(
        work_dir=tmp_path_factory.mktemp("narrow") / "demo",
        rows=2_000,
        console=Console(file=out, width=80),
    )
    assert status == 0
    return out.getvalue(), world


def test_demo_runs_end_to_end(narrow_demo: tuple[str, DemoWorld]) -> None:
    text, world = narrow_demo  # the fixture checked that it exited 0
    assert "three-way overlap report" in text
    assert "server exited with status 0" in text
    # The marketer's HTML report of the three-way question, where the demo says it is.
    page = world.root / "acme-report.html"
    assert str(page) in text.replace("\n", "")
    html = page.read_text(encoding="utf-8")
    assert 'data-chart="venn"' in html
    assert 'data-chart="upset"' in html
    # The server's data directory holds the three committed datasets and nothing half-written.
    data = world.root / "data"
    assert len(list((data / "datasets").iterdir())) == 3
    assert list((data / "tmp").iterdir()) == []


def test_no_printed_command_is_wrapped(narrow_demo: tuple[str, DemoWorld]) -> None:
    text, world = narrow_demo
    printed = text.splitlines()
    assert len(world.transcript.lines) > 20
    for line in world.transcript.lines:
        assert f"$ {line}" in printed, line
    assert any(len(line) > 80 for line in world.transcript.lines)  # long ones stayed whole


def test_printed_commands_work_when_pasted_into_a_new_shell(
    narrow_demo: tuple[str, DemoWorld], tmp_path: Path
) -> None:
    """Replays every line from `cleanroom serve` on, in a shell that has only PATH and HOME.

    The inputs the demo made before (certificates, configuration, secret, customer files,
    the auditor's pinned key) are copied to a fresh folder; nothing else is.
    """
    _, world = narrow_demo
    folder = tmp_path / "replay"
    shutil.copytree(
        world.root,
        folder,
        ignore=shutil.ignore_patterns("data", "state", "*-digests.parquet", "*.csv.tmp", "*.log"),
    )
    lines = world.transcript.lines
    serve = lines.index("cleanroom serve --config cleanroom.toml")
    *session, check = lines[serve + 1 :]
    assert check == "cleanroom audit check --config cleanroom.toml"
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    script = ["set -e"]
    for line in session:
        if REFUSED in line:
            script.append(f"if {line.split(REFUSED)[0]}; then exit 99; fi")
        else:
            script.append(line)
    with (folder / "server.log").open("wb") as log:
        server = subprocess.Popen(
            shlex.split(lines[serve]), cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until_serving(dataclasses.replace(world, root=folder))
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "VERIFIED" in done.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    checked = subprocess.run(
        shlex.split(check), cwd=folder, env=env, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _quick_start() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_quick_start_runs_as_written(
    narrow_demo: tuple[str, DemoWorld], tmp_path: Path
) -> None:
    """The README's quick start, line by line in one shell, on a fresh copy of the demo.

    Two lines are read for what they do rather than run: activating the virtual
    environment (the test's PATH holds it) and `cd demo-run` (the shell starts in the
    copy); `kill %1` stops the server the quick start put in the background, which the
    test does by its process id. After the line that starts the server, the test waits
    until it serves, as a user would before typing the next line.
    """
    _, world = narrow_demo
    folder = tmp_path / "demo-run"
    shutil.copytree(world.root, folder)
    lines = _quick_start()
    assert lines[:2] == [". .venv/bin/activate", "cd demo-run"]
    rest = [line.replace("127.0.0.1:50051", f"127.0.0.1:{world.port}") for line in lines[2:]]
    serve = next(i for i, line in enumerate(rest) if line.startswith("cleanroom serve"))
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    before = "set -e\n" + "\n".join(rest[: serve + 1]) + "\necho $! > server.pid\n"
    started = subprocess.run(["bash", "-c", before], cwd=folder, env=env, check=True, timeout=60)
    assert started.returncode == 0
    pid = int((folder / "server.pid").read_text())
    try:
        wait_until_serving(dataclasses.replace(world, root=folder))
        after = "set -e\n" + "\n".join(line for line in rest[serve + 1 :] if line != "kill %1")
        done = subprocess.run(
            ["bash", "-c", after], cwd=folder, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "acme-customers" in done.stdout
        assert "epsilon" in done.stdout
    finally:
        os.kill(pid, signal.SIGTERM)
    assert rest[-1] == "kill %1"
