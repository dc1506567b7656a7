"""Tests for ocicopy.digest: strict Digest validation (tables + a property against an independent regex),
the pydantic field, Hasher, and the incremental Verifier (tables + a property over arbitrary chunkings)."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ocicopy.digest import Digest, Hasher, Verifier, is_digest
from ocicopy.errors import DigestMismatchError, InputError, InvalidDigestError

# Independent transcription of OCI image-spec "Digests", restricted to the two registered algorithms.
INDEPENDENT_RE = re.compile(r"\A(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")

HEX64 = "0123456789abcdef" * 4
HEX128 = HEX64 * 2
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_SHA512 = (
    "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)


class Holder(BaseModel):
    digest: Digest


# --- validation tables ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        f"sha256:{HEX64}",
        f"sha512:{HEX128}",
        EMPTY_SHA256,
        EMPTY_SHA512,
        "sha256:" + "0" * 64,
        "sha512:" + "f" * 128,
    ],
)
def test_valid_digests_are_accepted_unchanged(value: str) -> None:
    d = Digest(value)
    assert isinstance(d, Digest)
    assert isinstance(d, str)
    assert d == value
    assert str(d) == value
    assert is_digest(value)
    assert Digest.parse(value) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("sha256:", id="no-hex"),
        pytest.param("sha256:../../x", id="path-traversal"),
        pytest.param("sha256:../../" + HEX64[:58], id="path-traversal-64"),
        pytest.param(f"sha256:{HEX64.upper()}", id="upper-hex"),
        pytest.param(f"SHA256:{HEX64}", id="upper-algorithm"),
        pytest.param(f"sha256:{HEX64[:-1]}", id="63-hex"),
        pytest.param(f"sha256:{HEX64}0", id="65-hex"),
        pytest.param(f"sha256:{HEX128}", id="sha256-with-128-hex"),
        pytest.param(f"sha512:{HEX64}", id="sha512-with-64-hex"),
        pytest.param(f"sha512:{HEX128[:-1]}", id="127-hex"),
        pytest.param(f"sha384:{'a' * 96}", id="sha384"),
        pytest.param(f"md5:{'a' * 32}", id="md5"),
        pytest.param(f"blake3:{HEX64}", id="blake3"),
        pytest.param(f"sha256+b64u:{HEX64}", id="algorithm-with-separator"),
        pytest.param(HEX64, id="bare-hex"),
        pytest.param(f"sha256-{HEX64}", id="dash-separator"),
        pytest.param(f"sha256::{HEX64}", id="double-colon"),
        pytest.param(f" sha256:{HEX64}", id="leading-space"),
        pytest.param(f"sha256:{HEX64} ", id="trailing-space"),
        pytest.param(f"sha256:{HEX64}\n", id="trailing-newline"),
        pytest.param(f"sha256:{HEX64}\x00", id="trailing-nul"),
        pytest.param(f"sha256:{HEX64[:32]}g{HEX64[33:]}", id="non-hex-g"),
        pytest.param(f"sha256:{HEX64[:-1]}/", id="slash"),
        pytest.param("sha256:" + "\uff10" * 64, id="fullwidth-digits"),
        pytest.param("sha256:" + "\u0661" * 64, id="arabic-indic-digits"),
        pytest.param(f"sha256:{HEX64}@sha256:{HEX64}", id="two-digests"),
    ],
)
def test_invalid_digest_strings_are_rejected(value: str) -> None:
    with pytest.raises(InvalidDigestError) as info:
        Digest(value)
    assert info.value.value == value
    assert "expected sha256:<64 hex> or sha512:<128 hex>" in str(info.value)
    assert not is_digest(value)


@pytest.mark.parametrize("value", [None, 42, b"sha256:" + HEX64.encode(), ["sha256:" + HEX64], 3.5])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidDigestError):
        Digest(value)  # type: ignore[arg-type]


def test_invalid_digest_error_is_an_input_error_and_message_is_bounded() -> None:
    with pytest.raises(InputError) as info:
        Digest("x" * 10_000)
    assert len(str(info.value)) < 400


def test_digest_of_a_digest_is_the_same_object() -> None:
    d = Digest(EMPTY_SHA256)
    assert Digest(d) is d


@pytest.mark.parametrize(
    ("value", "algorithm", "hex_", "short"),
    [
        (EMPTY_SHA256, "sha256", EMPTY_SHA256[7:], "sha256:e3b0c44298fc"),
        (EMPTY_SHA512, "sha512", EMPTY_SHA512[7:], "sha512:cf83e1357eef"),
        (f"sha256:{HEX64}", "sha256", HEX64, "sha256:0123456789ab"),
    ],
)
def test_parts(value: str, algorithm: str, hex_: str, short: str) -> None:
    d = Digest(value)
    assert d.algorithm == algorithm
    assert d.hex == hex_
    assert d.short == short


@pytest.mark.parametrize(
    ("data", "algorithm", "expected"),
    [
        (b"", "sha256", EMPTY_SHA256),
        (b"", "sha512", EMPTY_SHA512),
        (b"{}", "sha256", "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
        (b"abc", "sha256", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ],
)
def test_of_known_vectors(data: bytes, algorithm: str, expected: str) -> None:
    d = Digest.of(data, algorithm)
    assert d == expected
    assert isinstance(d, Digest)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha384", "SHA256", ""])
def test_of_and_hasher_refuse_unknown_algorithms(algorithm: str) -> None:
    with pytest.raises(InvalidDigestError):
        Digest.of(b"x", algorithm)
    with pytest.raises(InvalidDigestError):
        Hasher(algorithm)


# --- pydantic field -----------------------------------------------------------------------------------------


def test_pydantic_field_validates_to_digest_and_serialises_as_string() -> None:
    h = Holder.model_validate({"digest": EMPTY_SHA256})
    assert isinstance(h.digest, Digest)
    assert h.digest.algorithm == "sha256"
    assert h.model_dump(mode="json") == {"digest": EMPTY_SHA256}
    assert h.model_dump_json() == f'{{"digest":"{EMPTY_SHA256}"}}'
    assert Holder.model_validate_json(h.model_dump_json()) == h


@pytest.mark.parametrize("value", [123, None, ["x"]])
def test_pydantic_field_rejects_non_strings_with_validation_error(value: object) -> None:
    with pytest.raises(ValidationError):
        Holder.model_validate({"digest": value})


@pytest.mark.parametrize("value", ["sha256:../../x", f"sha256:{HEX64.upper()}", "md5:abc"])
def test_pydantic_field_rejects_bad_digest_with_validation_error(value: str) -> None:
    # A model field must fail like any other field (ValidationError with a location), so callers that catch
    # ValidationError (e.g. models.parse_manifest) see a bad digest. InvalidDigestError is not a ValueError,
    # so pydantic lets it escape unwrapped.
    with pytest.raises(ValidationError):
        Holder.model_validate({"digest": value})


# --- hasher and verifier tables ----------------------------------------------------------------------------


def test_hasher_accumulates_chunks_and_size() -> None:
    h = Hasher()
    for chunk in (b"ab", b"", b"c"):
        h.update(chunk)
    assert h.size == 3
    assert h.digest() == Digest.of(b"abc")


def test_hasher_sha512() -> None:
    h = Hasher("sha512")
    h.update(b"")
    assert h.digest() == EMPTY_SHA512


def test_verifier_accepts_matching_bytes_and_size() -> None:
    v = Verifier(Digest.of(b"hello world"), 11)
    v.update(b"hello ")
    v.update(b"world")
    assert v.verified()
    v.check()


def test_digest_verifier_helper_uses_the_digest_algorithm() -> None:
    d = Digest.of(b"data", "sha512")
    v = d.verifier()
    assert isinstance(v, Verifier)
    assert v.expected == d
    v.update(b"data")
    v.check()


def test_verifier_wrong_bytes() -> None:
    expected = Digest.of(b"good")
    v = Verifier(expected, 4)
    v.update(b"evil")
    assert not v.verified()
    with pytest.raises(DigestMismatchError) as info:
        v.check()
    assert info.value.expected == expected
    assert info.value.actual == Digest.of(b"evil")
    assert info.value.reason == "content digest differs"


def test_verifier_short_body_fails_on_size() -> None:
    v = Verifier(Digest.of(b"good"), 4)
    v.update(b"goo")
    assert not v.verified()
    with pytest.raises(DigestMismatchError) as info:
        v.check()
    assert info.value.size == 3
    assert info.value.expected_size == 4
    assert "size differs" in str(info.value)


def test_verifier_right_bytes_wrong_declared_size_fails() -> None:
    v = Verifier(Digest.of(b"good"), 5)
    v.update(b"good")
    with pytest.raises(DigestMismatchError):
        v.check()


def test_verifier_update_raises_as_soon_as_body_is_longer_than_descriptor() -> None:
    v = Verifier(Digest.of(b"abcd"), 4)
    v.update(b"ab")
    v.update(b"cd")  # exactly at the limit: fine
    with pytest.raises(DigestMismatchError) as info:
        v.update(b"e")
    assert info.value.size == 5
    assert info.value.expected_size == 4
    assert "longer" in str(info.value)


def test_verifier_single_oversized_chunk_raises_on_update() -> None:
    v = Verifier(Digest.of(b"x"), 1)
    with pytest.raises(DigestMismatchError):
        v.update(b"xx")


def test_verifier_without_size_checks_digest_only() -> None:
    v = Verifier(Digest.of(b"x" * 1000))
    v.update(b"x" * 1000)
    v.check()
    w = Verifier(Digest.of(b"x" * 1000))
    w.update(b"x" * 999)
    with pytest.raises(DigestMismatchError):
        w.check()


# --- properties ----------------------------------------------------------------------------------------------

_hex = st.text(alphabet="0123456789abcdef", min_size=60, max_size=132)
_near_hex = st.text(alphabet="0123456789abcdefABCDEFg/. \n:", min_size=60, max_size=132)
_algorithms = st.sampled_from(["sha256", "sha512", "sha384", "SHA256", "sha", "md5", ""])
digest_like = st.one_of(
    st.from_regex(INDEPENDENT_RE),
    st.builds(lambda a, h: f"{a}:{h}", _algorithms, _hex),
    st.builds(lambda a, h: f"{a}:{h}", _algorithms, _near_hex),
    st.builds(lambda d, s: d + s, st.from_regex(INDEPENDENT_RE), st.sampled_from(["\n", " ", "0", "\x00", "/"])),
    st.text(max_size=140),
)


@given(digest_like)
def test_digest_accepts_exactly_the_independent_grammar(value: str) -> None:
    expected = INDEPENDENT_RE.match(value) is not None
    try:
        Digest(value)
        accepted = True
    except InvalidDigestError:
        accepted = False
    assert accepted == expected
    assert is_digest(value) == expected


@given(st.binary(max_size=4096), st.sampled_from(["sha256", "sha512"]))
def test_of_matches_hashlib_and_round_trips(data: bytes, algorithm: str) -> None:
    d = Digest.of(data, algorithm)
    assert d.algorithm == algorithm
    assert d.hex == hashlib.new(algorithm, data).hexdigest()
    assert Digest(str(d)) == d
    assert d.short == str(d)[: len(algorithm) + 13]


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(st.binary(max_size=2048))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(
    chunked(),
    st.one_of(st.none(), st.binary(max_size=64)),
    st.sampled_from(["sha256", "sha512"]),
)
def test_verifier_accepts_exactly_when_digest_is_of_the_joined_bytes(
    split: tuple[bytes, list[bytes]], other: bytes | None, algorithm: str
) -> None:
    data, chunks = split
    promised = data if other is None else other
    v = Verifier(Digest.of(promised, algorithm))
    for chunk in chunks:
        v.update(chunk)
    assert v.size == len(data)
    should_pass = promised == data
    assert v.verified() == should_pass
    if should_pass:
        v.check()
    else:
        with pytest.raises(DigestMismatchError):
            v.check()


@given(chunked(), st.integers(-3, 3))
def test_verifier_with_size_accepts_only_the_exact_size(split: tuple[bytes, list[bytes]], delta: int) -> None:
    data, chunks = split
    expected_size = max(0, len(data) + delta)
    v = Verifier(Digest.of(data), expected_size)
    raised_early = False
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > expected_size:
            with pytest.raises(DigestMismatchError):
                v.update(chunk)
            raised_early = True
            break
        v.update(chunk)
    assert raised_early == (len(data) > expected_size)
    if raised_early:
        return
    if expected_size == len(data):
        v.check()
        assert v.verified()
    else:
        assert not v.verified()
        with pytest.raises(DigestMismatchError):
            v.check()
