"""Copy one image, index or artifact between stores: blobs, then manifests, children before parents.

Order guarantees (never a manifest before what it references, never a tag on an incomplete image):

1. every blob of an image is present at the destination (skipped, mounted or streamed: :mod:`ocicopy.blobs`)
   before the image manifest is PUT, and it is PUT by digest when it is an index child;
2. every child of an index is PUT before the index;
3. the tag is written last, by the top-level PUT.

With a recompression (``compress``), gzip layers go through the :class:`~ocicopy.converter.Converter` and the
manifests above them are rewritten (:mod:`ocicopy.transform`).

Concurrent writers: a registry may refuse a manifest PUT with ``MANIFEST_BLOB_UNKNOWN`` (often with
``DIGEST_INVALID``) although every blob was placed: CNCF distribution rewrites a repository's link to a blob
while another upload or mount of it commits, and a PUT in between fails (docs/REGISTRY-QUIRKS.md, "Concurrent
writers"). Re-placing the blobs at once would rewrite the link again and feed the race, so :meth:`TreeCopier._put`
first retries the PUT after a jittered backoff; only if that fails too does it look at the blobs the error
names, re-placing those that two HEADs spaced apart both miss; and when none is missing but some were mounted,
it uploads those (ECR accepts a mount it does not count for manifests: docs/REGISTRY-QUIRKS.md, "Mounts"). Bounded
in attempts and time (:data:`BLOB_RACE_POLICY`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import anyio

from ocicopy.blobs import BlobCopier, MountFrom
from ocicopy.digest import Digest, Verifier
from ocicopy.errors import (
    DigestMismatchError,
    ManifestError,
    NotFoundError,
    OcicopyError,
    RegistryError,
    UnknownReferenceError,
)
from ocicopy.models import Descriptor, Manifest
from ocicopy.options import Recompression
from ocicopy.platforms import PlatformSpec, apply_selection, check_image_platform, config_platform
from ocicopy.progress import NoProgress, Progress
from ocicopy.result import BlobAction, BlobResult, ManifestResult
from ocicopy.retry import Retrying, RetryPolicy
from ocicopy.store import Store, present
from ocicopy.subjects import FallbackIndexes, referrer_descriptor
from ocicopy.transform import Conversion, Conversions, convertible, rewrite_image, rewrite_index

if TYPE_CHECKING:
    from ocicopy.converter import Converter

__all__ = [
    "BLOB_RACE_POLICY",
    "CopyJob",
    "TreeCopier",
    "TreeResult",
    "check_platforms",
    "destination_digest",
    "fetch_child",
    "put_manifest",
]

CONFIG_LIMIT: Final = 16 * 1024 * 1024  # an image config read to check diff_ids after a recompression
#: Retries of a manifest PUT refused because a blob it names is "unknown" (a concurrent writer's race).
BLOB_RACE_POLICY: Final = RetryPolicy(attempts=6, base_delay=0.2, max_delay=3.0, deadline=60.0)
#: The pause between the two HEADs that must both miss a blob before it is placed again.
RECHECK_DELAY: Final = 0.3
_BLOB_UNKNOWN: Final = frozenset({"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "DIGEST_INVALID"})
_DIGEST_IN_TEXT: Final = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")

#: Places one reference of a manifest (a blob, an index child) at the destination again.
Replace = Callable[[], Awaitable[object]]


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


@dataclass
class CopyJob:
    """One tree copy: where from, where to, and what to do on the way."""

    src: Store
    dst: Store
    mount_from: MountFrom = ()
    compress: Recompression | None = None
    known: Mapping[Digest, Manifest] = field(default_factory=dict)  # manifests the caller fetched (verified)
    placed: Collection[tuple[Digest, int]] = frozenset()  # (digest, size) of blobs placed in ``dst`` this run
    out: TreeResult = field(default_factory=TreeResult)


def destination_digest(
    source_digest: Digest,
    top: Manifest | None,
    specs: Sequence[PlatformSpec],
    compress: Recompression | None,
    conversions: Conversions,
) -> Digest | None:
    """The digest a destination must hold for a copy of ``source_digest`` to be complete: the source digest;
    with ``specs``, what the platform selection of ``top`` (the source manifest) yields; with a recompression,
    the known conversion of that (None while no conversion of it is known)."""
    digest = source_digest
    if specs:
        if top is None:
            raise ValueError("a platform selection needs the source manifest")
        digest = apply_selection(top, specs).digest
    if compress is not None:
        known = conversions.get(digest)
        return known.digest if known is not None else None
    return digest


class TreeCopier:
    """Copies a manifest and everything under it; with a recompression, converts layers and rewrites manifests."""

    def __init__(self, blobs: BlobCopier, progress: Progress | None = None) -> None:
        self.blobs = blobs
        self.progress: Progress = progress or NoProgress()
        #: source digest (layer or manifest) → its recompression: made here, read back, or from a mirror's ledger
        self.conversions = Conversions()
        self.fallback = FallbackIndexes()
        self.race_policy = BLOB_RACE_POLICY
        self.recheck_delay = RECHECK_DELAY
        self._converter: Converter | None = None

    @property
    def converter(self) -> Converter:
        """The recompression machinery (made, and zstandard imported, on first use)."""
        if self._converter is None:
            from ocicopy.converter import Converter

            self._converter = Converter(self.blobs, self.conversions)
        return self._converter

    def close(self) -> None:
        """Remove the spool of converted layers, if one was made."""
        if self._converter is not None:
            self._converter.close()

    async def copy(
        self,
        src: Store,
        dst: Store,
        manifest: Manifest,
        reference: str | None,
        mount_from: MountFrom = (),
        compress: Recompression | None = None,
        known: Mapping[Digest, Manifest] | None = None,
        placed: Collection[tuple[Digest, int]] = frozenset(),
    ) -> TreeResult:
        """Copy ``manifest`` (already fetched and verified) from ``src`` and PUT it at ``dst`` as ``reference``
        (a tag, or None: by its own digest, which a recompression changes). ``out.top`` is what was pushed.
        ``known``: index children already fetched (not asked for again); ``placed``: ``(digest, size)`` of blobs
        already in ``dst`` (a work graph's blob tasks placed them: neither HEAD nor upload)."""
        job = CopyJob(src, dst, mount_from, compress, known or {}, placed)
        job.out.top = await self._copy_tree(job, manifest, reference, root=True)
        return job.out

    async def _copy_tree(self, job: CopyJob, manifest: Manifest, reference: str | None, root: bool) -> Manifest:
        """Children and blobs first (concurrently), then this manifest; returns the manifest pushed."""
        children: dict[int, Descriptor] = {}
        layers: dict[int, Descriptor] = {}
        again: dict[Digest, Replace] = {}
        diff_ids = await self._diff_ids(job, manifest)
        async with anyio.create_task_group() as tg:
            for i, child in enumerate(manifest.children()):
                tg.start_soon(self._copy_child, job, i, child, children, again)
            for i, desc in enumerate(manifest.blobs()):  # config is -1, layers from 0
                tg.start_soon(self._copy_blob, job, i - 1, desc, layers, diff_ids, again)
        source = manifest
        if job.compress is not None:
            manifest = _converted(manifest, children, layers)
            self.conversions.add(_manifest_conversion(source, manifest))
        await self._put(job, manifest, reference or str(manifest.digest), root, again)
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

    async def _put(
        self, job: CopyJob, manifest: Manifest, reference: str, root: bool, again: dict[Digest, Replace]
    ) -> None:
        """PUT ``manifest`` (riding out a concurrent writer's blob race: :func:`put_manifest`), then keep the
        subject's fallback index where nothing indexed it."""
        dst = job.dst

        def mounted() -> set[Digest]:
            return {b.digest for b in job.out.blobs if b.action is BlobAction.MOUNTED}

        indexed = await put_manifest(
            dst,
            reference,
            manifest,
            again,
            root=root,
            mounted=mounted,
            policy=self.race_policy,
            pause=self.recheck_delay,
        )
        subject = manifest.view.subject
        if subject is not None and not indexed:  # no referrers API there: keep the fallback index (last)
            await self.fallback.add(dst, subject.digest, referrer_descriptor(manifest))
        self.blobs.note_placed(dst, manifest.digest)
        self.progress.manifest_pushed(manifest.digest, reference)
        job.out.record_manifest(manifest.descriptor(), BlobAction.COPIED, reference)

    async def _copy_blob(
        self,
        job: CopyJob,
        i: int,
        desc: Descriptor,
        layers: dict[int, Descriptor],
        diff_ids: list[Digest] | None,
        again: dict[Digest, Replace],
    ) -> None:
        if job.compress is not None and i >= 0 and convertible(desc):
            diff_id = diff_ids[i] if diff_ids is not None else None
            layers[i], result = await self.converter.layer(
                job.src, job.dst, desc, job.compress, job.mount_from, diff_id
            )
            again[result.digest] = self._replace_converted(job, desc, layers[i])
        else:
            if (desc.digest, desc.size) in job.placed:
                skipped = BlobAction.SKIPPED  # placed by the work graph's blob task
                result = BlobResult(digest=desc.digest, size=desc.size, media_type=desc.media_type, action=skipped)
            else:
                result = await self.blobs.copy(job.src, job.dst, desc, job.mount_from)
            again[desc.digest] = lambda: self.blobs.stream(job.src, job.dst, desc)
        job.out.blobs.append(result)

    def _replace_converted(self, job: CopyJob, source: Descriptor, converted: Descriptor) -> Replace:
        async def replace() -> None:
            assert job.compress is not None
            spool = await self.converter.spooled(job.src, source, job.compress)
            await self.blobs.stream(spool, job.dst, converted)

        return replace

    async def _copy_child(
        self, job: CopyJob, i: int, desc: Descriptor, children: dict[int, Descriptor], again: dict[Digest, Replace]
    ) -> None:
        """Copy one index child by digest; skipped whole when the destination already has it (for a
        recompression: when its converted digest is known and present)."""
        target = desc if job.compress is None else self.conversions.get(desc.digest)

        async def push() -> Manifest:
            return await self._copy_tree(job, await fetch_child(job.src, desc, job.known), None, root=False)

        fresh = target is not None and self.blobs.is_fresh(job.dst, target.digest)  # no HEAD in a new repository
        if target is not None and not fresh and await job.dst.manifest_head(str(target.digest)) is not None:
            job.out.record_manifest(target, BlobAction.SKIPPED, str(target.digest))
            children[i] = target
        else:
            children[i] = (await push()).descriptor()
        again[children[i].digest] = push


async def put_manifest(
    dst: Store,
    reference: str,
    manifest: Manifest,
    again: Mapping[Digest, Replace],
    *,
    root: bool = True,
    mounted: Callable[[], Collection[Digest]] = frozenset,
    policy: RetryPolicy = BLOB_RACE_POLICY,
    pause: float = RECHECK_DELAY,
) -> bool:
    """PUT ``manifest`` at ``dst``, riding out a concurrent writer's blob race (module docstring): after a
    blob-unknown refusal, wait and PUT again; from the second, re-place (``again[digest]()``) the named references
    that two HEADs ``pause`` seconds apart both miss; at the third, when none is missing, upload the named blobs
    that were ``mounted()``. Bounded by ``policy``. True when the store indexed the manifest's subject."""
    async for attempt in Retrying(policy):
        try:
            return await dst.manifest_put(reference, manifest, root=root)
        except RegistryError as exc:
            if not _BLOB_UNKNOWN & set(exc.codes):
                raise
            if attempt.number >= 2 and not attempt.last:
                named = _named_digests(exc, manifest)
                missing = await _missing_twice(dst, manifest, named, pause)
                if not missing and attempt.number == 3:  # there, yet not seen: a mount the registry does not count
                    missing = [d for d in named if d in mounted()]
                for digest in missing:
                    await again[digest]()  # every reference of the manifest has its way back
            attempt.retry(exc)
    raise AssertionError("unreachable: every try returns or raises")


async def _missing_twice(dst: Store, manifest: Manifest, digests: Sequence[Digest], pause: float) -> list[Digest]:
    """The ``digests`` (blobs or index children of ``manifest``) that two HEADs, spaced apart, both miss."""
    blobs = {d.digest: d for d in manifest.blobs()}

    async def missing() -> set[Digest]:
        found: set[Digest] = set()
        for digest in digests:
            try:
                if digest in blobs:
                    absent = not present(await dst.blob_exists(digest), blobs[digest])
                else:
                    absent = await dst.manifest_head(str(digest)) is None
            except OcicopyError:
                continue  # an answer in the middle of the race is no proof of absence
            if absent:
                found.add(digest)
        return found

    first = await missing()
    if not first:
        return []
    await anyio.sleep(pause)
    second = await missing()
    return [d for d in digests if d in first and d in second]


def _named_digests(exc: RegistryError, manifest: Manifest) -> list[Digest]:
    """The references of ``manifest`` a blob-unknown refusal names (distribution puts the digest in the
    ``detail``); all of them when it names none."""
    refs = [d.digest for d in (*manifest.blobs(), *manifest.children())]
    text = " ".join(f"{e.detail} {e.message}" for e in exc.errors)
    named = {Digest(m) for m in _DIGEST_IN_TEXT.findall(text)}
    chosen = [d for d in refs if d in named]
    return chosen or list(dict.fromkeys(refs))


def _manifest_conversion(source: Manifest, converted: Manifest) -> Conversion:
    return Conversion(source.digest, converted.descriptor())


def _converted(manifest: Manifest, children: dict[int, Descriptor], layers: dict[int, Descriptor]) -> Manifest:
    """``manifest`` rewritten for converted ``layers`` or ``children``; the same bytes when nothing changed."""
    if manifest.is_index:
        old = manifest.children()
        changed = any(d.digest != old[i].digest for i, d in children.items())
        return rewrite_index(manifest, children) if changed else manifest
    return rewrite_image(manifest, layers) if layers else manifest


async def check_platforms(src: Store, top: Manifest, specs: Sequence[PlatformSpec]) -> None:
    """With a platform selection, a single image must be of one of those platforms: its config (read from
    ``src``, capped, verified) says which it is. Indexes are checked by :func:`~ocicopy.platforms.select_platforms`."""
    if not specs or top.is_index:
        return
    blobs = top.blobs()
    config = await read_config(src, blobs[0]) if blobs else None
    check_image_platform(config_platform(config) if config is not None else None, specs)


async def read_config(src: Store, desc: Descriptor) -> bytes | None:
    """An image config's bytes, verified; None when it is too large to be one (read into memory: capped)."""
    if desc.size > CONFIG_LIMIT:
        return None  # not an image config
    data = bytearray()
    verifier = Verifier(desc.digest, desc.size)
    async for chunk in src.read_blob(desc):
        verifier.update(chunk)
        data += chunk
    verifier.check()
    return bytes(data)


async def get_manifest(src: Store, identifier: str, ref: object) -> Manifest:
    """GET a manifest by tag or digest; absent, it is ``ref``'s :class:`UnknownReferenceError` (one wording for
    every verb, with the registry's codes)."""
    try:
        return await src.manifest_get(identifier)
    except UnknownReferenceError:
        raise
    except NotFoundError as exc:
        raise UnknownReferenceError(str(ref), method="GET", errors=exc.errors) from None


async def fetch_child(src: Store, desc: Descriptor, known: Mapping[Digest, Manifest] | None = None) -> Manifest:
    """GET a manifest by its descriptor (or take it from ``known``, fetched before): bytes checked against the
    digest and the size."""
    manifest = (known or {}).get(desc.digest) or await src.manifest_get(str(desc.digest))
    if manifest.size != desc.size:
        raise DigestMismatchError(desc.digest, None, manifest.size, desc.size, "manifest size differs from descriptor")
    return manifest
