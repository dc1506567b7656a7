"""The tools the scenarios time: the ocicopy CLI and library, the naive copier, the skopeo loop, the curl floor.

Each runner takes a :class:`~benchmarks.scenarios.Context` and returns its extra figures (see
:class:`~benchmarks.scenarios.ScenarioFunction`): ``cpu_seconds`` is the tool's own CPU (the CLI's from its
``wait4`` rusage; the library's from ``time.process_time()`` in this process minus the link emulators' threads),
``client_requests`` the requests the tool counted itself.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import anyio
import httpx2

import ocicopy
from benchmarks.procs import PeakRss, wait_cpu
from benchmarks.workload import CLUSTER, PREFIX
from ocicopy import mirror_tag, parse_reference

if TYPE_CHECKING:
    from benchmarks.scenarios import Context
    from benchmarks.workload import ManifestItem, Workload

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- ocicopy


def mirror_command(
    ctx: Context, mode: str, *flags: str, workload: Workload | None = None, per_environment: bool = False
) -> tuple[list[str], Path]:
    """``python -m ocicopy mirror PLAN --mode MODE --json REPORT --quiet [flags]`` and the report's path."""
    plan = ctx.plan_file(mode, workload, per_environment)
    report = ctx.workdir / f"report-{plan.stem}.json"
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--mode", mode, "--json", str(report)]
    return [*cmd, "--quiet", "--no-docker-config", *flags], report


def ocicopy_cli(
    ctx: Context, mode: str, *flags: str, workload: Workload | None = None, per_environment: bool = False
) -> dict[str, Any]:
    """``ocicopy mirror`` in its own process: its report, peak RSS and CPU (rusage of the reaped child)."""
    cmd, report_path = mirror_command(ctx, mode, *flags, workload=workload, per_environment=per_environment)
    log = ctx.workdir / "ocicopy-output.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ctx.env, stdout=out, stderr=subprocess.STDOUT)
        rss = PeakRss(proc.pid)
        code, cpu = wait_cpu(proc)
    if code:
        raise RuntimeError(f"ocicopy mirror exited {code}: {log.read_text(errors='replace')[-2500:]}")
    report = report_summary(json.loads(report_path.read_text()))
    return {
        "cpu_seconds": cpu,
        "client_requests": report["totals"]["requests"],
        "peak_rss_mb": round(rss.result_mb(proc.pid), 1),
        "report": report,
    }


def ocicopy_library(
    ctx: Context, mode: str, workload: Workload | None = None, per_environment: bool = False
) -> dict[str, Any]:
    """``Client.mirror(plan)`` in this process with a fresh client (no start-up, no memory of earlier runs)."""
    plan = ocicopy.parse_plan(ctx.plan(mode, workload, per_environment))

    async def go() -> dict[str, Any]:
        async with ocicopy.Client(ocicopy.ClientOptions(use_docker_config=False)) as client:
            report = await client.mirror(plan)
        return report.model_dump(mode="json")

    # Every thread of this process (the client's workers too), less the link emulators' threads.
    emulators, cpu = ctx.source.emulator_cpu + ctx.mirror.emulator_cpu, time.process_time()
    report = report_summary(anyio.run(go))
    cpu = time.process_time() - cpu - (ctx.source.emulator_cpu + ctx.mirror.emulator_cpu - emulators)
    return {"cpu_seconds": cpu, "in_process": True, "client_requests": report["totals"]["requests"], "report": report}


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """An ocicopy report's seconds, totals and warnings; raises when a deployment failed."""
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


# --------------------------------------------------------------------------- naive


def run_naive(ctx: Context) -> dict[str, Any]:
    """:func:`naive_worker` in its own process, to the cluster-mode destinations."""
    copies = []
    for d, (_, destination) in zip(ctx.workload.deployments, ctx.cluster_destinations(), strict=True):
        dest = parse_reference(destination)
        copies.append({"repository": d.repository, "tag": d.tag, "to_repository": dest.repository, "to_tag": dest.tag})
    job = ctx.workdir / "naive-job.json"
    job.write_text(
        json.dumps({"source": ctx.source.host, "mirror": ctx.mirror.host, "parallel": ctx.parallel, "copies": copies})
    )
    code = "import sys; from benchmarks.runners import naive_worker; sys.exit(naive_worker(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(job)], cwd=ROOT, env=ctx.env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"naive copier exited {done.returncode}: {done.stderr[-2000:]}")
    counts = json.loads(done.stdout)
    return {"client_requests": counts.pop("requests"), **counts}


def naive_worker(job_path: str) -> int:
    """The naive copier's process (run by :func:`run_naive`): ``job_path`` is a JSON job; prints its counts."""
    job = json.loads(Path(job_path).read_text())
    print(json.dumps(anyio.run(naive_copy, job)))
    return 0


async def naive_copy(job: dict[str, Any]) -> dict[str, int]:
    """The naive copier (the "before"): its counts of blobs, bytes, manifests and requests.

    For each deployment in turn: GET the top manifest by tag (and each index child by digest); stream every blob
    of every image (``POST`` for an upload session, ``GET`` → verify → monolithic ``PUT ?digest=``), at most
    ``parallel`` at once; then PUT the children by digest and the top manifest under the destination tag. Never a
    HEAD, never a mount, nothing remembered between deployments or within one (a layer two children share is
    sent twice).
    """
    from benchmarks.engine import Verbs

    counts: Counter[str] = Counter()
    source, mirror = job["source"], job["mirror"]
    options = ocicopy.ClientOptions(use_docker_config=False, mounts=False)
    async with ocicopy.Client(options, plain_http=[source, mirror]) as client:
        verbs, limiter = Verbs(client, source, mirror), anyio.CapacityLimiter(job["parallel"])
        for copy in job["copies"]:
            repo, to_repo = copy["repository"], copy["to_repository"]
            top = await verbs.manifest(repo, copy["tag"])
            children = [await verbs.child(repo, desc) for desc in top.children()]

            async def blob(desc: ocicopy.Descriptor, repo: str = repo, to_repo: str = to_repo) -> None:
                async with limiter:
                    await verbs.stream_blob(repo, to_repo, desc)

            async with anyio.create_task_group() as tg:
                for desc in (d for image in children or [top] for d in image.blobs()):
                    counts["blobs"] += 1
                    counts["blob_bytes"] += desc.size
                    tg.start_soon(blob, desc)
            for child in children:
                await verbs.put_manifest(to_repo, str(child.digest), child)
            await verbs.put_manifest(to_repo, copy["to_tag"], top)
            counts["manifests"] += 1 + len(children)
        counts["requests"] = verbs.requests
    return dict(counts)


# --------------------------------------------------------------------------- floor: curl


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
    with ThreadPoolExecutor(max_workers=ctx.parallel) as pool:
        list(pool.map(lambda b: curl_blob(src, b.repository, dst, dst_repo, b.digest), blobs))
        children = [m for m in manifests if m.child]
        list(pool.map(lambda m: curl_manifest(src, dst, dst_repo, m, m.reference), children))
        tops = [m for m in manifests if not m.child]
        list(pool.map(lambda m: curl_manifest(src, dst, dst_repo, m, tags[m.digest]), tops))
    return {"blobs": len(blobs), "manifests": len(manifests)}


# --------------------------------------------------------------------------- skopeo


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
