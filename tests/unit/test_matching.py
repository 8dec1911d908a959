"""The sorted-digest matcher equals a plain set-based one, prefix collisions included."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.matching import _kernel
from cleanroom.matching.engine import DatasetTable
from cleanroom.matching.layout import digest_words, prefixes, sort_digests, sorted_layout
from cleanroom.matching.memory import (
    ArrowMatcher,
    SortedDigests,
    _key_cuts,
    _side,
    digest_index,
    key_ranges,
    match_sorted,
)
from cleanroom.matching.question import OverlapQuestion
from cleanroom.names import DatasetName

TYPES = ("email", "phone")
TIERS = ("gold", "silver", None)


def digest_pool(rng: np.random.Generator, size: int, collisions: int) -> np.ndarray:
    """Distinct random digests; in `collisions` groups of them, the first 8 bytes are equal,
    and in as many more the first 5 (ties in the upload sort's high bits)."""
    pool = rng.integers(0, 256, size=(size, 32), dtype=np.uint8)
    for _ in range(collisions):
        members = rng.choice(size, size=3, replace=False)
        pool[members, :8] = pool[members[0], :8]
        members = rng.choice(size, size=2, replace=False)
        pool[members, :5] = pool[members[0], :5]
    return np.unique(pool, axis=0)


def random_table(
    rng: np.random.Generator, pool: np.ndarray, rows: int, types: tuple[str, ...]
) -> pa.Table:
    """Rows drawing digests from `pool` with repeats and gaps, and a segment column."""
    columns = {}
    for identifier_type in types:
        picks = rng.integers(0, len(pool), size=rows)
        present = rng.random(rows) < 0.8
        columns[identifier_type] = pa.array(
            [bytes(pool[p]) if keep else None for p, keep in zip(picks, present, strict=True)],
            pa.binary(32),
        )
    columns["tier"] = pa.array([TIERS[i] for i in rng.integers(0, len(TIERS), size=rows)])
    return pa.table(columns)


def first_rows(table: pa.Table, types: tuple[str, ...]) -> pa.Table:
    """The table with each digest kept only in the first row holding it (SPEC section 3)."""
    columns = {}
    for identifier_type in types:
        seen: set[bytes] = set()
        kept = []
        for value in table.column(identifier_type).to_pylist():
            kept.append(value if value is not None and value not in seen else None)
            if value is not None:
                seen.add(value)
        columns[identifier_type] = pa.array(kept, pa.binary(32))
    columns["tier"] = table.column("tier")
    return pa.table(columns)


def set_matches(rows_of: pa.Table, against: pa.Table, types: tuple[str, ...]) -> list[bool]:
    """The plain answer: does each row share a digest of a type with some row of the other?"""
    shared = [t for t in types if t in against.column_names]
    sets = {t: {v for v in against.column(t).to_pylist() if v is not None} for t in shared}
    values = {t: rows_of.column(t).to_pylist() for t in shared}
    return [
        any(values[t][row] is not None and values[t][row] in sets[t] for t in shared)
        for row in range(rows_of.num_rows)
    ]


def dataset(name: str, table: pa.Table, types: tuple[str, ...], *, stored: bool) -> DatasetTable:
    if stored:
        table, _ = sorted_layout(table, types, ("tier",), workers=2)
    return DatasetTable(DatasetName("c", name), table, types, ("tier",))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.lists(st.integers(0, 120), min_size=2, max_size=4),
    stored=st.booleans(),
)
def test_overlap_equals_sets(seed: int, rows: list[int], stored: bool) -> None:
    rng = np.random.default_rng(seed)
    pool = digest_pool(rng, 150, collisions=8)
    kinds = [TYPES, ("email",), ("phone", "email"), ("phone",)]
    tables, raw = [], []
    for k, count in enumerate(rows):
        types = kinds[k % len(kinds)]
        table = random_table(rng, pool, count, types)
        plain = first_rows(table, types) if stored else table
        raw.append((plain, types))
        tables.append(dataset(f"d{k}", table, types, stored=stored))
    question = OverlapQuestion(tables[0].name, tuple(t.name for t in tables[1:]), "tier")
    exact = ArrowMatcher(workers=2).overlap(question, {t.name: t for t in tables})

    for (x, (tx, types_x)), (y, (ty, _)) in itertools.permutations(enumerate(raw), 2):
        expected = sum(set_matches(tx, ty, types_x))
        assert exact.pairwise[tables[x].name, tables[y].name] == expected
    base, base_types = raw[0]
    flags = [set_matches(base, other, base_types) for other, _ in raw[1:]]
    cells: dict[tuple[str | None, int], int] = {}
    for row, tier in enumerate(base.column("tier").to_pylist()):
        mask = sum(flag[row] << bit for bit, flag in enumerate(flags))
        cells[tier, mask] = cells.get((tier, mask), 0) + 1
    assert {k: v for k, v in exact.cells.items() if v} == cells
    assert exact.sizes == {t.name: t.row_count for t in tables}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stored=st.booleans())
def test_matches_equals_sets(seed: int, stored: bool) -> None:
    rng = np.random.default_rng(seed)
    pool = digest_pool(rng, 100, collisions=6)
    left = random_table(rng, pool, int(rng.integers(0, 90)), TYPES)
    right = random_table(rng, pool, int(rng.integers(0, 90)), ("phone",))
    x = dataset("x", left, TYPES, stored=stored)
    y = dataset("y", right, ("phone",), stored=stored)
    plain_left = first_rows(left, TYPES) if stored else left
    plain_right = first_rows(right, ("phone",)) if stored else right
    found = ArrowMatcher(workers=2).matches(x, y)
    assert sum(found) == sum(set_matches(plain_left, plain_right, TYPES))
    assert sum(ArrowMatcher().matches(y, x)) == sum(
        set_matches(plain_right, plain_left, ("phone",))
    )


def test_equal_prefixes_of_different_digests_never_match() -> None:
    rng = np.random.default_rng(1)
    digests = rng.integers(0, 256, size=(2, 32), dtype=np.uint8)
    digests[1, :8] = digests[0, :8]  # same 64-bit prefix, different digest
    x = SortedDigests.of(np.ascontiguousarray(digests[:1]).view(np.uint64), None)
    y = SortedDigests.of(np.ascontiguousarray(digests[1:]).view(np.uint64), None)
    i, j = match_sorted(x, y)
    assert len(i) == len(j) == 0
    i, j = match_sorted(x, x)
    assert (i.tolist(), j.tolist()) == ([0], [0])


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_key_ranges_split_without_losing_a_match(parts: int) -> None:
    rng = np.random.default_rng(parts)
    pool = digest_pool(rng, 400, collisions=20)
    take = [np.sort(rng.choice(len(pool), size=250, replace=False)) for _ in range(2)]
    x, y = (
        digest_index(
            DatasetTable(
                DatasetName("c", name),
                pa.table({"email": pa.array([bytes(pool[k]) for k in t], pa.binary(32))}),
                ("email",),
                (),
            ),
            "email",
        )
        for name, t in zip("xy", take, strict=True)
    )
    whole = set(zip(*(a.tolist() for a in match_sorted(x, y)), strict=True))
    split = set()
    for x_range, y_range in key_ranges(x, y, parts):
        sub_x = SortedDigests.of(x.words[x_range], None)
        sub_y = SortedDigests.of(y.words[y_range], None)
        i, j = match_sorted(sub_x, sub_y)
        split |= set(zip((i + x_range.start).tolist(), (j + y_range.start).tolist(), strict=True))
    assert split == whole
    assert len(whole) == len(set(take[0].tolist()) & set(take[1].tolist()))


def test_sort_keeps_the_first_row_of_each_digest_and_orders_all_32_bytes() -> None:
    rng = np.random.default_rng(3)
    pool = digest_pool(rng, 50, collisions=10)
    picks = rng.integers(0, len(pool), size=300)
    valid = rng.random(300) < 0.9
    column = pa.array(
        [bytes(pool[p]) if v else None for p, v in zip(picks, valid, strict=True)], pa.binary(32)
    )
    words, validity = digest_words(column)
    order, repeated = sort_digests(words, validity, workers=2)
    values = column.to_pylist()
    kept = [int(r) for r, again in zip(order, repeated, strict=True) if not again]
    assert [values[r] for r in kept] == sorted({v for v in values if v is not None})
    firsts = {}
    for row, value in enumerate(values):
        if value is not None:
            firsts.setdefault(value, row)
    assert sorted(kept) == sorted(firsts.values())
    assert sorted(order.tolist()) == [r for r, v in enumerate(values) if v is not None]


def test_sorted_layout_keeps_every_row_and_counts_repeats() -> None:
    rng = np.random.default_rng(4)
    pool = digest_pool(rng, 60, collisions=5)
    table = random_table(rng, pool, 200, TYPES)
    stored, counts = sorted_layout(table, TYPES, ("tier",))
    expected = first_rows(table, TYPES)
    assert stored.num_rows == table.num_rows
    rows = sorted(
        zip(*(stored.column(c).cast(expected.schema.field(c).type).to_pylist()
              for c in (*TYPES, "tier")), strict=True),
        key=repr,
    )  # fmt: skip
    assert rows == sorted(zip(*(expected.column(c).to_pylist() for c in (*TYPES, "tier")),
                              strict=True), key=repr)  # fmt: skip
    for identifier_type, (present, repeats) in zip(TYPES, counts, strict=True):
        values = table.column(identifier_type).to_pylist()
        distinct = {v for v in values if v is not None}
        assert present == len(distinct)
        assert repeats == sum(v is not None for v in values) - len(distinct)
    emails = [v for v in stored.column("email").to_pylist() if v is not None]
    assert emails == sorted(emails)


# The compiled kernel ----------------------------------------------------------------------


def sorted_list(digests: np.ndarray, rows: np.ndarray | None) -> SortedDigests:
    """A SortedDigests over (m, 32) uint8 digests already sorted by all 32 bytes."""
    return SortedDigests.of(np.ascontiguousarray(digests).view(np.uint64), rows)


def planted_lists(rng: np.random.Generator, sizes: list[int], *, repeats: bool) -> list[np.ndarray]:
    """Lists drawn from one pool with planted prefix collisions, some at the largest prefix
    (the kernel's end marker), each sorted by all 32 bytes; with `repeats`, digests repeat."""
    pool = digest_pool(rng, 60, collisions=6)
    top = pool[rng.choice(len(pool), size=min(3, len(pool)), replace=False)]
    top[:, :8] = 0xFF
    pool = np.unique(np.concatenate([pool, top]), axis=0)
    lists = []
    for size in sizes:
        picks = rng.integers(0, len(pool), size=size)
        if not repeats:
            picks = np.unique(picks)
        chosen = pool[np.sort(picks)]  # pool is sorted (np.unique), so the list is too
        lists.append(chosen)
    return lists


def old_matcher_pairs(x: np.ndarray, y: np.ndarray) -> set[tuple[int, int]]:
    """The matcher before the kernel: a range join of the prefixes, then all 32 bytes."""
    xk = prefixes(np.ascontiguousarray(x).view(np.uint64))
    yk = prefixes(np.ascontiguousarray(y).view(np.uint64))
    low, high = np.searchsorted(yk, xk, side="left"), np.searchsorted(yk, xk, side="right")
    return {
        (i, j) for i in range(len(x)) for j in range(low[i], high[i]) if bytes(x[i]) == bytes(y[j])
    }


def brute_force_masks(lists: list[np.ndarray], rows: list[np.ndarray | None]) -> list[list[int]]:
    """Per list, per row: the bits of the other lists holding the row's digest, with sets."""
    sets = [{bytes(d) for d in digests} for digests in lists]
    masks = []
    for k, digests in enumerate(lists):
        mask = [0] * len(digests)
        for position, digest in enumerate(digests):
            row = position if rows[k] is None else int(rows[k][position])
            for other, members in enumerate(sets):
                if other != k and bytes(digest) in members:
                    mask[row] |= 1 << other
        masks.append(mask)
    return masks


def kernel_masks(
    lists: list[np.ndarray], rows: list[np.ndarray | None], parts: int
) -> list[list[int]]:
    indexes = [sorted_list(d, r) for d, r in zip(lists, rows, strict=True)]
    masks = [np.zeros(len(d), dtype=np.uint8) for d in lists]
    cuts = _key_cuts(indexes, parts)
    for part in range(len(cuts[0])):
        _kernel.mark([_side(x, cuts[k][part], 1 << k, masks[k]) for k, x in enumerate(indexes)])
    return [m.tolist() for m in masks]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    sizes=st.lists(st.integers(0, 40), min_size=2, max_size=6),
    repeats=st.booleans(),
    parts=st.integers(1, 3),
    row_type=st.sampled_from([None, np.int32, np.int64]),
)
def test_kernel_marks_what_a_brute_force_finds(
    seed: int, sizes: list[int], repeats: bool, parts: int, row_type: type | None
) -> None:
    rng = np.random.default_rng(seed)
    lists = planted_lists(rng, sizes, repeats=repeats)
    rows = [None if row_type is None else rng.permutation(len(d)).astype(row_type) for d in lists]
    assert kernel_masks(lists, rows, parts) == brute_force_masks(lists, rows)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), repeats=st.booleans(), sizes=st.tuples(
    st.integers(0, 50), st.integers(0, 50)))  # fmt: skip
def test_kernel_pairs_equal_the_old_matcher(
    seed: int, repeats: bool, sizes: tuple[int, int]
) -> None:
    rng = np.random.default_rng(seed)
    x, y = planted_lists(rng, list(sizes), repeats=repeats)
    i, j = match_sorted(sorted_list(x, None), sorted_list(y, None))
    assert np.all(np.diff(i) >= 0)
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(found) == len(i)
    assert found == old_matcher_pairs(x, y)
    expected = {(a, b) for a in range(len(x)) for b in range(len(y)) if bytes(x[a]) == bytes(y[b])}
    assert found == expected


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_kernel_edge_cases(count: int) -> None:
    rng = np.random.default_rng(count)
    pool = np.unique(rng.integers(0, 256, size=(30, 32), dtype=np.uint8), axis=0)
    cases = {
        "empty": [pool[:0]] * count,
        "one empty": [pool[:0], *[pool] * (count - 1)],
        "single rows, equal": [pool[:1]] * count,
        "single rows, apart": [pool[k : k + 1] for k in range(count)],
        "all matching": [pool] * count,
    }
    everyone = (1 << count) - 1
    for name, lists in cases.items():
        rows: list[np.ndarray | None] = [None] * count
        found = kernel_masks(lists, rows, parts=2)
        assert found == brute_force_masks(lists, rows), name
        if name == "all matching":
            assert all(m == [everyone & ~(1 << k)] * len(pool) for k, m in enumerate(found))


def test_kernel_refuses_rows_and_buffers_out_of_bounds() -> None:
    rng = np.random.default_rng(5)
    pool = np.unique(rng.integers(0, 256, size=(8, 32), dtype=np.uint8), axis=0)
    x = sorted_list(pool, np.array([0, 1, 2, 3, 4, 5, 6, 99], dtype=np.int32))
    y = sorted_list(pool, None)
    masks = [np.zeros(len(pool), dtype=np.uint8) for _ in range(3)]
    for sides in ([x, y], [x, y, y]):
        with pytest.raises(ValueError, match="out of bounds"):
            _kernel.mark(
                [_side(d, slice(0, len(d)), 1 << k, masks[k]) for k, d in enumerate(sides)]
            )
    side = list(_side(y, slice(0, len(pool)), 1, np.zeros(3, dtype=np.uint8)))
    with pytest.raises(ValueError, match="fewer rows"):
        _kernel.mark([tuple(side), _side(y, slice(0, len(pool)), 2, masks[1])])
    side = list(_side(y, slice(0, len(pool) + 1), 1, masks[0]))
    with pytest.raises(ValueError, match="keys"):
        _kernel.mark([tuple(side), _side(y, slice(0, len(pool)), 2, masks[1])])


def test_sorted_digests_refuse_runs_out_of_order() -> None:
    rng = np.random.default_rng(6)
    digests = rng.integers(0, 256, size=(2, 32), dtype=np.uint8)
    digests[1, :8] = digests[0, :8]
    digests[0, 8], digests[1, 8] = 200, 100  # same prefix, larger digest first
    with pytest.raises(ValueError, match="not sorted"):
        sorted_list(digests, None)


def test_scatter_ors_marks_into_rows_and_refuses_rows_out_of_bounds() -> None:
    hits = np.array([1, 0, 4, 2], dtype=np.uint8)
    masks = np.array([8, 0, 0, 0], dtype=np.uint8)
    _kernel.scatter(hits, 1, np.array([3, 2, 0, 1], dtype=np.int32), 4, 0, 4, masks)
    assert masks.tolist() == [12, 2, 0, 1]
    with pytest.raises(ValueError, match="out of bounds"):
        _kernel.scatter(hits, 1, np.array([0, 1, 2, 4], dtype=np.int64), 8, 0, 4, masks)
