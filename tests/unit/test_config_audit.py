"""The query log's settings: retired verifier keys, witnesses and their quorum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cleanroom.config import Witness, parse_config
from cleanroom.errors import ConfigError
from cleanroom.proofs.cosignature import WitnessSigner
from cleanroom.proofs.signed_note import NoteSigner
from tests.unit.test_config import changed

WITNESS = WitnessSigner.generate("witness.acme.test").verifier_key
OLD_KEY = NoteSigner.generate("cleanroom.test").verifier_key


def parse(data: dict[str, Any]) -> Any:
    return parse_config(data, base_dir=Path("/etc/cleanroom"))


def test_witnesses_and_quorum() -> None:
    data = changed("collaborations.0.witnesses", [{"partner": "acme", "public_key": WITNESS}])
    collaboration = parse(data).collaborations["spring"]
    assert collaboration.witnesses == (Witness("acme", WITNESS),)
    assert collaboration.witness_quorum == 1  # all of them, unless said
    plain = parse(changed("server.listen", "127.0.0.1:0")).collaborations["spring"]
    assert (plain.witnesses, plain.witness_quorum) == ((), 0)


@pytest.mark.parametrize(
    ("witnesses", "quorum", "key", "message"),
    [
        ([{"partner": "ops", "public_key": WITNESS}], None, "witnesses[0].partner", "not a member"),
        ([{"partner": "acme", "public_key": OLD_KEY}], None, "witnesses[0].public_key",
         "cosignature/v1"),
        ([{"partner": "acme", "public_key": WITNESS}] * 2, None, "witnesses", "once"),
        ([{"partner": "acme", "public_key": WITNESS}], 2, "witness_quorum", "0 to 1"),
        ([{"partner": "acme"}], None, "witnesses[0].public_key", "missing"),
    ],
)  # fmt: skip
def test_bad_witness_settings_name_their_key(
    witnesses: list[dict[str, str]], quorum: int | None, key: str, message: str
) -> None:
    data = changed("collaborations.0.witnesses", witnesses)
    if quorum is not None:
        data["collaborations"][0]["witness_quorum"] = quorum
    with pytest.raises(ConfigError, match=message) as error:
        parse(data)
    assert error.value.key == f"collaborations[0].{key}"


def test_previous_verifier_keys() -> None:
    data = changed("server.audit.previous_verifier_keys", [OLD_KEY])
    assert parse(data).server.audit_previous_verifier_keys == (OLD_KEY,)
    with pytest.raises(ConfigError, match="verifier key") as error:
        parse(changed("server.audit.previous_verifier_keys", ["nonsense"]))
    assert error.value.key == "server.audit.previous_verifier_keys"
