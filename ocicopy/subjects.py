"""Subjects and the referrers tag schema (distribution-spec v1.1 "Referrers Tag Schema").

A manifest with a ``subject`` refers to another. A registry with the referrers API indexes it on PUT and says
so (an ``OCI-Subject`` header); anywhere else — a registry without the API, an OCI layout — the pusher keeps
an image index under the fallback tag ``<alg>-<hex>`` of the subject, listing the referrers' descriptors.
:class:`FallbackIndexes` does that read-add-push, serialised per (store, subject) within the process.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import anyio

from ocicopy.digest import Digest
from ocicopy.errors import ManifestError, NotFoundError
from ocicopy.models import OCI_INDEX, Descriptor, ImageManifest, Manifest, compact_manifest
from ocicopy.store import Store

COSIGN_SUFFIXES: Final = (".sig", ".att", ".sbom")


def fallback_tag(digest: Digest) -> str:
    """The referrers tag schema: ``<alg>-<ref>``, algorithm cut to 32 and encoded part to 64 characters."""
    return f"{digest.algorithm[:32]}-{digest.hex[:64]}"


#: The tags :func:`fallback_tag` and :func:`cosign_tags` make: they name referrers, not images of their own.
_REFERRER_TAG: Final = re.compile(r"sha(256|512)-[0-9a-f]{64}(\.sig|\.att|\.sbom)?")


def is_referrer_tag(tag: str) -> bool:
    """Whether ``tag`` is a fallback referrers tag or a cosign tag (``sha256-<hex>[.sig|.att|.sbom]``)."""
    return _REFERRER_TAG.fullmatch(tag) is not None


def cosign_tags(digest: Digest) -> list[str]:
    """Legacy cosign tags of ``digest``: signature, attestation, SBOM."""
    return [fallback_tag(digest) + suffix for suffix in COSIGN_SUFFIXES]


def referrer_descriptor(manifest: Manifest) -> Descriptor:
    """The descriptor of a referrer as listed in a referrers index: its ``artifactType`` (or the config's
    media type for an image manifest without one) and its annotations (spec "Listing Referrers")."""
    entry: dict[str, object] = {"mediaType": manifest.media_type, "digest": manifest.digest, "size": manifest.size}
    view = manifest.view
    artifact_type = view.artifact_type
    if artifact_type is None and isinstance(view, ImageManifest):
        artifact_type = view.config.media_type
    if artifact_type:
        entry["artifactType"] = artifact_type
    if view.annotations:
        entry["annotations"] = view.annotations
    return Descriptor.model_validate(entry)


def add_to_index(index: Manifest | None, entry: Descriptor) -> Manifest | None:
    """``index`` (or a new empty OCI index) listing ``entry`` too; None when it already lists that digest."""
    doc: dict[str, Any] = json.loads(index.raw) if index is not None else {"schemaVersion": 2, "mediaType": OCI_INDEX}
    manifests: list[dict[str, Any]] = list(doc.get("manifests") or [])
    if any(m.get("digest") == entry.digest for m in manifests):
        return None
    manifests.append(entry.model_dump(mode="json", by_alias=True, exclude_none=True))
    doc["manifests"] = manifests
    return compact_manifest(doc, OCI_INDEX)


class FallbackIndexes:
    """Adds referrers to fallback indexes (read, add, push), one update at a time per store and subject."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str, Digest], anyio.Lock] = {}

    async def add(self, dst: Store, subject: Digest, entry: Descriptor) -> bool:
        """List ``entry`` in ``dst``'s fallback index of ``subject``; False when it already was."""
        lock = self._locks.setdefault((dst.host, dst.repository, subject), anyio.Lock())
        tag = fallback_tag(subject)
        async with lock:
            try:
                current: Manifest | None = await dst.manifest_get(tag)
            except NotFoundError:
                current = None
            if current is not None and not current.is_index:
                raise ManifestError(f"destination tag {tag} holds a {current.media_type}, not a referrers index")
            updated = add_to_index(current, entry)
            if updated is None:
                return False
            await dst.manifest_put(tag, updated)
            return True
