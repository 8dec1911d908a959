"""Witness cosignatures (C2SP tlog-cosignature, Ed25519 `cosignature/v1`) and key rings."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cleanroom.proofs.cosignature import WitnessSigner, WitnessVerifier, signed_message
from cleanroom.proofs.signed_note import (
    Checkpoint,
    KeyRing,
    NoteError,
    NoteSigner,
    NoteVerifier,
    signature_lines,
)

CHECKPOINT = Checkpoint("cleanroom.test/collaborations/spring", 42, bytes(range(32)))
LOG = NoteSigner.generate("cleanroom.test")


def test_the_cosignature_line_follows_the_spec() -> None:
    witness = WitnessSigner.generate("witness.example.com/w1")
    line = witness.cosign(CHECKPOINT.body(), 1679315147)
    assert line.startswith("\u2014 witness.example.com/w1 ")
    blob = base64.b64decode(line.rpartition(" ")[2])
    assert len(blob) == 4 + 8 + 64
    public = base64.b64decode(witness.verifier_key.split("+", 2)[2])
    assert public[:1] == b"\x04"  # the vkey's signature type for cosignature/v1
    name = b"witness.example.com/w1"
    assert blob[:4] == hashlib.sha256(name + b"\n" + b"\x04" + public[1:]).digest()[:4]
    assert struct.unpack(">Q", blob[4:12]) == (1679315147,)
    message = b"cosignature/v1\ntime 1679315147\n" + CHECKPOINT.body().encode()
    assert signed_message(CHECKPOINT.body(), 1679315147) == message
    Ed25519PublicKey.from_public_bytes(public[1:]).verify(blob[12:], message)


def test_a_cosigned_note_is_still_a_signed_note() -> None:
    witness, other = WitnessSigner.generate("w1.test"), WitnessSigner.generate("w2.test")
    note = LOG.sign(CHECKPOINT.body())
    cosigned = note + witness.cosign(CHECKPOINT.body(), 7) + "\n"
    assert NoteVerifier(LOG.verifier_key).open_checkpoint(cosigned) == CHECKPOINT
    found = WitnessVerifier(witness.verifier_key).find(cosigned)
    assert found is not None
    assert (found.witness, found.timestamp) == ("w1.test", 7)
    assert WitnessVerifier(other.verifier_key).find(cosigned) is None
    assert WitnessSigner.from_key(witness.key_text()).verifier_key == witness.verifier_key


def test_a_cosignature_of_another_checkpoint_does_not_verify() -> None:
    witness = WitnessSigner.generate("w1.test")
    other = Checkpoint(CHECKPOINT.origin, 43, bytes(32))
    forged = LOG.sign(CHECKPOINT.body()) + witness.cosign(other.body(), 7) + "\n"
    with pytest.raises(NoteError, match="does not verify"):
        WitnessVerifier(witness.verifier_key).find(forged)


def test_log_keys_and_witness_keys_are_not_interchangeable() -> None:
    witness = WitnessSigner.generate("w1.test")
    with pytest.raises(NoteError, match="not an Ed25519 key"):
        NoteVerifier(witness.verifier_key)
    with pytest.raises(NoteError, match="cosignature/v1 key"):
        WitnessVerifier(LOG.verifier_key)
    with pytest.raises(NoteError, match="id does not match"):
        WitnessVerifier(witness.verifier_key.replace("w1.test", "w2.test"))


def test_a_key_ring_opens_old_and_new_checkpoints_and_names_the_key() -> None:
    new = NoteSigner.generate("cleanroom.test")
    ring = KeyRing.of(LOG.verifier_key, new.verifier_key)
    old_note, new_note = LOG.sign(CHECKPOINT.body()), new.sign(CHECKPOINT.body())
    assert ring.open_checkpoint(old_note)[1].key_id == LOG.key_id
    assert ring.open_checkpoint(new_note)[1].key_id == new.key_id
    handover = new.add_signature(old_note)
    assert new.add_signature(handover) == handover
    assert len(signature_lines(handover)[1]) == 2
    assert ring.open_checkpoint(handover)[1].key_id == new.key_id  # the newest key
    assert [ring.position(ring.open_checkpoint(n)[1]) for n in (old_note, handover)] == [0, 1]
    stranger = NoteSigner.generate("cleanroom.test")
    with pytest.raises(NoteError, match="no signature of a trusted key"):
        ring.open_checkpoint(stranger.sign(CHECKPOINT.body()))
    with pytest.raises(NoteError, match="share one name"):
        KeyRing.of(LOG.verifier_key, NoteSigner.generate("other.test").verifier_key)


@pytest.mark.parametrize(
    "note",
    [
        "",
        "no blank line\n",
        "a\n\nnot a signature\n",
        "a\n\n\u2014 x !!!\n",
        "a\n\n\u2014 x AAAA\n",
    ],
)
def test_malformed_notes_are_note_errors(note: str) -> None:
    with pytest.raises(NoteError):
        KeyRing.of(LOG.verifier_key).open_checkpoint(note)
