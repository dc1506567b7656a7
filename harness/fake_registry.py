"""A scriptable fake OCI registry on loopback: spec-faithful happy path, hooks, vendor quirks, request log.

The fake speaks the distribution-spec v1.1 endpoints ocicopy uses, over real HTTP/1.1 (keep-alive,
``Content-Length`` on every answer, chunked request bodies accepted) from a background thread, with all
state in memory. Unlike :mod:`harness.registry` (the real CNCF registry), it can be told to misbehave:

* :class:`Quirks` switches vendor behaviour (no mounts, 401 on a declined mount, no manifest HEAD, no
  ``Range``, 201 on PATCH, a chunk minimum, no referrers API, a manifest size cap, mounts that manifests do not
  see (ECR-like), repositories that exist only where a predicate says so (ECR, which creates none on push),
  Docker Hub's pull quota (:class:`PullQuota`), and CNCF distribution's blob-link race under concurrent
  writers); mutable at runtime;
* ``before`` hooks see each request first and may answer it themselves (a :class:`Response`, e.g. 503 or
  429 + ``Retry-After``, or ``Response(drop=True)`` to close the connection unanswered) or sleep to slow it;
* ``after`` hooks see each request with the response about to be sent (and may mutate that response);
* :attr:`FakeRegistry.requests` records every request (method, path, query, headers, status, body size and
  global start/end order indices), :attr:`FakeRegistry.max_in_flight` the highest concurrency seen, and
  :func:`assert_order` checks "all of these completed before any of those started".

``FakeRegistry.entries()`` converts the log to :class:`harness.registry.AccessEntry` objects, so the
real registry's predicates (``mounts``, ``blob_uploads``, ``manifest_puts``, ...) work on the fake too.

Example::

    with FakeRegistry() as fake:
        fake.seed("src/app", "v1", images.make_image([images.layer(1, 1000)]))
        fake.before(fail(2, 503, when=is_manifest_put))
        ...copy with ocicopy.Client(ClientOptions(plain_http=frozenset({fake.host}), use_docker_config=False))
        assert_order(fake.requests, is_blob_upload, is_manifest_put)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from harness.images import OCI_INDEX, Artifact, Image, Index
from harness.registry import REPO_NAME_RE, AccessEntry

TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
IMAGE_TYPES = frozenset(
    {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
)
INDEX_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
API_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- public data types


@dataclass
class Quirks:
    """Vendor behaviours; every switch off means a spec-faithful registry. Mutable while the fake runs."""

    no_mount: bool = False  # cross-repository mount never happens: declined (202 + session, or 401 below)
    mount_401: bool = False  # a declined mount is answered 401 UNAUTHORIZED instead of 202 (Harbor-like)
    no_head: bool = False  # HEAD on manifests answers 405 (Artifactory-like); blob HEAD still works
    ignore_range: bool = False  # blob GET ignores ``Range`` and answers 200 with the whole blob
    patch_201: bool = False  # PATCH on an upload answers 201 instead of 202 (ECR-like)
    #: > 0: POST answers ``OCI-Chunk-Min-Length: chunk_min``; a PATCH chunk smaller than it is refused (416),
    #: and so is a monolithic PUT (no PATCH before it) whose body is larger than it (400 BLOB_UPLOAD_INVALID).
    chunk_min: int = 0
    no_referrers: bool = True  # /v2/<name>/referrers/<digest> answers 404 (like distribution 2.8)
    max_manifest_bytes: int | None = None  # manifest PUT larger than this answers 413 SIZE_INVALID
    #: ECR-like: a mounted blob answers HEAD 200 in its new repository, but manifests there do not see it (400
    #: MANIFEST_BLOB_UNKNOWN) until it is uploaded into that repository.
    uncounted_mounts: bool = False
    #: > 0: CNCF distribution's race (REGISTRY-QUIRKS.md, "Concurrent writers"): each placement of a blob into a
    #: repository (upload commit or mount) "rewrites its link", and the next ``link_race`` manifest PUTs there
    #: that name it answer 400 DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN (detail: the digest), though the blob is
    #: there (HEAD 200). Placing it again restarts the count: re-placing at once feeds the race.
    link_race: int = 0
    #: > 0: a rate limiter in front of the registry: a request arriving while this many are in flight already
    #: answers 429 TOOMANYREQUESTS (``Retry-After: 0``), as a per-client concurrency limit of a CDN does.
    max_in_flight: int = 0
    #: Docker Hub's pull quota (REGISTRY-QUIRKS.md, "Docker Hub"): see :class:`PullQuota`.
    pull_quota: PullQuota | None = None
    #: ECR-like: a repository exists only where this answers True (e.g. "does moto hold it?"); every request
    #: naming another one answers 404 NAME_UNKNOWN, pushes included (ECR creates no repository on push).
    ecr_repositories: Callable[[str], bool] | None = None


@dataclass
class PullQuota:
    """Docker Hub's quota: every manifest GET spends one pull, HEADs are free; both announce what is left
    (``ratelimit-limit: 100;w=21600``, ``ratelimit-remaining: N;w=21600``); a GET with nothing left answers 429
    TOOMANYREQUESTS with a ``Retry-After`` of the window. ``left`` is mutable (tests refill or drain it)."""

    left: int
    limit: int = 100
    window: int = 21600
    spent: int = 0

    def headers(self, left: int | None = None) -> dict[str, str]:
        remaining = self.left if left is None else left
        return {
            "ratelimit-limit": f"{self.limit};w={self.window}",
            "ratelimit-remaining": f"{remaining};w={self.window}",
        }


@dataclass
class Response:
    """An answer: from a ``before`` hook instead of the fake's own, or the fake's own as seen by ``after``.

    ``drop=True`` closes the connection without answering (a transport error for the client).
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False

    @classmethod
    def error(cls, status: int, code: str, message: str = "", headers: dict[str, str] | None = None) -> Response:
        """A spec error body ``{"errors": [{"code", "message", "detail"}]}``."""
        body = json.dumps({"errors": [{"code": code, "message": message or code.lower(), "detail": None}]}).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)


@dataclass
class Request:
    """One request as the fake saw it. ``status`` is 0 and ``end`` None until it is answered.

    ``start``/``end`` are indices from one counter shared by all events of this fake (strictly increasing),
    so ``a.end < b.start`` means ``a`` was answered before ``b`` arrived. ``headers`` has lower-case names.
    """

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    start: int
    remote: str = ""
    body_size: int = 0
    status: int = 0
    response_size: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    end: int | None = None
    hooked: bool = False  # answered by a ``before`` hook
    busy: int = 0  # requests in flight when it arrived, itself included
    body: bytes = field(default=b"", repr=False)

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.raw_query, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def uri(self) -> str:
        return self.path + ("?" + self.raw_query if self.raw_query else "")

    @property
    def repo(self) -> str | None:
        return _route(self.path)[1]

    @property
    def kind(self) -> str:
        """``base``, ``manifest``, ``blob``, ``upload``, ``tags``, ``referrers`` or ``unknown``."""
        return _route(self.path)[0]

    @property
    def ref(self) -> str | None:
        """The tag/digest, blob digest or upload id the path names."""
        return _route(self.path)[2]

    def to_entry(self) -> AccessEntry:
        """As the real registry harness's :class:`AccessEntry` (for its predicates)."""
        return AccessEntry(
            method=self.method,
            uri=self.uri,
            status=self.status,
            bytes_written=self.response_size,
            request_content_type=self.headers.get("content-type"),
            response_content_type=self.response_headers.get("Content-Type"),
            user_agent=self.headers.get("user-agent"),
            remote=self.remote,
        )


BeforeHook = Callable[[Request], Response | None]
AfterHook = Callable[[Request, Response], None]


# --------------------------------------------------------------------------- predicates and hook helpers


def is_manifest_put(r: Request) -> bool:
    return r.method == "PUT" and r.kind == "manifest"


def is_manifest_get(r: Request) -> bool:
    return r.method == "GET" and r.kind == "manifest"


def is_blob_upload(r: Request) -> bool:
    """PUT/PATCH on an upload session (bytes or the commit)."""
    return r.method in ("PUT", "PATCH") and r.kind == "upload"


def is_mount(r: Request) -> bool:
    """A POST asking for a cross-repository mount (any answer)."""
    return r.method == "POST" and r.kind == "upload" and r.param("mount") is not None


def is_blob_get(r: Request) -> bool:
    return r.method == "GET" and r.kind == "blob"


def fail(
    times: int,
    status: int = 503,
    *,
    when: Callable[[Request], bool] | None = None,
    code: str = "UNAVAILABLE",
    headers: dict[str, str] | None = None,
) -> BeforeHook:
    """A ``before`` hook answering the first ``times`` requests matching ``when`` with ``status``, then passing."""
    lock, left = threading.Lock(), [times]

    def hook(req: Request) -> Response | None:
        if when is not None and not when(req):
            return None
        with lock:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return Response.error(status, code, f"injected {status}", headers)

    return hook


def assert_order(
    requests: Iterable[Request],
    before: Callable[[Request], bool],
    after: Callable[[Request], bool],
    *,
    allow_empty: bool = False,
) -> None:
    """Every request matching ``before`` completed before the first request matching ``after`` started.

    Raises AssertionError otherwise, and also when either side matches nothing (unless ``allow_empty``),
    so that a mistyped predicate cannot make the assertion vacuous.
    """
    reqs = list(requests)
    firsts = [r for r in reqs if before(r)]
    lasts = [r for r in reqs if after(r)]
    if not firsts or not lasts:
        if allow_empty:
            return
        raise AssertionError(f"assert_order: {len(firsts)} 'before' and {len(lasts)} 'after' requests matched")
    first_after = min(lasts, key=lambda r: r.start)
    late = [r for r in firsts if r.end is None or r.end > first_after.start]
    if late:
        shown = ", ".join(f"{r.method} {r.uri} [{r.start}-{r.end}]" for r in late[:5])
        raise AssertionError(
            f"{len(late)} request(s) not finished before {first_after.method} {first_after.uri} "
            f"started at {first_after.start}: {shown}"
        )


# --------------------------------------------------------------------------- routing

_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("upload", re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]*)$")),
    ("blob", re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)$")),
    ("manifest", re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("tags", re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)$")),
]


def _route(path: str) -> tuple[str, str | None, str | None]:
    if path in ("/v2/", "/v2"):
        return "base", None, None
    for kind, pattern in _ROUTES:
        m = pattern.match(path)
        if m:
            return kind, m.group("name"), m.groupdict().get("ref")
    return "unknown", None, None


# --------------------------------------------------------------------------- storage


@dataclass
class _Upload:
    repo: str
    data: bytearray = field(default_factory=bytearray)
    state: str = ""
    patched: bool = False
    states: set[str] = field(default_factory=set)


@dataclass
class _Stored:
    content: bytes
    media_type: str
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


class _Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.blobs: dict[str, bytes] = {}
        self.links: dict[str, set[str]] = {}  # repo -> blob digests
        self.uncounted: dict[str, set[str]] = {}  # repo -> blobs mounted there that manifests do not see
        self.racing: dict[tuple[str, str], int] = {}  # (repo, digest) -> manifest PUTs still refused
        self.manifests: dict[str, dict[str, _Stored]] = {}  # repo -> digest -> manifest
        self.tags: dict[str, dict[str, str]] = {}  # repo -> tag -> digest
        self.uploads: dict[str, _Upload] = {}

    def repo_known(self, repo: str) -> bool:
        return repo in self.links or repo in self.manifests

    def has_blob(self, repo: str, digest: str) -> bool:
        return digest in self.links.get(repo, ())

    def put_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        self.blobs.setdefault(digest, bytes(data))
        self.links.setdefault(repo, set()).add(digest)
        return digest

    def resolve(self, repo: str, ref: str) -> _Stored | None:
        digest = ref if ":" in ref else self.tags.get(repo, {}).get(ref)
        return None if digest is None else self.manifests.get(repo, {}).get(digest)

    def put_manifest(self, repo: str, ref: str, content: bytes, media_type: str) -> str:
        digest = sha256(content)
        doc = _json(content)
        subject = doc.get("subject") if isinstance(doc, dict) else None
        stored = _Stored(
            content,
            media_type,
            subject.get("digest") if isinstance(subject, dict) else None,
            _artifact_type(doc),
            doc.get("annotations") if isinstance(doc, dict) else None,
        )
        self.manifests.setdefault(repo, {})[digest] = stored
        self.links.setdefault(repo, set())
        if ":" not in ref:
            self.tags.setdefault(repo, {})[ref] = digest
        return digest

    def missing_references(self, repo: str, doc: dict[str, Any], media_type: str) -> list[str]:
        missing = []
        if media_type in INDEX_TYPES or "manifests" in doc:
            for entry in doc.get("manifests") or []:
                d = entry.get("digest") if isinstance(entry, dict) else None
                if not isinstance(d, str) or d not in self.manifests.get(repo, {}):
                    missing.append(str(d))
        else:
            descs = [doc.get("config"), *(doc.get("layers") or [])]
            for desc in descs:
                if not isinstance(desc, dict):
                    continue
                if desc.get("urls"):  # foreign layer: not stored here
                    continue
                d = desc.get("digest")
                if not isinstance(d, str) or not self.has_blob(repo, d) or d in self.uncounted.get(repo, ()):
                    missing.append(str(d))
        return missing

    def racing_references(self, repo: str, doc: dict[str, Any]) -> list[str]:
        """Blobs of ``doc`` whose link in ``repo`` is "being rewritten" (one refusal each is used up)."""
        racing = []
        for desc in [doc.get("config"), *(doc.get("layers") or [])]:
            d = desc.get("digest") if isinstance(desc, dict) else None
            if isinstance(d, str) and self.racing.get((repo, d), 0) > 0:
                self.racing[(repo, d)] -= 1
                racing.append(d)
        return racing


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _artifact_type(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("artifactType"), str):
        return str(doc["artifactType"])
    config = doc.get("config")
    if isinstance(config, dict) and isinstance(config.get("mediaType"), str):
        return str(config["mediaType"])
    return None


# --------------------------------------------------------------------------- the registry


class FakeRegistry:
    """An in-memory OCI registry on ``127.0.0.1:<free port>``; see the module docstring."""

    def __init__(self, quirks: Quirks | None = None) -> None:
        self.quirks = quirks or Quirks()
        self.host = ""
        self.url = ""
        self._store = _Store()
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        self._counter = itertools.count(1)
        self._in_flight = 0
        self._max_in_flight = 0
        self._before: list[BeforeHook] = []
        self._after: list[AfterHook] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> FakeRegistry:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        port = server.server_address[1]
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=server.serve_forever, name=f"fake-registry-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # keep-alive connections idle in their handler threads
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- hooks and observation -----------------------------------------------------------------------------

    def before(self, fn: BeforeHook) -> None:
        """Add a hook run before the fake handles a request (body already read); the first hook returning a
        :class:`Response` answers the request instead. A hook may also sleep (it runs in the request's thread)."""
        with self._lock:
            self._before.append(fn)

    def after(self, fn: AfterHook) -> None:
        """Add a hook run after the answer is decided and before it is sent; it may mutate the response."""
        with self._lock:
            self._after.append(fn)

    def clear_hooks(self) -> None:
        with self._lock:
            self._before.clear()
            self._after.clear()

    @property
    def requests(self) -> list[Request]:
        """Answered (or dropped) requests in completion order; a snapshot copy."""
        with self._lock:
            return list(self._requests)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The highest number of requests being handled at once since start (or the last :meth:`clear`)."""
        with self._lock:
            return self._max_in_flight

    def clear(self) -> None:
        """Forget recorded requests and reset :attr:`max_in_flight` (storage, quirks and hooks stay)."""
        with self._lock:
            self._requests.clear()
            self._max_in_flight = self._in_flight

    def mark(self) -> int:
        """Number of requests recorded so far; pass to :meth:`entries` (like ``RegistryServer.mark``)."""
        with self._lock:
            return len(self._requests)

    def entries(self, since: int = 0) -> list[AccessEntry]:
        """Recorded requests after ``mark()`` returned ``since``, as real-registry :class:`AccessEntry`."""
        return [r.to_entry() for r in self.requests[since:]]

    # -- storage access (no HTTP) --------------------------------------------------------------------------

    def seed(self, repo: str, ref: str, obj: Image | Index | Artifact) -> str:
        """Store an image, index (children by digest) or artifact directly; returns its digest."""
        with self._store.lock:
            if isinstance(obj, Index):
                for child in obj.children:
                    self.seed(repo, child.digest, child)
            else:
                for data in obj.blobs().values():
                    self._store.put_blob(repo, data)
            return self._store.put_manifest(repo, ref, obj.manifest, obj.media_type)

    def seed_blob(self, repo: str, data: bytes) -> str:
        with self._store.lock:
            return self._store.put_blob(repo, data)

    def has_blob(self, repo: str, digest: str) -> bool:
        with self._store.lock:
            return self._store.has_blob(repo, digest)

    def blob(self, repo: str, digest: str) -> bytes | None:
        with self._store.lock:
            return self._store.blobs.get(digest) if self._store.has_blob(repo, digest) else None

    def manifest(self, repo: str, ref: str) -> bytes | None:
        with self._store.lock:
            stored = self._store.resolve(repo, ref)
            return None if stored is None else stored.content

    def media_type(self, repo: str, ref: str) -> str | None:
        with self._store.lock:
            stored = self._store.resolve(repo, ref)
            return None if stored is None else stored.media_type

    def tags(self, repo: str) -> list[str]:
        with self._store.lock:
            return sorted(self._store.tags.get(repo, {}))

    def repositories(self) -> list[str]:
        with self._store.lock:
            return sorted(set(self._store.links) | set(self._store.manifests))

    # -- request bookkeeping (called by the handler) ---------------------------------------------------------

    def _begin(self, method: str, target: str, headers: dict[str, str], remote: str) -> Request:
        parts = urlsplit(target)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            req = Request(method, parts.path, parts.query, headers, next(self._counter), remote)
            req.busy = self._in_flight  # this one included
            return req

    def _finish(self, req: Request) -> None:
        with self._lock:
            self._in_flight -= 1
            req.end = next(self._counter)
            self._requests.append(req)

    def _answer(self, req: Request) -> Response:
        with self._lock:
            before, after = list(self._before), list(self._after)
        response = None
        for hook in before:
            response = hook(req)
            if response is not None:
                req.hooked = True
                break
        if response is None and (limit := self.quirks.max_in_flight) and req.busy > limit:
            response = Response.error(429, "TOOMANYREQUESTS", "too many requests in flight", {"Retry-After": "0"})
        if response is None:
            try:
                response = self._handle(req)
            except Exception as exc:  # a bug in the fake: answer 500 and say so
                response = Response.error(500, "UNKNOWN", f"fake registry error: {type(exc).__name__}: {exc}")
        for after_hook in after:
            after_hook(req, response)
        return response

    # -- the registry ----------------------------------------------------------------------------------------

    def _handle(self, req: Request) -> Response:
        kind, name, ref = _route(req.path)
        if kind == "base":
            if req.method in ("GET", "HEAD"):
                return Response(200, {"Content-Type": "application/json"}, b"{}")
            return _unsupported()
        if kind == "unknown" or name is None:
            return Response(404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n")
        if not REPO_NAME_RE.fullmatch(name) or len(name) > 255:
            return Response.error(400, "NAME_INVALID", "invalid repository name")
        exists = self.quirks.ecr_repositories
        if exists is not None and not exists(name):
            return _head_safe(
                req,
                Response.error(
                    404, "NAME_UNKNOWN", f"The repository with name '{name}' does not exist in the registry"
                ),
            )
        store = self._store
        with store.lock:
            if kind == "manifest":
                assert ref is not None
                quota = self.quirks.pull_quota
                if quota is not None and req.method in ("GET", "HEAD"):
                    return self._counted(req, name, ref, quota)
                return self._manifest(req, name, ref)
            if kind == "blob":
                assert ref is not None
                return self._blob(req, name, ref)
            if kind == "upload":
                return self._upload(req, name, ref or "")
            if kind == "tags":
                return self._tags(req, name)
            assert ref is not None
            return self._referrers(req, name, ref)

    # manifests

    def _counted(self, req: Request, name: str, ref: str, quota: PullQuota) -> Response:
        """A manifest GET/HEAD under Docker Hub's pull quota (the store lock is held)."""
        if req.method == "GET" and quota.left <= 0:
            return Response.error(
                429,
                "TOOMANYREQUESTS",
                "You have reached your pull rate limit.",
                {**quota.headers(0), "Retry-After": str(quota.window)},
            )
        response = self._manifest(req, name, ref)
        if req.method == "GET" and response.status < 400:
            quota.left -= 1
            quota.spent += 1
        if response.status < 400:
            response.headers.update(quota.headers())
        return response

    def _manifest(self, req: Request, name: str, ref: str) -> Response:
        store = self._store
        is_digest = ":" in ref
        if is_digest and not DIGEST_RE.fullmatch(ref):
            return Response.error(400, "DIGEST_INVALID", "invalid digest")
        if not is_digest and not TAG_RE.fullmatch(ref):
            return Response.error(400, "TAG_INVALID", "invalid tag")
        if req.method in ("GET", "HEAD"):
            if req.method == "HEAD" and self.quirks.no_head:
                return Response(405, {"Allow": "GET, PUT, DELETE"})
            stored = store.resolve(name, ref)
            if stored is None:
                return _head_safe(req, Response.error(404, "MANIFEST_UNKNOWN", "manifest unknown"))
            if not _accepts(req.headers.get("accept", ""), stored.media_type):
                return _head_safe(
                    req, Response.error(404, "MANIFEST_UNKNOWN", f"{stored.media_type} not in the Accept header")
                )
            digest = sha256(stored.content)
            headers = {"Content-Type": stored.media_type, "Docker-Content-Digest": digest, "ETag": f'"{digest}"'}
            return Response(200, headers, stored.content)
        if req.method == "PUT":
            return self._manifest_put(req, name, ref)
        if req.method == "DELETE":
            if is_digest:
                if store.manifests.get(name, {}).pop(ref, None) is None:
                    return Response.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                for tag, d in list(store.tags.get(name, {}).items()):
                    if d == ref:
                        del store.tags[name][tag]
                return Response(202)
            if store.tags.get(name, {}).pop(ref, None) is None:
                return Response.error(404, "MANIFEST_UNKNOWN", "tag unknown")
            return Response(202)
        return _unsupported()

    def _manifest_put(self, req: Request, name: str, ref: str) -> Response:
        limit = self.quirks.max_manifest_bytes
        if limit is not None and req.body_size > limit:
            return Response.error(413, "SIZE_INVALID", f"manifest larger than {limit} bytes")
        doc = _json(req.body)
        if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
            return Response.error(400, "MANIFEST_INVALID", "manifest invalid")
        content_type = req.headers.get("content-type", "").split(";")[0].strip()
        media_type = content_type or str(doc.get("mediaType") or "")
        if doc.get("mediaType") and content_type and doc["mediaType"] != content_type:
            return Response.error(400, "MANIFEST_INVALID", "mediaType differs from Content-Type")
        if media_type not in IMAGE_TYPES | INDEX_TYPES:
            return Response.error(400, "MANIFEST_INVALID", f"unsupported manifest media type {media_type!r}")
        digest = sha256(req.body)
        if ":" in ref and ref != digest:
            return Response.error(400, "DIGEST_INVALID", f"manifest digest is {digest}, not {ref}")
        with self._store.lock:
            racing = self._store.racing_references(name, doc)
            missing = self._store.missing_references(name, doc, media_type)
        if racing:  # what distribution answers when a link read fails mid-rewrite (invalid digest, then unknown)
            errors = [{"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"}]
            errors += [
                {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": d} for d in racing
            ]
            return Response(400, {"Content-Type": "application/json"}, json.dumps({"errors": errors}).encode())
        if missing:
            return Response(
                400,
                {"Content-Type": "application/json"},
                json.dumps(
                    {
                        "errors": [
                            {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry", "detail": d}
                            for d in missing
                        ]
                    }
                ).encode(),
            )
        self._store.put_manifest(name, ref, req.body, media_type)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        subject = doc.get("subject")
        if not self.quirks.no_referrers and isinstance(subject, dict) and subject.get("digest"):
            headers["OCI-Subject"] = str(subject["digest"])
        return Response(201, headers)

    # blobs

    def _blob(self, req: Request, name: str, digest: str) -> Response:
        store = self._store
        if not DIGEST_RE.fullmatch(digest):
            return _head_safe(req, Response.error(400, "DIGEST_INVALID", "invalid digest"))
        if req.method == "DELETE":
            if not store.has_blob(name, digest):
                return Response.error(404, "BLOB_UNKNOWN", "blob unknown")
            store.links[name].discard(digest)
            return Response(202)
        if req.method not in ("GET", "HEAD"):
            return _unsupported()
        if not store.has_blob(name, digest):
            return _head_safe(req, Response.error(404, "BLOB_UNKNOWN", "blob unknown to registry"))
        data = store.blobs[digest]
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        if not self.quirks.ignore_range:
            headers["Accept-Ranges"] = "bytes"
        rng = req.headers.get("range")
        if rng and not self.quirks.ignore_range and req.method == "GET":
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m is None:
                return Response.error(
                    416, "RANGE_INVALID", "unsupported Range", {"Content-Range": f"bytes */{len(data)}"}
                )
            first = int(m.group(1))
            last = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            if first >= len(data) or last < first:
                return Response.error(
                    416, "RANGE_INVALID", "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"}
                )
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            return Response(206, headers, data[first : last + 1])
        return Response(200, headers, data)

    # uploads

    def _new_session(self, name: str) -> tuple[str, _Upload]:
        upload_id = str(uuid.uuid4())
        upload = _Upload(name)
        self._store.uploads[upload_id] = upload
        self._next_state(upload)
        return upload_id, upload

    def _next_state(self, upload: _Upload) -> None:
        upload.state = uuid.uuid4().hex
        upload.states.add(upload.state)

    def _session_headers(self, name: str, upload_id: str, upload: _Upload) -> dict[str, str]:
        headers = {
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state={upload.state}",
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{len(upload.data) - 1}" if upload.data else "0-0",
        }
        if self.quirks.chunk_min:
            headers["OCI-Chunk-Min-Length"] = str(self.quirks.chunk_min)
        return headers

    def _upload(self, req: Request, name: str, upload_id: str) -> Response:
        store = self._store
        if upload_id == "":
            if req.method != "POST":
                return _unsupported()
            return self._upload_start(req, name)
        upload = store.uploads.get(upload_id)
        if upload is None or upload.repo != name:
            return _head_safe(req, Response.error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown"))
        state = req.param("_state")
        if req.method == "GET":
            if state not in upload.states:
                return Response.error(400, "BLOB_UPLOAD_INVALID", "missing or unknown _state")
            return Response(204, self._session_headers(name, upload_id, upload))
        if req.method == "DELETE":
            del store.uploads[upload_id]
            return Response(204)
        if req.method not in ("PATCH", "PUT"):
            return _unsupported()
        if state != upload.state:
            # distribution signs the offset into _state: a stale or missing one is refused
            return Response.error(400, "BLOB_UPLOAD_INVALID", "missing or stale _state (use the last Location)")
        if req.method == "PATCH":
            return self._upload_patch(req, name, upload_id, upload)
        digest = req.param("digest")
        if digest is None or not DIGEST_RE.fullmatch(digest):
            return Response.error(400, "DIGEST_INVALID", "PUT needs ?digest=sha256:<hex>")
        chunk_min = self.quirks.chunk_min
        if chunk_min and not upload.patched and req.body_size > chunk_min:
            return Response.error(
                400, "BLOB_UPLOAD_INVALID", f"monolithic upload over {chunk_min} bytes refused: send PATCH chunks"
            )
        data = bytes(upload.data) + req.body
        del store.uploads[upload_id]
        if sha256(data) != digest:
            return Response.error(400, "DIGEST_INVALID", f"content digest {sha256(data)} does not match {digest}")
        self._placed(name, store.put_blob(name, data), mounted=False)
        return Response(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _placed(self, repo: str, digest: str, *, mounted: bool) -> None:
        """A blob was committed into or mounted into ``repo``: the quirks that follow from it."""
        store = self._store
        with store.lock:
            if self.quirks.link_race:
                store.racing[(repo, digest)] = self.quirks.link_race
            uncounted = store.uncounted.setdefault(repo, set())
            if mounted and self.quirks.uncounted_mounts:
                uncounted.add(digest)
            elif not mounted:
                uncounted.discard(digest)

    def _upload_start(self, req: Request, name: str) -> Response:
        store, quirks = self._store, self.quirks
        mount, origin = req.param("mount"), req.param("from")
        if mount is not None:
            if not DIGEST_RE.fullmatch(mount):
                return Response.error(400, "DIGEST_INVALID", "invalid mount digest")
            if not quirks.no_mount and origin is not None and store.has_blob(origin, mount):
                store.links.setdefault(name, set()).add(mount)
                self._placed(name, mount, mounted=True)
                return Response(201, {"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount})
            if quirks.mount_401:
                return Response.error(401, "UNAUTHORIZED", "mount declined")
        digest = req.param("digest")
        if digest is not None:  # monolithic POST upload
            if not DIGEST_RE.fullmatch(digest):
                return Response.error(400, "DIGEST_INVALID", "invalid digest")
            if sha256(req.body) != digest:
                return Response.error(400, "DIGEST_INVALID", "content does not match digest")
            self._placed(name, store.put_blob(name, req.body), mounted=False)
            return Response(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})
        upload_id, upload = self._new_session(name)
        return Response(202, self._session_headers(name, upload_id, upload))

    def _upload_patch(self, req: Request, name: str, upload_id: str, upload: _Upload) -> Response:
        offset = len(upload.data)
        content_range = req.headers.get("content-range")
        if content_range is not None:
            m = re.fullmatch(r"(?:bytes[= ])?(\d+)-(\d+)(?:/\d+|/\*)?", content_range.strip())
            if m is None or int(m.group(1)) != offset or int(m.group(2)) - int(m.group(1)) + 1 != req.body_size:
                return Response.error(
                    416,
                    "BLOB_UPLOAD_INVALID",
                    f"Content-Range {content_range} does not continue at {offset}",
                    {"Range": f"0-{offset - 1}" if offset else "0-0", "Location": req.uri},
                )
        chunk_min = self.quirks.chunk_min
        if chunk_min and req.body_size < chunk_min:
            return Response.error(
                416,
                "BLOB_UPLOAD_INVALID",
                f"chunk of {req.body_size} bytes is under OCI-Chunk-Min-Length {chunk_min}",
                {"Range": f"0-{offset - 1}" if offset else "0-0", "Location": req.uri},
            )
        upload.data += req.body
        upload.patched = True
        self._next_state(upload)
        status = 201 if self.quirks.patch_201 else 202
        return Response(status, self._session_headers(name, upload_id, upload))

    # tags and referrers

    def _tags(self, req: Request, name: str) -> Response:
        if req.method != "GET":
            return _unsupported()
        if not self._store.repo_known(name):
            return Response.error(404, "NAME_UNKNOWN", "repository name not known to registry")
        tags = sorted(self._store.tags.get(name, {}))
        last = req.param("last")
        if last:
            tags = [t for t in tags if t > last]
        headers = {"Content-Type": "application/json"}
        n = req.param("n")
        if n is not None and n.isdigit():
            more = len(tags) > int(n)
            tags = tags[: int(n)]
            if more and tags:
                headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={quote(tags[-1])}>; rel="next"'
        return Response(200, headers, json.dumps({"name": name, "tags": tags}).encode())

    def _referrers(self, req: Request, name: str, digest: str) -> Response:
        if self.quirks.no_referrers:
            return Response(404, {"Content-Type": "text/plain; charset=utf-8"}, b"404 page not found\n")
        if req.method != "GET":
            return _unsupported()
        if not DIGEST_RE.fullmatch(digest):
            return Response.error(400, "DIGEST_INVALID", "invalid digest")
        wanted = req.param("artifactType")
        entries = []
        for d, stored in sorted(self._store.manifests.get(name, {}).items()):
            if stored.subject != digest or (wanted is not None and stored.artifact_type != wanted):
                continue
            entry: dict[str, Any] = {"mediaType": stored.media_type, "digest": d, "size": len(stored.content)}
            if stored.artifact_type:
                entry["artifactType"] = stored.artifact_type
            if stored.annotations:
                entry["annotations"] = stored.annotations
            entries.append(entry)
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        headers = {"Content-Type": OCI_INDEX}
        if wanted is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Response(200, headers, body)


def _unsupported() -> Response:
    return Response.error(405, "UNSUPPORTED", "the operation is unsupported")


def _head_safe(req: Request, response: Response) -> Response:
    """HEAD answers carry the status and headers, never a body (Content-Length 0)."""
    if req.method == "HEAD":
        response.body = b""
        response.headers.pop("Content-Type", None)
    return response


def _accepts(accept: str, media_type: str) -> bool:
    """Whether an ``Accept`` header admits ``media_type`` (an absent header admits everything)."""
    if not accept.strip():
        return True
    for item in accept.split(","):
        kind = item.split(";")[0].strip().lower()
        if kind in ("*/*", "application/*", media_type.lower()):
            return True
    return False


# --------------------------------------------------------------------------- HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ocitest-fake-registry/1.0"
    timeout = 60  # idle keep-alive connections end after a minute
    fake: FakeRegistry

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake._lock:
            self.fake._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _dispatch(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        remote = f"{self.client_address[0]}:{self.client_address[1]}"
        req = self.fake._begin(self.command, self.path, headers, remote)
        finished = False
        try:
            try:
                req.body = self._read_body(headers)
            except (ValueError, OSError):
                self.close_connection = True
                return
            req.body_size = len(req.body)
            response = self.fake._answer(req)
            req.status = response.status
            req.response_headers = dict(response.headers)
            if response.drop:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            # Recorded before the first byte goes out: once the client has the answer, `requests` shows it.
            self.fake._finish(req)
            finished = True
            self._write(req, response)
        finally:
            if not finished:
                self.fake._finish(req)

    def _read_body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537).strip():  # trailers
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(3)  # CRLF after the chunk
        length = int(headers.get("content-length", "0") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, req: Request, response: Response) -> None:
        body = response.body
        self.send_response_only(response.status)
        headers = {**API_HEADERS, **response.headers}
        names = {k.lower() for k in headers}
        if "content-length" not in names and response.status != 204:
            headers["Content-Length"] = str(len(body))
        if "date" not in names:
            headers["Date"] = self.date_time_string()
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if req.method != "HEAD" and body and response.status not in (204, 304):
            self.wfile.write(body)
            req.response_size = len(body)
        with contextlib.suppress(OSError):
            self.wfile.flush()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch
