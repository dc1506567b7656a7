"""The results document every benchmark writes and ``python -m benchmarks table|chart|compare`` read: typed, versioned.

:class:`Results` (format :data:`VERSION`): what was run (``benchmark``, ``command``, ``timestamp``, ``quick``), on
what (:class:`Machine`), the workload summary, the network profiles (:class:`ProfileInfo`: links, scale, unique
bytes, the link floor), one :class:`Row` per ``(profile, scenario, phase)`` with its samples and medians, the
:class:`Target` verdicts, the start-up figures, and ``details`` (sections of one benchmark, e.g. compression's
sizes). :func:`load` reads any version: format 1 (``harness`` and ``compression`` documents up to 2026-11,
e.g. ``docs/benchmarks/harness-2026-11-26.json``) is converted on load (:func:`upgrade_v1`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import httpx2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from benchmarks.network import LinkFloor, Profile, link_floor
from benchmarks.startup import Startup

VERSION: Final = 2
ROOT: Final = Path(__file__).resolve().parent.parent
#: Display order of the harness's scenarios; unknown scenarios follow, in order of first appearance.
SCENARIO_ORDER: Final = (
    "naive",
    "service",
    "service+mount",
    "service+mount-library",
    "service-per-env",
    "cluster",
    "cluster-library",
    "one-change",
    "skopeo",
    "floor",
)
#: Display order of the phases; unknown phases follow.
PHASE_ORDER: Final = ("cold", "warm")


class ResultsError(ValueError):
    """Not a results document this code can read (the message says why)."""


@dataclass(frozen=True)
class Stats:
    """Wall-time figures of one row: median, min, max (seconds) and the number of runs."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def spread(self) -> float:
        """Relative min–max spread of the runs, ``(max - min) / median`` (0 for a single run)."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0


class Row(BaseModel):
    """One ``(profile, scenario, phase)``: wall-time samples (seconds) and the medians of the other figures.

    ``requests`` counts both registries' access logs; ``client_requests`` is the tool's own count (ocicopy's
    report ``totals.requests``, the naive copier's); ``client_cpu_seconds`` the tool's CPU per run and
    ``cpu_ms_per_request`` that CPU divided by the requests it made (its own count, else the logs').
    """

    profile: str = "default"
    scenario: str
    phase: str
    seconds: list[float] = []
    median: float | None = None
    min: float | None = None
    max: float | None = None
    requests: int | None = None
    source_requests: int | None = None
    mirror_requests: int | None = None
    client_requests: int | None = None
    requests_per_deployment: float | None = None
    bytes_from_source: int | None = None
    bytes_to_mirror: int | None = None
    client_cpu_seconds: float | None = None
    cpu_ms_per_request: float | None = None
    max_source_gets_per_blob: int | None = None  # the most full GETs of one blob at the source (worst run)
    blobs_not_read_once: int | None = None  # unique blobs read from the source never or more than once (worst run)

    @model_validator(mode="after")
    def _derive(self) -> Row:
        """Median, min and max from the samples where the document leaves them out."""
        if self.seconds:
            if self.median is None:
                self.median = statistics.median(self.seconds)
            self.min = min(self.seconds) if self.min is None else self.min
            self.max = max(self.seconds) if self.max is None else self.max
        return self

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.profile, self.scenario, self.phase)

    @property
    def stats(self) -> Stats | None:
        """Wall-time figures, or None when the row has no time."""
        if self.median is None:
            return None
        low = self.median if self.min is None else min(self.min, self.median)
        high = self.median if self.max is None else max(self.max, self.median)
        return Stats(self.median, low, high, len(self.seconds) or 1)


class Target(BaseModel):
    """A target's verdict: ``value`` against ``limit`` (``at_most``: pass when value ≤ limit, else ≥)."""

    profile: str = ""
    name: str
    value: float
    limit: float
    at_most: bool = True
    passed: bool

    @property
    def label(self) -> str:
        return f"{self.profile}: {self.name}" if self.profile else self.name


def judge(profile: str, name: str, value: float, limit: float, *, at_most: bool = True) -> Target:
    """A :class:`Target` with its verdict."""
    passed = value <= limit if at_most else value >= limit
    return Target(profile=profile, name=name, value=round(value, 4), limit=limit, at_most=at_most, passed=passed)


class Machine(BaseModel):
    """Where the run happened; benchmark-specific versions (zstd, skopeo…) are kept as extra fields."""

    model_config = ConfigDict(extra="allow")

    cpu_model: str = "unknown"
    cpu_cores: int | None = None
    python: str = ""
    platform: str = ""
    ocicopy_version: str = ""
    git_revision: str = ""
    git_revision_at_start: str | None = None
    registry_version: str | None = None
    curl_version: str | None = None
    httpx_version: str | None = None


class OneChange(BaseModel):
    """The ``one-change`` scenario's new version: which service, which tag, how many new bytes."""

    service: str
    version: str
    new_bytes: int


class ProfileInfo(Profile):
    """A network profile as run: its links and scale, the workload's size there, and its link floor."""

    deployments: int | None = None
    unique_blobs: int | None = None
    unique_bytes: int | None = None
    fingerprint: str | None = None
    content: str | None = None
    link_floor: LinkFloor | None = None
    one_change: OneChange | None = None


class Results(BaseModel):
    """A benchmark's results document (format :data:`VERSION`)."""

    benchmark: str
    version: Literal[2] = VERSION
    command: str = ""
    timestamp: str = ""
    quick: bool = False
    machine: Machine = Field(default_factory=Machine)
    workload: dict[str, Any] = {}
    profiles: list[ProfileInfo] = []
    results: list[Row] = []
    targets: list[Target] = []
    startup: Startup | None = None
    details: dict[str, Any] = {}

    def profile(self, name: str) -> ProfileInfo | None:
        return next((p for p in self.profiles if p.name == name), None)

    def profile_names(self) -> list[str]:
        """Profiles in display order: those described, then any other the rows name."""
        return list(dict.fromkeys([p.name for p in self.profiles] + [r.profile for r in self.results]))

    def rows(self) -> dict[tuple[str, str, str], Row]:
        """Rows by ``(profile, scenario, phase)``; the first wins on duplicates."""
        out: dict[tuple[str, str, str], Row] = {}
        for row in self.results:
            out.setdefault(row.key, row)
        return out

    def dump(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dump(), encoding="utf-8")


# --------------------------------------------------------------------------- reading


def load(source: str | Path | Mapping[str, Any] | Results) -> Results:
    """A :class:`Results` from a path, a decoded document of any version, or itself; :class:`ResultsError`."""
    if isinstance(source, Results):
        return source
    if isinstance(source, str | Path):
        try:
            source = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsError(f"cannot read results document {source}: {exc}") from exc
    if not isinstance(source, Mapping):
        raise ResultsError("a results document is a JSON object")
    version = source.get("version", 1)
    if version == 1:
        source = upgrade_v1(source)
    elif version != VERSION:
        raise ResultsError(f"results format version {version!r} is not known here (1 or {VERSION})")
    try:
        return Results.model_validate(source)
    except ValidationError as exc:
        raise ResultsError(f"not a valid results document: {exc}") from exc


V1_TOP: Final = ("benchmark", "command", "timestamp", "quick", "machine", "workload", "profiles", "results", "targets")


def upgrade_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 document as format 2.

    Profiles come from ``workload.by_profile`` (with the link floor their links and workload give), targets are
    split into profile and name, requests per deployment are derived, the benchmark's own sections go to details.
    """
    if not isinstance(doc.get("results"), list):
        raise ResultsError("not a benchmark results document (no 'results' list)")
    workload = dict(doc.get("workload") or {})
    by_profile = workload.pop("by_profile", None) or {}
    names = [str(p) for p in doc.get("profiles") or []]
    deployments = workload.get("deployments")
    rows = [
        {"requests_per_deployment": round(r["requests"] / deployments, 3), **r}
        if isinstance(r, Mapping) and isinstance(r.get("requests"), int) and isinstance(deployments, int)
        else r
        for r in doc["results"]
    ]
    return {
        "benchmark": doc.get("benchmark", "unknown"),
        "version": VERSION,
        **{k: doc[k] for k in ("command", "timestamp", "quick", "machine") if k in doc},
        "workload": workload,
        "profiles": [_profile_v1(name, by_profile.get(name) or {}, workload) for name in names],
        "results": rows,
        "targets": [_target_v1(t) for t in doc.get("targets") or [] if isinstance(t, Mapping)],
        "details": {k: v for k, v in doc.items() if k not in (*V1_TOP, "version")},
    }


def _profile_v1(name: str, info: Mapping[str, Any], workload: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("scale", "unique_blobs", "unique_bytes", "fingerprint", "content", "one_change")
    profile = ProfileInfo.model_validate(
        {
            "name": name,
            "source": info.get("source_link"),
            "mirror": info.get("mirror_link"),
            "deployments": workload.get("deployments"),
            **{k: info[k] for k in keys if k in info},
        }
    )
    if profile.unique_bytes is not None:
        index = bool(workload.get("multi_arch_services"))  # the harness's multi-arch services are indexes
        profile = profile.model_copy(update={"link_floor": link_floor(profile, profile.unique_bytes, index=index)})
    return profile.model_dump()


def _target_v1(target: Mapping[str, Any]) -> dict[str, Any]:
    """``{"name": "wan: cluster cold >= 3x faster…", "pass": …}`` → the profile apart, ``at_most`` from the name."""
    profile, sep, name = str(target.get("name", "")).partition(": ")
    if not sep:
        profile, name = "", profile
    return {
        "profile": profile,
        "name": name,
        "value": target.get("value"),
        "limit": target.get("limit"),
        "at_most": ">=" not in name,
        "passed": target.get("pass"),
    }


# --------------------------------------------------------------------------- writing


def git_revision() -> str:
    """``HEAD``'s commit, with ``-dirty`` when ``ocicopy/`` has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--", "ocicopy") else "")


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


def machine_metadata(revision_at_start: str | None = None, **extra: Any) -> Machine:
    """CPU, Python, ocicopy, git revision, registry and curl versions; warns when the tree moved since the start."""
    from harness.registry import registry_version
    from ocicopy import __version__

    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=False).stdout.split()
    machine = Machine(
        cpu_model=_cpu_model(),
        cpu_cores=os.cpu_count(),
        python=platform.python_version(),
        platform=platform.platform(),
        ocicopy_version=__version__,
        git_revision=git_revision(),
        git_revision_at_start=revision_at_start,
        registry_version=registry_version(),
        curl_version=curl[1] if len(curl) > 1 else None,
        httpx_version=httpx2.__version__,
        **({"load_average": list(os.getloadavg())} | extra),
    )
    if revision_at_start is not None and machine.git_revision != revision_at_start:
        print(
            f"WARNING: the tree moved during the run ({revision_at_start} -> {machine.git_revision}): rerun",
            file=sys.stderr,
        )
    return machine


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
