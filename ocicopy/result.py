"""Result models: what a copy did, per blob, per manifest and in total. Serialisable with ``model_dump_json``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ocicopy.digest import Digest
from ocicopy.location import parse_location, pinned


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
