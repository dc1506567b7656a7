"""A ledger kept in the mirror registry itself: where blobs are (so mounts work across runs and processes), which
repositories ocicopy wrote, the recompressions it made, and the mirror history (per mirror tag a run wrote: when,
for which deployments, the digests it held before; :mod:`ocicopy.history`, what ``prune`` decides from). Safe with
any number of concurrent writers.

Why: a fresh process mirroring into a populated mirror knows nothing of where blobs already are, and the
distribution API has no "which repositories hold this digest" query. Each run records what it placed or found
in small OCI artifacts in the mirror (repository ``{prefix}/ocicopy-ledger``, artifactType
``application/vnd.ocicopy.ledger.v1``, one JSON layer, :class:`LedgerDoc`).

Concurrent writers (a registry has no compare-and-swap, and often refuses DELETE): every run that has something
to record first pushes its own entries as a **shard** under a tag of its own (``shard-<run id>``), which no
other writer touches, so nothing a run recorded is ever lost. It then **folds** every shard it can see into the
**head** (tag ``blobs-v1``: the union, listing the shards it folded) by read-merge-write. Two runs folding at
once may overwrite each other's head: harmless, since a reader takes the head plus every shard the head does not
list (``tags/list``), so what it sees is the exact union of everything written. A shard folded into the head
and older than :data:`SHARD_GRACE` is deleted where the registry allows it (best effort; a fold slower than half
that is abandoned, so no head written later can lack it); where DELETE is refused, shards accumulate: one tag per
run that recorded something.

Cost, in requests: reading is lazy (only when a blob has to be placed; a warm run never reads it, except with
``compress``, where recorded conversions decide skips): head manifest + its JSON + the tag list = 3, plus 2 per
shard not yet folded. Writing, at the end of a run that recorded something: the shard (HEAD config, upload of the
JSON: HEAD/POST/PUT, manifest PUT) ≈ 5, then the fold (the read above, the head's JSON upload and manifest PUT)
≈ 7, then one DELETE per old folded shard. Each blob then costs a single 201 mount instead of GET + PUT.

Blob locations are hints, never trusted for correctness: a stale entry costs one declined mount (202) and the
blob is uploaded as usual; they are capped per blob (:data:`MAX_REPOS_PER_BLOB`). Repositories and conversions
are exact (within :data:`MAX_LEDGER_BYTES`). Entries are validated (digest, repository and tag grammar) when
read. Conversions are trusted as much as the mirror holding them: a layer's is used only when its recorded
``diffId`` is the one the image's config lists, and a mirror tag is skipped when it holds the recorded
conversion of its source manifest (whoever can rewrite the ledger can rewrite the mirror's tags as well).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, TypeVar

import anyio

from ocicopy.digest import Digest, is_digest
from ocicopy.errors import InputError, OcicopyError, unwrap_group
from ocicopy.history import TagRecord, decode_tags, encode_tags
from ocicopy.history import merge as merge_records
from ocicopy.models import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER_ZSTD,
    Descriptor,
    ImageManifest,
    Manifest,
    compact_manifest,
)
from ocicopy.reference import validate_repository, validate_tag
from ocicopy.registry import Registry, read_blob
from ocicopy.repository import Endpoint
from ocicopy.transform import Conversion
from ocicopy.tree import put_manifest

_RUN_TIME: Final = "%Y%m%dT%H%M%SZ"
LEDGER_TAG: Final = "blobs-v1"
SHARD_PREFIX: Final = "shard-"
ARTIFACT_TYPE: Final = "application/vnd.ocicopy.ledger.v1"
LAYER_TYPE: Final = "application/vnd.ocicopy.ledger.v1+json"
FORMAT: Final = 2
EMPTY_CONFIG: Final = b"{}"
MAX_LEDGER_BYTES: Final = 8 * 1024 * 1024
MAX_REPOS_PER_BLOB: Final = 4
MAX_SHARDS_READ: Final = 500  # shards read per load beyond the head; more are folded by later runs
#: A folded shard is deleted once it is this old (seconds since it was written); a fold slower than half of it
#: is abandoned, so that no head written later can lack a deleted shard's entries.
SHARD_GRACE: Final = 3600.0
#: What a recorded conversion may be: a zstd layer, or the OCI manifest/index rewritten around converted layers.
CONVERTED_TYPES: Final = frozenset({OCI_LAYER_ZSTD, OCI_NONDIST_LAYER_ZSTD, OCI_MANIFEST, OCI_INDEX})


def new_run_id(now: datetime | None = None) -> str:
    """A run id: UTC time (sortable) and 32 random bits, valid in a tag: ``20261201T233000Z-1a2b3c4d``."""
    return f"{(now or datetime.now(UTC)).strftime(_RUN_TIME)}-{secrets.token_hex(4)}"


def shard_time(tag: str) -> float | None:
    """When the shard ``shard-<run id>`` was written (UNIX time from its run id), or None for another tag."""
    if not tag.startswith(SHARD_PREFIX):
        return None
    stamp = tag[len(SHARD_PREFIX) :].split("-", 1)[0]
    try:
        return datetime.strptime(stamp, _RUN_TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass
class LedgerDoc:
    """One ledger document (a head or a shard): pure data, merged by union."""

    blobs: dict[Digest, list[str]] = field(default_factory=dict)
    converted: dict[Digest, Conversion] = field(default_factory=dict)
    repositories: set[str] = field(default_factory=set)
    tags: dict[str, TagRecord] = field(default_factory=dict)  # mirror history, by "repository:tag"
    folded: set[str] = field(default_factory=set)  # shard tags whose entries this document holds
    run: str | None = None  # the run that wrote it (a shard)

    def record(self, digest: Digest, repository: str) -> bool:
        """Note that ``repository`` holds ``digest``, newest first; True when that is news."""
        self.repositories.add(repository)
        repos = self.blobs.setdefault(digest, [])
        if repository in repos:
            return False
        repos.insert(0, repository)
        del repos[MAX_REPOS_PER_BLOB:]
        return True

    def record_tag(self, record: TagRecord) -> None:
        known = self.tags.get(record.key)
        self.tags[record.key] = merge_records(known, record) if known is not None else record
        self.repositories.add(record.repository)

    def merge(self, other: LedgerDoc) -> None:
        """Add ``other``'s entries; this document's come first where order matters (blob locations)."""
        for record in other.tags.values():
            self.record_tag(record)
        for source, conversion in other.converted.items():
            self.converted.setdefault(source, conversion)
        for digest, repos in other.blobs.items():
            known = self.blobs.setdefault(digest, [])
            known.extend(r for r in repos if r not in known)
            del known[MAX_REPOS_PER_BLOB:]
        self.repositories |= other.repositories | {r for repos in other.blobs.values() for r in repos}
        self.folded |= other.folded

    def encode(self) -> bytes:
        """Canonical JSON (sorted), under :data:`MAX_LEDGER_BYTES`: the oldest blob locations go first when over."""
        blobs = dict(self.blobs)
        while True:
            doc: dict[str, Any] = {"version": FORMAT, "blobs": blobs, "repositories": sorted(self.repositories)}
            if self.converted:
                doc["converted"] = {k: _conversion_entry(c) for k, c in self.converted.items()}
            if self.tags:
                doc["tags"] = encode_tags(self.tags.values())
            if self.folded:
                doc["folded"] = sorted(self.folded)
            if self.run is not None:
                doc["run"] = self.run
            data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
            if len(data) <= MAX_LEDGER_BYTES or not blobs:
                return data
            for key in list(blobs)[: max(1, len(blobs) // 10)]:
                del blobs[key]

    @classmethod
    def decode(cls, data: bytes) -> LedgerDoc:
        """An untrusted document: only valid digests, repositories, tags and zstd descriptors survive."""
        doc = _load(data)
        blobs = _blobs(doc)
        repositories = {
            r for r in doc.get("repositories") or [] if isinstance(r, str) and _valid(validate_repository, r)
        }
        folded = {t for t in doc.get("folded") or [] if isinstance(t, str) and _valid(validate_tag, t)}
        run = doc.get("run")
        tags = decode_tags(doc.get("tags"))
        return cls(
            blobs=blobs,
            converted=_conversions(doc),
            repositories=repositories
            | {r for repos in blobs.values() for r in repos}
            | {t.repository for t in tags.values()},
            tags=tags,
            folded=folded,
            run=run if isinstance(run, str) and len(run) <= 100 else None,
        )


class Ledger:
    """The mirror's ledger: loaded lazily, recorded during a run, saved (shard, then fold) at its end."""

    def __init__(self, registry: Registry, repository: str, run_id: str | None = None) -> None:
        self.registry = registry
        self.repository = validate_repository(repository)
        self.run_id = run_id or new_run_id()
        self.known = LedgerDoc()  # everything seen: stored ledger + this run
        self.mine = LedgerDoc(run=self.run_id)  # what this run recorded (its shard)
        self.reads = 0
        self.deleted_shards = 0
        self._loaded = False
        self._lock = anyio.Lock()

    @property
    def shard_tag(self) -> str:
        return SHARD_PREFIX + self.run_id

    @property
    def blobs(self) -> dict[Digest, list[str]]:
        return self.known.blobs

    @property
    def added(self) -> bool:
        return bool(self.mine.blobs or self.mine.converted or self.mine.tags)

    async def candidates(self, host: str, digest: Digest) -> Sequence[str]:
        """Repositories of ``host`` that held ``digest`` (a :data:`~ocicopy.blobs.MountHints` callable)."""
        if host != self.registry.host:
            return ()
        await self.load()
        return tuple(self.known.blobs.get(digest, ()))

    async def repositories(self) -> set[str]:
        """Every repository of the mirror that ocicopy has written to (exact)."""
        await self.load()
        return set(self.known.repositories)

    def record(self, digest: Digest, repository: str) -> None:
        if self.mine.record(digest, repository):
            self.known.record(digest, repository)

    def record_tag(self, record: TagRecord) -> None:
        """This run wrote a mirror tag (:mod:`ocicopy.history`)."""
        self.mine.record_tag(record)
        self.known.record_tag(record)

    async def history(self) -> dict[str, TagRecord]:
        """Every mirror tag ocicopy recorded writing in this mirror, by ``repository:tag``."""
        await self.load()
        return dict(self.known.tags)

    def record_conversion(self, conversion: Conversion) -> None:
        if self.known.converted.get(conversion.source) != conversion:
            self.known.converted[conversion.source] = conversion
            self.mine.converted[conversion.source] = conversion

    async def conversions(self) -> list[Conversion]:
        """Recompressions recorded by earlier runs (hints: a conversion is used only if its blob is there)."""
        await self.load()
        return list(self.known.converted.values())

    async def load(self) -> None:
        async with self._lock:
            if not self._loaded:
                stored, _ = await self._read()
                self.known.merge(stored)
                self._loaded = True

    async def save(self) -> bool:
        """Push this run's shard, then fold every visible shard into the head; True if anything was written."""
        if not self.added:
            return False
        started = time.monotonic()
        # The shard and the read for the fold go at once; the head is written only once the shard is there.
        stored, shard_tags = await _both(self._write(self.shard_tag, self.mine.encode()), self._read())
        merged = LedgerDoc(folded={self.shard_tag})
        merged.merge(self.mine)  # ours are the newest: first
        merged.merge(stored)
        merged.folded &= {*shard_tags, self.shard_tag}  # a deleted shard never comes back (run ids are unique)
        stored = merged
        if time.monotonic() - started < SHARD_GRACE / 2:  # a slow fold could overwrite a newer head
            await self._write(LEDGER_TAG, stored.encode())
            await self._delete_old(stored, shard_tags)
        self.known.merge(stored)
        self.mine = LedgerDoc(run=self.run_id)
        return True

    async def _read(self) -> tuple[LedgerDoc, list[str]]:
        """The head merged with every shard it does not fold (and now folds), and every shard tag there is."""
        self.reads += 1
        head = await self._read_doc(LEDGER_TAG) or LedgerDoc()
        tags = await self._shard_tags()
        merged = LedgerDoc()
        unfolded = [t for t in tags if t not in head.folded and t != self.shard_tag][-MAX_SHARDS_READ:]
        for tag in reversed(unfolded):  # the newest first: blob locations are tried in this order
            doc = await self._read_doc(tag)
            if doc is not None:
                merged.merge(doc)
                merged.folded.add(tag)
        merged.merge(head)
        return merged, tags

    async def _shard_tags(self) -> list[str]:
        try:
            tags = await self.registry.tags(self.repository)
        except OcicopyError:
            return []  # unreadable: the head alone (hints; a later run reads the shards)
        return sorted(t for t in tags or [] if t.startswith(SHARD_PREFIX))

    async def _read_doc(self, tag: str) -> LedgerDoc | None:
        try:
            manifest = await self.registry.manifest_get(self.repository, tag)
        except OcicopyError:
            return None  # absent (404) or unreadable: nothing from it
        layers = manifest.blobs()[1:]
        if not layers or layers[0].media_type != LAYER_TYPE or layers[0].size > MAX_LEDGER_BYTES:
            return None
        try:
            return LedgerDoc.decode(await read_blob(self.registry, self.repository, layers[0].digest, MAX_LEDGER_BYTES))
        except OcicopyError:
            return None

    async def _write(self, tag: str, data: bytes) -> None:
        """Push ``data`` as the artifact at ``tag``: its two blobs at once (the shared empty config only when a HEAD
        misses it; the JSON, unique to this write, without a HEAD), then the manifest."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._upload, EMPTY_CONFIG, True)
            tg.start_soon(self._upload, data, False)
        again = {Digest.of(b): partial(self._upload, b, False) for b in (EMPTY_CONFIG, data)}
        # Concurrent runs upload the shared empty config at once: distribution's blob-link race (tree.py).
        await put_manifest(Endpoint(self.registry, self.repository), tag, _manifest(data), again)

    async def _upload(self, blob: bytes, unless_there: bool) -> None:
        digest = Digest.of(blob)
        if unless_there and await self.registry.blob_exists(self.repository, digest) is not None:
            return
        session = await self.registry.start_upload(self.repository)
        assert session is not None
        await self.registry.upload(session, digest, len(blob), _once(blob))

    async def _delete_old(self, head: LedgerDoc, tags: list[str]) -> None:
        """Delete shards the head folds that were written more than :data:`SHARD_GRACE` ago (the time is in the
        tag, the writer's clock), where the registry allows it."""
        now = time.time()
        for tag in tags:
            written = shard_time(tag)
            if tag not in head.folded or written is None or now - written < SHARD_GRACE:
                continue
            try:
                manifest = await self.registry.manifest_get(self.repository, tag)
                await self.registry.manifest_delete(self.repository, manifest.digest)
            except OcicopyError:
                return  # refused (405 UNSUPPORTED on most registries by default): shards stay, as documented
            self.deleted_shards += 1


def _manifest(data: bytes) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY, "digest": Digest.of(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": Digest.of(data), "size": len(data)}],
    }
    manifest = compact_manifest(doc, OCI_MANIFEST)
    assert isinstance(manifest.view, ImageManifest)
    return manifest


def _conversion_entry(conversion: Conversion) -> dict[str, Any]:
    entry: dict[str, Any] = conversion.converted.model_dump(mode="json", by_alias=True, exclude_none=True)
    if conversion.diff_id is not None:
        entry["diffId"] = str(conversion.diff_id)
    return entry


def _conversions(doc: dict[str, Any]) -> dict[Digest, Conversion]:
    """The ``converted`` table of an untrusted ledger: valid digests and zstd descriptors only."""
    table = doc.get("converted")
    if not isinstance(table, dict):
        return {}
    out: dict[Digest, Conversion] = {}
    for key, value in table.items():
        if not (isinstance(key, str) and is_digest(key) and isinstance(value, dict)):
            continue
        value = dict(value)
        diff_id = value.pop("diffId", None)
        try:
            desc = Descriptor.model_validate(value)
        except ValueError:
            continue
        if desc.media_type in CONVERTED_TYPES and (
            diff_id is None or (isinstance(diff_id, str) and is_digest(diff_id))
        ):
            out[Digest(key)] = Conversion(Digest(key), desc, Digest(diff_id) if diff_id is not None else None)
    return out


def _load(data: bytes) -> dict[str, Any]:
    """An untrusted ledger's JSON document when it is a version 1 or 2 object, else an empty one."""
    try:
        doc: Any = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("version") in (1, FORMAT) else {}


def _decode(data: bytes) -> dict[Digest, list[str]]:
    """Parse an untrusted ledger's blob locations: only valid digests and repository names survive."""
    return _blobs(_load(data))


def _blobs(doc: dict[str, Any]) -> dict[Digest, list[str]]:
    if not isinstance(doc.get("blobs"), dict):
        return {}
    out: dict[Digest, list[str]] = {}
    for key, repos in doc["blobs"].items():
        if isinstance(key, str) and is_digest(key) and isinstance(repos, list):
            valid = [r for r in repos if isinstance(r, str) and _valid(validate_repository, r)]
            if valid:
                out[Digest(key)] = valid[:MAX_REPOS_PER_BLOB]
    return out


def _valid(check: Any, name: str) -> bool:
    try:
        check(name)
    except InputError:
        return False
    return True


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


T = TypeVar("T")


async def _both(first: Awaitable[object], second: Awaitable[T]) -> T:
    """Await two steps at once; the second's result. A failure of either is raised as itself (not a group)."""
    out: list[T] = []

    async def keep() -> None:
        out.append(await second)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_await, first)
            tg.start_soon(keep)
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    return out[0]


async def _await(step: Awaitable[object]) -> None:
    await step
