"""Fleets against real registries (issue 12): one plan, three mirror registries (one per cluster) and a source,
run by the ``ocicopy mirror`` command in a fresh process."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.fault_proxy import Fault, FaultProxy
from harness.oracle import skopeo_digest
from harness.registry import RegistryServer, blob_gets, free_port, manifest_gets, start_registry
from ocicopy import MirrorAction
from ocicopy.report import read_lock
from tests.test_mirror_cli import Run, ocicopy_run, stdout_report, write_plan
from tests.test_mirror_registry import MakeRepo, new_prefix, pinned_ref, seed_fleet

__all__ = ["ocicopy_run"]  # the fixture, shared

CLUSTERS = ("eu", "us", "staging")
MODES = {"eu": "service", "us": "cluster", "staging": "cluster"}


@dataclass
class Fleet:
    source: RegistryServer
    mirrors: dict[str, RegistryServer]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with (
        start_registry(tmp_path_factory.mktemp("fleet-source")) as source,
        start_registry(tmp_path_factory.mktemp("fleet-eu")) as eu,
        start_registry(tmp_path_factory.mktemp("fleet-us")) as us,
        start_registry(tmp_path_factory.mktemp("fleet-staging")) as staging,
    ):
        yield Fleet(source, {"eu": eu, "us": us, "staging": staging})


def fleet_plan(
    fleet: Fleet, prefix: str, deployments: list[dict[str, Any]], **mirrors: dict[str, Any]
) -> dict[str, Any]:
    hosts = [fleet.source.host, *(m.host for m in fleet.mirrors.values()), *(m["registry"] for m in mirrors.values())]
    return {
        "version": 2,
        "mirrors": {
            name: {"registry": server.host, "prefix": prefix, "mode": MODES[name]}
            for name, server in fleet.mirrors.items()
        }
        | mirrors,
        "registries": {host: {"plain_http": True} for host in hosts},
        "deployments": deployments,
    }


def deployments_of(images: Any) -> list[dict[str, Any]]:
    return [
        {"service": "api", "environment": "prod", "image": images.ref("api", "v1"), "clusters": ["eu", "us"]},
        {"service": "web", "environment": "prod", "image": images.ref("web", "v1")},  # every cluster
        {"service": "api", "environment": "staging", "image": images.ref("api", "v2"), "clusters": ["staging"]},
    ]


EXPECTED = {  # (cluster, service, environment) → the source (service, tag) it pins
    ("eu", "api", "prod"): ("api", "v1"),
    ("us", "api", "prod"): ("api", "v1"),
    ("eu", "web", "prod"): ("web", "v1"),
    ("us", "web", "prod"): ("web", "v1"),
    ("staging", "web", "prod"): ("web", "v1"),
    ("staging", "api", "staging"): ("api", "v2"),
}


def test_a_fleet_plan_mirrors_each_deployment_into_each_of_its_clusters(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    data = fleet_plan(fleet, new_prefix("fleet"), deployments_of(images))
    plan = write_plan(tmp_path / "plan.json", data)
    source_mark = fleet.source.mark()
    mirror_marks = {m.host: m.mark() for m in fleet.mirrors.values()}

    dry = ocicopy_run("mirror", plan, "--dry-run", "--json", "-")  # predicts, writes nothing
    assert dry.returncode == 0, dry.stderr.decode()
    prediction = stdout_report(dry)
    predicted = {(d.cluster, d.service, d.environment): d.action for d in prediction.deployments}
    assert predicted == dict.fromkeys(EXPECTED, MirrorAction.COPIED)
    blobs = {d: len(b) for key in set(EXPECTED.values()) for d, b in images.images[key].blobs().items()}
    assert prediction.graph is not None and prediction.graph.bytes_from_source == sum(blobs.values())  # each once
    assert prediction.totals.bytes_from_source == sum(blobs.values())
    assert prediction.graph.nodes["tag"] == len(EXPECTED) and prediction.graph.nodes["read"] == len(blobs)
    assert all(e.method in ("GET", "HEAD") for m in fleet.mirrors.values() for e in m.requests(mirror_marks[m.host]))
    source_mark = fleet.source.mark()

    proc = ocicopy_run("mirror", plan, "--json", "-", "--lock", "lock.json")
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)

    got = {(d.cluster, d.service, d.environment): d for d in report.deployments}
    assert set(got) == set(EXPECTED)
    for (cluster, service, env), (src_service, tag) in EXPECTED.items():
        d = got[(cluster, service, env)]
        assert d.action is MirrorAction.COPIED, (cluster, service, env, d.error)
        assert d.pinned is not None and d.pinned.startswith(fleet.mirrors[cluster].host + "/")
        assert skopeo_digest(pinned_ref(d.pinned)) == images.digest(src_service, tag)
    # cluster mode: one repository per cluster; service mode: one per service
    assert {got[("us", s, e)].pinned.split("@")[0] for s, e in (("api", "prod"), ("web", "prod"))} == {  # type: ignore[union-attr]
        f"{fleet.mirrors['us'].host}/{data['mirrors']['us']['prefix']}/us"
    }
    assert got[("eu", "api", "prod")].pinned.split("@")[0].endswith("/api")  # type: ignore[union-attr]

    assert list(report.clusters) == list(CLUSTERS)
    assert {n: c.mode.value for n, c in report.clusters.items()} == MODES
    assert report.mode is None  # the clusters' modes differ
    assert {n: c.totals.deployments["copied"] for n, c in report.clusters.items()} == {"eu": 2, "us": 2, "staging": 2}
    assert sum(c.totals.requests for c in report.clusters.values()) < report.totals.requests  # the source's too

    # The source is asked once per run for each reference, and each blob leaves it once, however many clusters
    # need them (the others follow that read, or read a mirror that holds the blob).
    from_source = fleet.source.requests(source_mark)
    asked = Counter(e.path for e in manifest_gets(from_source))
    assert asked and max(asked.values()) == 1, asked
    assert all("/manifests/v" in p for p in asked), asked  # by tag only: the copies take what resolving fetched
    read = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(from_source) if e.status == 200)
    assert set(read) == set(blobs) and max(read.values()) == 1, read
    assert report.totals.bytes_from_source == sum(blobs.values())  # the report says so too (was: once per cluster)
    assert sum(c.totals.bytes_from_source for c in report.clusters.values()) == sum(blobs.values())

    lock = read_lock(tmp_path / "lock.json")
    pins = {(e.cluster, e.service, e.environment): e.pinned for e in lock.deployments}
    assert pins == {key: got[key].pinned for key in EXPECTED}
    jq_shape = json.loads((tmp_path / "lock.json").read_text())["deployments"]
    assert [(e["cluster"], e["service"], e["environment"]) for e in jq_shape] == sorted(EXPECTED)

    warm = ocicopy_run("mirror", plan, "--json", "-")
    assert warm.returncode == 0, warm.stderr.decode()
    again = stdout_report(warm)
    assert {d.action for d in again.deployments} == {MirrorAction.SKIPPED}
    assert again.totals.requests <= 2 * len(EXPECTED), again.totals.requests


def test_one_mirror_down_fails_only_its_cluster(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    dead = f"127.0.0.1:{free_port()}"  # nothing listens
    data = fleet_plan(fleet, new_prefix("fleet-down"), deployments_of(images))
    data["mirrors"]["staging"]["registry"] = dead
    data["registries"][dead] = {"plain_http": True}
    proc = ocicopy_run("mirror", write_plan(tmp_path / "plan.json", data), "--json", "-")
    assert proc.returncode == 1
    report = stdout_report(proc)
    by = {(d.cluster, d.service, d.environment): d for d in report.deployments}
    for key in EXPECTED:
        if key[0] == "staging":
            assert by[key].action is MirrorAction.FAILED and dead in (by[key].error or ""), by[key]
            assert by[key].pinned is None
        else:
            assert by[key].action is MirrorAction.COPIED, by[key].error
    err = proc.stderr.decode()
    assert "ocicopy: error: web/prod in staging: " in err and "ocicopy: error: api/prod" not in err, err


def test_cluster_limits_a_run_to_some_clusters(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    plan = write_plan(tmp_path / "plan.json", fleet_plan(fleet, new_prefix("fleet-one"), deployments_of(images)))
    marks = {name: server.mark() for name, server in fleet.mirrors.items()}
    proc = ocicopy_run("mirror", plan, "--cluster", "us", "--cluster", "staging", "--json", "-")
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert sorted({d.cluster for d in report.deployments}) == ["staging", "us"]
    assert fleet.mirrors["eu"].requests(marks["eu"]) == []  # nothing sent to the cluster left out
    bad = ocicopy_run("mirror", plan, "--cluster", "mars")
    assert bad.returncode == 2 and b"no cluster 'mars' in the plan (its clusters: eu, us, staging)" in bad.stderr


def test_a_mirror_failing_mid_blob_is_retried_without_reading_the_source_again(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("fleet-reset")
    deployments = [{"service": s, "environment": "prod", "image": images.ref(s, "v1")} for s in ("api", "web")]
    with FaultProxy(fleet.mirrors["us"].host) as proxy:
        # us's first blob upload: its answer never arrives (the connection is reset), so the copy into us fails
        # mid-blob as far as ocicopy can tell, and is retried
        proxy.add(Fault("reset", match=f"PUT /v2/{prefix}/us/blobs/uploads/".encode()))
        data = fleet_plan(fleet, prefix, deployments, us={"registry": proxy.host, "prefix": prefix, "mode": "cluster"})
        mark = fleet.source.mark()
        proc = ocicopy_run("mirror", write_plan(tmp_path / "plan.json", data), "--json", "-")
        assert proxy.stats["faults_triggered"] == 1
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}
    read = Counter(e.path.rsplit("/", 1)[-1] for e in blob_gets(fleet.source.requests(mark)) if e.status == 200)
    assert read and max(read.values()) == 1, read  # the retry read the shared read's spool, or a mirror holding it
    for d in report.deployments:
        assert d.pinned is not None and d.source_digest is not None
        host = fleet.mirrors[d.cluster].host
        assert skopeo_digest(pinned_ref(d.pinned.replace(proxy.host, host))) == d.source_digest


def test_a_fleet_with_a_layout_mirror_and_a_build(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("fleet-mixed")
    build = {"repository": "https://git.example.com/acme/batch", "commit": "3f9c2ab4e1d0c8b7a6f5e4d3c2b1a09f8e7d6c5b"}
    data = {
        "version": 2,
        "mirrors": {
            "eu": {"registry": fleet.mirrors["eu"].host, "prefix": prefix, "mode": "service"},
            "edge": {"layout": f"oci:{tmp_path / 'edge'}", "prefix": prefix, "mode": "cluster"},
        },
        "registries": {h: {"plain_http": True} for h in (fleet.source.host, fleet.mirrors["eu"].host)},
        "deployments": [
            {"service": "api", "environment": "prod", "image": images.ref("api", "v1")},
            {"service": "batch", "environment": "prod", "build": build, "clusters": ["eu"]},
        ],
    }
    proc = ocicopy_run("mirror", write_plan(tmp_path / "plan.json", data), "--json", "-")
    assert proc.returncode == 0, proc.stderr.decode()
    got = {(d.cluster, d.service): d for d in stdout_report(proc).deployments}
    assert set(got) == {("eu", "api"), ("edge", "api"), ("eu", "batch")}
    assert got[("eu", "batch")].action is MirrorAction.BUILD_NEEDED and got[("eu", "batch")].build_key
    edge = got[("edge", "api")]
    assert edge.action is MirrorAction.COPIED and edge.pinned is not None
    assert edge.pinned.startswith(f"oci:{tmp_path / 'edge'}/{prefix}/edge@")
    assert skopeo_digest(edge.destination) == images.digest("api", "v1")  # oci:DIR:TAG, a layout skopeo reads
    eu = got[("eu", "api")]
    assert eu.pinned is not None and skopeo_digest(pinned_ref(eu.pinned)) == images.digest("api", "v1")


def test_an_index_for_every_cluster_is_fetched_from_the_source_once(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """A two-platform index to the three clusters (two with a platform selection of it): its index and each child
    manifest leave the source once in the run, every cluster's copy taking what resolving fetched."""
    from harness import images as im

    repo = make_repo("idx")
    amd = im.make_image([im.layer(12_001, 3000)], platform=("linux", "amd64", None))
    arm = im.make_image([im.layer(12_002, 3000)], platform=("linux", "arm64", "v8"))
    index = im.make_index([amd, arm])
    im.push(fleet.source, repo, "v1", index)  # with its children
    image = f"{fleet.source.host}/{repo}:v1"
    deployments = [
        {"service": "api", "environment": "prod", "image": image, "clusters": ["eu"]},
        {"service": "api", "environment": "arm", "image": image, "platforms": ["linux/arm64/v8"]},
    ]
    mark = fleet.source.mark()
    proc = ocicopy_run(
        "mirror", write_plan(tmp_path / "plan.json", fleet_plan(fleet, new_prefix("idx"), deployments)), "--json", "-"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert len(report.deployments) == 4 and {d.action for d in report.deployments} == {MirrorAction.COPIED}
    asked = Counter(e.path for e in manifest_gets(fleet.source.requests(mark)))
    children = {f"/v2/{repo}/manifests/{im.sha256(c.manifest)}" for c in (amd, arm)}
    assert set(asked) == {f"/v2/{repo}/manifests/v1"} | children and set(asked.values()) == {1}, asked
    for d in report.deployments:
        assert d.pinned is not None
        want = im.sha256(index.manifest) if d.environment == "prod" else im.sha256(arm.manifest)
        assert skopeo_digest(pinned_ref(d.pinned)) == want
