"""Manifest rewriting for recompression (pure): what changes, what must not, and that it is reproducible."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import images as im
from ocicopy.converter import config_diff_ids
from ocicopy.digest import Digest
from ocicopy.errors import InputError, ManifestError
from ocicopy.models import OCI_LAYER_ZSTD, Descriptor, parse_manifest
from ocicopy.options import Recompression, recompression
from ocicopy.transform import convertible, derive_mapping, predict, rewrite_image, rewrite_index

layer_sizes = st.lists(st.integers(min_value=10, max_value=300), min_size=1, max_size=5)


def _image(
    sizes: list[int], media: im.Media = "docker", seed: int = 0, annotations: dict[str, str] | None = None
) -> im.Image:
    layers = [im.layer(seed * 100 + i, n) for i, n in enumerate(sizes)]
    return im.make_image(layers, media=media, annotations=annotations)


def _zstd_for(desc: Descriptor) -> Descriptor:
    """A stand-in conversion: a deterministic other digest and size."""
    return Descriptor.model_validate(
        {"mediaType": OCI_LAYER_ZSTD, "digest": Digest.of(str(desc.digest).encode()), "size": desc.size // 2 + 1}
    )


@settings(max_examples=40, deadline=None)
@given(layer_sizes, st.sampled_from(["docker", "oci"]), st.booleans())
def test_rewrite_image_changes_layers_only(sizes: list[int], media: im.Media, annotate: bool) -> None:
    source = parse_manifest(_image(sizes, media, annotations={"a": "b"} if annotate else None).manifest)
    layers = {i: _zstd_for(d) for i, d in enumerate(source.blobs()[1:])}
    out = rewrite_image(source, layers)
    doc, before = json.loads(out.raw), json.loads(source.raw)
    assert out.media_type == doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["config"]["digest"] == before["config"]["digest"] and doc["config"]["size"] == before["config"]["size"]
    assert doc["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert [(x["digest"], x["mediaType"]) for x in doc["layers"]] == [
        (str(d.digest), OCI_LAYER_ZSTD) for d in layers.values()
    ]
    assert doc.get("annotations") == before.get("annotations")
    assert list(doc)[:2] == ["schemaVersion", "mediaType"]
    # reproducible: same inputs, same bytes; and read back from the result, the mapping predicts it exactly
    assert rewrite_image(source, layers).raw == out.raw
    mapping = derive_mapping(source, out)
    assert mapping == {d.digest: layers[i] for i, d in enumerate(source.blobs()[1:])}
    predicted = predict(source, mapping)
    assert predicted is not None and predicted.raw == out.raw


def test_predict_needs_every_convertible_layer() -> None:
    source = parse_manifest(_image([50, 60]).manifest)
    first = source.blobs()[1]
    assert predict(source, {first.digest: _zstd_for(first)}) is None
    assert predict(source, {}) is None


def test_nothing_convertible_is_unchanged() -> None:
    doc = json.loads(_image([40], "oci").manifest)
    doc["layers"][0]["mediaType"] = OCI_LAYER_ZSTD
    source = parse_manifest(im.dump(doc))
    assert predict(source, {}) is source
    foreign = Descriptor.model_validate(
        {
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": Digest.of(b"x"),
            "size": 1,
            "urls": ["https://example.invalid/layer"],
        }
    )
    assert not convertible(foreign)


def test_rewrite_index_keeps_platforms_and_order() -> None:
    amd, arm = _image([30], seed=1), _image([40], seed=2)
    index = parse_manifest(im.make_index([amd, arm], media="docker").manifest)
    new = {
        i: Descriptor.model_validate(
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": Digest.of(bytes([i])), "size": 9}
        )
        for i in range(2)
    }
    out = rewrite_index(index, new)
    doc = json.loads(out.raw)
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["digest"] for m in doc["manifests"]] == [str(new[0].digest), str(new[1].digest)]
    assert [m["platform"] for m in doc["manifests"]] == [m["platform"] for m in json.loads(index.raw)["manifests"]]
    with pytest.raises(ValueError, match="image manifest"):
        rewrite_image(index, {})


def test_derive_mapping_refuses_other_images() -> None:
    one, two = parse_manifest(_image([30], seed=3).manifest), parse_manifest(_image([30], seed=4).manifest)
    assert derive_mapping(one, two) == {}  # another config: not a conversion of it


def test_config_diff_ids() -> None:
    image = _image([30, 40], "oci", seed=5)
    assert config_diff_ids(image.config) == [Digest(x.diff_id) for x in image.layers]
    assert config_diff_ids(b"{}") is None  # an artifact's config: nothing to compare with
    assert config_diff_ids(b'{"rootfs": {"diff_ids": "nope"}}') is None
    with pytest.raises(ManifestError, match="invalid diff_id"):
        config_diff_ids(b'{"rootfs": {"diff_ids": ["sha256:../../x"]}}')


def test_recompression_settings() -> None:
    assert recompression(None) is None
    assert recompression("zstd") == Recompression()
    assert recompression("zstd", 19) == Recompression(level=19)
    with pytest.raises(InputError, match="only 'zstd'"):
        recompression("gzip")
    with pytest.raises(InputError, match="out of range"):
        recompression("zstd", 0)


def test_unconverted_docker_layers_get_oci_types() -> None:
    """A foreign (urls) Docker layer stays as it is, under the OCI type of the new OCI manifest."""
    doc = json.loads(_image([30, 40], "docker", seed=6).manifest)
    doc["layers"][1]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    doc["layers"][1]["urls"] = ["https://example.invalid/base.tar.gz"]
    source = parse_manifest(im.dump(doc))
    first = source.blobs()[1]
    assert convertible(first) and not convertible(source.blobs()[2])
    out = json.loads(rewrite_image(source, {0: _zstd_for(first)}).raw)
    assert [x["mediaType"] for x in out["layers"]] == [
        OCI_LAYER_ZSTD,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ]
    assert out["layers"][1]["urls"] == ["https://example.invalid/base.tar.gz"]


def test_docker_prefix_names_a_registry() -> None:
    from ocicopy.client import as_location
    from ocicopy.layout import LayoutReference
    from ocicopy.reference import Reference

    assert isinstance(as_location("oci:5000/app:1"), LayoutReference)  # skopeo's syntax: a layout
    forced = as_location("docker://oci:5000/app:1")
    assert isinstance(forced, Reference) and (forced.registry, forced.repository) == ("oci:5000", "app")
