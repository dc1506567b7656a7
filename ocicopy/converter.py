"""Layer recompression during a copy: gzip → zstd once per source layer, then placed like any blob.

Per gzip layer: if its conversion is already known (this client converted it, an earlier run recorded it in
the mirror's ledger, or it was read back from the destination's manifest) and the destination has — or can
mount — the converted blob, no byte is decompressed. Otherwise the source blob is streamed (its gzip digest
verified on the way), recompressed chunk by chunk (:func:`~ocicopy.compression.gzip_to_zstd`, bounded) and
written to a spool file on disk while its new digest is computed; the converted blob is then copied from the
spool with the usual skip → mount → stream steps. The spool lives in a temporary directory for the client's
lifetime (the converted layers of one run, on disk, never in memory), so a layer going to several
repositories or registries is recompressed once. Conversions of the same layer are single-flighted.

Why spool instead of streaming straight into the upload: a monolithic upload needs the digest in the
committing PUT's query and a ``Content-Length`` up front; and an upload that fails half-way is retried from
the spool instead of recompressing again.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ocicopy.blobs import BlobCopier, MountFrom
from ocicopy.compression import Recompressed, gzip_to_zstd, zstd_media_type
from ocicopy.digest import Digest, Verifier
from ocicopy.errors import BodyTooLargeError, InputError, ManifestError, NotFoundError
from ocicopy.flight import SingleFlight
from ocicopy.layout import BlobFiles, FileSink
from ocicopy.models import Descriptor, Manifest, ManifestInfo
from ocicopy.options import Recompression
from ocicopy.registry import verified
from ocicopy.result import BlobAction, BlobResult
from ocicopy.store import Mounting, Store, present
from ocicopy.transform import Conversion, Conversions, derive_mapping, predict, rewrite_index

if TYPE_CHECKING:
    from ocicopy.registry import UploadSession


class Spool:
    """Converted blobs on local disk, a :class:`~ocicopy.store.Store` of blobs only (``host`` ``spool:``)."""

    host = "spool:"
    repository = ""

    def __init__(self) -> None:
        # TemporaryDirectory: removed by close(), and by its finalizer if a client is never closed.
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._files: BlobFiles | None = None

    def __str__(self) -> str:
        return "recompressed layers (local spool)"

    @property
    def files(self) -> BlobFiles:
        if self._files is None:
            self._dir = tempfile.TemporaryDirectory(prefix="ocicopy-spool-", ignore_cleanup_errors=True)
            self._files = BlobFiles(Path(self._dir.name), self._not_found)
        return self._files

    def _not_found(self, message: str) -> NotFoundError:
        return NotFoundError(404, "READ", str(self), (), message)

    def path(self, digest: Digest) -> Path:
        return self.files.path(digest)

    def temp(self) -> Path:
        """A fresh file name in the spool for a blob whose digest is not known yet (a conversion in progress)."""
        return self.files.root / f".tmp-{secrets.token_hex(8)}"

    def adopt(self, temp: Path, digest: Digest) -> None:
        """Move a finished conversion into place under its digest."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, final)

    async def blob_exists(self, digest: Digest) -> int | None:
        return await self.files.size(digest)

    def read_blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        return self.files.read(desc.digest, offset)

    @asynccontextmanager
    async def blob_sink(self, desc: Descriptor, session: UploadSession | None = None) -> AsyncIterator[FileSink]:
        async with self.files.sink(desc.digest, desc.size) as sink:
            yield sink

    async def manifest_head(self, reference: str) -> ManifestInfo | None:
        return None  # a spool holds blobs only

    async def manifest_get(self, reference: str) -> Manifest:
        raise self._not_found("a spool holds no manifests")

    async def manifest_put(self, reference: str, manifest: Manifest, *, root: bool = True) -> bool:
        raise TypeError("a spool holds no manifests")

    async def referrers(self, digest: Digest, artifact_type: str | None = None) -> list[Descriptor] | None:
        return None

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = self._files = None


class Converter:
    """Recompresses layers for :class:`~ocicopy.tree.TreeCopier`; remembers source → converted digests.

    A known layer conversion (made here, or recorded in a mirror's ledger) is used only when its recorded
    uncompressed digest is the one the image's config lists at that position; a fresh conversion must match it
    too, before its blob is placed anywhere.
    """

    def __init__(self, blobs: BlobCopier, conversions: Conversions | None = None) -> None:
        self.blobs = blobs
        self.spool = Spool()
        #: source digest (layer or manifest) → conversion; seeded from ledgers and earlier results.
        self.conversions = conversions if conversions is not None else Conversions()
        self._flight: SingleFlight[Descriptor] = SingleFlight(keep_results=True)

    def close(self) -> None:
        self.spool.close()

    async def config_diff_ids(self, src: Store, config: Descriptor, limit: int) -> list[Digest] | None:
        """The ``rootfs.diff_ids`` of an image config read from ``src`` (capped, verified); None for a config
        that is not an image config (an artifact's)."""
        data = bytearray()
        async for chunk in verified(src.read_blob(config), Verifier(config.digest, config.size)):
            data += chunk
            if len(data) > limit:
                raise BodyTooLargeError(f"config {config.digest.short}", limit)
        return config_diff_ids(bytes(data))

    async def layer(
        self,
        src: Store,
        dst: Store,
        desc: Descriptor,
        settings: Recompression,
        mount_from: MountFrom,
        diff_id: Digest | None = None,
    ) -> tuple[Descriptor, BlobResult]:
        """Place the zstd version of gzip layer ``desc`` at ``dst``: its descriptor and what was done.

        ``diff_id``: what the config says the layer uncompresses to (checked; None when there is no config).
        """
        started = time.monotonic()
        known = self._usable(desc.digest, diff_id)
        if known is not None:
            action, origin = await self._place_known(dst, known, mount_from)
            if action is not None:
                return known, _result(known, desc, action, 0, started, origin)
        converted, read = await self._convert(src, desc, settings)
        made = self.conversions.conversion(desc.digest)
        actual = made.diff_id if made is not None else None
        if diff_id is not None and actual != diff_id:
            raise ManifestError(f"layer {desc.digest.short} uncompresses to {actual}, but the config lists {diff_id}")
        placed = await self.blobs.copy(self.spool, dst, converted, mount_from)
        action = BlobAction.RECOMPRESSED if placed.action is BlobAction.COPIED else placed.action
        result = _result(converted, desc, action, placed.bytes_sent, started, placed.mounted_from)
        return converted, result.model_copy(update={"bytes_read": desc.size if read else 0})

    def _usable(self, source: Digest, diff_id: Digest | None) -> Descriptor | None:
        """A known conversion of ``source`` whose recorded uncompressed digest is the expected one."""
        known = self.conversions.conversion(source)
        if known is None or known.diff_id is None or (diff_id is not None and known.diff_id != diff_id):
            return None
        return known.converted

    async def _place_known(
        self, dst: Store, known: Descriptor, mount_from: MountFrom
    ) -> tuple[BlobAction | None, str | None]:
        """A known conversion present at ``dst`` (skip) or mountable there; (None, None) when neither."""
        if present(await dst.blob_exists(known.digest), known):
            return BlobAction.SKIPPED, None
        if isinstance(dst, Mounting):
            origin = await self.blobs.mount_only(dst, known.digest, mount_from)
            if origin is not None:
                return BlobAction.MOUNTED, origin
        return None, None

    async def _convert(self, src: Store, desc: Descriptor, settings: Recompression) -> tuple[Descriptor, bool]:
        """The conversion of ``desc`` (done once per client and level); True when this call read the source."""
        key = (desc.digest, settings.level)
        return await self._flight.run(key, lambda: self._recompress(src, desc, settings))

    async def spooled(self, src: Store, source: Descriptor, settings: Recompression) -> Spool:
        """The spool, holding the conversion of ``source`` (converted again if it was placed by a mount and
        never spooled here: the recovery upload after a registry refused a mounted blob)."""
        known = self.conversions.get(source.digest)
        if known is None or await self.spool.blob_exists(known.digest) is None:
            self._flight.forget((source.digest, settings.level))
            await self._convert(src, source, settings)
        return self.spool

    async def _recompress(self, src: Store, desc: Descriptor, settings: Recompression) -> Descriptor:
        """Stream ``desc`` from ``src`` (gzip digest verified) through gzip → zstd into the spool."""
        result = Recompressed()
        source = verified(src.read_blob(desc), Verifier(desc.digest, desc.size))
        stream = gzip_to_zstd(source, level=settings.level, max_output=settings.max_uncompressed, result=result)
        temp = self.spool.temp()
        try:
            # A source read plus CPU: counted like a blob transfer.
            async with self.blobs.limiter, await anyio.open_file(temp, "wb") as f:
                async for chunk in stream:
                    await f.write(chunk)
            self.spool.adopt(temp, result.digest)
        finally:
            temp.unlink(missing_ok=True)
        converted = Descriptor.model_validate(
            {
                **desc.model_dump(by_alias=True, exclude_none=True),
                "mediaType": zstd_media_type(desc.media_type),
                "digest": result.digest,
                "size": result.size,
            }
        )
        self.conversions.add(Conversion(desc.digest, converted, result.diff_id))
        return converted


async def reproduce_conversion(src: Store, dst: Store, source: Manifest, held: Manifest) -> Manifest | None:
    """``held`` (found at the destination) when it is exactly the recompression of ``source``, else None.

    The layer conversions are read back positionally (:func:`~ocicopy.transform.derive_mapping`), the
    conversion is rebuilt from them and must equal ``held`` byte for byte (children of an index likewise).
    """
    if not source.is_index:
        rebuilt = predict(source, derive_mapping(source, held))
        return rebuilt if rebuilt is not None and rebuilt.digest == held.digest else None
    if not held.is_index or len(source.children()) != len(held.children()):
        return None
    children: dict[int, Descriptor] = {}
    for i, (old, new) in enumerate(zip(source.children(), held.children(), strict=True)):
        if old.digest == new.digest:
            children[i] = new
            continue
        child = await reproduce_conversion(
            src, dst, await src.manifest_get(str(old.digest)), await dst.manifest_get(str(new.digest))
        )
        if child is None:
            return None
        children[i] = child.descriptor()
    changed = any(d.digest != source.children()[i].digest for i, d in children.items())
    rebuilt = rewrite_index(source, children) if changed else source
    return rebuilt if rebuilt.digest == held.digest else None


def config_diff_ids(config: bytes) -> list[Digest] | None:
    """``rootfs.diff_ids`` of an image config; None when ``config`` is not an image config (an artifact's)."""
    try:
        listed = json.loads(config)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(listed, list):
        return None
    try:
        return [Digest(d) for d in listed]
    except (InputError, TypeError):
        raise ManifestError("the image config lists an invalid diff_id") from None


def _result(
    converted: Descriptor, source: Descriptor, action: BlobAction, sent: int, started: float, origin: str | None
) -> BlobResult:
    return BlobResult(
        digest=converted.digest,
        size=converted.size,
        media_type=converted.media_type,
        action=action,
        bytes_sent=sent,
        seconds=round(time.monotonic() - started, 6),
        mounted_from=origin,
        source_digest=source.digest,
    )
