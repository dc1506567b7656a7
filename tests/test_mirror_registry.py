"""The mirroring engine (:meth:`ocicopy.Client.mirror`) against real registries, proven from their access logs.

The module starts its own pair of registries (a source and a mirror) so that what is "warm" or "cold", and
what the blob ledger holds, depends only on what these tests put there. Every test uses its own mirror
``prefix`` (hence its own mirror repositories and its own ledger) and its own source repositories and
layers. Outcomes are checked from the outside: the requests each registry logged between two marks, and the
mirror's content as skopeo reads it.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import images as im
from harness.oracle import docker_ref, skopeo_digest
from harness.registry import (
    AccessEntry,
    RegistryServer,
    blob_gets,
    blob_uploads,
    for_repo,
    heads,
    manifest_puts,
    mounts,
    start_registry,
    unique_repo_name,
)
from ocicopy import Client, ClientOptions, MirrorAction, MirrorReport, parse_plan

MakeRepo = Callable[[str], str]
_seeds = itertools.count(30_000)

SERVICES = ("api", "web", "worker", "billing")
#: three environments; staging and prod run the same version
ENVIRONMENTS = {"dev": "v2", "staging": "v1", "prod": "v1"}
CLUSTER = "prod-eu-1"


# --------------------------------------------------------------------------- registries and seeds


@dataclass(frozen=True)
class Pair:
    """A source registry and a mirror registry owned by one test module."""

    source: RegistryServer
    mirror: RegistryServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with (
        start_registry(tmp_path_factory.mktemp("mirror-source")) as source,
        start_registry(tmp_path_factory.mktemp("mirror-mirror")) as mirror,
    ):
        yield Pair(source, mirror)


def new_prefix(label: str) -> str:
    """A mirror prefix no other test uses (own repositories, own ledger)."""
    return unique_repo_name(label, prefix="m")


def new_layer(size: int = 1500) -> im.Layer:
    return im.layer(next(_seeds), size)


def new_image(base: im.Layer | None = None, platform: im.Platform = ("linux", "amd64", None)) -> im.Image:
    """A small image: the shared ``base`` layer (if any) and one layer of its own."""
    own = new_layer(1200 + next(_seeds) % 7 * 100)
    return im.make_image([base, own] if base is not None else [own], platform=platform)


@dataclass
class Fleet:
    """Source images: one source repository per service, one image per (service, tag), a shared base layer."""

    host: str
    base: im.Layer
    repos: dict[str, str] = field(default_factory=dict)
    images: dict[tuple[str, str], im.Manifest] = field(default_factory=dict)

    def ref(self, service: str, tag: str) -> str:
        return f"{self.host}/{self.repos[service]}:{tag}"

    def digest(self, service: str, tag: str) -> str:
        return self.images[(service, tag)].digest

    def blobs(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for obj in self.images.values():
            out.update(obj.blobs())
        return out

    def by_source(self) -> dict[str, im.Manifest]:
        return {self.ref(s, t): obj for (s, t), obj in self.images.items()}


def seed_fleet(
    source: RegistryServer, make_repo: MakeRepo, services: Sequence[str] = SERVICES, tags: Sequence[str] = ("v1", "v2")
) -> Fleet:
    fleet = Fleet(source.host, new_layer(2000))
    for service in services:
        fleet.repos[service] = make_repo(f"src-{service}")
        for tag in tags:
            img = new_image(fleet.base)
            im.push(source, fleet.repos[service], tag, img)
            fleet.images[(service, tag)] = img
    return fleet


def fleet_deployments(
    fleet: Fleet, services: Sequence[str] = SERVICES, environments: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    envs = ENVIRONMENTS if environments is None else environments
    return [
        {"service": s, "environment": env, "image": fleet.ref(s, tag)} for s in services for env, tag in envs.items()
    ]


def plan_data(
    pair: Pair, prefix: str, deployments: list[dict[str, Any]], mode: str = "service", **extra: Any
) -> dict[str, Any]:
    mirror: dict[str, Any] = {"registry": pair.mirror.host, "prefix": prefix, "mode": mode}
    if mode == "cluster":
        mirror["cluster"] = CLUSTER
    return {
        "mirror": mirror,
        "registries": {pair.source.host: {"plain_http": True}, pair.mirror.host: {"plain_http": True}},
        "deployments": deployments,
        **extra,
    }


async def run_mirror(data: dict[str, Any], **kwargs: Any) -> MirrorReport:
    """One run with a fresh client (a fresh process's knowledge: nothing but what the registries hold)."""
    async with Client(ClientOptions(use_docker_config=False)) as client:
        return await client.mirror(parse_plan(data), **kwargs)


class Window:
    """Both registries' requests between construction and :meth:`close`."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.marks = (pair.source.mark(), pair.mirror.mark())

    def close(self) -> tuple[list[AccessEntry], list[AccessEntry]]:
        return self.pair.source.requests(self.marks[0]), self.pair.mirror.requests(self.marks[1])


# --------------------------------------------------------------------------- log helpers


def last_segment(entry: AccessEntry) -> str:
    return entry.path.rstrip("/").rsplit("/", 1)[1]


def writes(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in entries if e.method in ("POST", "PUT", "PATCH", "DELETE")]


def blob_get_counts(entries: list[AccessEntry]) -> Counter[str]:
    return Counter(last_segment(e) for e in blob_gets(entries))


def upload_puts_201(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in blob_uploads(entries) if e.method == "PUT" and e.status == 201]


def ledger_repo(prefix: str) -> str:
    return f"{prefix}/ocicopy-ledger"


def outside(entries: list[AccessEntry], repo: str) -> list[AccessEntry]:
    return [e for e in entries if e.repo != repo]


def pinned_ref(pinned: str | None) -> str:
    """``host/repo@digest`` → skopeo's ``docker://host/repo@digest`` (checks the shape on the way)."""
    assert pinned is not None
    name, sep, digest = pinned.partition("@")
    assert sep and digest.startswith("sha256:"), pinned
    host, _, repo = name.partition("/")
    return docker_ref(host, repo, digest)


def actions(report: MirrorReport) -> dict[tuple[str, str], MirrorAction]:
    return {(d.service, d.environment): d.action for d in report.deployments}


def assert_totals_add_up(report: MirrorReport) -> None:
    by_action = Counter(d.action.value for d in report.deployments)
    assert sum(report.totals.deployments.values()) == len(report.deployments)
    for action in MirrorAction:
        assert report.totals.deployments[action.value] == by_action.get(action.value, 0), action


# --------------------------------------------------------------------------- 1. cluster mode, cold


@pytest.mark.anyio
async def test_cluster_cold_copies_each_unique_image_once(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo)
    prefix = new_prefix("cluster-cold")
    data = plan_data(pair, prefix, fleet_deployments(fleet), mode="cluster")
    cluster_repo = f"{prefix}/{CLUSTER}"
    unique_sources = {fleet.ref(s, tag) for s in SERVICES for tag in set(ENVIRONMENTS.values())}
    assert len(data["deployments"]) == 12 and len(unique_sources) == 8

    window = Window(pair)
    report = await run_mirror(data)
    src_log, mirror_log = window.close()

    assert report.ok, [d.error for d in report.deployments]
    by_destination: dict[str, list[MirrorAction]] = {}
    for d in report.deployments:
        assert d.destination.startswith(f"{pair.mirror.host}/{cluster_repo}:")
        by_destination.setdefault(d.destination, []).append(d.action)
    assert len(by_destination) == len(unique_sources)
    for destination, acts in by_destination.items():
        assert sorted(acts) == sorted([MirrorAction.COPIED] + [MirrorAction.SKIPPED] * (len(acts) - 1)), destination
    assert report.totals.deployments["copied"] == 8
    assert report.totals.deployments["skipped"] == 4

    # one manifest PUT per unique image (all by tag, in the cluster repository) + the ledger's
    puts = manifest_puts(mirror_log)
    assert len(for_repo(puts, cluster_repo)) == 8
    assert {last_segment(e) for e in for_repo(puts, cluster_repo)} == {
        d.destination.rsplit(":", 1)[1] for d in report.deployments
    }
    assert len(for_repo(puts, ledger_repo(prefix))) == 2  # the run's shard and the head folding it
    assert len(puts) == 10

    # each unique blob leaves the source at most once; every needed blob left it once
    counts = blob_get_counts(src_log)
    assert counts, "no blob was read from the source"
    assert max(counts.values()) == 1, counts.most_common(3)
    needed = {d for src in unique_sources for d in fleet.by_source()[src].blobs()}
    assert set(counts) == needed
    # ... and each source tag is asked at most once: the mirror lacks every image, so its manifest is needed
    # anyway and a GET by tag answers what a HEAD would (no HEAD at all)
    by_tag = Counter(e.path for e in src_log if "/manifests/" in e.path and "sha256:" not in e.path)
    assert set(by_tag.values()) == {1}, by_tag.most_common(3)
    assert [e for e in heads(src_log) if "/manifests/" in e.path] == []

    # the mirror holds exactly what the source holds
    by_source = fleet.by_source()
    for d in report.deployments:
        assert d.source is not None
        assert d.source_digest == by_source[d.source].digest
        assert skopeo_digest(pinned_ref(d.pinned)) == by_source[d.source].digest


# --------------------------------------------------------------------------- 2. warm reruns


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["cluster", "service"])
async def test_warm_rerun_only_heads(pair: Pair, make_repo: MakeRepo, mode: str) -> None:
    fleet = seed_fleet(pair.source, make_repo)
    prefix = new_prefix(f"warm-{mode}")
    data = plan_data(pair, prefix, fleet_deployments(fleet), mode=mode)
    cold = await run_mirror(data)
    assert cold.ok, [d.error for d in cold.deployments]

    window = Window(pair)
    warm = await run_mirror(data)  # a new Client: nothing known but what the mirror holds
    src_log, mirror_log = window.close()

    n = len(data["deployments"])
    assert [d.action for d in warm.deployments] == [MirrorAction.SKIPPED] * n
    assert blob_uploads(mirror_log) == []
    assert [e for e in mirror_log if e.method in ("POST", "PATCH")] == []
    assert manifest_puts(mirror_log) == []
    assert blob_gets(src_log) == []
    assert warm.totals.requests <= 2 * n
    assert len(src_log) + len(mirror_log) <= 2 * n
    assert len(src_log) + len(mirror_log) == warm.totals.requests
    assert for_repo(mirror_log, ledger_repo(prefix)) == [], "a warm run needs no ledger"
    for cold_d, warm_d in zip(cold.deployments, warm.deployments, strict=True):
        assert warm_d.pinned == cold_d.pinned


@pytest.mark.anyio
async def test_warm_rerun_with_platform_selection(pair: Pair, make_repo: MakeRepo) -> None:
    """A deployment that selects platforms of an index: warm, it is skipped and the mirror tag is HEADed once."""
    src_repo = make_repo("src-multi")
    base = new_layer()
    platforms = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
    index = im.make_index([new_image(base, p) for p in platforms])
    im.push(pair.source, src_repo, "v1", index)
    prefix = new_prefix("warm-platforms")
    source = f"{pair.source.host}/{src_repo}:v1"
    deployments = [
        {"service": "one", "environment": "prod", "image": source, "platforms": ["linux/arm64"]},
        {"service": "two", "environment": "prod", "image": source, "platforms": ["linux/amd64", "linux/arm64"]},
    ]
    data = plan_data(pair, prefix, deployments)
    cold = await run_mirror(data)
    assert [d.action for d in cold.deployments] == [MirrorAction.COPIED, MirrorAction.COPIED]
    assert skopeo_digest(pinned_ref(cold.deployments[0].pinned)) == index.images[1].digest

    window = Window(pair)
    warm = await run_mirror(data)
    src_log, mirror_log = window.close()

    assert [d.action for d in warm.deployments] == [MirrorAction.SKIPPED, MirrorAction.SKIPPED]
    assert [d.pinned for d in warm.deployments] == [d.pinned for d in cold.deployments]
    assert writes(mirror_log) == [] and blob_gets(src_log) == []
    mirror_heads = Counter(e.path for e in heads(mirror_log))
    assert max(mirror_heads.values()) == 1, f"a mirror tag was HEADed more than once per run: {mirror_heads}"
    assert len(src_log) + len(mirror_log) == warm.totals.requests
    assert warm.totals.requests <= 2 * len(deployments), [(e.method, e.uri) for e in [*src_log, *mirror_log]]


# --------------------------------------------------------------------------- 3. service mode mounts


@pytest.mark.anyio
async def test_service_mode_mounts_shared_layers(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo)
    prefix = new_prefix("service-mounts")
    data = plan_data(pair, prefix, fleet_deployments(fleet), mode="service")

    window = Window(pair)
    report = await run_mirror(data)
    src_log, mirror_log = window.close()

    assert report.ok, [d.error for d in report.deployments]
    for d in report.deployments:
        assert d.destination.startswith(f"{pair.mirror.host}/{prefix}/{d.service}:"), d.destination
        assert d.pinned is not None and d.pinned.startswith(f"{pair.mirror.host}/{prefix}/{d.service}@")
    service_repos = {f"{prefix}/{s}" for s in SERVICES}

    base = fleet.base.digest
    uploaded = [e.repo for e in upload_puts_201(mirror_log) if e.param("digest") == base]
    mounted = [e.repo for e in mounts(mirror_log, base)]
    assert len(uploaded) == 1, f"the base layer was uploaded {len(uploaded)} times: {uploaded}"
    assert set(mounted) == service_repos - set(uploaded), "the other services' repositories mount the base layer"
    assert len(mounted) == len(SERVICES) - 1
    assert blob_get_counts(src_log)[base] == 1

    # no blob is uploaded twice into the mirror, and the report counts what the registry did
    plan_uploads = outside(upload_puts_201(mirror_log), ledger_repo(prefix))
    assert max(Counter(e.param("digest") for e in plan_uploads).values()) == 1
    assert report.totals.blobs_mounted == len(mounts(mirror_log)) > 0
    assert report.totals.blobs_copied == len(plan_uploads)
    for d in report.deployments:
        assert skopeo_digest(pinned_ref(d.pinned)) == d.source_digest


# --------------------------------------------------------------------------- 5. a moved source tag


@pytest.mark.anyio
async def test_moved_source_tag_is_updated(pair: Pair, make_repo: MakeRepo) -> None:
    src_repo = make_repo("src")
    first, second = new_image(), new_image()
    im.push(pair.source, src_repo, "stable", first)
    prefix = new_prefix("moved")
    data = plan_data(
        pair, prefix, [{"service": "api", "environment": "prod", "image": f"{pair.source.host}/{src_repo}:stable"}]
    )
    before = await run_mirror(data)
    assert [d.action for d in before.deployments] == [MirrorAction.COPIED]
    destination = before.deployments[0].destination
    mirror_repo, _, mirror_tag = destination.removeprefix(f"{pair.mirror.host}/").rpartition(":")
    assert skopeo_digest(docker_ref(pair.mirror, mirror_repo, mirror_tag)) == first.digest

    im.push(pair.source, src_repo, "stable", second)  # the source tag moves
    after = await run_mirror(data)

    (d,) = after.deployments
    assert d.action is MirrorAction.UPDATED
    assert d.destination == destination
    assert d.source_digest == second.digest
    assert d.pinned == f"{pair.mirror.host}/{mirror_repo}@{second.digest}"
    assert any("moved" in w and "stable" in w for w in d.warnings), d.warnings
    assert skopeo_digest(docker_ref(pair.mirror, mirror_repo, mirror_tag)) == second.digest
    assert after.totals.deployments["updated"] == 1


# --------------------------------------------------------------------------- 6. immutable tags


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["option", "plan"])
async def test_immutable_tags_trust_the_mirror(pair: Pair, make_repo: MakeRepo, where: str) -> None:
    pinned_repo, mutable_repo, fresh_repo = make_repo("pinned"), make_repo("mutable"), make_repo("fresh")
    im.push(pair.source, pinned_repo, "1.4.2", old_pinned := new_image())
    im.push(pair.source, mutable_repo, "latest", new_image())
    im.push(pair.source, fresh_repo, "2.0.0", fresh := new_image())
    prefix = new_prefix(f"immutable-{where}")
    deployments = [
        {"service": "api", "environment": "prod", "image": f"{pair.source.host}/{pinned_repo}:1.4.2"},
        {"service": "web", "environment": "prod", "image": f"{pair.source.host}/{mutable_repo}:latest"},
    ]
    assert (await run_mirror(plan_data(pair, prefix, deployments))).ok
    # a matching tag that is not in the mirror yet must still be resolved at the source
    deployments.append({"service": "worker", "environment": "prod", "image": f"{pair.source.host}/{fresh_repo}:2.0.0"})
    pattern = r"v?\d+\.\d+\.\d+"
    checking = plan_data(pair, prefix, deployments)
    trusting = plan_data(pair, prefix, deployments, immutable_tags=pattern) if where == "plan" else checking
    kwargs = {"immutable_tags": pattern} if where == "option" else {}

    # both mirrored source tags move
    im.push(pair.source, pinned_repo, "1.4.2", moved_pinned := new_image())
    im.push(pair.source, mutable_repo, "latest", moved_mutable := new_image())

    window = Window(pair)
    report = await run_mirror(trusting, **kwargs)
    src_log, _ = window.close()

    api, web, worker = report.deployments
    assert api.action is MirrorAction.SKIPPED
    assert api.pinned is not None and api.pinned.endswith(f"@{old_pinned.digest}")
    assert any("immutable" in w for w in api.warnings), api.warnings
    assert for_repo(src_log, pinned_repo) == [], "a trusted tag is never asked at the source"
    assert web.action is MirrorAction.UPDATED  # 'latest' does not match: checked, and it moved
    assert web.source_digest == moved_mutable.digest
    assert for_repo(src_log, mutable_repo) != []
    assert worker.action is MirrorAction.COPIED
    assert skopeo_digest(pinned_ref(worker.pinned)) == fresh.digest

    without = await run_mirror(checking)  # no pattern: the moved tag is noticed
    assert actions(without) == {
        ("api", "prod"): MirrorAction.UPDATED,
        ("web", "prod"): MirrorAction.SKIPPED,
        ("worker", "prod"): MirrorAction.SKIPPED,
    }
    assert without.deployments[0].source_digest == moved_pinned.digest


# --------------------------------------------------------------------------- 8. report numbers


@pytest.mark.anyio
async def test_report_numbers_agree_with_the_registry(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=SERVICES[:3])
    prefix = new_prefix("numbers")
    deployments = fleet_deployments(fleet, services=SERVICES[:3])
    deployments.append({"service": "ghost", "environment": "prod", "image": fleet.ref("api", "no-such-tag")})
    data = plan_data(pair, prefix, deployments, mode="service")
    sizes = {digest: len(blob) for digest, blob in fleet.blobs().items()}

    window = Window(pair)
    report = await run_mirror(data)
    src_log, mirror_log = window.close()

    plan_uploads = outside(upload_puts_201(mirror_log), ledger_repo(prefix))
    digests = [e.param("digest") or "" for e in plan_uploads]
    assert report.totals.blobs_copied == len(plan_uploads) > 0
    assert report.totals.bytes_to_mirror == sum(sizes[d] for d in digests)
    assert report.totals.bytes_from_source == sum(e.bytes_written for e in blob_gets(src_log) if e.status == 200)
    assert report.totals.blobs_mounted == len(outside(mounts(mirror_log), ledger_repo(prefix)))
    assert report.totals.blobs_copied == sum(d.blobs_copied for d in report.deployments)
    assert report.totals.bytes_to_mirror == sum(d.bytes_to_mirror for d in report.deployments)
    assert report.totals.requests == len(src_log) + len(mirror_log)
    assert_totals_add_up(report)
    assert report.totals.deployments["failed"] == 1
    assert report.totals.deployments["copied"] == 6
    assert report.totals.deployments["skipped"] == 3


# --------------------------------------------------------------------------- 9. dry run


@pytest.mark.anyio
async def test_dry_run_reads_manifests_only_and_predicts(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("kept", "moved", "new"), tags=("v1",))
    prefix = new_prefix("dry-run")
    deployments = [{"service": s, "environment": "prod", "image": fleet.ref(s, "v1")} for s in ("kept", "moved")]
    assert (await run_mirror(plan_data(pair, prefix, deployments))).ok
    im.push(pair.source, fleet.repos["moved"], "v1", new_image(fleet.base))
    deployments.append({"service": "new", "environment": "prod", "image": fleet.ref("new", "v1")})
    data = plan_data(pair, prefix, deployments)

    window = Window(pair)
    dry = await run_mirror(data, dry_run=True)
    src_log, mirror_log = window.close()

    assert dry.dry_run is True
    for entry in [*src_log, *mirror_log]:
        assert entry.method in ("HEAD", "GET") and "/manifests/" in entry.path, entry
    assert blob_gets(src_log) == []
    assert writes(mirror_log) == [] and writes(src_log) == []
    assert for_repo(mirror_log, ledger_repo(prefix)) == []
    predicted = actions(dry)
    assert predicted == {
        ("kept", "prod"): MirrorAction.SKIPPED,
        ("moved", "prod"): MirrorAction.UPDATED,
        ("new", "prod"): MirrorAction.COPIED,
    }
    async with Client(ClientOptions(use_docker_config=False), plain_http=[pair.mirror.host]) as client:
        assert await client.resolve(dry.deployments[2].destination) is None, "a dry run wrote the new image"

    real = await run_mirror(data)
    assert actions(real) == predicted
    assert dry.totals.bytes_to_mirror >= real.totals.bytes_to_mirror


@pytest.mark.anyio
async def test_dry_run_predicts_shared_destinations_as_the_real_run(pair: Pair, make_repo: MakeRepo) -> None:
    """Cluster mode, two environments on the same version: the real run copies once and skips the other."""
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("dry-run-shared")
    data = plan_data(pair, prefix, fleet_deployments(fleet, ("api",), {"staging": "v1", "prod": "v1"}), mode="cluster")

    dry = await run_mirror(data, dry_run=True)
    real = await run_mirror(data)

    assert sorted(a.value for a in actions(real).values()) == ["copied", "skipped"]
    assert actions(dry) == actions(real)


@pytest.mark.anyio
async def test_dry_run_predicts_platform_selection_as_the_real_run(pair: Pair, make_repo: MakeRepo) -> None:
    """A warm platform-selected deployment: the real run skips it, the dry run should predict that."""
    src_repo = make_repo("src-multi")
    index = im.make_index([new_image(None, ("linux", "amd64", None)), new_image(None, ("linux", "arm64", "v8"))])
    im.push(pair.source, src_repo, "v1", index)
    deployment = {"service": "api", "environment": "prod", "image": f"{pair.source.host}/{src_repo}:v1"}
    data = plan_data(pair, new_prefix("dry-run-platforms"), [{**deployment, "platforms": ["linux/arm64"]}])
    assert (await run_mirror(data)).ok

    dry = await run_mirror(data, dry_run=True)
    real = await run_mirror(data)

    assert actions(real) == {("api", "prod"): MirrorAction.SKIPPED}
    assert actions(dry) == actions(real)


# --------------------------------------------------------------------------- 13. order in the mirror


def assert_manifests_after_content(
    entries: list[AccessEntry], repo: str, objects: dict[str, im.Manifest], tags: dict[str, str]
) -> set[str]:
    """Walk ``repo``'s log: each manifest PUT comes after its blobs (upload, mount or HEAD 200) / children.

    Returns the digests PUT. ``objects`` maps digests to the expected manifests; ``tags`` maps tags to digests.
    """
    blobs_present: set[str] = set()
    manifests_present: set[str] = set()
    for e in for_repo(entries, repo):
        if e.method == "PUT" and "/blobs/uploads/" in e.path and e.status == 201:
            blobs_present.add(e.param("digest") or "")
        elif e in mounts([e]):
            blobs_present.add(e.param("mount") or "")
        elif e.method == "HEAD" and "/blobs/" in e.path and e.status == 200:
            blobs_present.add(last_segment(e))
        elif e.method == "HEAD" and "/manifests/" in e.path and e.status == 200:
            manifests_present.add(tags.get(last_segment(e), last_segment(e)))
        elif e.method == "PUT" and "/manifests/" in e.path:
            assert e.status == 201, e
            ref = last_segment(e)
            digest = ref if ref.startswith("sha256:") else tags[ref]
            obj = objects[digest]
            if isinstance(obj, im.Index):
                missing = {c.digest for c in obj.children} - manifests_present
                assert not missing, f"index {digest} PUT before its children {missing}"
            else:
                missing = set(obj.blobs()) - blobs_present
                assert not missing, f"manifest {digest} PUT in {repo} before its blobs {missing}"
            manifests_present.add(digest)
    return manifests_present


@pytest.mark.anyio
async def test_mirror_puts_manifests_after_their_content(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    base = fleet.base
    index = im.make_index([new_image(base, ("linux", "amd64", None)), new_image(base, ("linux", "arm64", "v8"))])
    fleet.repos["multi"] = make_repo("src-multi")
    im.push(pair.source, fleet.repos["multi"], "v1", index)
    fleet.images[("multi", "v1")] = index
    prefix = new_prefix("order")
    deployments = fleet_deployments(fleet, ("api", "web"), {"dev": "v2", "prod": "v1"})
    deployments.append({"service": "multi", "environment": "prod", "image": fleet.ref("multi", "v1")})
    data = plan_data(pair, prefix, deployments, mode="service")

    window = Window(pair)
    report = await run_mirror(data)
    _, mirror_log = window.close()

    assert report.ok, [d.error for d in report.deployments]
    objects: dict[str, im.Manifest] = {}
    for obj in fleet.images.values():
        objects[obj.digest] = obj
        if isinstance(obj, im.Index):
            objects.update({c.digest: c for c in obj.children})
    for service in ("api", "web", "multi"):
        repo = f"{prefix}/{service}"
        mine = [d for d in report.deployments if d.service == service]
        tags = {d.destination.rsplit(":", 1)[1]: str(d.source_digest) for d in mine}
        put = assert_manifests_after_content(mirror_log, repo, objects, tags)
        expected = {str(d.source_digest) for d in mine}
        if service == "multi":
            expected |= {c.digest for c in index.children}
        assert put == expected, f"{repo}: PUT {put}, expected {expected}"
    # the ledger's artifacts, too, are PUT after their blobs: this run's shard, then the head that folds it
    ledger_log = for_repo(mirror_log, ledger_repo(prefix))
    put_at = [i for i, e in enumerate(ledger_log) if e in manifest_puts([e])]
    upload_at = [i for i, e in enumerate(ledger_log) if e in upload_puts_201([e])]
    assert len(put_at) == 2 and min(upload_at) < put_at[0] < max(upload_at) < put_at[1]
    assert skopeo_digest(pinned_ref(report.deployments[-1].pinned)) == index.digest
