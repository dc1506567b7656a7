"""Vendor quirks played by the fake registry: ocicopy's fallbacks, observed request by request."""

from __future__ import annotations

import json

import pytest

import ocicopy
from harness import images
from harness.fake_registry import (
    FakeRegistry,
    Quirks,
    Response,
    fail,
    is_blob_upload,
    is_manifest_put,
    is_mount,
)

pytestmark = pytest.mark.anyio


def client_for(*fakes: FakeRegistry, chunk_size: int | None = None) -> ocicopy.Client:
    retry = ocicopy.RetryPolicy(attempts=3, base_delay=0.001)
    limits = ocicopy.Limits(chunk_size=chunk_size) if chunk_size else ocicopy.Limits()
    hosts = frozenset(f.host for f in fakes)
    return ocicopy.Client(ocicopy.ClientOptions(plain_http=hosts, use_docker_config=False, retry=retry, limits=limits))


def _fast_races(client: ocicopy.Client, attempts: int = 6) -> ocicopy.Client:
    """The client's manifest-PUT race policy with millisecond pauses (the schedule is not what is tested)."""
    client.trees.race_policy = ocicopy.RetryPolicy(attempts=attempts, base_delay=0.001, max_delay=0.002)
    client.trees.recheck_delay = 0.001
    return client


async def test_uncounted_mounts_are_uploaded_after_two_refusals() -> None:
    """ECR-like: a mount answered 201 whose blob the manifest PUT then does not see (REGISTRY-QUIRKS.md). The PUT
    is retried once as it is, then the blobs are HEADed (there), then the mounted ones are uploaded."""
    image = images.make_image([images.layer(2001, 3000), images.layer(2002, 2000)])
    with FakeRegistry(Quirks(uncounted_mounts=True)) as fake:
        fake.seed("src/app", "v1", image)
        async with _fast_races(client_for(fake)) as client:
            result = await client.copy(f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
        seen = fake.requests
    assert fake.manifest("dst/app", "v1") == image.manifest
    puts = [r for r in seen if is_manifest_put(r)]
    assert [r.status for r in puts] == [400, 400, 400, 201]  # plain retry, HEADs, then the uploads
    mounts = [r for r in seen if is_mount(r) and r.status == 201]
    uploads = [r for r in seen if is_blob_upload(r) and r.method == "PUT" and r.status == 201]
    assert len(mounts) == 3 and len(uploads) == 3  # every mounted blob was uploaded after the refusals
    assert all(u.start > puts[2].end for u in uploads) and puts[3].start > max(u.end for u in uploads)
    assert result.action is ocicopy.CopyAction.COPIED


@pytest.mark.parametrize("mounted", [False, True], ids=["uploaded", "mounted"])
async def test_a_blob_link_race_is_ridden_out_without_placing_blobs_again(mounted: bool) -> None:
    """CNCF distribution under concurrent writers: the PUT names blobs that are there while their links are being
    rewritten (DIGEST_INVALID + MANIFEST_BLOB_UNKNOWN). ocicopy waits and retries; it places nothing again,
    which would rewrite the links once more and feed the race (the fake restarts the race on every placement)."""
    image = images.make_image([images.layer(2005, 3000), images.layer(2006, 2000)])
    with FakeRegistry(Quirks(link_race=2)) as fake:
        fake.seed("src/app", "v1", image)
        async with _fast_races(client_for(fake)) as client:
            src = "src/app" if mounted else "other/app"
            if not mounted:
                fake.seed(src, "v1", image)
                fake.quirks.no_mount = True
            result = await client.copy(f"{fake.host}/{src}:v1", f"{fake.host}/dst/app:v1")
        seen = fake.requests
    assert fake.manifest("dst/app", "v1") == image.manifest
    puts = [r for r in seen if is_manifest_put(r)]
    assert [r.status for r in puts] == [400, 400, 201]
    first = puts[0].start
    placed = [r for r in seen if r.start > first and (is_mount(r) or (is_blob_upload(r) and r.method == "PUT"))]
    assert placed == []
    heads = [r for r in seen if r.start > puts[1].end and r.method == "HEAD" and r.kind == "blob"]
    assert heads  # after the second refusal the named blobs were looked at
    assert result.action is ocicopy.CopyAction.COPIED


async def test_a_blob_really_gone_is_placed_again_and_only_that_one() -> None:
    """A blob the PUT names is truly missing (removed after it was placed, say by another pipeline's cleanup):
    two HEADs spaced apart miss it, so it alone is uploaded again before the next PUT."""
    image = images.make_image([images.layer(2007, 3000), images.layer(2008, 2000)])
    gone = image.layers[1].digest
    with FakeRegistry(Quirks(no_mount=True)) as fake:
        fake.seed("src/app", "v1", image)
        removed: list[bool] = []

        def remove_once(req):  # type: ignore[no-untyped-def]
            if is_manifest_put(req) and not removed:
                removed.append(True)
                with fake._store.lock:
                    fake._store.links["dst/app"].discard(gone)
            return None

        fake.before(remove_once)
        async with _fast_races(client_for(fake)) as client:
            await client.copy(f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
        seen = fake.requests
    assert fake.manifest("dst/app", "v1") == image.manifest
    puts = [r for r in seen if is_manifest_put(r)]
    assert [r.status for r in puts] == [400, 400, 201]
    again = [r for r in seen if r.start > puts[0].end and is_blob_upload(r) and r.method == "PUT"]
    assert [r.param("digest") for r in again] == [gone]


async def test_blob_unknown_that_never_settles_fails_bounded_and_leaves_no_tag() -> None:
    image = images.make_image([images.layer(2003, 3000)])
    with FakeRegistry() as fake:
        fake.seed("src/app", "v1", image)
        fake.before(fail(100, 400, when=is_manifest_put, code="MANIFEST_BLOB_UNKNOWN"))
        async with _fast_races(client_for(fake), attempts=4) as client:
            with pytest.raises(ocicopy.RegistryError) as info:
                await client.copy(f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
        puts = [r for r in fake.requests if is_manifest_put(r)]
    assert "MANIFEST_BLOB_UNKNOWN" in info.value.codes and len(puts) == 4
    assert fake.tags("dst/app") == []


@pytest.mark.parametrize("status", [401, 403, 404, 500])
async def test_any_mount_failure_falls_back_to_an_upload(status: int) -> None:
    image = images.make_image([images.layer(2004 + status, 3000)])
    with FakeRegistry() as fake:
        fake.seed("src/app", "v1", image)
        fake.before(fail(100, status, when=is_mount, code="DENIED"))
        async with client_for(fake) as client:
            result = await client.copy(f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
        assert fake.manifest("dst/app", "v1") == image.manifest
    assert result.totals.blobs_copied == 2 and result.totals.blobs_mounted == 0


async def test_registry_without_manifest_head_falls_back_to_get() -> None:
    image = images.make_image([images.layer(2010, 3000)])
    with FakeRegistry(Quirks(no_head=True)) as src, FakeRegistry(Quirks(no_head=True)) as dst:
        src.seed("app", "v1", image)
        async with client_for(src, dst) as client:
            first = await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
            second = await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
        assert dst.manifest("app", "v1") == image.manifest
    assert first.action is ocicopy.CopyAction.COPIED and second.action is ocicopy.CopyAction.SKIPPED


async def test_416_on_a_patch_restarts_the_blob_with_a_new_session() -> None:
    image = images.make_image([images.layer(2020, 6000)])
    with FakeRegistry() as src, FakeRegistry(Quirks(chunk_min=1500)) as dst:
        src.seed("app", "v1", image)
        dst.before(fail(1, 416, when=lambda r: r.method == "PATCH", code="BLOB_UPLOAD_INVALID"))
        async with client_for(src, dst, chunk_size=1024) as client:
            await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
        assert dst.manifest("app", "v1") == image.manifest
        patches = [r for r in dst.requests if r.method == "PATCH"]
        starts = [r for r in dst.requests if r.method == "POST" and r.status == 202]
    assert patches[0].status == 416 and all(p.status in (201, 202) for p in patches[1:])
    assert len(starts) == 3  # config + layer, and a new session for the layer after the 416


async def test_foreign_urls_are_never_fetched() -> None:
    """A descriptor's ``urls`` (foreign layers) point elsewhere: ocicopy reads blobs from the registry only."""
    layer = images.layer(2030, 3000)
    image = images.make_image([layer])
    with FakeRegistry() as elsewhere, FakeRegistry() as src, FakeRegistry() as dst:
        doc = json.loads(image.manifest)
        doc["layers"][0]["urls"] = [f"http://{elsewhere.host}/layer.tar.gz"]
        raw = json.dumps(doc, indent=3).encode() + b"\n"
        manifest_image = images.Image(raw, image.media_type, image.config, image.layers, image.platform)
        src.seed("app", "v1", manifest_image)
        async with client_for(src, dst, elsewhere) as client:
            await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
        assert dst.manifest("app", "v1") == raw
        assert elsewhere.requests == []


async def test_source_blob_missing_fails_before_any_manifest_put() -> None:
    image = images.make_image([images.layer(2040, 3000), images.layer(2041, 2000)])
    missing = images.sha256(image.layers[1])
    with FakeRegistry() as src, FakeRegistry() as dst:
        src.seed("app", "v1", image)
        src.before(fail(100, 404, when=lambda r: r.method == "GET" and missing in r.path, code="BLOB_UNKNOWN"))
        async with client_for(src, dst) as client:
            with pytest.raises(ocicopy.NotFoundError, match="BLOB_UNKNOWN"):
                await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
        assert [r for r in dst.requests if is_manifest_put(r)] == []
        assert dst.tags("app") == []


@pytest.mark.parametrize("delta", [-1, 1])
async def test_content_length_other_than_the_descriptor_is_refused(delta: int) -> None:
    image = images.make_image([images.layer(2050, 3000)])
    layer = images.sha256(image.layers[0])
    size = len(image.layers[0])
    with FakeRegistry() as src, FakeRegistry() as dst:
        src.seed("app", "v1", image)
        body = (image.layers[0] + b"x")[: size + delta]

        def lie(r):  # type: ignore[no-untyped-def]
            if r.method == "GET" and layer in r.path:
                return Response(200, {"Content-Type": "application/octet-stream"}, body)
            return None

        src.before(lie)
        async with client_for(src, dst) as client:
            with pytest.raises(ocicopy.DigestMismatchError, match="Content-Length differs"):
                await client.copy(f"{src.host}/app:v1", f"{dst.host}/app:v1")
        assert not dst.has_blob("app", layer) and dst.tags("app") == []
