"""Double-blind matching end to end (issue 18, SPEC section 8), against the real server.

The same people go through two collaborations of one server, one matching on the shared
secret and one double-blind, and every report must release the same figures (exact mode):
for two and three brands, two identifier types, with and without a segment split. The
stored elements of a matchable dataset must be exactly `K · P(d)`. A brand that joins
later (a configuration reload) makes every dataset unmatchable until it has masked it.
Every masking call is in the query log, and the log verifies.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cleanroom.config import load_config
from cleanroom.demo.deployment import loopback_connection
from cleanroom.group import ristretto255 as group
from cleanroom.proofs.signed_note import NoteVerifier
from cleanroom.tls.pki import DemoPki
from cleanroom.usecases.clean_room import CleanRoom
from partners.audit.verify import AuditorState, verify_log
from partners.cli import main
from partners.client import CleanRoomClient, Connection
from partners.errors import PrivacyRuleError
from tests.double_blind import (
    BLIND,
    MASKING_METHODS,
    MASKING_SERVICE,
    QUESTIONS,
    SEGMENT,
    SHARED,
    TYPES,
    Audience,
    HopWorker,
    assert_same_reports,
    assert_stored_exactly,
    audiences,
    calls_counted,
    dataset_id,
    dataset_in,
    figures,
    forms,
    hop_name,
    mask_everything,
    member,
    parent,
    partner_environment,
    partner_name,
    product,
    reason_of,
    rows_of,
    serving,
    state_of,
    two_mode_config,
    upload_blind,
    upload_shared,
    words,
    write_toml,
)
from tests.privacy.blind_attack import decoded_runs
from tests.served import ServedProcess, served
from tests.support import BRANDS, LOG_SIGNER, RunningServer

pytestmark = pytest.mark.slow


def assert_matchable_and_exact(
    running: RunningServer, lists: dict[str, Audience], keys: dict[str, bytes]
) -> None:
    """Every double-blind dataset is matchable (its owner's view) and stores K · P(d)."""
    everyone = sorted(partner_name(b) for b in keys)
    for brand in lists:
        dataset = running.client(brand).get_dataset(dataset_in(BLIND, dataset_id(brand)))
        assert state_of(dataset) == ("MATCHING_STATE_MATCHABLE", everyone, [])
    assert_stored_exactly(running.clean_room, lists, keys)


def assert_masking_calls_logged(
    ledger: Connection, counted: Callable[[str], int], tmp_path: Path
) -> None:
    """Every MaskingService call the server handled (its metrics) is in the query log as
    the auditor reads it, naming its hop, and the log verifies."""
    with CleanRoomClient(ledger, timeout=60) as auditor:
        events = list(auditor.list_audit_events(parent(BLIND)))
        for method in MASKING_METHODS:
            full = MASKING_SERVICE + method
            logged = [e for e in events if e.method == full]
            assert len(logged) == counted(full) > 0, method
            for event in logged:
                assert event.caller.startswith("partners/")
                if method != "ListMaskingHops":
                    assert any("/maskingHops/" in r for r in event.resources), event
        verdict = verify_log(
            auditor, parent(BLIND), NoteVerifier(LOG_SIGNER.verifier_key),
            AuditorState(tmp_path / "auditor"),
        )  # fmt: skip
    assert verdict.ok, f"index {verdict.first_bad_index}: {verdict.problem}"


def served_calls(server: ServedProcess, method: str) -> int:
    """How many calls of `method` a `cleanroom serve` process counted, any status."""
    status, text = server.ops("/metrics")
    assert status == 200
    return sum(
        int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cleanroom_calls_total" and sample.labels.get("method") == method
    )


def test_double_blind_reports_equal_shared_secret_reports(pki: DemoPki, tmp_path: Path) -> None:
    from partners import new_blind_key

    lists = audiences(18, {"acme": 700, "brightmart": 600, "corvid": 500})
    keys = {brand: new_blind_key() for brand in BRANDS}
    with serving(pki, two_mode_config(pki, tmp_path / "data")) as running:
        upload_shared(running, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        for brand in BRANDS:
            dataset = running.client(brand).get_dataset(dataset_in(BLIND, dataset_id(brand)))
            others = sorted(partner_name(b) for b in BRANDS if b != brand)
            assert state_of(dataset) == ("MATCHING_STATE_MASKING", [partner_name(brand)], others)
        # Before the hops, no report: the refusal names the brands that have still to mask.
        with pytest.raises(PrivacyRuleError) as refused:
            running.client("acme").create_report(
                parent(BLIND), base=dataset_in(BLIND, dataset_id("acme")),
                others=[dataset_in(BLIND, dataset_id("brightmart"))],
            )  # fmt: skip
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        named = " ".join(refused.value.metadata.values())
        assert {"brightmart", "corvid"} <= words(named), named

        mask_everything(running, keys, tmp_path / "journals")
        assert_matchable_and_exact(running, lists, keys)
        assert_same_reports(running, QUESTIONS)
        counted = functools.partial(calls_counted, running.metrics)
        assert_masking_calls_logged(running.connection("ledger"), counted, tmp_path)


def blind_cli(
    server: ServedProcess, partner: str, home: Path, *arguments: str, code: int = 0
) -> str:
    connection = loopback_connection(server.pki, partner, server.port)
    environment = partner_environment(connection, home)
    result = CliRunner().invoke(main, list(arguments), env=environment)
    assert result.exit_code == code, result.output
    return result.output


def test_a_brand_that_joins_later_makes_datasets_unmatchable_until_it_has_masked_them(
    pki: DemoPki, tmp_path: Path
) -> None:
    from partners import new_blind_key, read_blind_key

    lists = audiences(19, {"acme": 600, "brightmart": 500, "corvid": 450})
    keys = {brand: new_blind_key() for brand in ("acme", "brightmart")}
    data = two_mode_config(pki, tmp_path / "data", blind_uploaders=("acme", "brightmart"))
    config = write_toml(tmp_path / "cleanroom.toml", data)
    with served(pki, config) as running:
        upload_shared(running, lists, tmp_path / "files")
        for brand, key in keys.items():
            upload_blind(running, lists[brand], key, tmp_path / "files")
        mask_everything(running, keys, tmp_path / "journals")
        pair = (("acme", ("brightmart",), None), ("brightmart", ("acme",), SEGMENT))
        assert_same_reports(running, pair)  # two brands: a collaboration of two uploaders

        # corvid joins as an uploader (a reload, SIGHUP): both datasets wait for its hops.
        (blind,) = [c for c in data["collaborations"] if c["id"] == BLIND]
        blind["members"].append(member("corvid", "uploader", "analyst"))
        write_toml(config, data)
        running.signal(signal.SIGHUP)
        running.wait_for(lambda e: e.get("event") == "configuration reloaded", "the reload")
        for brand in keys:
            dataset = running.client(brand).get_dataset(dataset_in(BLIND, dataset_id(brand)))
            assert state_of(dataset) == (
                "MATCHING_STATE_MASKING",
                [partner_name("acme"), partner_name("brightmart")],
                [partner_name("corvid")],
            )
        with pytest.raises(PrivacyRuleError) as refused:
            running.client("brightmart").create_report(
                parent(BLIND), base=dataset_in(BLIND, dataset_id("brightmart")),
                others=[dataset_in(BLIND, dataset_id("acme"))],
            )  # fmt: skip
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        assert "corvid" in words(" ".join(refused.value.metadata.values())), refused.value.metadata
        assert "corvid" in refused.value.message
        hops = list(running.client("corvid").list_masking_hops(parent(BLIND)))
        assert sorted(h.dataset for h in hops) == [
            dataset_in(BLIND, dataset_id(b)) for b in ("acme", "brightmart")
        ]

        # corvid with the command line: a key, a masked upload, its hops.
        home, key_file = tmp_path / "corvid-home", tmp_path / "corvid.blind-key"
        blind_cli(running, "corvid", home, "blind-key", f"--collaboration={BLIND}",
                  f"--out={key_file}")  # fmt: skip
        assert key_file.stat().st_mode & 0o777 == 0o600
        # It never overwrites a key.
        refusal = blind_cli(running, "corvid", home, "blind-key", f"--collaboration={BLIND}",
                            f"--out={key_file}", code=2)  # fmt: skip
        assert "BLIND_KEY_FILE_EXISTS" in refusal
        keys["corvid"] = read_blind_key(key_file)
        source = lists["corvid"].file(tmp_path / "files", BLIND)
        blind_cli(running, "corvid", home, "upload", str(source),
                  f"--dataset-id={dataset_id('corvid')}", f"--blind-key={key_file}")  # fmt: skip
        corvid = running.client("corvid").get_dataset(dataset_in(BLIND, dataset_id("corvid")))
        assert state_of(corvid) == (
            "MATCHING_STATE_MASKING",
            [partner_name("corvid")],
            [partner_name("acme"), partner_name("brightmart")],
        )
        blind_cli(running, "corvid", home, "blind", "work", f"--blind-key={key_file}",
                  f"--collaboration={BLIND}")  # fmt: skip
        assert list(running.client("corvid").list_masking_hops(parent(BLIND))) == []
        assert_same_reports(running, pair)  # the old datasets are matchable again

        with pytest.raises(PrivacyRuleError) as refused:
            running.client("acme").create_report(
                parent(BLIND), base=dataset_in(BLIND, dataset_id("acme")),
                others=[dataset_in(BLIND, dataset_id("corvid"))],
            )  # fmt: skip
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        named = " ".join(refused.value.metadata.values())
        assert {"acme", "brightmart"} <= words(named), named

        mask_everything(running, keys, tmp_path / "journals")
        everyone = sorted(partner_name(b) for b in BRANDS)
        for brand in BRANDS:
            dataset = running.client(brand).get_dataset(dataset_in(BLIND, dataset_id(brand)))
            assert state_of(dataset) == ("MATCHING_STATE_MATCHABLE", everyone, [])
        assert_same_reports(running, QUESTIONS)
        ledger = loopback_connection(pki, "ledger", running.port)
        counted = functools.partial(served_calls, running)
        assert_masking_calls_logged(ledger, counted, tmp_path)
        _, metrics = running.ops("/metrics")
        written = [*running.lines, metrics]
        assert len(written) > 50  # a call event per call at least
    # Nothing the server wrote (its log lines, its metrics) holds a value in any form that
    # travels: digests, uploads, the matchable form, as bytes or as hex or base64 text.
    values: set[bytes] = set()
    for audience in lists.values():
        digests = {t: audience.digests(t) for t in TYPES}
        found = forms(digests, {audience.brand: keys[audience.brand]})
        values |= found["digest"] | found[audience.brand]
        for identifier_type, matrix in digests.items():
            values |= rows_of(group.mask_digests(product(keys.values()), matrix, identifier_type))
    pieces = {v[i : i + 8] for v in values for i in range(25)}
    for line in written:
        for text in (line.encode(), decoded_runs(line.encode())):
            assert not any(text[i : i + 8] in pieces for i in range(len(text) - 7)), line[:200]
    room = CleanRoom(load_config(config))
    try:
        assert_stored_exactly(room, lists, keys)
    finally:
        room.close()


def test_a_brand_that_leaves_strands_what_it_masked_and_completes_what_waited_for_it(
    pki: DemoPki, tmp_path: Path
) -> None:
    """An uploader leaves (a reload): a dataset that carries its mask can never be matched
    and its owner is told to upload it again; one that waited only for its hop is finished
    (laid out) and matches as the shared-secret mode does."""
    from partners import new_blind_key

    lists = audiences(20, {"acme": 500, "brightmart": 450, "corvid": 300})
    rng = np.random.default_rng(21)
    later = {
        "acme-late": Audience.drawn("acme", lists["acme"].people, rng, 400),
        "brightmart-new": Audience.drawn("brightmart", lists["brightmart"].people, rng, 420),
    }
    keys = {brand: new_blind_key() for brand in BRANDS}
    data = two_mode_config(pki, tmp_path / "data")
    config = write_toml(tmp_path / "cleanroom.toml", data)
    with served(pki, config) as running:
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        mask_everything(running, keys, tmp_path / "journals")
        late = later["acme-late"]
        for collaboration in (SHARED, BLIND):
            running.client("acme").upload(
                late.file(tmp_path / "late", collaboration), dataset_id="acme-late",
                blind_key=keys["acme"] if collaboration == BLIND else None,
            )  # fmt: skip
        from partners import work

        work(running.client("brightmart"), BLIND, keys["brightmart"], journal=tmp_path / "b")
        assert state(running, "acme-late")[2] == [partner_name("corvid")]

        # corvid leaves the collaboration.
        (blind,) = [c for c in data["collaborations"] if c["id"] == BLIND]
        blind["members"] = [m for m in blind["members"] if m["partner"] != "corvid"]
        write_toml(config, data)
        running.signal(signal.SIGHUP)
        running.wait_for(
            lambda e: (
                str(e.get("event", "")).startswith("masking complete")
                and "acme-late" in str(e.get("event"))
            ),
            "acme-late laid out once corvid left",
        )
        assert state(running, "acme-late") == (
            "MATCHING_STATE_MATCHABLE", [partner_name("acme"), partner_name("brightmart")], []
        )  # fmt: skip
        with pytest.raises(PrivacyRuleError) as refused:
            running.client("acme").create_report(
                parent(BLIND), base=dataset_in(BLIND, "acme-late"),
                others=[dataset_in(BLIND, dataset_id("brightmart"))],
            )  # fmt: skip
        assert refused.value.reason == "DATASET_NOT_MATCHABLE"
        assert dataset_id("brightmart") in refused.value.message
        assert "upload" in refused.value.message  # they must be uploaded again
        assert state(running, dataset_id("brightmart"))[0] == "MATCHING_STATE_MASKING"

        # brightmart uploads again; acme masks it; both modes report the same.
        fresh = later["brightmart-new"]
        for collaboration in (SHARED, BLIND):
            running.client("brightmart").upload(
                fresh.file(tmp_path / "new", collaboration), dataset_id="brightmart-new",
                blind_key=keys["brightmart"] if collaboration == BLIND else None,
            )  # fmt: skip
        two = {b: keys[b] for b in ("acme", "brightmart")}
        mask_everything(running, two, tmp_path / "journals")
        reports = [
            figures(running.client("acme").create_report(
                parent(collaboration), base=dataset_in(collaboration, "acme-late"),
                others=[dataset_in(collaboration, "brightmart-new")], segment_column=segment,
            ))
            for segment in (None, SEGMENT)
            for collaboration in (SHARED, BLIND)
        ]  # fmt: skip
        assert reports[0] == reports[1]
        assert reports[2] == reports[3]
        assert reports[0]["released"] > 0


def state(running: ServedProcess, dataset: str) -> tuple[str, list[str], list[str]]:
    """A double-blind dataset's state as its owner sees it."""
    owner = dataset.split("-", 1)[0]
    return state_of(running.client(owner).get_dataset(dataset_in(BLIND, dataset)))


def test_two_brands_masking_one_dataset_at_once_lose_neither_mask(
    pki: DemoPki, tmp_path: Path
) -> None:
    """Two brands take hops of the same dataset at once: the one that completes second
    was blinded from the form before the first one's mask, so it must not be applied (it
    would drop that mask); it is superseded, and taken again later."""
    from partners import new_blind_key

    lists = audiences(22, {"acme": 300, "brightmart": 300, "corvid": 300})
    keys = {brand: new_blind_key() for brand in BRANDS}
    with serving(pki, two_mode_config(pki, tmp_path / "data")) as running:
        upload_shared(running, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        acme, brightmart = (
            HopWorker(b, keys[b], running.connection(b)) for b in ("acme", "brightmart")
        )
        try:
            first = acme.start(hop_name(BLIND, dataset_id("corvid"), "acme"))
            second = brightmart.start(hop_name(BLIND, dataset_id("corvid"), "brightmart"))
            acme.complete(first)
            with pytest.raises(grpc.RpcError) as refused:
                brightmart.complete(second)
            assert reason_of(refused.value) == "MASKING_HOP_ATTEMPT_SUPERSEDED"
            corvid = running.client("corvid").get_dataset(dataset_in(BLIND, dataset_id("corvid")))
            assert state_of(corvid) == (
                "MATCHING_STATE_MASKING",
                [partner_name("acme"), partner_name("corvid")],
                [partner_name("brightmart")],
            )
        finally:
            acme.close()
            brightmart.close()
        mask_everything(running, keys, tmp_path / "journals")
        assert_matchable_and_exact(running, lists, keys)
        assert_same_reports(running, QUESTIONS[:2])


def test_blind_work_takes_a_hop_again_when_another_brands_hop_got_there_first(
    pki: DemoPki, tmp_path: Path
) -> None:
    """While brightmart's `work` masks corvid's dataset, acme's hop over it is applied:
    brightmart's result is superseded, and the same pass takes the hop again, so that one
    run of `blind work` leaves nothing of brightmart's pending."""
    from partners import new_blind_key, work

    lists = audiences(24, {"acme": 300, "brightmart": 300, "corvid": 300})
    keys = {brand: new_blind_key() for brand in BRANDS}
    corvids = hop_name(BLIND, dataset_id("corvid"), "acme")
    with serving(pki, two_mode_config(pki, tmp_path / "data")) as running:
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        acme = HopWorker("acme", keys["acme"], running.connection("acme"))
        brightmart = running.client("brightmart")
        completions: list[str] = []

        class FirstCompletionLoses:
            """brightmart's client; acme completes its hop just before brightmart's first."""

            def __getattr__(self, name: str) -> object:
                return getattr(brightmart, name)

            def complete_masking_hop(self, name: str, **kwargs: object) -> object:
                corvid_hop = name.startswith(dataset_in(BLIND, dataset_id("corvid")))
                if corvid_hop and not completions:
                    acme.complete(acme.start(corvids))
                    completions.append(name)
                return brightmart.complete_masking_hop(name, **kwargs)

        try:
            summary = work(
                FirstCompletionLoses(), BLIND, keys["brightmart"], journal=tmp_path / "j"
            )
        finally:
            acme.close()
        assert summary.superseded == 1
        assert not list(brightmart.list_masking_hops(parent(BLIND)))
        corvid = running.client("corvid").get_dataset(dataset_in(BLIND, dataset_id("corvid")))
        assert sorted(state_of(corvid)[1]) == [partner_name(b) for b in BRANDS]


def test_a_repeated_person_keeps_the_first_row_of_the_file_in_both_modes(
    pki: DemoPki, tmp_path: Path
) -> None:
    """A file that lists a person twice (another row, another tier): both modes must keep
    the first row's digest (SPEC section 3), so reports split by segment agree."""
    from partners import new_blind_key

    lists = audiences(23, {"acme": 400, "brightmart": 400, "corvid": 300})
    first = lists["acme"]
    again = first.rows[:60]  # the same people, once more at the end, in another tier
    lists["acme"] = Audience(
        "acme",
        first.people,
        np.concatenate([first.rows, again]),
        np.concatenate([first.has_phone, ~first.has_phone[:60]]),
        first.tiers + tuple("silver" if t == "gold" else "gold" for t in first.tiers[:60]),
    )
    keys = {brand: new_blind_key() for brand in BRANDS}
    with serving(pki, two_mode_config(pki, tmp_path / "data")) as running:
        upload_shared(running, lists, tmp_path / "files")
        for brand in BRANDS:
            upload_blind(running, lists[brand], keys[brand], tmp_path / "files")
        mask_everything(running, keys, tmp_path / "journals")
        assert_same_reports(running, [("acme", ("brightmart", "corvid"), SEGMENT)])
