"""A repository of a registry as a :class:`~ocicopy.store.Store`: the registry's verbs bound to one repository,
blob reads that resume, blob sinks over upload sessions, and mounts.

Reads: a broken or short blob GET resumes with ``Range: bytes=N-``; only a 206 whose ``Content-Range`` starts
at N is appended, anything else restarts the blob (a :class:`TransportError` the copier retries with a new
upload). Writes: :class:`UploadSink` streams what it is given into one upload session (monolithic PUT, or PATCH
chunks when the registry asks for them) while hashing it, and withholds the last chunk until digest and size
check, so a wrong blob is never committed; an upload whose answer was lost after its whole body went out is
settled with a HEAD, and such a session is never DELETEd (it may be committed).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx2

from ocicopy.digest import Digest, Verifier
from ocicopy.errors import DigestMismatchError, ReadGaveUp, RegistryError, TransportError
from ocicopy.models import Descriptor, Manifest, ManifestInfo
from ocicopy.registry import Registry, UploadSession
from ocicopy.retry import Retrying
from ocicopy.store import present

__all__ = ["Endpoint", "UploadSink"]


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

    async def mount(self, digest: Digest, origin: str) -> UploadSession | None:
        return await self.registry.start_upload(self.repository, digest, origin)

    async def cancel(self, session: UploadSession) -> None:
        await self.registry.cancel_upload(session)

    async def read_blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from a registry, resuming a broken or short read with ``Range: bytes=N-``.

        Bounded by the retry policy's attempts; the digest and size are checked by the sink whatever happened.
        """
        where = f"{self}@{desc.digest}"
        async for attempt in Retrying(self.registry.transport.options.retry.counted()):
            try:
                async with self.registry.blob_get(self.repository, desc.digest, offset) as response:
                    _check_read(response, offset, desc, where)
                    async for chunk in response.aiter_raw():
                        offset += len(chunk)
                        yield chunk
            except httpx2.TransportError as exc:
                reason = f"{type(exc).__name__} at byte {offset} of {desc.size}"
            else:
                if offset >= desc.size:
                    return  # complete (a longer body is refused by the sink's verifier)
                reason = f"body ended at byte {offset} of {desc.size}"
            attempt.retry(ReadGaveUp("GET", where, f"{reason}, after {attempt.number} attempts"))

    @asynccontextmanager
    async def blob_sink(self, desc: Descriptor, session: UploadSession | None = None) -> AsyncIterator[UploadSink]:
        """An upload of ``desc`` (into ``session`` when a declined mount opened one); aborted unless committed."""
        sink = UploadSink(self, desc, session or await self._open())
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sink.run)
                try:
                    yield sink
                finally:
                    with anyio.CancelScope(shield=True):
                        await sink.abort()
        except BaseExceptionGroup as group:  # the writer's own error, not a group of one (run() raises nothing)
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _open(self) -> UploadSession:
        session = await self.registry.start_upload(self.repository)
        if session is None:  # start_upload without a mount always opens a session
            raise RegistryError(0, "POST", self.host, (), "registry opened no upload session")
        return session


class UploadSink:
    """Bytes pushed into one upload session: the PUT (or PATCHes) runs in its own task, fed through a small
    buffer (one chunk: memory stays bounded whatever the blob's size), verified on the way."""

    def __init__(self, endpoint: Endpoint, desc: Descriptor, session: UploadSession) -> None:
        self.endpoint = endpoint
        self.desc = desc
        self.session = session
        self.verifier = Verifier(desc.digest, desc.size)
        self._send, self._receive = anyio.create_memory_object_stream[bytes](1)
        self._pending: bytes | None = None
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._error: BaseException | None = None
        self._body_sent = False  # the whole body went out: the session may be committed, never DELETE it
        self._aborted = False
        self._finished = False

    async def run(self) -> None:
        """The upload request (started by :meth:`Endpoint.blob_sink`); its failure is raised to the writer."""
        registry = self.endpoint.registry
        with self._scope:
            try:
                await registry.upload(self.session, self.desc.digest, self.desc.size, self._body())
            except Exception as exc:  # handed to the writer, in its own task
                self._error = exc
            finally:
                self._receive.close()
                self._done.set()

    async def _body(self) -> AsyncIterator[bytes]:
        async with self._receive:
            async for chunk in self._receive:
                yield chunk
        if self._aborted:  # the stream was closed by abort(), not by commit(): the body must not end cleanly
            raise TransportError("PUT", str(self.endpoint), "upload aborted")
        self._body_sent = True

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.verifier.update(chunk)  # raises as soon as the bytes run past the size
        if self._pending is not None:
            await self._pass_on(self._pending)
        self._pending = chunk

    async def _pass_on(self, chunk: bytes) -> None:
        try:
            await self._send.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._done.wait()
            raise self._error or TransportError("PUT", str(self.endpoint), "upload ended early") from None

    async def commit(self) -> None:
        """Check the digest and size, send the withheld last chunk, and wait for the registry's answer."""
        self.verifier.check()  # a wrong blob: the body ends short below (abort), the registry commits nothing
        if self._pending is not None:
            await self._pass_on(self._pending)
            self._pending = None
        self._send.close()
        await self._done.wait()
        if self._error is not None and not (self._body_sent and await self._committed()):
            raise self._error
        self._finished = self.session.ended = True

    async def _committed(self) -> bool:
        """After a lost answer to the committing request: is the blob there, of the right size?"""
        try:
            return present(await self.endpoint.blob_exists(self.desc.digest), self.desc)
        except (TransportError, RegistryError):
            return False

    async def abort(self) -> None:
        if self._finished:
            return
        self._finished = self._aborted = True
        self._scope.cancel()  # the request is cut mid-body: the registry commits nothing
        self._send.close()
        await self._done.wait()
        if not self._body_sent:
            await self.endpoint.cancel(self.session)
        self.session.ended = True  # cancelled, or a whole body sent (it may have committed: never DELETE it)


def _check_read(response: httpx2.Response, offset: int, desc: Descriptor, where: str) -> None:
    """A full read must be a 200 of the descriptor's size; a resume must be a 206 starting at ``offset``."""
    length = response.headers.get("content-length")
    if offset == 0:
        if response.status_code != 200:
            raise TransportError("GET", where, f"unexpected HTTP {response.status_code} for a full read")
        if length is not None and length.isdigit() and int(length) != desc.size:
            raise DigestMismatchError(
                desc.digest, None, int(length), desc.size, "Content-Length differs from descriptor size", where
            )
        return
    content_range = response.headers.get("content-range", "")
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", content_range.strip())
    if response.status_code != 206 or m is None or int(m.group(1)) != offset:
        # A 200 (Range ignored) or a range starting elsewhere cannot be appended: start the blob over.
        raise TransportError("GET", where, f"cannot resume at byte {offset} (HTTP {response.status_code}): restarting")
    if m.group(3) != "*" and int(m.group(3)) != desc.size:
        raise DigestMismatchError(desc.digest, None, int(m.group(3)), desc.size, "Content-Range total differs", where)
