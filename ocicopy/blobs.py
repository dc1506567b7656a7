"""Copy one blob into a store: skip → mount → stream, bounded and single-flighted.

A blob is skipped when the destination already has it (HEAD), mounted when a candidate repository on the same
registry holds it (``POST ?mount=&from=``; any refusal falls back to an upload), and otherwise streamed from the
source store into a sink of the destination store (read → verify → commit) without being held in memory. Which
kinds of store they are does not matter here: every store reads and takes blobs through the same protocol
(:mod:`ocicopy.store`); mounting is a capability some have (:class:`~ocicopy.store.Mounting`).

Single flight twice: per ``(dst host, repository, digest)`` concurrent copies of a blob into one repository
share one run; per ``(dst host, digest)`` there is one *transfer* per registry for the client's life, and other
copies wait for it and then mount from where it landed. Blob transfers share one :class:`anyio.CapacityLimiter`,
held only while a copy talks to a store, never while it waits for another's transfer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import httpx2

from ocicopy.digest import Digest
from ocicopy.errors import ReadGaveUp, RegistryError, TLSError, TransportError
from ocicopy.fanout import close
from ocicopy.flight import SingleFlight
from ocicopy.models import Descriptor
from ocicopy.options import Timeouts
from ocicopy.progress import NoProgress, Progress
from ocicopy.registry import UploadSession
from ocicopy.result import BlobAction, BlobResult
from ocicopy.retry import Retrying, RetryPolicy, is_retryable_status
from ocicopy.store import Mounting, Store, present

if TYPE_CHECKING:
    from ocicopy.fanout import SourceReads

__all__ = ["MAX_MOUNT_TRIES", "BlobCopier", "MountFrom", "MountHints", "present"]

#: An async callable giving, for a destination host and digest, repositories there that may hold the blob.
MountHints = Callable[[str, Digest], Awaitable[Sequence[str]]]
#: Where to try mounting from: fixed repository names, or hints looked up per blob (e.g. the mirror's ledger).
MountFrom = Sequence[str] | MountHints
MAX_MOUNT_TRIES = 3


class BlobCopier:
    """Copies blobs: skip → mount → stream, bounded and single-flighted."""

    def __init__(
        self,
        limiter: anyio.CapacityLimiter,
        retry: RetryPolicy,
        progress: Progress | None = None,
        mounts: bool = True,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.limiter = limiter
        self.timeouts = timeouts or Timeouts()
        self.mounts = mounts
        self.retry = retry
        self.progress: Progress = progress or NoProgress()
        self.flight: SingleFlight[BlobResult] = SingleFlight()
        self.transfers: SingleFlight[str] = SingleFlight(keep_results=True)
        self.located: dict[tuple[str, Digest], list[str]] = {}
        #: (host, repository) that did not exist when this client began writing to them: what this client has not
        #: placed there is not there (concurrent writers aside), so a placement skips the HEAD
        self.fresh: set[tuple[str, str]] = set()
        #: While a copy writes to several registries (a work graph's blob task): each source blob read once for
        #: all of them (:mod:`ocicopy.fanout`)
        self.reads: SourceReads | None = None
        #: The blob limit is per destination registry (each mirror of a fleet its own, as one run per cluster
        #: would have), shared by this copier's forks
        self._per_registry: dict[str, anyio.CapacityLimiter] = {}

    def fork(self) -> BlobCopier:
        """A copier of its own flights and reads (one blob task's fan-out) under this one's limits."""
        copier = BlobCopier(self.limiter, self.retry, self.progress, self.mounts, self.timeouts)
        copier._per_registry = self._per_registry
        return copier

    def _limit(self, dst: Store) -> anyio.CapacityLimiter:
        """The blob limit a copy into ``dst`` holds: its registry's (``limiter``'s size)."""
        if dst.host not in self._per_registry:
            self._per_registry[dst.host] = anyio.CapacityLimiter(self.limiter.total_tokens)
        return self._per_registry[dst.host]

    def is_fresh(self, dst: Store, digest: Digest) -> bool:
        """Whether ``dst`` is a repository new in this run that this client has not placed ``digest`` in."""
        return (dst.host, dst.repository) in self.fresh and dst.repository not in self.located.get(
            (dst.host, digest), ()
        )

    async def copy(self, src: Store, dst: Store, desc: Descriptor, mount_from: MountFrom = ()) -> BlobResult:
        """Make ``desc`` present in ``dst``; ``mount_from`` lists repositories of ``dst``'s registry to try."""
        # The size is part of the key: a descriptor with a wrong size fails its own deployment, not one sharing the blob
        key = (dst.host, dst.repository, desc.digest, desc.size)
        result, leader = await self.flight.run(key, lambda: self._copy(src, dst, desc, mount_from))
        if leader:
            return result
        return BlobResult(digest=desc.digest, size=desc.size, media_type=desc.media_type, action=BlobAction.SKIPPED)

    async def _copy(self, src: Store, dst: Store, desc: Descriptor, mount_from: MountFrom) -> BlobResult:
        started = time.monotonic()
        action, sent, origin = BlobAction.SKIPPED, 0, None
        if not (src.host == dst.host and src.repository == dst.repository):
            action, sent, origin = await self._place(src, dst, desc, mount_from)
        result = BlobResult(
            digest=desc.digest,
            size=desc.size,
            media_type=desc.media_type,
            action=action,
            bytes_sent=sent,
            seconds=round(time.monotonic() - started, 6),
            mounted_from=origin,
            read_from=self.reads.origin(dst, desc) if self.reads is not None else None,
        )
        self.note_placed(dst, desc.digest)
        if self.reads is not None:
            self.reads.held(desc, dst)
        self.progress.blob_finished(result)
        return result

    def note_placed(self, dst: Store, digest: Digest) -> None:
        """``dst`` holds ``digest`` now (a blob, or a manifest pushed there): a place to mount from, no longer fresh."""
        known = self.located.setdefault((dst.host, digest), [])
        if dst.repository not in known:
            known.append(dst.repository)

    async def mount_only(self, dst: Store, digest: Digest, mount_from: MountFrom) -> str | None:
        """Try to mount ``digest`` into ``dst`` from the usual candidates; the origin, or None (nothing opened)."""
        if not isinstance(dst, Mounting):
            return None
        async with self._limit(dst):
            candidates = await self._candidates(None, dst, digest, mount_from)
            origin, session = await self._try_mounts(dst, digest, candidates)
            if session is not None:
                await dst.cancel(session)
        if origin is not None:
            self.note_placed(dst, digest)
        return origin

    async def _candidates(self, src: Store | None, dst: Store, digest: Digest, mount_from: MountFrom) -> list[str]:
        """Repositories of the destination registry to mount ``digest`` from, most likely first.

        The source repository when source and destination share a registry, then where this client already
        placed the blob on that registry, then the caller's hints. Never across registries: a mount is
        same-registry only (distribution-spec "Mounting a blob from another repository").
        """
        if not self.mounts or not isinstance(dst, Mounting):
            return []
        hints = await mount_from(dst.host, digest) if callable(mount_from) else mount_from
        ordered = [*self.located.get((dst.host, digest), ()), *hints]
        if src is not None and src.host == dst.host:
            ordered.insert(0, src.repository)
        # Each declined mount costs a request and an upload session: try a few, then upload.
        return [r for r in dict.fromkeys(ordered) if r != dst.repository][:MAX_MOUNT_TRIES]

    async def _try_mounts(
        self, dst: Store, digest: Digest, candidates: Sequence[str]
    ) -> tuple[str | None, UploadSession | None]:
        """Ask for a mount from each candidate: ``(origin, None)`` when one worked, else ``(None, session)``."""
        session: UploadSession | None = None
        if not isinstance(dst, Mounting):
            return None, None
        try:
            for origin in candidates:
                await self._end(dst, session)
                try:
                    session = await dst.mount(digest, origin)
                except RegistryError:
                    # Harbor answers 401, Docker Hub/others 403/404 for a mount they decline: upload instead.
                    session = None
                    continue
                if session is None:
                    return origin, None
        except BaseException:
            await self._end(dst, session)
            raise
        return None, session

    @staticmethod
    async def _end(dst: Store, session: UploadSession | None) -> None:
        """End a declined mount's session this copy will not use, even when cancelled (see UploadSession)."""
        if session is not None and not session.ended and isinstance(dst, Mounting):
            await dst.cancel(session)

    async def _place(
        self, src: Store, dst: Store, desc: Descriptor, mount_from: MountFrom
    ) -> tuple[BlobAction, int, str | None]:
        """HEAD → mount → (one transfer per registry and digest) → stream. The limiter is held only while this
        copy talks to a store, never while it waits for another copy's transfer of the same blob.

        Into a repository new in this run (:attr:`fresh`) there is nothing to HEAD for: the mount is asked first
        (201 when a candidate holds it), and a declined one (202: a stale hint) is followed by the HEAD before
        streaming; with no candidate the blob is uploaded at once. Elsewhere the HEAD stays first: a mount also
        rewrites a link that exists, which races a concurrent writer's manifest PUT (:mod:`ocicopy.tree`)."""
        fresh = self.is_fresh(dst, desc.digest)
        session: UploadSession | None = None  # a declined mount's, until a sink takes it (then it ends it)
        try:
            async with self._limit(dst):
                if not fresh and present(await dst.blob_exists(desc.digest), desc):
                    return BlobAction.SKIPPED, 0, None
                candidates = await self._candidates(src, dst, desc.digest, mount_from)
                origin, session = await self._try_mounts(dst, desc.digest, candidates)
                if fresh and candidates and origin is None and present(await dst.blob_exists(desc.digest), desc):
                    return BlobAction.SKIPPED, 0, None
            if origin is not None:
                return BlobAction.MOUNTED, 0, origin
            # A concurrent or earlier copy of the same blob into another repository of this registry: wait for
            # it, then mount from where it landed (kept for the client's life; a failed mount streams after all).
            shared = self.mounts and isinstance(dst, Mounting)
            key = (dst.host, desc.digest, desc.size) if shared else (dst.host, dst.repository, desc.digest, desc.size)
            held = session
            landed, leader = await self.transfers.run(key, lambda: self._stream_into(src, dst, desc, held))
            if leader:
                return BlobAction.COPIED, desc.size, None
            async with self._limit(dst):
                await self._end(dst, session)  # not needed if the mount below works
                origin, session = await self._try_mounts(dst, desc.digest, [landed])
                if origin is not None:
                    return BlobAction.MOUNTED, 0, origin
                await self.stream(src, dst, desc, session)
            return BlobAction.COPIED, desc.size, None
        finally:
            await self._end(dst, session)  # a session no sink took (a skip, a failure, a cancellation)

    async def _stream_into(self, src: Store, dst: Store, desc: Descriptor, session: UploadSession | None) -> str:
        async with self._limit(dst):
            await self.stream(src, dst, desc, session)
        return dst.repository

    async def stream(self, src: Store, dst: Store, desc: Descriptor, session: UploadSession | None = None) -> None:
        """Read from ``src`` into a sink of ``dst`` (verified), retried from scratch (a new sink) on transient
        faults; ``session`` is an upload a declined mount opened (used by the first try)."""
        async for attempt in Retrying(self.retry.counted()):
            try:
                await self._stream_once(src, dst, desc, session)
                return
            except (TransportError, httpx2.TransportError, RegistryError) as exc:
                session = None
                if not _transient(exc):
                    raise _as_data(exc, attempt.number, src, dst, desc) from None
                attempt.retry(_as_data(exc, attempt.number, src, dst, desc))

    async def _stream_once(self, src: Store, dst: Store, desc: Descriptor, session: UploadSession | None) -> None:
        self.progress.blob_started(desc.digest, desc.size)
        deadline = self.timeouts.transfer_deadline(desc.size)
        with anyio.move_on_after(deadline) as scope:
            async with self._source(src, dst, desc) as chunks, dst.blob_sink(desc, session) as sink:
                async for chunk in self._counted(desc.digest, chunks):
                    await sink.write(chunk)
                await sink.commit()
                if self.reads is not None:
                    self.reads.held(desc, dst)  # before the shared read may be freed: later copies read here
        if scope.cancelled_caught:
            raise TransportError(
                "GET/PUT", f"{src}@{desc.digest}", f"transfer exceeded its {deadline:.0f} s deadline (slow source?)"
            )

    @asynccontextmanager
    async def _source(self, src: Store, dst: Store, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """Where ``desc``'s bytes come from: the source, or in a fleet run its shared read (:mod:`ocicopy.fanout`)."""
        if self.reads is not None:
            async with self.reads.open(src, dst, desc) as chunks:
                yield chunks
            return
        chunks = src.read_blob(desc)
        try:
            yield chunks
        finally:
            await close(chunks)

    async def _counted(self, digest: Digest, stream: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in stream:
            self.progress.blob_advanced(digest, len(chunk))
            yield chunk


def _as_data(
    exc: TransportError | httpx2.TransportError | RegistryError, attempts: int, src: Store, dst: Store, desc: Descriptor
) -> TransportError | RegistryError:
    """httpx2's own error (a stream broke mid-body) as ours, saying which blob; ours as they are."""
    if isinstance(exc, httpx2.TransportError):
        reason = f"{type(exc).__name__} after {attempts} attempts"
        return TransportError("GET/PUT", f"blob {desc.digest} {src.host} -> {dst.host}", reason)
    return exc


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ReadGaveUp | TLSError):
        return False
    if isinstance(exc, RegistryError):
        # 416 on a PATCH (the registry lost track of the offset) or a source range: start over, new session.
        return exc.status == 416 or is_retryable_status(exc.status, exc.codes)
    return isinstance(exc, TransportError | httpx2.TransportError)
