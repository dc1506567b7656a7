"""Manifests: media types, pydantic views, and :class:`Manifest` which keeps the raw bytes beside the view.

The raw bytes are the truth: they are what is hashed, what is pushed, and what is reported. The pydantic view
is only for reading descriptors (what to copy next). Unknown fields are allowed in the views (the bytes are
never re-serialised), but the shapes that matter are strict:

* a document with both ``manifests`` and ``layers``/``config`` is rejected (ambiguous: image or index?);
* Docker schema 1 (``schemaVersion: 1``, ``...manifest.v1+json``/``+prettyjws``) is "unsupported";
* a ``mediaType`` in the body that disagrees with the ``Content-Type`` the registry sent is rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocicopy.digest import Digest
from ocicopy.errors import DigestMismatchError, ManifestError, UnsupportedManifestError

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_NONDIST_LAYER_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"

IMAGE_CONFIG_TYPES: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
IMAGE_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES: Final = IMAGE_TYPES | INDEX_TYPES
SCHEMA1_TYPES: Final = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

#: ``Accept`` header for manifest requests: every type we can copy, most specific first.
MANIFEST_ACCEPT: Final = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])


class _View(BaseModel):
    # defer_build: the schemas are built at first use (a warm mirror run, HEADs only, never needs them)
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)


class Platform(_View):
    architecture: str
    os: str
    os_version: str | None = Field(default=None, alias="os.version")
    os_features: list[str] | None = Field(default=None, alias="os.features")
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class Descriptor(_View):
    media_type: str = Field(alias="mediaType")
    digest: Digest
    size: int = Field(ge=0, strict=True)  # "1469" or true would be refused by Go registries
    urls: list[str] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")


class ImageManifest(_View):
    """OCI image manifest or Docker v2 schema 2 manifest (also OCI 1.1 artifacts: ``artifactType``)."""

    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


class IndexManifest(_View):
    """OCI image index or Docker manifest list."""

    schema_version: Literal[2] = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    manifests: list[Descriptor]
    subject: Descriptor | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest HEAD tells: digest, media type, size."""

    digest: Digest
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """A manifest as fetched: exact ``raw`` bytes, its ``media_type``, ``digest`` of the bytes, and the view."""

    raw: bytes
    media_type: str
    digest: Digest
    view: ImageManifest | IndexManifest

    @property
    def is_index(self) -> bool:
        return isinstance(self.view, IndexManifest)

    @property
    def size(self) -> int:
        return len(self.raw)

    def children(self) -> list[Descriptor]:
        """Child manifests of an index (empty for an image)."""
        return list(self.view.manifests) if isinstance(self.view, IndexManifest) else []

    def blobs(self) -> list[Descriptor]:
        """Config then layers of an image (empty for an index)."""
        if isinstance(self.view, ImageManifest):
            return [self.view.config, *self.view.layers]
        return []

    def descriptor(self) -> Descriptor:
        return Descriptor.model_validate({"mediaType": self.media_type, "digest": self.digest, "size": self.size})


def parse_manifest(raw: bytes, content_type: str | None = None, digest: Digest | None = None) -> Manifest:
    """Parse ``raw`` into a :class:`Manifest`; ``content_type`` is the registry's ``Content-Type``.

    ``digest`` (when given, e.g. the manifest was fetched by digest) must match the bytes.
    """
    body = _load_json(raw)
    media_type = _media_type(body, _strip_params(content_type))
    try:
        view: ImageManifest | IndexManifest
        view = IndexManifest.model_validate(body) if media_type in INDEX_TYPES else ImageManifest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise ManifestError(f"invalid {media_type} manifest: {where}: {first['msg']}") from None
    algorithm = digest.algorithm if digest is not None else "sha256"
    actual = Digest.of(raw, algorithm)
    if digest is not None and actual != digest:
        raise DigestMismatchError(digest, actual, len(raw), None, "manifest bytes hash differently")
    return Manifest(raw=raw, media_type=media_type, digest=actual, view=view)


def compact_manifest(doc: dict[str, Any], media_type: str) -> Manifest:
    """A manifest made here (a transformation, a referrers index, the ledger): compact UTF-8 JSON, parsed and
    checked like any fetched one. The same document always gives the same bytes, hence the same digest."""
    return parse_manifest(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode(), media_type)


def _load_json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise ManifestError("manifest is not JSON: its bytes are not UTF-8 text (a layer or other blob?)") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:  # hostile nesting depth
        raise ManifestError("manifest is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of over 4300 digits
        raise ManifestError(f"manifest is not valid JSON: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(body, dict):
        raise ManifestError("manifest is not a JSON object")
    return body


def _strip_params(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def _media_type(body: dict[str, Any], content_type: str | None) -> str:
    """Decide the media type from the body and the header; reject what is ambiguous or unsupported."""
    declared = body.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError("manifest mediaType is not a string")
    if body.get("schemaVersion") == 1 or declared in SCHEMA1_TYPES or content_type in SCHEMA1_TYPES:
        raise UnsupportedManifestError(
            "Docker schema 1 manifests are not supported (deprecated, unsigned content cannot be verified); "
            "re-push the image with a current client"
        )
    if "manifests" in body and ("layers" in body or "config" in body):
        raise ManifestError("manifest has both 'manifests' and 'layers'/'config': ambiguous image or index")
    if declared and content_type and content_type in MANIFEST_TYPES and declared != content_type:
        raise ManifestError(f"manifest mediaType {declared!r} differs from Content-Type {content_type!r}")
    media_type = declared or (content_type if content_type in MANIFEST_TYPES else None)
    if media_type is None:
        # OCI allows mediaType to be absent; the shape decides (image-spec "Guidelines for artifact usage").
        media_type = OCI_INDEX if "manifests" in body else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise UnsupportedManifestError(f"unsupported manifest media type {media_type!r}")
    return media_type
