"""Streaming layer recompression (gzip → zstd) and bounded zstd decompression.

Nothing here holds a whole layer in memory: input is consumed chunk by chunk, every decompression call
has a bounded output, compressed output is yielded in ~1 MiB batches, and both the uncompressed tar
(``diff_id``) and the produced blob (``digest``) are hashed on the fly.

Untrusted input is bounded: ``max_output`` caps the total *uncompressed* size (decompression bombs),
zstd frames needing a window above ``2**max_window_log`` are refused, and corrupt or truncated streams
raise :class:`CorruptDataError`.

Threading choice: each bounded CPU step (≤ 1 MiB of decompressed data plus its compression and hashing)
runs in a worker thread via :func:`anyio.to_thread.run_sync`, so slow compression levels never stall
the event loop; zlib, zstd and hashlib release the GIL for such buffers. Steps are not cancellable
mid-way, but each one is short.

``zstandard`` is imported by the classes that compress or decompress, not with this module: a copy that
recompresses nothing never loads it.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Final, Literal

import anyio.to_thread

from ocicopy.digest import Digest, Hasher
from ocicopy.errors import (
    CompressionError,
    CorruptDataError,
    NotConvertibleError,
    OutputLimitError,
    WindowTooLargeError,
)
from ocicopy.models import (
    DOCKER_FOREIGN_LAYER_GZIP,
    DOCKER_LAYER_GZIP,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_NONDIST_LAYER_GZIP,
    OCI_NONDIST_LAYER_ZSTD,
)

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


# Docker media types map to OCI ones: schema 2 has no zstd layer type, so the manifest carrying the
# result must be an OCI manifest.
_TO_ZSTD: Final = {
    OCI_LAYER_GZIP: OCI_LAYER_ZSTD,
    OCI_NONDIST_LAYER_GZIP: OCI_NONDIST_LAYER_ZSTD,
    DOCKER_LAYER_GZIP: OCI_LAYER_ZSTD,
    DOCKER_FOREIGN_LAYER_GZIP: OCI_NONDIST_LAYER_ZSTD,
}

STEP: Final = 1 << 20
"""Max decompressed bytes per step, and the output batch size."""

_ZSTD_FEED: Final = 64
"""Compressed bytes fed to zstd per call. ``ZstdDecompressionObj.decompress`` has no ``max_length``;
a zstd block decodes to ≤ 128 KiB and takes ≥ 4 bytes, so 64 input bytes yield ≤ ~2.1 MiB."""


def detect(first_bytes: bytes) -> Literal["gzip", "zstd", "none"]:
    """Compression of a blob from its first bytes (magic numbers)."""
    if first_bytes.startswith(GZIP_MAGIC):
        return "gzip"
    if first_bytes.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def zstd_media_type(media_type: str) -> str:
    """The OCI ``+zstd`` layer media type replacing a gzip layer's; :class:`NotConvertibleError` otherwise."""
    try:
        return _TO_ZSTD[media_type]
    except KeyError:
        raise NotConvertibleError(media_type) from None


class Recompressed:
    """Result of :func:`gzip_to_zstd`, readable once the iterator is exhausted."""

    def __init__(self) -> None:
        self._digest: Digest | None = None
        self._diff_id: Digest | None = None
        self._size = 0
        self._source_size = 0

    @property
    def done(self) -> bool:
        return self._digest is not None

    def _get(self, value: Digest | None) -> Digest:
        if value is None:
            raise CompressionError("recompression result read before the stream was fully consumed")
        return value

    @property
    def digest(self) -> Digest:
        """sha256 of the produced zstd blob."""
        return self._get(self._digest)

    @property
    def diff_id(self) -> Digest:
        """sha256 of the uncompressed tar (compare with the config's ``rootfs.diff_ids``)."""
        return self._get(self._diff_id)

    @property
    def size(self) -> int:
        """Size of the produced zstd blob."""
        self._get(self._digest)
        return self._size

    @property
    def source_size(self) -> int:
        """Size of the gzip input."""
        self._get(self._digest)
        return self._source_size


class _GzipToZstd:
    """Synchronous state machine; each :meth:`step` does a bounded amount of work."""

    def __init__(self, level: int, max_output: int) -> None:
        import zstandard

        self.max_output = max_output
        self.inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.in_member = False  # bytes fed to the current member, which has not ended yet
        self.members = 0
        self.compressor = zstandard.ZstdCompressor(level=level).compressobj()
        self.raw = Hasher()
        self.out = Hasher()
        self.pending = b""  # input still to feed

    def step(self) -> bytes:
        """Inflate ≤ STEP bytes from ``pending``, hash and compress them; return compressed bytes (maybe empty)."""
        data = self.pending
        if self.inflater.eof:  # next gzip member
            if not data.startswith(GZIP_MAGIC[: len(data)]):
                raise CorruptDataError("gzip", "trailing data after the last gzip member")
            self.inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            raw = self.inflater.decompress(data, STEP)
        except zlib.error as e:
            raise CorruptDataError("gzip", str(e)) from None
        self.in_member = not self.inflater.eof
        if self.inflater.eof:
            self.members += 1
            self.pending = self.inflater.unused_data
        else:
            self.pending = self.inflater.unconsumed_tail  # a full STEP with no tail: see more()
        if self.raw.size + len(raw) > self.max_output:
            raise OutputLimitError("gzip", self.max_output)
        self.raw.update(raw)
        return self.compressor.compress(raw) if raw else b""

    def more(self, last_len: int) -> bool:
        """Whether another step is needed before more input: input left, or a full-output step."""
        return bool(self.pending) or (not self.inflater.eof and last_len == STEP)

    def step_all(self) -> tuple[bytes, bool]:
        """One step; returns (compressed, more)."""
        before = self.raw.size
        out = self.step()
        return out, self.more(self.raw.size - before)

    def finish(self) -> bytes:
        if self.in_member or (self.members == 0 and not self.inflater.eof):
            raise CorruptDataError("gzip", "truncated stream" if self.raw.size or self.in_member else "empty stream")
        return self.compressor.flush()


async def gzip_to_zstd(
    chunks: AsyncIterable[bytes], *, level: int = 3, max_output: int, result: Recompressed
) -> AsyncIterator[bytes]:
    """Recompress a (possibly multi-member) gzip stream to a zstd stream, yielding ~1 MiB batches.

    ``max_output`` bounds the uncompressed size (:class:`OutputLimitError`); corrupt, truncated or empty
    input raises :class:`CorruptDataError`. ``result`` is filled in when the stream ends.
    """
    state = _GzipToZstd(level, max_output)
    batch = bytearray()
    source_size = 0
    async for chunk in chunks:
        if not chunk:
            continue
        source_size += len(chunk)
        state.pending = chunk
        more = True
        while more:
            out, more = await anyio.to_thread.run_sync(state.step_all)
            batch += out
            if len(batch) >= STEP:
                data = bytes(batch)
                batch.clear()
                state.out.update(data)
                yield data
    batch += state.finish()
    if batch:
        data = bytes(batch)
        state.out.update(data)
        yield data
    result._source_size = source_size
    result._size = state.out.size
    result._diff_id = state.raw.digest()
    result._digest = state.out.digest()


class _ZstdBounded:
    def __init__(self, max_output: int, max_window_log: int) -> None:
        import zstandard

        self.error = zstandard.ZstdError
        self.max_output = max_output
        self.max_window_log = max_window_log
        self.dctx = zstandard.ZstdDecompressor(max_window_size=1 << max_window_log)
        self.obj = self.dctx.decompressobj()
        self.in_frame = False
        self.frames = 0
        self.total = 0
        self.pending = memoryview(b"")

    def step(self) -> bytes:
        """Decode input until ≥ STEP bytes came out or the input ran out (≤ STEP + ~2.1 MiB)."""
        batch = bytearray()
        while self.pending and len(batch) < STEP:
            if self.obj.eof:
                self.obj = self.dctx.decompressobj()
            piece, self.pending = self.pending[:_ZSTD_FEED], self.pending[_ZSTD_FEED:]
            try:
                out = self.obj.decompress(piece)
            except self.error as e:
                if "too much memory" in str(e) or "window" in str(e).lower():
                    raise WindowTooLargeError(self.max_window_log, str(e)) from None
                raise CorruptDataError("zstd", str(e)) from None
            self.in_frame = not self.obj.eof
            if self.obj.eof:
                self.frames += 1
                rest = self.obj.unused_data
                if rest:
                    self.pending = memoryview(bytes(rest) + bytes(self.pending))
            self.total += len(out)
            if self.total > self.max_output:
                raise OutputLimitError("zstd", self.max_output)
            batch += out
        return bytes(batch)


async def zstd_decompress_bounded(
    chunks: AsyncIterable[bytes], *, max_output: int, max_window_log: int = 27
) -> AsyncIterator[bytes]:
    """Decompress a (possibly multi-frame) zstd stream, yielding ≤ ~3 MiB chunks.

    Raises :class:`OutputLimitError` past ``max_output`` decompressed bytes, :class:`WindowTooLargeError`
    for frames needing a window above ``2**max_window_log``, :class:`CorruptDataError` on corrupt,
    truncated or empty input.
    """
    state = _ZstdBounded(max_output, max_window_log)
    async for chunk in chunks:
        state.pending = memoryview(chunk)
        while state.pending:
            out = await anyio.to_thread.run_sync(state.step)
            if out:
                yield out
    if state.in_frame or state.frames == 0:
        raise CorruptDataError("zstd", "truncated stream" if state.in_frame else "empty stream")
