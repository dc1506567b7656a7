"""Concurrent pipelines writing one mirror: several ``ocicopy`` *processes* at once, against real registries.

A platform deploys many environments at once, each pipeline running its own ``ocicopy mirror`` into the same
mirror registry. Here several processes start together on overlapping plans (the same images in shuffled
orders, cluster mode and service mode) into an empty CNCF distribution mirror, over several rounds (each round
ships new versions). Every run must succeed, every deployment must be in the mirror by digest with all its
blobs, and the ledger must hold the union of what every run recorded (``tests/test_ledger.py`` has the
single-process cases; ``tests/test_quirks.py`` the deterministic replay of distribution's blob-link race).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness import images as im
from harness.registry import RegistryServer, manifest_puts, start_registry, unique_repo_name
from ocicopy import ClientOptions, MirrorReport
from ocicopy.digest import Digest
from ocicopy.ledger import Ledger
from ocicopy.registry import Registry
from ocicopy.transport import Transport

pytestmark = [pytest.mark.slow]

PROCESSES = 4
ROUNDS = 3
SERVICES = ("api", "web", "worker", "gateway", "billing", "search")
ENVIRONMENTS = ("prod", "staging")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with start_registry(tmp_path_factory.mktemp("concurrent-source")) as server:
        yield server


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[RegistryServer]:
    """An empty mirror for each test."""
    with start_registry(tmp_path / "mirror") as server:
        yield server


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(ROOT))
    return env


def _start_together(commands: list[list[str]], home: Path) -> list[subprocess.CompletedProcess[bytes]]:
    """Start every command at once (each waits for a shared start time after its imports), wait for all."""
    start_at = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WAIT_THEN_RUN, str(start_at), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=home,
            env=_env(home),
        )
        for cmd in commands
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


# The child imports what it needs first, then sleeps until the shared start time: the runs really overlap.
_WAIT_THEN_RUN = """
import sys, time
import ocicopy.cli, ocicopy.client, ocicopy.mirroring
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.exit(ocicopy.cli.main(sys.argv[2:]))
"""


class Release:
    """The source images of one round: every service at the round's version, sharing base layers."""

    def __init__(self, source: RegistryServer, repos: dict[str, str], round_no: int, bases: list[im.Layer]) -> None:
        self.images: dict[str, im.Manifest] = {}
        for i, service in enumerate(SERVICES):
            app = im.layer(10_000 * round_no + i, 3000 + 500 * i)
            base = bases[i % len(bases)]
            if i % 3 == 0:  # a two-platform index
                amd = im.make_image([base, app], platform=("linux", "amd64", None))
                arm = im.make_image([bases[-1], app], platform=("linux", "arm64", "v8"))
                obj: im.Manifest = im.make_index([amd, arm])
            else:
                obj = im.make_image([base, bases[(i + 1) % len(bases)], app])
            im.push(source, repos[service], f"1.{round_no}.0", obj)
            self.images[service] = obj
        self.tag = f"1.{round_no}.0"


def _plan(
    source: RegistryServer,
    mirror: RegistryServer,
    prefix: str,
    mode: str,
    release: Release,
    repos: dict[str, str],
    seed: int,
) -> dict[str, Any]:
    deployments = [
        {"service": s, "environment": e, "image": f"{source.host}/{repos[s]}:{release.tag}"}
        for s in SERVICES
        for e in ENVIRONMENTS
    ]
    random.Random(seed).shuffle(deployments)
    mirror_settings: dict[str, Any] = {"registry": mirror.host, "prefix": prefix, "mode": mode}
    if mode == "cluster":
        mirror_settings["cluster"] = "shared"
    return {
        "mirror": mirror_settings,
        "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
        "deployments": deployments,
    }


def _check_in_mirror(mirror: RegistryServer, pinned: str, expected: im.Manifest) -> None:
    """``pinned`` is in the mirror: its bytes hash to the digest, and every blob (and child) is there."""
    repo_ref = pinned.split("/", 1)[1]
    repo, _, digest = repo_ref.partition("@")
    assert digest == expected.digest
    fetched = im.get_manifest(mirror, repo, digest)
    assert "sha256:" + hashlib.sha256(fetched.content).hexdigest() == digest
    with im.RegistryClient(mirror, repo) as reg:
        for blob in expected.blobs():
            assert reg.blob_exists(blob), f"{pinned}: blob {blob} missing"
    if isinstance(expected, im.Index):
        for child in expected.children:
            _check_in_mirror(mirror, f"{mirror.host}/{repo}@{child.digest}", child)


@pytest.mark.registry
def test_concurrent_pipelines_into_one_mirror_never_fail(
    source: RegistryServer, mirror: RegistryServer, tmp_path: Path
) -> None:
    tag = unique_repo_name("conc", prefix="s")
    repos = {s: f"{tag}/{s}" for s in SERVICES}
    bases = [im.layer(900_000 + i, 40_000 + 10_000 * i) for i in range(3)]
    prefix = unique_repo_name("conc", prefix="m")
    placed_repos: set[str] = set()
    race_refusals = 0
    for round_no in range(1, ROUNDS + 1):
        release = Release(source, repos, round_no, bases)
        commands = []
        for p in range(PROCESSES):
            mode = "cluster" if p % 2 == 0 else "service"
            plan = tmp_path / f"plan-{round_no}-{p}.json"
            plan.write_text(json.dumps(_plan(source, mirror, prefix, mode, release, repos, seed=round_no * 10 + p)))
            commands.append(["mirror", str(plan), "--json", str(tmp_path / f"report-{round_no}-{p}.json"), "-q"])
        mark = mirror.mark()
        results = _start_together(commands, tmp_path)
        for p, proc in enumerate(results):
            assert proc.returncode == 0, f"round {round_no}, process {p}: {proc.stderr.decode()[-2000:]}"
            report = MirrorReport.model_validate_json((tmp_path / f"report-{round_no}-{p}.json").read_text())
            assert [d.error for d in report.deployments if d.error] == []
            for d in report.deployments:
                assert d.pinned is not None
                _check_in_mirror(mirror, d.pinned, release.images[d.service])
                placed_repos.add(d.pinned.split("/", 1)[1].split("@")[0])
        race_refusals += sum(1 for e in manifest_puts(mirror.requests(mark)) if e.status == 400)
    ledger_repos = anyio.run(_ledger_repositories, mirror, prefix)
    assert placed_repos <= ledger_repos  # every repository every run wrote, whatever the interleaving
    print(f"manifest PUTs refused by the blob-link race and ridden out: {race_refusals}")


async def _ledger_repositories(mirror: RegistryServer, prefix: str) -> set[str]:
    async with Transport(ClientOptions(plain_http=frozenset({mirror.host}), use_docker_config=False)) as t:
        return await Ledger(Registry(t, mirror.host), f"{prefix}/ocicopy-ledger").repositories()


_LEDGER_WRITER = """
import sys, time, anyio
from ocicopy import ClientOptions
from ocicopy.digest import Digest
from ocicopy.ledger import Ledger
from ocicopy.models import Descriptor
from ocicopy.registry import Registry
from ocicopy.transform import Conversion
from ocicopy.transport import Transport

host, repo, me, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

def digest(i):
    return Digest.of(f"{me}-{i}".encode())

async def main():
    async with Transport(ClientOptions(plain_http=frozenset({host}), use_docker_config=False)) as t:
        ledger = Ledger(Registry(t, host), repo)
        await ledger.load()  # every writer starts from the same state
        for i in range(10):
            ledger.record(digest(i), f"mirror/p{me}")
        zstd = Descriptor.model_validate({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                                          "digest": digest("z"), "size": 1})
        ledger.record_conversion(Conversion(digest("gz"), zstd, digest("diff")))
        time.sleep(max(0.0, start_at - time.time()))
        assert await ledger.save()

anyio.run(main)
"""


@pytest.mark.registry
@pytest.mark.parametrize("writers", [2, 6])
def test_after_concurrent_ledger_writers_one_more_run_sees_the_union(
    mirror: RegistryServer, tmp_path: Path, writers: int
) -> None:
    repo = unique_repo_name("ledger", prefix="m") + "/ocicopy-ledger"
    for _ in range(2):  # a second wave, over the first wave's shards and head
        start_at = time.time() + 2.0
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _LEDGER_WRITER, mirror.host, repo, str(w), str(start_at)],
                stderr=subprocess.PIPE,
                env=_env(tmp_path),
            )
            for w in range(writers)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()[-2000:]

    async def read() -> tuple[set[str], dict[Digest, list[str]], set[Digest]]:
        async with Transport(ClientOptions(plain_http=frozenset({mirror.host}), use_docker_config=False)) as t:
            ledger = Ledger(Registry(t, mirror.host), repo)
            repos = await ledger.repositories()
            return repos, dict(ledger.blobs), {c.source for c in await ledger.conversions()}

    repos, blobs, converted = anyio.run(read)
    assert repos == {f"mirror/p{w}" for w in range(writers)}
    for w in range(writers):
        for i in range(10):
            assert blobs[Digest.of(f"{w}-{i}".encode())] == [f"mirror/p{w}"]
        assert Digest.of(f"{w}-gz".encode()) in converted
