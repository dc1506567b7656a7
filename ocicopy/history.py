"""Mirror history (pure): when ocicopy wrote each mirror tag, for which deployments, and what it held before.

The distribution API has no timestamps and cannot list a repository's untagged revisions, so a run records, for
every mirror tag it writes (``copied``, ``updated``, ``build-pushed``), a :class:`TagRecord` in the mirror's
ledger (:mod:`ocicopy.ledger`, section ``tags``): the digest written, the time (the writer's clock, UTC), the
deployments it was written for (``cluster/service/environment``), and the digests the tag held before (a
moved source tag leaves its old image as an untagged revision that still holds bytes). ``ocicopy prune`` reads
it: "the most recent N" and "older than" mean the records' times, and a tag without a record is not ocicopy's to
remove. Records merge by union (any number of concurrent writers, as the rest of the ledger): for one tag the
newest write wins, deployments and earlier digests are the union.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from ocicopy.digest import Digest, is_digest
from ocicopy.errors import InputError
from ocicopy.reference import validate_repository, validate_tag

__all__ = ["MAX_DEPLOYMENTS", "MAX_PREVIOUS", "TagRecord", "decode_tags", "deployment_key", "encode_tags", "merge"]

MAX_PREVIOUS: Final = 32  # earlier digests kept per tag
MAX_DEPLOYMENTS: Final = 256  # deployments kept per tag
_TIME: Final = "%Y-%m-%dT%H:%M:%SZ"


def deployment_key(cluster: str, service: str, environment: str) -> str:
    """How a record names a deployment: ``cluster/service/environment``."""
    return f"{cluster}/{service}/{environment}"


@dataclass(frozen=True)
class TagRecord:
    """One mirror tag as ocicopy last wrote it."""

    repository: str
    tag: str
    digest: Digest
    written: float  # UNIX seconds (whole), the writer's clock
    deployments: frozenset[str] = field(default_factory=frozenset)
    previous: tuple[Digest, ...] = ()  # digests it held before, sorted (never ``digest``)

    @property
    def key(self) -> str:
        return f"{self.repository}:{self.tag}"


def merge(a: TagRecord, b: TagRecord) -> TagRecord:
    """The union of two records of one tag: the newer write's digest and time (ties: the greater digest, so the
    result does not depend on the order), every deployment, every earlier digest."""
    new, old = (a, b) if (a.written, a.digest) >= (b.written, b.digest) else (b, a)
    previous = sorted({*new.previous, old.digest, *old.previous} - {new.digest})
    deployments = sorted(a.deployments | b.deployments)[:MAX_DEPLOYMENTS]
    return replace(new, deployments=frozenset(deployments), previous=tuple(previous[:MAX_PREVIOUS]))


def encode_tags(records: Iterable[TagRecord]) -> dict[str, Any]:
    """The ledger's ``tags`` section: ``{"repo:tag": {"digest", "written", "deployments", "previous"}}``."""
    out: dict[str, Any] = {}
    for r in sorted(records, key=lambda r: r.key):
        entry: dict[str, Any] = {
            "digest": str(r.digest),
            "written": datetime.fromtimestamp(r.written, UTC).strftime(_TIME),
            "deployments": sorted(r.deployments),
        }
        if r.previous:
            entry["previous"] = [str(d) for d in r.previous]
        out[r.key] = entry
    return out


def decode_tags(section: object) -> dict[str, TagRecord]:
    """An untrusted ``tags`` section: entries with a valid repository, tag, digest and time survive."""
    if not isinstance(section, dict):
        return {}
    out: dict[str, TagRecord] = {}
    for key, entry in section.items():
        record = _record(key, entry)
        if record is not None:
            out[record.key] = merge(out[record.key], record) if record.key in out else record
    return out


def _record(key: object, entry: object) -> TagRecord | None:
    if not (isinstance(key, str) and isinstance(entry, dict)):
        return None
    repository, _, tag = key.rpartition(":")
    digest, written = entry.get("digest"), entry.get("written")
    try:
        validate_repository(repository)
        validate_tag(tag)
        when = datetime.strptime(written, _TIME).replace(tzinfo=UTC).timestamp() if isinstance(written, str) else None
    except (InputError, ValueError):
        return None
    if when is None or not (isinstance(digest, str) and is_digest(digest)):
        return None
    deployments = entry.get("deployments")
    previous = entry.get("previous")
    names = (
        [d for d in deployments if isinstance(d, str) and 0 < len(d) <= 512] if isinstance(deployments, list) else []
    )
    earlier = [Digest(d) for d in previous if isinstance(d, str) and is_digest(d)] if isinstance(previous, list) else []
    return TagRecord(
        repository,
        tag,
        Digest(digest),
        when,
        frozenset(names[:MAX_DEPLOYMENTS]),
        tuple(sorted(set(earlier) - {Digest(digest)}))[:MAX_PREVIOUS],
    )
