"""`prepare --blind-key`: a digests file masked in place, rows shuffled, ready to upload."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cleanroom.group import ristretto255
from partners.cli import main
from partners.errors import InputError
from partners.masking.files import mask_digest_file
from partners.masking.keys import new_blind_key, write_blind_key
from partners.preparation.digest import write_secret
from partners.preparation.pipeline import DOUBLE_BLIND, SHARED_SECRET, read_digest_file
from tests.support import COLLABORATION, SECRET


@pytest.fixture
def customers(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "tier"])
        for i in range(60):
            writer.writerow([f"person.{i}@example.com" if i % 9 else "", "gold" if i % 2 else ""])
    return path


def _prepare(customers: Path, out: Path, *extra: str) -> dict[str, object]:
    secret = out.parent / "secret"
    if not secret.exists():
        write_secret(secret, SECRET)
    result = CliRunner().invoke(main, [
        "prepare", str(customers), str(out), f"--collaboration={COLLABORATION}",
        f"--secret-file={secret}", "--column=email=email", "--segment=tier", "--json", *extra,
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.output)
    return summary


def test_prepare_with_a_blind_key_writes_the_masked_rows_shuffled(
    customers: Path, tmp_path: Path
) -> None:
    key = new_blind_key()
    key_file = tmp_path / "k"
    write_blind_key(key_file, key, collaboration=COLLABORATION)
    _prepare(customers, tmp_path / "plain.parquet")
    summary = _prepare(customers, tmp_path / "masked.parquet", f"--blind-key={key_file}")
    assert summary["matching"] == DOUBLE_BLIND
    plain, masked = (
        read_digest_file(tmp_path / "plain.parquet"),
        read_digest_file(tmp_path / "masked.parquet"),
    )
    assert (plain.matching, masked.matching) == (SHARED_SECRET, DOUBLE_BLIND)
    assert masked.row_count == plain.row_count
    before = pq.read_table(tmp_path / "plain.parquet").to_pylist()
    after = pq.read_table(tmp_path / "masked.parquet").to_pylist()
    expected = [
        {
            "email": None
            if row["email"] is None
            else ristretto255.multiply_element(
                key, ristretto255.hash_to_group(row["email"], "email")
            ),
            "tier": row["tier"],
        }
        for row in before
    ]
    assert sorted(after, key=_order) == sorted(expected, key=_order)  # segments kept with rows
    assert after != expected  # shuffled: the same order has a chance of 1 in 54!


def _order(row: dict[str, object]) -> tuple[bytes, str]:
    return (row["email"] or b"", row["tier"] or "")  # type: ignore[return-value]


def test_a_masked_file_is_never_masked_twice(customers: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    write_blind_key(key_file, new_blind_key(), collaboration=COLLABORATION)
    out = tmp_path / "masked.parquet"
    _prepare(customers, out, f"--blind-key={key_file}")
    content = out.read_bytes()
    with pytest.raises(InputError) as caught:
        mask_digest_file(out, new_blind_key())
    assert caught.value.reason == "DIGESTS_ALREADY_MASKED"
    assert out.read_bytes() == content


def test_prepare_refuses_another_collaborations_key_before_reading_anything(
    customers: Path, tmp_path: Path
) -> None:
    key_file = tmp_path / "k"
    write_blind_key(key_file, new_blind_key(), collaboration="autumn-sale")
    write_secret(tmp_path / "secret", SECRET)
    result = CliRunner().invoke(main, [
        "prepare", str(customers), str(tmp_path / "out.parquet"),
        f"--collaboration={COLLABORATION}", f"--secret-file={tmp_path / 'secret'}",
        "--column=email=email", f"--blind-key={key_file}",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "BLIND_KEY_OF_ANOTHER_COLLABORATION" in result.output
    assert not (tmp_path / "out.parquet").exists()
