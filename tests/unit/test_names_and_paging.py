"""Resource names and page tokens: strict parsing, clear refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanroom.errors import InvalidArgumentError
from cleanroom.names import CollaborationName, DatasetName, OverlapReportName
from cleanroom.paging import MAX_PAGE_SIZE, decode_token, encode_token, page_size


def test_names_round_trip() -> None:
    name = DatasetName.parse("collaborations/spring/datasets/acme-customers")
    assert (name.collaboration, name.dataset) == ("spring", "acme-customers")
    assert str(name) == "collaborations/spring/datasets/acme-customers"
    assert name.parent == CollaborationName("spring")
    report = OverlapReportName.parse("collaborations/spring/overlapReports/r-1")
    assert str(report.parent) == "collaborations/spring"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "collaborations/spring",
        "collaborations/spring/datasets/",
        "collaborations/spring/datasets/../../etc/passwd",
        "collaborations/spring/datasets/a/b",
        "collaborations/Spring/datasets/a",
        "collaborations/spring/reports/a",
        "collaborations/spring/datasets/a'; DROP TABLE datasets; --",
        "collaborations/spring/datasets/" + "a" * 64,
    ],
)
def test_bad_dataset_names_are_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgumentError) as error:
        DatasetName.parse(bad, field="overlap_report.base_dataset")
    assert error.value.metadata["field"] == "overlap_report.base_dataset"
    assert error.value.reason in {"INVALID_RESOURCE_NAME", "INVALID_ID"}


@given(st.text())
def test_parsing_arbitrary_text_either_succeeds_or_refuses(text: str) -> None:
    try:
        name = DatasetName.parse(text)
    except InvalidArgumentError:
        return
    assert str(name) == text


def test_page_tokens_continue_only_their_listing() -> None:
    token = encode_token("datasets", "collaborations/a", "acme")
    assert decode_token(token, "datasets", "collaborations/a", "") == "acme"
    assert decode_token("", "datasets", "collaborations/a", "") == ""
    for kind, parent, start in [
        ("datasets", "collaborations/b", ""),
        ("auditEvents", "collaborations/a", 0),
    ]:
        with pytest.raises(InvalidArgumentError):
            decode_token(token, kind, parent, start)  # type: ignore[type-var]
    with pytest.raises(InvalidArgumentError):
        decode_token("%%%", "datasets", "collaborations/a", "")


def test_page_sizes() -> None:
    assert page_size(0, default=50) == 50
    assert page_size(10**9, default=50) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgumentError):
        page_size(-1, default=50)
