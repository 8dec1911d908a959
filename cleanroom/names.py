"""Resource names (AIP-122) of the clean room, parsed and checked in one place.

Ids are 1 to 63 characters of lowercase letters, digits and hyphens, starting with a
letter: safe as path components and SQL values, with no `..` and no `/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cleanroom.errors import InvalidArgumentError, shown

ID_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,62}")
ID_RULE = "1 to 63 lowercase letters, digits or hyphens, starting with a letter"
SERVER_LOG = "-"  # the pseudo-collaboration of calls that named no configured collaboration


def check_id(value: str, *, field: str, kind: str) -> str:
    """Returns `value` if it is a valid id, else raises InvalidArgumentError naming `field`."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgumentError(
            "INVALID_ID",
            f"The {kind} id {shown(value)} in `{field}` is not valid: use {ID_RULE}.",
            field=field,
            value=value,
        )
    return value


def _parse(name: str, pattern: tuple[str, ...], *, field: str, example: str) -> list[str]:
    parts = name.split("/")
    if len(parts) != 2 * len(pattern) or any(
        parts[2 * i] != collection for i, collection in enumerate(pattern)
    ):
        raise InvalidArgumentError(
            "INVALID_RESOURCE_NAME",
            f"`{field}` must be a resource name like {example!r}; got {shown(name)}.",
            field=field,
            value=name,
            expected=example,
        )
    return [
        check_id(parts[2 * i + 1], field=field, kind=collection.rstrip("s"))
        for i, collection in enumerate(pattern)
    ]


@dataclass(frozen=True, order=True)
class CollaborationName:
    """`collaborations/{collaboration}`."""

    collaboration: str

    @classmethod
    def parse(cls, name: str, *, field: str = "parent") -> CollaborationName:
        """Parses a collaboration name, raising InvalidArgumentError naming `field`."""
        (collaboration,) = _parse(
            name, ("collaborations",), field=field, example="collaborations/spring-launch"
        )
        return cls(collaboration)

    def __str__(self) -> str:
        return f"collaborations/{self.collaboration}"


@dataclass(frozen=True, order=True)
class DatasetName:
    """`collaborations/{collaboration}/datasets/{dataset}`."""

    collaboration: str
    dataset: str

    @classmethod
    def parse(cls, name: str, *, field: str = "name") -> DatasetName:
        """Parses a dataset name, raising InvalidArgumentError naming `field`."""
        collaboration, dataset = _parse(
            name,
            ("collaborations", "datasets"),
            field=field,
            example="collaborations/spring-launch/datasets/acme-customers",
        )
        return cls(collaboration, dataset)

    @property
    def parent(self) -> CollaborationName:
        """The collaboration the dataset belongs to."""
        return CollaborationName(self.collaboration)

    def __str__(self) -> str:
        return f"collaborations/{self.collaboration}/datasets/{self.dataset}"


@dataclass(frozen=True, order=True)
class MaskingHopName:
    """`collaborations/{collaboration}/datasets/{dataset}/maskingHops/{partner}`."""

    collaboration: str
    dataset: str
    partner: str

    @classmethod
    def parse(cls, name: str, *, field: str = "name") -> MaskingHopName:
        """Parses a masking hop's name, raising InvalidArgumentError naming `field`."""
        collaboration, dataset, partner = _parse(
            name,
            ("collaborations", "datasets", "maskingHops"),
            field=field,
            example="collaborations/spring-launch/datasets/acme-customers/maskingHops/brightmart",
        )
        return cls(collaboration, dataset, partner)

    @property
    def dataset_name(self) -> DatasetName:
        """The dataset the hop masks."""
        return DatasetName(self.collaboration, self.dataset)

    @property
    def parent(self) -> CollaborationName:
        """The collaboration of the hop's dataset."""
        return CollaborationName(self.collaboration)

    def __str__(self) -> str:
        return f"{self.dataset_name}/maskingHops/{self.partner}"


@dataclass(frozen=True, order=True)
class OverlapReportName:
    """`collaborations/{collaboration}/overlapReports/{overlap_report}`."""

    collaboration: str
    overlap_report: str

    @classmethod
    def parse(cls, name: str, *, field: str = "name") -> OverlapReportName:
        """Parses a report name, raising InvalidArgumentError naming `field`."""
        collaboration, report = _parse(
            name,
            ("collaborations", "overlapReports"),
            field=field,
            example="collaborations/spring-launch/overlapReports/r-0123456789abcdef",
        )
        return cls(collaboration, report)

    @property
    def parent(self) -> CollaborationName:
        """The collaboration the report belongs to."""
        return CollaborationName(self.collaboration)

    def __str__(self) -> str:
        return f"collaborations/{self.collaboration}/overlapReports/{self.overlap_report}"


def privacy_budget_collaboration(name: str, *, field: str = "name") -> CollaborationName:
    """The collaboration of a budget name, `collaborations/{collaboration}/privacyBudget`."""
    parent, _, singleton = name.rpartition("/")
    if singleton != "privacyBudget":
        raise InvalidArgumentError(
            "INVALID_RESOURCE_NAME",
            f"`{field}` must be a resource name like"
            f" 'collaborations/spring-launch/privacyBudget'; got {shown(name)}.",
            field=field,
            value=name,
        )
    return CollaborationName.parse(parent, field=field)


def dataset_id_owner(dataset_id: str, partner_ids: Iterable[str]) -> str | None:
    """The partner whose datasets `dataset_id` names: the longest id it starts with, and a '-'.

    Dataset ids are named under their owner (`acme-crm` is acme's), so that two brands'
    ids never collide and an upload cannot probe for another brand's ids: who may take
    an id follows from the id and the configured partners alone.
    """
    owners = [p for p in partner_ids if dataset_id.startswith(f"{p}-")]
    return max(owners, key=len) if owners else None


def partner_name(partner_id: str) -> str:
    """The resource name of a partner: `partners/{partner}`."""
    return f"partners/{partner_id}"
