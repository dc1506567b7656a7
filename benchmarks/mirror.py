"""Benchmark harness: mirror a 30-deployment workload with ocicopy, a naive copier, skopeo and curl, per network.

Scenarios (:data:`SCENARIOS`), each ``cold`` (into an empty mirror registry) then ``warm`` (the same run again:
a redeploy, everything already there), in every network profile:

- ``naive``: the "before": per deployment, one after the other, GET the manifests and stream every blob of every
  image (8 at a time) GET → PUT, then PUT the index children and the tag: no existence checks, no mounts, no
  dedupe (:func:`naive_worker`, ocicopy's low-level verbs, in its own process);
- ``service``: ``ocicopy mirror --mode service --no-mount --no-ledger`` (10 repositories, no cross-repo mounts);
- ``service+mount``: ``ocicopy mirror --mode service`` (shared layers mounted, the blob ledger kept);
- ``cluster``: ``ocicopy mirror --mode cluster`` (one repository);
- ``one-change``: after the warm cluster runs, one service ships a new version (only its app layer differs):
  its deployments move to it and ``ocicopy mirror --mode cluster`` runs again (phase ``warm``);
- ``skopeo``: ``skopeo copy --all`` per deployment, to the cluster-mode destinations (when installed);
- ``floor``: each unique blob once by ``curl GET | curl -T - PUT`` 8 in parallel, then the manifests (``cold``);
- ``cluster-library`` / ``service+mount-library``: the warm rerun in this process (``Client.mirror``), not as a
  CLI subprocess: how deployment tools embed the library. Used by the warm targets; not rows of the results.

Network profiles (:mod:`harness.netem`): ``loopback`` (direct), and ``wan``: the source registry behind a
:class:`~harness.netem.LinkEmulator` (40 ms RTT, 200 Mbit/s), the mirror behind another (2 ms, 2 Gbit/s).
Every tool addresses the registries by the emulators' hosts; bytes and requests come from the registries' own
access logs. Run from the repository root::

    .venv/bin/python -m benchmarks.mirror             # loopback scale 1 + wan scale 0.5, 3 repeats (~9 min)
    .venv/bin/python -m benchmarks.mirror --quick     # loopback scale 0.2 + wan scale 0.1, 1 repeat (~2 min)
    .venv/bin/python -m benchmarks run --profile wan --source-rtt 80ms --source-bandwidth 100Mbit

As a library (time your own scenario next to the built-in ones)::

    from benchmarks.mirror import Context, register_scenario, run_benchmark

    def crane(ctx: Context) -> None:
        for source, destination in ctx.cluster_destinations():
            subprocess.run(["crane", "copy", "--insecure", source, destination], check=True)

    register_scenario("crane", crane)                   # phases cold and warm
    doc = run_benchmark(quick=True, scenarios=["cluster", "crane", "floor"], output=None)

Results: ``benchmarks/results/harness.json`` (the document :mod:`benchmarks.chart` and :mod:`benchmarks.compare`
read), ``harness-samples.json`` (every sample: access-log phases, connections, CPU, link counters) and
``harness.svg``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urljoin

import anyio
import httpx2

from benchmarks.blob_throughput import PeakRss, _git_revision, cpu_seconds, metadata
from benchmarks.chart import render_table, write_chart
from benchmarks.workload import ManifestItem, Workload, build_workload
from harness.oracle import skopeo_version
from harness.registry import MARK_PARAM, AccessEntry, RegistryServer, start_registry
from ocicopy.client import Client
from ocicopy.copier import fetch_child
from ocicopy.options import ClientOptions
from ocicopy.plan import parse_plan
from ocicopy.planner import mirror_tag
from ocicopy.reference import parse_reference
from ocicopy.store import Endpoint

if TYPE_CHECKING:
    from harness.netem import LinkEmulator

MiB: Final = 1024 * 1024
NAIVE_SPEEDUP_MIN: Final = 3.0
COLD_RATIO_MAX: Final = 1.3
WARM_SPEEDUP_MIN: Final = 10.0
WARM_REQUESTS_PER_DEPLOYMENT_MAX: Final = 2.0
PREFIX, CLUSTER = "mirror", "bench"
ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results" / "harness.json"
CHART: Final = RESULTS.with_suffix(".svg")
#: The result rows, in display order (the names the chart and compare tools know).
RESULT_SCENARIOS: Final = ("naive", "service", "service+mount", "cluster", "one-change", "skopeo", "floor")
PHASES: Final = ("cold", "warm")
DEFAULT_PROFILES: Final = ("loopback", "wan")
DEFAULT_SCALE, DEFAULT_LINK_SCALE, QUICK_SCALE, QUICK_LINK_SCALE = 1.0, 0.5, 0.2, 0.1
DEFAULT_REPEATS: Final = 3


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- access logs


def classify(e: AccessEntry) -> str:
    """The request's phase: ``blob HEAD``, ``upload PUT``, ``mount``, ``manifest GET``…; HEAD misses get `` 404``."""
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


def traffic(server: RegistryServer, since: int) -> Traffic:
    """The requests answered since ``mark()`` returned ``since``, and the connections they came on."""
    t = Traffic.of(server.requests(since))
    with server.log_path.open("rb") as f:
        f.seek(since)
        data = f.read()
    peers = set()
    for line in data.splitlines():
        if line.startswith(b"{") and b'"msg":"response completed' in line and MARK_PARAM.encode() not in line:
            with contextlib.suppress(ValueError):
                peers.add(json.loads(line).get("http.request.remoteaddr"))
    t.connections = len(peers - {None})
    return t


# --------------------------------------------------------------------------- network profiles


@dataclass(frozen=True)
class Link:
    """An emulated network path to one registry: round-trip time (s) and bandwidth (bit/s, per direction)."""

    rtt: float
    bandwidth_bps: float

    def __str__(self) -> str:
        bw = self.bandwidth_bps
        rate = f"{bw / 1e9:g} Gbit/s" if bw >= 1e9 else f"{bw / 1e6:g} Mbit/s"
        return f"{self.rtt * 1000:g} ms RTT, {rate}"


@dataclass(frozen=True)
class Profile:
    """A network set-up: a link in front of the source and/or the mirror (None: direct), and the workload scale."""

    name: str
    scale: float
    source: Link | None = None
    mirror: Link | None = None

    @property
    def linked(self) -> bool:
        return self.source is not None or self.mirror is not None

    def as_json(self) -> dict[str, Any]:
        def link(value: Link | None) -> dict[str, float] | None:
            return None if value is None else {"rtt_s": value.rtt, "bandwidth_bps": value.bandwidth_bps}

        return {
            "name": self.name,
            "scale": self.scale,
            "source_link": link(self.source),
            "mirror_link": link(self.mirror),
        }

    def __str__(self) -> str:
        parts = [f"{role} {link}" for role, link in (("source", self.source), ("mirror", self.mirror)) if link]
        return f"{self.name} (scale {self.scale:g}; {'; '.join(parts) or 'no emulation'})"


def parse_rtt(text: str) -> float:
    """Seconds from ``40ms``, ``0.04s`` or ``0.04`` (seconds)."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e-?[0-9]+)?)\s*(ms|s)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"not a round-trip time: {text!r} (e.g. 40ms, 0.04s)")
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative round-trip time: {text!r}")
    return value


def parse_bandwidth(text: str) -> float:
    """Bits per second from ``200Mbit``, ``2Gbit``, ``500kbit`` or ``200e6``."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmg]?)(?:bit(?:/s)?|bps)?\s*", text.lower())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a bandwidth: {text!r} (e.g. 200Mbit, 2Gbit, 200e6)")
    return float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2)]


def make_profiles(
    names: Sequence[str],
    scale: float,
    link_scale: float,
    source: tuple[float | None, float | None] = (None, None),
    mirror: tuple[float | None, float | None] = (None, None),
) -> list[Profile]:
    """Profiles by name from :data:`harness.netem.PROFILES`, links overridden by ``(rtt, bandwidth)`` pairs.

    A profile without links (``loopback``) uses ``scale``; a profile with links uses ``link_scale``.
    """
    from harness.netem import PROFILES

    out = []
    for name in names:
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
        links: dict[str, Link | None] = {}
        for role, (rtt, bandwidth) in (("source", source), ("mirror", mirror)):
            default = PROFILES[name].get(role)
            links[role] = (
                None if default is None else Link(rtt if rtt is not None else default[0], bandwidth or default[1])
            )
        linked = any(links.values())
        out.append(Profile(name, link_scale if linked else scale, links["source"], links["mirror"]))
    return out


@contextmanager
def linked(server: RegistryServer, link: Link | None, name: str) -> Iterator[tuple[str, LinkEmulator | None]]:
    """The address tools use for ``server``: its own, or a :class:`LinkEmulator`'s in front of it."""
    if link is None:
        yield server.host, None
        return
    from harness.netem import LinkEmulator

    with LinkEmulator(server.host, rtt=link.rtt, bandwidth_bps=link.bandwidth_bps, name=name) as emulator:
        yield emulator.host, emulator


# --------------------------------------------------------------------------- what a scenario sees


@dataclass
class Site:
    """A registry as the tools reach it: ``host`` is the emulator's address in a linked profile."""

    server: RegistryServer
    host: str
    emulator: LinkEmulator | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@dataclass
class Context:
    """What a scenario function gets: the workload, both registries (as addresses to use), the phase."""

    run: ProfileRun
    scenario: str
    source: Site
    mirror: Site
    phase: str  # "cold", "warm" or "prepare" (an unmeasured fill)
    repeat: int

    @property
    def workload(self) -> Workload:
        return self.run.workload

    @property
    def profile(self) -> Profile:
        return self.run.profile

    @property
    def workdir(self) -> Path:
        return self.run.workdir

    @property
    def changed(self) -> Workload:
        """The workload after :attr:`Config.change_service` shipped a new version (pushed to the source)."""
        if self.run.changed is None:
            raise RuntimeError("the changed workload was not prepared (one-change not selected)")
        return self.run.changed

    def plan(self, mode: str, workload: Workload | None = None) -> dict[str, Any]:
        """The mirroring plan (ocicopy's format) for every deployment, addressed through the links."""
        return (workload or self.workload).plan(
            self.source.host, self.mirror.host, mode=mode, cluster=CLUSTER, prefix=PREFIX
        )

    def plan_file(self, mode: str, workload: Workload | None = None) -> Path:
        path = self.workdir / f"plan-{mode}-{self.mirror.host.replace(':', '_')}.json"
        path.write_text(json.dumps(self.plan(mode, workload), indent=2))
        return path

    def cluster_destinations(self, workload: Workload | None = None) -> list[tuple[str, str]]:
        """``(source, destination)`` references per deployment, in plan order, named as cluster mode names them."""
        out = []
        for d in (workload or self.workload).deployments:
            source = d.image(self.source.host)
            out.append((source, f"{self.mirror.host}/{PREFIX}/{CLUSTER}:{mirror_tag(parse_reference(source))}"))
        return out

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``python -m ocicopy``: bytecode cached in the work directory (as when installed).

        Like an installed package (pip compiles ``.pyc`` files), modules are not recompiled per run even where
        ``PYTHONDONTWRITEBYTECODE`` is set; nothing is written into the repository.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return env | {"PYTHONPYCACHEPREFIX": str(self.run.bytecode)}


# --------------------------------------------------------------------------- scenarios


class ScenarioFunction(Protocol):
    """Runs one scenario once against ``ctx.source`` / ``ctx.mirror``; the call is what is timed.

    It may return a dict of extra figures: ``report`` (an ocicopy report summary), ``peak_rss_mb``,
    ``cpu_seconds`` (the tool's CPU when it ran in this process; otherwise child processes' CPU is counted), or
    anything else (kept in the samples file). It raises when the tool failed.
    """

    def __call__(self, ctx: Context) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Scenario:
    """A timed way of mirroring the workload.

    ``phases``: measured one after the other on one fresh mirror registry (``cold`` first). ``after``: run on the
    mirror that scenario's phases left (right after them, in the same repeat) when it is selected too; otherwise
    ``prepare`` fills a fresh mirror first, unmeasured. ``setup`` runs unmeasured before every phase.
    ``requires``: executables that must be on ``PATH`` (else the scenario is skipped). ``in_results``: a row of
    the results document (False: samples and targets only).
    """

    name: str
    run: ScenarioFunction
    phases: tuple[str, ...] = PHASES
    after: str | None = None
    prepare: ScenarioFunction | None = None
    setup: ScenarioFunction | None = None
    requires: tuple[str, ...] = ()
    in_results: bool = True
    description: str = ""


#: Every known scenario by name, in run order within a chain (a scenario's ``after`` is registered before it).
SCENARIOS: dict[str, Scenario] = {}


def register_scenario(name: str, run: ScenarioFunction, *, phases: Sequence[str] = PHASES, **options: Any) -> Scenario:
    """Add (or replace) a scenario; ``options`` are the other :class:`Scenario` fields."""
    scenario = Scenario(name, run, tuple(phases), **options)
    SCENARIOS[name] = scenario
    return scenario


# -- ocicopy


def ocicopy_cli(ctx: Context, mode: str, *flags: str, workload: Workload | None = None) -> dict[str, Any]:
    """``python -m ocicopy mirror PLAN --mode MODE --json REPORT --quiet [flags]`` in its own process."""
    plan, report_path = ctx.plan_file(mode, workload), ctx.workdir / f"report-{mode}.json"
    report_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--mode", mode, "--json", str(report_path)]
    cmd += ["--quiet", "--no-docker-config", *flags]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"ocicopy mirror exited {proc.returncode}: {err.decode()[-2000:]} {out.decode()[-500:]}")
    report = json.loads(report_path.read_text())
    return {"peak_rss_mb": round(rss.result_mb(proc.pid), 1), "report": report_summary(report)}


def ocicopy_library(ctx: Context, mode: str, workload: Workload | None = None) -> dict[str, Any]:
    """``Client.mirror(plan)`` in this process with a fresh client (no start-up, no memory of earlier runs)."""
    plan = parse_plan(ctx.plan(mode, workload))

    async def go() -> dict[str, Any]:
        async with Client(ClientOptions(use_docker_config=False)) as client:
            report = await client.mirror(plan)
        return report.model_dump(mode="json")

    cpu_before = time.thread_time()  # this thread only: the link emulators run in other threads of the process
    report = anyio.run(go)
    return {"cpu_seconds": time.thread_time() - cpu_before, "report": report_summary(report)}


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    failed = [d for d in report["deployments"] if d["action"] == "failed"]
    if failed:
        raise RuntimeError(f"ocicopy: {len(failed)} deployment(s) failed, e.g. {failed[0]['error']}")
    return {"seconds": report["seconds"], "totals": report["totals"], "warnings": report["warnings"]}


_library_warmed = False


def warm_library_once(ctx: Context) -> None:
    """The first in-process measurement of the process follows an unmeasured run (imports, one-time set-up)."""
    global _library_warmed
    if not _library_warmed:
        ocicopy_library(ctx, "cluster" if ctx.scenario.startswith("cluster") else "service")
        _library_warmed = True


def fill_cluster(ctx: Context) -> None:
    ocicopy_library(ctx, "cluster")


def fill_service(ctx: Context) -> None:
    ocicopy_library(ctx, "service")


# -- naive


def run_naive(ctx: Context) -> dict[str, Any]:
    """:func:`naive_worker` in its own process, to the cluster-mode destinations."""
    copies = []
    for d, (_, destination) in zip(ctx.workload.deployments, ctx.cluster_destinations(), strict=True):
        dest = parse_reference(destination)
        copies.append({"repository": d.repository, "tag": d.tag, "to_repository": dest.repository, "to_tag": dest.tag})
    job = ctx.workdir / "naive-job.json"
    job.write_text(
        json.dumps(
            {
                "source": ctx.source.host,
                "mirror": ctx.mirror.host,
                "parallel": ctx.run.config.parallel,
                "copies": copies,
            }
        )
    )
    code = "import sys; from benchmarks.mirror import naive_worker; sys.exit(naive_worker(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(job)], cwd=ROOT, env=ctx.env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"naive copier exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def naive_worker(job_path: str) -> int:
    """The naive copier (the "before"), run by :func:`run_naive`: ``job_path`` is a JSON job; prints its counts.

    For each deployment in turn: GET the top manifest by tag (and each index child by digest); stream every blob
    of every image with :meth:`BlobCopier.stream <ocicopy.copier.BlobCopier.stream>` (``POST`` for an upload
    session, ``GET`` → verify → monolithic ``PUT ?digest=``), at most ``parallel`` at once; then PUT the children
    by digest and the top manifest under the destination tag. Never a HEAD, never a mount, nothing remembered
    between deployments or within one (a layer two children share is sent twice).
    """
    job = json.loads(Path(job_path).read_text())
    counts: Counter[str] = Counter()

    async def go() -> None:
        source, mirror = job["source"], job["mirror"]
        async with Client(ClientOptions(use_docker_config=False, mounts=False), plain_http=[source, mirror]) as client:
            src_registry, dst_registry = client.registry(source), client.registry(mirror)
            limiter = anyio.CapacityLimiter(job["parallel"])
            for copy in job["copies"]:
                src = Endpoint(src_registry, copy["repository"])
                dst = Endpoint(dst_registry, copy["to_repository"])
                top = await src_registry.manifest_get(src.repository, copy["tag"])
                children = [await fetch_child(src, desc) for desc in top.children()]

                async def blob(desc: Any, src: Endpoint = src, dst: Endpoint = dst) -> None:
                    async with limiter:
                        await client.blobs.stream(src, dst, desc, None)

                async with anyio.create_task_group() as tg:
                    for image in children or [top]:
                        for desc in image.blobs():
                            counts["blobs"] += 1
                            counts["blob_bytes"] += desc.size
                            tg.start_soon(blob, desc)
                for child in children:
                    await dst_registry.manifest_put(dst.repository, str(child.digest), child)
                await dst_registry.manifest_put(dst.repository, copy["to_tag"], top)
                counts["manifests"] += 1 + len(children)
            counts["requests"] = client.transport.stats.total_requests

    anyio.run(go)
    print(json.dumps(dict(counts)))
    return 0


# -- floor: curl


def _curl(*args: str) -> list[str]:
    return ["curl", "-sS", "-f", *args]


def curl_blob(src: str, src_repo: str, dst: str, dst_repo: str, digest: str) -> None:
    """``POST`` for a location, then ``curl GET | curl -T - PUT ?digest=`` (streamed, never buffered)."""
    post = _curl("-X", "POST", "-o", "/dev/null", "-w", "%header{location}", f"{dst}/v2/{dst_repo}/blobs/uploads/")
    location = subprocess.run(post, capture_output=True, text=True, check=True).stdout.strip()
    target = httpx2.URL(urljoin(dst + "/", location)).copy_add_param("digest", digest)
    get = _curl(f"{src}/v2/{src_repo}/blobs/{digest}")
    put = _curl("-o", "/dev/null", "-w", "%{http_code}", "-T", "-", "-X", "PUT")
    put += ["-H", "Content-Type: application/octet-stream", str(target)]
    _pipe(get, put, f"blob {digest}")


def curl_manifest(src: str, dst: str, dst_repo: str, item: ManifestItem, ref: str) -> None:
    """``curl GET | curl PUT`` of a manifest's exact bytes (small: ``--data-binary @-``)."""
    get = _curl("-H", f"Accept: {item.media_type}", f"{src}/v2/{item.repository}/manifests/{item.reference}")
    put = _curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", f"Content-Type: {item.media_type}")
    put += ["--data-binary", "@-", f"{dst}/v2/{dst_repo}/manifests/{ref}"]
    _pipe(get, put, f"manifest {item.reference}")


def _pipe(get: list[str], put: list[str], what: str) -> None:
    reader = subprocess.Popen(get, stdout=subprocess.PIPE)
    writer = subprocess.Popen(put, stdin=reader.stdout, stdout=subprocess.PIPE)
    assert reader.stdout is not None
    reader.stdout.close()
    status = writer.communicate()[0].decode().strip()
    if reader.wait() or writer.returncode or status != "201":
        raise RuntimeError(
            f"curl pipe failed for {what}: GET rc={reader.returncode}, PUT rc={writer.returncode} {status}"
        )


def run_floor(ctx: Context) -> dict[str, Any]:
    """Every unique blob once (largest first), then index children, then the tagged tops; 8 in parallel."""
    dst_repo = f"{PREFIX}/{CLUSTER}"
    src, dst = ctx.source.url, ctx.mirror.url
    blobs = sorted(ctx.workload.blobs().values(), key=lambda b: -b.size)
    manifests = ctx.workload.manifests()
    tags = {
        item.digest: mirror_tag(parse_reference(f"{ctx.source.host}/{item.repository}:{item.reference}"))
        for item in manifests
        if not item.child
    }
    with ThreadPoolExecutor(max_workers=ctx.run.config.parallel) as pool:
        list(pool.map(lambda b: curl_blob(src, b.repository, dst, dst_repo, b.digest), blobs))
        children = [m for m in manifests if m.child]
        list(pool.map(lambda m: curl_manifest(src, dst, dst_repo, m, m.reference), children))
        tops = [m for m in manifests if not m.child]
        list(pool.map(lambda m: curl_manifest(src, dst, dst_repo, m, tags[m.digest]), tops))
    return {"blobs": len(blobs), "manifests": len(manifests)}


# -- skopeo


def run_skopeo_loop(ctx: Context) -> dict[str, Any]:
    """``skopeo copy --all`` per deployment, in plan order, to the cluster-mode destinations.

    Both registries are plain HTTP: with ``--*-tls-verify=false`` skopeo tries HTTPS first on each new
    connection to a registry and falls back to HTTP (one extra round trip per registry and process).
    """
    per_copy = []
    for source, destination in ctx.cluster_destinations():
        cmd = ["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
        cmd += [f"docker://{source}", f"docker://{destination}"]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        per_copy.append(time.monotonic() - started)
        if done.returncode:
            raise RuntimeError(f"skopeo copy {source} failed: {done.stderr[-2000:]}")
    return {"per_copy_seconds_median": round(statistics.median(per_copy), 3), "copies": len(per_copy)}


def _builtin_scenarios() -> None:
    register_scenario(
        "naive",
        run_naive,
        description="per deployment, every blob and manifest copied: no HEADs, no mounts, no dedupe",
    )
    register_scenario(
        "service",
        lambda ctx: ocicopy_cli(ctx, "service", "--no-mount", "--no-ledger"),
        description="ocicopy mirror --mode service --no-mount --no-ledger (subprocess)",
    )
    register_scenario(
        "service+mount",
        lambda ctx: ocicopy_cli(ctx, "service"),
        description="ocicopy mirror --mode service (mounts, ledger; subprocess)",
    )
    register_scenario(
        "service+mount-library",
        lambda ctx: ocicopy_library(ctx, "service"),
        phases=("warm",),
        after="service+mount",
        prepare=fill_service,
        setup=warm_library_once,
        in_results=False,
        description="the service-mode warm rerun in this process (Client.mirror)",
    )
    register_scenario(
        "cluster",
        lambda ctx: ocicopy_cli(ctx, "cluster"),
        description="ocicopy mirror --mode cluster (subprocess)",
    )
    register_scenario(
        "cluster-library",
        lambda ctx: ocicopy_library(ctx, "cluster"),
        phases=("warm",),
        after="cluster",
        prepare=fill_cluster,
        setup=warm_library_once,
        in_results=False,
        description="the cluster-mode warm rerun in this process (Client.mirror)",
    )
    register_scenario(
        "one-change",
        lambda ctx: ocicopy_cli(ctx, "cluster", workload=ctx.changed),
        phases=("warm",),
        after="cluster",
        prepare=fill_cluster,
        description="after the warm cluster runs, one service's deployments move to its new version",
    )
    register_scenario(
        "skopeo",
        run_skopeo_loop,
        requires=("skopeo",),
        description="skopeo copy --all per deployment (subprocesses)",
    )
    register_scenario(
        "floor",
        run_floor,
        phases=("cold",),
        requires=("curl",),
        description="each unique blob once by curl GET | curl PUT, 8 in parallel, then the manifests",
    )


_builtin_scenarios()


# --------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """What :func:`run_benchmark` runs. ``None`` fields take their defaults (smaller with ``quick``)."""

    quick: bool = False
    profiles: Sequence[str | Profile] = DEFAULT_PROFILES
    scenarios: Sequence[str] | None = None  # None: every registered scenario
    repeats: int | None = None  # default 3, quick 1
    scale: float | None = None  # profiles without links; default 1, quick 0.2
    link_scale: float | None = None  # profiles with links (wan); default 0.5, quick 0.1
    source_rtt: float | None = None  # seconds; overrides the profiles' source link
    source_bandwidth: float | None = None  # bits/s
    mirror_rtt: float | None = None
    mirror_bandwidth: float | None = None
    content: str = "auto"  # layer content: auto, usr, random
    jobs: int | None = None  # processes generating layers
    parallel: int = 8  # curl transfers of the floor, and blobs of one deployment for naive
    change_service: str = "api"  # who ships a new version in one-change
    workdir: Path | None = None  # parent of the temporary directory
    output: Path | None = RESULTS  # None: write no files
    chart: Path | None = CHART
    command: str = ""

    def resolved(self) -> Config:
        repeats = self.repeats or (1 if self.quick else DEFAULT_REPEATS)
        scale = self.scale or (QUICK_SCALE if self.quick else DEFAULT_SCALE)
        link_scale = self.link_scale or (QUICK_LINK_SCALE if self.quick else DEFAULT_LINK_SCALE)
        if repeats < 1 or scale <= 0 or link_scale <= 0 or self.parallel < 1:
            raise ValueError("repeats and parallel must be at least 1, scales positive")
        names = [p for p in self.profiles if isinstance(p, str)]
        made = iter(
            make_profiles(
                names,
                scale,
                link_scale,
                (self.source_rtt, self.source_bandwidth),
                (self.mirror_rtt, self.mirror_bandwidth),
            )
        )
        profiles = [next(made) if isinstance(p, str) else p for p in self.profiles]
        wanted = list(SCENARIOS) if self.scenarios is None else list(dict.fromkeys(self.scenarios))
        unknown = [s for s in wanted if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
        command = self.command or f"run_benchmark(quick={self.quick})"
        return replace(
            self,
            repeats=repeats,
            scale=scale,
            link_scale=link_scale,
            profiles=profiles,
            scenarios=[s for s in SCENARIOS if s in wanted],
            command=command,
        )


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One measured run of one scenario phase."""

    profile: str
    scenario: str
    phase: str
    repeat: int
    seconds: float
    tool_cpu_seconds: float
    harness_cpu_seconds: float  # this process (link emulators' threads, access-log reading) during the run
    source: Traffic
    mirror: Traffic
    registry_cpu_seconds: dict[str, float]
    links: dict[str, dict[str, int]] = field(default_factory=dict)  # emulator counters during the run
    peak_rss_mb: float | None = None
    report: dict[str, Any] | None = None  # ocicopy: seconds, totals
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.source.requests + self.mirror.requests


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _link_counters(site: Site) -> dict[str, int]:
    return dict(site.emulator.stats) if site.emulator is not None else {}


@dataclass
class ProfileRun:
    """One profile's run: its workload, source registry (behind its link), work directory and samples."""

    config: Config
    profile: Profile
    workload: Workload
    changed: Workload | None
    source: Site
    workdir: Path
    bytecode: Path
    sizes: dict[str, int]
    progress: Callable[[str], None]
    samples: list[Sample] = field(default_factory=list)
    step: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))
    total_steps: int = 0
    _mirrors: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @contextmanager
    def fresh_mirror(self, label: str) -> Iterator[Site]:
        """A new, empty mirror registry (behind its own link in a linked profile), removed afterwards."""
        root = self.workdir / f"mirror-{next(self._mirrors)}-{re.sub(r'[^a-z0-9]+', '-', label)}"
        server = start_registry(root)
        try:
            with linked(server, self.profile.mirror, "mirror") as (host, emulator):
                yield Site(server, host, emulator)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    def measure(self, scenario: Scenario, ctx: Context) -> Sample:
        """Run one phase between marks of both access logs; CPU of the tool, the registries and this process."""
        source, mirror = ctx.source, ctx.mirror
        src_mark, dst_mark = source.server.mark(), mirror.server.mark()
        reg_before = cpu_seconds(source.server.process.pid), cpu_seconds(mirror.server.process.pid)
        links_before = {"source": _link_counters(source), "mirror": _link_counters(mirror)}
        children_before, harness_before = _children_cpu(), time.process_time()
        started = time.monotonic()
        out = dict(scenario.run(ctx) or {})
        seconds = time.monotonic() - started
        harness_cpu = time.process_time() - harness_before
        tool_cpu = out.pop("cpu_seconds", None)
        if tool_cpu is None:
            tool_cpu = _children_cpu() - children_before
        else:
            harness_cpu -= tool_cpu
        links_after = {"source": _link_counters(source), "mirror": _link_counters(mirror)}
        reg_after = cpu_seconds(source.server.process.pid), cpu_seconds(mirror.server.process.pid)
        sample = Sample(
            profile=self.profile.name,
            scenario=scenario.name,
            phase=ctx.phase,
            repeat=ctx.repeat,
            seconds=seconds,
            tool_cpu_seconds=round(tool_cpu, 3),
            harness_cpu_seconds=round(harness_cpu, 3),
            source=traffic(source.server, src_mark),
            mirror=traffic(mirror.server, dst_mark),
            registry_cpu_seconds={
                "source": round(reg_after[0] - reg_before[0], 2),
                "mirror": round(reg_after[1] - reg_before[1], 2),
            },
            links={
                role: {k: v - links_before[role].get(k, 0) for k, v in counters.items()}
                for role, counters in links_after.items()
                if counters
            },
            peak_rss_mb=out.pop("peak_rss_mb", None),
            report=out.pop("report", None),
            extra=out,
        )
        self._check(sample)
        self._learn_sizes(sample.mirror, mirror.server)
        self.samples.append(sample)
        self.progress(
            f"[{next(self.step)}/{self.total_steps}] {self.profile.name} {scenario.name} {ctx.phase} "
            f"(repeat {ctx.repeat + 1}): {seconds:.2f} s, {sample.requests} requests "
            f"(source {sample.source.requests}, mirror {sample.mirror.requests}), "
            f"{sample.source.bytes_out / MiB:.1f} MiB from source, "
            f"{sample.mirror.uploaded_bytes(self.sizes) / MiB:.1f} MiB to mirror, "
            f"CPU tool {sample.tool_cpu_seconds:.2f} s, registries {sample.registry_cpu_seconds['source']:.2f} + "
            f"{sample.registry_cpu_seconds['mirror']:.2f} s, harness {sample.harness_cpu_seconds:.2f} s"
        )
        return sample

    def _check(self, sample: Sample) -> None:
        """Every request reached the registries through the links (a tool that bypassed them is a bug here)."""
        for role, traffic_ in (("source", sample.source), ("mirror", sample.mirror)):
            counters = sample.links.get(role)
            if counters is not None and traffic_.requests and not counters.get("bytes_up"):
                raise RuntimeError(f"{sample.scenario}: the {role} registry was reached without its link emulator")
        if sample.source.errors or sample.mirror.errors:
            log(
                f"WARNING: {sample.scenario} {sample.phase}: error answers: source {sample.source.errors} "
                f"{sample.source.by_kind}, mirror {sample.mirror.errors} {sample.mirror.by_kind}"
            )

    def _learn_sizes(self, traffic_: Traffic, mirror: RegistryServer) -> None:
        """Sizes of uploaded blobs that are not the workload's (the ledger), from a HEAD on the mirror."""
        for digest, repo in traffic_.upload_repos.items():
            if digest not in self.sizes:
                response = httpx2.head(f"{mirror.url}/v2/{repo}/blobs/{digest}", timeout=30)
                self.sizes[digest] = int(response.headers.get("content-length", 0))

    def run_chain(self, chain: list[Scenario], repeat: int) -> None:
        """The chain's scenarios, one after the other, on one fresh mirror."""
        with self.fresh_mirror(chain[0].name) as mirror:
            for position, scenario in enumerate(chain):
                if position == 0 and scenario.prepare is not None:
                    scenario.prepare(Context(self, scenario.name, self.source, mirror, "prepare", repeat))
                for phase in scenario.phases:
                    ctx = Context(self, scenario.name, self.source, mirror, phase, repeat)
                    if scenario.setup is not None:
                        scenario.setup(ctx)
                    self.measure(scenario, ctx)


def chains(names: Sequence[str]) -> list[list[Scenario]]:
    """Selected scenarios grouped by shared mirror: each chain starts with a scenario that needs a fresh one."""
    out: list[list[Scenario]] = []
    chain_of: dict[str, list[Scenario]] = {}
    for name in names:
        scenario = SCENARIOS[name]
        chain = chain_of.get(scenario.after) if scenario.after else None
        if chain is None:
            chain = []
            out.append(chain)
        chain.append(scenario)
        chain_of[name] = chain
    return out


def _missing_tools(scenario: Scenario) -> list[str]:
    return [tool for tool in scenario.requires if shutil.which(tool) is None]


def run_profile(
    config: Config,
    profile: Profile,
    workload: Workload,
    changed: Workload | None,
    workdir: Path,
    progress: Callable[[str], None],
    steps: tuple[Iterator[int], int],
) -> ProfileRun:
    """Seed a source registry, put it behind the profile's link, and run every chain ``repeats`` times."""
    names = [n for n in config.scenarios or () if not _missing_tools(SCENARIOS[n])]
    server = start_registry(workdir / "source")
    try:
        started = time.monotonic()
        workload.push(server)
        if changed is not None:
            changed.push(server, only=[(s, v) for s, v in changed.shipped.items()])
        progress(f"{profile}: pushed the workload into the source registry in {time.monotonic() - started:.1f} s")
        with linked(server, profile.source, "source") as (host, emulator):
            sizes = {d: b.size for d, b in (changed or workload).blobs().items()}
            run = ProfileRun(
                config,
                profile,
                workload,
                changed,
                Site(server, host, emulator),
                workdir,
                workdir.parent / "pycache",
                sizes,
                progress,
                step=steps[0],
                total_steps=steps[1],
            )
            groups = chains(names)
            for repeat in range(config.repeats or 1):
                shift = repeat % len(groups)  # rotate so no chain always runs first
                for chain in groups[shift:] + groups[:shift]:
                    run.run_chain(chain, repeat)
        return run
    finally:
        server.stop()


def run_benchmark(
    config: Config | None = None, progress: Callable[[str], None] = log, **options: Any
) -> dict[str, Any]:
    """Run the harness and return the results document; ``options`` are :class:`Config` fields.

    ``run_benchmark(quick=True)``; ``run_benchmark(profiles=["loopback"], scenarios=["cluster", "floor"])``.
    Writes ``config.output`` (JSON), its ``-samples`` companion and ``config.chart`` (SVG) unless they are None.
    Progress goes to ``progress`` (stderr by default).
    """
    return execute(config or Config(**options), progress)[0]


def execute(config: Config, progress: Callable[[str], None] = log) -> tuple[dict[str, Any], list[ProfileRun]]:
    """:func:`run_benchmark`, also returning every profile's run (its samples)."""
    config = config.resolved()
    revision_at_start = _git_revision()
    profiles = [p for p in config.profiles if isinstance(p, Profile)]
    names = config.scenarios or []
    for name in names:
        if missing := _missing_tools(SCENARIOS[name]):
            progress(f"{name}: {', '.join(missing)} not installed: skipped")
    measured = [n for n in names if not _missing_tools(SCENARIOS[n])]
    total = len(profiles) * (config.repeats or 1) * sum(len(SCENARIOS[n].phases) for n in measured)
    steps = (iter(range(1, total + 1)), total)
    progress(
        f"{total} measured runs: {', '.join(measured)} x {config.repeats} repeat(s) in "
        + "; ".join(str(p) for p in profiles)
    )
    workloads: dict[float, Workload] = {}
    runs: list[ProfileRun] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocicopy-bench-", dir=config.workdir) as tmp:
        _warm_bytecode(Path(tmp) / "pycache")
        for index, profile in enumerate(profiles):
            if profile.scale not in workloads:
                progress(f"generating the workload (scale {profile.scale:g}, content {config.content})")
                workloads[profile.scale] = build_workload(profile.scale, config.content, config.jobs, progress)  # type: ignore[arg-type]
                w = workloads[profile.scale]
                progress(
                    f"{len(w.blobs())} unique blobs, {w.unique_bytes / MiB:.1f} MiB, {len(w.images)} source tags, "
                    f"{len(w.deployments)} deployments; generated in {w.generation_seconds:.1f} s ({w.content} content)"
                )
            workload = workloads[profile.scale]
            changed = workload.ship(config.change_service, progress) if "one-change" in measured else None
            workdir = Path(tmp) / f"{index}-{profile.name}"
            runs.append(run_profile(config, profile, workload, changed, workdir, progress, steps))
    progress(f"finished in {time.monotonic() - started:.0f} s")
    doc = results_document(config, runs, revision_at_start)
    if config.output is not None:
        write_outputs(config, doc, runs, progress)
    return doc, runs


def _warm_bytecode(pycache: Path) -> None:
    """One unmeasured start of ocicopy and of the naive worker's imports: fills the bytecode cache."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {
        "PYTHONPYCACHEPREFIX": str(pycache)
    }
    subprocess.run([sys.executable, "-m", "ocicopy", "--version"], cwd=ROOT, env=env, check=True, capture_output=True)
    code = "import benchmarks.mirror"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)


# --------------------------------------------------------------------------- results


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def group_samples(runs: Sequence[ProfileRun]) -> dict[tuple[str, str, str], list[Sample]]:
    out: dict[tuple[str, str, str], list[Sample]] = {}
    for run in runs:
        for s in run.samples:
            out.setdefault((s.profile, s.scenario, s.phase), []).append(s)
    return out


def results_document(config: Config, runs: Sequence[ProfileRun], revision_at_start: str) -> dict[str, Any]:
    """The ``harness`` results document (see the README): rows per profile, scenario and phase, and targets."""
    groups = group_samples(runs)
    order = {name: i for i, name in enumerate(SCENARIOS)}
    results = []
    for run in runs:
        sizes = run.sizes
        keys = sorted(
            {(s.scenario, s.phase) for s in run.samples if SCENARIOS[s.scenario].in_results},
            key=lambda k: (order[k[0]], PHASES.index(k[1]) if k[1] in PHASES else 9),
        )
        for scenario, phase in keys:
            group = groups[(run.profile.name, scenario, phase)]
            seconds = [round(s.seconds, 3) for s in group]
            results.append(
                {
                    "profile": run.profile.name,
                    "scenario": scenario,
                    "phase": phase,
                    "seconds": seconds,
                    "median": round(_median(seconds), 3),
                    "min": min(seconds),
                    "max": max(seconds),
                    "bytes_from_source": round(_median(s.source.bytes_out for s in group)),
                    "bytes_to_mirror": round(_median(s.mirror.uploaded_bytes(sizes) for s in group)),
                    "requests": round(_median(s.requests for s in group)),
                }
            )
    machine = metadata()
    with contextlib.suppress(Exception):
        machine["skopeo_version"] = skopeo_version()
    machine["git_revision_at_start"] = revision_at_start
    if machine["git_revision"] != revision_at_start:
        log(f"WARNING: the tree moved during the run ({revision_at_start} -> {machine['git_revision']}): rerun")
    first = runs[0].workload.summary() if runs else {}
    by_profile = {}
    for run in runs:
        w = run.workload.summary()
        by_profile[run.profile.name] = {
            **run.profile.as_json(),
            **{k: w[k] for k in ("unique_blobs", "unique_bytes", "fingerprint", "content", "generation_seconds")},
        }
        if run.changed is not None:
            by_profile[run.profile.name]["one_change"] = {
                "service": config.change_service,
                "version": run.changed.shipped[config.change_service],
                "new_bytes": run.changed.unique_bytes - run.workload.unique_bytes,
            }
    return {
        "benchmark": "harness",
        "version": 1,
        "command": config.command,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": config.quick,
        "machine": machine,
        "workload": first | {"by_profile": by_profile, "repeats": config.repeats, "floor_parallelism": config.parallel},
        "profiles": [run.profile.name for run in runs],
        "results": results,
        "targets": targets(runs, groups),
    }


def targets(runs: Sequence[ProfileRun], groups: dict[tuple[str, str, str], list[Sample]]) -> list[dict[str, Any]]:
    """The issue's targets per profile: ``{"name", "value", "limit", "pass"}`` (only those measured)."""
    out: list[dict[str, Any]] = []

    def median(profile: str, scenario: str, phase: str) -> float | None:
        group = groups.get((profile, scenario, phase))
        return _median(s.seconds for s in group) if group else None

    def add(name: str, value: float | None, limit: float, at_least: bool) -> None:
        if value is not None:
            ok = value >= limit if at_least else value <= limit
            out.append({"name": name, "value": round(value, 3), "limit": limit, "pass": ok})

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for run in runs:
        p = run.profile.name
        deployments = len(run.workload.deployments)
        floor = median(p, "floor", "cold")
        add(
            f"{p}: cluster cold >= {NAIVE_SPEEDUP_MIN:g}x faster than naive cold",
            ratio(median(p, "naive", "cold"), median(p, "cluster", "cold")),
            NAIVE_SPEEDUP_MIN,
            True,
        )
        for mode in ("cluster", "service+mount"):
            add(
                f"{p}: {mode} cold <= {COLD_RATIO_MAX:g}x floor",
                ratio(median(p, mode, "cold"), floor),
                COLD_RATIO_MAX,
                False,
            )
        skopeo = median(p, "skopeo", "warm")
        for mode in ("cluster", "service+mount"):
            add(
                f"{p}: {mode} warm (CLI subprocess) >= {WARM_SPEEDUP_MIN:g}x faster than the skopeo warm loop",
                ratio(skopeo, median(p, mode, "warm")),
                WARM_SPEEDUP_MIN,
                True,
            )
            add(
                f"{p}: {mode} warm (library, in-process) >= {WARM_SPEEDUP_MIN:g}x faster than the skopeo warm loop",
                ratio(skopeo, median(p, f"{mode}-library", "warm")),
                WARM_SPEEDUP_MIN,
                True,
            )
        for mode in ("cluster", "service+mount"):
            cold = groups.get((p, mode, "cold"))
            if cold:
                unique = set(run.workload.blobs())
                missed = max(len(unique - set(s.source.blob_gets)) for s in cold)
                most = max(s.source.max_gets_per_blob for s in cold)
                # A blob never read counts as a miss too: the value is then above the limit.
                add(f"{p}: {mode} cold: source GETs per unique blob <= 1", float(most if not missed else 99), 1, False)
            warm = groups.get((p, mode, "warm"))
            if warm:
                per = max(s.requests for s in warm) / deployments
                add(f"{p}: {mode} warm <= {WARM_REQUESTS_PER_DEPLOYMENT_MAX:g} requests per deployment", per, 2, False)
    return out


def format_targets(doc: dict[str, Any]) -> str:
    lines = ["targets:"]
    for t in doc["targets"]:
        lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['name']}: {t['value']:g} (limit {t['limit']:g})")
    return "\n".join(lines) + "\n"


def format_details(runs: Sequence[ProfileRun]) -> str:
    """What the results rows leave out: the in-process warm runs, RSS, CPU, connections, link counters."""
    groups = group_samples(runs)
    lines = ["details (medians):"]
    for (profile, scenario, phase), group in groups.items():

        def med(f: Callable[[Sample], float], group: list[Sample] = group) -> float:
            return _median(f(s) for s in group)

        rss = [s.peak_rss_mb for s in group if s.peak_rss_mb is not None]
        engine = [s.report["seconds"] for s in group if s.report]
        lines.append(
            f"  {profile:8s} {scenario:22s} {phase:4s} {med(lambda s: s.seconds):8.3f} s"
            + (f", engine {statistics.median(engine):.3f} s" if engine else "")
            + f", tool CPU {med(lambda s: s.tool_cpu_seconds):.2f} s"
            + f", registries CPU {med(lambda s: s.registry_cpu_seconds['source']):.2f} + "
            f"{med(lambda s: s.registry_cpu_seconds['mirror']):.2f} s"
            + f", connections {med(lambda s: s.source.connections):.0f} + {med(lambda s: s.mirror.connections):.0f}"
            + f", source blob GETs {med(lambda s: sum(s.source.blob_gets.values())):.0f}"
            + (f", RSS {max(rss):.0f} MB" if rss else "")
        )
    return "\n".join(lines) + "\n"


def log_phases(runs: Sequence[ProfileRun], progress: Callable[[str], None]) -> None:
    """Requests per phase (last repeat of each scenario), on stderr: where the requests go."""
    progress("requests per phase (last repeat), source | mirror:")
    for run in runs:
        last = {(s.scenario, s.phase): s for s in run.samples}
        for (scenario, phase), s in last.items():
            src = ", ".join(f"{k} {v}" for k, v in s.source.by_kind.items())
            dst = ", ".join(f"{k} {v}" for k, v in s.mirror.by_kind.items())
            progress(f"  {run.profile.name} {scenario} {phase}: {src} | {dst}")


def write_outputs(
    config: Config, doc: dict[str, Any], runs: Sequence[ProfileRun], progress: Callable[[str], None]
) -> None:
    assert config.output is not None
    config.output.parent.mkdir(parents=True, exist_ok=True)
    config.output.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    samples_path = config.output.with_name(config.output.stem + "-samples.json")
    samples = {
        "benchmark": "harness-samples",
        "command": doc["command"],
        "timestamp": doc["timestamp"],
        "profiles": [run.profile.as_json() for run in runs],
        "scenarios": {
            name: {f.name: getattr(s, f.name) for f in fields(s) if f.name in ("phases", "after", "description")}
            for name, s in SCENARIOS.items()
        },
        "samples": [
            {k: v for k, v in asdict(s).items() if k not in ("source", "mirror")}
            | {
                "seconds": round(s.seconds, 3),
                "source": s.source.as_json(run.sizes),
                "mirror": s.mirror.as_json(run.sizes),
            }
            for run in runs
            for s in run.samples
        ],
    }
    samples_path.write_text(json.dumps(samples, indent=2) + "\n")
    written = [config.output, samples_path]
    if config.chart is not None:
        write_chart(doc, config.chart)
        written.append(config.chart)
    progress("written: " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written))


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirror", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale 0.2 (wan 0.1), 1 repeat: about 2 minutes")
    parser.add_argument(
        "--profile", default=",".join(DEFAULT_PROFILES), help="profiles, comma-separated (loopback,wan)"
    )
    parser.add_argument("--scenarios", default=None, help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="runs of every scenario (3; quick 1)")
    parser.add_argument("--scale", type=float, default=None, help="workload size without links (1: 257 MiB; quick 0.2)")
    parser.add_argument("--wan-scale", type=float, default=None, help="workload size with links (0.5; quick 0.1)")
    parser.add_argument("--source-rtt", type=parse_rtt, default=None, metavar="RTT", help="e.g. 40ms (wan default)")
    parser.add_argument("--source-bandwidth", type=parse_bandwidth, default=None, metavar="BW", help="e.g. 200Mbit")
    parser.add_argument("--mirror-rtt", type=parse_rtt, default=None, metavar="RTT", help="e.g. 2ms (wan default)")
    parser.add_argument("--mirror-bandwidth", type=parse_bandwidth, default=None, metavar="BW", help="e.g. 2Gbit")
    parser.add_argument("--content", choices=["auto", "usr", "random"], default="auto", help="layer content")
    parser.add_argument("--jobs", type=int, default=None, help="processes generating layers (default: CPUs)")
    parser.add_argument("--parallel", type=int, default=8, help="floor curl transfers / naive blobs in flight (8)")
    parser.add_argument("--change-service", default="api", help="the service that ships a version in one-change")
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="results JSON (default benchmarks/results/harness.json)"
    )
    parser.add_argument("--no-chart", action="store_true", help="do not write the SVG chart")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary directory")
    args = parser.parse_args(argv)
    config = Config(
        quick=args.quick,
        profiles=[p.strip() for p in args.profile.split(",") if p.strip()],
        scenarios=[s.strip() for s in args.scenarios.split(",") if s.strip()] if args.scenarios else None,
        repeats=args.repeats,
        scale=args.scale,
        link_scale=args.wan_scale,
        source_rtt=args.source_rtt,
        source_bandwidth=args.source_bandwidth,
        mirror_rtt=args.mirror_rtt,
        mirror_bandwidth=args.mirror_bandwidth,
        content=args.content,
        jobs=args.jobs,
        parallel=args.parallel,
        change_service=args.change_service,
        workdir=args.workdir,
        output=args.output,
        chart=None if args.no_chart else args.output.with_suffix(".svg"),
        command=" ".join(["python -m benchmarks.mirror", *(sys.argv[1:] if argv is None else argv)]),
    )
    try:
        config = config.resolved()
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.strict


def main(argv: list[str] | None = None) -> int:
    config, strict = parse_args(argv)
    doc, runs = execute(config, log)
    log_phases(runs, log)
    print(format_details(runs))
    print(render_table(doc), end="")
    print(format_targets(doc), end="")
    return 1 if strict and not all(t["pass"] for t in doc["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
