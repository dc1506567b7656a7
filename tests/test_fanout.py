"""The shared source read of a fleet run (ocicopy.fanout): one read, every destination at its own pace, memory
and spool bounded. Followers are plain tasks here (their pace made by checkpoints); SourceReads is exercised
with real OCI layouts as stores."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocicopy import Digest, Layout
from ocicopy.fanout import SourceReads, Tee
from ocicopy.models import Descriptor

pytestmark = pytest.mark.anyio


class Source:
    """Chunks from memory, counting what was read; ``fail_at``: raise after that many chunks."""

    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks, self.fail_at, self.read = chunks, fail_at, 0

    async def __call__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise ConnectionError("source broke")
            await anyio.lowlevel.checkpoint()
            self.read += 1
            yield chunk


async def consume(chunks: AsyncIterator[bytes], pace: int = 0, stop_after: int | None = None) -> bytes:
    """What a follower received; ``pace`` checkpoints after each chunk (a slow destination)."""
    got = bytearray()
    async for n, chunk in _numbered(chunks):
        got += chunk
        for _ in range(pace):
            await anyio.lowlevel.checkpoint()
        if stop_after is not None and n + 1 >= stop_after:
            break
    return bytes(got)


async def _numbered(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    n = 0
    async for chunk in chunks:
        yield n, chunk
        n += 1


async def run_tee(tee: Tee, source: Source, paces: list[int]) -> list[bytes]:
    results: list[bytes] = [b""] * len(paces)
    followers = [tee.join() for _ in paces]

    async def one(i: int) -> None:
        results[i] = await consume(followers[i], paces[i])

    async with anyio.create_task_group() as tg:
        tg.start_soon(tee.feed, source())
        for i in range(len(paces)):
            tg.start_soon(one, i)
    return results


def blob(chunks: int, size: int = 1000) -> list[bytes]:
    return [os.urandom(size) for _ in range(chunks)]


async def test_one_read_feeds_every_follower_at_its_own_pace() -> None:
    chunks = blob(50)
    source = Source(chunks)
    results = await run_tee(Tee(50_000, memory=100_000), source, paces=[0, 3, 20])
    assert results == [b"".join(chunks)] * 3
    assert source.read == 50  # once, not three times


async def test_a_slow_follower_is_spooled_for_and_memory_stays_bounded() -> None:
    chunks = blob(200)
    tee = Tee(200_000, memory=10_000, spool_limit=10 << 20)
    results = await run_tee(tee, Source(chunks), paces=[0, 50])
    assert results == [b"".join(chunks)] * 2
    assert tee.spooled > 0  # the slow one read from the spool
    assert tee.peak <= 10_000 + 1000  # the bound plus one chunk


async def test_a_full_spool_holds_the_read_back_and_everyone_still_finishes() -> None:
    chunks = blob(200)
    tee = Tee(200_000, memory=10_000, spool_limit=20_000)
    results = await run_tee(tee, Source(chunks), paces=[0, 50])
    assert results == [b"".join(chunks)] * 2
    assert tee.spool_peak <= 20_000 and tee.peak <= 10_000 + 1000


async def test_a_follower_that_leaves_does_not_stop_the_others() -> None:
    chunks = blob(40)
    tee = Tee(40_000, memory=5_000)
    a, b = tee.join(), tee.join()
    got: dict[str, bytes] = {}

    async def quitter() -> None:
        got["a"] = await consume(a, stop_after=5)
        await a.aclose()  # type: ignore[attr-defined]

    async def stayer() -> None:
        got["b"] = await consume(b, pace=2)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tee.feed, Source(chunks)())
        tg.start_soon(quitter)
        tg.start_soon(stayer)
    assert got["b"] == b"".join(chunks) and got["a"] == b"".join(chunks[:5])


async def test_when_everyone_leaves_the_read_stops() -> None:
    source = Source(blob(100))
    tee = Tee(100_000, memory=5_000)
    follower = tee.join()

    async def leave() -> None:
        await consume(follower, stop_after=3)
        await follower.aclose()  # type: ignore[attr-defined]

    async with anyio.create_task_group() as tg:
        tg.start_soon(tee.feed, source())
        tg.start_soon(leave)
    assert tee.closed and not tee.done and source.read < 100


async def test_a_source_failure_reaches_every_follower() -> None:
    tee = Tee(40_000)
    results: list[BaseException] = []

    async def one(chunks: AsyncIterator[bytes]) -> None:
        try:
            await consume(chunks)
        except ConnectionError as exc:
            results.append(exc)

    followers = [tee.join(), tee.join()]
    async with anyio.create_task_group() as tg:
        tg.start_soon(tee.feed, Source(blob(40), fail_at=10)())
        for f in followers:
            tg.start_soon(one, f)
    assert len(results) == 2 and tee.error is not None and not tee.joinable


async def test_a_small_blob_stays_joinable_until_released_a_big_one_not() -> None:
    small = Tee(5_000, memory=10_000)
    assert (await run_tee(small, Source(blob(5)), paces=[0]))[0]
    assert small.joinable  # whole in memory: a late destination may still follow it
    await small.release()
    assert not small.joinable
    spooled = Tee(50_000, memory=10_000)
    await run_tee(spooled, Source(blob(50)), paces=[0])
    assert spooled.joinable and spooled.spooled == 40_000  # beyond memory, on disk: a late one follows from 0
    await spooled.release()
    big = Tee(50_000, memory=10_000, spool_limit=20_000)
    await run_tee(big, Source(blob(50)), paces=[0])
    assert not big.joinable  # past both bounds its start was dropped: a late destination reads a holder


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=60),
    paces=st.lists(st.integers(0, 30), min_size=1, max_size=4),
    memory=st.integers(1, 20_000),
    spool=st.sampled_from([0, 5_000, 1 << 20]),
)
def test_every_follower_gets_the_blob_exactly_with_bounded_memory(
    sizes: list[int], paces: list[int], memory: int, spool: int
) -> None:
    chunks = [os.urandom(n) for n in sizes]
    tee = Tee(sum(sizes), memory=memory, spool_limit=spool)
    source = Source(chunks)
    results = anyio.run(run_tee, tee, source, paces)
    assert results == [b"".join(chunks)] * len(paces)
    assert source.read == len(chunks)
    assert tee.peak <= memory + max(sizes)  # the bound and the chunk arriving
    assert tee.spool_peak <= spool


async def _layout_with_blob(root: Path, data: bytes) -> tuple[Layout, Descriptor]:
    layout = Layout(root)
    digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())

    async def once() -> AsyncIterator[bytes]:
        yield data

    await layout.write_blob(digest, len(data), once())
    return layout, Descriptor(mediaType="application/octet-stream", digest=digest, size=len(data))


async def _copy_through(reads: SourceReads, src: Layout, dst: Layout, desc: Descriptor) -> None:
    async with reads.open(src, dst, desc) as chunks, dst.blob_sink(desc) as sink:
        async for chunk in chunks:
            await sink.write(chunk)
        await sink.commit()
        reads.held(desc, dst)


async def test_a_destination_after_the_first_reads_the_one_that_holds_the_blob(tmp_path: Path) -> None:
    src, desc = await _layout_with_blob(tmp_path / "src", os.urandom(200_000))
    first, second = Layout(tmp_path / "first"), Layout(tmp_path / "second")
    async with anyio.create_task_group() as tg:
        reads = SourceReads(tg)
        await _copy_through(reads, src, first, desc)
        await _copy_through(reads, src, second, desc)
    assert (reads.source_reads, reads.holder_reads) == (1, 1)
    assert await second.blob_exists(desc.digest) == desc.size


async def test_concurrent_destinations_share_one_read(tmp_path: Path) -> None:
    src, desc = await _layout_with_blob(tmp_path / "src", os.urandom(3 << 20))
    dsts = [Layout(tmp_path / f"d{i}") for i in range(3)]
    async with anyio.create_task_group() as tg:
        reads = SourceReads(tg)
        async with anyio.create_task_group() as copies:
            for dst in dsts:
                copies.start_soon(_copy_through, reads, src, dst, desc)
    assert reads.source_reads == 1 and reads.holder_reads == 0
    assert [await d.blob_exists(desc.digest) for d in dsts] == [desc.size] * 3
