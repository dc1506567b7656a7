"""Tests for ocicopy.models.parse_manifest: every manifest kind, the media-type decision table, raw bytes kept
exactly, the rejects (schema 1, ambiguous shapes, header disagreement, malformed documents), and properties over
arbitrary JSON formatting of the same document."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.errors import DigestMismatchError, ManifestError, UnsupportedManifestError
from ocicopy.models import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageManifest,
    IndexManifest,
    parse_manifest,
)

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def desc(media_type: str, n: int, size: int = 100, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": dg(n), "size": size, **extra}


def image_doc(media_type: str | None = OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
    config_type = DOCKER_CONFIG if media_type == DOCKER_MANIFEST else OCI_CONFIG
    layer_type = DOCKER_LAYER if media_type == DOCKER_MANIFEST else OCI_LAYER
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    doc["config"] = desc(config_type, 1, 1469)
    doc["layers"] = [desc(layer_type, 2, 3000), desc(layer_type, 3, 4000)]
    doc.update(extra)
    return doc


def index_doc(media_type: str | None = OCI_INDEX, **extra: Any) -> dict[str, Any]:
    child = DOCKER_MANIFEST if media_type == DOCKER_MANIFEST_LIST else OCI_MANIFEST
    doc: dict[str, Any] = {"schemaVersion": 2}
    if media_type is not None:
        doc["mediaType"] = media_type
    doc["manifests"] = [
        desc(child, 10, 500, platform={"os": "linux", "architecture": "amd64"}),
        desc(child, 11, 501, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ]
    doc.update(extra)
    return doc


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --- the kinds ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "content_type", "media_type", "is_index"),
    [
        pytest.param(image_doc(OCI_MANIFEST), OCI_MANIFEST, OCI_MANIFEST, False, id="oci-image"),
        pytest.param(index_doc(OCI_INDEX), OCI_INDEX, OCI_INDEX, True, id="oci-index"),
        pytest.param(image_doc(DOCKER_MANIFEST), DOCKER_MANIFEST, DOCKER_MANIFEST, False, id="docker-v2s2"),
        pytest.param(
            index_doc(DOCKER_MANIFEST_LIST), DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_LIST, True, id="docker-list"
        ),
        pytest.param(image_doc(OCI_MANIFEST), None, OCI_MANIFEST, False, id="no-content-type"),
        pytest.param(image_doc(None), None, OCI_MANIFEST, False, id="no-media-type-image-shape"),
        pytest.param(index_doc(None), None, OCI_INDEX, True, id="no-media-type-index-shape"),
        pytest.param(image_doc(None), OCI_MANIFEST, OCI_MANIFEST, False, id="header-only-oci"),
        pytest.param(image_doc(None), DOCKER_MANIFEST, DOCKER_MANIFEST, False, id="header-only-docker"),
        pytest.param(index_doc(None), DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_LIST, True, id="header-only-list"),
        pytest.param(image_doc(None), "application/json", OCI_MANIFEST, False, id="generic-header-shape"),
        pytest.param(image_doc(OCI_MANIFEST), "application/json", OCI_MANIFEST, False, id="generic-header-body"),
        pytest.param(image_doc(None), "application/octet-stream", OCI_MANIFEST, False, id="octet-stream-header"),
        pytest.param(
            image_doc(OCI_MANIFEST), f"{OCI_MANIFEST}; charset=utf-8", OCI_MANIFEST, False, id="header-with-params"
        ),
        pytest.param(
            index_doc(None), f"  {OCI_INDEX.upper()} ;charset=UTF-8", OCI_INDEX, True, id="header-case-and-space"
        ),
        pytest.param(image_doc(OCI_MANIFEST), "", OCI_MANIFEST, False, id="empty-header"),
    ],
)
def test_kinds_and_media_type_decision(
    doc: dict[str, Any], content_type: str | None, media_type: str, is_index: bool
) -> None:
    body = raw(doc)
    m = parse_manifest(body, content_type)
    assert m.media_type == media_type
    assert m.is_index is is_index
    assert isinstance(m.view, IndexManifest if is_index else ImageManifest)
    assert m.raw is body
    assert m.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert m.size == len(body)


def test_image_blobs_and_children() -> None:
    m = parse_manifest(raw(image_doc()), OCI_MANIFEST)
    assert [b.digest for b in m.blobs()] == [dg(1), dg(2), dg(3)]
    assert [b.size for b in m.blobs()] == [1469, 3000, 4000]
    assert m.blobs()[0].media_type == OCI_CONFIG
    assert m.children() == []


def test_index_children_and_blobs() -> None:
    m = parse_manifest(raw(index_doc()), OCI_INDEX)
    assert [c.digest for c in m.children()] == [dg(10), dg(11)]
    assert [str(c.platform) for c in m.children()] == ["linux/amd64", "linux/arm64/v8"]
    assert m.blobs() == []


def test_children_is_a_copy() -> None:
    m = parse_manifest(raw(index_doc()), OCI_INDEX)
    m.children().clear()
    m.blobs().append(m.children()[0])
    assert len(m.children()) == 2
    assert m.blobs() == []


def test_descriptor_describes_the_raw_bytes() -> None:
    body = json.dumps(index_doc(), indent=3).encode()
    m = parse_manifest(body, OCI_INDEX)
    d = m.descriptor()
    assert d.media_type == OCI_INDEX
    assert d.digest == Digest.of(body)
    assert d.size == len(body)
    assert d.model_dump(by_alias=True, exclude_none=True) == {
        "mediaType": OCI_INDEX,
        "digest": Digest.of(body),
        "size": len(body),
    }


def test_oci_artifact_with_empty_config_and_subject() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2, "data": "e30="},
        "layers": [desc("application/vnd.example.sbom.v1+json", 5, 1234)],
        "subject": desc(OCI_MANIFEST, 6, 789),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    m = parse_manifest(raw(doc), OCI_MANIFEST)
    assert isinstance(m.view, ImageManifest)
    assert m.view.artifact_type == "application/vnd.example.sbom.v1+json"
    assert m.view.config.media_type == OCI_EMPTY
    assert m.view.config.digest == Digest.of(b"{}")
    assert m.view.subject is not None
    assert m.view.subject.digest == dg(6)
    assert [b.digest for b in m.blobs()] == [EMPTY_DIGEST, dg(5)]
    assert m.view.annotations == {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}


def test_artifact_with_no_layers() -> None:
    doc = image_doc(artifactType="application/vnd.example+type", layers=[])
    m = parse_manifest(raw(doc), OCI_MANIFEST)
    assert [b.digest for b in m.blobs()] == [dg(1)]


def test_index_with_subject_and_artifact_type() -> None:
    doc = index_doc(artifactType="application/vnd.example", subject=desc(OCI_MANIFEST, 7, 10))
    m = parse_manifest(raw(doc), OCI_INDEX)
    assert isinstance(m.view, IndexManifest)
    assert m.view.artifact_type == "application/vnd.example"
    assert m.view.subject is not None
    assert m.view.subject.digest == dg(7)


def test_unknown_fields_are_kept_in_the_view_and_the_bytes() -> None:
    doc = image_doc()
    doc["x-vendor"] = {"nested": [1, 2]}
    body = raw(doc)
    m = parse_manifest(body, OCI_MANIFEST)
    assert m.raw == body
    assert (m.view.model_extra or {}).get("x-vendor") == {"nested": [1, 2]}


def test_descriptor_optional_fields() -> None:
    layer = desc(OCI_LAYER, 2, 3000, urls=["https://example.com/l"], annotations={"a": "b"})
    m = parse_manifest(raw(image_doc(layers=[layer])), OCI_MANIFEST)
    got = m.blobs()[1]
    assert got.urls == ["https://example.com/l"]
    assert got.annotations == {"a": "b"}


def test_windows_platform_aliases() -> None:
    entry = desc(
        OCI_MANIFEST,
        12,
        10,
        platform={"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1", "os.features": ["win32k"]},
    )
    m = parse_manifest(raw(index_doc(manifests=[entry])), OCI_INDEX)
    p = m.children()[0].platform
    assert p is not None
    assert p.os_version == "10.0.17763.1"
    assert p.os_features == ["win32k"]
    assert str(p) == "windows/amd64"


def test_manifest_accept_lists_every_copyable_type() -> None:
    accepted = [t.strip() for t in MANIFEST_ACCEPT.split(",")]
    assert set(accepted) == {OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST}
    assert DOCKER_SCHEMA1 not in accepted


# --- digest checks ----------------------------------------------------------------------------------------------


def test_fetched_by_matching_digest() -> None:
    body = raw(image_doc())
    m = parse_manifest(body, OCI_MANIFEST, Digest.of(body))
    assert m.digest == Digest.of(body)


def test_fetched_by_sha512_digest_keeps_the_algorithm() -> None:
    body = raw(image_doc())
    d = Digest.of(body, "sha512")
    m = parse_manifest(body, OCI_MANIFEST, d)
    assert m.digest == d
    assert m.digest.algorithm == "sha512"


def test_fetched_by_other_digest_is_a_mismatch() -> None:
    body = raw(image_doc())
    wanted = Digest.of(body + b" ")
    with pytest.raises(DigestMismatchError) as info:
        parse_manifest(body, OCI_MANIFEST, wanted)
    assert info.value.expected == wanted
    assert info.value.actual == Digest.of(body)


# --- rejects -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(raw({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}), None, id="schema-version-1"),
        pytest.param(
            raw({"schemaVersion": 1, "name": "x", "fsLayers": []}), "application/json", id="schema-1-generic-header"
        ),
        pytest.param(raw({"schemaVersion": 2, "mediaType": DOCKER_SCHEMA1}), None, id="schema-1-body-type"),
        pytest.param(raw({"schemaVersion": 2, "mediaType": DOCKER_SCHEMA1_SIGNED}), None, id="signed-body-type"),
        pytest.param(raw({"name": "x", "fsLayers": []}), DOCKER_SCHEMA1_SIGNED, id="signed-header"),
        pytest.param(raw({"name": "x", "fsLayers": []}), DOCKER_SCHEMA1 + "; charset=utf-8", id="schema-1-header"),
        pytest.param(raw(image_doc(None)), DOCKER_SCHEMA1, id="v2-body-schema-1-header"),
    ],
)
def test_schema1_is_unsupported(body: bytes, content_type: str | None) -> None:
    with pytest.raises(UnsupportedManifestError, match="schema 1"):
        parse_manifest(body, content_type)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({**index_doc(), "layers": []}, id="manifests-and-layers"),
        pytest.param({**index_doc(), "config": desc(OCI_CONFIG, 1)}, id="manifests-and-config"),
        pytest.param({**image_doc(), "manifests": []}, id="image-and-manifests"),
        pytest.param({**image_doc(None), "manifests": []}, id="no-media-type-both"),
    ],
)
def test_ambiguous_image_or_index_is_rejected(doc: dict[str, Any]) -> None:
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(raw(doc))


@pytest.mark.parametrize(
    ("doc", "content_type"),
    [
        (image_doc(OCI_MANIFEST), DOCKER_MANIFEST),
        (image_doc(DOCKER_MANIFEST), OCI_MANIFEST),
        (image_doc(OCI_MANIFEST), OCI_INDEX),
        (index_doc(OCI_INDEX), DOCKER_MANIFEST_LIST),
        (index_doc(DOCKER_MANIFEST_LIST), f"{OCI_INDEX}; charset=utf-8"),
    ],
)
def test_media_type_disagreeing_with_content_type_is_rejected(doc: dict[str, Any], content_type: str) -> None:
    with pytest.raises(ManifestError, match="differs from Content-Type"):
        parse_manifest(raw(doc), content_type)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"{", "not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe\x00garbage", "not valid JSON", id="binary"),
        pytest.param(b"<html>502 Bad Gateway</html>", "not valid JSON", id="html"),
        pytest.param(b"[]", "not a JSON object", id="array"),
        pytest.param(b'"manifest"', "not a JSON object", id="string"),
        pytest.param(b"2", "not a JSON object", id="number"),
        pytest.param(b"null", "not a JSON object", id="null"),
    ],
)
def test_not_a_json_object(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(body, OCI_MANIFEST)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 5000, id="deep-arrays"),
        pytest.param(b'{"a":' * 5000, id="deep-objects"),
        pytest.param(b'{"schemaVersion":2,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deep-valid-json"),
    ],
)
def test_deeply_nested_json_is_a_manifest_error(body: bytes) -> None:
    # A registry controls these bytes (within the 4 MiB manifest cap): json raises RecursionError, which must
    # become a ManifestError like any other undecodable document.
    with pytest.raises(ManifestError):
        parse_manifest(body, OCI_MANIFEST)


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.example.unknown+json",
        "application/json",
        "text/plain",
    ],
)
def test_unknown_body_media_type_is_unsupported(media_type: str) -> None:
    with pytest.raises(UnsupportedManifestError, match="unsupported manifest media type"):
        parse_manifest(raw(image_doc(media_type)))


@pytest.mark.parametrize("media_type", [42, ["x"], {"a": "b"}, True], ids=["int", "list", "object", "bool"])
def test_non_string_media_type_is_rejected(media_type: object) -> None:
    doc = image_doc(None)
    doc["mediaType"] = media_type
    with pytest.raises(ManifestError):
        parse_manifest(raw(doc))


def _with_config(**changes: Any) -> dict[str, Any]:
    doc = image_doc()
    doc["config"] = {**doc["config"], **changes}
    return doc


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        pytest.param(_with_config(size=-1), "config.size", id="negative-size"),
        pytest.param(_with_config(size=None), "config.size", id="null-size"),
        pytest.param(_with_config(size=1.5), "config.size", id="fractional-size"),
        pytest.param({k: v for k, v in image_doc().items() if k != "config"}, "config", id="missing-config"),
        pytest.param({k: v for k, v in image_doc().items() if k != "layers"}, "layers", id="missing-layers"),
        pytest.param(image_doc(layers={"a": 1}), "layers", id="layers-not-list"),
        pytest.param(image_doc(schemaVersion=3), "schemaVersion", id="schema-version-3"),
        pytest.param({k: v for k, v in image_doc().items() if k != "schemaVersion"}, "schemaVersion", id="no-version"),
        pytest.param(_with_config(mediaType=None), "config.mediaType", id="config-no-media-type"),
        pytest.param(index_doc(manifests=[{"mediaType": OCI_MANIFEST, "size": 3}]), "manifests.0.digest", id="no-dig"),
        pytest.param(index_doc(manifests=[desc(OCI_MANIFEST, 1, platform={"os": "linux"})]), "platform", id="plat"),
        pytest.param(index_doc(manifests=None), "manifests", id="manifests-null"),
    ],
)
def test_malformed_documents_say_where(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw(doc))
    assert where in str(info.value)


def test_declared_type_decides_the_view_not_the_shape() -> None:
    # An index document declared as an image manifest is an invalid image, not silently an index.
    doc = index_doc(None)
    doc["mediaType"] = OCI_MANIFEST
    with pytest.raises(ManifestError, match="config"):
        parse_manifest(raw(doc))
    image = image_doc(None)
    image["mediaType"] = OCI_INDEX
    with pytest.raises(ManifestError, match="manifests"):
        parse_manifest(raw(image))


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xx",
        "sha256:../../etc/passwd",
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
    ],
)
def test_bad_descriptor_digest_is_a_manifest_error(digest: str) -> None:
    # A malformed manifest from a registry is a ManifestError (with a location), not an InvalidDigestError,
    # which errors.py reserves for bad *caller* input ("nothing was sent").
    doc = image_doc()
    doc["layers"][1]["digest"] = digest
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw(doc))
    assert "layers" in str(info.value)


@pytest.mark.parametrize("size", ["1469", True])
def test_descriptor_size_must_be_a_json_integer(size: object) -> None:
    # image-spec: size is an int64; Go registries reject "1469" or true, so the strict view must as well
    # (pydantic's lax mode coerces them to 1469 / 1).
    with pytest.raises(ManifestError):
        parse_manifest(raw(_with_config(size=size)))


# --- properties ---------------------------------------------------------------------------------------------------

_annotation_values = st.text(max_size=20)


@given(
    base=st.sampled_from(["image", "index", "docker", "list"]),
    indent=st.one_of(st.none(), st.integers(0, 4)),
    sort_keys=st.booleans(),
    ensure_ascii=st.booleans(),
    annotations=st.dictionaries(st.text(min_size=1, max_size=10), _annotation_values, max_size=3),
    trailing=st.sampled_from([b"", b"\n", b"  \r\n"]),
)
def test_any_formatting_is_kept_byte_exact(
    base: str, indent: int | None, sort_keys: bool, ensure_ascii: bool, annotations: dict[str, str], trailing: bytes
) -> None:
    doc = {
        "image": lambda: image_doc(OCI_MANIFEST),
        "index": lambda: index_doc(OCI_INDEX),
        "docker": lambda: image_doc(DOCKER_MANIFEST),
        "list": lambda: index_doc(DOCKER_MANIFEST_LIST),
    }[base]()
    if annotations:
        doc["annotations"] = annotations
    body = json.dumps(doc, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii).encode() + trailing
    m = parse_manifest(body, doc["mediaType"])
    assert m.raw == body
    assert m.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert m.media_type == doc["mediaType"]
    assert m.view.annotations == (annotations or None)
    expected = doc["manifests"] if "manifests" in doc else [doc["config"], *doc["layers"]]
    got = m.children() if m.is_index else m.blobs()
    assert [(d.digest, d.size, d.media_type) for d in got] == [
        (e["digest"], e["size"], e["mediaType"]) for e in expected
    ]


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_unexpected_errors(body: bytes) -> None:
    try:
        m = parse_manifest(body)
    except ManifestError:
        return
    assert m.raw == body
