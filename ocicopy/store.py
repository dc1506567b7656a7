"""Where images live: one protocol that moves bytes, for every kind of place (after regclient's scheme interface).

* :class:`~ocicopy.repository.Endpoint` — a repository of a registry (the distribution API);
* :class:`~ocicopy.layout.Layout` — an OCI image layout directory on disk;
* :class:`~ocicopy.converter.Spool` — converted (recompressed) layers on local disk.

Every store reads a blob as a stream (:meth:`Store.read_blob`) and takes one through a :class:`BlobSink`
(:meth:`Store.blob_sink`: ``write`` the bytes, then ``commit``, which verifies digest and size before the blob
becomes visible; leaving without a commit aborts). So a copier moves bytes from any store to any other without
knowing which kinds they are, and one read can be written to several sinks at once. Mounting a blob from
another repository of the same registry is an optional capability (:class:`Mounting`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ocicopy.digest import Digest
from ocicopy.models import Descriptor, Manifest, ManifestInfo

if TYPE_CHECKING:
    from ocicopy.registry import UploadSession

__all__ = ["BlobSink", "Mounting", "Store", "present"]


class BlobSink(Protocol):
    """One blob on its way into a store: bytes in order, then a commit (verified) or an abort."""

    async def write(self, chunk: bytes) -> None:
        """Add ``chunk``; raises as soon as the bytes run past the descriptor's size."""
        ...

    async def commit(self) -> None:
        """Check digest and size, then make the blob visible; nothing is visible when this raises."""
        ...

    async def abort(self) -> None:
        """Drop what was written (idempotent; called for you when a sink's context ends without a commit)."""
        ...


@runtime_checkable
class Store(Protocol):
    """The verbs a copier needs from a place that holds manifests and blobs."""

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

    async def referrers(self, digest: Digest, artifact_type: str | None = None) -> list[Descriptor] | None:
        """Manifests whose ``subject`` is ``digest`` via the referrers API; None when there is no such API."""
        ...

    async def blob_exists(self, digest: Digest) -> int | None:
        """The blob's size when present (-1: present, size not said), None when absent."""
        ...

    def read_blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset``, unverified (a sink verifies them); a broken read may be resumed by
        the store itself (a registry asks for the rest with ``Range``)."""
        ...

    def blob_sink(
        self, desc: Descriptor, session: UploadSession | None = None
    ) -> AbstractAsyncContextManager[BlobSink]:
        """A sink for ``desc``'s bytes; ``session`` is an upload a declined mount already opened (registries)."""
        ...


@runtime_checkable
class Mounting(Protocol):
    """A store that can take a blob from another repository of its registry without its bytes."""

    async def mount(self, digest: Digest, origin: str) -> UploadSession | None:
        """Ask for ``digest`` from repository ``origin``: None when it was mounted, else the upload session the
        registry opened instead (hand it to :meth:`Store.blob_sink`, or :meth:`cancel` it)."""
        ...

    async def cancel(self, session: UploadSession) -> None:
        """Give up an upload session (best effort)."""
        ...


def present(size: int | None, desc: Descriptor) -> bool:
    """Whether a store's answer to ``blob_exists`` means ``desc`` is there: its size, or "present, size not said"
    (-1). A file of another size is a torn write, to be replaced."""
    return size is not None and (size == desc.size or size == -1)
