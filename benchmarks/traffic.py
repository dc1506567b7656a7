"""What a registry answered during a measured run, from its JSON access log: requests by class, bytes, uploads.

:func:`classify` names a request's class (``blob HEAD``, ``blob HEAD 404``, ``mount``, ``upload PUT``,
``manifest GET``…); :class:`Traffic` adds up the entries of one run; :func:`traffic` reads them between two
marks of a :class:`~harness.registry.RegistryServer` (and counts the client connections they came on).
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from harness.registry import MARK_PARAM, AccessEntry, RegistryServer


def classify(e: AccessEntry) -> str:
    """The request's class: ``blob HEAD``, ``upload PUT``, ``mount``, ``manifest GET``…; misses get `` 404``."""
    path = e.path
    if path.rstrip("/") == "/v2":
        return "ping"
    if "/blobs/uploads/" in path:
        if e.method == "POST" and e.param("mount") is not None:
            return "mount" if e.status == 201 else "mount declined"
        return f"upload {e.method}"
    for part, what in (("/blobs/", "blob"), ("/manifests/", "manifest"), ("/tags/", "tags")):
        if part in path:
            kind = f"{what} {e.method}"
            return f"{kind} 404" if e.status == 404 else kind
    return "other"


@dataclass
class Traffic:
    """What one registry answered during one measured run, from its access log."""

    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    blob_gets: dict[str, int] = field(default_factory=dict)  # digest -> full GETs answered 200
    bytes_out: int = 0  # response bodies of blob and manifest GETs
    uploads: dict[str, int] = field(default_factory=dict)  # digest -> uploads committed (PUT ?digest= 201)
    upload_repos: dict[str, str] = field(default_factory=dict)  # digest -> a repository it was uploaded to
    errors: int = 0  # answers >= 400 other than a 404 to a HEAD or GET (a read of something absent)
    connections: int = 0  # distinct client address:port pairs (in a linked profile: the emulator's connections)

    @classmethod
    def of(cls, entries: Iterable[AccessEntry]) -> Traffic:
        t = cls()
        kinds: Counter[str] = Counter()
        for e in entries:
            t.requests += 1
            kind = classify(e)
            kinds[kind] += 1
            if e.status >= 400 and not (e.method in ("HEAD", "GET") and e.status == 404):
                t.errors += 1
            if e.method == "GET" and kind in ("blob GET", "manifest GET"):
                t.bytes_out += e.bytes_written
                if kind == "blob GET" and e.status == 200:
                    digest = e.path.rsplit("/", 1)[1]
                    t.blob_gets[digest] = t.blob_gets.get(digest, 0) + 1
            if kind == "upload PUT" and e.status == 201 and (committed := e.param("digest")):
                t.uploads[committed] = t.uploads.get(committed, 0) + 1
                t.upload_repos.setdefault(committed, e.repo or "")
        t.by_kind = dict(sorted(kinds.items()))
        return t

    @property
    def max_gets_per_blob(self) -> int:
        return max(self.blob_gets.values(), default=0)

    def uploaded_bytes(self, sizes: dict[str, int]) -> int:
        return sum(sizes.get(d, 0) * n for d, n in self.uploads.items())

    def as_json(self, sizes: dict[str, int]) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_kind": self.by_kind,
            "errors": self.errors,
            "connections": self.connections,
            "bytes_out": self.bytes_out,
            "blob_gets": sum(self.blob_gets.values()),
            "distinct_blobs_fetched": len(self.blob_gets),
            "max_gets_per_blob": self.max_gets_per_blob,
            "uploads": sum(self.uploads.values()),
            "max_uploads_per_blob": max(self.uploads.values(), default=0),
            "uploaded_bytes": self.uploaded_bytes(sizes),
        }


def connections(log: bytes) -> int:
    """Distinct client ``address:port`` pairs of the response records in ``log`` (the marks left out)."""
    peers = set()
    for line in log.splitlines():
        if line.startswith(b"{") and b'"msg":"response completed' in line and MARK_PARAM.encode() not in line:
            with contextlib.suppress(ValueError):
                peers.add(json.loads(line).get("http.request.remoteaddr"))
    return len(peers - {None})


def traffic(server: RegistryServer, since: int) -> Traffic:
    """The requests answered since ``mark()`` returned ``since``, and the connections they came on."""
    t = Traffic.of(server.requests(since))
    with server.log_path.open("rb") as f:
        f.seek(since)
        t.connections = connections(f.read())
    return t
