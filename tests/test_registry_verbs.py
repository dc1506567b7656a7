"""The distribution API verbs of :class:`ocicopy.registry.Registry`, against the real registry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from harness import images
from harness.registry import RegistryServer, blob_uploads, mounts, upload_starts
from ocicopy import ClientOptions
from ocicopy.digest import Digest, Verifier
from ocicopy.errors import DigestMismatchError, NotFoundError
from ocicopy.registry import Registry, UploadSession, read_blob, verified
from ocicopy.transport import Transport

pytestmark = pytest.mark.anyio


def transport_for(*servers: RegistryServer) -> Transport:
    return Transport(ClientOptions(plain_http=frozenset(s.host for s in servers), use_docker_config=False))


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_chunked_upload_sends_patches_of_at_least_the_minimum(registry: RegistryServer, unique_repo: str) -> None:
    data = images.layer(901, 300_000)
    digest = Digest(data.digest)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        session = await reg.start_upload(unique_repo)
        assert session is not None
        # As if the registry had sent OCI-Chunk-Min-Length: 100000 (distribution never does).
        forced = UploadSession(session.repository, session.location, chunk_min=100_000)
        reg.limits = reg.limits.model_copy(update={"chunk_size": 1024})
        mark = registry.mark()
        await reg.upload(forced, digest, len(data), verified(chunks(data, 7000), Verifier(digest, len(data))))
        entries = registry.requests(mark)
        assert await reg.blob_exists(unique_repo, digest) == len(data)
        assert await read_blob(reg, unique_repo, digest, 1 << 20) == data
    patches = [e for e in blob_uploads(entries) if e.method == "PATCH"]
    puts = [e for e in blob_uploads(entries) if e.method == "PUT"]
    # Chunks are max(min, chunk_size) = 100 kB, PATCHed while bytes remain after them: 300 kB plus tar and gzip
    # overhead gives three PATCHes, and the few hundred bytes left travel in the committing PUT.
    assert len(patches) == 3
    assert all(e.status == 202 for e in patches)
    assert [e.status for e in puts] == [201]


async def test_declined_mount_uploads_into_the_offered_session(registry: RegistryServer, make_repo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    data = images.layer(902, 5000)
    digest = Digest(data.digest)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        mark = registry.mark()
        session = await reg.start_upload(dst, digest, src)  # src does not hold it: distribution answers 202
        assert session is not None
        await reg.upload(session, digest, len(data), verified(chunks(data, 1000), Verifier(digest, len(data))))
        entries = registry.requests(mark)
        assert await reg.blob_exists(dst, digest) == len(data)
    assert mounts(entries) == []
    starts = upload_starts(entries)
    assert len(starts) == 1 and starts[0].param("mount") == digest  # the only POST was the mount attempt
    assert [e.status for e in blob_uploads(entries)] == [201]


async def test_mount_answered_201_returns_no_session(registry: RegistryServer, make_repo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    data = images.layer(903, 4000)
    image = images.make_image([data])
    images.push(registry, src, "v1", image)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        mark = registry.mark()
        assert await reg.start_upload(dst, Digest(data.digest), src) is None
        entries = registry.requests(mark)
        assert await reg.blob_exists(dst, Digest(data.digest)) == len(data)
    assert len(mounts(entries, data.digest)) == 1
    assert blob_uploads(entries) == []


async def test_corrupt_bytes_are_never_committed(registry: RegistryServer, unique_repo: str) -> None:
    good = images.layer(904, 50_000)
    bad = bytearray(good)
    bad[-10] ^= 0xFF  # same length, one byte flipped near the end
    digest = Digest(good.digest)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        session = await reg.start_upload(unique_repo)
        assert session is not None
        mark = registry.mark()
        with pytest.raises(DigestMismatchError):
            await reg.upload(session, digest, len(bad), verified(chunks(bytes(bad), 4096), Verifier(digest, len(bad))))
        entries = registry.requests(mark)
        assert await reg.blob_exists(unique_repo, digest) is None
    assert all(e.status != 201 for e in blob_uploads(entries))


async def test_manifest_get_by_digest_and_head_agree(registry: RegistryServer, unique_repo: str) -> None:
    image = images.make_image([images.layer(905, 3000)], media="docker")
    images.push(registry, unique_repo, "v1", image)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        info = await reg.manifest_head(unique_repo, "v1")
        assert info is not None
        assert (info.digest, info.media_type, info.size) == (image.digest, image.media_type, len(image.manifest))
        manifest = await reg.manifest_get(unique_repo, info.digest)
        assert manifest.raw == image.manifest
        assert await reg.manifest_head(unique_repo, "missing") is None
        with pytest.raises(NotFoundError):
            await reg.manifest_get(unique_repo, "missing")


async def test_connections_are_reused_across_requests(registry: RegistryServer, unique_repo: str) -> None:
    image = images.make_image([images.layer(906, 2000)])
    images.push(registry, unique_repo, "v1", image)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        mark = registry.mark()
        for _ in range(5):
            assert await reg.manifest_head(unique_repo, "v1") is not None
            assert await reg.blob_exists(unique_repo, Digest(image.layers[0].digest)) is not None
            assert await reg.blob_exists(unique_repo, Digest("sha256:" + "0" * 64)) is None  # 404 with a body
        entries = registry.requests(mark)
    assert len(entries) == 15
    assert len({e.remote for e in entries}) == 1  # one TCP connection for all fifteen


async def test_tags_lists_a_repository_and_says_when_it_does_not_exist(
    registry: RegistryServer, unique_repo: str
) -> None:
    image = images.make_image([images.layer(911, 1000)])
    for tag in ("b", "a", "1.0"):
        images.push(registry, unique_repo, tag, image)
    async with transport_for(registry) as transport:
        reg = Registry(transport, registry.host)
        assert sorted(await reg.tags(unique_repo) or []) == ["1.0", "a", "b"]
        assert await reg.tags(unique_repo + "-never-pushed") is None  # 404 NAME_UNKNOWN


async def test_tags_follows_pages_and_drops_what_is_not_a_tag(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.fake_registry import FakeRegistry, Response

    monkeypatch.setattr("ocicopy.registry.TAGS_PAGE", 2)
    image = images.make_image([images.layer(912, 1000)])
    with FakeRegistry() as fake:
        for tag in ("t1", "t2", "t3", "t4", "t5"):
            fake.seed("app", tag, image)
        hostile = {"name": "other", "tags": ["../x", "ok-too", 7]}
        fake.before(
            lambda r: (
                Response(200, {"Content-Type": "application/json"}, images.dump(hostile))
                if r.path == "/v2/weird/tags/list"
                else None
            )
        )
        async with Transport(ClientOptions(plain_http=frozenset({fake.host}), use_docker_config=False)) as t:
            reg = Registry(t, fake.host)
            assert await reg.tags("app") == ["t1", "t2", "t3", "t4", "t5"]
            assert await reg.tags("weird") == ["ok-too"]
        pages = [r for r in fake.requests if r.path == "/v2/app/tags/list"]
    assert len(pages) == 3
