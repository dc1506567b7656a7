"""Result models: what a copy did, per blob, per manifest and in total; what a manifest is. Serialisable with
``model_dump_json``."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from ocicopy.digest import Digest
from ocicopy.location import parse_location, pinned
from ocicopy.models import IMAGE_CONFIG_TYPES, Descriptor, ImageManifest, Manifest, Platform
from ocicopy.platforms import config_platform


class BlobAction(StrEnum):
    COPIED = "copied"  # bytes streamed source -> destination
    MOUNTED = "mounted"  # cross-repository mount at the destination registry, no bytes sent
    SKIPPED = "skipped"  # already present at the destination
    RECOMPRESSED = "recompressed"  # converted (e.g. gzip -> zstd) and sent: ``digest`` is the new blob's


class CopyAction(StrEnum):
    COPIED = "copied"
    SKIPPED = "skipped"  # destination already had the source digest under that reference


class BlobResult(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # built at first use (not in a warm mirror run)

    digest: Digest
    size: int
    media_type: str
    action: BlobAction
    bytes_sent: int = 0
    seconds: float = 0.0
    mounted_from: str | None = None
    source_digest: Digest | None = Field(default=None, description="the blob it was converted from, if converted")
    bytes_read: int = Field(default=0, description="source bytes read to convert it (0 if converted earlier)")
    read_from: str | None = Field(
        default=None,
        description="a fleet run: 'shared' (it followed another destination's read of the source), or the mirror "
        "of the run it was read from; None: read from the source for it",
    )

    @property
    def bytes_from_source(self) -> int:
        """Source bytes read for it: what was sent, or what its conversion read; 0 when another read served it."""
        if self.read_from is not None:
            return 0
        return self.bytes_sent if self.source_digest is None else self.bytes_read


class ManifestResult(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)  # built at first use (not in a warm mirror run)

    digest: Digest
    media_type: str
    size: int
    action: BlobAction
    reference: str = Field(description="where it was pushed: a tag or its digest")


class Totals(BaseModel):
    model_config = ConfigDict(defer_build=True)

    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    blobs_recompressed: int = 0
    referrers: int = 0
    manifests_pushed: int = 0
    manifests_skipped: int = 0
    bytes_sent: int = 0
    requests: int = 0


class RateLimit(BaseModel):
    """A registry's pull quota as its last manifest answer told it (Docker Hub's ``ratelimit-*`` headers)."""

    limit: int | None = None
    remaining: int
    window_seconds: int | None = Field(default=None, description="the quota's window (``w=``), e.g. 21600")
    source: str | None = Field(default=None, description="what the quota is counted on (docker-ratelimit-source)")


class RegistryStats(BaseModel):
    """What one run asked of one registry host."""

    requests: int = 0
    retries: int = Field(default=0, description="requests sent again after a transient failure")
    throttled: int = Field(
        default=0, description="answers 429 or 503 (pressure): they halve the in-flight limit, once per round"
    )
    peer_cuts: int = Field(
        default=0, description="on Dask: halvings taken from another worker's throttled answers (summed over workers)"
    )
    rate_limit: RateLimit | None = Field(default=None, description="the quota left at the run's last manifest answer")
    lowest_concurrency: int | None = Field(
        default=None, description="the lowest in-flight limit the adaptive limit reached (None: never lowered)"
    )


class CopyResult(BaseModel):
    """The outcome of :meth:`ocicopy.Client.copy`."""

    model_config = ConfigDict(defer_build=True)

    source: str
    destination: str
    source_digest: Digest
    digest: Digest = Field(description="digest of the top-level manifest at the destination")
    media_type: str
    action: CopyAction
    transformed: bool = Field(
        default=False,
        description="true when the destination digest differs on purpose (platform subset, recompression)",
    )
    compression: str | None = Field(default=None, description="layers recompressed to this format (e.g. zstd)")
    platforms: list[str] = Field(default_factory=list, description="platforms copied (empty = all)")
    blobs: list[BlobResult] = Field(default_factory=list)
    manifests: list[ManifestResult] = Field(default_factory=list)
    referrers: list[ManifestResult] = Field(
        default_factory=list, description="referrers copied with the image (signatures, SBOMs, attestations)"
    )
    warnings: list[str] = Field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0
    registries: dict[str, RegistryStats] = Field(default_factory=dict, description="per registry host")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> Totals:
        t = Totals(requests=self.requests)
        for blob in self.blobs:
            if blob.action is BlobAction.COPIED:
                t.blobs_copied += 1
            elif blob.action is BlobAction.RECOMPRESSED:
                t.blobs_recompressed += 1
            elif blob.action is BlobAction.MOUNTED:
                t.blobs_mounted += 1
            else:
                t.blobs_skipped += 1
            t.bytes_sent += blob.bytes_sent
        for m in self.manifests:
            if m.action is BlobAction.SKIPPED:
                t.manifests_skipped += 1
            else:
                t.manifests_pushed += 1
        t.referrers = len(self.referrers)
        return t

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pinned(self) -> str:
        """The destination as ``registry/repository@digest`` (``oci:PATH@DIGEST``): what to deploy."""
        return pinned(parse_location(self.destination, default_tag=None), self.digest)


class ManifestDescription(BaseModel):
    """What a manifest is (``ocicopy inspect --json``, :meth:`ocicopy.Client.describe`): its identity, what it
    lists, and for a single image what its config declares (platform, creation time, labels). Descriptors are
    as in the manifest (OCI field names)."""

    model_config = ConfigDict(frozen=True, defer_build=True)

    reference: str
    digest: Digest
    media_type: str
    size: int
    artifact_type: str | None = Field(default=None, description="an artifact's type (or its config's media type)")
    platform: Platform | None = Field(default=None, description="the platform an image's config declares")
    created: str | None = Field(default=None, description="the image config's creation time, as written")
    labels: dict[str, str] = Field(default_factory=dict, description="the image config's labels")
    config: Descriptor | None = None
    layers: list[Descriptor] = Field(default_factory=list)
    manifests: list[Descriptor] = Field(default_factory=list, description="an index's children")
    subject: Descriptor | None = Field(default=None, description="the manifest this one refers to (a referrer)")
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_serializer("platform", "config", "subject")
    def _one(self, value: Platform | Descriptor | None) -> dict[str, Any] | None:
        return None if value is None else value.model_dump(mode="json", by_alias=True, exclude_none=True)

    @field_serializer("layers", "manifests")
    def _many(self, value: list[Descriptor]) -> list[dict[str, Any]]:
        return [d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in value]


def describe_manifest(reference: str, manifest: Manifest, config: bytes | None = None) -> ManifestDescription:
    """A :class:`ManifestDescription` of ``manifest``; ``config``: its image config's bytes, when read."""
    view = manifest.view
    image = view if isinstance(view, ImageManifest) else None
    artifact_type = view.artifact_type
    if artifact_type is None and image is not None and image.config.media_type not in IMAGE_CONFIG_TYPES:
        artifact_type = image.config.media_type
    created, labels = _config_details(config)
    return ManifestDescription(
        reference=reference,
        digest=manifest.digest,
        media_type=manifest.media_type,
        size=manifest.size,
        artifact_type=artifact_type,
        platform=config_platform(config) if config is not None else None,
        created=created,
        labels=labels,
        config=image.config if image is not None else None,
        layers=list(image.layers) if image is not None else [],
        manifests=manifest.children(),
        subject=view.subject,
        annotations=dict(view.annotations or {}),
    )


def _config_details(config: bytes | None) -> tuple[str | None, dict[str, str]]:
    """``created`` and ``config.Labels`` of an image config (either missing, or not of the right type: none)."""
    try:
        doc = json.loads(config) if config is not None else None
    except (ValueError, RecursionError):
        return None, {}
    if not isinstance(doc, dict):
        return None, {}
    created = doc.get("created") if isinstance(doc.get("created"), str) else None
    inner = doc.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    if not isinstance(labels, dict):
        return created, {}
    return created, {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}
