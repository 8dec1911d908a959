"""An attacker against double-blind matching: the operator's whole data directory and one brand.

The attacker holds copies of the server's data directory taken at several moments (every
file under it, the SQLite catalog included), the collaboration secret, one brand's blind
key, and everything that brand received and sent in its hops. It tries to decide, for
each of a list of known emails, whether it is in another brand's dataset, by every means
it has short of a report's counts:

- `search`: look for the email's digest `d`, and for `s · P(d)` and `s · k_a · P(d)`,
  for every scalar `s` the catalog stores (blinding factors, attempts' `r`: any 32-byte
  value, or 64 hex digits, read as a scalar) and its inverse, in the bytes of every file
  and every value of every column of every Arrow and SQLite file;
- `position`: find the attacker's own rows as uploaded (`k_a · P(d)`), follow them by
  position into the later forms of its own dataset (a hop or a layout that kept the row
  order), strip its key and any stored factor, and look for the result anywhere else
  (where it would be another brand's masked form of the same person). With the factor 1
  this compares the attacker's own matchable rows with every other stored value.

Each email gets a score (the number of hits) by each attack, by both together, and by
`position` through each later form alone (the chance hits of the matchable form must not
drown a form that keeps the order); the attacker guesses "in" for the emails that score
above the median. Where nothing leaks, every email scores the same (or, through the
matchable form, hits at random) and the guess is a coin: half of the emails are planted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from cleanroom.group import ristretto255 as group
from tests.double_blind import ONE, as_scalar

Matrix = np.ndarray[Any, np.dtype[np.uint8]]
HEX_SCALAR = re.compile(rb"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
HEX_RUN = re.compile(rb"[0-9a-fA-F]{64,}")
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{43,}={0,2}")
SMALL_FILE = 4096


@dataclass
class Haystack:
    """Labelled byte strings, searched for 32-byte values at every offset.

    Equal contents (a file unchanged between two copies) are searched once, under all
    their labels.
    """

    blobs: dict[bytes, tuple[list[str], bytes]] = field(default_factory=dict)

    def add(self, label: str, data: bytes) -> None:
        if len(data) >= 32:
            labels, _ = self.blobs.setdefault(hashlib.sha256(data).digest(), ([], data))
            labels.append(label)

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.blobs.values())

    def matches(self, targets: Matrix) -> list[tuple[int, list[str]]]:
        """Every occurrence of a row of `targets`: its index, and the labels it is under."""
        targets = np.ascontiguousarray(targets, dtype=np.uint8).reshape(-1, 32)
        if not len(targets):
            return []
        where: dict[bytes, list[int]] = defaultdict(list)
        for index, row in enumerate(targets):
            where[bytes(row)].append(index)
        prefixes = np.unique(targets[:, :8].copy().view("<u8").ravel())  # sorted
        found: list[tuple[int, list[str]]] = []
        for labels, data in self.blobs.values():
            for shift in range(8):
                count = (len(data) - shift) // 8
                if count <= 0:
                    continue
                words = np.frombuffer(data, dtype="<u8", count=count, offset=shift)
                places = np.searchsorted(prefixes, words).clip(max=len(prefixes) - 1)
                for position in np.flatnonzero(prefixes[places] == words):
                    start = shift + 8 * int(position)
                    found += [(i, labels) for i in where.get(data[start : start + 32], ())]
        return found

    def hits(self, targets: Matrix) -> np.ndarray[Any, Any]:
        """For each row of `targets`, how many times it occurs."""
        counts = np.zeros(len(targets), dtype=np.int64)
        for index, _ in self.matches(targets):
            counts[index] += 1
        return counts


def decoded_runs(data: bytes) -> bytes:
    """What the hex and base64 runs of a file or value decode to (a value logged as text)."""
    parts: list[bytes] = []
    for match in HEX_RUN.finditer(data):
        run = match.group()
        for start in (0, 1):  # either parity: the run may start mid-byte of a longer text
            parts.append(bytes.fromhex(run[start : start + (len(run) - start) // 2 * 2].decode()))
    for match in BASE64_RUN.finditer(data):
        run = match.group().rstrip(b"=")
        text = run.replace(b"-", b"+").replace(b"_", b"/")
        for start in range(4):  # the run may start anywhere in a 4-character group
            chunk = text[start:]
            chunk = chunk[: len(chunk) // 4 * 4]
            with contextlib.suppress(binascii.Error, ValueError):
                parts.append(base64.b64decode(chunk, validate=True))
    return b"\0".join(parts)


def _elements_of_table(table: pa.Table) -> bytes:
    parts: list[bytes] = []
    for column in table.columns:
        if pa.types.is_fixed_size_binary(column.type) or pa.types.is_binary(column.type):
            parts += [v for v in column.to_pylist() if v]
    return b"".join(parts)


def read_table(path: Path) -> pa.Table | None:
    """The file as an Arrow table, if it is an Arrow IPC file or stream, or Parquet."""
    for opener in (
        lambda: ipc.open_file(pa.memory_map(str(path))).read_all(),
        lambda: ipc.open_stream(pa.memory_map(str(path))).read_all(),
        lambda: pq.read_table(path),
    ):
        try:
            return opener()
        except (pa.ArrowException, OSError, ValueError):
            continue
    return None


def sqlite_values(path: Path) -> list[tuple[str, Any]] | None:
    """Every value of every table of a SQLite file (a copy: opening it may replay its WAL)."""
    try:
        connection = sqlite3.connect(path)
        try:
            found: list[tuple[str, Any]] = []
            tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for (table,) in list(tables):
                cursor = connection.execute(f'SELECT * FROM "{table}"')
                names = [d[0] for d in cursor.description]
                for row in cursor:
                    found += [(f"{table}.{n}", v) for n, v in zip(names, row, strict=True)]
            return found
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return None


@dataclass
class Snapshot:
    """What the attacker read from one copy of the data directory."""

    root: Path
    tables: dict[str, pa.Table] = field(default_factory=dict)  # by file, relative


@dataclass
class Attacker:
    """One brand's key plus copies of the server's data directory, and its own hop traffic."""

    key: bytes  # k_a
    own_dataset: str  # the attacker's dataset id
    haystack: Haystack = field(default_factory=Haystack)
    scalars: set[bytes] = field(default_factory=set)
    snapshots: list[Snapshot] = field(default_factory=list)
    followed: int = 0  # how many later forms of its rows `position` followed

    def read_directory(self, root: Path) -> None:
        """Every file under `root`: its bytes, its columns and values, the scalars it holds."""
        snapshot = Snapshot(root)
        # Every file's bytes first: opening the SQLite copy checkpoints its WAL away.
        files = [(p, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]
        for path, data in files:
            label = f"{root.name}/{path.relative_to(root)}"
            self.haystack.add(label, data)
            self.haystack.add(f"{label}#decoded", decoded_runs(data))
            if len(data) <= SMALL_FILE:  # a key file, say: its bytes and its hex as scalars
                self._scalars_in(data)
            values = sqlite_values(path) if data.startswith(b"SQLite format 3") else None
            if values is not None:
                # Every value once more on its own (a page split no longer splits it), in
                # one blob: the search's cost goes with blobs, not with their bytes.
                self.haystack.add(f"{label}:values", b"\0".join(
                    self._value(column, value) for column, value in values
                ))  # fmt: skip
                continue
            table = read_table(path)
            if table is not None:
                snapshot.tables[str(path.relative_to(root))] = table
                self.haystack.add(f"{label}#values", _elements_of_table(table))
        self.snapshots.append(snapshot)

    def read_traffic(self, label: str, tables: Iterable[pa.Table]) -> None:
        """What the attacker's brand received or sent in its hops."""
        for index, table in enumerate(tables):
            self.haystack.add(f"{label}/{index}", _elements_of_table(table))

    def _value(self, column: str, value: Any) -> bytes:
        """A catalog value's bytes, its scalars noted."""
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, bytes):
            return b""
        # The log's own hashes (its frontier, say) are no scalars: only its text is read.
        self._scalars_in(value, raw=not column.startswith("audit"))
        return value

    def _scalars_in(self, data: bytes, *, raw: bool = True) -> None:
        for match in HEX_SCALAR.finditer(data):
            self._add_scalar(bytes.fromhex(match.group().decode()))
        if raw and len(data) == 32:
            self._add_scalar(data)

    def _add_scalar(self, value: bytes) -> None:
        scalar = as_scalar(value)
        if scalar is not None:
            self.scalars.add(scalar)

    def factors(self) -> list[bytes]:
        """1, every stored scalar, and their inverses."""
        found = {ONE, *self.scalars}
        found |= {group.invert_scalar(s) for s in list(found)}
        return sorted(found)

    def search_scores(self, digests: Matrix, identifier_type: str) -> np.ndarray[Any, Any]:
        """Hits of d, s · P(d) and s · k_a · P(d), every stored s, anywhere."""
        points = group.mask_digests(ONE, digests, identifier_type)
        masked = group.mask_digests(self.key, digests, identifier_type)
        forms = [digests]
        for factor in self.factors():
            forms += [group.multiply(factor, points), group.multiply(factor, masked)]
        hits = self.haystack.hits(np.concatenate(forms))
        return hits.reshape(len(forms), len(digests)).sum(axis=0)

    def position_scores(
        self, digests: Matrix, identifier_type: str
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Hits of the attacker's rows followed by position into each later form of its
        dataset (by the file it was read from): each form is a separate guess, so that
        the chance hits of one (the matchable form's) do not drown the others'."""
        mine = group.mask_digests(self.key, digests, identifier_type)
        uploaded = self._positions(mine)
        if uploaded is None:
            return {}
        column, rows, first = uploaded
        found = rows >= 0
        strip = [ONE] + [group.multiply_scalars(f, group.invert_scalar(self.key))
                         for f in self.factors()]  # fmt: skip
        versions: dict[bytes, str] = {}  # each later content of the attacker's rows
        for snapshot in self.snapshots:
            for name, table in snapshot.tables.items():
                if f"--{self.own_dataset}--" not in name or column not in table.column_names:
                    continue
                values = table.column(column).to_pylist()
                if len(values) <= int(rows.max(initial=0)):
                    continue
                picked = [values[r] for r in rows[found]]
                if any(v is None for v in picked):
                    continue
                content = b"".join(picked)
                if content != first:
                    versions.setdefault(content, f"{snapshot.root.name}/{name}")
        self.followed = len(versions)
        scores = {label: np.zeros(len(digests), dtype=np.int64) for label in versions.values()}
        if not versions:
            return scores
        count = int(found.sum())
        forms = [
            group.multiply(factor, np.frombuffer(content, dtype=np.uint8).reshape(-1, 32))
            for content in versions
            for factor in strip
        ]
        # A hit in the very file the rows were read from (or a copy of it) says nothing.
        labels_of = list(versions.values())
        for index, labels in self.haystack.matches(np.concatenate(forms)):
            version, within = divmod(index, count * len(strip))
            label = labels_of[version]
            if {label, f"{label}#values"}.isdisjoint(labels):
                scores[label][np.flatnonzero(found)[within % count]] += 1
        return scores

    def _positions(self, mine: Matrix) -> tuple[str, np.ndarray[Any, Any], bytes] | None:
        """Where each of the attacker's masked values sits in its dataset's first stored
        form: the column, the row of each (-1: not found), and that form's content."""
        wanted = {bytes(row): i for i, row in enumerate(mine)}
        for snapshot in self.snapshots:
            for name, table in snapshot.tables.items():
                if f"--{self.own_dataset}--" not in name:
                    continue
                for column in table.column_names:
                    rows = np.full(len(mine), -1, dtype=np.int64)
                    for position, value in enumerate(table.column(column).to_pylist()):
                        if value in wanted:
                            rows[wanted[value]] = position
                    if (rows >= 0).any():
                        values = table.column(column).to_pylist()
                        return column, rows, b"".join(values[r] for r in rows[rows >= 0])
        return None


@dataclass(frozen=True)
class Verdict:
    """How well one attack did over the trials."""

    name: str
    accuracy: float
    trials: int

    @property
    def bound(self) -> float:
        """Chance plus four standard deviations of a fair coin's accuracy.

        Four, not three: several attacks are judged at once, and one of them (through the
        matchable form) hits at random, so that three would fail a run in a few hundred.
        """
        return 0.5 + 4 * (0.25 / self.trials) ** 0.5


def guessed(scores: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The attacker's guesses: "in" for the emails that score above the median."""
    return np.asarray(scores > np.median(scores))


def verdicts(
    scores: Mapping[str, np.ndarray[Any, Any]], planted: np.ndarray[Any, Any]
) -> list[Verdict]:
    found: list[Verdict] = []
    for name, values in scores.items():
        accuracy = float(np.mean(guessed(values) == planted))
        found.append(Verdict(name, accuracy, len(planted)))
    return found


def attack(
    attacker: Attacker, probes: Matrix, identifier_type: str, planted: Sequence[bool]
) -> list[Verdict]:
    """Every attack's accuracy at telling the planted emails from the others."""
    truth = np.asarray(planted, dtype=np.bool_)
    scores = {"search": attacker.search_scores(probes, identifier_type)}
    followed = attacker.position_scores(probes, identifier_type)
    scores["position"] = sum(followed.values(), np.zeros(len(truth), dtype=np.int64))
    scores["combined"] = scores["search"] + scores["position"]
    scores |= {f"position via {label}": hits for label, hits in followed.items()}
    return verdicts(scores, truth)
