"""Interrupted mirrors: task cancellation, Ctrl-C and ``kill -9`` mid-run, then a rerun; and a 500-deployment plan.

The promise under test (docs/RELIABILITY.md, "Cancellation and crashes"): whatever point a mirror run is stopped
at, no mirror tag points at an incomplete image (every tag is absent or names a manifest whose blobs and children
are all in the mirror), no connection is left open, and a rerun of the same plan completes and leaves the mirror
byte-identical to an uninterrupted run.

To stop runs reliably *mid-way*, the source registry sits behind a :class:`FaultProxy` that stalls the GETs of a
few large layers part-way through their bodies (connection open, silent), so that when the run is interrupted
some blobs are committed in the mirror, some are streaming, and the images that need the stalled blobs
(including one child of an index) are incomplete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from harness import images as im
from harness.fault_proxy import Fault, FaultProxy
from harness.oracle import docker_ref, skopeo_digest
from harness.registry import (
    AccessEntry,
    RegistryServer,
    blob_uploads,
    manifest_puts,
    start_registry,
    unique_repo_name,
    upload_starts,
)
from ocicopy import Client, ClientOptions, MirrorAction, MirrorReport, parse_plan
from ocicopy.planner import plan_targets

_seeds = itertools.count(70_000)
SERVICES = ("api", "web", "worker", "billing", "multi")
ENVIRONMENTS = {"dev": "v2", "prod": "v1"}
STALLED = (("api", "v1"), ("api", "v2"), ("worker", "v1"))  # their own layer stalls; "multi" v1: one child's layer
BIG = 192 * 1024  # stalled layers: large enough that the stall is mid-body
STALL_AFTER = 40_000
SETTLE = 20.0  # bounded waits (fail_after / timeouts), never asserted as durations
DONE = {MirrorAction.COPIED, MirrorAction.SKIPPED}


@dataclass(frozen=True)
class Trio:
    """A source registry, the same source behind a fault proxy, and a mirror registry (one per module)."""

    source: RegistryServer
    proxy: FaultProxy
    mirror: RegistryServer


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    with (
        start_registry(tmp_path_factory.mktemp("cc-source")) as source,
        start_registry(tmp_path_factory.mktemp("cc-mirror")) as mirror,
        FaultProxy(source.host) as proxy,
    ):
        yield Trio(source, proxy, mirror)


@pytest.fixture(autouse=True)
def _no_faults_left(trio: Trio) -> Iterator[None]:
    trio.proxy.clear()
    yield
    trio.proxy.clear()


# --------------------------------------------------------------------------- seeding


@dataclass
class Fleet:
    """Source images of one test: one repository per service, tags v1/v2; ``stalls`` are the faults to arm."""

    repos: dict[str, str] = field(default_factory=dict)
    images: dict[tuple[str, str], im.Manifest] = field(default_factory=dict)
    stalls: list[Fault] = field(default_factory=list)

    def deployments(self, host: str) -> list[dict[str, Any]]:
        return [
            {"service": s, "environment": env, "image": f"{host}/{self.repos[s]}:{tag}"}
            for s in SERVICES
            for env, tag in ENVIRONMENTS.items()
        ]

    def expected(self) -> dict[tuple[str, str], str]:
        """(service, environment) → the source digest it must be mirrored at."""
        return {(s, env): self.images[(s, tag)].digest for s in SERVICES for env, tag in ENVIRONMENTS.items()}


def layer(size: int = 1500) -> im.Layer:
    return im.layer(next(_seeds), size)


def stall(repo: str, blob: im.Layer) -> Fault:
    match = f"GET /v2/{repo}/blobs/{blob.digest}".encode()
    return Fault("stall", after_bytes=STALL_AFTER, times=-1, match=match, stall_seconds=120)


def seed(source: RegistryServer, label: str) -> Fleet:
    fleet = Fleet()
    base = layer(3000)
    for service in SERVICES:
        repo = fleet.repos[service] = unique_repo_name(f"{label}-{service}", prefix="cc")
        for tag in ENVIRONMENTS.values():
            if service == "multi":
                stalled = layer(BIG) if tag == "v1" else layer()
                amd = im.make_image([base, layer()], platform=("linux", "amd64", None))
                arm = im.make_image([base, stalled], platform=("linux", "arm64", "v8"))
                obj: im.Manifest = im.make_index([amd, arm])
                if tag == "v1":
                    fleet.stalls.append(stall(repo, stalled))
            elif (service, tag) in STALLED:
                own = layer(BIG)
                obj = im.make_image([base, own])
                fleet.stalls.append(stall(repo, own))
            else:
                obj = im.make_image([base, layer()])
            im.push(source, repo, tag, obj)
            fleet.images[(service, tag)] = obj
    return fleet


def plan_data(trio: Trio, host: str, prefix: str, deployments: list[dict[str, Any]], mode: str = "service") -> dict:
    mirror: dict[str, Any] = {"registry": trio.mirror.host, "prefix": prefix, "mode": mode}
    if mode == "cluster":
        mirror["cluster"] = "prod-eu-1"
    registries = {h: {"plain_http": True} for h in (trio.source.host, trio.proxy.host, trio.mirror.host)}
    return {"mirror": mirror, "registries": registries, "deployments": deployments}


def new_prefix(label: str) -> str:
    return unique_repo_name(label, prefix="cc-m")


# --------------------------------------------------------------------------- observations


def committed_uploads(entries: list[AccessEntry]) -> list[str]:
    return [e.param("digest") or "" for e in blob_uploads(entries) if e.method == "PUT" and e.status == 201]


def tags_written(entries: list[AccessEntry]) -> list[str]:
    """Mirror tags PUT and accepted (a deployment complete), not manifests PUT by digest."""
    return [e.path for e in entries if e in manifest_puts([e]) and e.status == 201 and "/sha256:" not in e.path]


def sessions(entries: list[AccessEntry]) -> tuple[int, set[str]]:
    """Upload sessions opened (POST answered 202), and the ids of those ended: committed (PUT 201) or DELETEd."""
    opened = len(upload_starts(entries))
    ended = {
        e.path.rstrip("/").rsplit("/", 1)[-1]
        for e in entries
        if "/blobs/uploads/" in e.path and (e.method == "DELETE" or (e.method == "PUT" and e.status == 201))
    }
    return opened, ended


def settled(registry: RegistryServer) -> int:
    """A log mark once the requests the stopped process had in flight are logged: distribution logs a request
    when it ends, and one already sent ends a moment after the process died (a PUT cut mid-body with a 500, a
    manifest PUT sent whole with a 201). The log must then go quiet; one that never does is left for the
    caller's assertion."""
    mark = registry.mark()
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if not registry.requests(mark):
            return mark
        mark = registry.mark()
    return mark


def wait_mid_way(trio: Trio, since: int, stalls: int, alive: Any = lambda: True) -> None:
    """Block until the mirror committed a blob upload and a mirror tag (some deployment is complete: what the
    tests then look for) and every stalled blob GET is stuck mid-body."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        assert alive(), "the mirror run ended before it could be interrupted"
        entries = trio.mirror.requests(since)
        if trio.proxy.stats["faults_triggered"] >= stalls and committed_uploads(entries) and tags_written(entries):
            return
        time.sleep(0.05)
    raise AssertionError(
        f"the run never got mid-way: {trio.proxy.stats}, uploads {committed_uploads(trio.mirror.requests(since))}"
    )


def _manifest_tree_complete(http: httpx2.Client, repo: str, raw: bytes, problems: list[str], where: str) -> None:
    doc = json.loads(raw)
    for child in doc.get("manifests", []):
        resp = http.get(f"/v2/{repo}/manifests/{child['digest']}", headers={"Accept": ", ".join(im.MANIFEST_TYPES)})
        if resp.status_code != 200:
            problems.append(f"{where}: child manifest {child['digest']} is {resp.status_code}")
            continue
        if im.sha256(resp.content) != child["digest"]:
            problems.append(f"{where}: child manifest {child['digest']} has other bytes")
            continue
        _manifest_tree_complete(http, repo, resp.content, problems, f"{where} > {child['digest'][:19]}")
    for blob in [doc["config"], *doc.get("layers", [])] if "config" in doc else []:
        status = http.head(f"/v2/{repo}/blobs/{blob['digest']}").status_code
        if status != 200:
            problems.append(f"{where}: blob {blob['digest']} is {status}")


def tag_states(mirror: RegistryServer, data: dict[str, Any], expected: dict[tuple[str, str], str]) -> dict:
    """Every deployment's mirror tag: None (absent) or its digest; asserts a present tag names a complete tree
    at the source digest (never an incomplete image, never another image)."""
    states: dict[tuple[str, str], str | None] = {}
    problems: list[str] = []
    with httpx2.Client(base_url=mirror.url, timeout=30) as http:
        for target in plan_targets(parse_plan(data)):
            key = (target.deployment.service, target.deployment.environment)
            dest = target.destination
            resp = http.get(
                f"/v2/{dest.repository}/manifests/{dest.tag}", headers={"Accept": ", ".join(im.MANIFEST_TYPES)}
            )
            if resp.status_code == 404:
                states[key] = None
                continue
            assert resp.status_code == 200, (str(dest), resp.status_code, resp.text)
            states[key] = digest = im.sha256(resp.content)
            if digest != expected[key]:
                problems.append(f"{dest}: tag holds {digest}, the source is {expected[key]}")
            _manifest_tree_complete(http, dest.repository, resp.content, problems, str(dest))
    assert problems == [], "a mirror tag points at an incomplete or wrong image:\n" + "\n".join(problems)
    return states


def _socket_inodes(pid: int | str) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def open_connections_to(ports: set[int]) -> list[str]:
    """This process's open TCP sockets whose *remote* port is one of ``ports`` (client side only: the fault
    proxy's accepted sockets have the proxy port as their local port)."""
    inodes = _socket_inodes("self")
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if cols[9] in inodes and remote_port in ports:
                    found.append(f"{cols[1]} -> {cols[2]} state {cols[3]}")
    return found


def port(host: str) -> int:
    return int(host.rsplit(":", 1)[1])


def pinned_digest(pinned: str | None) -> str:
    assert pinned is not None
    return pinned.partition("@")[2]


def pinned_ref(pinned: str | None) -> str:
    assert pinned is not None
    name, _, digest = pinned.partition("@")
    host, _, repo = name.partition("/")
    return docker_ref(host, repo, digest)


def manifest_bytes(mirror: RegistryServer, pinned: str | None) -> bytes:
    assert pinned is not None
    name, _, digest = pinned.partition("@")
    return im.get_manifest(mirror, name.partition("/")[2], digest).content


async def run_mirror(data: dict[str, Any]) -> MirrorReport:
    async with Client(ClientOptions(use_docker_config=False)) as client:
        return await client.mirror(parse_plan(data))


def check_rerun(trio: Trio, fleet: Fleet, data: dict[str, Any], report: MirrorReport, label: str) -> None:
    """The rerun completed every deployment, byte-identical to an uninterrupted run into another prefix."""
    expected = fleet.expected()
    assert report.ok, [(d.service, d.environment, d.error) for d in report.deployments]
    assert {d.action for d in report.deployments} <= DONE, [
        (d.service, d.environment, d.action) for d in report.deployments
    ]
    assert len(report.deployments) == len(expected)
    for d in report.deployments:
        assert d.source_digest == expected[(d.service, d.environment)]
        assert skopeo_digest(pinned_ref(d.pinned)) == expected[(d.service, d.environment)], d
    states = tag_states(trio.mirror, data, expected)
    assert states == expected, "after the rerun every tag exists at its source digest"

    reference_data = plan_data(trio, trio.source.host, new_prefix(f"{label}-ref"), fleet.deployments(trio.source.host))
    reference = anyio.run(run_mirror, reference_data)
    assert reference.ok
    for mine, ref in zip(report.deployments, reference.deployments, strict=True):
        assert (mine.service, mine.environment) == (ref.service, ref.environment)
        assert pinned_digest(mine.pinned) == pinned_digest(ref.pinned)
        assert manifest_bytes(trio.mirror, mine.pinned) == manifest_bytes(trio.mirror, ref.pinned)


# --------------------------------------------------------------------------- 1. task cancellation


@pytest.mark.anyio
async def test_cancelled_mirror_leaves_no_incomplete_tag_and_no_connection(trio: Trio) -> None:
    fleet = seed(trio.source, "cancel")
    data = plan_data(trio, trio.proxy.host, new_prefix("cancel"), fleet.deployments(trio.proxy.host))
    for fault in fleet.stalls:
        trio.proxy.add(fault)
    start = trio.mirror.mark()
    ports = {port(trio.proxy.host), port(trio.mirror.host)}  # the proxy's own upstream sockets go to the source

    in_flight: list[str] = []
    finished: list[MirrorReport] = []
    with anyio.fail_after(SETTLE * 2):
        async with Client(ClientOptions(use_docker_config=False)) as client:
            async with anyio.create_task_group() as tg:

                async def mirror() -> None:
                    finished.append(await client.mirror(parse_plan(data)))

                tg.start_soon(mirror)
                await anyio.to_thread.run_sync(wait_mid_way, trio, start, len(fleet.stalls))
                tg.cancel_scope.cancel()
            # cancelled, client still open: no request may still be in flight in its pools
            for scheme, pool in client.transport._clients.items():
                pending = list(pool._transport._pool._requests)  # httpcore2's queue of requests in flight
                in_flight.extend(f"{scheme}: {r.request.method} {r.request.url}" for r in pending)
        assert finished == [], "the mirror finished before it was cancelled: the test did not interrupt it"
        assert in_flight == [], f"requests still in flight after the cancellation: {in_flight}"
        assert open_connections_to(ports) == [], "connections left open after the client closed"

    quiet = trio.mirror.mark(), trio.source.mark()
    proxy_requests = trio.proxy.stats["requests"]
    await anyio.sleep(0.5)
    assert trio.mirror.requests(quiet[0]) == [] and trio.source.requests(quiet[1]) == []
    assert trio.proxy.stats["requests"] == proxy_requests, "requests reached the source after the client closed"

    states = tag_states(trio.mirror, data, fleet.expected())
    stalled = {("api", "dev"), ("api", "prod"), ("worker", "prod"), ("multi", "prod")}
    assert all(states[k] is None for k in stalled), states  # they cannot be complete: a blob never arrived
    assert any(v is not None for v in states.values()), "nothing was mirrored before the cancellation"

    trio.proxy.clear()
    rerun = await run_mirror(data)
    await anyio.to_thread.run_sync(check_rerun, trio, fleet, data, rerun, "cancel")


# --------------------------------------------------------------------------- 2./3. Ctrl-C and kill -9


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "REGISTRY_AUTH"))}
    env["HOME"] = str(home)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_cli(tmp_path: Path, plan: Path, report: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--json", str(report), "--no-docker-config"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=cli_env(tmp_path),
        )


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["ctrl-c", "sigterm", "kill-9"],
)
def test_interrupted_cli_then_rerun(trio: Trio, tmp_path: Path, sig: signal.Signals, code: int) -> None:
    label = sig.name.lower()
    fleet = seed(trio.source, label)
    data = plan_data(trio, trio.proxy.host, new_prefix(label), fleet.deployments(trio.proxy.host))
    plan, report = tmp_path / "plan.json", tmp_path / "report.json"
    plan.write_text(json.dumps(data))
    for fault in fleet.stalls:
        trio.proxy.add(fault)
    start = trio.mirror.mark()

    proc = start_cli(tmp_path, plan, report, tmp_path / "first.log")
    try:
        wait_mid_way(trio, start, len(fleet.stalls), alive=lambda: proc.poll() is None)
        proc.send_signal(sig)
        try:
            rc = proc.wait(timeout=SETTLE)
        except subprocess.TimeoutExpired:
            rc = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "first.log").read_text(errors="replace")
    assert rc is not None, f"ocicopy did not exit within {SETTLE:g} s of {sig.name}; output:\n{output}"
    assert rc == code, f"exit code {rc} after {sig.name}, expected {code}; output:\n{output}"
    if sig != signal.SIGKILL:  # cleaned up: sessions ended (checked below), one line said why it stopped
        assert "Traceback" not in output, output
        assert ("interrupted by SIGTERM" if sig == signal.SIGTERM else "interrupted") in output, output
    if report.exists():  # an interrupted run may write no report, never a partial one
        MirrorReport.model_validate_json(report.read_text())

    quiet = settled(trio.mirror)
    time.sleep(0.3)
    assert trio.mirror.requests(quiet) == []
    if sig != signal.SIGKILL:
        opened, ended = sessions(trio.mirror.requests(start))
        assert opened == len(ended), f"{opened} upload sessions opened, {len(ended)} committed or DELETEd"
    states = tag_states(trio.mirror, data, fleet.expected())
    assert states[("api", "dev")] is None and states[("multi", "prod")] is None, states

    trio.proxy.clear()
    rerun = subprocess.run(
        [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--json", str(report), "--no-docker-config"],
        capture_output=True,
        cwd=tmp_path,
        env=cli_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr.decode(errors="replace")
    result = MirrorReport.model_validate_json(report.read_text())
    acts = {(d.service, d.environment): d.action for d in result.deployments}
    # What the interrupted run completed is skipped, the rest copied (never "updated": no tag moved).
    for key, state in states.items():
        assert acts[key] in DONE, (key, acts[key])
        if state is not None:
            assert acts[key] is MirrorAction.SKIPPED, (key, acts[key])
    assert acts[("api", "dev")] is MirrorAction.COPIED
    check_rerun(trio, fleet, data, result, label)


# --------------------------------------------------------------------------- 4. 500 deployments


N_REPOS, N_TAGS, N_SERVICES, N_ENVS = 10, 10, 50, 10
FD_BOUND, RSS_BOUND_KB = 200, 300 * 1024


@dataclass
class BigFleet:
    repos: list[str]
    digests: dict[tuple[int, int], str]  # (repo index, tag index) → digest


@pytest.fixture(scope="module")
def big_fleet(trio: Trio) -> BigFleet:
    """100 tiny images (10 repositories × 10 tags) over 3 shared base layers."""
    bases = [layer(2000) for _ in range(3)]
    repos = [unique_repo_name(f"big-{r}", prefix="cc") for r in range(N_REPOS)]
    digests = {}
    for r, repo in enumerate(repos):
        with im.RegistryClient(trio.source, repo) as client:
            for t in range(N_TAGS):
                img = im.make_image([bases[(r + t) % 3], layer(300)])
                digests[(r, t)] = client.push(f"t{t}", img)
    return BigFleet(repos, digests)


class Sampler(threading.Thread):
    """Peak open fds and RSS of a process, sampled every 50 ms until it exits."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.fds = self.rss = self.hwm = self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if "VmRSS" in fields:  # absent once the process is a zombie
                self.fds = max(self.fds, fds)
                self.rss = max(self.rss, int(fields["VmRSS"].split()[0]))
                self.hwm = max(self.hwm, int(fields["VmHWM"].split()[0]))
                self.samples += 1
            time.sleep(0.05)


@pytest.mark.parametrize("mode", ["cluster", "service"])
def test_500_deployments_bounded_fds_and_memory(trio: Trio, big_fleet: BigFleet, tmp_path: Path, mode: str) -> None:
    deployments, expected = [], {}
    for s in range(N_SERVICES):
        for e in range(N_ENVS):
            r, t = s % N_REPOS, (s + e) % N_TAGS
            deployments.append(
                {
                    "service": f"svc{s}",
                    "environment": f"env{e}",
                    "image": f"{trio.source.host}/{big_fleet.repos[r]}:t{t}",
                }
            )
            expected[(f"svc{s}", f"env{e}")] = big_fleet.digests[(r, t)]
    assert len(deployments) == 500
    data = plan_data(trio, trio.source.host, new_prefix(f"big-{mode}"), deployments, mode=mode)
    plan, report = tmp_path / "plan.json", tmp_path / "report.json"
    plan.write_text(json.dumps(data))

    log = tmp_path / "out.log"
    proc = start_cli(tmp_path, plan, report, log)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        rc = proc.wait(timeout=110)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sampler.stop.set()
        sampler.join(5)
    output = log.read_text(errors="replace")
    assert rc == 0, output[-3000:]
    assert sampler.samples > 0
    assert sampler.fds < FD_BOUND, f"peak open fds {sampler.fds}"
    assert max(sampler.rss, sampler.hwm) < RSS_BOUND_KB, f"peak RSS {sampler.rss} kB, VmHWM {sampler.hwm} kB"

    result = MirrorReport.model_validate_json(report.read_text())
    assert len(result.deployments) == 500
    assert {d.action for d in result.deployments} <= DONE, {d.action for d in result.deployments}
    copied = sum(d.action is MirrorAction.COPIED for d in result.deployments)
    assert copied == (100 if mode == "cluster" else 500)  # one copy per destination (cluster: per source image)

    # every pinned reference, read back from the mirror: the exact bytes of the source manifest
    with httpx2.Client(base_url=trio.mirror.url, timeout=30) as http:
        for d in result.deployments:
            want = expected[(d.service, d.environment)]
            assert d.source_digest == want and pinned_digest(d.pinned) == want, d
            name = (d.pinned or "").partition("@")[0]
            resp = http.get(
                f"/v2/{name.partition('/')[2]}/manifests/{want}", headers={"Accept": ", ".join(im.MANIFEST_TYPES)}
            )
            assert resp.status_code == 200 and hashlib.sha256(resp.content).hexdigest() == want[7:], d.pinned
    for d in result.deployments[::25]:  # 20 of them through the independent oracle
        assert skopeo_digest(pinned_ref(d.pinned)) == expected[(d.service, d.environment)]
    print(f"\n{mode}: peak fds {sampler.fds}, peak RSS {sampler.rss} kB (HWM {sampler.hwm} kB), {result.seconds:.1f} s")
