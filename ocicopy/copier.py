"""Copy one image, index or artifact between repositories: blobs, then manifests, children before parents.

Order guarantees (never a manifest before what it references, never a tag on an incomplete image):

1. every blob of an image is present at the destination (skipped, mounted or streamed) before the image
   manifest is PUT, and it is PUT by digest when it is an index child;
2. every child of an index is PUT before the index;
3. the tag is written last, by the top-level PUT.

A blob is skipped when the destination already has it (HEAD), mounted when a candidate repository on the same
registry holds it (``POST ?mount=&from=``; any refusal falls back to an upload), and otherwise streamed
GET → verify → PUT without being held in memory. Blob transfers share one :class:`anyio.CapacityLimiter`;
the same destination blob is transferred at most once per client (:class:`SingleFlight`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import httpx2

from ocicopy.compression import Recompression
from ocicopy.converter import Converter
from ocicopy.digest import Digest, Verifier
from ocicopy.errors import DigestMismatchError, ManifestError, ReadGaveUp, RegistryError, TransportError
from ocicopy.flight import SingleFlight
from ocicopy.models import Descriptor, Manifest, compact_manifest
from ocicopy.options import Timeouts
from ocicopy.platforms import PlatformSpec
from ocicopy.progress import NoProgress, Progress
from ocicopy.registry import UploadSession, verified
from ocicopy.result import BlobAction, BlobResult, ManifestResult
from ocicopy.retry import RetryPolicy, is_retryable_status
from ocicopy.store import BlobSink, BlobSource, Endpoint, Store
from ocicopy.subjects import FallbackIndexes, referrer_descriptor
from ocicopy.transform import convertible, rewrite_image, rewrite_index

#: An async callable giving, for a destination host and digest, repositories there that may hold the blob.
MountHints = Callable[[str, Digest], Awaitable[Sequence[str]]]
#: Where to try mounting from: fixed repository names, or hints looked up per blob (e.g. the mirror's ledger).
MountFrom = Sequence[str] | MountHints
MAX_MOUNT_TRIES = 3
CONFIG_LIMIT = 16 * 1024 * 1024  # an image config read to check diff_ids after a recompression


@dataclass
class TreeResult:
    """What copying a manifest tree did (collected across concurrent tasks)."""

    blobs: list[BlobResult] = field(default_factory=list)
    manifests: list[ManifestResult] = field(default_factory=list)
    top: Manifest | None = None

    def record_manifest(self, desc: Descriptor, action: BlobAction, reference: str) -> None:
        self.manifests.append(
            ManifestResult(
                digest=desc.digest, media_type=desc.media_type, size=desc.size, action=action, reference=reference
            )
        )


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

    async def copy(self, src: Store, dst: Store, desc: Descriptor, mount_from: MountFrom = ()) -> BlobResult:
        """Make ``desc`` present in ``dst``; ``mount_from`` lists repositories of ``dst``'s registry to try."""
        key = (dst.host, dst.repository, desc.digest)
        result, leader = await self.flight.run(key, lambda: self._copy(src, dst, desc, mount_from))
        if leader:
            return result
        return BlobResult(digest=desc.digest, size=desc.size, media_type=desc.media_type, action=BlobAction.SKIPPED)

    async def _copy(self, src: Store, dst: Store, desc: Descriptor, mount_from: MountFrom) -> BlobResult:
        started = time.monotonic()
        action, sent, origin = BlobAction.SKIPPED, 0, None
        if not (src.host == dst.host and src.repository == dst.repository):
            if isinstance(dst, Endpoint):
                action, sent, origin = await self._place(src, dst, desc, mount_from)
            else:
                action, sent = await self._write(src, dst, desc)
        result = BlobResult(
            digest=desc.digest,
            size=desc.size,
            media_type=desc.media_type,
            action=action,
            bytes_sent=sent,
            seconds=round(time.monotonic() - started, 6),
            mounted_from=origin,
        )
        self._located(dst, desc.digest)
        self.progress.blob_finished(result)
        return result

    def _located(self, dst: Store, digest: Digest) -> None:
        known = self.located.setdefault((dst.host, digest), [])
        if dst.repository not in known:
            known.append(dst.repository)

    async def _write(self, src: Store, dst: Store, desc: Descriptor) -> tuple[BlobAction, int]:
        """Into a store that takes a stream directly (an OCI layout): present → skip; else stream, verified
        by the store before its atomic rename."""
        if not isinstance(dst, BlobSink):
            raise TypeError(f"cannot write blobs into {dst!r}")
        async with self.limiter:
            if await dst.blob_exists(desc.digest) == desc.size:  # a file of another size is rewritten
                return BlobAction.SKIPPED, 0
            self.progress.blob_started(desc.digest, desc.size)
            await dst.write_blob(desc.digest, desc.size, self._counted(desc.digest, self.read(src, desc)))
        return BlobAction.COPIED, desc.size

    async def mount_only(self, dst: Endpoint, digest: Digest, mount_from: MountFrom) -> str | None:
        """Try to mount ``digest`` into ``dst`` from the usual candidates; the origin, or None (nothing opened)."""
        async with self.limiter:
            candidates = await self._candidates(None, dst, digest, mount_from)
            origin, session = await self._try_mounts(dst, digest, candidates)
            if session is not None:
                await dst.registry.cancel_upload(session)
        if origin is not None:
            self._located(dst, digest)
        return origin

    async def _candidates(self, src: Store | None, dst: Endpoint, digest: Digest, mount_from: MountFrom) -> list[str]:
        """Repositories of the destination registry to mount ``digest`` from, most likely first.

        The source repository when source and destination share a registry, then where this client already
        placed the blob on that registry, then the caller's hints. Never across registries: a mount is
        same-registry only (distribution-spec "Mounting a blob from another repository").
        """
        if not self.mounts:
            return []
        hints = await mount_from(dst.host, digest) if callable(mount_from) else mount_from
        ordered = [*self.located.get((dst.host, digest), ()), *hints]
        if src is not None and src.host == dst.host:
            ordered.insert(0, src.repository)
        # Each declined mount costs a request and an upload session: try a few, then upload.
        return [r for r in dict.fromkeys(ordered) if r != dst.repository][:MAX_MOUNT_TRIES]

    async def _try_mounts(
        self, dst: Endpoint, digest: Digest, candidates: Sequence[str]
    ) -> tuple[str | None, UploadSession | None]:
        """Ask for a mount from each candidate: ``(origin, None)`` when one worked, else ``(None, session)``."""
        session: UploadSession | None = None
        for origin in candidates:
            if session is not None:
                await dst.registry.cancel_upload(session)
            try:
                session = await dst.registry.start_upload(dst.repository, digest, origin)
            except RegistryError:
                # Harbor answers 401, Docker Hub/others 403/404 for a mount they decline: upload instead.
                session = None
                continue
            if session is None:
                return origin, None
        return None, session

    async def _place(
        self, src: Store, dst: Endpoint, desc: Descriptor, mount_from: MountFrom
    ) -> tuple[BlobAction, int, str | None]:
        """HEAD → mount → (one transfer per registry and digest) → stream. The limiter is held only while this
        copy talks to a registry, never while it waits for another copy's transfer of the same blob."""
        async with self.limiter:
            if await dst.registry.blob_exists(dst.repository, desc.digest) is not None:
                return BlobAction.SKIPPED, 0, None
            candidates = await self._candidates(src, dst, desc.digest, mount_from)
            origin, session = await self._try_mounts(dst, desc.digest, candidates)
        if origin is not None:
            return BlobAction.MOUNTED, 0, origin
        # A concurrent or earlier copy of the same blob into another repository of this registry: wait for it,
        # then mount from where it landed (kept for the client's life; a failed mount streams after all).
        key = (dst.host, desc.digest) if self.mounts else (dst.host, dst.repository, desc.digest)
        landed, leader = await self.transfers.run(key, lambda: self._stream_into(src, dst, desc, session))
        if leader:
            return BlobAction.COPIED, desc.size, None
        async with self.limiter:
            if session is not None:  # the declined mount's session is not needed if the mount below works
                await dst.registry.cancel_upload(session)
            origin, session = await self._try_mounts(dst, desc.digest, [landed])
            if origin is not None:
                return BlobAction.MOUNTED, 0, origin
            await self.stream(src, dst, desc, session)
        return BlobAction.COPIED, desc.size, None

    async def _stream_into(self, src: Store, dst: Endpoint, desc: Descriptor, session: UploadSession | None) -> str:
        async with self.limiter:
            await self.stream(src, dst, desc, session)
        return dst.repository

    async def stream(self, src: Store, dst: Endpoint, desc: Descriptor, session: UploadSession | None) -> None:
        """GET from ``src`` → verify → PUT into ``dst``, retried from scratch (new session) on transient faults."""
        attempt = 0
        while True:
            attempt += 1
            session = session or await dst.registry.start_upload(dst.repository)
            if session is None:  # start_upload without a mount always opens a session
                raise RegistryError(0, "POST", dst.host, (), "registry opened no upload session")
            sent = _Sent()
            try:
                await self._stream_once(src, dst, desc, session, sent)
                return
            except (TransportError, httpx2.TransportError, RegistryError) as exc:
                with anyio.CancelScope(shield=True):
                    if sent.all and await _committed(dst, desc):
                        return  # the answer to the committing PUT was lost, but the blob is there and verified
                    await dst.registry.cancel_upload(session)
                session = None
                if attempt >= self.retry.attempts or not _transient(exc):
                    if isinstance(exc, httpx2.TransportError):  # a stream broke mid-body: say which blob, as data
                        reason = f"{type(exc).__name__} after {attempt} attempts"
                        raise TransportError(
                            "GET/PUT", f"blob {desc.digest} {src.host} -> {dst.host}", reason
                        ) from None
                    raise
                await anyio.sleep(self.retry.delay(attempt))
            except BaseException:
                if not sent.all:  # a session whose whole body went out may be committed: never DELETE it
                    with anyio.CancelScope(shield=True):
                        await dst.registry.cancel_upload(session)
                raise

    async def _stream_once(
        self, src: Store, dst: Endpoint, desc: Descriptor, session: UploadSession, sent: _Sent
    ) -> None:
        self.progress.blob_started(desc.digest, desc.size)
        verifier = Verifier(desc.digest, desc.size)
        body = verified(self._counted(desc.digest, self.read(src, desc)), verifier)
        deadline = self.timeouts.transfer_deadline(desc.size)
        with anyio.move_on_after(deadline) as scope:
            await dst.registry.upload(session, desc.digest, desc.size, sent.watch(body))
        if scope.cancelled_caught:
            raise TransportError(
                "GET/PUT", f"{src}@{desc.digest}", f"transfer exceeded its {deadline:.0f} s deadline (slow source?)"
            )

    async def read(self, src: Store, desc: Descriptor) -> AsyncIterator[bytes]:
        """The blob's bytes from ``src`` (unverified: the caller checks them)."""
        if isinstance(src, Endpoint):
            async for chunk in self._read(src, desc):
                yield chunk
        elif isinstance(src, BlobSource):
            async for chunk in src.read_blob(desc.digest):
                yield chunk
        else:
            raise TypeError(f"cannot read blobs from {src!r}")

    async def _read(self, src: Endpoint, desc: Descriptor) -> AsyncIterator[bytes]:
        """The blob's bytes from a registry, resuming a broken or short read with ``Range: bytes=N-``.

        Only a 206 whose ``Content-Range`` starts at N is appended; any other answer to a resume means the
        bytes already sent cannot be continued, and the transfer restarts from zero (a :class:`TransportError`
        that :meth:`stream` retries with a new upload session). Bounded by the retry policy's attempts; the
        digest and size are checked by the caller's :class:`Verifier` whatever happened.
        """
        offset, failures = 0, 0
        where = f"{src.host}/{src.repository}@{desc.digest}"
        while True:
            try:
                async with src.registry.blob_get(src.repository, desc.digest, offset) as response:
                    _check_read(response, offset, desc, where)
                    async for chunk in response.aiter_raw():
                        offset += len(chunk)
                        yield chunk
            except httpx2.TransportError as exc:
                reason = f"{type(exc).__name__} at byte {offset} of {desc.size}"
            else:
                if offset >= desc.size:
                    return  # complete (a longer body was already refused by the verifier)
                reason = f"body ended at byte {offset} of {desc.size}"
            failures += 1
            if failures >= self.retry.attempts:
                raise ReadGaveUp("GET", where, f"{reason}, after {failures} attempts")
            await anyio.sleep(self.retry.delay(failures))

    async def _counted(self, digest: Digest, stream: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in stream:
            self.progress.blob_advanced(digest, len(chunk))
            yield chunk


class _Sent:
    """Whether a streamed upload body was handed over whole (then its session may already be committed)."""

    def __init__(self) -> None:
        self.all = False

    async def watch(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            yield chunk
        self.all = True


async def _committed(dst: Endpoint, desc: Descriptor) -> bool:
    try:
        return await dst.registry.blob_exists(dst.repository, desc.digest) == desc.size
    except (TransportError, RegistryError):
        return False


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


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ReadGaveUp):
        return False
    if isinstance(exc, RegistryError):
        # 416 on a PATCH (the registry lost track of the offset) or a source range: start over, new session.
        return exc.status == 416 or is_retryable_status(exc.status, exc.codes)
    return isinstance(exc, TransportError | httpx2.TransportError)


@dataclass
class CopyJob:
    """One tree copy: where from, where to, and what to do on the way."""

    src: Store
    dst: Store
    mount_from: MountFrom = ()
    compress: Recompression | None = None
    out: TreeResult = field(default_factory=TreeResult)


class TreeCopier:
    """Copies a manifest and everything under it; with a recompression, converts layers and rewrites manifests."""

    def __init__(self, blobs: BlobCopier, progress: Progress | None = None, converter: Converter | None = None) -> None:
        self.blobs = blobs
        self.progress: Progress = progress or NoProgress()
        self.converter = converter or Converter(blobs)
        self.fallback = FallbackIndexes()

    async def copy(
        self,
        src: Store,
        dst: Store,
        manifest: Manifest,
        reference: str | None,
        mount_from: MountFrom = (),
        compress: Recompression | None = None,
    ) -> TreeResult:
        """Copy ``manifest`` (already fetched and verified) from ``src`` and PUT it at ``dst`` as ``reference``
        (a tag, or None: by its own digest, which a recompression changes). ``out.top`` is what was pushed."""
        job = CopyJob(src, dst, mount_from, compress)
        job.out.top = await self._copy_tree(job, manifest, reference, root=True)
        return job.out

    async def _copy_tree(self, job: CopyJob, manifest: Manifest, reference: str | None, root: bool) -> Manifest:
        """Children and blobs first (concurrently), then this manifest; returns the manifest pushed."""
        children: dict[int, Descriptor] = {}
        layers: dict[int, Descriptor] = {}
        diff_ids = await self._diff_ids(job, manifest)
        async with anyio.create_task_group() as tg:
            for i, child in enumerate(manifest.children()):
                tg.start_soon(self._copy_child, job, i, child, children)
            for i, desc in enumerate(manifest.blobs()):  # config is -1, layers from 0
                tg.start_soon(self._copy_blob, job, i - 1, desc, layers, diff_ids)
        source = manifest
        if job.compress is not None:
            manifest = _converted(manifest, children, layers)
            self.converter.remember(source.digest, manifest.descriptor())
        await self._put(job, manifest, reference or str(manifest.digest), root, source)
        return manifest

    async def _diff_ids(self, job: CopyJob, manifest: Manifest) -> list[Digest] | None:
        """For a recompression of an image: its config's ``diff_ids`` (one per layer), which every converted
        layer must uncompress to; None otherwise (or for a config that is not an image config)."""
        if job.compress is None or manifest.is_index or not any(convertible(d) for d in manifest.blobs()[1:]):
            return None
        config, *layers = manifest.blobs()
        diff_ids = await self.converter.config_diff_ids(job.src, config, CONFIG_LIMIT)
        if diff_ids is not None and len(diff_ids) != len(layers):
            raise ManifestError(f"the image config lists {len(diff_ids)} diff_ids for {len(layers)} layers")
        return diff_ids

    async def _put(self, job: CopyJob, manifest: Manifest, reference: str, root: bool, source: Manifest) -> None:
        """PUT ``manifest`` (``source`` is what it was made from: the same, or before a recompression)."""
        dst = job.dst
        try:
            indexed = await dst.manifest_put(reference, manifest, root=root)
        except RegistryError as exc:
            if "MANIFEST_BLOB_UNKNOWN" not in exc.codes or not await self._upload_mounted(job, manifest, source):
                raise
            indexed = await dst.manifest_put(reference, manifest, root=root)  # once more, not in a loop
        subject = manifest.view.subject
        if subject is not None and not indexed:  # no referrers API there: keep the fallback index (last)
            await self.fallback.add(dst, subject.digest, referrer_descriptor(manifest))
        self.progress.manifest_pushed(manifest.digest, reference)
        job.out.record_manifest(manifest.descriptor(), BlobAction.COPIED, reference)

    async def _upload_mounted(self, job: CopyJob, manifest: Manifest, source: Manifest) -> bool:
        """After ``MANIFEST_BLOB_UNKNOWN``: upload the blobs of ``manifest`` that were mounted; False if none were.

        A registry may accept a mount (201) yet not count the blob for manifests of the new repository (ECR
        mounts only blobs of committed manifests; see REGISTRY-QUIRKS.md, "Mounts").
        """
        if not isinstance(job.dst, Endpoint):
            return False
        by_digest = {d.digest: d for d in manifest.blobs()}
        originals = {d.digest: d for d in source.blobs()}
        mounted = [b for b in job.out.blobs if b.action is BlobAction.MOUNTED and b.digest in by_digest]
        for blob in mounted:
            origin: Store = job.src
            if blob.source_digest is not None and job.compress is not None:  # a recompressed layer: from the spool
                origin = await self.converter.spooled(job.src, originals[blob.source_digest], job.compress)
            await self.blobs.stream(origin, job.dst, by_digest[blob.digest], None)
        return bool(mounted)

    async def _copy_blob(
        self, job: CopyJob, i: int, desc: Descriptor, layers: dict[int, Descriptor], diff_ids: list[Digest] | None
    ) -> None:
        if job.compress is not None and i >= 0 and convertible(desc):
            diff_id = diff_ids[i] if diff_ids is not None else None
            layers[i], result = await self.converter.layer(
                job.src, job.dst, desc, job.compress, job.mount_from, diff_id
            )
        else:
            result = await self.blobs.copy(job.src, job.dst, desc, job.mount_from)
        job.out.blobs.append(result)

    async def _copy_child(self, job: CopyJob, i: int, desc: Descriptor, children: dict[int, Descriptor]) -> None:
        """Copy one index child by digest; skipped whole when the destination already has it (for a
        recompression: when its converted digest is known and present)."""
        if job.compress is None:
            target: Descriptor | None = desc
        else:
            target = self.converter.mapping.get(desc.digest)
        if target is not None and await job.dst.manifest_head(str(target.digest)) is not None:
            job.out.record_manifest(target, BlobAction.SKIPPED, str(target.digest))
            children[i] = target
            return
        child = await fetch_child(job.src, desc)
        pushed = await self._copy_tree(job, child, None, root=False)
        children[i] = pushed.descriptor()


def _converted(manifest: Manifest, children: dict[int, Descriptor], layers: dict[int, Descriptor]) -> Manifest:
    """``manifest`` rewritten for converted ``layers`` or ``children``; the same bytes when nothing changed."""
    if manifest.is_index:
        old = manifest.children()
        changed = any(d.digest != old[i].digest for i, d in children.items())
        return rewrite_index(manifest, children) if changed else manifest
    return rewrite_image(manifest, layers) if layers else manifest


async def fetch_child(src: Store, desc: Descriptor) -> Manifest:
    """GET a manifest by its descriptor: bytes checked against the digest and the size."""
    manifest = await src.manifest_get(str(desc.digest))
    if manifest.size != desc.size:
        raise DigestMismatchError(desc.digest, None, manifest.size, desc.size, "manifest size differs from descriptor")
    return manifest


def select_platforms(index: Manifest, specs: Sequence[PlatformSpec]) -> list[Descriptor]:
    """The index entries matching ``specs``, one per spec, in index order; an error names what is missing."""
    chosen: list[Descriptor] = []
    for spec in specs:
        match = next((d for d in index.children() if spec.matches(d.platform)), None)
        if match is None:
            available = ", ".join(sorted({str(d.platform) for d in index.children() if d.platform})) or "none"
            raise ManifestError(f"no manifest for platform {spec} in the index (available: {available})")
        if match not in chosen:
            chosen.append(match)
    order = {d.digest: i for i, d in enumerate(index.children())}
    return sorted(chosen, key=lambda d: order[d.digest])


def apply_selection(top: Manifest, specs: Sequence[PlatformSpec]) -> Manifest | Descriptor:
    """What a platform selection of ``top`` yields, without I/O: ``top`` itself (no selection, not an index,
    or every platform), a subset index (several platforms), or the descriptor of one child (one platform)."""
    if not specs or not top.is_index:
        return top
    chosen = select_platforms(top, specs)
    if len(specs) == 1:
        return chosen[0]
    if len(chosen) == len(top.children()):
        return top
    return subset_index(top, chosen)


def subset_index(index: Manifest, keep: Sequence[Descriptor]) -> Manifest:
    """A new index listing only ``keep`` (a transformation: the digest changes; serialised compactly)."""
    doc = json.loads(index.raw)
    wanted = {d.digest for d in keep}
    doc["manifests"] = [m for m in doc["manifests"] if m.get("digest") in wanted]
    return compact_manifest(doc, index.media_type)
