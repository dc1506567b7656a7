"""zstd: copying zstd images as they are, and ``--dest-compress zstd`` (gzip → zstd while streaming).

Against the real registry; the converted images are checked from the outside: every zstd layer the
destination serves decompresses to the config's ``diff_ids``, skopeo reads the result back into an OCI
layout, and the registry's access log shows what was (not) fetched again.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
import zstandard

from harness import images as im
from harness.oracle import docker_ref, skopeo_inspect_raw
from harness.registry import RegistryServer, blob_gets
from ocicopy import BlobAction, Client, ClientOptions, CopyAction
from ocicopy.errors import InputError, ManifestError, OcicopyError

pytestmark = pytest.mark.anyio
MakeRepo = Callable[[str], str]
_seeds = itertools.count(7000)
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def _client(*servers: RegistryServer) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


def _tar(seed: int, lines: int = 4000) -> bytes:
    """A compressible tar (text), different per seed."""
    payload = "".join(f"line {i} of file {seed}: the quick brown fox\n" for i in range(lines)).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"data/file-{seed}.txt")
        info.size, info.mtime = len(payload), 0
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def gzip_layer(seed: int | None = None) -> im.Layer:
    raw = _tar(next(_seeds) if seed is None else seed)
    return im.Layer(gzip.compress(raw, mtime=0), im.sha256(raw))


def zstd_layer() -> im.Layer:
    raw = _tar(next(_seeds))
    return im.Layer(zstandard.ZstdCompressor().compress(raw), im.sha256(raw))


def _zstd_image(layers: list[im.Layer]) -> im.Image:
    """An OCI image whose layers are already zstd."""
    base = im.make_image(layers)
    doc = json.loads(base.manifest)
    for entry in doc["layers"]:
        entry["mediaType"] = ZSTD_LAYER
    return im.Image(im.dump(doc), base.media_type, base.config, base.layers, base.platform)


def _get_json(server: RegistryServer, repo: str, ref: str) -> dict:  # type: ignore[type-arg]
    return json.loads(im.get_manifest(server, repo, ref).content)


def assert_zstd_image(server: RegistryServer, repo: str, digest: str, source: im.Image) -> None:
    """The converted image at ``digest``: OCI, zstd layers that decompress to the source's diff_ids, config kept."""
    doc = _get_json(server, repo, digest)
    assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["config"]["digest"] == im.sha256(source.config)
    config = im.get_blob(server, repo, doc["config"]["digest"])
    assert config == source.config  # the config bytes are unchanged
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    assert len(doc["layers"]) == len(source.layers) == len(diff_ids)
    for entry, want in zip(doc["layers"], diff_ids, strict=True):
        assert entry["mediaType"] == ZSTD_LAYER
        blob = im.get_blob(server, repo, entry["digest"])
        assert im.sha256(blob) == entry["digest"] and len(blob) == entry["size"]
        assert im.sha256(zstandard.ZstdDecompressor().decompressobj().decompress(blob)) == want


async def test_zstd_layers_copy_as_is(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _zstd_image([zstd_layer(), zstd_layer()])
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1")
    assert result.digest == image.digest and not result.transformed
    assert im.get_manifest(registry, dst, "v1").content == image.manifest


@pytest.mark.parametrize("media", ["docker", "oci"])
async def test_dest_compress_converts_gzip_layers(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo, media: im.Media
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([gzip_layer(), gzip_layer()], media=media)
    im.push(registry, src, "v1", image)
    async with _client(registry, registry2) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry2.host}/{dst}:v1", compress="zstd")
    assert result.action is CopyAction.COPIED and result.transformed and result.compression == "zstd"
    assert result.source_digest == image.digest != result.digest
    converted = [b for b in result.blobs if b.action is BlobAction.RECOMPRESSED]
    assert sorted(b.source_digest for b in converted) == sorted(im.sha256(x) for x in image.layers)
    assert all(b.media_type == ZSTD_LAYER for b in converted)
    assert im.get_manifest(registry2, dst, "v1").digest == result.digest
    assert skopeo_inspect_raw(docker_ref(registry2, dst, "v1")) == im.get_manifest(registry2, dst, "v1").content
    assert_zstd_image(registry2, dst, str(result.digest), image)


async def test_converted_image_reads_back_with_skopeo(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """skopeo copies the converted image into an OCI layout; its layers decompress to the original diff_ids."""
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([gzip_layer(), gzip_layer()], media="docker")
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    layout = tmp_path / "out"
    await anyio.to_thread.run_sync(_skopeo_to_layout, docker_ref(registry, dst, "v1"), layout)
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
    config = json.loads(_blob(layout, manifest["config"]["digest"]))
    for entry, want in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert entry["mediaType"] == ZSTD_LAYER
        tar = zstandard.ZstdDecompressor().decompressobj().decompress(_blob(layout, entry["digest"]))
        assert im.sha256(tar) == want
    assert config["rootfs"]["diff_ids"] == [x.diff_id for x in image.layers]


def _skopeo_to_layout(ref: str, layout: Path) -> None:
    args = ["skopeo", "copy", "--src-tls-verify=false", ref, f"oci:{layout}:v1"]
    subprocess.run(args, check=True, capture_output=True)


def _blob(layout: Path, digest: str) -> bytes:
    alg, hexpart = digest.split(":")
    return (layout / "blobs" / alg / hexpart).read_bytes()


async def test_second_run_skips_without_recompressing(registry: RegistryServer, make_repo: MakeRepo) -> None:
    """A new client (a new run) finds the conversion at the destination tag: no source blob is read."""
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([gzip_layer(), gzip_layer()])
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        first = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    mark = registry.mark()
    async with _client(registry) as client:
        second = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    assert second.action is CopyAction.SKIPPED and second.digest == first.digest and second.transformed
    assert blob_gets(registry.requests(since=mark)) == []


async def test_layer_recompressed_once_per_client(registry: RegistryServer, make_repo: MakeRepo) -> None:
    """A shared base layer in two images, copied by one client: one GET of its gzip bytes, then reuse."""
    src, dst1, dst2 = make_repo("src"), make_repo("dst1"), make_repo("dst2")
    base = gzip_layer()
    one, two = im.make_image([base, gzip_layer()]), im.make_image([base, gzip_layer()])
    im.push(registry, src, "one", one)
    im.push(registry, src, "two", two)
    mark = registry.mark()
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:one", f"{registry.host}/{dst1}:one", compress="zstd")
        second = await client.copy(f"{registry.host}/{src}:two", f"{registry.host}/{dst2}:two", compress="zstd")
    gets = [e for e in blob_gets(registry.requests(since=mark)) if base.digest in e.path]
    assert len(gets) == 1
    reused = next(b for b in second.blobs if b.source_digest == base.digest)
    assert reused.action in (BlobAction.MOUNTED, BlobAction.SKIPPED)


async def test_index_converted_platforms_kept(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    amd, arm = (
        im.make_image([gzip_layer()], platform=("linux", "amd64", None), media="docker"),
        im.make_image([gzip_layer()], platform=("linux", "arm64", "v8"), media="docker"),
    )
    index = im.make_index([amd, arm], media="docker")
    im.push(registry, src, "v1", index)
    async with _client(registry) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    doc = _get_json(registry, dst, "v1")
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in doc["manifests"]] == ["amd64", "arm64"]
    for entry, source in zip(doc["manifests"], [amd, arm], strict=True):
        assert entry["digest"] != source.digest
        assert_zstd_image(registry, dst, entry["digest"], source)
    assert result.digest == im.get_manifest(registry, dst, "v1").digest


async def test_nothing_to_convert_keeps_the_digest(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _zstd_image([zstd_layer()])
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    assert result.digest == image.digest and not result.transformed
    assert im.get_manifest(registry, dst, "v1").content == image.manifest


async def test_config_disagreeing_with_layers_is_refused(registry: RegistryServer, make_repo: MakeRepo) -> None:
    """A source whose config lists other diff_ids than its layers hold: refused before any manifest PUT."""
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image(
        [gzip_layer()], config_extra={"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}
    )
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        with pytest.raises(ManifestError, match="uncompresses to"):
            await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    with pytest.raises(Exception, match=r"404|not found|unknown"):
        im.get_manifest(registry, dst, "v1")


async def test_corrupt_gzip_fails_and_pushes_nothing(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    not_gzip = im.Layer(b"\x1f\x8b\x08\x00garbage that is not deflate" * 10, im.sha256(b""))
    image = im.make_image([not_gzip])
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        with pytest.raises(Exception, match="gzip"):
            await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    with pytest.raises(Exception, match=r"404|not found|unknown"):
        im.get_manifest(registry, dst, "v1")


async def test_bad_compression_settings_are_input_errors() -> None:
    async with Client(ClientOptions(use_docker_config=False)) as client:
        with pytest.raises(InputError, match="only 'zstd'"):
            await client.copy("127.0.0.1:1/a:b", "127.0.0.1:1/c:d", compress="brotli")
        with pytest.raises(InputError, match="recompression"):
            await client.copy("127.0.0.1:1/a:b", "127.0.0.1:1/c:d", compress="zstd", referrers=True)


async def test_spool_is_removed_when_the_client_closes(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    im.push(registry, src, "v1", im.make_image([gzip_layer()]))
    client = _client(registry)
    async with client:
        await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
        spool = client.trees.converter.spool.files.root
        assert [p.name for p in spool.iterdir() if not p.name.startswith(".")]  # the converted layer, on disk
    assert not spool.exists()


async def test_corrupt_source_bytes_are_caught_before_conversion_is_used() -> None:
    """The fake registry serves other bytes for a gzip layer: the source digest check fails, nothing is pushed."""
    from harness.fake_registry import FakeRegistry, Response

    image = im.make_image([gzip_layer()])
    original = bytes(image.layers[0])
    bad = original[:100] + bytes(b ^ 0xFF for b in original[100:200]) + original[200:]  # same length
    with FakeRegistry() as fake:
        fake.seed("src", "v1", image)

        def corrupt(req):  # type: ignore[no-untyped-def]
            if req.method == "GET" and image.layers[0].digest in req.path:
                return Response(200, {"Content-Type": "application/octet-stream"}, bad)
            return None

        fake.before(corrupt)
        async with Client(ClientOptions(use_docker_config=False), plain_http=[fake.host]) as client:
            with pytest.raises(OcicopyError, match=r"digest|gzip"):
                await client.copy(f"{fake.host}/src:v1", f"{fake.host}/dst:v1", compress="zstd")
        assert fake.manifest("dst", "v1") is None


async def test_a_recorded_conversion_with_another_diff_id_is_not_used(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    """A conversion hint (as a ledger gives) pointing at a blob whose recorded diff_id is not the config's is
    ignored: the layer is recompressed, and the image stays consistent with its config."""
    from ocicopy.digest import Digest
    from ocicopy.models import Descriptor
    from ocicopy.transform import Conversion

    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([gzip_layer()])
    decoy = zstd_layer()  # a real zstd blob already in the destination, of other content
    decoy_image = _zstd_image([decoy])
    im.push(registry, dst, "decoy", decoy_image)
    im.push(registry, src, "v1", image)
    hint = Descriptor.model_validate({"mediaType": ZSTD_LAYER, "digest": decoy.digest, "size": len(decoy)})
    async with _client(registry) as client:
        client.trees.conversions.seed([Conversion(Digest(image.layers[0].digest), hint, Digest(decoy.diff_id))])
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", compress="zstd")
    assert result.totals.blobs_recompressed == 1
    assert_zstd_image(registry, dst, str(result.digest), image)


async def test_a_recorded_conversion_with_the_right_diff_id_is_reused(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    """The same hint with the config's diff_id: mounted/skipped without reading the source layer."""
    src, first, second = make_repo("src"), make_repo("first"), make_repo("second")
    image = im.make_image([gzip_layer()])
    im.push(registry, src, "v1", image)
    async with _client(registry) as client:
        done = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{first}:v1", compress="zstd")
        seeds = client.trees.conversions.made_here()
    mark = registry.mark()
    async with _client(registry) as client:
        client.trees.conversions.seed(seeds)
        again = await client.copy(
            f"{registry.host}/{src}:v1", f"{registry.host}/{second}:v1", compress="zstd", mount_from=[first]
        )
    assert again.digest == done.digest and again.totals.blobs_recompressed == 0
    assert [e for e in blob_gets(registry.requests(since=mark)) if image.layers[0].digest in e.path] == []
