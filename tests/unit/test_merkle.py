"""RFC 9162 Merkle proofs: every size up to 64 and every index, and altered proofs rejected."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.proofs import merkle

SIZES = range(1, 65)


def leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def reference_root(d: list[bytes]) -> bytes:
    """MTH of RFC 9162 2.1.1, written as plainly as the RFC states it."""
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + reference_root(d[:k]) + reference_root(d[k:])).digest()


def test_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert merkle.root([]) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("n", SIZES)
def test_roots_frontiers_and_proofs_for_every_size_and_index(n: int) -> None:
    d = leaves(n)
    root = merkle.root(d)
    assert root == reference_root(d)
    frontier = merkle.Frontier()
    for leaf in d:
        frontier.append(leaf)
    assert merkle.Frontier.from_bytes(n, frontier.to_bytes()).root() == root
    bigger_root = merkle.root(leaves(n + 1))
    for index in range(n):
        proof = merkle.inclusion_proof(index, d)
        assert merkle.verify_inclusion(index, n, d[index], proof, root)
        assert not merkle.verify_inclusion(index, n + 1, d[index], proof, bigger_root)
        assert not merkle.verify_inclusion(index, n, merkle.leaf_hash(b"other"), proof, root)
        assert not merkle.verify_inclusion(index, n, d[index], proof, merkle.leaf_hash(b"r"))
        for other_index in (index - 1, index + 1, n):
            assert not merkle.verify_inclusion(other_index, n, d[index], proof, root)
        for position in range(len(proof)):
            altered = list(proof)
            altered[position] = bytes(32)
            assert not merkle.verify_inclusion(index, n, d[index], altered, root)
        assert not merkle.verify_inclusion(index, n, d[index], [*proof, bytes(32)], root)
        if proof:
            assert not merkle.verify_inclusion(index, n, d[index], proof[:-1], root)
    for first in range(1, n + 1):
        first_root = merkle.root(d[:first])
        proof = merkle.consistency_proof(first, d)
        assert merkle.verify_consistency(first, n, first_root, root, proof)
        assert not merkle.verify_consistency(first, n, merkle.leaf_hash(b"x"), root, proof)
        assert not merkle.verify_consistency(first, n, first_root, merkle.leaf_hash(b"x"), proof)
        if first < n:
            assert not merkle.verify_consistency(first, n + 1, first_root, bigger_root, proof)
            assert not merkle.verify_consistency(first, n, first_root, root, [])
        for position in range(len(proof)):
            altered = list(proof)
            altered[position] = bytes(32)
            assert not merkle.verify_consistency(first, n, first_root, root, altered)


@given(n=st.integers(1, 200), data=st.data())
def test_a_changed_leaf_changes_every_later_root(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    index = data.draw(st.integers(0, n - 1))
    changed = list(d)
    changed[index] = merkle.leaf_hash(b"tampered")
    assert merkle.root(changed[: index + 1]) != merkle.root(d[: index + 1])
    assert merkle.root(changed[:index]) == merkle.root(d[:index])
    # A tree that kept the old root cannot be proven consistent with the changed one.
    if index > 0:
        proof = merkle.consistency_proof(index, changed)
        assert merkle.verify_consistency(
            index, n, merkle.root(d[:index]), merkle.root(changed), proof
        )
    proof = merkle.consistency_proof(index + 1, changed)
    assert not merkle.verify_consistency(
        index + 1, n, merkle.root(d[: index + 1]), merkle.root(changed), proof
    )
