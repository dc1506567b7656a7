"""Tests for ocicopy.platforms: parsing ``os/arch[/variant]`` and matching index entries."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocicopy.errors import InputError, InvalidPlatformError
from ocicopy.models import Platform
from ocicopy.platforms import PlatformSpec, parse_platform

# Independent transcription of the accepted grammar: 2 or 3 lower-case components.
COMPONENT = r"[a-z0-9][a-z0-9._-]{0,63}"
PLATFORM_RE = re.compile(rf"\A{COMPONENT}/{COMPONENT}(?:/{COMPONENT})?\Z")


@pytest.mark.parametrize(
    ("text", "os", "arch", "variant"),
    [
        ("linux/amd64", "linux", "amd64", None),
        ("linux/arm64/v8", "linux", "arm64", "v8"),
        ("linux/arm/v7", "linux", "arm", "v7"),
        ("windows/amd64", "windows", "amd64", None),
        ("linux/ppc64le", "linux", "ppc64le", None),
        ("linux/s390x", "linux", "s390x", None),
        ("linux/riscv64", "linux", "riscv64", None),
        ("freebsd/x86_64", "freebsd", "x86_64", None),
        ("linux/mips64le/r6", "linux", "mips64le", "r6"),
        ("wasi/wasm", "wasi", "wasm", None),
        ("a/" + "b" * 64, "a", "b" * 64, None),
    ],
)
def test_parse_platform_accepts(text: str, os: str, arch: str, variant: str | None) -> None:
    spec = parse_platform(text)
    assert spec == PlatformSpec(os, arch, variant)
    assert str(spec) == text


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("linux", id="one-part"),
        pytest.param("linux/arm64/v8/extra", id="four-parts"),
        pytest.param("linux/", id="empty-arch"),
        pytest.param("/amd64", id="empty-os"),
        pytest.param("linux/arm64/", id="empty-variant"),
        pytest.param("linux//amd64", id="double-slash"),
        pytest.param("Linux/amd64", id="upper-os"),
        pytest.param("linux/AMD64", id="upper-arch"),
        pytest.param("linux/arm64/V8", id="upper-variant"),
        pytest.param(" linux/amd64", id="leading-space"),
        pytest.param("linux/amd64 ", id="trailing-space"),
        pytest.param("linux/amd64\n", id="trailing-newline"),
        pytest.param("linux/-amd64", id="leading-dash"),
        pytest.param("linux/.amd64", id="leading-dot"),
        pytest.param("linux/amd 64", id="inner-space"),
        pytest.param("linux:amd64", id="colon"),
        pytest.param("linux/" + "b" * 65, id="too-long"),
        pytest.param("linux/\u0430md64", id="cyrillic-a"),
        pytest.param("linux,darwin/amd64", id="comma"),
    ],
)
def test_parse_platform_rejects(text: str) -> None:
    with pytest.raises(InvalidPlatformError) as info:
        parse_platform(text)
    assert isinstance(info.value, InputError)
    assert repr(text) in str(info.value)
    assert info.value.value == text


def test_bad_component_is_named() -> None:
    with pytest.raises(InvalidPlatformError, match="'AMD64'"):
        parse_platform("linux/AMD64")


def plat(os: str, arch: str, variant: str | None = None) -> Platform:
    data = {"os": os, "architecture": arch}
    if variant is not None:
        data["variant"] = variant
    return Platform.model_validate(data)


@pytest.mark.parametrize(
    ("spec", "platform", "matches"),
    [
        ("linux/amd64", plat("linux", "amd64"), True),
        ("linux/amd64", plat("linux", "arm64"), False),
        ("linux/amd64", plat("windows", "amd64"), False),
        ("linux/arm64", plat("linux", "arm64", "v8"), True),  # no variant asked: any variant
        ("linux/arm", plat("linux", "arm", "v6"), True),
        ("linux/arm/v7", plat("linux", "arm", "v7"), True),
        ("linux/arm/v7", plat("linux", "arm", "v6"), False),
        ("linux/arm64/v8", plat("linux", "arm64", "v8"), True),
        ("linux/amd64", None, False),
        ("unknown/unknown", plat("unknown", "unknown"), True),
    ],
)
def test_matches_table(spec: str, platform: Platform | None, matches: bool) -> None:
    assert parse_platform(spec).matches(platform) is matches


def test_platform_spec_is_hashable_and_frozen() -> None:
    spec = parse_platform("linux/arm64/v8")
    assert {spec, parse_platform("linux/arm64/v8")} == {spec}
    with pytest.raises(AttributeError):
        spec.os = "windows"  # type: ignore[misc]


_component_chars = st.sampled_from(list("abcz09._-AZ /:\n"))
_candidate = st.one_of(
    st.from_regex(PLATFORM_RE),
    st.lists(st.text(_component_chars, max_size=6), min_size=0, max_size=5).map("/".join),
    st.text(max_size=20),
)


@given(_candidate)
def test_parse_platform_accepts_exactly_the_grammar(text: str) -> None:
    expected = PLATFORM_RE.match(text) is not None
    try:
        spec = parse_platform(text)
    except InvalidPlatformError:
        assert not expected
        return
    assert expected
    assert str(spec) == text
    assert parse_platform(str(spec)) == spec


_names = st.sampled_from(["linux", "windows", "amd64", "arm64", "arm", "v6", "v7", "v8"])


@given(_names, _names, st.one_of(st.none(), _names), _names, _names, st.one_of(st.none(), _names))
def test_matches_is_field_equality_with_variant_wildcard_and_defaults(
    s_os: str, s_arch: str, s_var: str | None, p_os: str, p_arch: str, p_var: str | None
) -> None:
    spec = PlatformSpec(s_os, s_arch, s_var)
    defaults = {"arm64": "v8", "arm": "v7"}  # an entry without a variant has its architecture's default one
    entry_var = p_var or defaults.get(p_arch)
    spec_var = s_var or defaults.get(s_arch)
    expected = s_os == p_os and s_arch == p_arch and (s_var is None or spec_var == entry_var)
    assert spec.matches(plat(p_os, p_arch, p_var)) is expected


@pytest.mark.parametrize(
    ("spec", "entry", "expected"),
    [
        ("linux/arm64/v8", ("linux", "arm64", None), True),  # arm64 without a variant is v8
        ("linux/arm64/v8", ("linux", "arm64", "v8"), True),
        ("linux/arm64/v9", ("linux", "arm64", None), False),
        ("linux/arm/v7", ("linux", "arm", None), True),
        ("linux/arm/v6", ("linux", "arm", None), False),
        ("linux/amd64/v3", ("linux", "amd64", None), False),
    ],
)
def test_default_variants(spec: str, entry: tuple[str, str, str | None], expected: bool) -> None:
    os_, arch, variant = entry
    assert parse_platform(spec).matches(Platform(os=os_, architecture=arch, variant=variant)) is expected
