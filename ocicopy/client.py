"""The library's front door: :class:`Client` (async) and :func:`copy` (sync, for scripts)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio
import httpx

from ocicopy.copier import BlobCopier, Endpoint, MountFrom, TreeCopier, apply_selection, fetch_child
from ocicopy.credentials import ChainCredentials, Credentials, CredentialSource, default_credentials
from ocicopy.digest import Digest
from ocicopy.errors import InputError, NotFoundError, unwrap_group
from ocicopy.mirror import Mirror, MirrorOptions, MirrorProgress
from ocicopy.models import Manifest
from ocicopy.options import ClientOptions
from ocicopy.plan import Mode, Plan
from ocicopy.platforms import PlatformSpec, parse_platform
from ocicopy.progress import NoProgress, Progress
from ocicopy.reference import Reference, parse_reference
from ocicopy.registry import ManifestInfo, Registry
from ocicopy.report import MirrorReport
from ocicopy.result import CopyAction, CopyResult
from ocicopy.transport import Transport

RefLike = str | Reference


def as_reference(ref: RefLike, default_tag: str | None = "latest") -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref, default_tag=default_tag)


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
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        options = options or ClientOptions()
        if plain_http:
            options = options.model_copy(update={"plain_http": options.plain_http | frozenset(plain_http)})
        self.options = options
        self.progress: Progress = progress or NoProgress()
        self.transport = Transport(options, _credential_source(credentials, options), http_client)
        self._registries: dict[str, Registry] = {}
        self.blobs = BlobCopier(
            anyio.CapacityLimiter(options.blob_concurrency),
            options.retry,
            self.progress,
            mounts=options.mounts,
            timeouts=options.timeouts,
        )
        self.trees = TreeCopier(self.blobs, self.progress)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def registry(self, host: str) -> Registry:
        if host not in self._registries:
            self._registries[host] = Registry(self.transport, host)
        return self._registries[host]

    def endpoint(self, ref: Reference) -> Endpoint:
        return Endpoint(self.registry(ref.api_host), ref.repository)

    # -- reading ---------------------------------------------------------------------------------------------

    async def resolve(self, ref: RefLike) -> ManifestInfo | None:
        """HEAD the reference: digest, media type and size, or None when it does not exist."""
        r = as_reference(ref)
        assert r.identifier is not None
        return await self.registry(r.api_host).manifest_head(r.repository, r.identifier)

    async def digest(self, ref: RefLike) -> Digest:
        """The digest the reference resolves to (from the bytes, not only a header)."""
        return (await self.inspect(ref)).digest

    async def inspect(self, ref: RefLike) -> Manifest:
        """GET the manifest: raw bytes, media type, digest and a parsed view."""
        r = as_reference(ref)
        assert r.identifier is not None
        return await self.registry(r.api_host).manifest_get(r.repository, r.identifier)

    # -- copying ---------------------------------------------------------------------------------------------

    async def copy(
        self,
        src: RefLike,
        dst: RefLike,
        *,
        platforms: Sequence[str | PlatformSpec] = (),
        mount_from: MountFrom = (),
    ) -> CopyResult:
        """Copy an image, index or artifact from ``src`` to ``dst``.

        ``dst`` without a tag takes the source's tag (or is pushed by digest when the source has none).
        ``platforms`` selects a subset of an index: one platform gives that single image; several give a new
        index (a new digest, reported as ``transformed``). ``mount_from`` names further repositories of the
        destination registry to mount blobs from.
        """
        s, d = as_reference(src), _destination(as_reference(dst, default_tag=None), as_reference(src))
        specs = [p if isinstance(p, PlatformSpec) else parse_platform(p) for p in platforms]
        requests_before = self.transport.stats.total_requests
        source_digest = s.digest or await self._resolve_source(self.endpoint(s), s)
        result = await self.copy_resolved(s, d, source_digest, specs, mount_from)
        result.requests = self.transport.stats.total_requests - requests_before
        return result

    async def copy_resolved(
        self,
        s: Reference,
        d: Reference,
        source_digest: Digest,
        specs: Sequence[PlatformSpec] = (),
        mount_from: MountFrom = (),
        check_destination: bool = True,
        top: Manifest | None = None,
    ) -> CopyResult:
        """:meth:`copy` once the source digest is known (the mirror engine resolves and dedupes HEADs itself).

        ``check_destination=False``: the caller already knows the destination lacks the result's digest.
        ``top``: the source manifest at ``source_digest``, when the caller already fetched it.
        """
        started, requests_before = time.monotonic(), self.transport.stats.total_requests
        src_ep, dst_ep = self.endpoint(s), self.endpoint(d)
        result = CopyResult(
            source=str(s),
            destination=str(d),
            source_digest=source_digest,
            digest=source_digest,
            media_type="",
            action=CopyAction.SKIPPED,
            platforms=[str(p) for p in specs],
        )
        # Without a platform selection the destination digest is the source digest: one HEAD on each side
        # decides a skip, before any manifest is downloaded.
        existing = await self._existing(dst_ep, d, source_digest) if check_destination and not specs else None
        if existing is None:
            top = top or await src_ep.registry.manifest_get(src_ep.repository, source_digest)
            manifest, result.transformed = await self._select(src_ep, top, specs)
            result.digest, result.media_type = manifest.digest, manifest.media_type
            existing = await self._existing(dst_ep, d, manifest.digest) if specs and check_destination else None
            if existing is None:
                reference = d.tag or str(manifest.digest)
                try:
                    tree = await self.trees.copy(src_ep, dst_ep, manifest, reference, mount_from)
                except BaseExceptionGroup as group:
                    raise unwrap_group(group) from None
                result.blobs, result.manifests, result.action = tree.blobs, tree.manifests, CopyAction.COPIED
        if existing is not None:
            result.media_type = existing.media_type
        result.seconds = round(time.monotonic() - started, 6)
        result.requests = self.transport.stats.total_requests - requests_before
        return result

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
    ) -> MirrorReport:
        """Mirror every deployment of ``plan`` (see :mod:`ocicopy.mirror`); never raises for one deployment.

        The plan's ``registries`` settings (plain HTTP, credentials from the environment) are adopted by this
        client. ``mode`` overrides the plan's mode; ``dry_run`` asks manifests only and predicts.
        """
        plan = plan.with_mode(mode)
        self.options = plan.client_options(self.options)
        self.transport.reconfigure(self.options)
        options = MirrorOptions(dry_run=dry_run, immutable_tags=immutable_tags, concurrency=concurrency, ledger=ledger)
        return await Mirror(self, plan, options, progress).run()

    async def _resolve_source(self, src: Endpoint, ref: Reference) -> Digest:
        assert ref.identifier is not None
        info = await src.registry.manifest_head(src.repository, ref.identifier)
        if info is None:
            raise NotFoundError(404, "HEAD", str(ref), (), "manifest unknown: no such tag")
        return info.digest

    async def _existing(self, dst: Endpoint, ref: Reference, digest: Digest) -> ManifestInfo | None:
        """The destination's manifest when it already is ``digest`` under ``ref`` (skip), else None."""
        if ref.digest is not None and ref.digest != digest:
            raise InputError(f"destination digest {ref.digest} does not match what would be pushed ({digest})")
        info = await dst.registry.manifest_head(dst.repository, ref.tag or str(digest))
        return info if info is not None and info.digest == digest else None

    async def _select(self, src: Endpoint, top: Manifest, specs: Sequence[PlatformSpec]) -> tuple[Manifest, bool]:
        """Apply a platform selection: the same manifest, one child (fetched), or a subset index."""
        chosen = apply_selection(top, specs)
        if isinstance(chosen, Manifest):
            return chosen, chosen is not top
        return await fetch_child(src, chosen), True


def _destination(dst: Reference, src: Reference) -> Reference:
    """Fill a destination without tag or digest from the source's tag."""
    if dst.tag is None and dst.digest is None and src.tag is not None:
        return dst.with_tag(src.tag)
    return dst


def _credential_source(
    credentials: Mapping[str, Credentials] | CredentialSource | None, options: ClientOptions
) -> CredentialSource | None:
    if credentials is None or isinstance(credentials, Mapping):
        if options.use_docker_config:
            return default_credentials(credentials)
        return default_credentials(credentials) if credentials else None
    return ChainCredentials(credentials)


def copy(src: RefLike, dst: RefLike, **kwargs: Any) -> CopyResult:
    """Synchronous :meth:`Client.copy` for scripts: ``ocicopy.copy(src, dst, plain_http=[...])``.

    Keyword arguments ``plain_http``, ``credentials``, ``options`` go to the :class:`Client`; ``platforms`` and
    ``mount_from`` to the copy.
    """
    client_keys = {"plain_http", "credentials", "options", "progress"}
    client_kwargs = {k: v for k, v in kwargs.items() if k in client_keys}
    copy_kwargs = {k: v for k, v in kwargs.items() if k not in client_keys}

    async def run() -> CopyResult:
        async with Client(**client_kwargs) as client:
            return await client.copy(src, dst, **copy_kwargs)

    return anyio.run(run)
