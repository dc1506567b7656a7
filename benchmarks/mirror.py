"""Mirror a 30-deployment workload: ocicopy (cluster and service mode, cold and warm) vs curl and skopeo.

Targets (issue), on the workload of :mod:`benchmarks.workload` (10 services × 3 environments sharing base
layers, three of them two-platform indexes, OCI and Docker media types), all in one run:

- cold, cluster mode and service mode: each unique blob leaves the source at most once (blob ``GET`` s per
  digest in the *source* registry's access log), and the wall time is within 1.3× of the floor: every unique
  blob moved once by ``curl GET | curl -T - PUT`` (after a ``POST`` for the location), 8 in parallel, plus
  every manifest (``GET | PUT``), into a fresh mirror;
- warm rerun (same plan, populated mirror): at most 2 requests per deployment in total (both registries'
  access logs), and at least 10× faster than a ``skopeo copy --all`` loop over the same deployments.

Run from the repository root::

    .venv/bin/python -m benchmarks.mirror --quick     # scale 0.2 (about 51 MiB unique), 1 repeat
    .venv/bin/python -m benchmarks.mirror             # scale 1 (about 257 MiB unique), median of 3 repeats

ocicopy runs as a subprocess (``python -m ocicopy mirror PLAN --json REPORT``), like skopeo and curl: its wall
time includes interpreter start-up (bytecode cached in the work directory after one unmeasured start, as for an
installed package). An in-process ``Client.mirror`` warm run is measured too (informative). Every cold scenario
gets a fresh mirror registry; each warm run reuses the mirror its cold run filled. The skopeo warm loop copies
into that populated cluster-mode mirror, to the same destinations. Results: ``benchmarks/results/mirror.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin

import anyio
import httpx

from benchmarks.blob_throughput import PeakRss, _git_revision, cpu_seconds, metadata
from benchmarks.workload import ManifestItem, Workload, build_workload
from ocicopy.client import Client
from ocicopy.options import ClientOptions
from ocicopy.plan import parse_plan
from ocicopy.planner import mirror_tag
from ocicopy.reference import parse_reference
from tests.harness.oracle import skopeo_version
from tests.harness.registry import MARK_PARAM, AccessEntry, RegistryServer, start_registry

MiB: Final = 1024 * 1024
COLD_RATIO_MAX: Final = 1.3
WARM_REQUESTS_PER_DEPLOYMENT_MAX: Final = 2.0
WARM_SPEEDUP_MIN: Final = 10.0
PREFIX, CLUSTER = "mirror", "bench"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mirror.json"


def log(message: str) -> None:
    print(f"[mirror] {message}", file=sys.stderr, flush=True)


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
    """What one registry answered during one scenario, from its access log."""

    requests: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    blob_gets: dict[str, int] = field(default_factory=dict)  # digest -> full GETs answered 200
    bytes_out: int = 0  # response bodies of blob and manifest GETs
    uploads: dict[str, int] = field(default_factory=dict)  # digest -> uploads committed (PUT ?digest= 201)
    upload_repos: dict[str, str] = field(default_factory=dict)  # digest -> a repository it was uploaded to
    errors: int = 0  # answers >= 400 other than a HEAD 404
    connections: int = 0  # distinct client address:port pairs seen (TCP connections opened by the tool)

    @classmethod
    def of(cls, entries: Iterable[AccessEntry]) -> Traffic:
        t = cls()
        kinds: Counter[str] = Counter()
        for e in entries:
            t.requests += 1
            kind = classify(e)
            kinds[kind] += 1
            if e.status >= 400 and not (e.method == "HEAD" and e.status == 404):
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

    @property
    def max_uploads_per_blob(self) -> int:
        return max(self.uploads.values(), default=0)

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
            "blobs_fetched_more_than_once": {d: n for d, n in self.blob_gets.items() if n > 1},
            "uploads": sum(self.uploads.values()),
            "max_uploads_per_blob": self.max_uploads_per_blob,
            "uploaded_bytes": self.uploaded_bytes(sizes),
        }


# --------------------------------------------------------------------------- samples


@dataclass
class Sample:
    """One measured scenario run."""

    scenario: str
    repeat: int
    seconds: float
    tool_cpu_seconds: float
    source: Traffic
    mirror: Traffic
    registry_cpu_seconds: dict[str, float]
    peak_rss_mb: float | None = None
    report: dict[str, Any] | None = None  # ocicopy: seconds, totals
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return self.source.requests + self.mirror.requests


@dataclass
class Bench:
    """The run's fixed parts: workload, source registry, plans, work directory."""

    workload: Workload
    source: RegistryServer
    workdir: Path
    sizes: dict[str, int]
    parallel: int
    samples: list[Sample] = field(default_factory=list)
    inprocess_warmed: bool = False
    _mirrors: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def ocicopy_env(self) -> dict[str, str]:
        """The environment of ``python -m ocicopy``: bytecode cached in the work directory.

        Like an installed package (pip compiles ``.pyc`` files), not recompiling every module per run even when
        ``PYTHONDONTWRITEBYTECODE`` is set; nothing is written into the repository.
        """
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return env | {"PYTHONPYCACHEPREFIX": str(self.workdir / "pycache")}

    def warm_up_ocicopy(self) -> None:
        """One unmeasured start (``--version`` imports the whole package): fills the bytecode cache."""
        cmd = [sys.executable, "-m", "ocicopy", "--version"]
        subprocess.run(cmd, cwd=ROOT, env=self.ocicopy_env, check=True, capture_output=True)

    @contextmanager
    def fresh_mirror(self, label: str) -> Iterator[RegistryServer]:
        """A new, empty mirror registry, removed afterwards."""
        root = self.workdir / f"mirror-{next(self._mirrors)}-{label}"
        server = start_registry(root)
        try:
            yield server
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    def plan_file(self, mirror: RegistryServer, mode: str) -> Path:
        path = self.workdir / f"plan-{mode}-{mirror.host.replace(':', '_')}.json"
        plan = self.workload.plan(self.source.host, mirror.host, mode=mode, cluster=CLUSTER, prefix=PREFIX)
        path.write_text(json.dumps(plan, indent=2))
        return path

    def cluster_destinations(self, mirror: RegistryServer) -> list[tuple[str, str]]:
        """(source, destination) per deployment, as cluster mode names them."""
        out = []
        for d in self.workload.deployments:
            source = d.image(self.source.host)
            out.append((source, f"{mirror.host}/{PREFIX}/{CLUSTER}:{mirror_tag(parse_reference(source))}"))
        return out

    def measure(self, scenario: str, repeat: int, mirror: RegistryServer, run: Callable[[], dict[str, Any]]) -> Sample:
        """Run one scenario between marks of both access logs; CPU of the tool and of both registries."""
        src_mark, dst_mark = self.source.mark(), mirror.mark()
        reg_before = cpu_seconds(self.source.process.pid), cpu_seconds(mirror.process.pid)
        children_before = _children_cpu()
        started = time.monotonic()
        out = run()
        seconds = time.monotonic() - started
        tool_cpu = out.pop("cpu_seconds", None)
        if tool_cpu is None:
            tool_cpu = _children_cpu() - children_before
        reg_after = cpu_seconds(self.source.process.pid), cpu_seconds(mirror.process.pid)
        sample = Sample(
            scenario=scenario,
            repeat=repeat,
            seconds=seconds,
            tool_cpu_seconds=round(tool_cpu, 2),
            source=traffic(self.source, src_mark),
            mirror=traffic(mirror, dst_mark),
            registry_cpu_seconds={
                "source": round(reg_after[0] - reg_before[0], 2),
                "mirror": round(reg_after[1] - reg_before[1], 2),
            },
            peak_rss_mb=out.pop("peak_rss_mb", None),
            report=out.pop("report", None),
            extra=out,
        )
        self._learn_sizes(sample.mirror, mirror)
        self.samples.append(sample)
        log(
            f"  {scenario:26s} repeat {repeat}: {seconds:7.2f} s, {sample.requests:5d} requests "
            f"(source {sample.source.requests}, mirror {sample.mirror.requests}) on "
            f"{sample.source.connections} + {sample.mirror.connections} connections, "
            f"source blob GETs {sum(sample.source.blob_gets.values())} (max {sample.source.max_gets_per_blob}/digest), "
            f"CPU tool {sample.tool_cpu_seconds:.2f} s, registries {sample.registry_cpu_seconds['source']:.2f} + "
            f"{sample.registry_cpu_seconds['mirror']:.2f} s"
        )
        return sample

    def _learn_sizes(self, traffic: Traffic, mirror: RegistryServer) -> None:
        """Sizes of uploaded blobs that are not the workload's (the ledger), from a HEAD on the mirror."""
        for digest, repo in traffic.upload_repos.items():
            if digest not in self.sizes:
                response = httpx.head(f"{mirror.url}/v2/{repo}/blobs/{digest}", timeout=30)
                self.sizes[digest] = int(response.headers.get("content-length", 0))


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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- floor: curl


def _curl(*args: str) -> list[str]:
    return ["curl", "-sS", "-f", *args]


def curl_blob(src: RegistryServer, src_repo: str, dst: RegistryServer, dst_repo: str, digest: str) -> None:
    """``POST`` for a location, then ``curl GET | curl -T - PUT ?digest=`` (streamed, never buffered)."""
    post = _curl("-X", "POST", "-o", "/dev/null", "-w", "%header{location}", f"{dst.url}/v2/{dst_repo}/blobs/uploads/")
    location = subprocess.run(post, capture_output=True, text=True, check=True).stdout.strip()
    target = httpx.URL(urljoin(dst.url + "/", location)).copy_add_param("digest", digest)
    get = _curl(f"{src.url}/v2/{src_repo}/blobs/{digest}")
    put = _curl("-o", "/dev/null", "-w", "%{http_code}", "-T", "-", "-X", "PUT")
    put += ["-H", "Content-Type: application/octet-stream", str(target)]
    _pipe(get, put, f"blob {digest}")


def curl_manifest(src: RegistryServer, dst: RegistryServer, dst_repo: str, item: ManifestItem, ref: str) -> None:
    """``curl GET | curl PUT`` of a manifest's exact bytes (small: ``--data-binary @-``)."""
    get = _curl("-H", f"Accept: {item.media_type}", f"{src.url}/v2/{item.repository}/manifests/{item.reference}")
    put = _curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", f"Content-Type: {item.media_type}")
    put += ["--data-binary", "@-", f"{dst.url}/v2/{dst_repo}/manifests/{ref}"]
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


def run_floor(bench: Bench, mirror: RegistryServer) -> dict[str, Any]:
    """Every unique blob once (largest first), then index children, then the tagged tops; 8 in parallel."""
    dst_repo = f"{PREFIX}/{CLUSTER}"
    blobs = sorted(bench.workload.blobs().values(), key=lambda b: -b.size)
    manifests = bench.workload.manifests()
    tags = {
        item.digest: mirror_tag(parse_reference(f"{bench.source.host}/{item.repository}:{item.reference}"))
        for item in manifests
        if not item.child
    }
    with ThreadPoolExecutor(max_workers=bench.parallel) as pool:
        list(pool.map(lambda b: curl_blob(bench.source, b.repository, mirror, dst_repo, b.digest), blobs))
        children = [m for m in manifests if m.child]
        list(pool.map(lambda m: curl_manifest(bench.source, mirror, dst_repo, m, m.reference), children))
        tops = [m for m in manifests if not m.child]
        list(pool.map(lambda m: curl_manifest(bench.source, mirror, dst_repo, m, tags[m.digest]), tops))
    return {"blobs": len(blobs), "manifests": len(manifests)}


# --------------------------------------------------------------------------- ocicopy


def run_ocicopy(bench: Bench, mirror: RegistryServer, mode: str) -> dict[str, Any]:
    """``python -m ocicopy mirror PLAN --mode MODE --json REPORT --quiet`` in its own process."""
    plan, report_path = bench.plan_file(mirror, mode), bench.workdir / f"report-{mode}.json"
    report_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--mode", mode, "--json", str(report_path)]
    cmd += ["--quiet", "--no-docker-config"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=bench.ocicopy_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rss = PeakRss(proc.pid)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"ocicopy mirror exited {proc.returncode}: {err.decode()[-2000:]} {out.decode()[-500:]}")
    report = json.loads(report_path.read_text())
    return {"peak_rss_mb": round(rss.result_mb(proc.pid), 1), "report": _report_summary(report)}


def run_ocicopy_inprocess(bench: Bench, mirror: RegistryServer, mode: str) -> dict[str, Any]:
    """``Client.mirror(plan)`` in this process with a fresh client (no start-up, no memory of earlier runs)."""
    plan = parse_plan(bench.workload.plan(bench.source.host, mirror.host, mode=mode, cluster=CLUSTER, prefix=PREFIX))

    async def go() -> dict[str, Any]:
        async with Client(ClientOptions(use_docker_config=False)) as client:
            report = await client.mirror(plan)
        return report.model_dump(mode="json")

    cpu_before = time.process_time()
    report = anyio.run(go)
    return {"cpu_seconds": time.process_time() - cpu_before, "report": _report_summary(report)}


def _report_summary(report: dict[str, Any]) -> dict[str, Any]:
    failed = [d for d in report["deployments"] if d["action"] == "failed"]
    if failed:
        raise RuntimeError(f"ocicopy: {len(failed)} deployment(s) failed, e.g. {failed[0]['error']}")
    return {"seconds": report["seconds"], "totals": report["totals"], "warnings": report["warnings"]}


# --------------------------------------------------------------------------- skopeo


def run_skopeo_loop(bench: Bench, mirror: RegistryServer) -> dict[str, Any]:
    """``skopeo copy --all`` per deployment, in plan order, to the cluster-mode destinations."""
    per_copy = []
    for source, destination in bench.cluster_destinations(mirror):
        cmd = ["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
        cmd += [f"docker://{source}", f"docker://{destination}"]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        per_copy.append(time.monotonic() - started)
        if done.returncode:
            raise RuntimeError(f"skopeo copy {source} failed: {done.stderr[-2000:]}")
    return {"per_copy_seconds_median": round(statistics.median(per_copy), 3), "copies": len(per_copy)}


# --------------------------------------------------------------------------- the run


def measure_inprocess(bench: Bench, scenario: str, repeat: int, mirror: RegistryServer, mode: str) -> None:
    """The in-process warm row; the first one of the run is preceded by an unmeasured run (one-time costs)."""
    if not bench.inprocess_warmed:
        run_ocicopy_inprocess(bench, mirror, mode)
        bench.inprocess_warmed = True
    bench.measure(scenario, repeat, mirror, lambda: run_ocicopy_inprocess(bench, mirror, mode))


def scenario_cluster(bench: Bench, repeat: int) -> None:
    with bench.fresh_mirror("cluster") as mirror:
        bench.measure("cluster cold", repeat, mirror, lambda: run_ocicopy(bench, mirror, "cluster"))
        bench.measure("cluster warm", repeat, mirror, lambda: run_ocicopy(bench, mirror, "cluster"))
        measure_inprocess(bench, "cluster warm in-process", repeat, mirror, "cluster")
        bench.measure("skopeo warm loop", repeat, mirror, lambda: run_skopeo_loop(bench, mirror))


def scenario_service(bench: Bench, repeat: int) -> None:
    with bench.fresh_mirror("service") as mirror:
        bench.measure("service cold", repeat, mirror, lambda: run_ocicopy(bench, mirror, "service"))
        bench.measure("service warm", repeat, mirror, lambda: run_ocicopy(bench, mirror, "service"))
        measure_inprocess(bench, "service warm in-process", repeat, mirror, "service")


def scenario_floor(bench: Bench, repeat: int) -> None:
    with bench.fresh_mirror("floor") as mirror:
        sample = bench.measure("floor", repeat, mirror, lambda: run_floor(bench, mirror))
    missing = set(bench.workload.blobs()) - set(sample.mirror.uploads)
    if missing or sample.mirror.errors:
        raise RuntimeError(f"floor did not upload {len(missing)} blob(s); {sample.mirror.errors} error answer(s)")


def scenario_skopeo_cold(bench: Bench, repeat: int) -> None:
    with bench.fresh_mirror("skopeo") as mirror:
        bench.measure("skopeo cold loop", repeat, mirror, lambda: run_skopeo_loop(bench, mirror))


def run(args: argparse.Namespace, workdir: Path) -> tuple[Workload, Bench, float]:
    log(f"generating the workload (scale {args.scale}, content {args.content})")
    workload = build_workload(args.scale, args.content, args.jobs, log)
    log(
        f"{len(workload.blobs())} unique blobs, {workload.unique_bytes / MiB:.1f} MiB, {len(workload.images)} source "
        f"tags, {len(workload.deployments)} deployments; generated in {workload.generation_seconds:.1f} s "
        f"({workload.content} content)"
    )
    source = start_registry(workdir / "source")
    try:
        started = time.monotonic()
        workload.push(source)
        push_seconds = time.monotonic() - started
        log(f"pushed into the source registry {source.host} in {push_seconds:.1f} s")
        sizes = {d: b.size for d, b in workload.blobs().items()}
        bench = Bench(workload, source, workdir, sizes, args.parallel)
        bench.warm_up_ocicopy()
        order: list[Callable[[Bench, int], None]] = [scenario_floor, scenario_cluster, scenario_service]
        for repeat in range(args.repeats):
            log(f"repeat {repeat + 1}/{args.repeats}")
            shift = repeat % len(order)  # rotate so no scenario always runs first
            for scenario in order[shift:] + order[:shift]:
                scenario(bench, repeat)
            if not args.no_skopeo_cold and (repeat == 0 or args.skopeo_cold_every_repeat):
                scenario_skopeo_cold(bench, repeat)
        return workload, bench, push_seconds
    finally:
        source.stop()


# --------------------------------------------------------------------------- report


SCENARIOS: Final = (
    "floor",
    "cluster cold",
    "service cold",
    "cluster warm",
    "service warm",
    "cluster warm in-process",
    "service warm in-process",
    "skopeo warm loop",
    "skopeo cold loop",
)


def summarise(workload: Workload, samples: list[Sample], sizes: dict[str, int]) -> dict[str, Any]:
    """Medians per scenario, the ratios, and a verdict per target."""
    deployments = len(workload.deployments)
    unique = set(workload.blobs())
    per: dict[str, dict[str, Any]] = {}
    for name in SCENARIOS:
        group = [s for s in samples if s.scenario == name]
        if not group:
            continue
        reports = [s.report for s in group if s.report]
        per[name] = {
            "repeats": len(group),
            "seconds_median": round(statistics.median(s.seconds for s in group), 3),
            "seconds": [round(s.seconds, 3) for s in group],
            "requests_median": statistics.median(s.requests for s in group),
            "requests_max": max(s.requests for s in group),
            "requests_per_deployment_max": round(max(s.requests for s in group) / deployments, 3),
            "connections_median": statistics.median(s.source.connections + s.mirror.connections for s in group),
            "source_requests_median": statistics.median(s.source.requests for s in group),
            "mirror_requests_median": statistics.median(s.mirror.requests for s in group),
            "source_blob_gets_median": statistics.median(sum(s.source.blob_gets.values()) for s in group),
            "source_max_gets_per_blob": max(s.source.max_gets_per_blob for s in group),
            "source_missing_blobs_max": max(len(unique - set(s.source.blob_gets)) for s in group),
            "source_bytes_out_median": statistics.median(s.source.bytes_out for s in group),
            "mirror_uploads_median": statistics.median(sum(s.mirror.uploads.values()) for s in group),
            "mirror_max_uploads_per_blob": max(s.mirror.max_uploads_per_blob for s in group),
            "mirror_bytes_in_median": statistics.median(s.mirror.uploaded_bytes(sizes) for s in group),
            "tool_cpu_seconds_median": round(statistics.median(s.tool_cpu_seconds for s in group), 2),
            "registry_cpu_seconds_median": {
                k: round(statistics.median(s.registry_cpu_seconds[k] for s in group), 2) for k in ("source", "mirror")
            },
        }
        if reports:
            per[name]["report_seconds_median"] = round(statistics.median(r["seconds"] for r in reports), 3)
            per[name]["report_requests_median"] = statistics.median(r["totals"]["requests"] for r in reports)
            per[name]["report_totals_last"] = reports[-1]["totals"]
        rss = [s.peak_rss_mb for s in group if s.peak_rss_mb is not None]
        if rss:
            per[name]["peak_rss_mb_max"] = max(rss)
    floor = per["floor"]["seconds_median"]
    skopeo_warm = per["skopeo warm loop"]["seconds_median"]
    targets: dict[str, dict[str, Any]] = {}
    for mode in ("cluster", "service"):
        cold, warm = per[f"{mode} cold"], per[f"{mode} warm"]
        targets[f"{mode} cold: each unique blob leaves the source at most once"] = {
            "value": f"max {cold['source_max_gets_per_blob']} GET per digest, "
            f"{cold['source_missing_blobs_max']} never read",
            "ok": cold["source_max_gets_per_blob"] <= 1 and cold["source_missing_blobs_max"] == 0,
        }
        ratio = cold["seconds_median"] / floor
        targets[f"{mode} cold wall <= {COLD_RATIO_MAX}x floor"] = {
            "value": f"{ratio:.2f}x ({cold['seconds_median']:.2f} s vs {floor:.2f} s)",
            "ratio": round(ratio, 3),
            "engine_only_ratio": round(cold["report_seconds_median"] / floor, 3),
            "ok": ratio <= COLD_RATIO_MAX,
        }
        per_dep = warm["requests_per_deployment_max"]
        targets[f"{mode} warm <= {WARM_REQUESTS_PER_DEPLOYMENT_MAX:g} requests/deployment"] = {
            "value": f"{per_dep:.2f} ({warm['requests_max']} requests, {deployments} deployments)",
            "ok": per_dep <= WARM_REQUESTS_PER_DEPLOYMENT_MAX,
        }
        speedup = skopeo_warm / warm["seconds_median"]
        targets[f"{mode} warm >= {WARM_SPEEDUP_MIN:g}x faster than skopeo warm loop"] = {
            "value": f"{speedup:.1f}x ({warm['seconds_median']:.2f} s vs {skopeo_warm:.2f} s)",
            "ratio": round(speedup, 2),
            "ok": speedup >= WARM_SPEEDUP_MIN,
        }
    informative = {
        "requests: skopeo warm loop / cluster warm": round(
            per["skopeo warm loop"]["requests_median"] / per["cluster warm"]["requests_median"], 2
        ),
    }
    for mode in ("cluster", "service"):
        inproc = per.get(f"{mode} warm in-process")
        if inproc:
            informative[f"speed: skopeo warm loop / {mode} warm in-process"] = round(
                skopeo_warm / inproc["seconds_median"], 2
            )
        informative[f"{mode} cold engine seconds (report) / floor"] = targets[
            f"{mode} cold wall <= {COLD_RATIO_MAX}x floor"
        ]["engine_only_ratio"]
    if "skopeo cold loop" in per:
        informative["speed: skopeo cold loop / cluster cold"] = round(
            per["skopeo cold loop"]["seconds_median"] / per["cluster cold"]["seconds_median"], 2
        )
    return {
        "scenarios": per,
        "targets": targets,
        "informative": informative,
        "all_ok": all(t["ok"] for t in targets.values()),
    }


def print_report(workload: Workload, summary: dict[str, Any], repeats: int) -> None:
    w = workload.summary()
    print(
        f"workload: scale {w['scale']:g}, {w['content']} content, {w['deployments']} deployments "
        f"({w['services']} services x {len(w['environments'])} environments), {w['source_tags']} source tags, "
        f"{w['unique_blobs']} unique blobs, {w['unique_bytes'] / MiB:.1f} MiB unique; median of {repeats}"
    )
    per = summary["scenarios"]
    floor = per["floor"]["seconds_median"]
    header = (
        f"{'scenario':26s} {'wall s':>7s} {'x floor':>7s} {'engine s':>8s} {'src GETs':>8s} {'max/dg':>6s} "
        f"{'src MiB':>8s} {'mir MiB':>8s} {'requests':>8s} {'/deploy':>7s} {'conns':>5s} {'report':>6s} {'CPU s':>6s} "
        f"{'RSS MB':>6s}"
    )
    print(header)
    print("-" * len(header))
    for name, s in per.items():
        engine = f"{s['report_seconds_median']:.2f}" if "report_seconds_median" in s else "-"
        report = f"{s['report_requests_median']:.0f}" if "report_requests_median" in s else "-"
        rss = f"{s['peak_rss_mb_max']:.0f}" if "peak_rss_mb_max" in s else "-"
        print(
            f"{name:26s} {s['seconds_median']:7.2f} {s['seconds_median'] / floor:7.2f} {engine:>8s} "
            f"{s['source_blob_gets_median']:8.0f} {s['source_max_gets_per_blob']:6d} "
            f"{s['source_bytes_out_median'] / MiB:8.1f} {s['mirror_bytes_in_median'] / MiB:8.1f} "
            f"{s['requests_median']:8.0f} {s['requests_median'] / w['deployments']:7.2f} "
            f"{s['connections_median']:5.0f} {report:>6s} "
            f"{s['tool_cpu_seconds_median']:6.2f} {rss:>6s}"
        )
    print("targets:")
    for name, t in summary["targets"].items():
        print(f"  {'PASS' if t['ok'] else 'FAIL'}  {name}: {t['value']}")
    print("informative:")
    for name, value in summary["informative"].items():
        print(f"  {name}: {value:g}x")


def print_phases(samples: list[Sample]) -> None:
    """Requests per phase (last repeat of each scenario), on stderr: where the requests go."""
    last: dict[str, Sample] = {s.scenario: s for s in samples}
    log("requests per phase (last repeat), source | mirror:")
    for name in SCENARIOS:
        if name in last:
            s = last[name]
            src = ", ".join(f"{k} {v}" for k, v in s.source.by_kind.items())
            dst = ", ".join(f"{k} {v}" for k, v in s.mirror.by_kind.items())
            log(f"  {name:26s} {src} | {dst}")


def write_results(
    args: argparse.Namespace,
    workload: Workload,
    samples: list[Sample],
    summary: dict[str, Any],
    sizes: dict[str, int],
    push_seconds: float,
    revision_at_start: str,
) -> None:
    machine = metadata() | {"skopeo_version": skopeo_version()}
    if machine["git_revision"] != revision_at_start:
        log(f"WARNING: the tree moved during the run ({revision_at_start} -> {machine['git_revision']}): rerun")
    doc = {
        "benchmark": "mirror",
        "command": " ".join(["python -m benchmarks.mirror", *(args.argv or [])]),
        "workload": workload.summary() | {"push_seconds": round(push_seconds, 2)},
        "repeats": args.repeats,
        "ocicopy_runner": "subprocess: python -m ocicopy mirror PLAN --json REPORT (in-process rows: Client.mirror)",
        "floor_parallelism": args.parallel,
        "targets": {
            "cold_ratio_max": COLD_RATIO_MAX,
            "warm_requests_per_deployment_max": WARM_REQUESTS_PER_DEPLOYMENT_MAX,
            "warm_speedup_min": WARM_SPEEDUP_MIN,
        },
        "summary": summary,
        "samples": [
            {k: v for k, v in asdict(s).items() if k not in ("source", "mirror")}
            | {"seconds": round(s.seconds, 3), "source": s.source.as_json(sizes), "mirror": s.mirror.as_json(sizes)}
            for s in samples
        ],
        "machine": machine | {"git_revision_at_start": revision_at_start},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"results written to {RESULTS.relative_to(ROOT)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mirror", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="workload size multiplier (default 1: ~257 MiB)")
    parser.add_argument("--repeats", type=int, default=None, metavar="N", help="runs of every scenario (default 3)")
    parser.add_argument("--quick", action="store_true", help="scale 0.2 and 1 repeat (unless --repeats is given)")
    parser.add_argument("--content", choices=["auto", "usr", "random"], default="auto", help="layer content")
    parser.add_argument("--jobs", type=int, default=None, help="processes generating layers (default: CPUs)")
    parser.add_argument("--parallel", type=int, default=8, help="curl transfers in flight for the floor (8)")
    parser.add_argument("--no-skopeo-cold", action="store_true", help="skip the (informative) skopeo cold loop")
    parser.add_argument("--skopeo-cold-every-repeat", action="store_true", help="skopeo cold loop in every repeat")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary directory")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.scale = 0.2
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.scale <= 0 or args.repeats < 1 or args.parallel < 1:
        parser.error("--scale must be positive, --repeats and --parallel at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    revision_at_start = _git_revision()
    with tempfile.TemporaryDirectory(prefix="ocicopy-mirror-bench-", dir=args.workdir) as tmp:
        workload, bench, push_seconds = run(args, Path(tmp))
    samples, sizes = bench.samples, bench.sizes
    summary = summarise(workload, samples, sizes)
    print_phases(samples)
    print_report(workload, summary, args.repeats)
    write_results(args, workload, samples, summary, sizes, push_seconds, revision_at_start)
    return 1 if args.strict and not summary["all_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
