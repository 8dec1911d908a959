"""The README's pipeline example (DataFrame in, DataFrame out), run as written (issue 14)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from partners import prepare
from partners.preparation.digest import write_secret
from tests.support import COLLABORATION, SECRET, RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"
ACME = range(0, 60)
BRIGHTMART = range(30, 100)


def email(i: int) -> str:
    return f"customer.{i}@example.com"


def phone(i: int) -> tuple[str, str]:
    """A national number and its country: Thai for odd people, Vietnamese for even."""
    return (f"081{i:07d}", "TH") if i % 2 else (f"091{i:07d}", "VN")


def readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [block] = [block for block in blocks if "report_frame(report)" in block]
    return block


@pytest.mark.slow
def test_the_readme_pipeline_runs_as_written(
    server: RunningServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    write_secret(tmp_path / "collaboration.secret", SECRET)
    # The other brand's dataset, by phone only, uploaded beforehand.
    other = pd.DataFrame({"phone": [phone(i)[0] for i in BRIGHTMART],
                          "country": [phone(i)[1] for i in BRIGHTMART]})  # fmt: skip
    prepare(other, tmp_path / "other.parquet", secret=SECRET, collaboration_id=COLLABORATION,
            columns={"phone": "phone"}, region_column="country")  # fmt: skip
    server.client("brightmart").upload(tmp_path / "other.parquet", dataset_id="brightmart-loyalty")
    pd.DataFrame(
        {
            "email": [email(i) for i in ACME],
            "mobile": [phone(i)[0] for i in ACME],
            "country": [phone(i)[1] for i in ACME],
            "Member Tier": ["Gold" if i % 3 else "Silver" for i in ACME],
        }
    ).to_parquet(tmp_path / "crm_export.parquet")
    connection = server.connection("acme")
    config = tmp_path / "config" / "cleanroom-partner" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        'default_profile = "acme"\n\n[profiles.acme]\n'
        f'server = "{connection.target}"\ncert = "{connection.certificate}"\n'
        f'key = "{connection.private_key}"\nca = "{connection.ca_certificate}"\n'
        f'server_name = "localhost"\ncollaboration = "{COLLABORATION}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for variable in ("CLEANROOM_PROFILE", "CLEANROOM_SERVER", "CLEANROOM_COLLABORATION"):
        monkeypatch.delenv(variable, raising=False)

    namespace: dict[str, object] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)

    shared = len(set(ACME) & set(BRIGHTMART))
    overlap = namespace["overlap"]
    assert isinstance(overlap, pd.DataFrame)
    mine = overlap[overlap.dataset == "acme-crm"].iloc[0]
    assert mine["matched_datasets"] == "brightmart-loyalty"
    assert mine["count"] == shared
    assert mine["rate"] == pytest.approx(shared / len(ACME))
    summary = namespace["summary"]
    assert summary.rows_written == len(ACME)  # type: ignore[attr-defined]
    printed = capsys.readouterr().out
    assert "digests_written" in printed
    assert "brightmart-loyalty" in printed
