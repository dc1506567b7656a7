"""Referrers: the signatures, SBOMs and attestations that point at an image travel with it.

Discovery, per subject digest (distribution-spec v1.1 "Listing Referrers"):

1. the referrers API (``GET /v2/<name>/referrers/<digest>``), when the registry has it;
2. else the *referrers tag schema*: an image index under the fallback tag ``<alg>-<hex>``
   (:func:`fallback_tag`), which is also how a referrer is found in an OCI layout;
3. and, unless an ``artifactType`` filter is given, the legacy cosign tags ``<alg>-<hex>.sig``, ``.att`` and
   ``.sbom`` (sigstore/cosign before OCI 1.1: manifests without ``subject``, found by tag only).

Copy: each referrer is copied like any manifest tree (blobs first, by digest), then — when the destination
has no referrers API — its descriptor is added to the destination's fallback index, which is pushed last
(spec "Pushing Manifests with Subject": a client pushing to a registry without the API must maintain the
fallback tag). Updates of one fallback index are serialised within the process; the spec's tag schema has
no atomic update across processes (concurrent pushers may drop each other's entry; rerunning restores it).
Cosign tags are copied under the same tag. The walk is recursive (referrers of referrers: a signature of an
SBOM), breadth first, each digest once, bounded by :data:`MAX_REFERRERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from ocicopy.digest import Digest
from ocicopy.errors import ManifestError, NotFoundError
from ocicopy.models import Descriptor, Manifest
from ocicopy.result import BlobAction, BlobResult, ManifestResult
from ocicopy.store import Store
from ocicopy.subjects import add_to_index, cosign_tags, fallback_tag, referrer_descriptor
from ocicopy.tree import TreeCopier, fetch_child

MAX_REFERRERS: Final = 1000

__all__ = [
    "ReferrerCopier",
    "add_to_index",
    "cosign_tags",
    "fallback_tag",
    "list_referrers",
    "referrer_descriptor",
]


async def list_referrers(store: Store, digest: Digest, artifact_type: str | None = None) -> list[Descriptor]:
    """Referrers of ``digest`` in ``store``: the API, else the fallback index (filtered here)."""
    found = await store.referrers(digest, artifact_type)
    if found is not None:
        return found
    try:
        index = await store.manifest_get(fallback_tag(digest))
    except NotFoundError:
        return []
    if not index.is_index:
        raise ManifestError(f"fallback referrers tag {fallback_tag(digest)} holds a {index.media_type}, not an index")
    return [d for d in index.children() if artifact_type is None or d.artifact_type == artifact_type]


@dataclass
class ReferrersOutcome:
    manifests: list[ManifestResult] = field(default_factory=list)
    blobs: list[BlobResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    visited: int = 0  # referrers looked at (the cap counts these)

    @property
    def full(self) -> bool:
        return self.visited >= MAX_REFERRERS


class ReferrerCopier:
    """Copies the referrers of some subjects from one store to another (see the module docstring)."""

    def __init__(self, trees: TreeCopier) -> None:
        self.trees = trees
        self._api: dict[tuple[str, str], bool] = {}

    async def copy(
        self, src: Store, dst: Store, subjects: Sequence[Digest], artifact_types: Sequence[str] = ()
    ) -> ReferrersOutcome:
        out = ReferrersOutcome()
        seen: set[Digest] = set(subjects)
        level = list(dict.fromkeys(subjects))
        while level and not out.full:
            found: list[Digest] = []
            for subject in level:
                if out.full:
                    break
                found += await self._subject(src, dst, subject, artifact_types, seen, out)
            level = found
        if out.full:
            out.warnings.append(f"stopped after {MAX_REFERRERS} referrers; any others were not copied")
        return out

    async def _subject(
        self,
        src: Store,
        dst: Store,
        subject: Digest,
        artifact_types: Sequence[str],
        seen: set[Digest],
        out: ReferrersOutcome,
    ) -> list[Digest]:
        """Copy the referrers of one subject; the digests copied (the next level's subjects)."""
        descs: list[Descriptor] = []
        wanted_types: list[str | None] = list(artifact_types) or [None]
        for wanted in wanted_types:
            descs += await list_referrers(src, subject, wanted)
        copied: list[Digest] = []
        for desc in descs:
            if desc.digest in seen:
                continue
            if out.full:
                break
            seen.add(desc.digest)
            out.visited += 1
            if await self._one(src, dst, subject, desc, out):
                copied.append(desc.digest)
        if not artifact_types:
            copied += await self._cosign(src, dst, subject, seen, out)
        return copied

    async def _one(self, src: Store, dst: Store, subject: Digest, desc: Descriptor, out: ReferrersOutcome) -> bool:
        try:
            manifest = await fetch_child(src, desc)
        except NotFoundError:
            out.warnings.append(f"referrer {desc.digest} of {subject} is listed but missing at the source")
            return False
        if await dst.manifest_head(str(manifest.digest)) is None:
            tree = await self.trees.copy(src, dst, manifest, None)  # the PUT keeps the fallback index if needed
            out.blobs += tree.blobs
            out.manifests += tree.manifests
            return True
        out.manifests.append(_skipped(manifest))
        # Already there, perhaps pushed by a tool that did not keep the fallback index: make sure it lists it.
        if manifest.view.subject is not None and not await self._has_api(dst, subject):
            await self.trees.fallback.add(dst, manifest.view.subject.digest, referrer_descriptor(manifest))
        return True

    async def _cosign(
        self, src: Store, dst: Store, subject: Digest, seen: set[Digest], out: ReferrersOutcome
    ) -> list[Digest]:
        """Legacy cosign tags: copied under the same tag when the source has them."""
        copied: list[Digest] = []
        for tag in cosign_tags(subject):
            info = await src.manifest_head(tag)
            if info is None or info.digest in seen:
                continue
            seen.add(info.digest)
            existing = await dst.manifest_head(tag)
            if existing is not None and existing.digest == info.digest:
                out.manifests.append(_skipped_info(info.digest, info.media_type, info.size, tag))
            else:
                manifest = await src.manifest_get(str(info.digest))
                tree = await self.trees.copy(src, dst, manifest, tag)
                out.blobs += tree.blobs
                out.manifests += tree.manifests
            copied.append(info.digest)
        return copied

    async def _has_api(self, dst: Store, subject: Digest) -> bool:
        key = (dst.host, dst.repository)
        if key not in self._api:
            self._api[key] = await dst.referrers(subject) is not None
        return self._api[key]


def _skipped(manifest: Manifest) -> ManifestResult:
    return _skipped_info(manifest.digest, manifest.media_type, manifest.size, str(manifest.digest))


def _skipped_info(digest: Digest, media_type: str, size: int, reference: str) -> ManifestResult:
    return ManifestResult(
        digest=digest, media_type=media_type, size=size, action=BlobAction.SKIPPED, reference=reference
    )
