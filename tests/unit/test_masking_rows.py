"""Masking and shuffling rows: a bijection per type, nulls kept, rows permuted whole."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pyarrow as pa
import pytest

from cleanroom.group import ristretto255
from partners.masking import rows
from partners.masking.keys import new_blind_key
from tests.support import digest_array, random_digests

ROWS = 120


def _table(rng: np.random.Generator) -> tuple[pa.Table, np.ndarray, list[bool]]:
    """Digests with repeats and nulls in two types, and a row id, as an upload holds them."""
    pool = random_digests(rng, ROWS // 3)
    picks = rng.integers(0, len(pool), size=ROWS)
    digests = pool[picks]
    present = [bool(i % 7) for i in range(ROWS)]
    table = pa.table(
        {
            "email": digest_array(digests, present),
            "phone": digest_array(digests[::-1].copy()),
            "row": pa.array(range(ROWS), pa.int64()),
        }
    )
    return table, digests, present


def test_masking_is_k_times_the_point_of_each_digest_and_keeps_nulls() -> None:
    table, digests, present = _table(np.random.default_rng(1))
    key = new_blind_key()
    masked = rows.mask_digests(table, key, ["email", "phone"])
    assert masked.schema == table.schema
    emails = masked.column("email").to_pylist()
    for row, (digest, here) in enumerate(zip(digests, present, strict=True)):
        if not here:
            assert emails[row] is None
            continue
        point = ristretto255.hash_to_group(bytes(digest), "email")
        assert emails[row] == ristretto255.multiply_element(key, point)
    assert masked.column("row").equals(table.column("row"))


def test_masking_is_a_bijection_per_type() -> None:
    table, digests, present = _table(np.random.default_rng(2))
    masked = rows.mask_digests(table, new_blind_key(), ["email", "phone"])
    pairs = {
        (bytes(d), e)
        for d, e, here in zip(digests, masked.column("email").to_pylist(), present, strict=True)
        if here
    }
    # Equal digests give equal elements and different digests different ones.
    assert len({d for d, _ in pairs}) == len(pairs) == len({e for _, e in pairs})
    # The same digest under another type is another element.
    same = digest_array(digests)
    both = rows.mask_digests(
        pa.table({"email": same, "phone": same}), new_blind_key(), ["email", "phone"]
    )
    assert not set(both.column("email").to_pylist()) & set(both.column("phone").to_pylist())


def test_a_hop_multiplies_every_element_so_that_masks_commute() -> None:
    table, _, present = _table(np.random.default_rng(3))
    first, second = new_blind_key(), new_blind_key()
    once = rows.mask_digests(table, first, ["email"])
    twice = rows.multiply_elements(once, second, ["email"])
    direct = rows.mask_digests(table, ristretto255.multiply_scalars(first, second), ["email"])
    assert twice.column("email").equals(direct.column("email"))
    assert twice.column("email").null_count == present.count(False)


def test_a_value_that_is_not_an_element_is_refused() -> None:
    bad = pa.table({"email": pa.array([b"\xff" * 32], pa.binary(32))})
    with pytest.raises(ristretto255.InvalidElementError):
        rows.multiply_elements(bad, new_blind_key(), ["email"])


def test_progress_counts_each_row_once_per_column() -> None:
    table, _, _ = _table(np.random.default_rng(4))
    done: list[int] = []
    rows.mask_digests(table, new_blind_key(), ["email", "phone"], progress=done.append)
    assert sum(done) == 2 * ROWS


def test_shuffling_permutes_whole_rows() -> None:
    table, _, _ = _table(np.random.default_rng(5))
    tag = pa.array([i.to_bytes(16, "little") for i in range(ROWS)], pa.binary(16))
    table = table.append_column("_row_tag", tag)
    masked = rows.mask_digests(table, new_blind_key(), ["email", "phone"])
    shuffled = rows.shuffled(masked)
    assert shuffled.schema == masked.schema
    order = shuffled.column("row").to_pylist()
    assert sorted(order) == list(range(ROWS))
    assert order != list(range(ROWS))  # by chance with probability 1/120!
    # Every column moved with its row: the tag and the elements still belong to it.
    for position, row in enumerate(order):
        assert shuffled.column("_row_tag")[position].as_py() == row.to_bytes(16, "little")
        assert shuffled.column("email")[position] == masked.column("email")[row]
        assert shuffled.column("phone")[position] == masked.column("phone")[row]


def test_two_shuffles_of_the_same_rows_differ() -> None:
    table = pa.table({"row": pa.array(range(ROWS))})
    assert rows.shuffled(table).column("row") != rows.shuffled(table).column("row")


def test_the_permutation_is_uniform() -> None:
    # 6,000 draws of a permutation of 3: each of the 6 is expected 1,000 times with a
    # standard deviation of about 29; the bounds are 10 of those away.
    counts = collections.Counter(tuple(rows.random_permutation(3)) for _ in range(6000))
    assert set(counts) == set(itertools.permutations(range(3)))
    assert all(700 < count < 1300 for count in counts.values()), counts


@pytest.mark.parametrize("count", [0, 1, 2, 1000])
def test_a_permutation_holds_every_row_once(count: int) -> None:
    assert sorted(rows.random_permutation(count).tolist()) == list(range(count))


def test_columns_convert_to_matrices_and_back_through_slices_and_chunks() -> None:
    matrix = random_digests(np.random.default_rng(6), 50)
    present = np.array([i % 3 != 0 for i in range(50)])
    column = rows.element_column(matrix, present)
    expected = [bytes(r) if p else None for r, p in zip(matrix, present, strict=True)]
    assert column.to_pylist() == expected
    sliced = pa.chunked_array([column.slice(0, 7), column.slice(7, 30)])
    got, where = rows.element_rows(sliced)
    assert (where == present[:37]).all()
    assert (got[where] == matrix[:37][present[:37]]).all()
    full = rows.element_column(matrix, np.ones(50, dtype=bool))
    assert full.null_count == 0
