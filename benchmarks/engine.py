"""The one module of ``benchmarks/`` that uses ocicopy's internals; everything else imports ``ocicopy`` only.

When the internals move, this file changes and the rest of the package does not. What it adapts:

- :class:`Verbs`: the distribution-API verbs the naive copier (:func:`benchmarks.runners.naive_copy`) is built
  from: GET a manifest by tag or descriptor, stream one blob GET → verify → monolithic PUT with no existence
  check and no mount, PUT a manifest, and the client's own request count;
- the streaming recompression the compression benchmark times (:func:`gzip_to_zstd`, :class:`Recompressed`) and
  the compression of a stored blob from its first bytes (:func:`detect`).
"""

from __future__ import annotations

from ocicopy import Client, Descriptor, Manifest
from ocicopy.compression import Recompressed, detect, gzip_to_zstd
from ocicopy.repository import Endpoint
from ocicopy.tree import fetch_child

__all__ = ["Recompressed", "Verbs", "detect", "gzip_to_zstd"]


class Verbs:
    """Low-level verbs between a source and a mirror registry, on ``client``'s transport."""

    def __init__(self, client: Client, source: str, mirror: str) -> None:
        self._client = client
        self._source = client.registry(source)
        self._mirror = client.registry(mirror)

    async def manifest(self, repository: str, tag: str) -> Manifest:
        """GET the manifest ``repository:tag`` at the source."""
        return await self._source.manifest_get(repository, tag)

    async def child(self, repository: str, desc: Descriptor) -> Manifest:
        """GET an index child at the source by its descriptor (digest and size checked)."""
        return await fetch_child(Endpoint(self._source, repository), desc)

    async def stream_blob(self, repository: str, to_repository: str, desc: Descriptor) -> None:
        """POST an upload session, GET → verify → PUT ``?digest=``: no HEAD, no mount, whatever the mirror holds."""
        src, dst = Endpoint(self._source, repository), Endpoint(self._mirror, to_repository)
        await self._client.blobs.stream(src, dst, desc, None)

    async def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> None:
        """PUT ``manifest``'s exact bytes into the mirror under ``reference`` (a tag or its digest)."""
        await self._mirror.manifest_put(repository, reference, manifest)

    @property
    def requests(self) -> int:
        """Requests the client has made so far (its own count)."""
        return self._client.transport.stats.total_requests
