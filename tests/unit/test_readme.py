"""The README is true on a clone: every link stays inside the repository and resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub makes of the headings: lowercase, spaces to hyphens, no punctuation."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_link_stays_inside_the_repository_and_resolves() -> None:
    anchors = _anchors(README)
    links = LINK.findall(README)
    assert links, "the README has no links to check"
    for target in links:
        assert "://" not in target, f"{target}: a link that leaves the repository"
        path, _, anchor = target.partition("#")
        if path:
            resolved = (ROOT / path).resolve()
            assert resolved.is_relative_to(ROOT), f"{target}: outside the repository"
            assert resolved.exists(), f"{target}: no such file in the repository"
        else:
            assert anchor in anchors, f"{target}: no such heading"


def test_no_bare_address_of_a_file_outside_the_repository() -> None:
    assert "../shared" not in README
