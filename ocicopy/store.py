"""Where images live: one protocol, two kinds of place (after regclient's scheme interface).

* :class:`Endpoint` — a repository of a registry, spoken to over the distribution API (:mod:`ocicopy.registry`);
* :class:`~ocicopy.layout.Layout` — an OCI image layout directory on disk (image-spec "image-layout").

The copier works against :class:`Store` for manifests and blob presence; how a blob's bytes are moved
depends on the pair (registry → registry: mounts and upload sessions; layout on either side: a verified
stream into an atomic file write or into an upload).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ocicopy.digest import Digest
from ocicopy.models import Descriptor, Manifest
from ocicopy.registry import ManifestInfo, Registry


@runtime_checkable
class Store(Protocol):
    """The verbs the copier needs from a place that holds manifests and blobs."""

    @property
    def host(self) -> str:
        """Identity of the blob namespace: a registry host, or ``oci:`` + the layout's absolute path."""
        ...

    @property
    def repository(self) -> str:
        """The repository within ``host`` ('' for a layout)."""
        ...

    async def manifest_head(self, reference: str) -> ManifestInfo | None: ...

    async def manifest_get(self, reference: str) -> Manifest: ...

    async def manifest_put(self, reference: str, manifest: Manifest, *, root: bool = True) -> bool:
        """Store the exact bytes under ``reference`` (tag or own digest); ``root=False`` for an index child.

        True when the store indexed the manifest's ``subject`` itself (a registry answering ``OCI-Subject``);
        False means a pusher must keep the fallback referrers index (:mod:`ocicopy.subjects`).
        """
        ...

    async def blob_exists(self, digest: Digest) -> int | None: ...

    async def referrers(self, digest: Digest, artifact_type: str | None = None) -> list[Descriptor] | None:
        """Manifests whose ``subject`` is ``digest`` via the referrers API; None when there is no such API."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """A repository on a registry (the registry's verbs bound to one repository)."""

    registry: Registry
    repository: str

    @property
    def host(self) -> str:
        return self.registry.host

    def __str__(self) -> str:
        return f"{self.registry.host}/{self.repository}"

    async def manifest_head(self, reference: str) -> ManifestInfo | None:
        return await self.registry.manifest_head(self.repository, reference)

    async def manifest_get(self, reference: str) -> Manifest:
        return await self.registry.manifest_get(self.repository, reference)

    async def manifest_put(self, reference: str, manifest: Manifest, *, root: bool = True) -> bool:
        return (await self.registry.manifest_put(self.repository, reference, manifest)).subject_indexed

    async def blob_exists(self, digest: Digest) -> int | None:
        return await self.registry.blob_exists(self.repository, digest)

    async def referrers(self, digest: Digest, artifact_type: str | None = None) -> list[Descriptor] | None:
        return await self.registry.referrers(self.repository, digest, artifact_type)


@runtime_checkable
class BlobSink(Protocol):
    """A store that takes a blob stream directly (no upload sessions): a layout. It verifies the digest and
    size before the blob becomes visible."""

    async def blob_exists(self, digest: Digest) -> int | None: ...

    async def write_blob(self, digest: Digest, size: int, body: AsyncIterable[bytes]) -> None: ...


@runtime_checkable
class BlobSource(Protocol):
    """A store whose blob bytes are read as a plain stream (a layout, a spool of converted layers)."""

    def read_blob(self, digest: Digest, offset: int = 0) -> AsyncIterator[bytes]: ...
