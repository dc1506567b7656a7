"""Manifest rewriting for a layer recompression (pure: no I/O).

A recompression changes layer digests, so every manifest above a converted layer changes too: the image
manifest gets the new layer descriptors and becomes an OCI manifest (Docker schema 2 has no zstd layer
type), and an index gets the new child descriptors and becomes an OCI index. The config blob is never
touched: its ``rootfs.diff_ids`` name the *uncompressed* layers, which a recompression preserves. Only its
descriptor's media type becomes the OCI one (the bytes are the same JSON; image-spec "config").

Everything else in the documents is kept (annotations, ``artifactType``, ``subject``, platforms, unknown
fields). Output is compact JSON in the source's key order, so the same inputs always give the same bytes —
which is what lets a mirror predict the digest of a conversion it already did (:func:`predict`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ocicopy.digest import Digest
from ocicopy.models import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER_GZIP,
    Descriptor,
    Manifest,
    compact_manifest,
)

#: Layer types a ``zstd`` recompression converts. Docker foreign layers (``urls``, never pushed by
#: registries that follow the spec) and uncompressed layers are left as they are.
CONVERTIBLE: Final = frozenset({OCI_LAYER_GZIP, OCI_NONDIST_LAYER_GZIP, DOCKER_LAYER_GZIP})

#: Docker types left in a manifest that becomes OCI (unconverted layers, the config) and their OCI names.
_OCI_TYPES: Final = {
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,  # a gzip layer left as is (one with foreign urls)
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": OCI_NONDIST_LAYER_GZIP,
    DOCKER_CONFIG: OCI_CONFIG,
}


@dataclass(frozen=True)
class Conversion:
    """What recompressing ``source`` (a layer or a manifest) gave: the converted descriptor and, for a layer, its
    uncompressed digest (the ``diff_id`` an image config lists; None for a manifest)."""

    source: Digest
    converted: Descriptor
    diff_id: Digest | None = None


class Conversions(Mapping[Digest, Descriptor]):
    """Known conversions, source digest → converted descriptor (what :func:`predict` reads), with their
    ``diff_id``; which of them were made here (to be recorded, e.g. in a mirror's ledger)."""

    def __init__(self) -> None:
        self._table: dict[Digest, Conversion] = {}
        self._made: dict[Digest, Conversion] = {}

    def __getitem__(self, source: Digest) -> Descriptor:
        return self._table[source].converted

    def __iter__(self) -> Iterator[Digest]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def conversion(self, source: Digest) -> Conversion | None:
        return self._table.get(source)

    def add(self, conversion: Conversion, *, made_here: bool = True) -> None:
        self._table[conversion.source] = conversion
        if made_here:
            self._made[conversion.source] = conversion

    def seed(self, known: Iterable[Conversion]) -> None:
        """Conversions recorded elsewhere (a mirror's ledger); what is known here already wins."""
        for conversion in known:
            self._table.setdefault(conversion.source, conversion)

    def made_here(self) -> list[Conversion]:
        return list(self._made.values())


def convertible(desc: Descriptor) -> bool:
    """Whether ``desc`` is a layer a zstd recompression converts (gzip, and not a foreign layer)."""
    return desc.media_type in CONVERTIBLE and not desc.urls


def _replace(entry: dict[str, Any], new: Descriptor) -> dict[str, Any]:
    """``entry`` (a descriptor as in the source JSON) pointing at ``new``: digest, size, media type."""
    out = dict(entry)
    out["mediaType"], out["digest"], out["size"] = new.media_type, str(new.digest), new.size
    return out


def rewrite_image(image: Manifest, layers: Mapping[int, Descriptor]) -> Manifest:
    """``image`` with layer ``i`` replaced by ``layers[i]``, as an OCI manifest; the config bytes unchanged."""
    if image.is_index:
        raise ValueError("rewrite_image takes an image manifest")
    doc = json.loads(image.raw)
    doc["mediaType"] = OCI_MANIFEST
    config = dict(doc["config"])
    config["mediaType"] = _OCI_TYPES.get(config["mediaType"], config["mediaType"])
    doc["config"] = config
    out_layers = []
    for i, entry in enumerate(doc["layers"]):
        if i in layers:
            out_layers.append(_replace(entry, layers[i]))
        else:
            out_layers.append({**entry, "mediaType": _OCI_TYPES.get(entry["mediaType"], entry["mediaType"])})
    doc["layers"] = out_layers
    return compact_manifest(_oci_key_order(doc), OCI_MANIFEST)


def rewrite_index(index: Manifest, children: Mapping[int, Descriptor]) -> Manifest:
    """``index`` with child ``i`` replaced by ``children[i]``, as an OCI index (platforms kept)."""
    if not index.is_index:
        raise ValueError("rewrite_index takes an index")
    doc = json.loads(index.raw)
    doc["mediaType"] = OCI_INDEX
    doc["manifests"] = [
        _replace(entry, children[i]) if i in children else entry for i, entry in enumerate(doc["manifests"])
    ]
    return compact_manifest(_oci_key_order(doc), OCI_INDEX)


def _oci_key_order(doc: dict[str, Any]) -> dict[str, Any]:
    """``schemaVersion`` and ``mediaType`` first (where a Docker source had them), the rest in source order."""
    head: dict[str, Any] = {k: doc[k] for k in ("schemaVersion", "mediaType") if k in doc}
    return {**head, **{k: v for k, v in doc.items() if k not in head}}


def predict(image: Manifest, mapping: Mapping[Digest, Descriptor]) -> Manifest | None:
    """The converted manifest of ``image`` when every convertible layer's conversion is already known."""
    if image.is_index:
        return None
    layers: dict[int, Descriptor] = {}
    for i, desc in enumerate(image.blobs()[1:]):
        if convertible(desc):
            known = mapping.get(desc.digest)
            if known is None:
                return None
            layers[i] = known
    return rewrite_image(image, layers) if layers else image


def derive_mapping(source: Manifest, converted: Manifest) -> dict[Digest, Descriptor]:
    """Layer conversions read back from a converted image and its source (same config, layers in order).

    Used to skip a recompression already done (e.g. the destination tag of an earlier run). A hint only:
    :func:`predict` must reproduce ``converted`` byte for byte before anything is skipped.
    """
    if source.is_index or converted.is_index:
        return {}
    src_blobs, dst_blobs = source.blobs(), converted.blobs()
    if len(src_blobs) != len(dst_blobs) or src_blobs[0].digest != dst_blobs[0].digest:
        return {}
    out: dict[Digest, Descriptor] = {}
    for old, new in zip(src_blobs[1:], dst_blobs[1:], strict=True):
        if convertible(old) and new.media_type.endswith("+zstd"):
            out[old.digest] = new
    return out
