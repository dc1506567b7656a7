"""Fewer requests: what a cheaper request can answer is not asked twice (issue 10, section 2).

* Cold (the mirror lacks the image): the source manifest is fetched by tag, no HEAD before it.
* A repository new in this run (``tags/list`` says so, once): no blob or child HEAD before a placement; a mount
  is asked first, and a declined one (a stale hint) is followed by the HEAD before streaming.
* A repository that exists (the ledger lists it: no ``tags/list``): HEAD first, as a mount rewrites a link
  that exists and races a concurrent writer's manifest PUT.
Proven from the registries' own access logs (and the fake registry's request log).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness import images as im
from harness.fake_registry import FakeRegistry, Quirks, is_blob_upload, is_mount
from harness.registry import AccessEntry, blob_uploads, for_repo, heads, mounts, start_registry, upload_starts
from ocicopy import Client, ClientOptions, MirrorAction
from tests.test_mirror_registry import (
    MakeRepo,
    Pair,
    Window,
    fleet_deployments,
    new_image,
    new_prefix,
    plan_data,
    run_mirror,
    seed_fleet,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with (
        start_registry(tmp_path_factory.mktemp("requests-source")) as source,
        start_registry(tmp_path_factory.mktemp("requests-mirror")) as mirror,
    ):
        yield Pair(source, mirror)


def _tag_lists(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in entries if e.path.endswith("/tags/list")]


def _placements(entries: list[AccessEntry]) -> list[AccessEntry]:
    """Mount asks, upload starts and upload bodies."""
    return [e for e in entries if e.method in ("POST", "PUT", "PATCH") and "/blobs/uploads/" in e.path]


async def test_new_repositories_are_placed_into_without_heads(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("fresh")
    data = plan_data(pair, prefix, fleet_deployments(fleet, ("api", "web"), {"prod": "v1"}))
    window = Window(pair)
    report = await run_mirror(data)
    src_log, mirror_log = window.close()
    assert {d.action for d in report.deployments} == {MirrorAction.COPIED}
    assert [e for e in heads(src_log) if "/manifests/" in e.path] == []  # GET by tag instead
    gets = [e for e in src_log if e.method == "GET" and "/manifests/" in e.path]
    assert len(gets) == 2, gets  # each image's manifest once: the copy takes it from the run's resolution
    for service in ("api", "web"):
        log = for_repo(mirror_log, f"{prefix}/{service}")
        assert [(e.status) for e in _tag_lists(log)] == [404]  # asked once: NAME_UNKNOWN, a new repository
        assert [e for e in heads(log) if "/blobs/" in e.path] == []
        assert _placements(log)
    # the shared base layer was uploaded into one repository and mounted into the other, at the first ask
    base = fleet.base.digest
    assert len([e for e in mounts(mirror_log) if e.param("mount") == base]) == 1
    assert len([e for e in upload_starts(mirror_log) if e.param("mount") == base]) == 0


async def test_an_existing_repository_is_heads_first_and_not_listed_again(pair: Pair, make_repo: MakeRepo) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("warmrepo")
    await run_mirror(plan_data(pair, prefix, fleet_deployments(fleet, ("api",), {"prod": "v1"})))
    v2 = new_image(fleet.base)  # the next release: the base layer is already in the repository
    im.push(pair.source, fleet.repos["api"], "v2", v2)
    fleet.images[("api", "v2")] = v2
    window = Window(pair)
    report = await run_mirror(plan_data(pair, prefix, fleet_deployments(fleet, ("api",), {"prod": "v2"})))
    _, mirror_log = window.close()
    assert [d.action for d in report.deployments] == [MirrorAction.COPIED]
    log = for_repo(mirror_log, f"{prefix}/api")
    assert _tag_lists(log) == []  # the ledger knows the repository
    for placed in _placements(log):
        if placed.method != "POST":
            continue
        digest = placed.param("mount") or ""
        asked = [e for e in heads(log) if e.path.endswith("/blobs/" + digest)] if digest else []
        assert not digest or asked, f"mounted {digest} without a HEAD first"
    base_heads = [e for e in heads(log) if e.path.endswith("/blobs/" + fleet.base.digest)]
    assert [e.status for e in base_heads] == [200]  # the base layer: found, neither mounted nor sent
    assert not [e for e in blob_uploads(log) if e.param("digest") == fleet.base.digest]


async def test_a_declined_mount_into_a_new_repository_heads_before_streaming() -> None:
    image = im.make_image([im.layer(4101, 3000)])
    with FakeRegistry(Quirks(no_mount=True)) as fake:
        fake.seed("src/app", "v1", image)
        options = ClientOptions(plain_http=frozenset({fake.host}), use_docker_config=False)
        async with Client(options) as client:
            client.blobs.fresh.add((fake.host, "dst/app"))  # what the mirror's probe records for a new repository
            await client.copy(f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1", mount_from=["elsewhere/app"])
        layer = image.layers[0].digest
        seen = [r for r in fake.requests if layer in (r.path, r.param("mount"), r.param("digest")) or layer in r.path]
    kinds = [
        ("mount" if is_mount(r) else "upload" if is_blob_upload(r) else r.method) for r in seen if r.method != "GET"
    ]
    # the source's own repository is tried first (same registry), then the hint: both decline (202)
    assert kinds[:2] == ["mount", "mount"] and kinds[2] == "HEAD" and kinds[-1] == "upload"
    assert fake.manifest("dst/app", "v1") == image.manifest
