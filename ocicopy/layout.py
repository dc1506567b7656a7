"""OCI image layouts on disk, as a :class:`~ocicopy.store.Store` (image-spec "image-layout").

A layout is a directory holding::

    oci-layout           {"imageLayoutVersion": "1.0.0"}
    index.json           an image index; a tag is an entry's "org.opencontainers.image.ref.name" annotation
    blobs/<alg>/<hex>    content-addressed blobs: manifests, configs, layers

References use skopeo's syntax: ``oci:PATH``, ``oci:PATH:TAG``, ``oci:PATH@DIGEST`` (PATH holds no ``:``
and no ``@``; a relative PATH is made absolute against the current directory when parsed).

Guarantees:

* A blob file is complete and verified or absent: bytes stream into ``blobs/<alg>/.ocicopy-tmp-<random>``,
  hashed on the way and refused as soon as they run past the promised size, then fsynced and renamed onto
  ``blobs/<alg>/<hex>`` only when digest and size match. The temp file is removed on any failure or
  cancellation (a SIGKILL can leave one behind; it is never read as a blob).
* index.json is written last (after the manifest blob, which the caller writes after the blobs it names)
  and atomically (temp file, fsync, rename, fsync of the directory): a reader sees the old index or the new
  one, never a torn one.
* Paths are built only from validated :class:`~ocicopy.digest.Digest` values, so ``sha256:../..`` never
  reaches the file system; tags are validated before they are written and matched exactly when read.
* What is read into memory is capped: a manifest by ``Limits.manifest_bytes``, index.json by
  :data:`INDEX_JSON_LIMIT` (:class:`~ocicopy.errors.BodyTooLargeError`); a malformed index.json is a
  one-line :class:`~ocicopy.errors.ManifestError`.
* Rewriting index.json keeps unknown fields of the index and of the entries it does not replace.
* The layout is created by the first write; a non-empty directory that is not a layout is never written
  into, and a layout whose ``imageLayoutVersion`` is not ``1.x`` is refused.
* A layout has no referrers API (:meth:`Layout.referrers` returns None): callers use the distribution
  spec's fallback tag scheme (``sha256-<hex>``), which works here because tags are ref.name entries.

Concurrency: an index.json read-modify-write runs under two locks. First an :class:`anyio.Lock` per layout
directory (by real path), shared by every :class:`Layout` object of the running event loop (a module-level
dict held in an anyio ``RunVar``: a lock is only valid on its own event loop), so that waiting tasks do not
each park a worker thread. Then ``flock(LOCK_EX)`` on a descriptor of the layout directory itself (no lock
file), taken in the worker thread that performs the update, which excludes other processes. Blob writes
take no lock: each writer has its own temp file, and rename is atomic.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, TypeVar

import anyio
from anyio import to_thread
from anyio.lowlevel import RunVar
from pydantic import ValidationError

from ocicopy.digest import Digest, Verifier
from ocicopy.errors import (
    BodyTooLargeError,
    DigestMismatchError,
    InputError,
    LayoutError,
    ManifestError,
    NotFoundError,
    UnknownReferenceError,
)
from ocicopy.location import (
    LAYOUT_SCHEME,
    MAX_LAYOUT_REFERENCE_LENGTH,
    LayoutReference,
    is_layout_reference,
    parse_layout_reference,
)
from ocicopy.models import OCI_INDEX, Descriptor, Manifest, ManifestInfo, parse_manifest
from ocicopy.options import Limits
from ocicopy.reference import validate_tag

if TYPE_CHECKING:
    from ocicopy.registry import UploadSession

__all__ = [
    "CHUNK_SIZE",
    "INDEX_JSON_LIMIT",
    "LAYOUT_SCHEME",
    "MAX_LAYOUT_REFERENCE_LENGTH",
    "REF_NAME",
    "BlobFiles",
    "FileSink",
    "Layout",
    "LayoutReference",
    "is_layout_reference",
    "parse_layout_reference",
]

T = TypeVar("T")
Entries = list[dict[str, Any]]

REF_NAME: Final = "org.opencontainers.image.ref.name"
CHUNK_SIZE: Final = 1 << 20
INDEX_JSON_LIMIT: Final = 16 << 20
_LAYOUT_FILE: Final = "oci-layout"
_LAYOUT_FILE_LIMIT: Final = 64 << 10
_INDEX_FILE: Final = "index.json"
_TMP_PREFIX: Final = ".ocicopy-tmp-"
_LAYOUT_BYTES: Final = b'{"imageLayoutVersion":"1.0.0"}'
_EMPTY_INDEX: Final = b'{"schemaVersion":2,"mediaType":"' + OCI_INDEX.encode() + b'","manifests":[]}'

State = Literal["absent", "foreign", "layout"]


# --- synchronous file-system helpers (run in worker threads) ---------------------------------------------


async def _io(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; an ``OSError`` it lets through becomes a one-line :class:`LayoutError`."""
    try:
        return await to_thread.run_sync(fn, *args)
    except OSError as exc:
        raise LayoutError(exc) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _read_capped(path: Path, limit: int, what: str) -> bytes:
    """The whole file, refusing one over ``limit`` bytes before reading it."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size > limit:
            raise BodyTooLargeError(what, limit)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLargeError(what, limit)
    return data


def _file_size(path: Path) -> int | None:
    """Size of the regular file at ``path``, or None."""
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once: temp file in the same directory, fsync, rename."""
    tmp = path.with_name(_TMP_PREFIX + secrets.token_hex(8))
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _with_flock(root: Path, fn: Callable[[], T]) -> T:
    """Run ``fn`` holding ``flock(LOCK_EX)`` on the layout directory (released when the descriptor closes)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fn()
    finally:
        os.close(fd)


def _make_root(root: Path) -> str:
    """Create the layout directory if needed; its real path (the in-process lock key)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} exists and is not a directory; cannot write an OCI layout there")
    root.mkdir(parents=True, exist_ok=True)
    return os.path.realpath(root)


def _check_layout_file(root: Path) -> None:
    """Refuse an ``oci-layout`` file that is malformed or of a version other than 1.x."""
    path = root / _LAYOUT_FILE
    try:
        body = json.loads(_read_capped(path, _LAYOUT_FILE_LIMIT, f"{path}"))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path} is not valid JSON ({_one_line(exc)})") from None
    version = body.get("imageLayoutVersion") if isinstance(body, dict) else None
    if not isinstance(version, str):
        raise InputError(f"{path} has no imageLayoutVersion string")
    if version.split(".")[0] != "1":
        raise InputError(f"{root}: unsupported OCI layout version {version[:40]!r} (ocicopy handles 1.x)")


def _layout_state(root: Path) -> State:
    """``layout`` (version checked), ``absent`` (no directory, or an empty one) or ``foreign``."""
    if (root / _LAYOUT_FILE).is_file():
        _check_layout_file(root)
        return "layout"
    if not root.exists():
        return "absent"
    if not root.is_dir():
        return "foreign"
    with os.scandir(root) as entries:
        if all(entry.name.startswith(_TMP_PREFIX) for entry in entries):
            return "absent"
    return "foreign"


def _require_layout(root: Path) -> None:
    state = _layout_state(root)
    if state == "absent":
        raise InputError(f"no OCI image layout at {root} (missing or empty directory)")
    if state == "foreign":
        raise InputError(f"{root} is not an OCI image layout (no oci-layout file)")


def _check_writable(root: Path) -> None:
    """Refuse, before anything is read or sent, a destination the first write would fail on: a file or a
    foreign directory at ``root``, a file on the way to it, a directory this process cannot write."""
    state = _layout_state(root)
    if state == "foreign":
        what = "a file" if not root.is_dir() else "a non-empty directory without an oci-layout file"
        raise InputError(f"{root} is {what}, not an OCI image layout: refusing to write there")
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write an OCI layout at {root}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write an OCI layout at {root}: {existing} is not writable")


def _init_layout(root: Path) -> None:
    """Create ``oci-layout``, an empty ``index.json`` and ``blobs/`` where missing (under the flock)."""
    state = _layout_state(root)
    if state == "foreign":
        raise InputError(f"{root} is a non-empty directory but not an OCI image layout; refusing to write into it")
    if state == "absent":
        _write_atomic(root / _LAYOUT_FILE, _LAYOUT_BYTES)
    if not (root / _INDEX_FILE).exists():
        _write_atomic(root / _INDEX_FILE, _EMPTY_INDEX)
    (root / "blobs").mkdir(exist_ok=True)


# --- index.json ------------------------------------------------------------------------------------------


def _read_index(root: Path) -> dict[str, Any]:
    """index.json as a dict with a ``manifests`` list of objects (an empty index if the file is missing)."""
    path = root / _INDEX_FILE
    try:
        raw = _read_capped(path, INDEX_JSON_LIMIT, f"{path}")
    except FileNotFoundError:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({_one_line(exc)})") from None
    if not isinstance(body, dict):
        raise ManifestError(f"{path} is not a JSON object")
    manifests = body.get("manifests")
    if not isinstance(manifests, list):
        raise ManifestError(f"{path} has no 'manifests' list")
    for position, entry in enumerate(manifests):
        if not isinstance(entry, dict):
            raise ManifestError(f"{path}: manifests[{position}] is not a JSON object")
    return body


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None


def _find_entry(root: Path, ref: str) -> Descriptor | None:
    """The last index.json entry for ``ref`` (a :class:`Digest`, or a tag matched exactly)."""
    if isinstance(ref, Digest):
        matches = [e for e in _read_index(root)["manifests"] if e.get("digest") == ref]
    else:
        matches = [e for e in _read_index(root)["manifests"] if _ref_name(e) == ref]
    if not matches:
        return None
    try:
        return Descriptor.model_validate(matches[-1])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "entry"
        raise ManifestError(f"{root / _INDEX_FILE}: entry for {ref!r} is invalid: {where}: {first['msg']}") from None


def _rewrite_index(root: Path, mutate: Callable[[Entries], bool]) -> None:
    """Read index.json, let ``mutate`` edit its entries in place, write it back if it says it changed them."""
    index = _read_index(root)
    if mutate(index["manifests"]):
        _write_atomic(root / _INDEX_FILE, json.dumps(index, separators=(",", ":"), ensure_ascii=False).encode())


def _set_tag(entry: dict[str, Any], tag: str, manifests: Entries) -> bool:
    """Make ``entry`` the only one carrying ``tag`` (unchanged when it already is)."""
    if [m for m in manifests if _ref_name(m) == tag] == [entry]:
        return False
    manifests[:] = [m for m in manifests if _ref_name(m) != tag]
    manifests.append(entry)
    return True


def _add_untagged(entry: dict[str, Any], manifests: Entries) -> bool:
    """List ``entry`` unless its digest already is."""
    if any(m.get("digest") == entry["digest"] for m in manifests):
        return False
    manifests.append(entry)
    return True


def _index_entry(manifest: Manifest, tag: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(manifest.digest), "size": manifest.size}
    if manifest.view.artifact_type:
        entry["artifactType"] = manifest.view.artifact_type
    if tag is not None:
        entry["annotations"] = {REF_NAME: tag}
    return entry


def _manifest_ref(reference: str) -> str:
    """A tag or a :class:`Digest` (anything with ':' must be a digest), validated before any path is built."""
    if ":" in reference:
        return Digest(reference)
    return validate_tag(reference)


# --- the store -------------------------------------------------------------------------------------------

_LOCKS: RunVar[dict[str, anyio.Lock]] = RunVar("ocicopy.layout.locks")


def _lock_for(key: str) -> anyio.Lock:
    """The in-process lock of one layout directory, shared by every :class:`Layout` on this event loop."""
    locks = _LOCKS.get(None)
    if locks is None:
        locks = {}
        _LOCKS.set(locks)
    if key not in locks:
        locks[key] = anyio.Lock()
    return locks[key]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# --- blob files: content-addressed, complete and verified or absent --------------------------------------


class FileSink:
    """A blob on its way into a file: hashed and size-checked as it comes, then fsynced and renamed into place."""

    def __init__(self, final: Path, digest: Digest, size: int) -> None:
        self.final = final
        self.verifier = Verifier(Digest(digest), size)
        self._tmp = final.with_name(_TMP_PREFIX + secrets.token_hex(8))
        self._handle: BinaryIO | None = None
        self._pending = bytearray()
        self._done = False

    async def open(self) -> None:
        await _io(partial(self.final.parent.mkdir, parents=True, exist_ok=True))
        self._handle = await _io(_create, self._tmp)

    async def write(self, chunk: bytes) -> None:
        self.verifier.update(chunk)  # raises as soon as the bytes run past the expected size
        self._pending += chunk
        if len(self._pending) >= CHUNK_SIZE:
            await self._flush()

    async def _flush(self) -> None:
        if self._pending and self._handle is not None:
            await _io(self._handle.write, bytes(self._pending))
            self._pending.clear()

    async def commit(self) -> None:
        await self._flush()
        self.verifier.check()
        assert self._handle is not None
        await _io(_commit, self._handle, self._tmp, self.final)
        self._done = True

    async def abort(self) -> None:
        if not self._done:
            self._done = True
            await _io(_discard, self._handle, self._tmp)


class BlobFiles:
    """Blobs as files ``<root>/<alg>/<hex>``: sizes, streamed reads, verified atomic writes.

    Paths are built only from validated :class:`Digest` values, so ``sha256:../..`` never reaches the file
    system. Used by :class:`Layout` (``blobs/``) and by the recompression spool.
    """

    def __init__(self, root: Path, not_found: Callable[[str], NotFoundError]) -> None:
        self.root = root
        self._not_found = not_found

    def path(self, digest: Digest) -> Path:
        checked = Digest(digest)  # a plain str is validated here too
        return self.root / checked.algorithm / checked.hex

    async def size(self, digest: Digest) -> int | None:
        return await _io(_file_size, self.path(digest))

    async def read(
        self, digest: Digest, offset: int = 0, before: Callable[[], None] | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset``, in chunks of :data:`CHUNK_SIZE` (``before`` runs first, in the worker
        thread: the layout checks it is one)."""
        path = self.path(digest)  # validated first
        if offset < 0:
            raise InputError(f"negative blob offset {offset}")
        handle = await _io(self._open, path, digest, offset, before)
        try:
            while chunk := await _io(handle.read, CHUNK_SIZE):
                yield chunk
        finally:
            handle.close()

    def _open(self, path: Path, digest: Digest, offset: int, before: Callable[[], None] | None) -> BinaryIO:
        if before is not None:
            before()
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise self._not_found(f"blob unknown: {digest}") from None
        handle.seek(offset)
        return handle

    @asynccontextmanager
    async def sink(self, digest: Digest, size: int) -> AsyncIterator[FileSink]:
        """A :class:`FileSink` for the blob; the temp file is removed unless committed (cancellation too)."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InputError(f"invalid blob size {size!r}")
        sink = FileSink(self.path(digest), digest, size)
        try:
            await sink.open()
            yield sink
        finally:
            with anyio.CancelScope(shield=True):
                await sink.abort()


class Layout:
    """An OCI image layout directory: the :class:`~ocicopy.store.Store` verbs plus tags and entries."""

    def __init__(self, path: str | Path, *, limits: Limits | None = None) -> None:
        if not str(path) or "\x00" in str(path):
            raise InputError(f"invalid layout path {str(path)!r}: empty or containing a NUL character")
        self.root = Path(os.path.normpath(Path(path).expanduser().absolute()))
        self.limits = limits or Limits()
        self.files = BlobFiles(self.root / "blobs", self._not_found)
        self._lock_key: str | None = None
        self._ready = False  # created (or found) and version-checked, for writing

    @property
    def host(self) -> str:
        """``oci:`` + the absolute path: blobs are shared within one layout."""
        return LAYOUT_SCHEME + str(self.root)

    @property
    def repository(self) -> str:
        return ""

    def __str__(self) -> str:
        return self.host

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    def _blob_path(self, digest: Digest) -> Path:
        return self.files.path(digest)

    def _not_found(self, message: str) -> NotFoundError:
        return UnknownReferenceError(str(self), message, method="READ", status=0)  # a directory: no HTTP status

    async def state(self) -> str:
        """``layout``, ``absent`` (no directory, or an empty one) or ``foreign`` (a directory that is not one)."""
        return await _io(_layout_state, self.root)

    # manifests

    async def manifest_head(self, reference: str) -> ManifestInfo | None:
        """Digest, media type and size of a tagged or stored manifest; None if absent (or no layout).

        A digest not listed in index.json is read to learn its media type: a blob there that is not a
        manifest, or that does not match its digest, raises rather than passing as absent.
        """
        ref = _manifest_ref(reference)
        return await _io(self._head, ref)

    def _head(self, ref: str) -> ManifestInfo | None:
        if _layout_state(self.root) != "layout":
            return None
        descriptor = _find_entry(self.root, ref)
        if descriptor is None and not isinstance(ref, Digest):
            return None
        digest = descriptor.digest if descriptor is not None else Digest(ref)
        size = _file_size(self._blob_path(digest))
        if size is None or (descriptor is not None and descriptor.size != size):
            return None  # missing or truncated blob: absent, so that a copy writes it again
        media_type = descriptor.media_type if descriptor is not None else self._load(digest, None).media_type
        return ManifestInfo(digest, media_type, size)

    async def manifest_get(self, reference: str) -> Manifest:
        """The manifest's exact bytes, verified against its digest (and its index.json size)."""
        ref = _manifest_ref(reference)
        return await _io(self._get, ref)

    def _get(self, ref: str) -> Manifest:
        _require_layout(self.root)
        descriptor = _find_entry(self.root, ref)
        if descriptor is None and not isinstance(ref, Digest):
            raise self._not_found(f"manifest unknown: no tag {ref!r} in the layout")
        if descriptor is None:
            return self._load(Digest(ref), None)
        manifest = self._load(descriptor.digest, descriptor.media_type)
        if manifest.size != descriptor.size:
            raise DigestMismatchError(
                descriptor.digest, None, manifest.size, descriptor.size, "size differs from index.json", str(self)
            )
        return manifest

    def _load(self, digest: Digest, media_type: str | None) -> Manifest:
        try:
            raw = _read_capped(self._blob_path(digest), self.limits.manifest_bytes, f"manifest {digest}")
        except FileNotFoundError:
            raise self._not_found(f"manifest unknown: no blob {digest}") from None
        return parse_manifest(raw, media_type, digest)

    async def manifest_put(self, reference: str, manifest: Manifest, *, root: bool = True) -> bool:
        """Store the exact bytes as a blob, then (tag, or digest with ``root``) list them in index.json.

        A tag replaces every entry carrying it; a digest is listed once, untagged. ``root=False`` (an index's
        child) writes the blob only. The caller writes the blobs the manifest names first. Returns False: a
        layout indexes no subjects (the pusher keeps the fallback tag, see :mod:`ocicopy.subjects`).
        """
        tag = self._put_tag(reference, manifest)
        await self.write_blob(manifest.digest, manifest.size, _once(manifest.raw))
        if tag is None and not root:
            return False
        entry = _index_entry(manifest, tag)
        mutate = partial(_set_tag, entry, tag) if tag is not None else partial(_add_untagged, entry)
        await self._exclusive(partial(_rewrite_index, self.root, mutate))
        return False

    def _put_tag(self, reference: str, manifest: Manifest) -> str | None:
        """The validated tag, or None for a digest reference (which must be the manifest's own)."""
        ref = _manifest_ref(reference)
        if not isinstance(ref, Digest):
            return ref
        if ref != manifest.digest:
            raise InputError(f"cannot store manifest {manifest.digest} under another digest, {ref}")
        return None

    async def tags(self) -> list[str]:
        """The ref.name values of index.json, once each, in index order ([] without a layout)."""
        return await _io(self._tags)

    def _tags(self) -> list[str]:
        if _layout_state(self.root) != "layout":
            return []
        names = (_ref_name(entry) for entry in _read_index(self.root)["manifests"])
        return list(dict.fromkeys(name for name in names if name is not None))

    async def entries(self) -> list[Descriptor]:
        """The descriptors index.json lists (tagged or not), in index order ([] without a layout)."""
        return await _io(self._entries)

    def _entries(self) -> list[Descriptor]:
        if _layout_state(self.root) != "layout":
            return []
        try:
            return [Descriptor.model_validate(e) for e in _read_index(self.root)["manifests"]]
        except ValueError as exc:
            raise ManifestError(f"{self.root / _INDEX_FILE}: invalid descriptor ({_one_line(exc)})") from None

    async def referrers(self, digest: Digest, artifact_type: str | None = None) -> list[Descriptor] | None:
        """None: a layout has no referrers API (the fallback tag scheme works, tags being ref.name entries)."""
        return None

    # blobs

    async def blob_exists(self, digest: Digest) -> int | None:
        """Size of the blob file, or None."""
        return await self.files.size(digest)

    def read_blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset``, in chunks of :data:`CHUNK_SIZE` (the caller verifies them)."""
        return self.files.read(desc.digest, offset, partial(_require_layout, self.root))

    @asynccontextmanager
    async def blob_sink(self, desc: Descriptor, session: UploadSession | None = None) -> AsyncIterator[FileSink]:
        """A verified, atomic write of ``desc`` into ``blobs/`` (the layout is created by the first write)."""
        self.files.path(desc.digest)  # validated before anything is created
        await self._ensure_layout()
        async with self.files.sink(desc.digest, desc.size) as sink:
            yield sink

    async def write_blob(self, digest: Digest, size: int, body: AsyncIterable[bytes]) -> None:
        """Stream ``body`` into ``blobs/<alg>/<hex>``, verified against ``digest`` and ``size``.

        Nothing is read from ``body`` when a file of that size is already there (a file of another size is
        a torn write by some other tool, and is replaced).
        """
        self.files.path(digest)  # validated before anything is created
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InputError(f"invalid blob size {size!r}")
        await self._ensure_layout()
        if await self.files.size(digest) == size:
            return
        async with self.files.sink(digest, size) as sink:
            async for chunk in body:
                await sink.write(chunk)
            await sink.commit()

    # creation and locking

    async def check_writable(self) -> None:
        """Raise :class:`~ocicopy.errors.InputError` when the first write here would fail on the path itself (a
        file, a foreign directory, a file on the way, no write permission): checked before a copy reads its
        source."""
        await _io(_check_writable, self.root)

    async def _ensure_layout(self) -> None:
        if not self._ready:
            await self._exclusive(partial(_init_layout, self.root))
            self._ready = True

    async def _exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread under the layout's in-process lock and its directory flock."""
        if self._lock_key is None:
            self._lock_key = await _io(_make_root, self.root)
        async with _lock_for(self._lock_key):
            return await _io(_with_flock, self.root, fn)


def _create(path: Path) -> BinaryIO:
    return path.open("xb")


def _commit(handle: BinaryIO, tmp: Path, final: Path) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    tmp.replace(final)
    _fsync_dir(final.parent)


def _discard(handle: BinaryIO | None, tmp: Path) -> None:
    if handle is not None:
        handle.close()
    tmp.unlink(missing_ok=True)
