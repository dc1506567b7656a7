"""The distribution API as small named verbs (OCI distribution-spec v1.1, "Endpoints").

Each verb builds its path from validated values only (:func:`validate_repository`, :class:`Digest`,
:func:`validate_tag`), states the scopes it needs, and returns data. Blob upload is four steps, after
go-containerregistry: :meth:`blob_exists` → :meth:`start_upload` (optionally a mount) → :meth:`upload`
(monolithic PUT, or PATCH chunks when the registry asks) → commit inside the final PUT.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import anyio
import httpx2

from ocicopy.auth import Scopes
from ocicopy.digest import Digest, Verifier
from ocicopy.errors import DigestMismatchError, InputError, NotFoundError, RegistryError, TransportError
from ocicopy.models import MANIFEST_ACCEPT, OCI_INDEX, Descriptor, Manifest, ManifestInfo, parse_manifest
from ocicopy.reference import validate_repository, validate_tag
from ocicopy.transport import Transport, read_capped, redact


@dataclass(frozen=True)
class Pushed:
    """What a manifest PUT did: the digest stored, and whether the registry indexed its ``subject``."""

    digest: Digest
    subject_indexed: bool = False


@dataclass
class UploadSession:
    """An open upload: where to send bytes, and the chunk minimum the registry asked for (0 = none).

    ``ended``: committed, or given up (DELETE sent, or a body that may have committed). Whoever holds a session
    ends it, also when cancelled: one left open stays at the registry until it purges it (days)."""

    repository: str
    location: httpx2.URL
    chunk_min: int = 0
    ended: bool = field(default=False, compare=False)


#: Seconds a POST that opens an upload (or the DELETE that ends one) may still take once its caller is
#: cancelled: the answer is needed to end the session. Also the bound on such a request when nobody cancels.
SESSION_GRACE: Final = 30.0


MAX_REFERRER_PAGES = 100
MAX_REFERRERS_LISTED = 1000
TAGS_PAGE = 1000
MAX_TAG_PAGES = 100


def _next_page(url: httpx2.URL, link: str | None) -> httpx2.URL | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against ``url``; None if absent or off-host."""
    if not link:
        return None
    m = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if m is None:
        return None
    target = url.join(m.group(1))
    return target if (target.scheme, target.host, target.port) == (url.scheme, url.host, url.port) else None


def _tag_names(body: bytes) -> list[str]:
    """The valid tags of a ``tags/list`` answer ``{"name": ..., "tags": [...]}`` (``tags`` may be null)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    tags = doc.get("tags") if isinstance(doc, dict) else None
    return [t for t in tags if isinstance(t, str) and _is_tag(t)] if isinstance(tags, list) else []


def _is_tag(text: str) -> bool:
    try:
        validate_tag(text)
    except InputError:
        return False
    return True


def _ref_path(reference: str) -> str:
    """A manifest reference (tag or digest), validated before it becomes a path segment."""
    if ":" in reference:
        return str(Digest(reference))
    return validate_tag(reference)


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Registry:
    """One registry host spoken to through a shared :class:`Transport`."""

    def __init__(self, transport: Transport, host: str) -> None:
        self.transport = transport
        self.host = host
        self.limits = transport.options.limits

    def _url(self, repository: str, tail: str, params: dict[str, str] | None = None) -> httpx2.URL:
        return self.transport.url(self.host, f"/v2/{validate_repository(repository)}/{tail}", params)

    # -- manifests -------------------------------------------------------------------------------------------

    async def manifest_head(self, repository: str, reference: str) -> ManifestInfo | None:
        """HEAD a manifest (HEAD is not counted by Docker Hub's pull limit); None when absent."""
        url = self._url(repository, f"manifests/{_ref_path(reference)}")
        try:
            response, _ = await self.transport.request(
                "HEAD",
                self.host,
                url,
                scopes=Scopes.pull(repository),
                expect={200},
                headers={"Accept": MANIFEST_ACCEPT},
            )
        except NotFoundError:
            return None
        except RegistryError as exc:
            if exc.status not in (403, 405):
                raise
            # Some registries (Artifactory) refuse HEAD where GET works: fall back to GET.
            return await self._head_by_get(repository, reference)
        digest = response.headers.get("docker-content-digest")
        length = response.headers.get("content-length", "")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if not digest or not length.isdigit():
            return await self._head_by_get(repository, reference)
        if ":" in reference and Digest(digest) != Digest(reference):
            raise DigestMismatchError(reference, digest, None, None, "registry reports another digest", redact(url))
        return ManifestInfo(Digest(digest), media_type, int(length))

    async def _head_by_get(self, repository: str, reference: str) -> ManifestInfo | None:
        try:
            manifest = await self.manifest_get(repository, reference)
        except NotFoundError:
            return None
        return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)

    async def manifest_get(self, repository: str, reference: str) -> Manifest:
        """GET a manifest; the digest is computed from the bytes (and checked when fetched by digest)."""
        url = self._url(repository, f"manifests/{_ref_path(reference)}")
        response, body = await self.transport.request(
            "GET",
            self.host,
            url,
            scopes=Scopes.pull(repository),
            expect={200},
            headers={"Accept": MANIFEST_ACCEPT},
            body_limit=self.limits.manifest_bytes,
            what="manifest",
        )
        by_digest = Digest(reference) if ":" in reference else None
        manifest = parse_manifest(body, response.headers.get("content-type"), by_digest)
        header = response.headers.get("docker-content-digest")
        if header and header.startswith(manifest.digest.algorithm + ":") and header != manifest.digest:
            # The header is advisory and wrong on some registries for tags; the bytes decide. For a digest
            # reference the bytes were already checked against the reference.
            raise DigestMismatchError(
                header, manifest.digest, len(body), None, "Docker-Content-Digest differs", redact(url)
            )
        return manifest

    async def manifest_put(self, repository: str, reference: str, manifest: Manifest) -> Pushed:
        """PUT the exact bytes under ``reference`` (a tag, or the manifest's own digest)."""
        url = self._url(repository, f"manifests/{_ref_path(reference)}")
        try:
            response, _ = await self._put_manifest(url, repository, manifest)
        except RegistryError as exc:
            if exc.status != 413:
                raise
            # Not retried: the same bytes will be refused again. Say how big they were.
            raise RegistryError(
                413, "PUT", exc.url, exc.errors, f"the registry refused a {manifest.size}-byte manifest as too large"
            ) from None
        echoed = response.headers.get("docker-content-digest")
        if echoed and echoed.startswith(manifest.digest.algorithm + ":") and echoed != manifest.digest:
            raise DigestMismatchError(manifest.digest, echoed, None, None, "registry stored other bytes", redact(url))
        # distribution-spec v1.1 "Pushing Manifests with Subject": a registry with the referrers API answers
        # OCI-Subject; without it, the client keeps the fallback tag.
        subject = manifest.view.subject
        indexed = subject is not None and response.headers.get("oci-subject") == str(subject.digest)
        return Pushed(manifest.digest, indexed)

    async def _put_manifest(
        self, url: httpx2.URL, repository: str, manifest: Manifest
    ) -> tuple[httpx2.Response, bytes]:
        return await self.transport.request(
            "PUT",
            self.host,
            url,
            scopes=Scopes.push(repository),
            expect={201, 200},
            headers={"Content-Type": manifest.media_type},
            content=manifest.raw,
        )

    async def referrers(
        self, repository: str, digest: Digest, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """The referrers API (distribution-spec v1.1 "Listing Referrers"): descriptors of the manifests whose
        ``subject`` is ``digest``; None when the registry has no such API (a 404: the spec forbids a 404
        from a registry that has it; clients then use the fallback tag, see :mod:`ocicopy.referrers`).

        Pages (``Link: <...>; rel="next"``, same host only) are followed up to :data:`MAX_REFERRER_PAGES` and
        :data:`MAX_REFERRERS_LISTED` descriptors (a longer list is cut there); an ``artifactType`` filter the
        registry did not apply (no ``OCI-Filters-Applied``) is applied here.
        """
        params = {"artifactType": artifact_type} if artifact_type else None
        url = self._url(repository, f"referrers/{Digest(digest)}", params)
        found: list[Descriptor] = []
        try:
            async for response, body in self._pages(repository, url, "referrers list", MAX_REFERRER_PAGES, OCI_INDEX):
                page = parse_manifest(body, OCI_INDEX)
                filtered = "artifacttype" in response.headers.get("oci-filters-applied", "").lower()
                found += [
                    d for d in page.children() if filtered or not artifact_type or d.artifact_type == artifact_type
                ]
                if len(found) >= MAX_REFERRERS_LISTED:
                    return found[:MAX_REFERRERS_LISTED]
        except NotFoundError:
            return None
        return found

    async def _pages(
        self, repository: str, url: httpx2.URL, what: str, max_pages: int, accept: str | None = None
    ) -> AsyncIterator[tuple[httpx2.Response, bytes]]:
        """GET ``url`` and the pages its ``Link: <...>; rel="next"`` names (same host only), at most ``max_pages``:
        each answer with its body (capped like a manifest)."""
        next_url: httpx2.URL | None = url
        for _ in range(max_pages):
            if next_url is None:
                return
            response, body = await self.transport.request(
                "GET",
                self.host,
                next_url,
                scopes=Scopes.pull(repository),
                expect={200},
                headers={"Accept": accept} if accept else None,
                body_limit=self.limits.manifest_bytes,
                what=what,
            )
            yield response, body
            next_url = _next_page(next_url, response.headers.get("link"))

    async def tags(self, repository: str) -> list[str] | None:
        """The repository's tags (``GET /v2/<name>/tags/list``, pages of :data:`TAGS_PAGE` followed on the same
        host, at most :data:`MAX_TAG_PAGES`); None when the registry does not know the repository (404
        ``NAME_UNKNOWN``). Entries that are not valid tags are dropped."""
        url = self._url(repository, "tags/list", {"n": str(TAGS_PAGE)})
        found: list[str] = []
        try:
            async for _, body in self._pages(repository, url, "tag list", MAX_TAG_PAGES):
                found += _tag_names(body)
        except NotFoundError:
            if found:
                raise
            return None
        return list(dict.fromkeys(found))

    async def manifest_delete(self, repository: str, digest: Digest) -> None:
        """DELETE a manifest by digest (the registry untags every tag on it; distribution refuses a tag)."""
        url = self._url(repository, f"manifests/{Digest(digest)}")
        await self.transport.request("DELETE", self.host, url, scopes=Scopes.push(repository), expect={202, 200})

    # -- blobs ------------------------------------------------------------------------------------------------

    async def blob_exists(self, repository: str, digest: Digest) -> int | None:
        """HEAD a blob: its size when present (-1: present, size not said), None when absent."""
        url = self._url(repository, f"blobs/{Digest(digest)}")
        try:
            response, _ = await self.transport.request(
                "HEAD", self.host, url, scopes=Scopes.pull(repository), expect={200, *_REDIRECTS}
            )
        except NotFoundError:
            return None
        if response.status_code in _REDIRECTS:
            # distribution with redirects to its storage (S3, GCS, Azure backends; its redirect middleware)
            # answers a HEAD of a present blob with a 307 to a signed URL, as for a GET: the blob is there. The
            # URL is signed for a GET on another host: it is not followed (docs/REGISTRY-QUIRKS.md).
            return -1
        length = response.headers.get("content-length", "")
        return int(length) if length.isdigit() else -1

    @asynccontextmanager
    async def blob_get(self, repository: str, digest: Digest, offset: int = 0) -> AsyncIterator[httpx2.Response]:
        """Stream a blob (redirects followed without credentials); the caller verifies the bytes.

        ``Accept-Encoding: identity``: a blob is never transparently decoded (httpx2 would otherwise decode
        gzip/br/zstd bodies and the digest would be of other bytes). ``offset`` asks for a ``Range``.
        """
        url = self._url(repository, f"blobs/{Digest(digest)}")
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self.transport.stream(
            "GET",
            self.host,
            url,
            scopes=Scopes.pull(repository),
            expect={200, 206},
            headers=headers,
            follow_redirects=True,
        ) as response:
            yield response

    async def start_upload(
        self, repository: str, mount: Digest | None = None, mount_from: str | None = None
    ) -> UploadSession | None:
        """POST to open an upload; with ``mount``/``mount_from``, ask for a cross-repository mount first.

        Returns None when the mount was done (201). A declined mount (202) returns that upload session.
        """
        scopes = Scopes.push(repository)
        params: dict[str, str] = {}
        if mount is not None and mount_from is not None:
            params = {"mount": str(Digest(mount)), "from": validate_repository(mount_from)}
            scopes = scopes.merge(Scopes.pull(mount_from))
        url = self._url(repository, "blobs/uploads/", params)
        response = None
        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + SESSION_GRACE):
            response, _ = await self.transport.request(
                "POST", self.host, url, scopes=scopes, expect={201, 202}, headers={"Content-Length": "0"}
            )
        if response is None:
            raise TransportError("POST", redact(url), f"no answer within {SESSION_GRACE:.0f} s")
        if response.status_code == 201 and params:
            return None
        return self._session(repository, url, response)

    def _session(self, repository: str, url: httpx2.URL, response: httpx2.Response) -> UploadSession:
        location = response.headers.get("location")
        if not location:
            raise RegistryError(response.status_code, "POST", redact(url), (), "upload answer has no Location")
        # The Location may be relative and may carry state in its query (_state=...): keep it whole.
        target = url.join(location)
        if (target.scheme, target.host) != (url.scheme, url.host):
            raise RegistryError(response.status_code, "POST", redact(url), (), "upload Location on another host")
        raw_min = response.headers.get("oci-chunk-min-length", "")
        chunk_min = min(int(raw_min), self.limits.max_chunk_min_length) if raw_min.isdigit() else 0
        return UploadSession(repository, target, chunk_min)

    async def upload(self, session: UploadSession, digest: Digest, size: int, body: AsyncIterable[bytes]) -> None:
        """Send the blob's bytes into ``session`` and commit under ``digest``.

        ``body`` must already be verified by the caller as it streams (a :class:`Verifier` that raises on a
        mismatch before the last chunk is yielded), so that a wrong blob is never committed.
        """
        if session.chunk_min and size > session.chunk_min:
            await self._upload_chunked(session, digest, size, body)
            return
        url = session.location.copy_merge_params({"digest": str(digest)})
        await self._commit(session, url, body, size)

    async def _commit(
        self, session: UploadSession, url: httpx2.URL, body: AsyncIterable[bytes] | bytes, size: int
    ) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with self.transport.stream(
            "PUT",
            self.host,
            url,
            scopes=Scopes.push(session.repository),
            expect={201, 204},
            headers=headers,
            content=body,
        ) as response:
            echoed = response.headers.get("docker-content-digest")
        digest = Digest(url.params["digest"])
        if echoed and echoed.startswith(digest.algorithm + ":") and echoed != digest:
            raise DigestMismatchError(digest, echoed, None, None, "registry committed other bytes", redact(url))

    async def _upload_chunked(
        self, session: UploadSession, digest: Digest, size: int, body: AsyncIterable[bytes]
    ) -> None:
        """PATCH chunks of at least ``OCI-Chunk-Min-Length`` bytes, then PUT the (possibly empty) tail."""
        chunk = max(session.chunk_min, self.limits.chunk_size)
        location, offset, buf = session.location, 0, bytearray()
        async for piece in body:
            buf += piece
            # PATCH whole chunks while bytes remain after them: the stream's last piece may hold the whole rest
            # (the verifier withholds it until the digest checks), so decide by ``size``, not by what has arrived.
            while len(buf) >= chunk and offset + chunk < size:
                location = await self._patch(session, location, bytes(buf[:chunk]), offset)
                offset += chunk
                del buf[:chunk]
        url = location.copy_merge_params({"digest": str(digest)})
        await self._commit(UploadSession(session.repository, location, session.chunk_min), url, bytes(buf), len(buf))

    async def _patch(self, session: UploadSession, location: httpx2.URL, data: bytes, offset: int) -> httpx2.URL:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}",
            "Content-Length": str(len(data)),
        }
        response, _ = await self.transport.request(
            "PATCH",
            self.host,
            location,
            scopes=Scopes.push(session.repository),
            expect={202, 201, 204},
            headers=headers,
            content=data,
        )
        # Some registries (ECR) answer 201 to a PATCH; the next Location is what counts.
        return location.join(response.headers.get("location") or str(location))

    async def cancel_upload(self, session: UploadSession) -> None:
        """DELETE an upload session we will not finish (best effort; finished even if the caller is cancelled)."""
        session.ended = True
        with (
            anyio.CancelScope(shield=True, deadline=anyio.current_time() + SESSION_GRACE),
            contextlib.suppress(RegistryError, TransportError),
        ):
            await self.transport.request(
                "DELETE",
                self.host,
                session.location,
                scopes=Scopes.push(session.repository),
                expect={200, 202, 204, 404},
            )


async def verified(stream: AsyncIterable[bytes], verifier: Verifier) -> AsyncIterator[bytes]:
    """Yield ``stream`` while hashing it; raise before the last byte is passed on if the digest is wrong.

    Holding back the final chunk until the whole stream is checked guarantees that a corrupted blob never
    reaches the registry's commit (its PUT body ends short, the request fails, nothing is stored).
    """
    pending: bytes | None = None
    async for chunk in stream:
        if not chunk:
            continue
        verifier.update(chunk)
        if pending is not None:
            yield pending
        pending = chunk
    verifier.check()
    if pending is not None:
        yield pending


async def read_blob(registry: Registry, repository: str, digest: Digest, limit: int) -> bytes:
    """Fetch a small blob (a config) into memory, capped and verified."""
    async with registry.blob_get(repository, digest) as response:
        data = await read_capped(response, limit, f"blob {digest.short}")
    verifier = Verifier(digest)
    verifier.update(data)
    verifier.check()
    return data
