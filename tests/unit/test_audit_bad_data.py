"""The log's checks never crash on what an operator can write: every entry is a verdict.

Whatever bytes stand where an event was (and whatever the listing shows beside them), the
server's replay, the operator's offline check and the auditor's field check name a
problem or pass; none raises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cleanroom.audit.integrity import replay
from cleanroom.audit.log import AuditEvent, AuditLog
from cleanroom.proofs import merkle
from cleanroom.proofs.signed_note import KeyRing, NoteSigner
from cleanroom.storage.database import Database
from cleanroom.v1 import audit_event_pb2
from partners.audit.verify import shown_problem

SIGNER = NoteSigner.generate("cleanroom.test")
RING = KeyRing.of(SIGNER.verifier_key)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
ENTRIES = st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode())
FIELDS = ("index", "event_time", "caller", "method", "caller_roles", "resources", "outcome")


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(tmp_path_factory.mktemp("log") / "cleanroom.sqlite3")
    log = AuditLog(db, SIGNER)
    for _ in range(5):
        log.append(AuditEvent(method="/m/Get", caller="partners/acme", log="x"))
    yield db
    db.close()


def entry_with(index: int, changes: dict[str, object]) -> bytes:
    data = json.loads(AuditEvent(method="/m/Get", caller="partners/acme", index=index).entry())
    data.update(changes)
    return json.dumps(data).encode()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    entry=ENTRIES
    | st.builds(entry_with, st.just(2), st.dictionaries(st.sampled_from(FIELDS), JSON))
)
def test_replay_names_any_rewritten_entry(database: Database, entry: bytes) -> None:
    with database.transaction() as db:
        (original,) = db.execute(
            "SELECT entry FROM audit_events WHERE log = 'x' AND log_index = 2"
        ).fetchone()
        db.execute(
            "UPDATE audit_events SET entry = ?, leaf_hash = ? WHERE log = 'x' AND log_index = 2",
            (entry, merkle.leaf_hash(entry)),
        )
        result = replay(db, "x", RING, "cleanroom.test/collaborations/x", every_checkpoint=True)
        db.execute(
            "UPDATE audit_events SET entry = ?, leaf_hash = ? WHERE log = 'x' AND log_index = 2",
            (original, merkle.leaf_hash(original)),
        )
    assert (result.finding is None) == (entry == original)
    if result.finding is not None:
        assert result.finding.index == 2, result.finding


@settings(max_examples=100, deadline=None)
@given(entry=ENTRIES, index=st.integers(0, 3), method=st.text(max_size=5))
def test_the_field_check_never_raises(entry: bytes, index: int, method: str) -> None:
    event = audit_event_pb2.AuditEvent(index=index, entry=entry, method=method)
    problem = shown_problem(event)
    assert problem is None or problem.startswith(f"event {index}")


def test_unchanged_log_replays_clean(database: Database) -> None:
    with database.reading() as db:
        result = replay(db, "x", RING, "cleanroom.test/collaborations/x", every_checkpoint=True)
    assert result.ok, result.finding
    assert result.frontier.size == 5
