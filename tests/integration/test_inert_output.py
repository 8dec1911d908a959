"""Untrusted text stays inert: ids with ANSI escapes, rich markup and newlines never reach an
auditor's terminal as such, and segment labels are shown escaped in `report get`.

The commands run as a user runs them, in a process of their own writing to a pseudo
terminal (rich then styles its output as for a person), and the exact bytes are read back:
the only escape sequences allowed are rich's own colours and styles.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from rich.console import Console

from cleanroom.v1 import audit_event_pb2, partner_service_pb2, partner_service_pb2_grpc
from partners import render
from partners.inert import inert
from tests.integration.test_partner_cli import env_for
from tests.support import (
    COLLABORATION,
    KCV,
    RunningServer,
    dataset_name,
    digest_array,
    random_digests,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
# Clears the screen, sets the window title, hides what follows, and draws a fake row.
HOSTILE = "\x1b[2J\x1b]0;owned\x07[conceal]x[/conceal]\n│ 99 │ forged"
SHOWN = r"\x1b[2J\x1b]0;owned\x07[conceal]x[/conceal]\n│ 99 │ forged"
STYLE = re.compile(rb"\x1b\[[0-9;]*m")  # SGR: colours and styles, nothing else


def on_terminal(server: RunningServer, partner: str, *args: str) -> bytes:
    """What `cleanroom-partner ARGS` writes to a pseudo terminal, byte for byte."""
    controller, terminal = pty.openpty()
    env = {
        **os.environ,
        **env_for(server, partner),
        "TERM": "xterm-256color",
        "COLUMNS": "250",
        "LINES": "50",
    }
    env.pop("NO_COLOR", None)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "partners", *args],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
            env=env,
        )
    finally:
        os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    assert process.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks)


def assert_inert(output: bytes) -> str:
    """Checks that every escape sequence is rich's styling; returns the text without them."""
    plain = STYLE.sub(b"", output)
    assert b"\x1b" not in plain, plain
    assert b"\x07" not in plain, plain
    for sequence in STYLE.findall(output):
        assert b"8" not in sequence.strip(b"\x1b[m").split(b";"), sequence  # conceal
    return plain.decode()


def test_inert_escapes_controls_and_markup_once() -> None:
    assert inert(HOSTILE, markup=False) == SHOWN
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(inert(HOSTILE))
    assert console.file.getvalue() == SHOWN + "\n"  # type: ignore[attr-defined]
    assert inert("gold tier") == "gold tier"
    assert inert("ไทย 中文 Việt") == "ไทย 中文 Việt"


def test_an_audit_table_of_hostile_events_renders_them_as_text() -> None:
    event = audit_event_pb2.AuditEvent(
        index=7,
        caller="partners/[bold]acme",
        caller_roles=["uploader"],
        method="/cleanroom.v1.PartnerService/UploadDataset",
        resources=[f"{PARENT}/datasets/{HOSTILE}"],
        outcome=audit_event_pb2.AuditOutcome(
            status_code="INVALID_ARGUMENT", reason="INVALID_ID\x1b[8m"
        ),
    )
    event.event_time.FromSeconds(0)
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(render.audit_table([event]))
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    # The resource is shown by its last part, all on one line: no fake row, no escape.
    assert lines == [
        "Query log",
        "┏━━━┳━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓",
        "┃ # ┃ time (UTC)     ┃ caller     ┃ roles    ┃ method        ┃ resources               ┃ outcome                            ┃",
        "┡━━━╇━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩",
        r"│ 7 │ 01-01 00:00:00 │ [bold]acme │ uploader │ UploadDataset │ conceal]\n│ 99 │ forged │ INVALID_ARGUMENT INVALID_ID\x1b[8m │",
        "└───┴────────────────┴────────────┴──────────┴───────────────┴─────────────────────────┴────────────────────────────────────┘",
    ]  # fmt: skip


def test_json_output_escapes_what_json_dumps_lets_through() -> None:
    # C1 CSI (read as ESC [ by some terminals), a bidi override, a private-use character.
    hostile = "\x9b2J\u202e\U000f0000" + HOSTILE
    event = audit_event_pb2.AuditEvent(index=1, caller=f"partners/{hostile}")
    for text in (render.json_line(event), render.as_json(event), render.as_json([event])):
        assert all(c.isprintable() or c == "\n" for c in text), text
        loaded = json.loads(text)
        first = loaded[0] if isinstance(loaded, list) else loaded
        assert first["caller"] == f"partners/{hostile}"  # the same text, escaped


def test_audit_list_shows_a_hostile_dataset_id_inert(server: RunningServer) -> None:
    stub = partner_service_pb2_grpc.PartnerServiceStub(server.connection("acme").channel())
    header = partner_service_pb2.DatasetUploadHeader(
        parent=PARENT,
        dataset_id=HOSTILE,
        identifier_types=["email"],
        key_check_value=KCV,
        row_count=1,
        checksum="0" * 64,
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.UploadDataset(iter([partner_service_pb2.UploadDatasetRequest(header=header)]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.interceptor.drain(10)
    (event,) = server.events("/cleanroom.v1.PartnerService/UploadDataset")
    logged = event.entry().decode()
    assert "\x1b" not in logged, logged  # nothing raw in the log, not even JSON-escaped
    assert "\\u001b" not in logged, logged
    assert event.resources == []
    assert set(event.request_summary) <= {"request_id"}  # nothing of the header
    assert event.outcome.reason == "INVALID_ID"
    assert r"'\x1b[2J\x1b]0;owned\x07" in event.outcome.message  # bounded and escaped

    output = on_terminal(server, "ledger", "audit", "list", f"--collaboration={COLLABORATION}")
    text = assert_inert(output)
    rows = [line.rstrip() for line in text.splitlines() if line.startswith("│")]
    when = event.event_time.strftime("%m-%d %H:%M:%S")
    assert rows == [  # the one event, nothing of the id, on one line
        f"│ 0 │ {when} │ acme   │ analyst,uploader │ UploadDataset │ -         │"
        " INVALID_ARGUMENT INVALID_ID │"
    ], text
    assert "forged" not in text


def test_report_get_shows_hostile_segment_labels_inert(
    server: RunningServer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    shared = random_digests(rng, 40)
    labels = [HOSTILE if i % 2 else "gold" for i in range(40)]
    acme = write_digest_file(
        tmp_path / "acme.parquet", {"email": digest_array(shared)}, {"tier": labels}
    )
    brightmart = write_digest_file(tmp_path / "brightmart.parquet", {"email": digest_array(shared)})
    server.client("acme").upload(acme, dataset_id="acme-labels")
    server.client("brightmart").upload(brightmart, dataset_id="brightmart-plain")
    report = server.client("acme").create_report(
        PARENT,
        base=dataset_name("acme-labels"),
        others=[dataset_name("brightmart-plain")],
        segment_column="tier",
    )
    assert HOSTILE in {cell.segment for cell in report.membership_cells}

    output = on_terminal(server, "acme", "report", "get", report.name)
    text = assert_inert(output)
    lines = text.splitlines()
    # The label's note under the table (how its shares are counted) shows it inert too.
    assert [line for line in lines if line.startswith(f"{SHOWN}: shares are of")], text
    shown = [line for line in lines if SHOWN in line and "shares are of" not in line]
    assert len(shown) == 2, text  # the label's two cells (matched or not), each on one line
    assert all(line.startswith("│ ") and line.endswith(" │") for line in shown), shown
    assert "forged" not in text.replace(SHOWN, "")
