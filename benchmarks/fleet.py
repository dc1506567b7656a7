"""``python -m benchmarks fleet``: the workload mirrored to several clusters, the source on the WAN (issue 12).

A source registry behind the ``wan`` link (40 ms RTT, 200 Mbit/s by default) and ``--clusters`` mirror
registries on loopback (the mirror next to each cluster). Each way is measured cold (a fresh prefix in every
mirror: nothing to skip or mount), ``--repeats`` times, in alternating order:

- ``fleet``: one ``ocicopy mirror`` of a fleet plan (every cluster in cluster mode);
- ``dask``: the same on a Dask cluster of 2 worker processes started before (``--dask ADDRESS``);
- ``workers2``: the same with ``--workers 2`` (the run starts its local Dask cluster, and stops it);
- ``sequential``: one ``ocicopy mirror`` per cluster, one after the other (today's way without a fleet plan);
- ``parallel``: one ``ocicopy mirror`` per cluster, all at once;
- ``skopeo``: ``skopeo copy --all`` per deployment and cluster (when installed; ``--no-skopeo`` to leave out).

Figures per way: wall time (median), bytes the source sent (its access log: every blob GET), the most full
GETs of one blob at the source, requests. The link floor is the unique bytes *once* through the source link
plus the dependency chain's round trips (:func:`benchmarks.network.link_floor`): what reading each byte once
costs at best. Targets: ``fleet`` reads each blob from the source once and takes at most 1.2 x the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.network import Link, Profile, link_floor, linked, parse_bandwidth, parse_rtt
from benchmarks.results import Results, Row, Target, judge, machine_metadata
from benchmarks.scenarios import tool_env
from benchmarks.workload import PREFIX, Workload, build_workload
from harness.netem import PROFILES
from harness.registry import RegistryServer, blob_gets, start_registry
from ocicopy import mirror_tag, parse_reference

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("fleet", "dask", "workers2", "sequential", "parallel", "skopeo")
FLOOR_RATIO = 1.2


def say(text: str) -> None:
    print(f"[fleet] {text}", file=sys.stderr, flush=True)


@contextmanager
def fresh_mirrors(root: Path, clusters: int) -> Iterator[dict[str, str]]:
    """``clusters`` new mirror registries (cluster name → host), stopped and removed afterwards."""
    with ExitStack() as stack:
        servers = [stack.enter_context(start_registry(root / f"c{i}")) for i in range(clusters)]
        yield {f"c{i}": s.host for i, s in enumerate(servers)}
    shutil.rmtree(root, ignore_errors=True)


def fleet_plan(workload: Workload, source: str, mirrors: dict[str, str], prefix: str) -> dict[str, Any]:
    """Every deployment to every cluster, each cluster's mirror in cluster mode."""
    one = workload.plan(source, next(iter(mirrors.values())), mode="cluster", prefix=prefix)
    return {
        "version": 2,
        "mirrors": {name: {"registry": host, "prefix": prefix, "mode": "cluster"} for name, host in mirrors.items()},
        "registries": {host: {"plain_http": True} for host in (source, *mirrors.values())},
        "deployments": one["deployments"],
    }


def cluster_plan(workload: Workload, source: str, host: str, name: str, prefix: str) -> dict[str, Any]:
    return workload.plan(source, host, mode="cluster", cluster=name, prefix=prefix)


class Run:
    """The commands of one way, against fresh prefixes; ``__call__`` is what is timed."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env

    def ocicopy(self, plans: list[dict[str, Any]], parallel: bool, extra: tuple[str, ...] = ()) -> None:
        procs, paths = [], []
        for i, plan in enumerate(plans):
            path = self.work / f"plan-{i}.json"
            path.write_text(json.dumps(plan))
            paths.append(path)
        cmds = [
            [sys.executable, "-m", "ocicopy", "mirror", str(p), "--quiet", "--no-docker-config", *extra] for p in paths
        ]
        if parallel:
            procs = [subprocess.Popen(c, cwd=ROOT, env=self.env, stderr=subprocess.PIPE) for c in cmds]
            errors = [(p.wait(), p.stderr.read() if p.stderr else b"") for p in procs]
        else:
            errors = []
            for c in cmds:
                done = subprocess.run(c, cwd=ROOT, env=self.env, capture_output=True, check=False)
                errors.append((done.returncode, done.stderr))
        failed = [e.decode(errors="replace")[-1500:] for code, e in errors if code]
        if failed:
            raise RuntimeError(f"ocicopy mirror failed: {failed[0]}")

    def skopeo(self, pairs: list[tuple[str, str]]) -> None:
        for source, destination in pairs:
            cmd = ["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
            done = subprocess.run([*cmd, f"docker://{source}", f"docker://{destination}"], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"skopeo copy {source} failed: {done.stderr[-1500:]}")


def measure(
    way: str,
    workload: Workload,
    source: RegistryServer,
    source_host: str,
    mirrors: dict[str, str],
    run: Run,
    n: int,
    dask: str = "",
) -> dict[str, Any]:
    """One cold run of ``way`` into fresh prefixes: seconds, bytes from the source, GETs per blob, requests."""
    prefix = f"{PREFIX}-{way}-{n}" if n >= 0 else f"{PREFIX}-warm-up{n}"
    mark = source.mark()
    started = time.monotonic()
    if way in ("fleet", "dask", "workers2"):
        extra = {"fleet": (), "dask": ("--dask", dask), "workers2": ("--workers", "2")}[way]
        run.ocicopy([fleet_plan(workload, source_host, mirrors, prefix)], parallel=False, extra=extra)
    elif way in ("sequential", "parallel"):
        plans = [cluster_plan(workload, source_host, host, name, prefix) for name, host in mirrors.items()]
        run.ocicopy(plans, parallel=way == "parallel")
    else:
        pairs = []
        for name, host in mirrors.items():
            for d in workload.deployments:
                src = d.image(source_host)
                pairs.append((src, f"{host}/{prefix}/{name}:{mirror_tag(parse_reference(src))}"))
        run.skopeo(pairs)
    seconds = time.monotonic() - started
    entries = source.requests(mark)
    gets = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(entries) if e.status in (200, 206))
    unique = set(workload.blobs())
    return {
        "seconds": seconds,
        "bytes_from_source": sum(e.bytes_written for e in blob_gets(entries)),
        "max_source_gets_per_blob": max(gets.values(), default=0),
        "blobs_not_read_once": len([d for d in unique if gets.get(d, 0) != 1]),
        "source_requests": len(entries),
    }


def noop(task: Any, run_id: str, limit: int, *deps: Any) -> int:
    """A Dask task doing nothing: what scheduling one costs."""
    return 0


def growth(
    deployments: int = 5000, clusters: int = 20, layers: int = 5, dask_workers: int = 0, dask_tasks: int = 2000
) -> dict[str, Any]:
    """The cost of growth, without I/O: a plan of ``deployments`` x ``clusters`` parsed and split per cluster, its
    work graph compiled (seconds, peak memory, nodes), then executed locally with no-op tasks (anyio: one task
    per node, each waiting for its dependencies): tasks per second and per-task overhead. Then its coarse tasks
    (what an executor runs: a blob fan-out per read, a chain per copy) and, with ``dask_workers``, ``dask_tasks``
    of them (every blob task, then chains) run as no-ops on a local Dask cluster of that many worker processes,
    submitted as one graph: tasks per second and per-task overhead there."""
    import tracemalloc

    import anyio

    from ocicopy import parse_plan
    from ocicopy.digest import Digest
    from ocicopy.graph import BlobRef, Copy, ManifestRef, compile_graph

    services = max(1, deployments // 10)
    plan_doc = {
        "version": 2,
        "mirrors": {f"c{i}": {"registry": f"m{i}.example.com", "mode": "cluster"} for i in range(clusters)},
        "deployments": [
            {
                "service": f"s{i % services}",
                "environment": f"e{i // services}",
                "image": f"src.example.com/s{i % services}:1",
            }
            for i in range(deployments)
        ],
    }
    started = time.perf_counter()
    plan = parse_plan(plan_doc)
    cluster_plans = plan.cluster_plans()
    plan_seconds = time.perf_counter() - started

    def dg(text: str) -> Digest:
        return Digest.of(text.encode())

    base = tuple(BlobRef(dg(f"base{i}"), 10 << 20) for i in range(2))
    images = {
        f"s{i}": ManifestRef(
            dg(f"m{i}"), 1000, base + tuple(BlobRef(dg(f"l{i}-{j}"), 1 << 20) for j in range(layers - 2))
        )
        for i in range(services)
    }
    copies = [
        Copy("src.example.com", sub.target.registry or "", f"mirror/{name}", f"{d.service}-1", images[d.service])
        for name, sub in cluster_plans
        for d in sub.deployments
    ]
    started = time.perf_counter()
    graph = compile_graph(copies)
    order = graph.order()
    graph_seconds = time.perf_counter() - started
    tracemalloc.start()  # a second build, traced: memory (tracing slows it, so not timed)
    compile_graph(copies).order()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    async def execute() -> float:
        done = {key: anyio.Event() for key in graph.nodes}

        async def task(key: str) -> None:
            for dep in graph.nodes[key].deps:
                await done[dep].wait()
            done[key].set()

        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for node in order:
                tg.start_soon(task, node.key)
        return time.perf_counter() - t

    run_seconds = anyio.run(execute)

    from ocicopy.executor import Chain, tasks_of

    chains = {
        n.key: Chain(f"src.example.com/{n.repository}@{n.digest}", f"{n.registry}/{n.repository}:t", n.digest)
        for n in graph.of_kind("tag")
        if n.digest is not None
    }
    started = time.perf_counter()
    tasks = tasks_of(graph, chains)
    tasks_seconds = time.perf_counter() - started
    dask: dict[str, Any] = {}
    if dask_workers:
        from ocicopy.dask_executor import DaskExecutor, local_cluster

        subset = [t for t in tasks if not t.deps][:dask_tasks]
        subset += [t for t in tasks if t.deps][: max(0, dask_tasks - len(subset))]
        with local_cluster(dask_workers, threads=4) as client:
            executor = DaskExecutor(client)
            executor.run_id = "growth"
            t = time.perf_counter()
            dsk, keys = executor.graph(subset, fn=noop)
            client.get(dsk, keys)
            dask_seconds = time.perf_counter() - t
        dask = {
            "dask_workers": dask_workers,
            "dask_tasks": len(subset),
            "dask_noop_seconds": round(dask_seconds, 3),
            "dask_tasks_per_second": round(len(subset) / dask_seconds),
            "dask_ms_per_task": round(dask_seconds / len(subset) * 1e3, 2),
            "dask_all_tasks_estimate_seconds": round(dask_seconds / len(subset) * len(tasks), 1),
        }
    return {
        "deployments": deployments,
        "clusters": clusters,
        "plan_seconds": round(plan_seconds, 3),
        "copies": len(copies),
        "graph_seconds": round(graph_seconds, 3),
        "graph_peak_mib": round(peak / 2**20, 1),
        "nodes": graph.summary().nodes,
        "local_noop_seconds": round(run_seconds, 3),
        "local_tasks_per_second": round(len(order) / run_seconds),
        "local_us_per_task": round(run_seconds / len(order) * 1e6, 1),
        "coarse_tasks": len(tasks),
        "coarse_tasks_seconds": round(tasks_seconds, 3),
        **dask,
    }


def subset_run(deployments: int = 500, clusters: int = 5, dask_workers: int = 2) -> dict[str, Any]:
    """A ``deployments`` x ``clusters`` fleet run for real against fake registries (in memory, on loopback; one
    source and a mirror per cluster, service mode): cold, then warm, locally and (``dask_workers``) on a local
    Dask cluster of that many worker processes. Seconds, (deployment, cluster) results per second, requests."""
    import anyio

    from harness import images as im
    from harness.fake_registry import FakeRegistry
    from ocicopy import Client, ClientOptions, parse_plan

    services = max(1, deployments // 10)
    with ExitStack() as stack:
        source = stack.enter_context(FakeRegistry())
        base = im.layer(1, 4096)
        for i in range(services):
            source.seed(f"src/s{i}", "1", im.make_image([base, im.layer(1000 + i, 2048)]))
        ways = ["local", "dask"] if dask_workers else ["local"]
        mirrors = {w: [stack.enter_context(FakeRegistry()) for _ in range(clusters)] for w in ways}
        dask = None
        if dask_workers:
            from ocicopy.dask_executor import local_cluster

            dask = stack.enter_context(local_cluster(dask_workers))
        out: dict[str, Any] = {"deployments": deployments, "clusters": clusters, "results": deployments * clusters}

        def plan_for(way: str) -> Any:
            hosts = [m.host for m in mirrors[way]]
            return parse_plan({
                "version": 2,
                "mirrors": {f"c{i}": {"registry": h, "prefix": "m", "mode": "service"} for i, h in enumerate(hosts)},
                "registries": {h: {"plain_http": True} for h in [source.host, *hosts]},
                "deployments": [
                    {"service": f"s{i % services}", "environment": f"e{i // services}",
                     "image": f"{source.host}/src/s{i % services}:1"}
                    for i in range(deployments)
                ],
            })  # fmt: skip

        async def run(way: str) -> tuple[float, float, int]:
            plan = plan_for(way)
            async with Client(ClientOptions(use_docker_config=False)) as client:
                t = time.perf_counter()
                cold = await client.mirror(plan, dask=dask if way == "dask" else None)
                cold_s = time.perf_counter() - t
                assert cold.ok, [d.error for d in cold.deployments if d.error][:3]
                t = time.perf_counter()
                warm = await client.mirror(plan, dask=dask if way == "dask" else None)
                return cold_s, time.perf_counter() - t, warm.totals.requests

        for way in ways:
            cold_s, warm_s, warm_requests = anyio.run(run, way)
            out[way] = {
                "cold_seconds": round(cold_s, 3),
                "cold_results_per_second": round(deployments * clusters / cold_s),
                "warm_seconds": round(warm_s, 3),
                "warm_requests": warm_requests,
            }
            say(f"subset run {way}: cold {cold_s:.2f} s, warm {warm_s:.2f} s ({warm_requests} requests)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks fleet", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="scale 0.05, 1 repeat (about a minute)")
    add("--scale", type=float, default=None, help="workload size (default 0.2; quick 0.05)")
    add("--clusters", type=int, default=3, help="mirror registries (default 3)")
    add("--repeats", type=int, default=None, help="runs of each way (default 3; quick 1)")
    add("--source-rtt", type=parse_rtt, default=None, metavar="RTT", help="default: the wan profile's 40ms")
    add("--source-bandwidth", type=parse_bandwidth, default=None, metavar="BW", help="default: 200Mbit")
    add("--no-skopeo", action="store_true", help="leave the skopeo loop out")
    add("--no-dask", action="store_true", help="leave the Dask ways out")
    add("--output", type=Path, default=None, help="write the results document here (JSON)")
    add("--strict", action="store_true", help="exit 1 when a target is missed")
    add("--growth", action="store_true", help="only the cost of growth: a 5,000 x 20 plan's graph, no I/O")
    args = parser.parse_args(argv)
    if args.growth:
        workers = 0 if args.no_dask or not _has_dask() else 2
        print(json.dumps({**growth(dask_workers=workers), "subset_run": subset_run(dask_workers=workers)}, indent=2))
        return 0
    scale = args.scale or (0.05 if args.quick else 0.2)
    repeats = args.repeats or (1 if args.quick else 3)
    rtt, bps = PROFILES["wan"]["source"]
    link = Link(rtt_s=args.source_rtt or rtt, bandwidth_bps=args.source_bandwidth or bps)
    profile = Profile(name="wan", scale=scale, source=link)
    ways = [w for w in WAYS if not (w == "skopeo" and (args.no_skopeo or not _has("skopeo")))]
    ways = [w for w in ways if not (w in ("dask", "workers2") and (args.no_dask or not _has_dask()))]
    say(f"generating the workload (scale {scale:g})")
    workload = build_workload(scale)
    samples: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory(prefix="ocicopy-fleet-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        dask = ""
        if "dask" in ways:
            from harness.dask_cluster import DaskProcesses

            dask = stack.enter_context(DaskProcesses(workers=[{}, {}], threads=8)).address
        with start_registry(work / "source") as source:
            workload.push(source)
            with linked(source, link, "source") as (source_host, _emulator):
                run = Run(work, tool_env(work / "bytecode"))
                say("warm-up (unmeasured): one fleet run compiles the bytecode every later run reads")
                with fresh_mirrors(work / "warm-up", args.clusters) as mirrors:
                    measure("fleet", workload, source, source_host, mirrors, run, -1)
                if dask:  # the workers import ocicopy once
                    with fresh_mirrors(work / "warm-up-dask", args.clusters) as mirrors:
                        measure("dask", workload, source, source_host, mirrors, run, -2, dask)
                for n in range(repeats):
                    for way in ways if n % 2 == 0 else list(reversed(ways)):
                        # fresh registries each time: skopeo's blob-info cache would mount from an earlier run's
                        with fresh_mirrors(work / f"{way}-{n}", args.clusters) as mirrors:
                            sample = measure(way, workload, source, source_host, mirrors, run, n, dask)
                        samples[way].append(sample)
                        say(f"[{n + 1}/{repeats}] {way}: {sample['seconds']:.2f} s, "
                            f"{sample['bytes_from_source'] / 2**20:.1f} MiB from the source, "
                            f"at most {sample['max_source_gets_per_blob']} GET(s) of a blob")  # fmt: skip
    floor = link_floor(profile, workload.unique_bytes, index=workload.has_index)
    assert floor is not None
    doc = results(workload, profile, samples, floor.seconds, args.clusters, argv)
    print(render(doc, floor.seconds))
    if args.output is not None:
        doc.write(args.output)
        say(f"wrote {args.output}")
    return 1 if args.strict and not all(t.passed for t in doc.targets) else 0


def results(
    workload: Workload,
    profile: Profile,
    samples: dict[str, list[dict[str, Any]]],
    floor: float,
    clusters: int,
    argv: list[str] | None,
) -> Results:
    rows = []
    for way, runs in samples.items():
        worst: Callable[[str], Any] = lambda k, runs=runs: max(r[k] for r in runs)  # noqa: E731
        rows.append(
            Row(
                profile=profile.name,
                scenario=way,
                phase="cold",
                seconds=[round(r["seconds"], 4) for r in runs],
                bytes_from_source=int(statistics.median(r["bytes_from_source"] for r in runs)),
                source_requests=int(statistics.median(r["source_requests"] for r in runs)),
                max_source_gets_per_blob=worst("max_source_gets_per_blob"),
                blobs_not_read_once=worst("blobs_not_read_once"),
            )
        )
    fleet = next(r for r in rows if r.scenario == "fleet")
    assert fleet.median is not None
    targets: list[Target] = [
        judge(profile.name, "fleet: blobs not read from the source exactly once", fleet.blobs_not_read_once or 0, 0),
        judge(profile.name, f"fleet: wall time / link floor of the bytes once (<= {FLOOR_RATIO})",
              fleet.median / floor, FLOOR_RATIO),
    ]  # fmt: skip
    return Results(
        benchmark="fleet",
        command="python -m benchmarks fleet " + " ".join(argv if argv is not None else sys.argv[1:]),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        machine=machine_metadata(),
        workload={**workload.summary(), "clusters": clusters},
        results=rows,
        targets=targets,
        details={"link": str(profile), "floor_seconds": floor, "unique_bytes": workload.unique_bytes},
    )


def render(doc: Results, floor: float) -> str:
    fleet = next(r for r in doc.results if r.scenario == "fleet")
    lines = [
        f"{doc.workload.get('clusters')} clusters, {doc.details['link']}; unique bytes "
        f"{doc.details['unique_bytes'] / 2**20:.1f} MiB; link floor (each byte once) {floor:.2f} s",
        f"{'way':<12} {'median':>8} {'x floor':>8} {'x fleet':>8} {'MiB from source':>16} {'GETs/blob':>10}",
    ]
    for r in doc.results:
        assert r.median is not None and fleet.median is not None
        lines.append(
            f"{r.scenario:<12} {r.median:>7.2f}s {r.median / floor:>8.2f} {r.median / fleet.median:>8.2f} "
            f"{(r.bytes_from_source or 0) / 2**20:>16.1f} {r.max_source_gets_per_blob or 0:>10}"
        )
    lines += [f"{'PASS' if t.passed else 'FAIL'}  {t.label}: {t.value:g} (limit {t.limit:g})" for t in doc.targets]
    return "\n".join(lines)


def _has_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def _has(tool: str) -> bool:
    return any(os.access(Path(d) / tool, os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep) if d)


if __name__ == "__main__":
    sys.exit(main())
