"""The work graph on Dask (issue 12), with real processes: ``ocicopy mirror --workers 2`` (a local cluster of
worker processes), ``--dask ADDRESS`` against a ``dask scheduler`` and ``dask worker`` processes started here,
a worker killed mid-run, a scheduler lost mid-run, and locality resources. Real registries (the fleet's)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness.dask_cluster import DaskProcesses
from harness.images import push as push_image
from harness.netem import LinkEmulator
from harness.oracle import skopeo_digest
from harness.registry import blob_gets
from ocicopy import Client, MirrorAction, MirrorReport
from ocicopy.dask_executor import DaskExecutor, local_cluster
from ocicopy.digest import Digest
from ocicopy.executor import BlobTask, Chain, ChainTask
from ocicopy.plan import parse_plan
from tests.test_fleet import EXPECTED, Fleet, deployments_of, fleet, fleet_plan
from tests.test_mirror_cli import Run, ocicopy_run, stdout_report, write_plan
from tests.test_mirror_registry import MakeRepo, new_image, new_layer, new_prefix, pinned_ref, seed_fleet

__all__ = ["fleet", "ocicopy_run"]  # the fixtures, shared

pytestmark = [pytest.mark.registry, pytest.mark.slow]


def outcome(report: Any) -> dict[tuple[str, str, str], tuple[MirrorAction, str | None]]:
    """Per (cluster, service, environment): the action and the pinned digest (the repository names differ by
    prefix between two runs)."""
    return {
        (d.cluster, d.service, d.environment): (d.action, d.pinned.split("@")[1] if d.pinned else None)
        for d in report.deployments
    }


def test_workers_2_mirror_a_fleet_as_the_local_run_does(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    local = ocicopy_run("mirror", write_plan(tmp_path / "local.json", fleet_plan(fleet, new_prefix("loc"),
                        deployments_of(images))), "--json", "-")  # fmt: skip
    assert local.returncode == 0, local.stderr.decode()

    plan = write_plan(tmp_path / "dask.json", fleet_plan(fleet, new_prefix("dask"), deployments_of(images)))
    mark = fleet.source.mark()
    proc = ocicopy_run("mirror", plan, "--workers", "2", "--json", "-", "--lock", "lock.json")
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert outcome(report) == outcome(stdout_report(local))
    assert set(outcome(report)) == set(EXPECTED)
    for d in report.deployments:
        assert d.action is MirrorAction.COPIED, d.error
        assert d.pinned is not None and skopeo_digest(pinned_ref(d.pinned)) == d.source_digest
    # each unique blob left the source once, on whichever worker read it
    read = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(fleet.source.requests(mark)) if e.status == 200)
    unique = {d for key in set(EXPECTED.values()) for d in images.images[key].blobs()}
    assert set(read) == unique and max(read.values()) == 1, read
    assert report.totals.bytes_from_source == stdout_report(local).totals.bytes_from_source
    assert (tmp_path / "lock.json").exists()

    warm = ocicopy_run("mirror", plan, "--workers", "2", "--json", "-")
    assert warm.returncode == 0, warm.stderr.decode()
    again = stdout_report(warm)
    assert {d.action for d in again.deployments} == {MirrorAction.SKIPPED}
    assert again.totals.requests <= 2 * len(EXPECTED), again.totals.requests


def test_the_library_takes_a_distributed_client(fleet: Fleet, make_repo: MakeRepo) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api",), tags=("v1",))
    deployments = [{"service": "api", "environment": "prod", "image": images.ref("api", "v1")}]
    plan = parse_plan(fleet_plan(fleet, new_prefix("lib"), deployments))

    async def main(dask: Any) -> Any:
        async with Client() as client:
            return await client.mirror(plan, dask=dask)

    with local_cluster(2, threads=2) as dask:
        report = anyio.run(main, dask)
        keys = list(dask.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))
        semaphores = dask.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.extensions["semaphores"].max_leases)
        )
        plugins = dask.run(lambda dask_worker: [n for n in dask_worker.plugins if n.startswith("ocicopy/")])
    assert [s for s in semaphores if s.startswith("ocicopy/")] == []  # the run's state is gone from the cluster
    assert all(names == [] for names in plugins.values()), plugins
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}, [d.error for d in report.deployments]
    assert all(d.pinned and skopeo_digest(pinned_ref(d.pinned)) == d.source_digest for d in report.deployments)
    assert all(not str(k).startswith("ocicopy/") or str(k).startswith(f"ocicopy/{report.run_id}/") for k in keys)


def test_task_arguments_carry_no_credentials(fleet: Fleet) -> None:
    """What goes to the scheduler (the graph: every task's arguments) and to the workers (the plugin) holds no
    password, even when the run's client has one."""
    from ocicopy.dask_executor import OcicopyPlugin
    from ocicopy.options import ClientOptions, RegistryConfig

    secret = "s3cret-password-value"
    options = ClientOptions(registries={"reg.example.com": RegistryConfig(username="u", password=secret)})
    plugin = OcicopyPlugin(options, {}, "0")
    assert plugin.options.registries["reg.example.com"].password is None
    assert plugin.options.registries["reg.example.com"].username == "u"
    import pickle

    assert secret.encode() not in pickle.dumps(plugin)
    executor = DaskExecutor(None)  # type: ignore[arg-type]  # the graph is built without a cluster
    executor.run_id = "r1"
    tasks = [
        BlobTask("read::a:sha256:" + "0" * 64, "a/x", "sha256:" + "0" * 64, 1, "m", (("b/y",),)),
        ChainTask(
            "tag:b/y:t",
            Chain("a/x@sha256:" + "1" * 64, "b/y:t", Digest("sha256:" + "1" * 64)),
            "b/y",
            ("read::a:sha256:" + "0" * 64,),
        ),
    ]
    graph, keys = executor.graph(tasks)
    assert keys == ["ocicopy/r1/read::a:sha256:" + "0" * 64, "ocicopy/r1/tag:b/y:t"]
    assert secret.encode() not in pickle.dumps(dict(graph))


def one_api_plan(fleet: Fleet, make_repo: MakeRepo, label: str, eu_resources: dict[str, float]) -> dict[str, Any]:
    """A fleet plan of one deployment to every mirror, eu's mirror asking for ``eu_resources``."""
    images = seed_fleet(fleet.source, make_repo, services=("api",), tags=("v1",))
    deployments = [{"service": "api", "environment": "prod", "image": images.ref("api", "v1")}]
    data = fleet_plan(fleet, new_prefix(label), deployments)
    data["mirrors"]["eu"]["dask_resources"] = eu_resources
    return data


def when_writing(fleet: Fleet, action: Callable[[], None]) -> threading.Thread:
    """A thread that runs ``action`` once a blob upload began in some mirror (within 60 s)."""
    marks = {n: m.mark() for n, m in fleet.mirrors.items()}

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e.method == "POST" for n, m in fleet.mirrors.items() for e in m.requests(marks[n])):
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_a_resource_no_worker_offers_is_refused_at_the_start(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    data = one_api_plan(fleet, make_repo, "res", {"region-mars": 1})
    marks = {name: m.mark() for name, m in fleet.mirrors.items()}
    proc = ocicopy_run("mirror", write_plan(tmp_path / "plan.json", data), "--workers", "1")
    assert proc.returncode == 2, proc.stderr.decode()
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "mirror 'eu' asks for Dask worker resources {'region-mars': 1.0}" in err[0], err
    assert all(m.requests(marks[n]) == [] for n, m in fleet.mirrors.items())  # nothing was sent


def test_a_dry_run_predicts_without_a_cluster(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """A dry run runs nothing: ``--dask`` with no scheduler behind the address still predicts (exit 0), and a
    resource no worker could offer is not asked about."""
    plan = write_plan(tmp_path / "plan.json", one_api_plan(fleet, make_repo, "dry", {"region-mars": 1}))
    proc = ocicopy_run("mirror", plan, "--dask", "tcp://127.0.0.1:9", "--dry-run", "--json", "-")
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert report.dry_run and {d.action for d in report.deployments} == {MirrorAction.COPIED}


def big_images(fleet: Fleet, make_repo: MakeRepo, services: tuple[str, ...], size: int) -> dict[str, str]:
    """One image per service with a layer of ``size`` random bytes; its reference by service."""
    refs = {}
    for service in services:
        repo = make_repo(f"src-{service}")
        push_image(fleet.source, repo, "v1", new_image(new_layer(size)))
        refs[service] = f"{fleet.source.host}/{repo}:v1"
    return refs


def test_locality_resources_run_a_mirror_on_its_workers(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """eu's writes on the worker offering region-eu; the other mirrors anywhere; the source read once per group."""
    data = one_api_plan(fleet, make_repo, "loc", {"region-eu": 1})
    with DaskProcesses(workers=[{}, {"region-eu": 1}], log_dir=tmp_path) as dask:
        mark, eu_mark = fleet.source.mark(), fleet.mirrors["eu"].mark()
        proc = ocicopy_run("mirror", write_plan(tmp_path / "plan.json", data), "--dask", dask.address, "--json", "-")
        assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}
    for d in report.deployments:
        assert d.pinned is not None and skopeo_digest(pinned_ref(d.pinned)) == d.source_digest
    read = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(fleet.source.requests(mark)) if e.status == 200)
    assert set(read.values()) == {2}, read  # two locality groups (region-eu, any): once each
    # the eu mirror was written only by the region-eu worker (w1): a worker's client names it in its User-Agent
    writes = [e for e in fleet.mirrors["eu"].requests(eu_mark) if e.method in ("PUT", "POST")]
    eu_agents = {e.user_agent for e in writes if "/ocicopy-ledger/" not in e.path}  # the run saves its ledger
    assert eu_agents and all((a or "").endswith("(dask worker w1)") for a in eu_agents), eu_agents


def test_a_worker_killed_mid_run_its_tasks_rerun_elsewhere(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    refs = big_images(fleet, make_repo, ("api", "web", "job"), 3_000_000)
    prefix = new_prefix("kill")
    with LinkEmulator(fleet.source.host, rtt=0.002, bandwidth_bps=20e6, name="source") as link:
        deployments = [
            {"service": s, "environment": "prod", "image": ref.replace(fleet.source.host, link.host)}
            for s, ref in refs.items()
        ]
        data = fleet_plan(fleet, prefix, deployments)
        data["registries"][link.host] = {"plain_http": True}
        with DaskProcesses(workers=[{}, {}], threads=2, log_dir=tmp_path) as dask:
            killed = threading.Event()

            def kill() -> None:
                dask.kill_worker(0)
                killed.set()

            killer = when_writing(fleet, kill)
            proc = ocicopy_run(
                "mirror", write_plan(tmp_path / "plan.json", data), "--dask", dask.address, "--json", "-"
            )
            killer.join()
    assert killed.is_set(), "the run ended before a worker could be killed"
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}, [d.error for d in report.deployments]
    for d in report.deployments:  # every destination digest-exact, every tag on a complete image
        assert d.pinned is not None
        tag_ref = d.destination.replace(link.host, fleet.source.host)
        assert skopeo_digest(tag_ref) == d.source_digest == skopeo_digest(pinned_ref(d.pinned))


def test_a_lost_scheduler_fails_the_run_clearly_and_a_rerun_completes(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    refs = big_images(fleet, make_repo, ("api", "web"), 3_000_000)
    with LinkEmulator(fleet.source.host, rtt=0.002, bandwidth_bps=10e6, name="source") as link:
        deployments = [
            {"service": s, "environment": "prod", "image": ref.replace(fleet.source.host, link.host)}
            for s, ref in refs.items()
        ]
        data = fleet_plan(fleet, new_prefix("lost"), deployments)
        data["registries"][link.host] = {"plain_http": True}
        plan = write_plan(tmp_path / "plan.json", data)
        with DaskProcesses(workers=[{}], log_dir=tmp_path) as dask:
            killer = when_writing(fleet, dask.kill_scheduler)
            proc = ocicopy_run("mirror", plan, "--dask", dask.address, "--json", "-")
            killer.join()
        assert proc.returncode == 1, proc.stderr.decode()
        err = proc.stderr.decode()
        assert "was lost mid-run" in err and "run again to complete the rest" in err, err
        (tmp_path / "again").mkdir()
        with DaskProcesses(workers=[{}], log_dir=tmp_path / "again") as dask2:
            rerun = ocicopy_run("mirror", plan, "--dask", dask2.address, "--json", "-")
    assert rerun.returncode == 0, rerun.stderr.decode()
    report = stdout_report(rerun)
    assert {d.action for d in report.deployments} <= {MirrorAction.COPIED, MirrorAction.SKIPPED}
    for d in report.deployments:
        assert d.pinned is not None
        assert skopeo_digest(d.destination.replace(link.host, fleet.source.host)) == d.source_digest


def test_the_local_executor_runs_the_same_graph_in_this_process(fleet: Fleet, make_repo: MakeRepo) -> None:
    """The coarse tasks on the local executor (anyio, no Dask): the same results as the streaming engine."""
    from ocicopy.executor import LocalExecutor
    from ocicopy.mirroring import run_plan

    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    plans = {name: parse_plan(fleet_plan(fleet, new_prefix(name), deployments_of(images))) for name in ("s", "g")}

    async def main() -> tuple[Any, Any]:
        async with Client() as client:
            client.options = plans["s"].client_options(client.options)
            client.transport.reconfigure(client.options)
            streamed = await run_plan(client, plans["s"])
        async with Client() as client:
            client.options = plans["g"].client_options(client.options)
            client.transport.reconfigure(client.options)
            mark = fleet.source.mark()
            graphed = await run_plan(client, plans["g"], executor=LocalExecutor())
            read = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(fleet.source.requests(mark)) if e.status == 200)
            assert read and max(read.values()) == 1, read
        return streamed, graphed

    streamed, graphed = anyio.run(main)
    assert outcome(graphed) == outcome(streamed)
    assert graphed.totals.bytes_from_source == streamed.totals.bytes_from_source
    assert (
        graphed.totals.blobs_copied + graphed.totals.blobs_mounted
        == streamed.totals.blobs_copied + streamed.totals.blobs_mounted
    )


def test_two_pipelines_share_one_dask_cluster(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """Two ``ocicopy mirror --dask`` processes at once on one cluster: each run has its own worker plugin (its
    client, its settings), so neither closes the other's; both complete, every pin digest-exact. An OCI layout
    mirror is refused on a cluster whose workers may not see this machine's files."""
    import subprocess
    import sys

    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1",))
    deployments = [{"service": s, "environment": "prod", "image": images.ref(s, "v1")} for s in ("api", "web")]
    plans = [write_plan(tmp_path / f"p{i}.json", fleet_plan(fleet, new_prefix(f"two{i}"), deployments)) for i in (0, 1)]
    with DaskProcesses(workers=[{}, {}], log_dir=tmp_path) as dask:
        argv = [sys.executable, "-m", "ocicopy", "mirror", "--dask", dask.address, "--json", "-"]
        procs = [subprocess.Popen([*argv, p], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for p in plans]
        outs = [p.communicate(timeout=180) for p in procs]
        layout = fleet_plan(fleet, new_prefix("lay"), deployments[:1])
        layout["mirrors"]["eu"] = {"layout": f"oci:{tmp_path / 'edge'}", "prefix": "m", "mode": "cluster"}
        refused = ocicopy_run("mirror", write_plan(tmp_path / "layout.json", layout), "--dask", dask.address)
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err.decode()
        report = MirrorReport.model_validate_json(out)
        assert {d.action for d in report.deployments} == {MirrorAction.COPIED}
        for d in report.deployments:
            assert d.pinned is not None and skopeo_digest(pinned_ref(d.pinned)) == d.source_digest
    assert refused.returncode == 2, refused.stderr.decode()
    assert "mirror 'eu' is an OCI layout" in refused.stderr.decode() and not (tmp_path / "edge").exists()


def test_a_cut_on_one_worker_holds_on_every_worker(tmp_path: Path) -> None:
    """The adaptive limit across workers: the source answers 503 to one blob GET of worker w0 (eu's group); w1
    (us's group) is not let through to the source until it has taken that cut from its peer. The report adds the
    workers' counts up: the source's requests as the source saw them, one throttled answer, the peer's cut."""
    import distributed

    from harness import images as im
    from harness.fake_registry import FakeRegistry, Request, fail, is_blob_get

    image = im.make_image([im.layer(9100 + i, 2000) for i in range(6)])
    with FakeRegistry() as source, FakeRegistry() as eu, FakeRegistry() as us:
        source.seed("lib/app", "v1", image)

        def worker(r: Request, name: str) -> bool:
            return is_blob_get(r) and (r.headers.get("user-agent") or "").endswith(f"(dask worker {name})")

        source.before(fail(1, 503, when=lambda r: worker(r, "w0")))
        plan = parse_plan({
            "version": 2,
            "mirrors": {
                "eu": {"registry": eu.host, "prefix": "m", "mode": "cluster", "dask_resources": {"region-eu": 1}},
                "us": {"registry": us.host, "prefix": "m", "mode": "cluster", "dask_resources": {"region-us": 1}},
            },
            "registries": {h: {"plain_http": True} for h in (source.host, eu.host, us.host)},
            "deployments": [{"service": "app", "environment": "prod", "image": f"{source.host}/lib/app:v1"}],
        })  # fmt: skip
        with (
            DaskProcesses(workers=[{"region-eu": 1}, {"region-us": 1}], log_dir=tmp_path) as cluster,
            distributed.Client(cluster.address, set_as_default=False) as dask,
        ):
            w1 = next(a for a, w in dask.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "w1")
            held: list[int] = []

            def peer_cuts() -> int:
                host = source.host
                seen = dask.run(
                    lambda dask_worker: [
                        p.client.transport.adaptive(host).peer_cuts
                        for n, p in dask_worker.plugins.items()
                        if n.startswith("ocicopy/") and hasattr(p, "client")
                    ],
                    workers=[w1],
                )
                return sum(sum(v) for v in seen.values())

            def hold(r: Request) -> None:
                if worker(r, "w1") and not held:
                    deadline = time.monotonic() + 60
                    while (cuts := peer_cuts()) == 0 and time.monotonic() < deadline:
                        time.sleep(0.05)
                    held.append(cuts)

            source.before(hold)

            async def main() -> MirrorReport:
                async with Client() as client:
                    return await client.mirror(plan, dask=dask, ledger=False)

            report = anyio.run(main)
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}, [d.error for d in report.deployments]
    assert held and held[0] >= 1, "w1 never took w0's cut"
    stats = report.registries[source.host]
    assert stats.throttled == 1 and stats.peer_cuts >= 1, stats
    assert stats.lowest_concurrency is not None and stats.lowest_concurrency <= 32, stats
    assert stats.requests == len(source.requests), (stats, len(source.requests))
    assert report.registries[eu.host].requests == len(eu.requests)
    assert report.totals.requests == sum(len(f.requests) for f in (source, eu, us))
