"""The mirror report (``--json``) and the lock file: pydantic models, stable field names."""

from __future__ import annotations

import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field

from ocicopy.digest import Digest
from ocicopy.plan import Mode


class MirrorAction(StrEnum):
    COPIED = "copied"  # the image was copied into the mirror
    SKIPPED = "skipped"  # the mirror tag already held the source digest (or another deployment copied it)
    UPDATED = "updated"  # the mirror tag held another digest: the source tag moved; copied again
    BUILD_CACHED = "build-cached"  # a build with this key is in the mirror: deploy the pinned reference
    BUILD_NEEDED = "build-needed"  # no build with this key: build and push to `destination`
    BUILD_PUSHED = "build-pushed"  # not in the mirror, but the builder's layout (build.output) had it: pushed
    FAILED = "failed"


class DeploymentResult(BaseModel):
    service: str
    environment: str
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


class MirrorReport(BaseModel):
    run_id: str = Field(default="", description="this run's id (UTC time + random), also in the ledger it wrote")
    mode: Mode
    dry_run: bool = False
    seconds: float
    totals: MirrorTotals
    deployments: list[DeploymentResult]
    warnings: list[str] = Field(default_factory=list)

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


def lock_document(report: MirrorReport) -> dict[str, object]:
    """``{"version": 1, "images": {source: pinned}, "builds": {key: pinned | null}}``: deploy by digest."""
    images: dict[str, str] = {}
    builds: dict[str, str | None] = {}
    for d in report.deployments:
        if d.build_key is not None:
            builds[d.build_key] = d.pinned
        elif d.source is not None and d.pinned is not None:
            images[d.source] = d.pinned
    return {"version": 1, "images": dict(sorted(images.items())), "builds": dict(sorted(builds.items()))}


def write_atomic(path: str | Path, text: str) -> None:
    """Write a file whole or not at all (temp file in the same directory, then rename)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lock(report: MirrorReport, path: str | Path) -> None:
    write_atomic(path, json.dumps(lock_document(report), indent=2) + "\n")
