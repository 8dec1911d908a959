"""Rotating the collaboration secret: a report never mixes datasets of two secrets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cleanroom.tls.pki import DemoPki
from partners.errors import PrivacyRuleError
from partners.preparation.digest import key_check_value
from tests.support import (
    COLLABORATION,
    KCV,
    dataset_name,
    digest_array,
    running_server,
    write_digest_file,
)

PARENT = f"collaborations/{COLLABORATION}"
NEW_KCV = key_check_value(bytes(range(1, 33)), COLLABORATION)


def digests_file(path: Path, shared: np.ndarray, kcv: str) -> Path:
    return write_digest_file(path, {"email": digest_array(shared)}, kcv=kcv)


@pytest.mark.parametrize("window", [True, False], ids=["during-the-window", "after-it"])
def test_a_report_over_datasets_of_two_secrets_is_refused_before_any_epsilon(
    pki: DemoPki, tmp_path: Path, window: bool
) -> None:
    rng = np.random.default_rng(3)
    people = rng.integers(0, 256, size=(200, 32), dtype=np.uint8)
    policy = {"noise": True, "minimum_threshold": 10, "minimum_dataset_size": 10}
    data_dir = tmp_path / "data"
    # Before the rotation: acme uploads with the old secret.
    with running_server(pki, data_dir, **policy) as before:
        before.client("acme").upload(
            digests_file(tmp_path / "old.parquet", people, KCV), dataset_id="acme-old"
        )
    # The secret is rotated: the config names the new KCV (and the old during the window).
    rotated = {"key_check_value": NEW_KCV}
    if window:
        rotated["previous_key_check_value"] = KCV
    with running_server(pki, data_dir, collaboration=rotated, **policy) as after:
        after.client("brightmart").upload(
            digests_file(tmp_path / "new.parquet", people, NEW_KCV), dataset_id="brightmart-new"
        )
        spent = after.client("acme").get_budget(PARENT).spent_epsilon
        with pytest.raises(PrivacyRuleError) as refused:
            after.client("acme").create_report(
                PARENT, base=dataset_name("acme-old"), others=[dataset_name("brightmart-new")]
            )
        assert refused.value.reason == "KEY_CHECK_MISMATCH"
        assert KCV in refused.value.message
        assert NEW_KCV in refused.value.message
        assert dataset_name("acme-old") in refused.value.message
        assert dataset_name("brightmart-new") in refused.value.message
        assert after.client("acme").get_budget(PARENT).spent_epsilon == spent
        (event,) = after.events("CreateOverlapReport")
        assert (event.outcome.reason, event.outcome.epsilon_spent) == ("KEY_CHECK_MISMATCH", 0)


def test_during_the_window_uploads_of_the_old_secret_are_accepted_and_used_together(
    pki: DemoPki, tmp_path: Path
) -> None:
    rng = np.random.default_rng(4)
    people = rng.integers(0, 256, size=(200, 32), dtype=np.uint8)
    rotated = {"key_check_value": NEW_KCV, "previous_key_check_value": KCV}
    with running_server(pki, tmp_path / "data", collaboration=rotated) as server:
        for brand in ("acme", "brightmart"):
            server.client(brand).upload(
                digests_file(tmp_path / f"{brand}.parquet", people, KCV), dataset_id=f"{brand}-old"
            )
        report = server.client("acme").create_report(
            PARENT, base=dataset_name("acme-old"), others=[dataset_name("brightmart-old")]
        )
        assert report.name
        # After the window (the old KCV removed from the config), the old ones are refused.
    with (
        running_server(pki, tmp_path / "data", collaboration={"key_check_value": NEW_KCV}) as later,
        pytest.raises(PrivacyRuleError) as refused,
    ):
        later.client("acme").create_report(
            PARENT, base=dataset_name("acme-old"), others=[dataset_name("brightmart-old")]
        )
    assert refused.value.reason == "KEY_CHECK_MISMATCH"
    assert "no longer accepts" in refused.value.message
