"""Result models: what a copy did, per blob, per manifest and in total. Serialisable with ``model_dump_json``."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ocicopy.digest import Digest
from ocicopy.reference import parse_reference


class BlobAction(StrEnum):
    COPIED = "copied"  # bytes streamed source -> destination
    MOUNTED = "mounted"  # cross-repository mount at the destination registry, no bytes sent
    SKIPPED = "skipped"  # already present at the destination


class CopyAction(StrEnum):
    COPIED = "copied"
    SKIPPED = "skipped"  # destination already had the source digest under that reference


class BlobResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: Digest
    size: int
    media_type: str
    action: BlobAction
    bytes_sent: int = 0
    seconds: float = 0.0
    mounted_from: str | None = None


class ManifestResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    digest: Digest
    media_type: str
    size: int
    action: BlobAction
    reference: str = Field(description="where it was pushed: a tag or its digest")


class Totals(BaseModel):
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    manifests_pushed: int = 0
    manifests_skipped: int = 0
    bytes_sent: int = 0
    requests: int = 0


class CopyResult(BaseModel):
    """The outcome of :meth:`ocicopy.Client.copy`."""

    source: str
    destination: str
    source_digest: Digest
    digest: Digest = Field(description="digest of the top-level manifest at the destination")
    media_type: str
    action: CopyAction
    transformed: bool = Field(
        default=False,
        description="true when the destination digest differs on purpose (e.g. platform subset)",
    )
    platforms: list[str] = Field(default_factory=list, description="platforms copied (empty = all)")
    blobs: list[BlobResult] = Field(default_factory=list)
    manifests: list[ManifestResult] = Field(default_factory=list)
    seconds: float = 0.0
    requests: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def totals(self) -> Totals:
        t = Totals(requests=self.requests)
        for blob in self.blobs:
            if blob.action is BlobAction.COPIED:
                t.blobs_copied += 1
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
        return t

    @property
    def pinned(self) -> str:
        """The destination as ``registry/repository@digest``: what to deploy."""
        return str(parse_reference(self.destination, default_tag=None).without_identifier().with_digest(self.digest))
