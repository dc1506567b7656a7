"""Streaming gzip → zstd recompression and bounded zstd decompression, on real tar+gzip data."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Sequence

import anyio
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicopy.compression import (
    DOCKER_FOREIGN_LAYER_GZIP,
    DOCKER_LAYER_GZIP,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_NONDIST_LAYER_GZIP,
    OCI_NONDIST_LAYER_ZSTD,
    CorruptDataError,
    NotConvertibleError,
    OutputLimitError,
    Recompressed,
    WindowTooLargeError,
    detect,
    gzip_to_zstd,
    zstd_decompress_bounded,
    zstd_media_type,
)
from ocicopy.errors import OcicopyError

MiB = 1 << 20


def make_tar(seed: int = 0, files: int = 20) -> bytes:
    """A deterministic tar with compressible text and incompressible random members."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            text = (f"line {i} " * rng.randrange(1, 5000)).encode()
            data = rng.randbytes(rng.randrange(1, 40_000)) if i % 2 else text
            info = tarfile.TarInfo(f"dir/file{i}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


TAR = make_tar()
TAR_GZ = gz(TAR)
MULTI_GZ = gz(TAR[: len(TAR) // 3]) + gz(TAR[len(TAR) // 3 :])


async def stream(data: bytes, sizes: Sequence[int] = (65536,)) -> AsyncIterator[bytes]:
    """Yield ``data`` in pieces of the given sizes (cycled)."""
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos += n
        i += 1


async def recompress(data: bytes, *, level: int = 3, max_output: int = 1 << 30, sizes: Sequence[int] = (65536,)):
    result = Recompressed()
    chunks = [c async for c in gzip_to_zstd(stream(data, sizes), level=level, max_output=max_output, result=result)]
    return chunks, result


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.anyio
@pytest.mark.parametrize("source", [TAR_GZ, MULTI_GZ], ids=["single-member", "multi-member"])
async def test_round_trip(source: bytes) -> None:
    chunks, result = await recompress(source)
    out = b"".join(chunks)
    assert detect(out) == "zstd"
    assert zstandard.ZstdDecompressor().decompressobj().decompress(out) == TAR
    assert result.diff_id == sha(TAR)
    assert result.digest == sha(out)
    assert result.size == len(out)
    assert result.source_size == len(source)


@pytest.mark.anyio
async def test_multi_member_content_is_whole_not_first_member() -> None:
    chunks, result = await recompress(MULTI_GZ, sizes=(len(MULTI_GZ),))  # both members in one chunk
    assert zstandard.ZstdDecompressor().decompressobj().decompress(b"".join(chunks)) == TAR
    assert result.diff_id == sha(TAR)


@pytest.mark.anyio
async def test_result_unavailable_before_end() -> None:
    result = Recompressed()
    with pytest.raises(OcicopyError, match="before the stream"):
        _ = result.digest
    assert not result.done


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(min_value=7, max_value=70_000), min_size=1, max_size=8), multi=st.booleans())
def test_chunk_boundaries_do_not_matter(sizes: list[int], multi: bool) -> None:
    source = MULTI_GZ if multi else TAR_GZ
    reference, ref_result = anyio.run(lambda: recompress(source))
    chunks, result = anyio.run(lambda: recompress(source, sizes=sizes))
    assert b"".join(chunks) == b"".join(reference)
    assert (result.digest, result.diff_id, result.size) == (ref_result.digest, ref_result.diff_id, ref_result.size)


@pytest.mark.anyio
async def test_level_changes_output() -> None:
    low, r1 = await recompress(TAR_GZ, level=1)
    high, r19 = await recompress(TAR_GZ, level=19)
    assert b"".join(low) != b"".join(high)
    assert r1.digest != r19.digest
    assert r1.diff_id == r19.diff_id == sha(TAR)


ZEROS_100M_GZ = gz(bytes(100 * MiB))


@pytest.mark.anyio
async def test_bomb_guard_raises_naming_limit() -> None:
    assert len(ZEROS_100M_GZ) < 200_000
    with pytest.raises(OutputLimitError, match=str(MiB)) as info:
        await recompress(ZEROS_100M_GZ, max_output=MiB, sizes=(len(ZEROS_100M_GZ),))
    assert info.value.limit == MiB


@pytest.mark.anyio
async def test_exact_limit_is_allowed() -> None:
    _, result = await recompress(TAR_GZ, max_output=len(TAR))
    assert result.diff_id == sha(TAR)
    with pytest.raises(OutputLimitError):
        await recompress(TAR_GZ, max_output=len(TAR) - 1)


@pytest.mark.anyio
async def test_memory_stays_bounded_on_huge_expansion() -> None:
    """A ~100 KiB input chunk expanding to 100 MiB: chunks and Python-side peak memory stay small."""
    result = Recompressed()
    largest = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        source = stream(ZEROS_100M_GZ, (len(ZEROS_100M_GZ),))
        async for chunk in gzip_to_zstd(source, max_output=200 * MiB, result=result):
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.diff_id == sha(bytes(100 * MiB))
    assert largest <= 4 * MiB
    assert peak < 16 * MiB, peak


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (TAR_GZ[: len(TAR_GZ) // 2], "truncated"),
        (TAR_GZ[:-4], "truncated"),  # missing ISIZE trailer
        (TAR_GZ[:5], "truncated"),  # inside the header
        (TAR_GZ[:100] + bytes(b ^ 0xFF for b in TAR_GZ[100:200]) + TAR_GZ[200:], "corrupt"),
        (TAR_GZ[:-8] + b"\0\0\0\0" + TAR_GZ[-4:], "corrupt"),  # CRC mismatch
        (b"not gzip at all", "corrupt"),
        (TAR_GZ + b"garbage", "trailing"),
        (b"", "empty"),
    ],
    ids=["half", "no-trailer", "header", "flipped", "bad-crc", "not-gzip", "trailing-garbage", "empty"],
)
async def test_corrupt_gzip_raises(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptDataError, match=reason) as info:
        await recompress(data, sizes=(7, 4096))
    assert info.value.format == "gzip"


async def decompress_zstd(data: bytes, **kwargs: int) -> bytes:
    return b"".join([c async for c in zstd_decompress_bounded(stream(data, (5000,)), **kwargs)])


@pytest.mark.anyio
async def test_zstd_round_trip_multi_frame() -> None:
    c = zstandard.ZstdCompressor(level=3)
    data = c.compress(TAR[:1000]) + c.compress(TAR[1000:])
    assert await decompress_zstd(data, max_output=len(TAR)) == TAR


@pytest.mark.anyio
async def test_zstd_over_limit_and_chunks_bounded() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(100 * MiB))
    assert len(bomb) < 100_000
    with pytest.raises(OutputLimitError, match=str(MiB)):
        await decompress_zstd(bomb, max_output=MiB)
    largest = 0
    total = 0
    async for chunk in zstd_decompress_bounded(stream(bomb, (len(bomb),)), max_output=100 * MiB):
        largest = max(largest, len(chunk))
        total += len(chunk)
    assert total == 100 * MiB
    assert largest <= 4 * MiB


@pytest.mark.anyio
async def test_zstd_window_above_limit_raises() -> None:
    params = zstandard.ZstdCompressionParameters(window_log=28)
    cobj = zstandard.ZstdCompressor(compression_params=params).compressobj()  # no pledged size: window kept
    frame = cobj.compress(TAR) + cobj.flush()
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 28
    with pytest.raises(WindowTooLargeError, match=r"2\*\*27"):
        await decompress_zstd(frame, max_output=1 << 30)
    assert await decompress_zstd(frame, max_output=1 << 30, max_window_log=28) == TAR


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (zstandard.ZstdCompressor().compress(TAR)[:-10], "truncated"),
        (b"\x28\xb5\x2f\xfd\xff\xff\xff\xff" * 4, "corrupt"),
        (b"", "empty"),
    ],
    ids=["truncated", "garbage", "empty"],
)
async def test_zstd_corrupt_raises(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptDataError, match=reason):
        await decompress_zstd(data, max_output=1 << 30)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (TAR_GZ, "gzip"),
        (b"\x1f\x8b", "gzip"),
        (zstandard.ZstdCompressor().compress(b"x"), "zstd"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (TAR, "none"),
        (b"\x1f", "none"),
        (b"", "none"),
        (zlib.compress(b"x"), "none"),
    ],
)
def test_detect(data: bytes, expected: str) -> None:
    assert detect(data) == expected


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (OCI_LAYER_GZIP, OCI_LAYER_ZSTD),
        (OCI_NONDIST_LAYER_GZIP, OCI_NONDIST_LAYER_ZSTD),
        (DOCKER_LAYER_GZIP, OCI_LAYER_ZSTD),
        (DOCKER_FOREIGN_LAYER_GZIP, OCI_NONDIST_LAYER_ZSTD),
        (OCI_LAYER_ZSTD, None),
        ("application/vnd.oci.image.layer.v1.tar", None),
        ("application/vnd.oci.image.config.v1+json", None),
        ("", None),
    ],
)
def test_zstd_media_type(media_type: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NotConvertibleError, match="not a gzip layer"):
            zstd_media_type(media_type)
    else:
        assert zstd_media_type(media_type) == expected
        assert expected.endswith("+zstd")
