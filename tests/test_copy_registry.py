"""Copies against real CNCF distribution registries, observed through their access logs, skopeo as oracle.

Every test seeds its own repositories (``make_repo``) with small deterministic images, runs
:meth:`ocicopy.Client.copy` and then proves the outcome from the outside: the destination's bytes as
skopeo and plain httpx2 read them, and the requests the registries logged between two marks.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import anyio
import pytest

import ocicopy
from harness import images as im
from harness.oracle import docker_ref, skopeo_digest, skopeo_inspect_raw
from harness.registry import (
    AccessEntry,
    RegistryServer,
    blob_gets,
    blob_uploads,
    for_repo,
    heads,
    manifest_gets,
    manifest_puts,
    mounts,
    upload_starts,
    uploaded_digests,
)
from ocicopy import BlobAction, Client, ClientOptions, CopyAction, ManifestError

MakeRepo = Callable[[str], str]
_seeds = itertools.count(1000)


def _client(*servers: RegistryServer) -> Client:
    """A client that speaks plain HTTP to ``servers`` and never reads the machine's docker config."""
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


def _ref(server: RegistryServer, repo: str, ref: str = "latest") -> str:
    return f"{server.host}/{repo}{'@' if ':' in ref else ':'}{ref}"


def _layers(n: int, size: int = 1500) -> list[im.Layer]:
    """``n`` fresh small layers (each test gets seeds no other test uses)."""
    return [im.layer(next(_seeds), size + 100 * i) for i in range(n)]


def _image(media: im.Media = "oci", platform: im.Platform = ("linux", "amd64", None), n: int = 2) -> im.Image:
    return im.make_image(_layers(n), media=media, platform=platform)


def _index(media: im.Media = "oci", platforms: list[im.Platform] | None = None) -> im.Index:
    platforms = platforms or [("linux", "amd64", None), ("linux", "arm64", "v8")]
    return im.make_index([_image(media, p) for p in platforms], media=media)


def _writes(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in entries if e.method in ("PUT", "POST", "PATCH", "DELETE")]


def _blob_heads(entries: list[AccessEntry], status: int | None = None) -> list[AccessEntry]:
    return [
        e
        for e in heads(entries)
        if "/blobs/" in e.path and "/uploads/" not in e.path and (status is None or e.status == status)
    ]


def _touches(entries: list[AccessEntry], digest: str) -> list[AccessEntry]:
    """Requests naming ``digest`` in their path or query (HEAD, GET, mount, upload commit...)."""
    return [e for e in entries if digest in e.uri]


def _assert_blobs_at(server: RegistryServer, repo: str, obj: im.Manifest) -> None:
    for digest, data in obj.blobs().items():
        assert im.get_blob(server, repo, digest) == data, f"blob {digest} differs at {server.host}/{repo}"


# --------------------------------------------------------------------------- 1. byte-exact copies


def _kind(kind: str) -> im.Manifest:
    if kind == "oci-image":
        return im.make_image(_layers(2), annotations={"org.example.kind": "oci"})
    if kind == "docker-image":
        return _image("docker", n=2)
    if kind == "oci-index":
        return _index("oci")
    if kind == "docker-list":
        return _index("docker")
    if kind == "oci-index-with-artifact":
        amd64 = _image()
        return im.make_index([amd64, _image(platform=("linux", "arm64", "v8")), im.make_artifact(subject=amd64)])
    raise AssertionError(kind)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["oci-image", "docker-image", "oci-index", "docker-list", "oci-index-with-artifact"])
async def test_copy_is_byte_exact(
    kind: str, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    obj = _kind(kind)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", obj)
    source_raw = skopeo_inspect_raw(docker_ref(registry, src_repo, "v1"))
    assert source_raw == obj.manifest  # the oracle reads what was seeded

    async with _client(registry, registry2) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"))

    assert result.action is CopyAction.COPIED
    assert result.transformed is False
    assert result.source_digest == result.digest == obj.digest
    assert result.media_type == obj.media_type
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == source_raw
    assert skopeo_digest(docker_ref(registry2, dst_repo, "v1")) == obj.digest
    fetched = im.get_manifest(registry2, dst_repo, "v1")
    assert fetched.content == obj.manifest
    assert fetched.media_type == obj.media_type
    for child in obj.children:
        assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, child.digest)) == child.manifest
    _assert_blobs_at(registry2, dst_repo, obj)


@pytest.mark.anyio
async def test_copy_artifact_with_subject_is_byte_exact(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    subject = _image()
    artifact = im.make_artifact(
        b"sbom for the subject\n", artifact_type="application/vnd.ocitest.sbom.v1", subject=subject
    )
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "app", subject)
    im.push(registry, src_repo, "sbom", artifact)

    async with _client(registry, registry2) as client:
        first = await client.copy(_ref(registry, src_repo, "app"), _ref(registry2, dst_repo, "app"))
        result = await client.copy(_ref(registry, src_repo, "sbom"), _ref(registry2, dst_repo, "sbom"))

    assert first.digest == subject.digest
    assert result.action is CopyAction.COPIED
    assert result.digest == result.source_digest == artifact.digest
    raw = skopeo_inspect_raw(docker_ref(registry2, dst_repo, "sbom"))
    assert raw == artifact.manifest
    doc = json.loads(raw)
    assert doc["artifactType"] == "application/vnd.ocitest.sbom.v1"
    assert doc["subject"]["digest"] == subject.digest
    assert skopeo_digest(docker_ref(registry2, dst_repo, subject.digest)) == subject.digest
    _assert_blobs_at(registry2, dst_repo, artifact)
    _assert_blobs_at(registry2, dst_repo, subject)


@pytest.mark.anyio
async def test_destination_without_tag_takes_source_tag_and_digest_source_needs_an_explicit_digest(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    """A destination without a tag takes the source's; a source by digest has none to give, so an untagged push
    must be asked for (``DST@DIGEST``): it is refused with one line otherwise (issue 11: an untagged image is
    easy to lose, e.g. to a garbage collection that deletes untagged manifests)."""
    img = _image()
    src_repo, dst_tagged, dst_bare = make_repo("src"), make_repo("tagged"), make_repo("bare")
    im.push(registry, src_repo, "1.2.3", img)
    async with _client(registry, registry2) as client:
        tagged = await client.copy(_ref(registry, src_repo, "1.2.3"), f"{registry2.host}/{dst_tagged}")
        with pytest.raises(ocicopy.InputError, match=r"names no tag .* add :TAG to the destination \(or @sha256:"):
            await client.copy(_ref(registry, src_repo, img.digest), f"{registry2.host}/{dst_bare}")
        with im.RegistryClient(registry2, dst_bare) as reader:
            assert reader.tags() == [] and not reader.blob_exists(im.sha256(img.config))  # nothing pushed
        by_digest = await client.copy(_ref(registry, src_repo, img.digest), f"{registry2.host}/{dst_bare}@{img.digest}")
    assert tagged.destination.endswith(f"{dst_tagged}:1.2.3")
    assert im.get_manifest(registry2, dst_tagged, "1.2.3").content == img.manifest
    assert by_digest.digest == img.digest
    assert im.get_manifest(registry2, dst_bare, img.digest).content == img.manifest
    with im.RegistryClient(registry2, dst_bare) as reader:
        assert reader.tags() == []
    assert by_digest.pinned == f"{registry2.host}/{dst_bare}@{img.digest}"


# --------------------------------------------------------------------------- 2. result accounting


@pytest.mark.anyio
async def test_result_accounting_matches_destination_log(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("oci")
    blobs = index.blobs()
    preseeded = index.images[0].layers[0]
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    with im.RegistryClient(registry2, dst_repo) as seeder:
        seeder.push_blob(preseeded)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"))
    entries = registry2.requests(mark)

    t = result.totals
    uploaded = uploaded_digests(entries)
    assert len(uploaded) == len(set(uploaded)), "a blob was uploaded twice"
    assert t.blobs_copied == len(uploaded) == len(blobs) - 1
    assert {b.digest for b in result.blobs if b.action is BlobAction.COPIED} == set(uploaded)
    assert t.bytes_sent == sum(len(blobs[d]) for d in uploaded)
    assert all(b.bytes_sent == b.size for b in result.blobs if b.action is BlobAction.COPIED)
    assert t.blobs_mounted == len(mounts(entries)) == 0
    assert t.blobs_skipped == len(_blob_heads(entries, 200)) == 1
    assert [b.digest for b in result.blobs if b.action is BlobAction.SKIPPED] == [preseeded.digest]
    assert preseeded.digest not in uploaded
    pushed = [e for e in manifest_puts(entries) if e.status == 201]
    assert t.manifests_pushed == len(pushed) == 3  # two children and the index
    assert t.manifests_skipped == 0
    assert result.requests > 0


# --------------------------------------------------------------------------- 3. skip


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["oci-image", "oci-index"])
async def test_second_copy_is_skipped_with_one_head_each_side(
    kind: str, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    obj = _kind(kind)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", obj)
    src, dst = _ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1")
    async with _client(registry, registry2) as client:
        assert (await client.copy(src, dst)).action is CopyAction.COPIED

    src_mark, dst_mark = registry.mark(), registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(src, dst)
    src_entries, dst_entries = registry.requests(src_mark), registry2.requests(dst_mark)

    assert result.action is CopyAction.SKIPPED
    assert result.digest == obj.digest
    assert result.media_type == obj.media_type
    assert result.blobs == [] and result.manifests == []
    for entries, repo in ((src_entries, src_repo), (dst_entries, dst_repo)):
        assert [(e.method, e.path, e.status) for e in entries] == [("HEAD", f"/v2/{repo}/manifests/v1", 200)]
        assert manifest_gets(entries) == []
        assert _writes(entries) == []


# --------------------------------------------------------------------------- 4. blob already at destination


@pytest.mark.anyio
@pytest.mark.parametrize("fresh_client", [True, False], ids=["fresh-client", "same-client"])
async def test_shared_layer_already_at_destination_is_skipped(
    fresh_client: bool, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    shared, only_a, only_b = _layers(3)
    a = im.make_image([shared, only_a])
    b = im.make_image([shared, only_b])
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "a", a)
    im.push(registry, src_repo, "b", b)

    first = _client(registry, registry2)
    second = _client(registry, registry2) if fresh_client else first
    try:
        await first.copy(_ref(registry, src_repo, "a"), _ref(registry2, dst_repo, "a"))
        src_mark, dst_mark = registry.mark(), registry2.mark()
        result = await second.copy(_ref(registry, src_repo, "b"), _ref(registry2, dst_repo, "b"))
    finally:
        await first.aclose()
        if second is not first:
            await second.aclose()
    src_entries, dst_entries = registry.requests(src_mark), registry2.requests(dst_mark)

    actions = {blob.digest: blob.action for blob in result.blobs}
    assert actions[shared.digest] is BlobAction.SKIPPED
    assert actions[only_b.digest] is BlobAction.COPIED
    assert shared.digest not in uploaded_digests(dst_entries)
    assert [e for e in _touches(dst_entries, shared.digest) if e.method != "HEAD"] == []
    assert _touches(blob_gets(src_entries), shared.digest) == []
    assert only_b.digest in uploaded_digests(dst_entries)
    assert result.totals.bytes_sent == len(only_b) + len(b.config)
    _assert_blobs_at(registry2, dst_repo, b)


# --------------------------------------------------------------------------- 5. mounts within a registry


@pytest.mark.anyio
async def test_same_registry_other_repository_mounts_every_blob(registry: RegistryServer, make_repo: MakeRepo) -> None:
    img = _image(n=3)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)

    mark = registry.mark()
    async with _client(registry) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry, dst_repo, "v1"))
    entries = registry.requests(mark)

    assert result.action is CopyAction.COPIED
    assert result.totals.blobs_mounted == len(img.blobs()) == len(mounts(entries))
    assert result.totals.bytes_sent == 0
    for digest in img.blobs():
        found = mounts(entries, digest)
        assert len(found) == 1, f"expected one 201 mount of {digest}"
        assert found[0].repo == dst_repo
        assert found[0].param("from") == src_repo
    assert all(b.action is BlobAction.MOUNTED and b.mounted_from == src_repo for b in result.blobs)
    assert blob_uploads(entries) == []
    assert blob_gets(entries) == []
    assert im.get_manifest(registry, dst_repo, "v1").content == img.manifest
    _assert_blobs_at(registry, dst_repo, img)


def _session_hygiene(entries: list[AccessEntry]) -> None:
    """Every upload session opened (POST answered 202) was committed (PUT 201) or cancelled (DELETE)."""
    opened = upload_starts(entries)
    closed = [
        e
        for e in entries
        if "/blobs/uploads/" in e.path and ((e.method == "PUT" and e.status == 201) or e.method == "DELETE")
    ]
    assert len(opened) == len(closed), f"{len(opened)} upload sessions opened, {len(closed)} committed or cancelled"


@pytest.mark.anyio
async def test_retag_within_the_same_repository_moves_no_blob(registry: RegistryServer, unique_repo: str) -> None:
    index = _index("oci")
    im.push(registry, unique_repo, "v1", index)
    mark = registry.mark()
    async with _client(registry) as client:
        result = await client.copy(_ref(registry, unique_repo, "v1"), _ref(registry, unique_repo, "stable"))
    entries = registry.requests(mark)
    assert result.action is CopyAction.COPIED
    assert result.digest == index.digest
    assert [e for e in entries if "/blobs/" in e.path] == []
    assert [e.path.rsplit("/", 1)[-1] for e in manifest_puts(entries)] == ["stable"]
    assert im.get_manifest(registry, unique_repo, "stable").content == index.manifest


@pytest.mark.anyio
async def test_existing_tag_with_other_digest_is_overwritten(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    old, new = _image(), _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", new)
    im.push(registry2, dst_repo, "v1", old)
    async with _client(registry, registry2) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"))
    assert result.action is CopyAction.COPIED
    assert skopeo_digest(docker_ref(registry2, dst_repo, "v1")) == new.digest


@pytest.mark.anyio
async def test_mount_from_hint_is_used_across_registries(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, holder, empty, dst_repo = make_repo("src"), make_repo("holder"), make_repo("empty"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    im.push(registry2, holder, "v1", img)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(
            _ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"), mount_from=[empty, holder]
        )
    entries = registry2.requests(mark)

    assert all(b.action is BlobAction.MOUNTED and b.mounted_from == holder for b in result.blobs)
    assert {e.param("mount") for e in mounts(entries)} == set(img.blobs())
    assert {e.param("from") for e in mounts(entries)} == {holder}
    assert blob_uploads(entries) == []
    _session_hygiene(entries)
    _assert_blobs_at(registry2, dst_repo, img)


@pytest.mark.anyio
async def test_declined_mount_falls_back_to_one_upload_per_blob(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, empty, dst_repo = make_repo("src"), make_repo("empty"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"), mount_from=[empty])
    entries = registry2.requests(mark)

    assert all(b.action is BlobAction.COPIED for b in result.blobs)
    assert mounts(entries) == []
    assert sorted(uploaded_digests(entries)) == sorted(img.blobs())
    _session_hygiene(entries)
    _assert_blobs_at(registry2, dst_repo, img)


@pytest.mark.anyio
@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "declined-hint"])
async def test_concurrent_copies_into_two_repositories_upload_each_blob_once(
    hint: bool, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image(n=3)
    src_repo, one, two, empty = make_repo("src"), make_repo("one"), make_repo("two"), make_repo("empty")
    im.push(registry, src_repo, "v1", img)
    results: dict[str, ocicopy.CopyResult] = {}

    mark = registry2.mark()
    async with _client(registry, registry2) as client:

        async def run(repo: str) -> None:
            results[repo] = await client.copy(
                _ref(registry, src_repo, "v1"), _ref(registry2, repo, "v1"), mount_from=[empty] if hint else []
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, one)
            tg.start_soon(run, two)
    entries = registry2.requests(mark)

    assert sorted(uploaded_digests(entries)) == sorted(img.blobs()), "each blob should cross the wire once"
    assert len(mounts(entries)) == len(img.blobs())
    totals = [r.totals for r in results.values()]
    assert sum(t.blobs_copied for t in totals) == len(img.blobs())
    assert sum(t.blobs_mounted for t in totals) == len(img.blobs())
    assert sum(t.bytes_sent for t in totals) == sum(len(b) for b in img.blobs().values())
    _session_hygiene(entries)
    for repo in (one, two):
        assert im.get_manifest(registry2, repo, "v1").content == img.manifest
        _assert_blobs_at(registry2, repo, img)


# --------------------------------------------------------------------------- 6. index child already present


@pytest.mark.anyio
async def test_index_child_already_present_is_skipped_and_its_blobs_untouched(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("oci")
    present, missing = index.images
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    im.push(registry2, dst_repo, present.digest, present)

    src_mark, dst_mark = registry.mark(), registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"))
    src_entries, dst_entries = registry.requests(src_mark), registry2.requests(dst_mark)

    actions = {m.digest: m.action for m in result.manifests}
    assert actions == {
        present.digest: BlobAction.SKIPPED,
        missing.digest: BlobAction.COPIED,
        index.digest: BlobAction.COPIED,
    }
    assert result.totals.manifests_skipped == 1
    assert [e.status for e in heads(dst_entries) if e.path.endswith(f"/manifests/{present.digest}")] == [200]
    assert [e for e in manifest_puts(dst_entries) if present.digest in e.path] == []
    assert [e for e in manifest_gets(src_entries) if present.digest in e.path] == []
    for digest in present.blobs():
        assert _touches(dst_entries, digest) == [], f"blob {digest} of the present child was touched"
        assert _touches(src_entries, digest) == []
    assert {b.digest for b in result.blobs} == set(missing.blobs())
    assert im.get_manifest(registry2, dst_repo, "v1").content == index.manifest
    _assert_blobs_at(registry2, dst_repo, index)


# --------------------------------------------------------------------------- 7. platform selection

THREE = [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]


@pytest.mark.anyio
@pytest.mark.parametrize("media", ["oci", "docker"])
async def test_one_platform_copies_that_child_alone(
    media: im.Media, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index(media, THREE)
    amd64, arm64, arm = index.images
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(
            _ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"), platforms=["linux/arm64"]
        )
    entries = registry2.requests(mark)

    assert result.action is CopyAction.COPIED
    assert result.transformed is True
    assert result.source_digest == index.digest
    assert result.digest == arm64.digest
    assert result.media_type == arm64.media_type
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == arm64.manifest
    _assert_blobs_at(registry2, dst_repo, arm64)
    assert set(uploaded_digests(entries)) == set(arm64.blobs())
    assert [e.path.rsplit("/", 1)[-1] for e in manifest_puts(entries)] == ["v1"]
    with im.RegistryClient(registry2, dst_repo) as reader:
        for other in (amd64, arm):
            assert not any(reader.blob_exists(d) for d in other.blobs())


@pytest.mark.anyio
@pytest.mark.parametrize("media", ["oci", "docker"])
async def test_two_of_three_platforms_make_a_new_index(
    media: im.Media, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index(media, THREE)
    amd64, arm64, arm = index.images
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        result = await client.copy(
            _ref(registry, src_repo, "v1"),
            _ref(registry2, dst_repo, "v1"),
            platforms=["linux/arm/v7", "linux/amd64"],
        )
    entries = registry2.requests(mark)

    raw = skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1"))
    doc = json.loads(raw)
    assert result.transformed is True
    assert result.source_digest == index.digest
    assert result.digest == im.sha256(raw) != index.digest
    assert result.media_type == index.media_type == doc["mediaType"]
    assert [m["digest"] for m in doc["manifests"]] == [amd64.digest, arm.digest]  # index order kept
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm"]
    for child in (amd64, arm):
        assert im.get_manifest(registry2, dst_repo, child.digest).content == child.manifest
        _assert_blobs_at(registry2, dst_repo, child)
    with im.RegistryClient(registry2, dst_repo) as reader:
        assert reader.http.head(f"/v2/{dst_repo}/manifests/{arm64.digest}").status_code == 404
        assert not any(reader.blob_exists(d) for d in arm64.blobs())
    assert len([e for e in manifest_puts(entries) if e.status == 201]) == 3


@pytest.mark.anyio
async def test_all_platforms_selected_is_the_same_index(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("oci")
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    async with _client(registry, registry2) as client:
        result = await client.copy(
            _ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"), platforms=["linux/amd64", "linux/arm64"]
        )
    assert result.transformed is False
    assert result.digest == index.digest
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == index.manifest


@pytest.mark.anyio
async def test_unknown_platform_names_available_ones_and_pushes_nothing(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("oci", THREE)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)

    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        with pytest.raises(ManifestError) as info:
            await client.copy(
                _ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"), platforms=["linux/s390x"]
            )
    entries = registry2.requests(mark)

    message = str(info.value)
    assert "linux/s390x" in message
    for available in ("linux/amd64", "linux/arm64/v8", "linux/arm/v7"):
        assert available in message
    assert _writes(entries) == []
    assert manifest_puts(entries) == []


# --------------------------------------------------------------------------- 8. ordering


def _assert_order(entries: list[AccessEntry], index: im.Index, tag: str, mounted: bool) -> None:
    position = {id(e): i for i, e in enumerate(entries)}
    puts = [e for e in manifest_puts(entries) if e.status == 201]
    put_at = {e.path.rsplit("/", 1)[-1]: position[id(e)] for e in puts}
    for child in index.images:
        assert child.digest in put_at, f"child {child.digest} was not PUT"
        for digest in child.blobs():
            if mounted:
                arrivals = [position[id(e)] for e in mounts(entries, digest)]
            else:
                arrivals = [position[id(e)] for e in blob_uploads(entries) if e.param("digest") == digest]
            assert arrivals, f"blob {digest} never arrived"
            assert max(arrivals) < put_at[child.digest], f"blob {digest} arrived after its manifest"
        assert put_at[child.digest] < put_at[tag], "index PUT before a child"
    last_write = _writes(entries)[-1]
    assert last_write.method == "PUT" and last_write.path.endswith(f"/manifests/{tag}"), "the tag is not last"


@pytest.mark.anyio
async def test_order_blobs_then_children_then_tag_across_registries(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("oci", THREE)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        await client.copy(_ref(registry, src_repo, "v1"), _ref(registry2, dst_repo, "v1"))
    _assert_order(for_repo(registry2.requests(mark), dst_repo), index, "v1", mounted=False)


@pytest.mark.anyio
async def test_order_mounts_then_children_then_tag_within_a_registry(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    index = _index("docker", THREE)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    mark = registry.mark()
    async with _client(registry) as client:
        await client.copy(_ref(registry, src_repo, "v1"), _ref(registry, dst_repo, "v1"))
    entries = registry.requests(mark)
    assert blob_uploads(entries) == []
    _assert_order(for_repo(entries, dst_repo), index, "v1", mounted=True)


# --------------------------------------------------------------------------- reading: resolve, inspect, digest


@pytest.mark.anyio
async def test_resolve_inspect_digest(registry: RegistryServer, unique_repo: str) -> None:
    index = _index("docker")
    im.push(registry, unique_repo, "v1", index)
    async with _client(registry) as client:
        info = await client.resolve(_ref(registry, unique_repo, "v1"))
        missing = await client.resolve(_ref(registry, unique_repo, "nope"))
        manifest = await client.inspect(_ref(registry, unique_repo, "v1"))
        digest = await client.digest(_ref(registry, unique_repo, "v1"))
        child = await client.inspect(_ref(registry, unique_repo, index.images[1].digest))
    assert info is not None
    assert (info.digest, info.media_type, info.size) == (index.digest, index.media_type, len(index.manifest))
    assert missing is None
    assert manifest.raw == index.manifest
    assert manifest.is_index
    assert [c.digest for c in manifest.children()] == [c.digest for c in index.images]
    assert digest == index.digest
    assert child.raw == index.images[1].manifest
    assert {b.digest for b in child.blobs()} == set(index.images[1].blobs())


# --------------------------------------------------------------------------- 12. sync API


def test_sync_copy_from_plain_code(registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    result = ocicopy.copy(
        _ref(registry, src_repo, "v1"),
        _ref(registry2, dst_repo, "v1"),
        plain_http=[registry.host, registry2.host],
        options=ClientOptions(use_docker_config=False),
    )
    assert isinstance(result, ocicopy.CopyResult)
    assert result.action is CopyAction.COPIED
    assert result.digest == img.digest
    assert skopeo_digest(docker_ref(registry2, dst_repo, "v1")) == img.digest
    again = ocicopy.copy(
        _ref(registry, src_repo, "v1"),
        _ref(registry2, dst_repo, "v1"),
        plain_http=[registry.host, registry2.host],
        options=ClientOptions(use_docker_config=False),
    )
    assert again.action is CopyAction.SKIPPED
