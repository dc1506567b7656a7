"""The library's front door: :class:`Client` (async) and :func:`copy` (sync, for scripts)."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from ocicopy.blobs import BlobCopier, MountFrom
from ocicopy.credentials import ChainCredentials, Credentials, CredentialSource, default_credentials
from ocicopy.digest import Digest
from ocicopy.errors import ClosedClientError, InputError, UnknownReferenceError, unwrap_group
from ocicopy.layout import Layout
from ocicopy.location import LayoutReference, Location, LocationLike, as_location, with_source_tag
from ocicopy.models import IMAGE_CONFIG_TYPES, Descriptor, ImageManifest, Manifest, ManifestInfo
from ocicopy.options import ClientOptions, EcrRepositorySettings, Recompression, recompression, revalidated
from ocicopy.platforms import PlatformSpec, apply_selection, parse_platform
from ocicopy.progress import NoProgress, Progress
from ocicopy.reference import Reference, api_host, validate_repository
from ocicopy.referrers import ReferrerCopier, ReferrersOutcome, list_referrers
from ocicopy.registry import Registry
from ocicopy.repository import Endpoint
from ocicopy.result import CopyAction, CopyResult, ManifestDescription, describe_manifest
from ocicopy.store import Store
from ocicopy.subjects import is_referrer_tag
from ocicopy.transport import Transport
from ocicopy.tree import (
    TreeCopier,
    TreeResult,
    check_platforms,
    destination_digest,
    fetch_child,
    get_manifest,
    read_config,
)

if TYPE_CHECKING:
    from ocicopy.mirroring import MirrorProgress
    from ocicopy.plan import Mode, Plan
    from ocicopy.pruning import Confirm, PruneReport
    from ocicopy.report import MirrorReport

#: Anything a reference argument may be: a string (``host/repo:tag``, ``oci:DIR:TAG``), or a parsed location.
RefLike = LocationLike


@dataclass
class _Outcome:
    """What a copy found or did: the manifest the destination holds now, and the tree copy if there was one."""

    digest: Digest
    media_type: str
    tree: TreeResult | None = None


class Client:
    """An async session with registries: one connection pool, auth state and blob limiter for all copies.

    >>> async with Client(plain_http=["127.0.0.1:5000"]) as client:   # doctest: +SKIP
    ...     result = await client.copy("127.0.0.1:5000/app:1", "127.0.0.1:5000/mirror/app:1")
    """

    def __init__(
        self,
        options: ClientOptions | None = None,
        *,
        plain_http: Iterable[str] = (),
        credentials: Mapping[str, Credentials] | CredentialSource | None = None,
        progress: Progress | None = None,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        _check_http_client(http_client)
        options = options or ClientOptions()
        if plain_http:
            options = revalidated(options, plain_http=options.plain_http | frozenset(plain_http))
        self.options = options
        self.progress: Progress = progress or NoProgress()
        self.transport = Transport(options, _credential_source(credentials, options), http_client)
        self._registries: dict[str, Registry] = {}
        self._layouts: dict[str, Layout] = {}
        self._closed = False
        self.blobs = BlobCopier(
            anyio.CapacityLimiter(options.blob_concurrency),
            options.retry,
            self.progress,
            mounts=options.mounts,
            timeouts=options.timeouts,
        )
        self.trees = TreeCopier(self.blobs, self.progress)

    def set_progress(self, progress: Progress) -> None:
        """Report blob and manifest events of every later copy to ``progress``."""
        self.progress = self.blobs.progress = self.trees.progress = progress

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections and remove the spool; the client refuses any later use (ClosedClientError)."""
        self._closed = True
        self.trees.close()
        await self.transport.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedClientError("this ocicopy.Client is closed (used after its 'async with' block or aclose())")

    def registry(self, host: str) -> Registry:
        if host not in self._registries:
            self._registries[host] = Registry(self.transport, host)
        return self._registries[host]

    def endpoint(self, ref: Location) -> Store:
        """Where ``ref`` lives: a registry repository, or an OCI layout (one object per directory)."""
        self._check_open()
        if isinstance(ref, LayoutReference):
            return self.layout(ref)
        return Endpoint(self.registry(ref.api_host), ref.repository)

    def layout(self, ref: LayoutReference) -> Layout:
        """The one :class:`~ocicopy.layout.Layout` of this client for ``ref``'s directory."""
        self._check_open()
        key = str(ref.path)
        if key not in self._layouts:
            self._layouts[key] = Layout(ref.path, limits=self.options.limits)
        return self._layouts[key]

    # -- reading ---------------------------------------------------------------------------------------------

    async def resolve(self, ref: RefLike) -> ManifestInfo | None:
        """HEAD the reference: digest, media type and size, or None when it does not exist (a missing tag, a
        missing layout directory)."""
        r = as_location(ref)
        store = self.endpoint(r)
        try:
            return await store.manifest_head(r.identifier or str((await self._source(store, r))[1]))
        except UnknownReferenceError:
            return None

    async def digest(self, ref: RefLike) -> Digest:
        """The digest the reference resolves to, with a HEAD (a GET counts against Docker Hub's pull limit). A
        reference by digest is asked too: a digest the store does not hold is an :class:`UnknownReferenceError`."""
        r = as_location(ref)
        store = self.endpoint(r)
        digest = (await self._source(store, r))[1]
        if r.digest is not None and await store.manifest_head(str(r.digest)) is None:
            raise UnknownReferenceError(str(r), f"manifest unknown: no manifest {r.digest}", status=_status(store))
        return digest

    async def inspect(self, ref: RefLike) -> Manifest:
        """GET the manifest: raw bytes, media type, digest and a parsed view."""
        r = as_location(ref)
        store = self.endpoint(r)
        return await get_manifest(store, r.identifier or str((await self._source(store, r))[1]), r)

    async def describe(self, ref: RefLike) -> ManifestDescription:
        """:meth:`inspect`, and for a single image the platform, creation time and labels its config declares
        (the config read, capped and verified): what ``ocicopy inspect --json`` prints."""
        r = as_location(ref)
        manifest = await self.inspect(r)
        view = manifest.view
        config = None
        if isinstance(view, ImageManifest) and view.config.media_type in IMAGE_CONFIG_TYPES:
            config = await read_config(self.endpoint(r), view.config)
        return describe_manifest(str(ref), manifest, config)

    async def referrers(self, ref: RefLike, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests that refer to ``ref`` (signatures, SBOMs...): the referrers API, else the fallback tag."""
        r = as_location(ref)
        store = self.endpoint(r)
        digest = r.digest or (await self._source(store, r))[1]
        return await list_referrers(store, digest, artifact_type)

    # -- copying ---------------------------------------------------------------------------------------------

    async def copy(
        self,
        src: RefLike,
        dst: RefLike,
        *,
        platforms: Sequence[str | PlatformSpec] = (),
        mount_from: MountFrom = (),
        compress: Recompression | str | None = None,
        referrers: bool = False,
        artifact_types: Sequence[str] = (),
        create_repository: bool | EcrRepositorySettings = False,
    ) -> CopyResult:
        """Copy an image, index or artifact from ``src`` to ``dst`` (registry references or ``oci:PATH[:TAG]``).

        ``dst`` without a tag takes the source's tag (or is pushed by digest when the source has none).
        ``platforms`` selects a subset of an index: one platform gives that single image; several give a new
        index (a new digest, reported as ``transformed``). ``mount_from`` names further repositories of the
        destination registry to mount blobs from. ``compress="zstd"`` (or a :class:`Recompression`) recompresses
        gzip layers (a new digest, ``transformed``). ``referrers`` also copies signatures, SBOMs and
        attestations (only those of the ``artifact_types`` given, when given). ``create_repository``: make the
        destination repository first where the registry needs it (Amazon ECR; :meth:`ensure_repository`), with
        these :class:`EcrRepositorySettings` when given.
        """
        s, d = as_location(src), as_location(dst, default_tag=None)
        specs = list(dict.fromkeys(p if isinstance(p, PlatformSpec) else parse_platform(p) for p in platforms))
        if not callable(mount_from):
            mount_from = [validate_repository(r) for r in mount_from]  # checked even when nothing needs a mount
        settings = recompression(compress)
        if settings is not None and (referrers or artifact_types):
            raise InputError("--referrers with recompression: signatures and attestations name the source digests")
        if isinstance(d, LayoutReference):
            await self.layout(d).check_writable()  # before the source is asked anything
        snapshot = self.transport.stats.snapshot()
        tag, source_digest = await self._source(self.endpoint(s), s)
        d = with_source_tag(d, s.with_tag(tag) if s.tag is None and tag is not None else s)
        if isinstance(d, Reference) and d.tag is None and d.digest is None:
            raise InputError(
                f"{dst} names no tag and {src} has none to give it: add :TAG to the destination "
                f"(or @{source_digest} to push by digest only)"
            )
        if create_repository is not False and isinstance(d, Reference):
            made = create_repository if isinstance(create_repository, EcrRepositorySettings) else None
            await self.ensure_repository(d.registry, d.repository, made)
        result = await self.copy_resolved(s, d, source_digest, specs, mount_from, compress=settings)
        if referrers or artifact_types:
            subjects = [m.digest for m in result.manifests]
            outcome = await self.copy_referrers(s, d, result.digest, subjects=subjects, artifact_types=artifact_types)
            result.referrers = outcome.manifests
            result.blobs += outcome.blobs
            result.warnings += outcome.warnings
            if specs and result.digest != source_digest:  # a platform selection: what signs the index stays behind
                left = await list_referrers(self.endpoint(s), source_digest)
                left = [r for r in left if not artifact_types or r.artifact_type in artifact_types]
                if left:
                    result.warnings.append(
                        f"{len(left)} referrer(s) of the source index {source_digest} not copied: they refer to "
                        "the whole index, and the destination holds a platform selection of it"
                    )
        result.registries = self.transport.registry_stats(snapshot)
        result.requests = sum(r.requests for r in result.registries.values())
        return result

    async def ensure_repository(
        self, registry: str, repository: str, settings: EcrRepositorySettings | None = None
    ) -> bool:
        """Make ``repository`` where the registry needs it before a push: Amazon ECR (recognised by its host name
        or a registry's ``ecr`` setting; :mod:`ocicopy.ecr`), with ``settings``. True if it was made now. Other
        registries make repositories on push: nothing to do (False)."""
        self._check_open()
        config = self.transport.ecr_config(api_host(registry))
        if config is None:
            return False
        return await self.transport.ecr.ensure(config, repository, settings)

    async def copy_resolved(
        self,
        s: Location,
        d: Location,
        source_digest: Digest,
        specs: Sequence[PlatformSpec] = (),
        mount_from: MountFrom = (),
        check_destination: bool = True,
        top: Manifest | None = None,
        compress: Recompression | None = None,
        known: Mapping[Digest, Manifest] | None = None,
        placed: Collection[tuple[Digest, int]] = frozenset(),
    ) -> CopyResult:
        """:meth:`copy` once the source digest is known (the mirror engine resolves and dedupes HEADs itself).

        ``check_destination=False``: the caller already knows the destination lacks the result's digest.
        ``top``: the source manifest at ``source_digest``, when the caller already fetched it; ``known``: source
        manifests fetched before, by digest (the top, index children: not asked for again); ``placed``:
        ``(digest, size)`` of blobs already in the destination repository (a work graph's blob tasks placed them:
        no request for them).
        """
        started, requests_before = time.monotonic(), self.transport.stats.total_requests
        src, dst = self.endpoint(s), self.endpoint(d)
        known = known or {}
        outcome = await self._copy_unless_there(
            src,
            dst,
            d,
            source_digest,
            specs,
            mount_from,
            check_destination,
            top or known.get(source_digest),
            compress,
            known,
            placed,
        )
        tree = outcome.tree
        return CopyResult(
            source=str(s),
            destination=str(d),
            source_digest=source_digest,
            digest=outcome.digest,
            media_type=outcome.media_type,
            action=CopyAction.COPIED if tree is not None else CopyAction.SKIPPED,
            transformed=outcome.digest != source_digest,
            compression=compress.format if compress is not None else None,
            platforms=[str(p) for p in specs],
            blobs=tree.blobs if tree is not None else [],
            manifests=tree.manifests if tree is not None else [],
            seconds=round(time.monotonic() - started, 6),
            requests=self.transport.stats.total_requests - requests_before,
        )

    async def _copy_unless_there(
        self,
        src: Store,
        dst: Store,
        d: Location,
        source_digest: Digest,
        specs: Sequence[PlatformSpec],
        mount_from: MountFrom,
        check: bool,
        top: Manifest | None,
        compress: Recompression | None,
        known: Mapping[Digest, Manifest],
        placed: Collection[tuple[Digest, int]],
    ) -> _Outcome:
        """Copy unless ``d`` already holds what the copy would make (:func:`~ocicopy.tree.destination_digest`).

        Without a platform selection or a recompression that is the source digest: one HEAD on each side
        decides, before any manifest is downloaded. A recompression not known here may be at the destination
        tag: it is read back and reproduced byte for byte before it counts.
        """
        if check and not specs and compress is None and (held := await self._existing(dst, d, source_digest)):
            return _Outcome(held.digest, held.media_type)
        top = top or await src.manifest_get(str(source_digest))
        await check_platforms(src, top, specs)
        manifest = await self._select(src, top, specs, known)
        if check and (specs or compress is not None):
            expected = destination_digest(source_digest, top, specs, compress, self.trees.conversions)
            if expected is None and compress is not None:
                expected = await self._read_back_conversion(src, dst, d, manifest)
            if expected is not None and (held := await self._existing(dst, d, expected)):
                return _Outcome(held.digest, held.media_type)
        try:
            tree = await self.trees.copy(src, dst, manifest, d.tag, mount_from, compress, known, placed)
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None
        assert tree.top is not None
        return _Outcome(tree.top.digest, tree.top.media_type, tree)

    async def _read_back_conversion(self, src: Store, dst: Store, d: Location, manifest: Manifest) -> Digest | None:
        """The digest at the destination tag when it holds exactly the recompression of ``manifest``."""
        from ocicopy.converter import reproduce_conversion
        from ocicopy.transform import Conversion

        if d.tag is None or await dst.manifest_head(d.tag) is None:
            return None
        held = await dst.manifest_get(d.tag)
        reproduced = await reproduce_conversion(src, dst, manifest, held)
        if reproduced is None:
            return None
        self.trees.conversions.add(Conversion(manifest.digest, reproduced.descriptor()), made_here=False)
        return reproduced.digest

    async def copy_referrers(
        self,
        s: Location,
        d: Location,
        digest: Digest,
        *,
        subjects: Sequence[Digest] = (),
        artifact_types: Sequence[str] = (),
    ) -> ReferrersOutcome:
        """Copy the referrers of ``subjects`` (the manifests a copy pushed or found) from ``s`` to ``d``; without
        them, of the destination's manifest ``digest`` and, for an index, of its children."""
        src_ep, dst_ep = self.endpoint(s), self.endpoint(d)
        # A manifest made here (a platform subset) has no referrers at the source: asking costs a request only.
        if not subjects:
            held = await dst_ep.manifest_get(str(digest))
            subjects = [held.digest, *(c.digest for c in held.children())]
        try:
            return await ReferrerCopier(self.trees).copy(src_ep, dst_ep, subjects, artifact_types)
        except BaseExceptionGroup as group:
            raise unwrap_group(group) from None

    # -- mirroring -------------------------------------------------------------------------------------------------

    async def mirror(
        self,
        plan: Plan,
        *,
        mode: Mode | str | None = None,
        dry_run: bool = False,
        immutable_tags: str | None = None,
        concurrency: int = 32,
        ledger: bool | None = None,
        progress: MirrorProgress | None = None,
        clusters: Sequence[str] = (),
        dask: Any = None,
        dask_shared_filesystem: bool = False,
        min_pull_quota: int | None = None,
        create_repositories: bool = False,
    ) -> MirrorReport:
        """Mirror every deployment of ``plan`` (see :mod:`ocicopy.mirroring`); never raises for one deployment.

        The plan's ``registries`` settings (plain HTTP, credentials from the environment) are adopted by this
        client. ``mode`` overrides the plan's mode (every cluster's); ``dry_run`` asks manifests only and
        predicts; ``clusters`` limits a fleet plan to some of its clusters (an unknown name: :class:`PlanError`).
        ``dask``: a :class:`distributed.Client`: the copies run on its cluster as one work graph
        (:mod:`ocicopy.dask_executor`; the deployments resolve here); a lost scheduler: :class:`ExecutorError`.
        ``dask_shared_filesystem``: its workers see this machine's files (OCI layouts allowed).
        ``min_pull_quota``: a deployment whose source manifest GETs would leave a registry's announced pull quota
        (Docker Hub's ``ratelimit-remaining``) below this fails before sending them (:mod:`ocicopy.ratelimit`).
        ``create_repositories``: as the plan's setting on every registry mirror (repositories made before the
        first push where the registry needs it: Amazon ECR).
        """
        from ocicopy.mirroring import MirrorOptions, run_plan

        self._check_open()
        plan = plan.with_mode(mode).only_clusters(clusters).with_created_repositories(create_repositories)
        self.options = plan.client_options(self.options)
        self.transport.reconfigure(self.options)
        options = MirrorOptions(
            dry_run=dry_run,
            immutable_tags=immutable_tags,
            concurrency=concurrency,
            ledger=ledger,
            min_pull_quota=min_pull_quota,
        )
        executor = None
        if dask is not None:
            from ocicopy.dask_executor import DaskExecutor

            executor = DaskExecutor(dask, shared_filesystem=dask_shared_filesystem)
        return await run_plan(self, plan, options, progress, executor)

    async def prune(
        self,
        plan: Plan,
        *,
        locks: Sequence[str] = (),
        keep_last: int = 0,
        older_than: float | str | None = None,
        max_delete: str = "25%",
        dry_run: bool = False,
        clusters: Sequence[str] = (),
        confirm: Confirm | None = None,
    ) -> PruneReport:
        """Remove the mirror tags ocicopy made in ``plan``'s mirrors that nothing keeps (:mod:`ocicopy.pruning`):
        kept are the plan's tags, digests the ``locks`` pin, the ``keep_last`` most recent per deployment, tags
        younger than ``older_than`` (seconds, or ``"90d"``). ``max_delete`` (``N`` or ``P%``): a prune removing
        more is refused (``report.refused``), nothing deleted. ``dry_run``: what would go, and the bytes.
        ``confirm``: an async callback shown that report before any DELETE; False deletes nothing."""
        from ocicopy.pruning import prune_options, run_prune

        self._check_open()
        options = prune_options(
            locks=locks, keep_last=keep_last, older_than=older_than, max_delete=max_delete, dry_run=dry_run
        )
        plan = plan.only_clusters(clusters)
        self.options = plan.client_options(self.options)
        self.transport.reconfigure(self.options)
        return await run_prune(self, plan, options, confirm)

    async def _source(self, src: Store, ref: Location) -> tuple[str | None, Digest]:
        """The tag and digest ``ref`` resolves to now (one HEAD; a layout without a tag: its only image), or an
        :class:`UnknownReferenceError` saying what is true."""
        if isinstance(src, Layout):
            await _existing_layout(src, ref)
            if ref.identifier is None:
                return await _only_image(src)
        if ref.digest is not None:
            return ref.tag, ref.digest
        assert ref.identifier is not None
        info = await src.manifest_head(ref.identifier)
        if info is None:
            raise UnknownReferenceError(str(ref), await _why_unknown(src, ref), status=_status(src))
        return ref.tag, info.digest

    async def _existing(self, dst: Store, ref: Location, digest: Digest) -> ManifestInfo | None:
        """The destination's manifest when it already is ``digest`` under ``ref`` (skip), else None."""
        if ref.digest is not None and ref.digest != digest:
            raise InputError(f"destination digest {ref.digest} does not match what would be pushed ({digest})")
        info = await dst.manifest_head(ref.tag or str(digest))
        return info if info is not None and info.digest == digest else None

    async def _select(
        self, src: Store, top: Manifest, specs: Sequence[PlatformSpec], known: Mapping[Digest, Manifest]
    ) -> Manifest:
        """Apply a platform selection: the same manifest, one child (fetched unless ``known``), or a subset index."""
        chosen = apply_selection(top, specs)
        return chosen if isinstance(chosen, Manifest) else await fetch_child(src, chosen, known)


async def _existing_layout(layout: Layout, ref: Location) -> None:
    """A layout to read from must exist and be one."""
    state = await layout.state()
    if state == "absent":
        raise UnknownReferenceError(str(ref), f"no OCI image layout at {layout.root} (missing or empty)", status=0)
    if state == "foreign":
        raise InputError(f"{layout.root} is not an OCI image layout (no oci-layout file)")


def _status(store: Store) -> int:
    """The status an unknown reference is reported with: 404, or 0 for a layout (a directory: no HTTP)."""
    return 0 if isinstance(store, Layout) else 404


async def _why_unknown(src: Store, ref: Location) -> str:
    """What to say of a tag a store does not have: for a layout, the tags it has."""
    if not isinstance(src, Layout):
        return "manifest unknown"
    tags = [t for t in await src.tags() if not is_referrer_tag(t)]
    return f"manifest unknown: no tag {ref.tag!r} in the layout (tags: {', '.join(tags[:10]) or 'none'})"


async def _only_image(layout: Layout) -> tuple[str | None, Digest]:
    """The image of a layout given without a tag: its only tag (skopeo's rule; referrer fallback and cosign
    tags aside), or its only entry when nothing is tagged (a builder's output); else an error naming them."""
    tags = [t for t in await layout.tags() if not is_referrer_tag(t)]
    if not tags:
        entries = await layout.entries()
        if len(entries) == 1:
            return None, entries[0].digest
        if not entries:
            raise UnknownReferenceError(str(layout), "the layout holds no image", status=0)
        shown = ", ".join(str(e.digest) for e in entries[:10])
        raise InputError(f"{layout} holds {len(entries)} untagged images ({shown}): name one as oci:PATH@DIGEST")
    if len(tags) != 1:
        raise InputError(f"{layout} holds {len(tags)} tagged images ({', '.join(tags[:10])}): name one as oci:PATH:TAG")
    info = await layout.manifest_head(tags[0])
    if info is None:
        raise UnknownReferenceError(str(layout), f"tag {tags[0]} is listed but its manifest is missing", status=0)
    return tags[0], info.digest


def _check_http_client(client: object) -> None:
    """``http_client`` must be an ``httpx2.AsyncClient`` (0.2.0 changed it from ``httpx.AsyncClient``)."""
    if client is None or isinstance(client, httpx2.AsyncClient):
        return
    kind = f"{type(client).__module__.split('.')[0]}.{type(client).__qualname__}"
    if kind.startswith("httpx."):
        raise TypeError(
            f"http_client must be an httpx2.AsyncClient, not {kind}: ocicopy 0.2 moved from httpx to httpx2 "
            "(the maintained continuation, same API): build it with httpx2.AsyncClient(...)"
        )
    raise TypeError(f"http_client must be an httpx2.AsyncClient, not {kind}")


def _credential_source(
    credentials: Mapping[str, Credentials] | CredentialSource | None, options: ClientOptions
) -> CredentialSource | None:
    if credentials is None or isinstance(credentials, Mapping):
        if options.use_docker_config:
            return default_credentials(credentials)
        return default_credentials(credentials) if credentials else None
    return ChainCredentials(credentials)


def copy(
    src: RefLike,
    dst: RefLike,
    *,
    platforms: Sequence[str | PlatformSpec] = (),
    mount_from: MountFrom = (),
    compress: Recompression | str | None = None,
    referrers: bool = False,
    artifact_types: Sequence[str] = (),
    create_repository: bool | EcrRepositorySettings = False,
    options: ClientOptions | None = None,
    plain_http: Iterable[str] = (),
    credentials: Mapping[str, Credentials] | CredentialSource | None = None,
    progress: Progress | None = None,
) -> CopyResult:
    """Synchronous :meth:`Client.copy` for scripts: ``ocicopy.copy(src, dst, plain_http=[...])``; a client is
    opened for the copy and closed after it (``options``, ``plain_http``, ``credentials``, ``progress`` are its)."""

    async def run() -> CopyResult:
        async with Client(options, plain_http=plain_http, credentials=credentials, progress=progress) as client:
            return await client.copy(
                src,
                dst,
                platforms=platforms,
                mount_from=mount_from,
                compress=compress,
                referrers=referrers,
                artifact_types=artifact_types,
                create_repository=create_repository,
            )

    return anyio.run(run)


def mirror(
    plan: Plan | str | Path,
    *,
    mode: Mode | str | None = None,
    dry_run: bool = False,
    immutable_tags: str | None = None,
    concurrency: int = 32,
    ledger: bool | None = None,
    options: ClientOptions | None = None,
    plain_http: Iterable[str] = (),
    credentials: Mapping[str, Credentials] | CredentialSource | None = None,
    progress: MirrorProgress | None = None,
    clusters: Sequence[str] = (),
    min_pull_quota: int | None = None,
) -> MirrorReport:
    """Synchronous :meth:`Client.mirror` for scripts: ``ocicopy.mirror("plan.json")`` (a path is read with
    :func:`~ocicopy.plan.load_plan`); never raises for one deployment (see the report)."""
    from ocicopy.plan import Plan, load_plan

    chosen = plan if isinstance(plan, Plan) else load_plan(plan)

    async def run() -> MirrorReport:
        async with Client(options, plain_http=plain_http, credentials=credentials) as client:
            return await client.mirror(
                chosen,
                mode=mode,
                dry_run=dry_run,
                immutable_tags=immutable_tags,
                concurrency=concurrency,
                ledger=ledger,
                progress=progress,
                clusters=clusters,
                min_pull_quota=min_pull_quota,
            )

    return anyio.run(run)
