"""Signed checkpoints (C2SP signed-note and tlog-checkpoint) with Ed25519."""

from __future__ import annotations

import base64

import pytest

from cleanroom.proofs.signed_note import Checkpoint, NoteError, NoteSigner, NoteVerifier

CHECKPOINT = Checkpoint("cleanroom.test/collaborations/spring", 42, bytes(range(32)))


def test_round_trip_and_pinned_key() -> None:
    signer = NoteSigner.generate("cleanroom.test")
    note = signer.sign(CHECKPOINT.body())
    assert note.startswith("cleanroom.test/collaborations/spring\n42\n")
    assert "\n\n\u2014 cleanroom.test " in note
    assert NoteVerifier(signer.verifier_key).open_checkpoint(note) == CHECKPOINT
    assert NoteSigner.from_key(signer.key_text()).verifier_key == signer.verifier_key


def test_a_checkpoint_signed_with_another_key_is_rejected() -> None:
    signer, other = NoteSigner.generate("cleanroom.test"), NoteSigner.generate("cleanroom.test")
    with pytest.raises(NoteError, match=r"does not verify|no signature"):
        NoteVerifier(signer.verifier_key).open(other.sign(CHECKPOINT.body()))


def test_altered_notes_are_rejected() -> None:
    signer = NoteSigner.generate("cleanroom.test")
    verifier = NoteVerifier(signer.verifier_key)
    note = signer.sign(CHECKPOINT.body())
    for altered in (
        note.replace("\n42\n", "\n43\n"),
        note.replace("collaborations/spring", "collaborations/sprinG"),
        note.split("\n\n")[0] + "\n",
        note.replace("\u2014", "-"),
    ):
        with pytest.raises(NoteError):
            verifier.open_checkpoint(altered)


def test_signatures_of_unknown_keys_are_ignored() -> None:
    signer, other = NoteSigner.generate("cleanroom.test"), NoteSigner.generate("witness.test")
    both = signer.sign(CHECKPOINT.body()) + other.sign(CHECKPOINT.body()).split("\n\n")[1]
    assert NoteVerifier(signer.verifier_key).open_checkpoint(both) == CHECKPOINT
    with pytest.raises(NoteError, match="no signature"):
        NoteVerifier(other.verifier_key).open(signer.sign(CHECKPOINT.body()))


def test_key_formats_are_checked() -> None:
    signer = NoteSigner.generate("cleanroom.test")
    name, key_id, key = signer.verifier_key.split("+", 2)
    with pytest.raises(NoteError, match="id does not match"):
        NoteVerifier(f"{name}+00000000+{key}")
    with pytest.raises(NoteError, match="not an Ed25519"):
        NoteVerifier(f"{name}+{key_id}+{base64.b64encode(bytes(33)).decode()}")
    with pytest.raises(NoteError):
        NoteVerifier("not a key")
    with pytest.raises(NoteError, match="without spaces"):
        NoteSigner.generate("two words")


def test_checkpoint_bodies_are_parsed_strictly() -> None:
    for body in (
        "origin\n1\n",
        "origin\n-1\nAAAA\n",
        "origin\n01\n" + "A" * 44 + "\n",
        "origin\n1\nnot-base64\n",
    ):
        with pytest.raises(NoteError):
            Checkpoint.parse(body)
