"""A blob-location ledger kept in the mirror registry, so mounts work across runs and processes.

Why: a fresh process mirroring into a populated mirror knows nothing of where blobs already are, and the
distribution API has no "which repositories hold this digest" query. Trying a mount from every repository of
the plan would cost up to one request per repository per blob. Instead, each run records where it placed or
found blobs in a small OCI artifact in the mirror itself (``{prefix}/ocicopy-ledger:blobs-v1``, artifactType
``application/vnd.ocicopy.ledger.v1``, one JSON layer ``{"version": 1, "blobs": {digest: [repo, ...]},
"converted": {source digest: descriptor}}``). ``converted`` records recompressions (gzip layer → its zstd
blob, source manifest → the rewritten one), so a later run neither recompresses a layer it already converted
nor misses that a mirror tag already holds the conversion of its source.

Cost, in requests: reading is lazy (only when a blob actually has to be placed, so a warm run never reads
it — except with ``compress``, where the recorded conversions decide the skips): manifest GET + blob GET = 2
per run. Writing, at the end of a run that placed blobs: manifest GET + blob GET (merge with what others wrote
meanwhile) + HEAD/POST/PUT for the new JSON blob (+ the 2-byte empty config once) + manifest PUT ≈ 6 per run.
Each blob then costs a HEAD and one 201 mount instead of GET + PUT.

Blob locations are hints, never trusted for correctness: a stale entry costs one declined mount (202) and the blob is
uploaded as usual. Concurrent writers may drop each other's newest entries (last write wins); later runs add
them back. Entries are validated (digest and repository grammar) when read; the ledger is capped in size.
Conversions are trusted as much as the mirror holding them: a layer's is used only when its recorded
``diffId`` is the one the image's config lists, and a mirror tag is skipped when it holds the recorded
conversion of its source manifest (whoever can rewrite the ledger can rewrite the mirror's tags as well).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import anyio

from ocicopy.digest import Digest, is_digest
from ocicopy.errors import InputError, OcicopyError
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
from ocicopy.reference import validate_repository
from ocicopy.registry import Registry, read_blob
from ocicopy.transform import Conversion

LEDGER_TAG: Final = "blobs-v1"
ARTIFACT_TYPE: Final = "application/vnd.ocicopy.ledger.v1"
LAYER_TYPE: Final = "application/vnd.ocicopy.ledger.v1+json"
EMPTY_CONFIG: Final = b"{}"
MAX_LEDGER_BYTES: Final = 8 * 1024 * 1024
MAX_REPOS_PER_BLOB: Final = 4
#: What a recorded conversion may be: a zstd layer, or the OCI manifest/index rewritten around converted layers.
CONVERTED_TYPES: Final = frozenset({OCI_LAYER_ZSTD, OCI_NONDIST_LAYER_ZSTD, OCI_MANIFEST, OCI_INDEX})


class Ledger:
    """Where blobs are in one mirror registry: loaded lazily, recorded during a run, saved at its end."""

    def __init__(self, registry: Registry, repository: str) -> None:
        self.registry = registry
        self.repository = validate_repository(repository)
        self.blobs: dict[Digest, list[str]] = {}
        #: source layer/manifest digest → its conversion (and, for a layer, its uncompressed digest)
        self.converted: dict[Digest, Conversion] = {}
        self.added = 0
        self.reads = 0
        self._loaded = False
        self._lock = anyio.Lock()

    async def candidates(self, host: str, digest: Digest) -> Sequence[str]:
        """Repositories of ``host`` that held ``digest`` (a :data:`~ocicopy.copier.MountHints` callable)."""
        if host != self.registry.host:
            return ()
        await self.load()
        return tuple(self.blobs.get(digest, ()))

    def record(self, digest: Digest, repository: str) -> None:
        repos = self.blobs.setdefault(digest, [])
        if repository in repos:
            return
        repos.insert(0, repository)
        del repos[MAX_REPOS_PER_BLOB:]
        self.added += 1

    def record_conversion(self, conversion: Conversion) -> None:
        if self.converted.get(conversion.source) != conversion:
            self.converted[conversion.source] = conversion
            self.added += 1

    async def conversions(self) -> list[Conversion]:
        """Recompressions recorded by earlier runs (hints: a conversion is used only if its blob is there)."""
        await self.load()
        return list(self.converted.values())

    async def load(self) -> None:
        async with self._lock:
            if not self._loaded:
                self._merge(await self._read())
                self._loaded = True

    async def save(self) -> bool:
        """Merge with the stored ledger and write it back when this run added entries; True if written."""
        if not self.added:
            return False
        stored = await self._read()
        mine, converted = self.blobs, self.converted
        self.blobs, self.converted = {}, {}
        self._merge(stored)
        for digest, repos in mine.items():  # ours are newer: first
            for repo in reversed(repos):
                self.record(digest, repo)
        self.converted.update(converted)
        await self._write(_encode(self.blobs, self.converted))
        self.added = 0
        return True

    def _merge(self, doc: tuple[dict[Digest, list[str]], dict[Digest, Conversion]]) -> None:
        entries, converted = doc
        for source, desc in converted.items():
            self.converted.setdefault(source, desc)
        for digest, repos in entries.items():
            known = self.blobs.setdefault(digest, [])
            known.extend(r for r in repos if r not in known)
            del known[MAX_REPOS_PER_BLOB:]

    async def _read(self) -> tuple[dict[Digest, list[str]], dict[Digest, Conversion]]:
        self.reads += 1
        try:
            manifest = await self.registry.manifest_get(self.repository, LEDGER_TAG)
        except OcicopyError:
            return {}, {}  # absent (404) or unreadable: start afresh, it is only a hint
        layers = manifest.blobs()[1:]
        if not layers or layers[0].media_type != LAYER_TYPE or layers[0].size > MAX_LEDGER_BYTES:
            return {}, {}
        try:
            data = await read_blob(self.registry, self.repository, layers[0].digest, MAX_LEDGER_BYTES)
            doc = _load(data)
            return _blobs(doc), _conversions(doc)
        except OcicopyError:
            return {}, {}

    async def _write(self, data: bytes) -> None:
        for blob in (EMPTY_CONFIG, data):
            digest = Digest.of(blob)
            if await self.registry.blob_exists(self.repository, digest) is None:
                session = await self.registry.start_upload(self.repository)
                assert session is not None
                await self.registry.upload(session, digest, len(blob), _once(blob))
        await self.registry.manifest_put(self.repository, LEDGER_TAG, _manifest(data))


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


def _encode(blobs: dict[Digest, list[str]], converted: dict[Digest, Conversion] | None = None) -> bytes:
    conv = {k: _conversion_entry(c.converted, c.diff_id) for k, c in (converted or {}).items()}

    def dump() -> bytes:
        doc: dict[str, Any] = {"version": 1, "blobs": blobs}
        if conv:
            doc["converted"] = conv
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    data = dump()
    while len(data) > MAX_LEDGER_BYTES and (blobs or conv):  # drop the oldest entries to stay under the cap
        for table in (blobs, conv):
            for key in list(table)[: max(1, len(table) // 10)]:
                del table[key]
        data = dump()
    return data


def _conversion_entry(desc: Descriptor, diff_id: Digest | None) -> dict[str, Any]:
    entry: dict[str, Any] = desc.model_dump(mode="json", by_alias=True, exclude_none=True)
    if diff_id is not None:
        entry["diffId"] = str(diff_id)
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
    """An untrusted ledger's JSON document when it is a version-1 object, else an empty one."""
    try:
        doc: Any = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) and doc.get("version") == 1 else {}


def _decode(data: bytes) -> dict[Digest, list[str]]:
    """Parse an untrusted ledger's blob locations: only valid digests and repository names survive."""
    return _blobs(_load(data))


def _blobs(doc: dict[str, Any]) -> dict[Digest, list[str]]:
    if not isinstance(doc.get("blobs"), dict):
        return {}
    out: dict[Digest, list[str]] = {}
    for key, repos in doc["blobs"].items():
        if isinstance(key, str) and is_digest(key) and isinstance(repos, list):
            valid = [r for r in repos if isinstance(r, str) and _is_repository(r)]
            if valid:
                out[Digest(key)] = valid[:MAX_REPOS_PER_BLOB]
    return out


def _is_repository(name: str) -> bool:
    try:
        validate_repository(name)
    except InputError:
        return False
    return True


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
