"""Tables from Python, the rules shared with the server, reports as frames (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

import email_validator
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cleanroom.usecases import upload as server_upload
from cleanroom.v1 import overlap_report_pb2 as pb
from partners import report_frame
from partners.client import _full_name
from partners.errors import InputError
from partners.preparation import _columns, segments
from partners.preparation.pipeline import prepare

SECRET = bytes(range(32))
EMAILS = ["a@example.com", "B@Example.com", None, "not an email"]


def run(source: object, tmp_path: Path, **options: object) -> pa.Table:
    prepare(source, tmp_path / "digests.parquet", secret=SECRET, collaboration_id="c",
            **({"columns": {"email": "email"}} | options))  # type: ignore[arg-type]  # fmt: skip
    return pq.read_table(tmp_path / "digests.parquet")


@pytest.mark.parametrize(
    "make",
    [
        lambda: pa.table({"email": EMAILS, "n": [1, 2, 3, 4]}),
        lambda: pa.table({"email": EMAILS}).to_batches()[0],
        lambda: pa.RecordBatchReader.from_batches(
            pa.schema({"email": pa.string()}), pa.table({"email": EMAILS}).to_batches()
        ),
        lambda: pd.DataFrame({"email": EMAILS, "n": [1, 2, 3, 4]}),
        lambda: pl.DataFrame({"email": EMAILS}),
    ],
    ids=["arrow-table", "record-batch", "batch-reader", "pandas", "polars"],
)
def test_tables_and_data_frames_are_prepared_like_files(tmp_path: Path, make: object) -> None:
    source = make()  # type: ignore[operator]
    expected = run(pa.table({"email": EMAILS}), tmp_path)
    (tmp_path / "digests.parquet").rename(tmp_path / "expected.parquet")
    assert run(source, tmp_path) == expected


def test_numbers_in_a_data_frame_read_as_the_integers_they_are(tmp_path: Path) -> None:
    # pandas holds an integer column with gaps as floats: 812345678.0 must read 812345678.
    frame = pd.DataFrame({"phone": [812345678.0, None, 912345678.0]})
    table = run(frame, tmp_path, columns={"phone": "phone"}, default_region="TH")
    (tmp_path / "digests.parquet").rename(tmp_path / "from-floats.parquet")
    direct = run(pa.table({"phone": ["+66812345678", "+66912345678"]}), tmp_path,
                 columns={"phone": "phone"})  # fmt: skip
    assert table == direct


def test_an_object_that_is_no_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        run({"email": EMAILS}, tmp_path)
    assert caught.value.reason == "UNSUPPORTED_SOURCE"


def test_segment_rules_are_the_servers() -> None:
    assert segments.SEGMENT_NAME.pattern == server_upload.SEGMENT_NAME.pattern
    assert segments.MAX_SEGMENT_VALUES == server_upload.MAX_SEGMENT_VALUES
    assert segments.MAX_SEGMENT_LABEL == server_upload.MAX_SEGMENT_LABEL
    for column in ("Member Tier", "ระดับสมาชิก", "Hạng thành viên", "2024 tier", "tier"):
        assert re.fullmatch(server_upload.SEGMENT_NAME, segments.suggested_name(column))


def test_special_use_domains_are_email_validators() -> None:
    listed = {suffix.removeprefix(".") for suffix in _columns._SPECIAL_USE_DOMAINS}
    assert listed == set(email_validator.SPECIAL_USE_DOMAIN_NAMES)


def test_short_ids_become_full_names() -> None:
    assert _full_name("spring-launch", "datasets", "acme") == (
        "collaborations/spring-launch/datasets/acme"
    )
    full = "collaborations/other/datasets/acme"
    assert _full_name("spring-launch", "datasets", full) == full
    assert _full_name(None, "datasets", "acme") == "acme"


def test_a_report_frame_is_tidy_and_never_estimates_a_suppressed_count() -> None:
    base, other = "collaborations/c/datasets/acme", "collaborations/c/datasets/globex"
    report = pb.OverlapReport(
        name="collaborations/c/overlapReports/r-1",
        base_dataset=base,
        other_datasets=[other],
        dataset_sizes=[pb.DatasetSize(dataset=base, row_count=pb.ReleasedCount(value=200))],
        pairwise_overlaps=[
            pb.PairwiseOverlap(
                dataset=base,
                matched_dataset=other,
                matched_row_count=pb.ReleasedCount(value=50),
                match_rate=0.25,
            ),
        ],
        membership_cells=[
            pb.MembershipCell(
                matched_datasets=[other],
                base_row_count=pb.ReleasedCount(
                    suppression_reason=pb.SUPPRESSION_REASON_BELOW_THRESHOLD
                ),
            ),
            pb.MembershipCell(base_row_count=pb.ReleasedCount(value=150)),
        ],
    )
    frame = report_frame(report)
    assert list(frame.columns) == [
        "report", "figure", "dataset", "matched_datasets", "segment", "count", "suppressed",
        "suppression_reason", "rate",
    ]  # fmt: skip
    assert frame["count"].dtype == "Int64"
    pair = frame[frame.figure == "pairwise_overlap"].iloc[0]
    assert (pair["dataset"], pair["matched_datasets"], pair["count"]) == ("acme", "globex", 50)
    assert pair["rate"] == 0.25
    cells = frame[frame.figure == "membership_cell"]
    hidden = cells[cells.suppressed].iloc[0]
    assert pd.isna(hidden["count"])
    assert hidden["suppression_reason"] == "suppressed"  # one mark, whatever the stored reason
    assert pd.isna(hidden["rate"])  # the segment's total is not released: no share
    assert cells["rate"].isna().all()


def test_arrow_ipc_files_are_read(tmp_path: Path) -> None:
    from pyarrow import feather

    feather.write_feather(pa.table({"email": EMAILS, "n": [1, 2, 3, 4]}), tmp_path / "c.feather")
    expected = run(pa.table({"email": EMAILS}), tmp_path)
    assert run(tmp_path / "c.feather", tmp_path) == expected


def test_gzipped_tsv_in_a_code_page_is_read(tmp_path: Path) -> None:
    import gzip

    text = "ชื่อ\temail\nสมชาย\ta@example.com\nสมหญิง\tb@example.com\n"
    (tmp_path / "c.tsv.gz").write_bytes(gzip.compress(text.encode("cp874")))
    table = run(tmp_path / "c.tsv.gz", tmp_path, segment_columns={"ชื่อ": "name"})
    assert table.column("name").to_pylist() == ["สมชาย", "สมหญิง"]
