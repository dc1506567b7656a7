"""The fake registry is spec-faithful enough for ocicopy, and its quirks, hooks and assertions work.

Every copy here runs the real :class:`ocicopy.Client` against :class:`FakeRegistry` over loopback HTTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2
import pytest

import ocicopy
from harness import images
from harness.fake_registry import (
    FakeRegistry,
    Quirks,
    Request,
    Response,
    assert_order,
    fail,
    is_blob_upload,
    is_manifest_put,
    is_mount,
)
from harness.registry import RegistryServer, blob_uploads, manifest_puts, mounts
from ocicopy.options import Limits


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    with FakeRegistry() as server:
        yield server


@pytest.fixture
def fake2() -> Iterator[FakeRegistry]:
    with FakeRegistry() as server:
        yield server


def options(*fakes: FakeRegistry, **extra: Any) -> ocicopy.ClientOptions:
    return ocicopy.ClientOptions(
        plain_http=frozenset(f.host for f in fakes),
        use_docker_config=False,
        **extra,
    )


def image(seed: int = 1, layers: int = 2, size: int = 3000, **kw: object) -> images.Image:
    return images.make_image([images.layer(seed * 100 + i, size) for i in range(layers)], **kw)  # type: ignore[arg-type]


def two_platform_index(seed: int = 7) -> images.Index:
    amd = image(seed, platform=("linux", "amd64", None))
    arm = image(seed + 1, platform=("linux", "arm64", "v8"))
    return images.make_index([amd, arm])


def assert_copied(dst: FakeRegistry, repo: str, tag: str, obj: images.Manifest) -> None:
    """Exact manifest bytes under the tag, every child by digest and every blob present."""
    assert dst.manifest(repo, tag) == obj.manifest
    assert dst.media_type(repo, tag) == obj.media_type
    children = obj.children
    for child in children:
        assert dst.manifest(repo, child.digest) == child.manifest
    for digest, data in obj.blobs().items():
        assert dst.blob(repo, digest) == data


def commit_url(session: httpx2.Response, digest: str) -> httpx2.URL:
    """The session's Location (relative, with its ``_state`` query kept) plus ``digest=``."""
    return httpx2.URL(session.headers["Location"]).copy_add_param("digest", digest)


async def copy(opts: ocicopy.ClientOptions, src: str, dst: str) -> ocicopy.CopyResult:
    async with ocicopy.Client(opts) as client:
        return await client.copy(src, dst)


# --------------------------------------------------------------------------- happy path


@pytest.mark.anyio
async def test_copy_image_within_one_fake_mounts(fake: FakeRegistry) -> None:
    img = image(1, layers=3)
    fake.seed("src/app", "v1", img)
    fake.clear()
    await copy(options(fake), f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
    assert_copied(fake, "dst/app", "v1", img)
    entries = fake.entries()
    assert {e.param("mount") for e in mounts(entries)} == set(img.blobs())
    assert all(e.param("from") == "src/app" for e in mounts(entries))
    assert blob_uploads(entries) == []
    assert_order(fake.requests, is_mount, is_manifest_put)


@pytest.mark.anyio
async def test_copy_index_within_one_fake_and_to_second_fake(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    index = two_platform_index()
    fake.seed("src/multi", "v1", index)
    fake.clear()
    await copy(options(fake, fake2), f"{fake.host}/src/multi:v1", f"{fake.host}/mirror/multi:v1")
    assert_copied(fake, "mirror/multi", "v1", index)
    assert len(mounts(fake.entries())) == len(index.blobs())
    assert blob_uploads(fake.entries()) == []

    await copy(options(fake, fake2), f"{fake.host}/src/multi:v1", f"{fake2.host}/other/multi:v1")
    assert_copied(fake2, "other/multi", "v1", index)
    assert fake2.tags("other/multi") == ["v1"]
    reqs = fake2.requests
    # each child: its blobs committed before its manifest PUT; both children before the index PUT
    for child in index.children:
        blobs = set(child.blobs())
        assert_order(reqs, commits_of(blobs), manifest_put_of(child.digest))
    assert_order(reqs, lambda r: is_manifest_put(r) and r.ref != "v1", lambda r: is_manifest_put(r) and r.ref == "v1")
    assert [r.ref for r in reqs if is_manifest_put(r)][-1] == "v1"


def commits_of(digests: set[str]) -> Callable[[Request], bool]:
    return lambda r: r.method == "PUT" and r.kind == "upload" and r.param("digest") in digests


def manifest_put_of(ref: str) -> Callable[[Request], bool]:
    return lambda r: is_manifest_put(r) and r.ref == ref


def test_harness_client_round_trip(fake: FakeRegistry) -> None:
    """The harness's own synchronous client (the one used with the real registry) works against the fake."""
    index = two_platform_index(21)
    assert images.push(fake.url, "seed/x", "t1", index) == index.digest
    got = images.get_manifest(fake.url, "seed/x", "t1")
    assert (got.content, got.media_type, got.digest) == (index.manifest, images.OCI_INDEX, index.digest)
    blob = index.children[0].layers[0]
    assert images.get_blob(fake.url, "seed/x", images.sha256(blob)) == blob


@pytest.mark.parametrize("target", ["fake", "registry"])
@pytest.mark.anyio
async def test_same_copy_against_fake_and_real_registry(target: str, request: pytest.FixtureRequest) -> None:
    """One scenario, two registries: the fake plays the real registry's part on the happy path."""
    server: FakeRegistry | RegistryServer = request.getfixturevalue(target)
    src, dst = f"fr/src-{target}-{time.monotonic_ns()}", f"fr/dst-{target}-{time.monotonic_ns()}"
    index = two_platform_index(31)
    images.push(server.url, src, "v1", index)
    result = await copy(
        ocicopy.ClientOptions(plain_http=frozenset({server.host}), use_docker_config=False),
        f"{server.host}/{src}:v1",
        f"{server.host}/{dst}:v1",
    )
    assert result.digest == index.digest
    assert images.get_manifest(server.url, dst, "v1").content == index.manifest


# --------------------------------------------------------------------------- quirks


@pytest.mark.anyio
async def test_no_mount_copy_uploads(fake: FakeRegistry) -> None:
    img = image(2)
    fake.seed("src/app", "v1", img)
    fake.quirks.no_mount = True
    fake.clear()
    await copy(options(fake), f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
    assert_copied(fake, "dst/app", "v1", img)
    reqs = fake.requests
    assert [r.status for r in reqs if is_mount(r)] and all(r.status == 202 for r in reqs if is_mount(r))
    committed = {r.param("digest") for r in reqs if r.method == "PUT" and r.kind == "upload" and r.status == 201}
    assert committed == set(img.blobs())


@pytest.mark.anyio
async def test_mount_401_copy_uploads(fake: FakeRegistry) -> None:
    img = image(3)
    fake.seed("src/app", "v1", img)
    fake.quirks = Quirks(no_mount=True, mount_401=True)
    fake.clear()
    await copy(options(fake), f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
    assert_copied(fake, "dst/app", "v1", img)
    reqs = fake.requests
    assert [r.status for r in reqs if is_mount(r)] and all(r.status == 401 for r in reqs if is_mount(r))
    assert len([r for r in reqs if r.method == "PUT" and r.kind == "upload" and r.status == 201]) == len(img.blobs())


@pytest.mark.anyio
async def test_mount_401_only_for_declined_mounts(fake: FakeRegistry) -> None:
    img = image(4)
    fake.seed("src/app", "v1", img)
    fake.quirks.mount_401 = True
    fake.clear()
    await copy(options(fake), f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
    assert all(r.status == 201 for r in fake.requests if is_mount(r))


@pytest.mark.anyio
async def test_patch_201_and_chunk_min_chunked_upload(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(5, layers=2, size=6000)
    fake.seed("src/app", "v1", img)
    fake2.quirks = Quirks(patch_201=True, chunk_min=1500)
    opts = options(fake, fake2, limits=Limits(chunk_size=1024))
    await copy(opts, f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert_copied(fake2, "dst/app", "v1", img)
    reqs = fake2.requests
    posts = [r for r in reqs if r.method == "POST" and r.kind == "upload"]
    assert posts and all(r.response_headers.get("OCI-Chunk-Min-Length") == "1500" for r in posts)
    patches = [r for r in reqs if r.method == "PATCH"]
    assert patches and all(r.status == 201 and r.body_size >= 1500 for r in patches)
    # every PUT after PATCHes carried the tail; the bytes the fake stored hash to the digests (checked above)


def test_chunk_min_refuses_monolithic_put_and_small_patch(fake: FakeRegistry) -> None:
    fake.quirks.chunk_min = 100
    data = b"x" * 300
    with httpx2.Client(base_url=fake.url) as http:
        start = http.post("/v2/r/blobs/uploads/")
        assert start.status_code == 202 and start.headers["OCI-Chunk-Min-Length"] == "100"
        put = http.put(commit_url(start, images.sha256(data)), content=data)
        assert put.status_code == 400 and put.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        start = http.post("/v2/r/blobs/uploads/")
        small = http.patch(start.headers["Location"], content=b"x" * 50, headers={"Content-Range": "0-49"})
        assert small.status_code == 416
        ok = http.patch(start.headers["Location"], content=data[:200], headers={"Content-Range": "0-199"})
        assert ok.status_code == 202 and ok.headers["Range"] == "0-199"
        status = http.get(ok.headers["Location"])
        assert status.status_code == 204 and status.headers["Range"] == "0-199"
        done = http.put(commit_url(ok, images.sha256(data)), content=data[200:])
        assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == images.sha256(data)
    assert fake.blob("r", images.sha256(data)) == data


@pytest.mark.anyio
async def test_no_head_falls_back_to_get(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(6)
    fake.seed("src/app", "v1", img)
    fake.quirks.no_head = True
    fake2.quirks.no_head = True
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert_copied(fake2, "dst/app", "v1", img)
    src_reqs = fake.requests
    assert any(r.method == "HEAD" and r.kind == "manifest" and r.status == 405 for r in src_reqs)
    assert any(r.method == "GET" and r.kind == "manifest" and r.ref == "v1" and r.status == 200 for r in src_reqs)
    dst_heads = [r for r in fake2.requests if r.method == "HEAD" and r.kind == "manifest"]
    assert dst_heads and all(r.status == 405 for r in dst_heads)
    async with ocicopy.Client(options(fake, fake2)) as client:
        info = await client.resolve(f"{fake2.host}/dst/app:v1")
    assert info is not None and info.digest == img.digest


def test_ignore_range(fake: FakeRegistry) -> None:
    blob = images.layer(99, 2000)
    digest = fake.seed_blob("r", blob)
    url = f"{fake.url}/v2/r/blobs/{digest}"
    partial = httpx2.get(url, headers={"Range": "bytes=100-"})
    assert partial.status_code == 206 and partial.content == blob[100:]
    assert partial.headers["Content-Range"] == f"bytes 100-{len(blob) - 1}/{len(blob)}"
    fake.quirks.ignore_range = True
    full = httpx2.get(url, headers={"Range": "bytes=100-"})
    assert full.status_code == 200 and full.content == blob and "Content-Range" not in full.headers


# --------------------------------------------------------------------------- spec errors


def test_spec_errors(fake: FakeRegistry) -> None:
    img = image(8, layers=1)
    with httpx2.Client(base_url=fake.url) as http:
        assert http.get("/v2/").status_code == 200
        start = http.post("/v2/r/blobs/uploads/")
        assert start.status_code == 202 and start.headers["Location"].startswith("/v2/r/blobs/uploads/")
        bad = http.put(commit_url(start, images.sha256(b"other")), content=b"data")
        assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
        orphan = http.put("/v2/r/manifests/v1", content=img.manifest, headers={"Content-Type": img.media_type})
        assert orphan.status_code == 400 and orphan.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert http.get("/v2/r/manifests/v1").json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        assert http.head(f"/v2/r/blobs/{images.sha256(img.layers[0])}").status_code == 404
        # a streamed body without Content-Length (Transfer-Encoding: chunked) is accepted
        start = http.post("/v2/r/blobs/uploads/")
        put = http.put(commit_url(start, images.sha256(img.config)), content=iter([img.config]))
        assert put.status_code == 201
        assert fake.requests[-1].headers.get("transfer-encoding") == "chunked"
    fake.quirks.max_manifest_bytes = 10
    fake.seed_blob("r", img.layers[0])
    with httpx2.Client(base_url=fake.url) as http:
        big = http.put("/v2/r/manifests/v1", content=img.manifest, headers={"Content-Type": img.media_type})
        assert big.status_code == 413


def test_referrers_switch(fake: FakeRegistry) -> None:
    img = image(9, layers=1)
    fake.seed("r", "v1", img)
    art = images.make_artifact(subject=img)
    fake.seed("r", art.digest, art)
    assert httpx2.get(f"{fake.url}/v2/r/referrers/{img.digest}").status_code == 404
    fake.quirks.no_referrers = False
    got = httpx2.get(f"{fake.url}/v2/r/referrers/{img.digest}")
    assert got.status_code == 200 and got.headers["Content-Type"] == images.OCI_INDEX
    assert [m["digest"] for m in got.json()["manifests"]] == [art.digest]
    assert got.json()["manifests"][0]["artifactType"] == art.artifact_type


# --------------------------------------------------------------------------- hooks and observation


@pytest.mark.anyio
async def test_before_hook_503_twice_then_copy_succeeds(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(10)
    fake.seed("src/app", "v1", img)
    fake2.before(fail(2, 503, when=lambda r: is_manifest_put(r) and r.ref == "v1", headers={"Retry-After": "0"}))
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert_copied(fake2, "dst/app", "v1", img)
    assert [(e.status) for e in manifest_puts(fake2.entries())] == [503, 503, 201]
    assert [r.hooked for r in fake2.requests if is_manifest_put(r)] == [True, True, False]


@pytest.mark.anyio
async def test_before_hook_503_on_blob_commit_restarts_upload(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(11, layers=1)
    fake.seed("src/app", "v1", img)
    layer_digest = images.sha256(img.layers[0])
    fake2.before(
        fail(2, 503, when=lambda r: r.method == "PUT" and r.kind == "upload" and r.param("digest") == layer_digest)
    )
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert_copied(fake2, "dst/app", "v1", img)
    commits = [r.status for r in fake2.requests if r.method == "PUT" and r.param("digest") == layer_digest]
    assert commits == [503, 503, 201]


@pytest.mark.anyio
async def test_after_hook_sees_every_response(fake: FakeRegistry) -> None:
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def record(req: Request, resp: Response) -> None:
        with lock:
            seen.append((req.method, resp.status))

    fake.after(record)
    fake.seed("src/app", "v1", image(12))
    await copy(options(fake), f"{fake.host}/src/app:v1", f"{fake.host}/dst/app:v1")
    assert sorted(seen) == sorted((r.method, r.status) for r in fake.requests)


@pytest.mark.anyio
async def test_max_in_flight(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(13, layers=5, size=2000)
    fake.seed("src/app", "v1", img)

    def slow_blob_head(req: Request) -> None:
        if req.method == "HEAD" and req.kind == "blob":
            time.sleep(0.05)

    fake2.before(slow_blob_head)
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert fake2.max_in_flight >= 2
    assert fake2.in_flight == 0

    # blob_concurrency=1: never more than one request at a time on the destination host
    fake2.clear()
    await copy(options(fake, fake2, blob_concurrency=1), f"{fake.host}/src/app:v1", f"{fake2.host}/dst2/app:v1")
    assert_copied(fake2, "dst2/app", "v1", img)
    assert fake2.max_in_flight == 1


@pytest.mark.anyio
async def test_hook_drop_connection_is_retried(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(14, layers=1)
    fake.seed("src/app", "v1", img)
    dropped = [False]

    def drop_once(req: Request) -> Response | None:
        if is_manifest_put(req) and not dropped[0]:
            dropped[0] = True
            return Response(0, drop=True)
        return None

    fake2.before(drop_once)
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    assert_copied(fake2, "dst/app", "v1", img)


def _req(method: str, path: str, start: int, end: int) -> Request:
    return Request(method, path, "", {}, start, status=201, end=end)


def test_assert_order_passes_and_fails() -> None:
    blob_put = _req("PUT", "/v2/r/blobs/uploads/u1", 1, 2)
    manifest = _req("PUT", "/v2/r/manifests/v1", 3, 4)
    assert_order([blob_put, manifest], is_blob_upload, is_manifest_put)
    late_blob = _req("PUT", "/v2/r/blobs/uploads/u2", 2, 5)  # still running when the manifest PUT started
    with pytest.raises(AssertionError):
        assert_order([blob_put, manifest, late_blob], is_blob_upload, is_manifest_put)
    with pytest.raises(AssertionError):
        assert_order([manifest, blob_put], is_manifest_put, is_blob_upload)
    with pytest.raises(AssertionError):  # nothing matched: not vacuously true
        assert_order([blob_put], is_blob_upload, is_manifest_put)
    assert_order([blob_put], is_blob_upload, is_manifest_put, allow_empty=True)


@pytest.mark.anyio
async def test_assert_order_on_real_copy_and_wrong_order(fake: FakeRegistry, fake2: FakeRegistry) -> None:
    img = image(15)
    fake.seed("src/app", "v1", img)
    await copy(options(fake, fake2), f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1")
    reqs = fake2.requests
    assert_order(reqs, is_blob_upload, is_manifest_put)
    with pytest.raises(AssertionError):
        assert_order(reqs, is_manifest_put, is_blob_upload)


@pytest.mark.anyio
@pytest.mark.parametrize("mount", [False, True], ids=["upload", "declined-mount"])
async def test_a_copy_cancelled_while_a_session_opens_still_ends_it(
    fake: FakeRegistry, fake2: FakeRegistry, mount: bool
) -> None:
    """The POST that opens an upload (or a mount the registry declines) is answered after the copy was
    cancelled: the session is still DELETEd, not left open at the registry until it purges it."""
    img = image(15, layers=1)
    fake.seed("src/app", "v1", img)
    if mount:
        fake2.seed("other/app", "v1", image(16, layers=1))  # the mount is asked from a repository without the blob
    opening = threading.Event()

    def slow_post(req: Request) -> None:
        if req.method == "POST" and "/blobs/uploads/" in req.path:
            opening.set()
            time.sleep(0.5)

    fake2.before(slow_post)
    opts = options(fake, fake2, blob_concurrency=1)
    async with ocicopy.Client(opts) as client, anyio.create_task_group() as tg:
        mount_from = ["other/app"] if mount else []
        tg.start_soon(lambda: client.copy(f"{fake.host}/src/app:v1", f"{fake2.host}/dst/app:v1", mount_from=mount_from))
        await anyio.to_thread.run_sync(opening.wait, 30)
        tg.cancel_scope.cancel()
    posts = [r for r in fake2.requests if r.method == "POST" and r.status == 202]
    ended = {r.path for r in fake2.requests if r.method in ("DELETE", "PUT")}
    assert posts, "no upload session was opened"
    sessions = {httpx2.Headers(r.response_headers)["location"].partition("?")[0] for r in posts}
    assert sessions <= ended, f"left open: {sessions - ended}"
