"""ristretto255 (RFC 9496) through libsodium: hashing digests to the group, scalars, masking.

Every group operation is a libsodium call (through pysodium, which loads the system's
libsodium). The batch operations take an `(n, 32)` array of encodings and split it over
threads, one per core: each libsodium call releases the GIL, so the only Python per
element is the call itself.

A digest `d` of identifier type `t` maps to `P(d) = from_uniform(expand_message_xmd(SHA-512,
d, "cleanroom/v1/double-blind/" + t, 64))` (RFC 9380 section 5.3.1, then RFC 9496's one-way
map). Masking multiplies by a brand's scalar; blinding, by the server's.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pysodium

ELEMENT_BYTES = 32
SCALAR_BYTES = 32
UNIFORM_BYTES = 64
DST_PREFIX = "cleanroom/v1/double-blind/"
_SHA512_BLOCK = 128
_SHA512_BYTES = 64
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
"""The order `L` of the group (RFC 9496 section 4.1); scalars are canonical below it."""
_IDENTITY = bytes(ELEMENT_BYTES)

Elements = npt.NDArray[np.uint8]
"""Group elements as an `(n, 32)` array of their encodings."""

_sodium = pysodium.sodium
_Binary = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
_Unary = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_Check = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


def _function(name: str, prototype: Any) -> Callable[..., int]:
    """A libsodium function called with raw addresses, so that a batch makes no buffers."""
    address = ctypes.cast(getattr(_sodium, name), ctypes.c_void_p).value
    function: Callable[..., int] = prototype(address)
    return function


_scalarmult = _function("crypto_scalarmult_ristretto255", _Binary)
_from_hash = _function("crypto_core_ristretto255_from_hash", _Unary)
_is_valid_point = _function("crypto_core_ristretto255_is_valid_point", _Check)


class InvalidElementError(ValueError):
    """An encoding that is not a ristretto255 element, or an element that must not occur."""

    def __init__(self, index: int) -> None:
        super().__init__(f"element {index} is not a valid ristretto255 encoding")
        self.index = index


def expand_message_xmd(message: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512: `length` uniform bytes from `message`."""
    blocks = -(-length // _SHA512_BYTES)
    if blocks > 255 or length > 65535 or len(dst) > 255:
        raise ValueError("expand_message_xmd: length or DST too long")
    dst_prime = dst + bytes([len(dst)])
    b_0 = hashlib.sha512(
        bytes(_SHA512_BLOCK) + message + length.to_bytes(2, "big") + b"\x00" + dst_prime
    ).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    out = [b_i]
    for i in range(2, blocks + 1):
        mixed = bytes(x ^ y for x, y in zip(b_0, b_i, strict=True))
        b_i = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        out.append(b_i)
    return b"".join(out)[:length]


def element_from_uniform(uniform: bytes) -> bytes:
    """RFC 9496's one-way map from 64 uniform bytes to an element."""
    if len(uniform) != UNIFORM_BYTES:
        raise ValueError(f"the one-way map takes {UNIFORM_BYTES} bytes, not {len(uniform)}")
    return bytes(pysodium.crypto_core_ristretto255_from_hash(uniform))


def domain(identifier_type: str) -> bytes:
    """The hash-to-group domain separation tag of an identifier type."""
    return (DST_PREFIX + identifier_type).encode()


def hash_to_group(digest: bytes, identifier_type: str) -> bytes:
    """`P(d)`: the element a digest of `identifier_type` stands for."""
    return element_from_uniform(expand_message_xmd(digest, domain(identifier_type), 64))


def is_valid_element(encoding: bytes) -> bool:
    """Whether 32 bytes canonically encode a ristretto255 element other than the identity.

    The identity is refused like any invalid encoding: no digest maps to it and no
    non-zero scalar makes it, and `multiply` cannot use it (libsodium refuses a product
    that is the identity), so an upload that held one would fail at its first hop.
    """
    return (
        len(encoding) == ELEMENT_BYTES
        and encoding != _IDENTITY
        and bool(pysodium.crypto_core_ristretto255_is_valid_point(encoding))
    )


def is_valid_scalar(scalar: bytes) -> bool:
    """Whether 32 bytes are a scalar every function here accepts: canonical and non-zero.

    For checking a key read from a file before using it.
    """
    return len(scalar) == SCALAR_BYTES and 0 < int.from_bytes(scalar, "little") < GROUP_ORDER


def new_scalar() -> bytes:
    """A uniformly random non-zero scalar (canonical: below the group order)."""
    while True:
        scalar = bytes(pysodium.crypto_core_ristretto255_scalar_random())
        if any(scalar):
            return scalar


def invert_scalar(scalar: bytes) -> bytes:
    """The scalar's inverse modulo the group order.

    Raises:
        ValueError: `scalar` is not a canonical non-zero scalar.
    """
    _check_scalar(scalar)
    return bytes(pysodium.crypto_core_ristretto255_scalar_invert(scalar))


def multiply_scalars(a: bytes, b: bytes) -> bytes:
    """`a · b` modulo the group order (never zero: both are checked).

    Raises:
        ValueError: `a` or `b` is not a canonical non-zero scalar.
    """
    _check_scalar(a)
    _check_scalar(b)
    return bytes(pysodium.crypto_core_ristretto255_scalar_mul(a, b))


def multiply_element(scalar: bytes, element: bytes) -> bytes:
    """`scalar · element`, for one element.

    Raises:
        InvalidElementError: `element` is not a valid encoding (the identity included).
        ValueError: `scalar` is not a canonical non-zero scalar.
    """
    if len(element) != ELEMENT_BYTES:
        raise InvalidElementError(0)
    return bytes(multiply(scalar, np.frombuffer(element, dtype=np.uint8).reshape(1, -1))[0])


def multiply(scalar: bytes, elements: Elements, *, workers: int | None = None) -> Elements:
    """`scalar ·` every element, on every core.

    Raises:
        InvalidElementError: An element is not a valid encoding (the identity included);
            the error has the index of the first such element.
        ValueError: `scalar` is not a canonical non-zero scalar.
    """
    source, out, key = _batch(scalar, elements)
    key_address = ctypes.addressof(key)

    def run(start: int, stop: int) -> int:
        src, dst = source.ctypes.data, out.ctypes.data
        for offset in range(start * ELEMENT_BYTES, stop * ELEMENT_BYTES, ELEMENT_BYTES):
            if _scalarmult(dst + offset, key_address, src + offset):
                return offset // ELEMENT_BYTES
        return -1

    _in_parallel(len(source), run, workers)
    return out


def mask_digests(
    scalar: bytes, digests: Elements, identifier_type: str, *, workers: int | None = None
) -> Elements:
    """`scalar · P(d)` for every digest `d` of an `(n, 32)` array, on every core.

    Raises:
        ValueError: `scalar` is not a canonical non-zero scalar.
    """
    source, out, key = _batch(scalar, digests)
    key_address = ctypes.addressof(key)
    dst_prime = domain(identifier_type) + bytes([len(domain(identifier_type))])
    head = bytes(_SHA512_BLOCK)
    tail = (64).to_bytes(2, "big") + b"\x00" + dst_prime
    second = b"\x01" + dst_prime
    sha512 = hashlib.sha512

    def run(start: int, stop: int) -> int:
        point = ctypes.create_string_buffer(ELEMENT_BYTES)
        point_address = ctypes.addressof(point)
        dst = out.ctypes.data
        rows = source[start:stop].tobytes()
        for index in range(stop - start):
            digest = rows[index * ELEMENT_BYTES : (index + 1) * ELEMENT_BYTES]
            uniform = sha512(sha512(head + digest + tail).digest() + second).digest()
            _from_hash(point_address, uniform)
            if _scalarmult(dst + (start + index) * ELEMENT_BYTES, key_address, point_address):
                return start + index
        return -1

    _in_parallel(len(source), run, workers)
    return out


def valid_elements(elements: Elements, *, workers: int | None = None) -> npt.NDArray[np.bool_]:
    """For each encoding, whether it is a ristretto255 element other than the identity.

    The same answer as `is_valid_element` for each row, so `multiply` accepts exactly
    the rows marked valid.
    """
    source = np.ascontiguousarray(elements, dtype=np.uint8).reshape(-1, ELEMENT_BYTES)
    valid = np.zeros(len(source), dtype=np.bool_)

    def run(start: int, stop: int) -> int:
        src = source.ctypes.data
        valid[start:stop] = [
            _is_valid_point(address) == 1
            for address in range(
                src + start * ELEMENT_BYTES, src + stop * ELEMENT_BYTES, ELEMENT_BYTES
            )
        ]
        return -1

    _in_parallel(len(source), run, workers)
    return valid & source.any(axis=1)


def _batch(scalar: bytes, rows: Elements) -> tuple[Elements, Elements, ctypes.Array[ctypes.c_char]]:
    """A batch's input as one contiguous `(n, 32)` array, its output, and the scalar's buffer.

    Raises:
        ValueError: `scalar` is not a canonical non-zero scalar.
    """
    _check_scalar(scalar)
    source = np.ascontiguousarray(rows, dtype=np.uint8).reshape(-1, ELEMENT_BYTES)
    return source, np.empty_like(source), ctypes.create_string_buffer(scalar, SCALAR_BYTES)


def _check_scalar(scalar: bytes) -> None:
    """Refuses a scalar that libsodium would silently misuse.

    That is zero, and any encoding at or above `L` (libsodium drops the top bit and does
    not reduce, and `L` itself would make every product the identity).
    """
    if not is_valid_scalar(scalar):
        raise ValueError("a scalar is 32 bytes, canonical (below the group order) and not zero")


def _in_parallel(count: int, run: Callable[[int, int], int], workers: int | None) -> None:
    """Runs `run(start, stop)` over slices of `range(count)` on threads.

    Raises:
        InvalidElementError: A slice returned the index of an element it could not use.
    """
    threads = max(1, min(workers or os.cpu_count() or 1, -(-count // 1024)))
    bounds = np.linspace(0, count, threads * 4 + 1, dtype=np.int64)
    slices = [(int(a), int(b)) for a, b in itertools.pairwise(bounds.tolist()) if b > a]
    if threads == 1:
        failed = [run(a, b) for a, b in slices]
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="ristretto255") as pool:
            failed = list(pool.map(lambda bounds: run(*bounds), slices))
    bad = [index for index in failed if index >= 0]
    if bad:
        raise InvalidElementError(min(bad))
