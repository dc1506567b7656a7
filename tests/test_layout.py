"""Tests for ocicopy.layout: reference parsing (table + hypothesis), the layout store on a real file system
(byte-exact round trips, index.json rules, refused input, atomic blob writes, cancellation) and concurrent
writers (tasks and processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.images import OCI_MANIFEST, Image, Index, layer, make_artifact, make_image, make_index, sha256
from ocicopy.digest import Digest
from ocicopy.errors import (
    BodyTooLargeError,
    DigestMismatchError,
    InputError,
    InvalidDigestError,
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
)
from ocicopy.layout import (
    CHUNK_SIZE,
    INDEX_JSON_LIMIT,
    REF_NAME,
    Layout,
    LayoutReference,
    is_layout_reference,
    parse_layout_reference,
)
from ocicopy.models import Descriptor, Manifest, ManifestInfo, parse_manifest
from ocicopy.options import Limits
from ocicopy.reference import Reference
from ocicopy.store import Store

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
H256 = "0123456789abcdef" * 4
H512 = "fedcba9876543210" * 8
D256 = Digest(f"sha256:{H256}")
D512 = Digest(f"sha512:{H512}")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


# --- helpers ---------------------------------------------------------------------------------------------


async def chunked(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(layout: Layout, digest: str, offset: int = 0) -> bytes:
    """The whole blob; ``digest`` is passed through as given (unvalidated strings too: a descriptor built
    without validation, so that the layout's own checks are what is tested)."""
    desc = Descriptor.model_construct(media_type="application/octet-stream", digest=digest, size=0)
    return b"".join([chunk async for chunk in layout.read_blob(desc, offset)])


async def put_blobs(layout: Layout, blobs: dict[str, bytes]) -> None:
    for digest, data in blobs.items():
        await layout.write_blob(Digest(digest), len(data), chunked(data))


async def put_image(layout: Layout, image: Image, reference: str, *, root: bool = True) -> Manifest:
    await put_blobs(layout, image.blobs())
    manifest = parse_manifest(image.manifest)
    await layout.manifest_put(reference, manifest, root=root)
    return manifest


def index_json(path: Path) -> dict[str, Any]:
    return json.loads((path / "index.json").read_bytes())  # type: ignore[no-any-return]


def entries(path: Path) -> list[dict[str, Any]]:
    return index_json(path)["manifests"]  # type: ignore[no-any-return]


def leftovers(path: Path) -> list[str]:
    """Temp files anywhere in the layout."""
    return [str(p) for p in path.rglob(".ocicopy-tmp-*")]


def temp_sizes(path: Path) -> list[int]:
    return [p.stat().st_size for p in path.rglob(".ocicopy-tmp-*")]


def listing(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir())


def small_image(seed: int) -> Image:
    return make_image([layer(seed, 256)])


# --- parse_layout_reference ------------------------------------------------------------------------------

VALID = [
    ("oci:/srv/layout", "/srv/layout", None, None),
    ("oci:/srv/layout:v1.2", "/srv/layout", "v1.2", None),
    ("oci:/srv/layout:_x-Y.z", "/srv/layout", "_x-Y.z", None),
    (f"oci:/srv/layout@{D256}", "/srv/layout", None, D256),
    (f"oci:/srv/layout@{D512}", "/srv/layout", None, D512),
    (f"oci:/srv/layout:v1@{D256}", "/srv/layout", "v1", D256),
    ("oci:/srv/../srv/./layout/", "/srv/layout", None, None),
    ("oci:/srv/my layout:t", "/srv/my layout", "t", None),
    ("oci:/", "/", None, None),
]


@pytest.mark.parametrize(("text", "path", "tag", "digest"), VALID)
def test_parse_valid(text: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_layout_reference(text)
    assert (ref.path, ref.tag, ref.digest) == (Path(path), tag, digest)
    assert parse_layout_reference(str(ref)) == ref


def test_parse_relative_and_home_paths() -> None:
    assert parse_layout_reference("oci:a/b:t").path == Path.cwd() / "a" / "b"
    assert parse_layout_reference("oci:./a/../b").path == Path.cwd() / "b"
    assert parse_layout_reference("oci:~/lay").path == Path.home() / "lay"


INVALID = [
    ("", "starts with 'oci:'"),
    ("docker://x/y:1", "starts with 'oci:'"),
    ("/srv/layout", "starts with 'oci:'"),
    ("oci:", "layout path is empty"),
    ("oci::tag", "layout path is empty"),
    (f"oci:@{D256}", "layout path is empty"),
    ("oci:/srv/l:", "tag is empty"),
    ("oci:/srv/l:a:b", "invalid character ':'"),
    ("oci:/srv/l:.hidden", "must start with"),
    ("oci:/srv/l:-x", "must start with"),
    ("oci:/srv/l:" + "a" * 129, "longer than 128"),
    ("oci:/srv/l:a/b", "invalid character '/'"),
    ("oci:/srv/l@sha256:abc", "digest must be"),
    ("oci:/srv/l@" + D256.upper(), "digest must be"),
    ("oci:/srv/l@md5:" + "0" * 32, "digest must be"),
    ("oci:/srv/l@", "digest must be"),
    ("oci:/srv/l@sha256:../../etc", "digest must be"),
    (f"oci:/a@b/l@{D256}", "must not contain '@'"),
    ("oci:/srv/l\x00x", "control characters"),
    ("oci:/srv/l\nx", "control characters"),
    ("oci:/" + "a" * 5000, "longer than 4096"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_parse_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_layout_reference(text)
    assert reason in info.value.reason
    assert isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(InvalidReferenceError, match="must be a string"):
        parse_layout_reference(b"oci:/x")  # type: ignore[arg-type]


SEGMENTS = st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,11}", fullmatch=True), min_size=1, max_size=4)
TAGS = st.from_regex(TAG_RE, fullmatch=True)
DIGESTS = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
)


def _normalized(segments: list[str]) -> str:
    return os.path.normpath("/" + "/".join(segments))


@given(SEGMENTS, st.none() | TAGS, st.none() | DIGESTS)
def test_round_trip_property(segments: list[str], tag: str | None, digest: str | None) -> None:
    text = "oci:" + _normalized(segments) + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_layout_reference(text)
    assert str(ref) == text
    assert (ref.tag, ref.digest) == (tag, digest)
    assert ref.identifier == (digest or tag)
    relative = parse_layout_reference("oci:" + "/".join(segments) + (f":{tag}" if tag else ""))
    assert parse_layout_reference(str(relative)) == relative


BAD_DIGESTS = st.one_of(
    st.text("0123456789abcdef", min_size=0, max_size=130)
    .filter(lambda h: len(h) not in (64, 128))
    .flatmap(lambda h: st.sampled_from([f"sha256:{h}", f"sha512:{h}"])),
    st.text("0123456789abcdef", min_size=64, max_size=64)
    .filter(lambda h: any(c.isalpha() for c in h))
    .map(lambda h: f"sha256:{h.upper()}"),
    st.text("0123456789abcdefxyz./", min_size=64, max_size=64)
    .filter(lambda h: re.search("[^0-9a-f]", h) is not None)
    .map(lambda h: f"sha256:{h}"),
    st.sampled_from(["sha384", "md5", "SHA256", "sha-256", ""]).map(lambda a: f"{a}:{H256}"),
)


@given(SEGMENTS, BAD_DIGESTS)
def test_invalid_digests_rejected(segments: list[str], digest: str) -> None:
    with pytest.raises(InvalidReferenceError, match="digest must be"):
        parse_layout_reference(f"oci:{_normalized(segments)}@{digest}")


BAD_TAGS = st.text(st.characters(codec="ascii", exclude_characters="@"), min_size=1, max_size=140).filter(
    lambda t: TAG_RE.fullmatch(t) is None
)


@given(SEGMENTS, BAD_TAGS)
def test_invalid_tags_rejected(segments: list[str], tag: str) -> None:
    with pytest.raises(InvalidReferenceError):
        parse_layout_reference(f"oci:{_normalized(segments)}:{tag}")


def test_reference_methods() -> None:
    ref = parse_layout_reference("oci:/srv/l:v1")
    assert ref.is_layout and LayoutReference.is_layout
    assert not hasattr(Reference("docker.io", "library/x", "1", None), "is_layout")
    assert ref.identifier == "v1"
    pinned = ref.with_digest(D256)
    assert str(pinned) == f"oci:/srv/l:v1@{D256}" and pinned.identifier == D256
    assert str(pinned.with_tag("v2")) == "oci:/srv/l:v2"
    assert str(pinned.without_identifier()) == "oci:/srv/l"
    assert pinned.without_identifier().identifier is None
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:../..")
    with pytest.raises(InvalidReferenceError, match="must not contain ':'"):
        LayoutReference(Path("/a:b"))
    assert LayoutReference(Path("/a/./b/../c")).path == Path("/a/c")
    assert is_layout_reference("oci:/x") and not is_layout_reference("docker.io/x") and not is_layout_reference("x")


# --- the store: round trips ------------------------------------------------------------------------------


async def test_write_and_read_image_byte_exact(tmp_path: Path) -> None:
    path = tmp_path / "new" / "layout"
    layout = Layout(path)
    assert isinstance(layout, Store)
    assert (layout.host, layout.repository, str(layout)) == (f"oci:{path}", "", f"oci:{path}")
    image = make_image([layer(1, 300_000), layer(2, 2 * CHUNK_SIZE + 5)])
    manifest = await put_image(layout, image, "v1")

    assert json.loads((path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert entries(path) == [
        {
            "mediaType": image.media_type,
            "digest": image.digest,
            "size": len(image.manifest),
            "annotations": {REF_NAME: "v1"},
        }
    ]
    assert (path / "blobs" / "sha256" / image.digest.split(":")[1]).read_bytes() == image.manifest
    got = await Layout(path).manifest_get("v1")
    assert (got.raw, got.digest, got.media_type) == (image.manifest, manifest.digest, image.media_type)
    assert await layout.manifest_get(image.digest) == got
    info = ManifestInfo(Digest(image.digest), image.media_type, len(image.manifest))
    assert await layout.manifest_head("v1") == info
    assert await layout.manifest_head(image.digest) == info
    for digest, data in image.blobs().items():
        assert await layout.blob_exists(Digest(digest)) == len(data)
        assert await read_all(layout, digest) == data
        assert await read_all(layout, digest, 100) == data[100:]
    assert await layout.tags() == ["v1"]
    assert await layout.referrers(Digest(image.digest)) is None
    assert leftovers(path) == []


async def test_index_children_are_blobs_only(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    index: Index = make_index([small_image(1), make_image([layer(2, 100)], platform=("linux", "arm64", "v8"))])
    for child in index.images:
        await put_image(layout, child, child.digest, root=False)
    assert entries(tmp_path) == []
    await layout.manifest_put("multi", parse_manifest(index.manifest))
    assert [e["digest"] for e in entries(tmp_path)] == [index.digest]
    got = await layout.manifest_get("multi")
    assert got.raw == index.manifest and got.is_index
    for child in index.images:
        assert (await layout.manifest_get(child.digest)).raw == child.manifest
        assert await layout.manifest_head(child.digest) == ManifestInfo(
            Digest(child.digest), child.media_type, len(child.manifest)
        )


async def test_untagged_root_listed_once(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    image = small_image(3)
    await put_image(layout, image, image.digest)
    await put_image(layout, image, image.digest)
    assert entries(tmp_path) == [{"mediaType": image.media_type, "digest": image.digest, "size": len(image.manifest)}]
    assert await layout.tags() == []
    await layout.manifest_put("t", parse_manifest(image.manifest))
    await layout.manifest_put(image.digest, parse_manifest(image.manifest))
    assert len(entries(tmp_path)) == 2
    assert await layout.tags() == ["t"]


async def test_retag_replaces_and_keeps_other_tags(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first, second = small_image(4), small_image(5)
    await put_image(layout, first, "keep")
    await put_image(layout, first, "moving")
    await put_image(layout, second, "moving")
    assert [(e["annotations"][REF_NAME], e["digest"]) for e in entries(tmp_path)] == [
        ("keep", first.digest),
        ("moving", second.digest),
    ]
    assert (await layout.manifest_get("moving")).raw == second.manifest
    before = (tmp_path / "index.json").stat().st_mtime_ns, (tmp_path / "index.json").read_bytes()
    await layout.manifest_put("moving", parse_manifest(second.manifest))  # same again: index untouched
    assert ((tmp_path / "index.json").stat().st_mtime_ns, (tmp_path / "index.json").read_bytes()) == before


async def test_duplicate_tag_last_entry_wins_and_retag_removes_all(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first, second = small_image(6), small_image(7)
    await put_image(layout, first, first.digest)
    await put_image(layout, second, second.digest)
    index = index_json(tmp_path)
    for entry in index["manifests"]:
        entry["annotations"] = {REF_NAME: "dup"}
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert (await layout.manifest_get("dup")).raw == second.manifest
    assert (await layout.manifest_head("dup")) is not None
    assert await layout.tags() == ["dup"]
    await layout.manifest_put("dup", parse_manifest(first.manifest))
    assert [e["digest"] for e in entries(tmp_path)] == [first.digest]


async def test_unknown_fields_preserved(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    image = small_image(8)
    await put_image(layout, image, "a")
    index = index_json(tmp_path)
    index["annotations"] = {"org.example.index": "yes"}
    index["x-extra"] = [1, 2]
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "amd64"}
    index["manifests"][0]["annotations"]["org.example.entry"] = "ü"
    (tmp_path / "index.json").write_text(json.dumps(index))
    await put_image(layout, small_image(9), "b")
    after = index_json(tmp_path)
    assert after["annotations"] == {"org.example.index": "yes"} and after["x-extra"] == [1, 2]
    assert after["manifests"][0] == index["manifests"][0]
    assert [e["annotations"][REF_NAME] for e in after["manifests"]] == ["a", "b"]


async def test_artifact_type_kept_in_index_entry(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    artifact = make_artifact(artifact_type="application/vnd.example.sbom")
    await put_blobs(layout, artifact.blobs())
    await layout.manifest_put("sbom", parse_manifest(artifact.manifest))
    assert entries(tmp_path)[0]["artifactType"] == "application/vnd.example.sbom"
    assert (await layout.manifest_get("sbom")).raw == artifact.manifest


async def test_put_under_foreign_digest_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    image = small_image(10)
    with pytest.raises(InputError, match="another digest"):
        await layout.manifest_put(D256, parse_manifest(image.manifest))
    with pytest.raises(InvalidReferenceError):
        await layout.manifest_put("../etc", parse_manifest(image.manifest))
    assert listing(tmp_path) == []


# --- not found, refused layouts, caps --------------------------------------------------------------------


async def test_not_found(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    await put_image(layout, small_image(11), "there")
    assert await layout.manifest_head("absent") is None
    assert await layout.manifest_head(D256) is None
    assert await layout.blob_exists(D256) is None
    with pytest.raises(NotFoundError, match="no tag 'absent'") as info:
        await layout.manifest_get("absent")
    assert info.value.status == 0  # a directory, not an HTTP answer (issue 11: no "HTTP 404" for a local path)
    assert "HTTP" not in str(info.value)
    with pytest.raises(NotFoundError, match="manifest unknown"):
        await layout.manifest_get(D256)
    with pytest.raises(NotFoundError, match="blob unknown"):
        await read_all(layout, D256)


async def test_tag_whose_blob_is_missing_or_truncated_is_absent(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    image = small_image(12)
    await put_image(layout, image, "t")
    blob = tmp_path / "blobs" / "sha256" / image.digest.split(":")[1]
    blob.write_bytes(image.manifest[:-1])  # still JSON (the final newline is gone): only the digest tells
    assert await layout.manifest_head("t") is None
    with pytest.raises(DigestMismatchError):
        await layout.manifest_get("t")
    await put_image(layout, image, "t")  # repaired: a blob of the wrong size is rewritten
    assert blob.read_bytes() == image.manifest
    blob.unlink()
    assert await layout.manifest_head("t") is None
    with pytest.raises(NotFoundError):
        await layout.manifest_get("t")


async def test_missing_layout(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "nowhere")
    assert await layout.manifest_head("t") is None
    assert await layout.tags() == []
    assert await layout.blob_exists(D256) is None
    with pytest.raises(InputError, match="no OCI image layout"):
        await layout.manifest_get("t")
    with pytest.raises(InputError, match="no OCI image layout"):
        await read_all(layout, D256)
    assert not (tmp_path / "nowhere").exists()


async def test_not_a_layout_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    layout = Layout(tmp_path)
    assert await layout.manifest_head("t") is None
    assert await layout.tags() == []
    with pytest.raises(InputError, match="not an OCI image layout") as info:
        await layout.manifest_get("t")
    assert not isinstance(info.value, NotFoundError)
    data = b"x"
    with pytest.raises(InputError, match="refusing to write"):
        await layout.write_blob(Digest(sha256(data)), 1, chunked(data))
    assert listing(tmp_path) == ["notes.txt"]


def test_layout_path_refused() -> None:
    for bad in ["", "/tmp/a\x00b"]:
        with pytest.raises(InputError, match="invalid layout path"):
            Layout(bad)
    assert Layout("rel/../x").root == Path.cwd() / "x"


async def test_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    layout = Layout(tmp_path / "file")
    assert await layout.manifest_head("t") is None
    with pytest.raises(InputError, match="not a directory"):
        await put_image(layout, small_image(13), "t")


@pytest.mark.parametrize("version", ["2.0.0", "0.9", "", 1])
async def test_unsupported_layout_version(tmp_path: Path, version: object) -> None:
    (tmp_path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": version}))
    (tmp_path / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    layout = Layout(tmp_path)
    for attempt in (layout.manifest_get("t"), layout.manifest_head("t"), put_image(layout, small_image(14), "t")):
        with pytest.raises(InputError, match=r"layout version|imageLayoutVersion"):
            await attempt


async def test_layout_version_1x_accepted(tmp_path: Path) -> None:
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "1.1.0", "extra": true}')
    layout = Layout(tmp_path)
    await put_image(layout, small_image(15), "t")  # index.json missing: created
    assert await layout.tags() == ["t"]
    assert json.loads((tmp_path / "oci-layout").read_bytes())["imageLayoutVersion"] == "1.1.0"


MALFORMED_INDEX = [
    (b"{", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"schemaVersion": 2}', "no 'manifests' list"),
    (b'{"manifests": {}}', "no 'manifests' list"),
    (b'{"manifests": [1]}', "manifests[0] is not a JSON object"),
]
BAD_ENTRY = json.dumps(
    {"manifests": [{"mediaType": OCI_MANIFEST, "digest": "sha256:../../x", "size": 2, "annotations": {REF_NAME: "t"}}]}
).encode()


def assert_one_line(error: Exception, message: str) -> None:
    assert message in str(error)
    assert "\n" not in str(error) and len(str(error)) < 400


@pytest.mark.parametrize(("content", "message"), MALFORMED_INDEX)
async def test_malformed_index_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    layout = Layout(tmp_path)
    await put_blobs(layout, {sha256(b"x"): b"x"})
    (tmp_path / "index.json").write_bytes(content)
    for attempt in (layout.manifest_get("t"), layout.manifest_head("t"), put_image(layout, small_image(16), "t")):
        with pytest.raises(ManifestError) as info:
            await attempt
        assert_one_line(info.value, message)
    assert (tmp_path / "index.json").read_bytes() == content


async def test_invalid_index_entry(tmp_path: Path) -> None:
    """An invalid entry is an error when it is the one asked for; other tags are still written beside it."""
    layout = Layout(tmp_path)
    await put_blobs(layout, {sha256(b"x"): b"x"})
    (tmp_path / "index.json").write_bytes(BAD_ENTRY)
    with pytest.raises(ManifestError) as info:
        await layout.manifest_get("t")
    assert_one_line(info.value, "entry for 't' is invalid: digest")
    image = small_image(16)
    await put_image(layout, image, "other")
    assert (await layout.manifest_get("other")).raw == image.manifest
    assert entries(tmp_path)[0] == json.loads(BAD_ENTRY)["manifests"][0]


async def test_index_json_size_cap(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    await put_image(layout, small_image(17), "t")
    with (tmp_path / "index.json").open("r+b") as handle:
        handle.truncate(INDEX_JSON_LIMIT + 1)
    with pytest.raises(BodyTooLargeError):
        await layout.manifest_head("t")
    with pytest.raises(BodyTooLargeError):
        await layout.tags()


async def test_manifest_size_cap(tmp_path: Path) -> None:
    image = make_image([layer(seed, 10) for seed in range(12)])  # over 1 KiB of manifest
    assert len(image.manifest) > 1024
    await put_image(Layout(tmp_path), image, "big")
    capped = Layout(tmp_path, limits=Limits(manifest_bytes=1024))
    with pytest.raises(BodyTooLargeError, match="1024-byte limit"):
        await capped.manifest_get("big")
    with pytest.raises(BodyTooLargeError):
        await capped.manifest_get(image.digest)
    assert (await Layout(tmp_path).manifest_get("big")).raw == image.manifest


# --- blob writes -----------------------------------------------------------------------------------------


async def test_write_blob_rejects_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = os.urandom(3 * CHUNK_SIZE // 2)
    digest = Digest(sha256(data))
    blob = tmp_path / "blobs" / "sha256" / digest.hex
    wrong = bytearray(data)
    wrong[-1] ^= 1
    cases = [(bytes(wrong), len(data), "content digest differs"), (data[:-1], len(data), "size differs")]
    for body, size, reason in cases:
        with pytest.raises(DigestMismatchError, match=reason):
            await layout.write_blob(digest, size, chunked(body, 65536))
        assert not blob.exists() and leftovers(tmp_path) == []
    assert await layout.blob_exists(digest) is None


async def test_write_blob_refuses_long_body_as_soon_as_seen(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = b"a" * 1000
    consumed: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for number in range(1_000_000):
            consumed.append(number)
            yield data[:300]

    with pytest.raises(DigestMismatchError, match="longer than descriptor"):
        await layout.write_blob(Digest(sha256(data)), len(data), endless())
    assert len(consumed) == 4
    assert not (tmp_path / "blobs" / "sha256" / sha256(data).split(":")[1]).exists()
    assert leftovers(tmp_path) == []


async def test_write_blob_existing_consumes_nothing(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = b"hello blob"
    await layout.write_blob(Digest(sha256(data)), len(data), chunked(data))

    async def untouchable() -> AsyncIterator[bytes]:
        raise AssertionError("body consumed")
        yield b""  # pragma: no cover

    await layout.write_blob(Digest(sha256(data)), len(data), untouchable())
    assert await read_all(layout, sha256(data)) == data


async def test_write_blob_sha512_and_empty(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = b"sha512 content"
    digest = Digest.of(data, "sha512")
    await layout.write_blob(digest, len(data), chunked(data))
    assert (tmp_path / "blobs" / "sha512" / digest.hex).read_bytes() == data
    empty = Digest.of(b"")
    await layout.write_blob(empty, 0, chunked(b""))
    assert await layout.blob_exists(empty) == 0
    assert await read_all(layout, empty) == b""


async def test_cancellation_mid_write_leaves_no_temp_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    data = os.urandom(3 * CHUNK_SIZE)
    started = anyio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield data[: 2 * CHUNK_SIZE]  # over one write's worth: bytes reach the temp file
        started.set()
        await anyio.sleep_forever()
        yield data  # pragma: no cover

    async with anyio.create_task_group() as group:
        group.start_soon(layout.write_blob, Digest(sha256(data)), len(data), stalls())
        await started.wait()
        await anyio.sleep(0.05)
        assert temp_sizes(tmp_path) == [2 * CHUNK_SIZE]
        group.cancel_scope.cancel()
    assert leftovers(tmp_path) == []
    assert await layout.blob_exists(Digest(sha256(data))) is None


async def test_path_traversal_impossible(tmp_path: Path) -> None:
    path = tmp_path / "layout"
    layout = Layout(path)
    for bad in ["sha256:../../../etc/passwd", "sha256:..", "../sha256", f"SHA256:{H256}", f"sha256:{H256}/.."]:
        with pytest.raises(InvalidDigestError):
            await layout.blob_exists(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidDigestError):
            await layout.write_blob(bad, 1, chunked(b"x"))  # type: ignore[arg-type]
        with pytest.raises(InvalidDigestError):
            await read_all(layout, bad)
        for verb in (layout.manifest_get, layout.manifest_head):
            with pytest.raises(InvalidDigestError if ":" in bad else InvalidReferenceError):
                await verb(bad)
    for bad_tag in ["../x", "a/b", ".x", ""]:
        with pytest.raises(InvalidReferenceError):
            await layout.manifest_get(bad_tag)
        with pytest.raises(InvalidReferenceError):
            await layout.manifest_put(bad_tag, parse_manifest(small_image(18).manifest))
    assert not path.exists()
    assert listing(tmp_path) == []


# --- concurrency -----------------------------------------------------------------------------------------


async def test_concurrent_tasks_lose_no_tag(tmp_path: Path) -> None:
    images = {f"task-{n}": small_image(100 + n) for n in range(20)}
    shared = Layout(tmp_path)

    async def tag(name: str, image: Image, own_object: bool) -> None:
        await put_image(Layout(tmp_path) if own_object else shared, image, name)

    async with anyio.create_task_group() as group:
        for number, (name, image) in enumerate(images.items()):
            group.start_soon(tag, name, image, number % 2 == 0)
    assert sorted(await shared.tags()) == sorted(images)
    for name, image in images.items():
        assert (await shared.manifest_get(name)).raw == image.manifest
    assert len(entries(tmp_path)) == 20
    assert leftovers(tmp_path) == []


WORKER = """
import sys
import anyio
from ocicopy.digest import Digest
from ocicopy.layout import Layout
from ocicopy.models import parse_manifest
from harness.images import layer, make_image

async def one(data):
    yield data

async def main(path, worker, count):
    for number in range(count):
        image = make_image([layer(1000 * worker + number, 64)])
        layout = Layout(path)
        for digest, data in image.blobs().items():
            await layout.write_blob(Digest(digest), len(data), one(data))
        await layout.manifest_put(f"w{worker}-{number}", parse_manifest(image.manifest))

anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


def test_concurrent_processes_lose_no_tag(tmp_path: Path) -> None:
    workers, count = 4, 15
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path), str(worker), str(count)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )
        for worker in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    expected = {f"w{w}-{n}" for w in range(workers) for n in range(count)}
    tags = anyio.run(Layout(tmp_path).tags)
    assert sorted(tags) == sorted(expected)
    for worker in range(workers):
        image = make_image([layer(1000 * worker + count - 1, 64)])
        got = anyio.run(Layout(tmp_path).manifest_get, f"w{worker}-{count - 1}")
        assert got.raw == image.manifest
    assert leftovers(tmp_path) == []
