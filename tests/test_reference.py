"""Tests for ocicopy.reference: table tests for docker's normalization rules and rejects, plus hypothesis
properties checked against an independent transcription of the distribution/reference grammar."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.errors import InvalidReferenceError
from ocicopy.reference import (
    MAX_REFERENCE_LENGTH,
    Reference,
    parse_reference,
    validate_repository,
    validate_tag,
)

# --- independent grammar (distribution/reference regexp.go, plus ocicopy's sha256/sha512-only digests) ---

G_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
G_HOST = rf"(?:{G_DOMAIN_COMPONENT}(?:\.{G_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
G_DOMAIN = rf"{G_HOST}(?::[0-9]+)?"
G_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
G_PATH = rf"{G_PATH_COMPONENT}(?:/{G_PATH_COMPONENT})*"
G_TAG = r"[\w][\w.-]{0,127}"
G_DIGEST = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
TAG_RE = re.compile(G_TAG, re.ASCII)
PATH_RE = re.compile(G_PATH, re.ASCII)
# Normalized form always spells the registry out, so the domain is mandatory here.
FULL_RE = re.compile(
    rf"(?P<registry>{G_DOMAIN})/(?P<repository>{G_PATH})(?::(?P<tag>{G_TAG}))?(?:@(?P<digest>{G_DIGEST}))?",
    re.ASCII,
)

H256 = "0123456789abcdef" * 4
H512 = "fedcba9876543210" * 8
D256 = f"sha256:{H256}"
D512 = f"sha512:{H512}"


def assert_grammatical(ref: Reference) -> None:
    """The normalized string matches the grammar and its parts are exactly the fields."""
    text = str(ref)
    match = FULL_RE.fullmatch(text)
    assert match is not None, text
    assert match["registry"] == ref.registry
    assert match["repository"] == ref.repository
    assert match["tag"] == ref.tag
    assert match["digest"] == ref.digest
    assert ref.registry == ref.registry.lower()
    assert ref.registry not in {"index.docker.io", "registry-1.docker.io"}
    assert len(ref.name) <= 255
    if ref.registry == "docker.io":
        assert "/" in ref.repository
    assert ref.digest is None or isinstance(ref.digest, Digest)


# --- table: accepted ------------------------------------------------------------------------------------

ACCEPTED = [
    # text, registry, repository, tag, digest, normalized string
    ("nginx", "docker.io", "library/nginx", "latest", None, "docker.io/library/nginx:latest"),
    ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", None, "docker.io/library/ubuntu:22.04"),
    ("user/app", "docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
    ("user/app:1", "docker.io", "user/app", "1", None, "docker.io/user/app:1"),
    ("docker.io/library/x", "docker.io", "library/x", "latest", None, "docker.io/library/x:latest"),
    ("docker.io/x", "docker.io", "library/x", "latest", None, "docker.io/library/x:latest"),
    ("index.docker.io/x", "docker.io", "library/x", "latest", None, "docker.io/library/x:latest"),
    ("registry-1.docker.io/a/b:c", "docker.io", "a/b", "c", None, "docker.io/a/b:c"),
    ("Docker.IO/x", "docker.io", "library/x", "latest", None, "docker.io/library/x:latest"),
    ("docker.io:5000/x", "docker.io:5000", "x", "latest", None, "docker.io:5000/x:latest"),
    ("ghcr.io/acme/api:1.4.2", "ghcr.io", "acme/api", "1.4.2", None, "ghcr.io/acme/api:1.4.2"),
    ("GHCR.IO/acme/api", "ghcr.io", "acme/api", "latest", None, "ghcr.io/acme/api:latest"),
    ("ghcr.io/x", "ghcr.io", "x", "latest", None, "ghcr.io/x:latest"),
    ("localhost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
    ("LocalHost/foo", "localhost", "foo", "latest", None, "localhost/foo:latest"),
    ("localhost:5000/foo/bar:tag", "localhost:5000", "foo/bar", "tag", None, "localhost:5000/foo/bar:tag"),
    ("127.0.0.1:5000/a", "127.0.0.1:5000", "a", "latest", None, "127.0.0.1:5000/a:latest"),
    ("[::1]:5000/a:b", "[::1]:5000", "a", "b", None, "[::1]:5000/a:b"),
    ("[::1]/a", "[::1]", "a", "latest", None, "[::1]/a:latest"),
    ("[FE80::1]:443/a", "[fe80::1]:443", "a", "latest", None, "[fe80::1]:443/a:latest"),
    ("myhost:5000/a", "myhost:5000", "a", "latest", None, "myhost:5000/a:latest"),
    ("host:5000/repo", "host:5000", "repo", "latest", None, "host:5000/repo:latest"),
    ("host:65535/repo:5000", "host:65535", "repo", "5000", None, "host:65535/repo:5000"),
    (f"repo@{D256}", "docker.io", "library/repo", None, D256, f"docker.io/library/repo@{D256}"),
    (f"repo:tag@{D256}", "docker.io", "library/repo", "tag", D256, f"docker.io/library/repo:tag@{D256}"),
    (f"repo@{D512}", "docker.io", "library/repo", None, D512, f"docker.io/library/repo@{D512}"),
    (f"q.io/r:t@{D512}", "q.io", "r", "t", D512, f"q.io/r:t@{D512}"),
    (f"host:5000/ns/repo@{D256}", "host:5000", "ns/repo", None, D256, f"host:5000/ns/repo@{D256}"),
    ("a/b/c/d/e", "docker.io", "a/b/c/d/e", "latest", None, "docker.io/a/b/c/d/e:latest"),
    ("x/a.b_c__d-e---f", "docker.io", "x/a.b_c__d-e---f", "latest", None, "docker.io/x/a.b_c__d-e---f:latest"),
    ("foo.com", "docker.io", "library/foo.com", "latest", None, "docker.io/library/foo.com:latest"),
    ("foo.com/bar", "foo.com", "bar", "latest", None, "foo.com/bar:latest"),
    ("foo/bar.com", "docker.io", "foo/bar.com", "latest", None, "docker.io/foo/bar.com:latest"),
    ("a-b.c-d.example:1/x", "a-b.c-d.example:1", "x", "latest", None, "a-b.c-d.example:1/x:latest"),
    # docker compatibility: without a '/', 'localhost:5000' is repository 'localhost' with tag '5000'.
    ("localhost:5000", "docker.io", "library/localhost", "5000", None, "docker.io/library/localhost:5000"),
    ("x:_", "docker.io", "library/x", "_", None, "docker.io/library/x:_"),
    ("x:A.b-C_1", "docker.io", "library/x", "A.b-C_1", None, "docker.io/library/x:A.b-C_1"),
    ("x:" + "t" * 128, "docker.io", "library/x", "t" * 128, None, "docker.io/library/x:" + "t" * 128),
    ("ghcr.io/" + "a" * 247, "ghcr.io", "a" * 247, "latest", None, "ghcr.io/" + "a" * 247 + ":latest"),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest", "normalized"), ACCEPTED)
def test_accepted(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None, normalized: str
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == normalized
    assert ref.name == f"{registry}/{repository}"
    assert parse_reference(normalized) == ref
    assert_grammatical(ref)


# --- table: rejected ------------------------------------------------------------------------------------

REJECTED = [
    ("", "empty"),
    ("Nginx", "must be lower case"),
    ("Foo/bar", "must be lower case"),
    ("ghcr.io/Acme/api", "must be lower case"),
    ("ghcr.io/acme/API:1", "must be lower case"),
    ("a//b", "empty component"),
    ("ghcr.io//b", "must not start with '/'"),
    ("/a", "must not start with '/'"),
    ("a/", "must not end with '/'"),
    ("a/b/", "must not end with '/'"),
    ("ghcr.io/", "repository path is missing"),
    ("localhost:5000/", "repository path is missing"),
    (":tag", "repository name is missing"),
    (f"@{D256}", "repository name is missing"),
    ("repo:", "tag is empty"),
    ("repo:" + "t" * 129, "tag longer than 128 characters"),
    ("repo:-x", "tag must start with"),
    ("repo:.x", "tag must start with"),
    ("repo:a!b", "tag contains invalid character '!'"),
    ("repo:a+b", "tag contains invalid character '+'"),
    ("repo::tag", "invalid character ':'"),
    ("repo@", "digest is empty"),
    ("repo@sha256:../../x", "characters other than hex"),
    (f"repo@sha256:{H256.upper()}", "digest hex must be lower case"),
    (f"repo@SHA256:{H256}", "digest algorithm must be lower case"),
    ("repo@sha256:abc", "sha256 digest must have 64 hex characters, not 3"),
    (f"repo@sha256:{H256}0", "must have 64 hex characters"),
    (f"repo@sha512:{H256}", "sha512 digest must have 128 hex characters"),
    (f"repo@md5:{H256}", "unsupported digest algorithm 'md5'"),
    (f"repo@sha384:{H256}", "unsupported digest algorithm"),
    ("repo@" + H256, "no ':'"),
    (f"repo@{D256}@{D256}", "more than one '@'"),
    (f"repo@{D256}:tag", "must be sha256:<64 lower-case hex>"),
    (" nginx", "whitespace"),
    ("nginx ", "whitespace"),
    ("ngi nx", "whitespace"),
    ("nginx\n", "whitespace"),
    ("\tnginx", "whitespace"),
    ("nginx:\u00a0", "whitespace"),
    ("nginx\x00", "control characters"),
    ("ngi\x7fnx", "control characters"),
    ("nginx\x1b[0m", "control characters"),
    ("nginx:lätest", "non-ASCII"),
    ("ngînx", "non-ASCII"),
    ("https://ghcr.io/a/b", "URL scheme"),
    ("http://localhost:5000/a", "URL scheme"),
    ("docker://nginx", "URL scheme"),
    ("ghcr.io/" + "a" * 248, "name longer than 255 characters"),
    ("a" * 256, "longer than 255"),
    ("/".join(["ab"] * 100), "longer than 255"),
    ("a" * (MAX_REFERENCE_LENGTH + 1), "longer than 1024"),
    ("foo_bar.com/x", "registry host label 'foo_bar' is invalid"),
    ("-foo.com/x", "registry host label '-foo' is invalid"),
    ("foo-.com/x", "is invalid"),
    ("foo..com/x", "empty label"),
    (".foo/x", "empty label"),
    ("foo.com./x", "empty label"),
    (":5000/x", "registry host is empty"),
    ("host:/x", "registry port is empty"),
    ("host:abc/x", "not a number between 1 and 65535"),
    ("host:0/x", "not a number between 1 and 65535"),
    ("host:65536/x", "not a number between 1 and 65535"),
    ("host:1:2/x", "not a number between 1 and 65535"),
    ("::1/x", "registry host is empty"),
    ("[::1/x", "unterminated IPv6"),
    ("[::1]x/a", "after the IPv6 address"),
    ("[zz::1]/a", "invalid IPv6 address"),
    ("[1.2.3.4]/a", "invalid IPv6 address"),
    ("[]/a", "invalid IPv6 address"),
    ("[:::::]/a", "invalid IPv6 address"),
    ("[::1]", "a registry alone is not a reference"),
    ("[::1]:5000", "a registry alone is not a reference"),
    ("a/./b", "must start and end with a lower-case letter or digit"),
    ("a/../b", "must start and end with a lower-case letter or digit"),
    ("a/-b", "must start and end"),
    ("a/b_", "must start and end"),
    ("a/b..c", "invalid separator"),
    ("a/b___c", "invalid separator"),
    ("a/b.-c", "invalid separator"),
    ("a/b_-c", "invalid separator"),
    ("a/b%2fc", "invalid character '%'"),
    ("a/b?c", "invalid character '?'"),
    ("a/b#c", "invalid character '#'"),
    ("a\\b", "invalid character '\\\\'"),
    (D256, "a bare digest is not a reference"),
    ("sha256:abc", "a bare digest is not a reference"),
    (H256, "image ID"),
]


@pytest.mark.parametrize(("text", "fragment"), REJECTED)
def test_rejected(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert fragment in info.value.reason
    assert info.value.reason in str(info.value)


def test_error_carries_the_input() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference("ghcr.io/Acme/api")
    assert info.value.reference == "ghcr.io/Acme/api"
    assert "'ghcr.io/Acme/api'" in str(info.value)


def test_huge_input_is_rejected_fast_with_a_bounded_message() -> None:
    text = "a/" * 5_000_000
    started = time.perf_counter()
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert time.perf_counter() - started < 1.0
    assert "longer than 1024" in info.value.reason
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("value", [None, 1, b"nginx", ["nginx"], 3.5])
def test_non_string_input(value: Any) -> None:
    with pytest.raises(InvalidReferenceError, match="must be a string"):
        parse_reference(value)


ADVERSARIAL = [
    "a" + "-" * 1000 + ".",
    "a" + "--a" * 340 + "_",
    "a/" * 511 + "A",
    "a." * 511 + "!",
    "a" * 1023 + "A",
    "x:" + "a" * 1022,
    "a" + "__a" * 340 + "-",
    "a" + "._" * 500 + "a",
    "a" * 500 + "/" + "b" * 500 + "/",
    "[" + ":" * 1000 + "]/a",
    "[" + "a:" * 500 + "]/a",
    "a" * 1000 + ".com/x",
    "a-" * 500 + "a.com/x",
    "x@sha256:" + "a" * 1000,
    "1." * 500 + ":1/a",
]


def test_no_catastrophic_backtracking() -> None:
    started = time.perf_counter()
    for text in ADVERSARIAL:
        assert len(text) <= MAX_REFERENCE_LENGTH
        with pytest.raises(InvalidReferenceError):
            parse_reference(text)
    # each is a few hundred microseconds when linear; exponential backtracking would take forever
    assert time.perf_counter() - started < 2.0


# --- default tag ----------------------------------------------------------------------------------------


def test_default_tag_none_gives_no_identifier() -> None:
    ref = parse_reference("nginx", default_tag=None)
    assert ref.tag is None
    assert ref.digest is None
    assert ref.identifier is None
    assert str(ref) == "docker.io/library/nginx"
    assert parse_reference(str(ref), default_tag=None) == ref
    assert parse_reference(str(ref)).tag == "latest"


def test_custom_default_tag_only_when_nothing_given() -> None:
    assert parse_reference("nginx", default_tag="stable").tag == "stable"
    assert parse_reference("nginx:1", default_tag="stable").tag == "1"
    pinned = parse_reference(f"nginx@{D256}", default_tag="stable")
    assert pinned.tag is None
    assert pinned.digest == D256


@pytest.mark.parametrize("bad", ["", "-x", "a" * 129, "a b"])
def test_invalid_default_tag(bad: str) -> None:
    with pytest.raises(InvalidReferenceError, match="invalid default tag"):
        parse_reference("nginx", default_tag=bad)


# --- Reference behaviour --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "api_host"),
    [
        ("nginx", "registry-1.docker.io"),
        ("index.docker.io/a/b", "registry-1.docker.io"),
        ("registry-1.docker.io/a/b", "registry-1.docker.io"),
        ("docker.io:443/a", "docker.io:443"),
        ("ghcr.io/a", "ghcr.io"),
        ("localhost:5000/a", "localhost:5000"),
        ("[::1]:5000/a", "[::1]:5000"),
    ],
)
def test_api_host(text: str, api_host: str) -> None:
    assert parse_reference(text).api_host == api_host


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("nginx", "nginx:latest"),
        ("docker.io/library/nginx:1.25", "nginx:1.25"),
        ("user/app:1", "user/app:1"),
        ("docker.io/library/a/b", "library/a/b:latest"),
        (f"nginx:1@{D256}", f"nginx:1@{D256}"),
        (f"nginx@{D256}", f"nginx@{D256}"),
        ("ghcr.io/a/b:2", "ghcr.io/a/b:2"),
        ("localhost:5000/a", "localhost:5000/a:latest"),
        # dropping the prefix would change the meaning: keep it
        ("docker.io/foo.com/x", "docker.io/foo.com/x:latest"),
        ("docker.io/localhost/x", "docker.io/localhost/x:latest"),
        ("docker.io/library/sha256:abc", "library/sha256:abc"),
    ],
)
def test_familiar(text: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert ref.familiar == familiar
    assert parse_reference(ref.familiar) == ref


def test_familiar_of_hex_named_repository_without_identifier() -> None:
    ref = Reference("docker.io", H256)
    assert ref.repository == f"library/{H256}"
    assert ref.familiar == f"library/{H256}"
    assert parse_reference(ref.familiar, default_tag=None) == ref


def test_identifier_prefers_digest() -> None:
    assert parse_reference(f"a:t@{D256}").identifier == D256
    assert parse_reference("a:t").identifier == "t"
    assert parse_reference(f"a@{D512}").identifier == D512


def test_with_tag_drops_digest() -> None:
    ref = parse_reference(f"ghcr.io/a:old@{D256}").with_tag("new")
    assert (ref.tag, ref.digest) == ("new", None)
    assert str(ref) == "ghcr.io/a:new"


def test_with_digest_keeps_tag() -> None:
    ref = parse_reference("ghcr.io/a:1").with_digest(D512)
    assert (ref.tag, ref.digest) == ("1", D512)
    assert isinstance(ref.digest, Digest)
    assert str(ref) == f"ghcr.io/a:1@{D512}"


def test_without_identifier() -> None:
    ref = parse_reference(f"ghcr.io/a:1@{D256}").without_identifier()
    assert (ref.tag, ref.digest) == (None, None)
    assert str(ref) == "ghcr.io/a"


@pytest.mark.parametrize("tag", ["", "-a", "a/b", "a" * 129, "ä"])
def test_with_tag_rejects(tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_reference("nginx").with_tag(tag)


@pytest.mark.parametrize("digest", ["", "sha256:../../x", f"sha256:{H256.upper()}", "md5:abc", H256])
def test_with_digest_rejects(digest: str) -> None:
    with pytest.raises(InvalidReferenceError, match="sha256:<64 lower-case hex>"):
        parse_reference("nginx").with_digest(digest)


def test_reference_is_frozen_hashable_and_slotted() -> None:
    ref = parse_reference("nginx")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "x"  # type: ignore[misc]
    assert not hasattr(ref, "__dict__")
    assert {ref, parse_reference("docker.io/library/nginx:latest"), parse_reference("nginx:1")} == {
        ref,
        parse_reference("nginx:1"),
    }


def test_constructor_normalizes() -> None:
    ref = Reference("INDEX.docker.io", "nginx", "1", f"sha256:{H256}")  # type: ignore[arg-type]
    assert ref == parse_reference(f"nginx:1@{D256}")
    assert isinstance(ref.digest, Digest)
    assert Reference("ghcr.io", "a") == parse_reference("ghcr.io/a", default_tag=None)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("myhost", "foo"), "would be read as a Docker Hub namespace"),
        (("", "foo"), "registry is empty"),
        (("ghcr.io", "Foo"), "lower case"),
        (("ghcr.io", ""), "repository path is empty"),
        (("ghcr.io", "a", "bad tag"), "tag contains invalid character ' '"),
        (("ghcr.io", "a", None, "sha256:x"), "hex"),
        (("ghcr.io:0", "a"), "between 1 and 65535"),
        (("ghcr.io", "a" * 250), "name longer than 255"),
        (("ghcr.io", 1), "must be strings"),
        ((None, "a"), "must be strings"),
        (("ghcr.io", "a", 1), "must be strings"),
    ],
)
def test_constructor_rejects(args: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference(*args)
    assert fragment in info.value.reason


# --- validate_repository / validate_tag -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["a", "library/nginx", "a/b/c", "a.b", "a_b", "a__b", "a---b", "0", "a" * 255])
def test_validate_repository_accepts(path: str) -> None:
    assert validate_repository(path) == path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "empty"),
        ("A", "lower case"),
        ("a/", "end with '/'"),
        ("/a", "start with '/'"),
        ("a//b", "empty component"),
        ("..", "must start and end"),
        ("a/../../etc", "must start and end"),
        ("a:b", "invalid character ':'"),
        ("a@b", "invalid character '@'"),
        ("a b", "invalid character ' '"),
        ("a" * 256, "longer than 255"),
        ("ghcr.io:5000/a", "invalid character ':'"),
    ],
)
def test_validate_repository_rejects(path: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        validate_repository(path)
    assert fragment in info.value.reason
    assert info.value.reference == path


@pytest.mark.parametrize("tag", ["latest", "1.0", "_", "A", "v1.2.3-rc.1_build", "x" * 128, "0"])
def test_validate_tag_accepts(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [
        ("", "empty"),
        ("x" * 129, "longer than 128"),
        (".a", "must start"),
        ("-a", "must start"),
        ("a:b", "invalid character ':'"),
        ("a@b", "invalid character '@'"),
        ("a/b", "invalid character '/'"),
        ("é", "must start"),
        ("aé", "invalid character"),
        ("٣", "must start"),  # Unicode digit: Python's \w would take it, Go's does not
    ],
)
def test_validate_tag_rejects(tag: str, fragment: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        validate_tag(tag)
    assert fragment in info.value.reason


@pytest.mark.parametrize("value", [None, 5, b"latest"])
def test_validators_reject_non_strings(value: Any) -> None:
    with pytest.raises(InvalidReferenceError):
        validate_tag(value)
    with pytest.raises(InvalidReferenceError):
        validate_repository(value)


# --- hypothesis strategies: valid references built from the grammar -------------------------------------

LOWER_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
TAG_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
JUNK = ":/@.-_[]AZaz09 \t\n\x00\x7f%é\\+~"

alnum_runs = st.text(LOWER_ALNUM, min_size=1, max_size=8)
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    runs = draw(st.lists(alnum_runs, min_size=1, max_size=3))
    text = runs[0]
    for run in runs[1:]:
        text += draw(separators) + run
    return text


host_labels = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
ports = st.integers(1, 65535).map(str)


@st.composite
def registries(draw: st.DrawFn) -> tuple[str, str]:
    """(as typed, normalized) for a first component docker reads as a registry."""
    kind = draw(st.sampled_from(["dns", "label+port", "localhost", "ipv4", "ipv6", "hub"]))
    port = draw(st.none() | ports)
    if kind == "dns":
        host = ".".join(draw(st.lists(host_labels, min_size=2, max_size=4)))
    elif kind == "label+port":
        host = draw(host_labels)
        port = draw(ports)
    elif kind == "localhost":
        host = draw(st.sampled_from(["localhost", "LOCALHOST", "LocalHost"]))
    elif kind == "ipv4":
        host = str(draw(st.ip_addresses(v=4)))
    elif kind == "ipv6":
        address = draw(st.ip_addresses(v=6).map(lambda a: a.exploded if "." in str(a) else str(a)))
        host = "[" + draw(st.sampled_from([address, address.upper()])) + "]"
    else:
        host = draw(st.sampled_from(["docker.io", "index.docker.io", "registry-1.docker.io", "Docker.Io"]))
    typed = host if port is None else f"{host}:{port}"
    normalized = host.lower()
    if normalized in {"index.docker.io", "registry-1.docker.io"} and port is None:
        normalized = "docker.io"
    if port is not None:
        normalized += f":{port}"
    return typed, normalized


tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", fullmatch=True)
digests = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
)


@st.composite
def valid_inputs(draw: st.DrawFn) -> tuple[str, tuple[str, str, str | None, str | None] | None]:
    """A reference as a user might type it, and the expected normalized parts (None: over 255 chars)."""
    registry = draw(st.none() | registries())
    components = draw(st.lists(path_components(), min_size=1, max_size=5))
    if registry is None and len(components) > 1:
        # otherwise docker reads the first component as a registry (covered by the tables)
        assume("." not in components[0] and components[0] != "localhost")
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    path = "/".join(components)
    if registry is None and len(components) == 1:
        # refused on purpose: bare digests and image IDs (covered by the tables)
        assume(not (tag is not None and digest is None and path in {"sha256", "sha512"}))
    text = path if registry is None else f"{registry[0]}/{path}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    expected_registry = "docker.io" if registry is None else registry[1]
    expected_path = path
    if expected_registry == "docker.io" and "/" not in path:
        expected_path = f"library/{path}"
    expected_tag = "latest" if tag is None and digest is None else tag
    if len(expected_registry) + 1 + len(expected_path) > 255:
        return text, None
    return text, (expected_registry, expected_path, expected_tag, digest)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid reference with a few characters inserted, deleted or replaced."""
    text: str = draw(valid_inputs())[0]
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(JUNK))
        if op == "insert":
            text = text[:position] + char + text[position:]
        elif op == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position] + char + text[position + 1 :]
    return text


junk_texts = st.one_of(
    st.text(),
    st.text(JUNK, max_size=40),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=80).map(lambda b: b.decode("utf-8", "replace")),
    mutated(),
)


# --- properties -----------------------------------------------------------------------------------------


@given(valid_inputs())
def test_valid_inputs_parse_to_the_model(case: tuple[str, tuple[str, str, str | None, str | None] | None]) -> None:
    text, expected = case
    if expected is None:
        with pytest.raises(InvalidReferenceError, match="longer than 255"):
            parse_reference(text)
        return
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    assert_grammatical(ref)


@given(valid_inputs())
def test_round_trip(case: tuple[str, object]) -> None:
    text, expected = case
    assume(expected is not None)
    ref = parse_reference(text)
    assert parse_reference(str(ref)) == ref
    assert parse_reference(str(ref), default_tag=None) == ref
    assert parse_reference(ref.familiar, default_tag=None) == ref
    bare = ref.without_identifier()
    assert parse_reference(str(bare), default_tag=None) == bare
    assert parse_reference(bare.familiar, default_tag=None) == bare
    assert Reference(ref.registry, ref.repository, ref.tag, ref.digest) == ref


@given(junk_texts)
@settings(max_examples=500, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
def test_arbitrary_text_raises_only_invalid_reference_and_output_is_grammatical(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError as exc:
        assert exc.reason
        return
    assert_grammatical(ref)
    # normalization is idempotent
    assert str(parse_reference(str(ref))) == str(ref)
    assert parse_reference(str(ref)) == ref
    assert parse_reference(ref.familiar) == ref


@given(st.one_of(valid_inputs().map(lambda case: case[0]), mutated()))
def test_normalization_is_idempotent(text: str) -> None:
    try:
        once = str(parse_reference(text))
    except InvalidReferenceError:
        return
    assert str(parse_reference(once)) == once
    assert str(parse_reference(str(parse_reference(once)))) == once


tag_candidates = st.one_of(
    st.text(max_size=140),
    tags,
    st.text(TAG_ALPHABET, min_size=0, max_size=140),
    st.text(TAG_ALPHABET, min_size=125, max_size=132),
    st.text(TAG_ALPHABET + ":/@ é٣\n", max_size=20),
)


@given(tag_candidates)
def test_validate_tag_accepts_exactly_the_grammar(tag: str) -> None:
    grammatical = TAG_RE.fullmatch(tag) is not None
    try:
        assert validate_tag(tag) == tag
    except InvalidReferenceError:
        assert not grammatical, tag
    else:
        assert grammatical, tag


path_candidates = st.one_of(
    st.text(max_size=40),
    st.lists(path_components(), min_size=1, max_size=5).map("/".join),
    st.text(LOWER_ALNUM + "._-/", max_size=40),
    st.text("a._-/", max_size=20),
    mutated(),
)


@given(path_candidates)
def test_validate_repository_accepts_exactly_the_grammar(path: str) -> None:
    grammatical = PATH_RE.fullmatch(path) is not None and len(path) <= 255
    try:
        assert validate_repository(path) == path
    except InvalidReferenceError:
        assert not grammatical, path
    else:
        assert grammatical, path


@given(st.text(max_size=40), st.text(max_size=40))
def test_validators_raise_only_invalid_reference(tag: str, path: str) -> None:
    for validator, value in ((validate_tag, tag), (validate_repository, path)):
        try:
            validator(value)
        except InvalidReferenceError as exc:
            assert exc.reason
