"""Each source blob read once for every destination of a run (fleets: one blob, several mirror registries).

:class:`SourceReads` stands between the blob copier and the source while a run that writes to several
registries lasts (a fleet plan). For a blob a destination must stream, in this order:

1. **a holder**: a store of this run that already committed the blob (another cluster's mirror) is read
   instead of the source, whose link is the slow, far, rate-limited one;
2. **a read in flight** (:class:`Tee`): one task reads the source and every destination that comes while the
   blob's first bytes are still held follows it, each at its own pace;
3. otherwise a new read of the source, which later destinations follow.

A destination that arrives when the read in flight no longer holds the blob's start waits for it to end and
reads a holder (the source again only if no destination committed it). A destination that fails mid-blob is
detached (the others go on); its retry takes the same path, so it reads a holder or the read still in flight.

Memory: a read holds at most :data:`FANOUT_MEMORY` bytes (plus a chunk or two). Older bytes go to a spool file
(a temporary file, deleted when nobody uses the read any more) of at most :data:`FANOUT_SPOOL` bytes: a slow
destination reads what it still needs there, and one arriving while the read lasts follows it from byte 0
(at disk speed, not waiting for the end). With the spool full, bytes every destination is past are dropped
(the read is then no longer joinable: a later destination waits for it to end and reads a holder), and when
the slowest destination still needs them the read waits for it: it never stalls the others before that,
and never grows past the bounds. The sinks verify digest and size as always: a read shares bytes, never trust.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import BinaryIO, Final

import anyio
from anyio import to_thread
from anyio.abc import TaskGroup

from ocicopy.digest import Digest
from ocicopy.models import Descriptor
from ocicopy.store import Store, present

__all__ = ["FANOUT_MEMORY", "FANOUT_SPOOL", "SourceReads", "Tee"]

FANOUT_MEMORY: Final = 8 << 20
FANOUT_SPOOL: Final = 1 << 30
_ids = itertools.count()


class Tee:
    """One read of a blob, followed by every destination that joins while its first bytes are held."""

    def __init__(self, size: int, memory: int = FANOUT_MEMORY, spool_limit: int = FANOUT_SPOOL) -> None:
        self.size = size
        self.memory, self.spool_limit = memory, spool_limit
        self._chunks: deque[tuple[int, bytes]] = deque()  # (offset, bytes) held in memory, in order
        self._held = 0  # bytes in memory
        self._mem_start = 0  # offset of the first byte held in memory
        self._end = 0  # bytes read from the source so far
        self._spool: BinaryIO | None = None
        self._spool_start: int | None = None  # the spool holds [spool_start, mem_start)
        self._positions: dict[int, int] = {}  # follower → next offset it needs
        self._changed = anyio.Event()
        self.done = False
        self.closed = False  # no follower left before the end: the read stopped
        self.error: BaseException | None = None
        self.finished = anyio.Event()  # done, failed or closed
        self.followers = 0  # joined, over its life
        self._spool_bytes = 0  # in the spool file now
        self.spooled = 0  # bytes that went to a spool file, over its life
        self.spool_peak = 0  # most bytes in the spool file at once
        self.peak = 0  # most bytes held in memory at once

    @property
    def joinable(self) -> bool:
        """Its first byte is still held (in memory or the spool) and it has not failed."""
        start = self._mem_start if self._spool_start is None else self._spool_start
        return start == 0 and self.error is None and not self.closed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def join(self) -> AsyncIterator[bytes]:
        """A follower from byte 0 (registered now: the read keeps what it has not read yet)."""
        assert self.joinable
        fid = next(_ids)
        self._positions[fid] = 0
        self.followers += 1
        return self._follow(fid)

    async def _follow(self, fid: int) -> AsyncIterator[bytes]:
        pos = 0
        try:
            while True:
                chunk = await self._chunk_at(pos)
                if not chunk:
                    return
                pos += len(chunk)
                self._positions[fid] = pos
                self._notify()  # the read may be waiting for room
                yield chunk
        finally:
            self._positions.pop(fid, None)
            self._notify()

    async def _chunk_at(self, pos: int) -> bytes:
        while True:
            if self.error is not None:
                raise self.error
            if pos < self._mem_start:  # spooled for this follower
                assert self._spool is not None and self._spool_start is not None and pos >= self._spool_start
                size = min(self._mem_start - pos, 1 << 20)
                return await to_thread.run_sync(os.pread, self._spool.fileno(), size, pos - self._spool_start)
            for start, data in self._chunks:
                if start <= pos < start + len(data):
                    return data[pos - start :]
            if self.done:
                return b""
            if self.closed:
                raise RuntimeError("the shared read stopped")  # never: a follower keeps it going
            await self._changed.wait()

    # -- the reading side (one task) ------------------------------------------------------------------------

    async def feed(self, source: AsyncIterator[bytes]) -> None:
        """Read ``source`` into the tee until it ends, fails, or nobody follows any more."""
        try:
            async for chunk in source:
                await self._room(len(chunk))
                if not self._positions:
                    self.closed = True
                    return
                self._chunks.append((self._end, chunk))
                self._end += len(chunk)
                self._held += len(chunk)
                self.peak = max(self.peak, self._held)
                await self._evict(self.memory)
                self._notify()
            self.done = True
        except Exception as exc:  # every follower raises it (their copies retry or fail as they would)
            self.error = exc
        finally:
            self._notify()
            self.finished.set()

    async def _room(self, incoming: int) -> None:
        """Make room for ``incoming`` bytes within ``memory``: evict what can go, else wait for the slowest."""
        while self._positions:
            await self._evict(self.memory - incoming)
            if self._held + incoming <= self.memory or not self._chunks:
                return
            await self._changed.wait()

    async def _evict(self, limit: int) -> None:
        """Hold at most ``limit`` bytes, oldest out first. An evicted chunk goes to the spool while it has room and
        the spool can stay contiguous (a follower still needing it reads it there, and while the spool starts at
        byte 0 a destination arriving later follows from the start); otherwise it is dropped once every follower
        is past it (a spool before it with it: nobody needs that either), and the tee is no longer joinable. A
        chunk a follower needs that the spool cannot take stays: the read waits (:meth:`_room`)."""
        while self._held > limit and self._chunks:
            start, data = self._chunks[0]
            needed = min(self._positions.values(), default=self._end) < start + len(data)
            contiguous = self._spool_start is not None or start == 0 or needed
            if self._spool_bytes + len(data) <= self.spool_limit and contiguous:
                await self._spill(start, data)
            elif needed:
                return
            else:
                await self._drop_spool()
            self._chunks.popleft()
            self._held -= len(data)
            self._mem_start = start + len(data)

    async def _spill(self, start: int, data: bytes) -> None:
        if self._spool is None:
            self._spool = await to_thread.run_sync(tempfile.TemporaryFile)
            self._spool_start = start
        assert self._spool_start is not None
        await to_thread.run_sync(os.pwrite, self._spool.fileno(), data, start - self._spool_start)
        self.spooled += len(data)
        self._spool_bytes += len(data)
        self.spool_peak = max(self.spool_peak, self._spool_bytes)

    async def _drop_spool(self) -> None:
        if self._spool is not None:
            spool, self._spool = self._spool, None
            with anyio.CancelScope(shield=True):
                await to_thread.run_sync(spool.close)
        self._spool_start = None
        self._spool_bytes = 0

    async def release(self) -> None:
        """Free what it holds (memory, the spool file): called once nobody follows it and its read ended."""
        self._chunks.clear()
        self._held = 0
        self.closed = True
        await self._drop_spool()


async def close(chunks: AsyncIterator[bytes]) -> None:
    """End a blob read early (its connection released): an async generator's ``aclose``, when it has one (a
    store's own iterator may not)."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class SourceReads:
    """The reads of one run that writes to several registries (see the module docstring)."""

    def __init__(self, tasks: TaskGroup) -> None:
        self._tasks = tasks
        self._tees: dict[tuple[str, Digest, int], Tee] = {}
        self._users: dict[int, int] = {}  # id(tee) → copies using it (inside open())
        self._holders: dict[tuple[Digest, int], list[Store]] = {}
        self._origins: dict[tuple[str, str, Digest], str] = {}
        self.source_reads = 0  # reads of a source started
        self.holder_reads = 0  # reads served by another destination of the run

    def held(self, desc: Descriptor, store: Store) -> None:
        """``store`` holds ``desc`` now (committed, mounted or found there): later destinations read it there."""
        holders = self._holders.setdefault((desc.digest, desc.size), [])
        if all((s.host, s.repository) != (store.host, store.repository) for s in holders):
            holders.append(store)

    def _holder(self, src: Store, dst: Store, desc: Descriptor) -> Store | None:
        return next(
            (s for s in self._holders.get((desc.digest, desc.size), ()) if s.host not in (src.host, dst.host)), None
        )

    def origin(self, dst: Store, desc: Descriptor) -> str | None:
        """Where the last :meth:`open` for ``dst`` and ``desc`` read from: None (the source, a read of its own),
        ``shared`` (another destination's read), or a mirror's ``host/repository``. Taken once."""
        return self._origins.pop((dst.host, dst.repository, desc.digest), None)

    @asynccontextmanager
    async def open(self, src: Store, dst: Store, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        """The bytes of ``desc`` for ``dst``: from a holder, a read in flight, or a new read of ``src``. The copy
        calls :meth:`held` before it leaves (once committed): a read is freed only when every copy using it left,
        so a destination arriving after it finds a holder."""
        key = (src.host, desc.digest, desc.size)
        tee = self._tees.get(key)
        if tee is not None and not tee.joinable:
            await tee.finished.wait()  # it no longer holds the start: a holder is near once it ends
        holder = self._holder(src, dst, desc)
        if holder is not None and present(await holder.blob_exists(desc.digest), desc):
            self.holder_reads += 1
            self._origins[(dst.host, dst.repository, desc.digest)] = f"{holder.host}/{holder.repository}".rstrip("/")
            chunks = holder.read_blob(desc)
            try:
                yield chunks
            finally:
                with anyio.CancelScope(shield=True):
                    await close(chunks)
            return
        tee = self._tees.get(key)
        if tee is None or not tee.joinable:
            tee = self._tees[key] = Tee(desc.size)
            self.source_reads += 1
            self._origins.pop((dst.host, dst.repository, desc.digest), None)  # a retry may read anew
            follower = tee.join()
            self._tasks.start_soon(self._feed, key, tee, src.read_blob(desc))
        else:
            follower = tee.join()
            self._origins[(dst.host, dst.repository, desc.digest)] = "shared"
        self._users[id(tee)] = self._users.get(id(tee), 0) + 1
        try:
            yield follower
        finally:
            with anyio.CancelScope(shield=True):
                await close(follower)
                self._users[id(tee)] -= 1
                await self._settle(key, tee)

    async def _feed(self, key: tuple[str, Digest, int], tee: Tee, source: AsyncIterator[bytes]) -> None:
        try:
            await tee.feed(source)
        finally:
            with anyio.CancelScope(shield=True):
                await close(source)
                await self._settle(key, tee)

    async def _settle(self, key: tuple[str, Digest, int], tee: Tee) -> None:
        """Forget a read nobody uses any more once it ended (or failed): the next copy reads a holder, or anew."""
        if self._users.get(id(tee), 0) == 0 and (tee.finished.is_set() or not tee.joinable):
            self._users.pop(id(tee), None)
            if self._tees.get(key) is tee:
                del self._tees[key]
            await tee.release()
