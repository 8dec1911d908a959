"""cleanroom.group.ristretto255: published vectors, then the group's laws as properties.

Vectors are copied from the RFCs (sections named beside each); the properties keep
their examples few, since each multiplication costs about 100 µs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanroom.group import ristretto255 as group

BASE_POINT = bytes.fromhex("e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76")

# RFC 9496 Appendix A.1: the encodings of 0·B, 1·B, ..., 15·B.
MULTIPLES_OF_GENERATOR = [
    bytes.fromhex(encoding)
    for encoding in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
        "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
        "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
        "da80862773358b466ffadfe0b3293ab3d9fd53c5ea6c955358f568322daf6a57",
        "e882b131016b52c1d3337080187cf768423efccbb517bb495ab812c4160ff44e",
        "f64746d3c92b13050ed8d80236a7f0007c3b3f962f5ba793d19a601ebb1df403",
        "44f53520926ec81fbd5a387845beb7df85a96a24ece18738bdcfa6a7822a176d",
        "903293d8f2287ebe10e2374dc1a53e0bc887e592699f02d077d5263cdd55601c",
        "02622ace8f7303a31cafc63f8fc48fdc16e1c8c8d234b2f0d6685282a9076031",
        "20706fd788b2720a1ed2a5dad4952b01f413bcf0e7564de8cdc816689e2db95f",
        "bce83f8ba5dd2fa572864c24ba1810f9522bc6004afe95877ac73241cafdab42",
        "e4549ee16b9aa03099ca208c67adafcafa4c3f3e4e5303de6026e3ca8ff84460",
        "aa52e000df2e16f55fb1032fc33bc42742dad6bd5a8fc0be0167436c5948501f",
        "46376b80f409b29dc2b5f6f0c52591990896e5716f41477cd30085ab7f10301e",
        "e0c418f7c8d9c4cdd7395b93ea124f3ad99021bb681dfc3302a9d99a2e53e64e",
    )
]

# RFC 9496 Appendix A.2: encodings every decoder must refuse.
INVALID_ENCODINGS = [
    bytes.fromhex(encoding)
    for encoding in (
        # Non-canonical field encodings.
        "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        # Negative field elements.
        "0100000000000000000000000000000000000000000000000000000000000000",
        "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ed57ffd8c914fb201471d1c3d245ce3c746fcbe63a3679d51b6a516ebebe0e20",
        "c34c4e1826e5d403b78e246e88aa051c36ccf0aafebffe137d148a2bf9104562",
        "c940e5a4404157cfb1628b108db051a8d439e1a421394ec4ebccb9ec92a8ac78",
        "47cfc5497c53dc8e61c91d17fd626ffb1c49e2bca94eed052281b510b1117a24",
        "f1c6165d33367351b0da8f6e4511010c68174a03b6581212c71c0e1d026c3c72",
        "87260f7a2f12495118360f02c26a470f450dadf34a413d21042b43b9d93e1309",
        # Non-square x^2.
        "26948d35ca62e643e26a83177332e6b6afeb9d08e4268b650f1f5bbd8d81d371",
        "4eac077a713c57b4f4397629a4145982c661f48044dd3f96427d40b147d9742f",
        "de6a7b00deadc788eb6b6c8d20c0ae96c2f2019078fa604fee5b87d6e989ad7b",
        "bcab477be20861e01e4a0e295284146a510150d9817763caf1a6f4b422d67042",
        "2a292df7e32cababbd9de088d1d1abec9fc0440f637ed2fba145094dc14bea08",
        "f4a9e534fc0d216c44b218fa0c42d99635a0127ee2e53c712f70609649fdff22",
        "8268436f8c4126196cf64b3c7ddbda90746a378625f9813dd9b8457077256731",
        "2810e5cbc2cc4d4eece54f61c6f69758e289aa7ab440b3cbeaa21995c2f4232b",
        # Negative xy value.
        "3eb858e78f5a7254d8c9731174a94f76755fd3941c0ac93735c07ba14579630e",
        "a45fdc55c76448c049a1ab33f17023edfb2be3581e9c7aade8a6125215e04220",
        "d483fe813c6ba647ebbfd3ec41adca1c6130c2beeee9d9bf065c8d151c5f396e",
        "8a2e1d30050198c65a54483123960ccc38aef6848e1ec8f5f780e8523769ba32",
        "32888462f8b486c68ad7dd9610be5192bbeaf3b443951ac1a8118419d9fa097b",
        "227142501b9d4355ccba290404bde41575b037693cef1f438c47f8fbf35d1165",
        "5c37cc491da847cfeb9281d407efc41e15144c876e0170b499a96a22ed31e01e",
        "445425117cb8c90edcbc7c1cc0e74f747f2c1efa5630a967c64f287792a48a4b",
        # s = -1, which causes y = 0.
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
]

# RFC 9496 Appendix A.3: the one-way map from 64 uniform bytes.
ONE_WAY_MAP = [
    (bytes.fromhex(uniform), bytes.fromhex(element))
    for uniform, element in (
        (
            "5d1be09e3d0c82fc538112490e35701979d99e06ca3e2b5b54bffe8b4dc772c1"
            "4d98b696a1bbfb5ca32c436cc61c16563790306c79eaca7705668b47dffe5bb6",
            "3066f82a1a747d45120d1740f14358531a8f04bbffe6a819f86dfe50f44a0a46",
        ),
        (
            "f116b34b8f17ceb56e8732a60d913dd10cce47a6d53bee9204be8b44f6678b27"
            "0102a56902e2488c46120e9276cfe54638286b9e4b3cdb470b542d46c2068d38",
            "f26e5b6f7d362d2d2a94c5d0e7602cb4773c95a2e5c31a64f133189fa76ed61b",
        ),
        (
            "8422e1bbdaab52938b81fd602effb6f89110e1e57208ad12d9ad767e2e25510c"
            "27140775f9337088b982d83d7fcf0b2fa1edffe51952cbe7365e95c86eaf325c",
            "006ccd2a9e6867e6a2c5cea83d3302cc9de128dd2a9a57dd8ee7b9d7ffe02826",
        ),
        (
            "ac22415129b61427bf464e17baee8db65940c233b98afce8d17c57beeb7876c2"
            "150d15af1cb1fb824bbd14955f2b57d08d388aab431a391cfc33d5bafb5dbbaf",
            "f8f0c87cf237953c5890aec3998169005dae3eca1fbb04548c635953c817f92a",
        ),
        (
            "165d697a1ef3d5cf3c38565beefcf88c0f282b8e7dbd28544c483432f1cec767"
            "5debea8ebb4e5fe7d6f6e5db15f15587ac4d4d4a1de7191e0c1ca6664abcc413",
            "ae81e7dedf20a497e10c304a765c1767a42d6e06029758d2d7e8ef7cc4c41179",
        ),
        (
            "a836e6c9a9ca9f1e8d486273ad56a78c70cf18f0ce10abb1c7172ddd605d7fd2"
            "979854f47ae1ccf204a33102095b4200e5befc0465accc263175485f0e17ea5c",
            "e2705652ff9f5e44d3e841bf1c251cf7dddb77d140870d1ab2ed64f1a9ce8628",
        ),
        (
            "2cdc11eaeb95daf01189417cdddbf95952993aa9cb9c640eb5058d09702c7462"
            "2c9965a697a3b345ec24ee56335b556e677b30e6f90ac77d781064f866a3c982",
            "80bd07262511cdde4863f8a7434cef696750681cb9510eea557088f76d9e5065",
        ),
    )
]

# RFC 9380 Appendix K.3: expand_message_xmd(SHA-512).
XMD_DST = b"QUUX-V01-CS02-with-expander-SHA512-256"
XMD_MESSAGES = {
    "empty": b"",
    "abc": b"abc",
    "abcdef0123456789": b"abcdef0123456789",
    "q128": b"q128_" + b"q" * 128,
    "a512": b"a512_" + b"a" * 512,
}
XMD_VECTORS = [
    ("empty", 0x20, "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"),
    ("abc", 0x20, "0da749f12fbe5483eb066a5f595055679b976e93abe9be6f0f6318bce7aca8dc"),
    (
        "abcdef0123456789",
        0x20,
        "087e45a86e2939ee8b91100af1583c4938e0f5fc6c9db4b107b83346bc967f58",
    ),
    ("q128", 0x20, "7336234ee9983902440f6bc35b348352013becd88938d2afec44311caf8356b3"),
    ("a512", 0x20, "57b5f7e766d5be68a6bfe1768e3c2b7f1228b3e4b3134956dd73a59b954c66f4"),
    (
        "empty",
        0x80,
        "41b037d1734a5f8df225dd8c7de38f851efdb45c372887be655212d07251b921"
        "b052b62eaed99b46f72f2ef4cc96bfaf254ebbbec091e1a3b9e4fb5e5b619d2e"
        "0c5414800a1d882b62bb5cd1778f098b8eb6cb399d5d9d18f5d5842cf5d13d7e"
        "b00a7cff859b605da678b318bd0e65ebff70bec88c753b159a805d2c89c55961",
    ),
    (
        "abc",
        0x80,
        "7f1dddd13c08b543f2e2037b14cefb255b44c83cc397c1786d975653e36a6b11"
        "bdd7732d8b38adb4a0edc26a0cef4bb45217135456e58fbca1703cd6032cb134"
        "7ee720b87972d63fbf232587043ed2901bce7f22610c0419751c065922b48843"
        "1851041310ad659e4b23520e1772ab29dcdeb2002222a363f0c2b1c972b3efe1",
    ),
    (
        "abcdef0123456789",
        0x80,
        "3f721f208e6199fe903545abc26c837ce59ac6fa45733f1baaf0222f8b7acb04"
        "24814fcb5eecf6c1d38f06e9d0a6ccfbf85ae612ab8735dfdf9ce84c372a77c8"
        "f9e1c1e952c3a61b7567dd0693016af51d2745822663d0c2367e3f4f0bed827f"
        "eecc2aaf98c949b5ed0d35c3f1023d64ad1407924288d366ea159f46287e61ac",
    ),
    (
        "q128",
        0x80,
        "b799b045a58c8d2b4334cf54b78260b45eec544f9f2fb5bd12fb603eaee70db7"
        "317bf807c406e26373922b7b8920fa29142703dd52bdf280084fb7ef69da78af"
        "df80b3586395b433dc66cde048a258e476a561e9deba7060af40adf30c64249c"
        "a7ddea79806ee5beb9a1422949471d267b21bc88e688e4014087a0b592b695ed",
    ),
    (
        "a512",
        0x80,
        "05b0bfef265dcee87654372777b7c44177e2ae4c13a27f103340d9cd11c86cb2"
        "426ffcad5bd964080c2aee97f03be1ca18e30a1f14e27bc11ebbd650f305269c"
        "c9fb1db08bf90bfc79b42a952b46daf810359e7bc36452684784a64952c343c5"
        "2e5124cd1f71d474d5197fefc571a92929c9084ffe1112cf5eea5192ebff330b",
    ),
]

# RFC 9497 Appendix A.1.1 (OPRF(ristretto255, SHA-512), OPRF mode): HashToGroup is
# hash_to_ristretto255 = one_way_map(expand_message_xmd(SHA-512, input, DST, 64)) with
# DST "HashToGroup-" || contextString, and BlindedElement = Blind · HashToGroup(Input),
# EvaluationElement = skSm · BlindedElement.
OPRF_DST = b"HashToGroup-OPRFV1-\x00-ristretto255-SHA512"
OPRF_SECRET_KEY = bytes.fromhex("5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e")
OPRF_BLIND = bytes.fromhex("64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706")
OPRF_VECTORS = [
    (
        bytes.fromhex("00"),
        bytes.fromhex("609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c"),
        bytes.fromhex("7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e"),
    ),
    (
        bytes.fromhex("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"),
        bytes.fromhex("da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418"),
        bytes.fromhex("b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25"),
    ),
]

IDENTITY = bytes(32)
GROUP_ORDER_BYTES = group.GROUP_ORDER.to_bytes(32, "little")


def small_scalar(k: int) -> bytes:
    return k.to_bytes(32, "little")


def rows(encodings: list[bytes]) -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(encodings), dtype=np.uint8).reshape(-1, 32).copy()


def random_elements(count: int, seed: int) -> npt.NDArray[np.uint8]:
    """Valid elements, cheaply: the one-way map of seeded uniform bytes."""
    uniform = np.random.default_rng(seed).bytes(64 * count)
    return rows([group.element_from_uniform(uniform[i * 64 : (i + 1) * 64]) for i in range(count)])


# --- Vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(1, 16))
def test_small_multiples_of_the_generator_match_rfc_9496(k: int) -> None:
    expected = MULTIPLES_OF_GENERATOR[k]
    assert group.multiply_element(small_scalar(k), BASE_POINT) == expected
    assert group.is_valid_element(expected)
    assert bytes(group.multiply(small_scalar(k), rows([BASE_POINT]))[0]) == expected


def test_all_small_multiples_at_once_match_rfc_9496() -> None:
    bases = rows([BASE_POINT] * 15)
    # One scalar per call; the batch call must agree with the vector for each.
    for k in range(1, 16):
        products = group.multiply(small_scalar(k), bases, workers=2)
        assert {bytes(row) for row in products} == {MULTIPLES_OF_GENERATOR[k]}
    assert group.valid_elements(rows(MULTIPLES_OF_GENERATOR[1:])).all()


def test_the_identity_zero_times_b_is_refused_everywhere() -> None:
    """RFC 9496 A.1 lists 0·B (the identity); libsodium cannot multiply it, so we refuse it."""
    assert MULTIPLES_OF_GENERATOR[0] == IDENTITY
    assert not group.is_valid_element(IDENTITY)
    assert group.valid_elements(rows([BASE_POINT, IDENTITY])).tolist() == [True, False]
    with pytest.raises(group.InvalidElementError) as raised:
        group.multiply_element(small_scalar(3), IDENTITY)
    assert raised.value.index == 0
    # The group order times anything is the identity: the scalar is refused before that.
    with pytest.raises(ValueError, match="scalar"):
        group.multiply_element(GROUP_ORDER_BYTES, BASE_POINT)


@pytest.mark.parametrize("encoding", INVALID_ENCODINGS, ids=lambda e: e.hex()[:8])
def test_invalid_encodings_of_rfc_9496_are_refused(encoding: bytes) -> None:
    assert not group.is_valid_element(encoding)
    with pytest.raises(group.InvalidElementError) as raised:
        group.multiply_element(small_scalar(5), encoding)
    assert raised.value.index == 0


def test_invalid_encodings_are_refused_in_a_batch_at_their_index() -> None:
    assert len(INVALID_ENCODINGS) == 29
    valid = random_elements(len(INVALID_ENCODINGS), seed=1)
    mixed = np.empty((2 * len(INVALID_ENCODINGS), 32), dtype=np.uint8)
    mixed[0::2] = valid
    mixed[1::2] = rows(INVALID_ENCODINGS)
    assert group.valid_elements(mixed).tolist() == [True, False] * len(INVALID_ENCODINGS)
    assert not group.valid_elements(rows(INVALID_ENCODINGS), workers=2).any()
    for position, encoding in enumerate(INVALID_ENCODINGS):
        batch = valid.copy()
        batch[position] = np.frombuffer(encoding, dtype=np.uint8)
        with pytest.raises(group.InvalidElementError) as raised:
            group.multiply(small_scalar(7), batch)
        assert raised.value.index == position
        assert str(position) in str(raised.value)
        assert encoding.hex() not in str(raised.value)


@pytest.mark.parametrize(("uniform", "element"), ONE_WAY_MAP, ids=lambda v: v.hex()[:8])
def test_one_way_map_matches_rfc_9496(uniform: bytes, element: bytes) -> None:
    assert group.element_from_uniform(uniform) == element
    assert group.is_valid_element(element)


@pytest.mark.parametrize("length", [0, 32, 63, 65, 128])
def test_one_way_map_takes_exactly_64_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="64"):
        group.element_from_uniform(bytes(length))


@pytest.mark.parametrize(("message", "length", "expected"), XMD_VECTORS)
def test_expand_message_xmd_matches_rfc_9380(message: str, length: int, expected: str) -> None:
    assert group.expand_message_xmd(XMD_MESSAGES[message], XMD_DST, length).hex() == expected


def test_expand_message_xmd_refuses_what_rfc_9380_aborts_on() -> None:
    with pytest.raises(ValueError, match="too long"):
        group.expand_message_xmd(b"", XMD_DST, 255 * 64 + 1)
    with pytest.raises(ValueError, match="too long"):
        group.expand_message_xmd(b"", b"d" * 256, 32)
    assert len(group.expand_message_xmd(b"", b"d" * 255, 255 * 64)) == 255 * 64


@pytest.mark.parametrize(("message", "blinded", "evaluated"), OPRF_VECTORS)
def test_hash_to_ristretto255_matches_rfc_9497(
    message: bytes, blinded: bytes, evaluated: bytes
) -> None:
    element = group.element_from_uniform(group.expand_message_xmd(message, OPRF_DST, 64))
    assert group.multiply_element(OPRF_BLIND, element) == blinded
    assert group.multiply_element(OPRF_SECRET_KEY, blinded) == evaluated


def test_hash_to_group_is_the_rfc_9380_construction_with_our_domain() -> None:
    digest = bytes(range(32))
    uniform = group.expand_message_xmd(digest, b"cleanroom/v1/double-blind/email", 64)
    assert group.hash_to_group(digest, "email") == group.element_from_uniform(uniform)


# --- Properties ----------------------------------------------------------------------------

# Scalars drawn by hypothesis (so failures shrink and replay), 1 and L - 1 included.
scalars = st.integers(1, group.GROUP_ORDER - 1).map(lambda k: k.to_bytes(32, "little"))
digests = st.binary(min_size=32, max_size=32)
identifier_types = st.sampled_from(["email", "phone", "maid", "customer_id"])
few = settings(max_examples=15, deadline=None)


@few
@given(k1=scalars, k2=scalars, digest=digests)
def test_multiplication_commutes(k1: bytes, k2: bytes, digest: bytes) -> None:
    point = group.hash_to_group(digest, "email")
    assert group.multiply_element(k1, group.multiply_element(k2, point)) == group.multiply_element(
        k2, group.multiply_element(k1, point)
    )
    assert group.multiply_element(group.multiply_scalars(k1, k2), point) == (
        group.multiply_element(k1, group.multiply_element(k2, point))
    )


@few
@given(k=scalars, digest=digests)
def test_multiplying_by_the_inverse_gives_back(k: bytes, digest: bytes) -> None:
    point = group.hash_to_group(digest, "phone")
    masked = group.multiply_element(k, point)
    assert (masked == point) == (k == small_scalar(1))
    assert group.multiply_element(group.invert_scalar(k), masked) == point
    assert group.multiply_scalars(k, group.invert_scalar(k)) == small_scalar(1)


@few
@given(k=scalars, batch=st.lists(digests, max_size=6), identifier_type=identifier_types)
def test_mask_digests_is_multiply_after_hash_to_group(
    k: bytes, batch: list[bytes], identifier_type: str
) -> None:
    source = rows(batch)
    points = rows([group.hash_to_group(digest, identifier_type) for digest in batch])
    expected = group.multiply(k, points)
    assert np.array_equal(group.mask_digests(k, source, identifier_type), expected)
    assert np.array_equal(group.mask_digests(k, source, identifier_type, workers=2), expected)
    assert group.valid_elements(expected).all()


@few
@given(digest=digests, types=st.lists(identifier_types, min_size=2, max_size=2, unique=True))
def test_identifier_types_are_separate_domains(digest: bytes, types: list[str]) -> None:
    first, second = (group.hash_to_group(digest, t) for t in types)
    assert first != second
    assert group.is_valid_element(first)
    assert group.is_valid_element(second)


def test_equal_digests_give_equal_elements_and_distinct_digests_distinct_ones() -> None:
    batch = [bytes([i]) * 32 for i in range(50)]
    elements = {group.hash_to_group(digest, "email") for digest in batch}
    assert len(elements) == 50
    assert group.hash_to_group(batch[3], "email") == group.hash_to_group(bytes(batch[3]), "email")


@pytest.mark.parametrize("count", [0, 1, 1023, 1025, 5000])
@pytest.mark.parametrize("workers", [1, 2])
def test_batches_equal_one_at_a_time(count: int, workers: int) -> None:
    k = group.new_scalar()
    elements = random_elements(count, seed=count)
    products = group.multiply(k, elements, workers=workers)
    assert products.shape == (count, 32)
    assert group.valid_elements(products, workers=workers).all()
    # Checking every row one at a time would cost as much again: check a spread sample,
    # and the slice boundaries where threads hand over.
    sample = sorted({*range(0, count, max(1, count // 40)), *range(max(0, count - 3), count)})
    for index in sample:
        assert bytes(products[index]) == group.multiply_element(k, bytes(elements[index]))
    digests_ = np.random.default_rng(count).integers(0, 256, (count, 32), dtype=np.uint8)
    masked = group.mask_digests(k, digests_, "email", workers=workers)
    for index in sample:
        expected = group.multiply_element(k, group.hash_to_group(bytes(digests_[index]), "email"))
        assert bytes(masked[index]) == expected


def test_batches_do_not_depend_on_the_number_of_workers() -> None:
    k = group.new_scalar()
    elements = random_elements(2100, seed=7)
    assert np.array_equal(
        group.multiply(k, elements, workers=1), group.multiply(k, elements, workers=2)
    )
    digests_ = elements  # any 32-byte rows are digests
    assert np.array_equal(
        group.mask_digests(k, digests_, "maid", workers=1),
        group.mask_digests(k, digests_, "maid", workers=2),
    )
    broken = elements.copy()
    broken[::3] = 0xFF
    assert np.array_equal(
        group.valid_elements(broken, workers=1), group.valid_elements(broken, workers=2)
    )


def test_the_first_bad_index_is_reported_when_bad_ones_are_spread_over_threads() -> None:
    count = 4100  # enough for 2 threads and 8 slices
    elements = random_elements(count, seed=3)
    bad = [1500, 1501, 2600, 4099]
    for index, encoding in zip(bad, INVALID_ENCODINGS, strict=False):
        elements[index] = np.frombuffer(encoding, dtype=np.uint8)
    elements[3000] = 0  # the identity, in a later slice
    for workers in (1, 2):
        with pytest.raises(group.InvalidElementError) as raised:
            group.multiply(group.new_scalar(), elements, workers=workers)
        assert raised.value.index == 1500
    assert np.flatnonzero(~group.valid_elements(elements, workers=2)).tolist() == [
        1500,
        1501,
        2600,
        3000,
        4099,
    ]
    elements[4099] = elements[0]
    elements[1500:1502] = elements[0]
    elements[2600] = elements[0]
    with pytest.raises(group.InvalidElementError) as raised:
        group.multiply(group.new_scalar(), elements, workers=2)
    assert raised.value.index == 3000


def test_the_input_array_is_left_alone() -> None:
    elements = random_elements(10, seed=5)
    before = elements.copy()
    group.multiply(group.new_scalar(), elements)
    group.mask_digests(group.new_scalar(), elements, "email")
    group.valid_elements(elements)
    assert np.array_equal(elements, before)


def test_new_scalars_are_never_zero_and_canonical() -> None:
    for _ in range(200):
        scalar = group.new_scalar()
        assert len(scalar) == 32
        assert group.is_valid_scalar(scalar)
        assert 0 < int.from_bytes(scalar, "little") < group.GROUP_ORDER


def test_new_scalar_draws_again_when_libsodium_gives_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter([bytes(32), bytes(32), small_scalar(9)])
    monkeypatch.setattr(
        group.pysodium, "crypto_core_ristretto255_scalar_random", lambda: next(draws)
    )
    assert group.new_scalar() == small_scalar(9)


def test_new_scalars_differ() -> None:
    assert len({group.new_scalar() for _ in range(100)}) == 100


BAD_SCALARS = [
    bytes(32),  # zero
    bytes(31),  # too short
    bytes(33),
    small_scalar(1)[:31],
    b"",
    GROUP_ORDER_BYTES,  # L: a multiple of the order, so zero
    (group.GROUP_ORDER + 1).to_bytes(32, "little"),  # not canonical
    b"\xff" * 32,  # libsodium would drop the top bit and not reduce
]


@pytest.mark.parametrize("scalar", BAD_SCALARS, ids=lambda s: f"{len(s)}:{s.hex()[:8]}")
def test_invalid_scalars_are_refused_everywhere(scalar: bytes) -> None:
    assert not group.is_valid_scalar(scalar)
    elements = rows([BASE_POINT])
    with pytest.raises(ValueError, match="scalar"):
        group.multiply(scalar, elements)
    with pytest.raises(ValueError, match="scalar"):
        group.multiply(scalar, elements[:0])
    with pytest.raises(ValueError, match="scalar"):
        group.multiply_element(scalar, BASE_POINT)
    with pytest.raises(ValueError, match="scalar"):
        group.mask_digests(scalar, elements, "email")
    with pytest.raises(ValueError, match="scalar"):
        group.invert_scalar(scalar)
    with pytest.raises(ValueError, match="scalar"):
        group.multiply_scalars(scalar, small_scalar(2))
    with pytest.raises(ValueError, match="scalar"):
        group.multiply_scalars(small_scalar(2), scalar)


def test_the_largest_canonical_scalar_is_minus_one() -> None:
    minus_one = (group.GROUP_ORDER - 1).to_bytes(32, "little")
    assert group.is_valid_scalar(minus_one)
    negated = group.multiply_element(minus_one, BASE_POINT)
    assert negated != BASE_POINT
    assert group.multiply_element(minus_one, negated) == BASE_POINT


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_encodings_of_the_wrong_length_are_not_elements(length: int) -> None:
    encoding = (BASE_POINT * 3)[:length]
    assert not group.is_valid_element(encoding)
    with pytest.raises(group.InvalidElementError):
        group.multiply_element(small_scalar(2), encoding)
