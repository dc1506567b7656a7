"""The mirror report (``--json``) and the lock file: pydantic models, stable field names.

The lock file (``--lock``, format 2) has one entry per deployment, keyed by cluster, service and environment, with
the source as a field (two services deploying one source get two entries, each its own repository)::

    {"version": 2, "run_id": "...", "dry_run": false, "deployments": [
       {"cluster": "prod-eu-1", "service": "api", "environment": "prod", "source": "ghcr.io/acme/api:1.4.2",
        "build_key": null, "action": "copied", "pinned": "mirror.example.com/mirror/api@sha256:..."}]}

    jq -r '.deployments[] | select(.service == "api" and .environment == "prod") | .pinned' deploy.lock

Format 1 files (``{"version": 1, "images": {source: pinned}, "builds": {key: pinned}}``) are still read
(:func:`read_lock`), as entries without cluster, service or environment.
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from ocicopy.digest import Digest
from ocicopy.graph import GraphSummary
from ocicopy.plan import DEFAULT_CLUSTER as _DEFAULT_CLUSTER
from ocicopy.plan import Mode
from ocicopy.result import RegistryStats


class MirrorAction(StrEnum):
    COPIED = "copied"  # the image was copied into the mirror
    SKIPPED = "skipped"  # the mirror tag already held the source digest (or another deployment copied it)
    UPDATED = "updated"  # the mirror tag held another digest: the source tag moved; copied again
    BUILD_CACHED = "build-cached"  # a build with this key is in the mirror: deploy the pinned reference
    BUILD_NEEDED = "build-needed"  # no build with this key: build and push to `destination`
    BUILD_PUSHED = "build-pushed"  # not in the mirror, but the builder's layout (build.output) had it: pushed
    FAILED = "failed"


#: The cluster of a plan that names none (service mode, one mirror): what its lock entries say.
DEFAULT_CLUSTER = _DEFAULT_CLUSTER
LOCK_VERSION = 2


class DeploymentResult(BaseModel):
    service: str
    environment: str
    cluster: str = Field(default=DEFAULT_CLUSTER, description="the mirror (cluster) it was mirrored for")
    source: str | None = Field(description="source reference (None for a build)")
    source_digest: Digest | None = None
    destination: str = Field(description="mirror repository:tag")
    pinned: str | None = Field(default=None, description="mirror repository@digest: what to deploy")
    action: MirrorAction
    build_key: str | None = None
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    blobs_recompressed: int = 0
    referrers: int = Field(default=0, description="referrers (signatures, SBOMs...) present in the mirror for it")
    bytes_from_source: int = 0
    bytes_to_mirror: int = 0
    predicted_requests: int | None = Field(default=None, description="dry run only: requests a copy would make")
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)


class MirrorTotals(BaseModel):
    deployments: dict[str, int] = Field(description="deployments by action")
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    blobs_recompressed: int = 0
    bytes_from_source: int = 0
    bytes_to_mirror: int = 0
    requests: int = 0


class ClusterReport(BaseModel):
    """One cluster of a run: its mirror, mode and totals (``requests``: those sent to its mirror registry)."""

    mirror: str = Field(description="the mirror registry host, or oci:DIR")
    mode: Mode
    totals: MirrorTotals


class MirrorReport(BaseModel):
    run_id: str = Field(default="", description="this run's id (UTC time + random), also in the ledger it wrote")
    mode: Mode | None = Field(description="the clusters' mode (None: a fleet whose clusters differ)")
    dry_run: bool = False
    seconds: float
    totals: MirrorTotals
    clusters: dict[str, ClusterReport] = Field(default_factory=dict, description="per cluster, in plan order")
    deployments: list[DeploymentResult] = Field(description="one per (deployment, cluster), cluster by cluster")
    warnings: list[str] = Field(default_factory=list)
    registries: dict[str, RegistryStats] = Field(
        default_factory=dict, description="per registry host: requests, retries, throttling, the quota left"
    )
    graph: GraphSummary | None = Field(default=None, description="a dry run: what the run's work graph predicts")

    @property
    def ok(self) -> bool:
        """Every deployment succeeded (``build-needed`` is not a failure)."""
        return all(d.action is not MirrorAction.FAILED for d in self.deployments)


def totals_of(results: list[DeploymentResult], requests: int) -> MirrorTotals:
    by_action = {a.value: 0 for a in MirrorAction}
    for r in results:
        by_action[r.action.value] += 1
    return MirrorTotals(
        deployments=by_action,
        blobs_copied=sum(r.blobs_copied for r in results),
        blobs_mounted=sum(r.blobs_mounted for r in results),
        blobs_skipped=sum(r.blobs_skipped for r in results),
        blobs_recompressed=sum(r.blobs_recompressed for r in results),
        bytes_from_source=sum(r.bytes_from_source for r in results),
        bytes_to_mirror=sum(r.bytes_to_mirror for r in results),
        requests=requests,
    )


class LockEntry(BaseModel):
    """One deployment's pin: what to deploy for (cluster, service, environment)."""

    cluster: str | None = None  # None only in a format-1 file
    service: str | None = None
    environment: str | None = None
    source: str | None = Field(default=None, description="the source reference (None for a build)")
    build_key: str | None = None
    action: MirrorAction | None = None
    pinned: str | None = Field(default=None, description="mirror repository@digest (None: build-needed, failed)")


class LockFile(BaseModel):
    version: int = LOCK_VERSION
    run_id: str | None = None
    dry_run: bool = Field(default=False, description="a prediction: pinned where the digest can be known")
    deployments: list[LockEntry] = Field(default_factory=list)


def lock_document(report: MirrorReport) -> LockFile:
    """The lock of a run: one entry per deployment, sorted by cluster, service, environment."""
    entries = [
        LockEntry(
            cluster=d.cluster,
            service=d.service,
            environment=d.environment,
            source=d.source,
            build_key=d.build_key,
            action=d.action,
            pinned=d.pinned,
        )
        for d in report.deployments
    ]
    entries.sort(key=lambda e: (e.cluster or "", e.service or "", e.environment or ""))
    return LockFile(run_id=report.run_id or None, dry_run=report.dry_run, deployments=entries)


def read_lock(path: str | Path) -> LockFile:
    """A lock file of either format (format 1: ``images``/``builds`` maps, as entries without a deployment)."""
    from ocicopy.errors import InputError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read lock file {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") not in (1, LOCK_VERSION):
        raise InputError(f"{path} is not an ocicopy lock file (version 1 or {LOCK_VERSION})")
    if doc["version"] == 1:
        images = doc.get("images") or {}
        builds = doc.get("builds") or {}
        entries = [LockEntry(source=s, pinned=p) for s, p in images.items()]
        entries += [LockEntry(build_key=k, pinned=p) for k, p in builds.items()]
        return LockFile(version=1, deployments=entries)
    try:
        return LockFile.model_validate(doc)
    except ValueError as exc:
        raise InputError(f"{path} is not a valid lock file: {' '.join(str(exc).split())[:300]}") from None


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (temp file in the same directory, then rename), with the permissions a
    plain ``open()`` would give it (the umask's; an existing file keeps its own). A symbolic link is followed:
    the file it names is replaced, the link stays."""
    target = Path(os.path.realpath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where the system tells it (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_lock(report: MirrorReport, path: str | Path) -> None:
    write_atomic(path, lock_document(report).model_dump_json(indent=2) + "\n")
