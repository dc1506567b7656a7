"""``copy`` with OCI image layouts on either side: registry → layout → registry, byte-exact, skopeo as oracle.

(The layout store itself — atomicity, concurrency, interop with skopeo and umoci — is tested in
tests/test_layout.py and tests/test_layout_interop.py.)
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import images as im
from harness.oracle import docker_ref
from harness.registry import RegistryServer, blob_uploads
from ocicopy import BlobAction, Client, ClientOptions, CopyAction
from ocicopy.errors import InputError

pytestmark = pytest.mark.anyio
MakeRepo = Callable[[str], str]
_seeds = itertools.count(11_000)


def _client(*servers: RegistryServer) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


def _image(platform: im.Platform = ("linux", "amd64", None), media: im.Media = "oci") -> im.Image:
    return im.make_image([im.layer(next(_seeds), 1500), im.layer(next(_seeds), 900)], platform=platform, media=media)


def _skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", ref], check=True, capture_output=True).stdout


def _refs(layout: Path) -> list[str | None]:
    index = json.loads((layout / "index.json").read_text())
    return [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]


@pytest.mark.parametrize("media", ["oci", "docker"])
async def test_registry_to_layout_to_registry(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo, tmp_path: Path, media: im.Media
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _image(media=media)
    im.push(registry, src, "v1", image)
    layout = tmp_path / "airgap"
    async with _client(registry, registry2) as client:
        out = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1")
        back = await client.copy(f"oci:{layout}:v1", f"{registry2.host}/{dst}:v1")
    assert out.digest == back.digest == image.digest and out.action is CopyAction.COPIED
    if media == "oci":  # skopeo's layout reader lists only OCI-typed entries of index.json (a Docker schema 2
        # manifest is stored byte-exact, so the digest survives the air gap; ocicopy reads it back below)
        assert _skopeo_raw(f"oci:{layout}:v1") == image.manifest
    assert im.get_manifest(registry2, dst, "v1").content == image.manifest
    for digest, data in image.blobs().items():
        assert (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
        assert im.get_blob(registry2, dst, digest) == data
    assert out.pinned == f"oci:{layout}@{image.digest}"


async def test_index_into_layout_children_by_digest(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    src = make_repo("src")
    index = im.make_index([_image(("linux", "amd64", None)), _image(("linux", "arm64", "v8"))])
    im.push(registry, src, "multi", index)
    layout = tmp_path / "multi"
    async with _client(registry) as client:
        result = await client.copy(f"{registry.host}/{src}:multi", f"oci:{layout}:multi")
    assert result.digest == index.digest
    assert _refs(layout) == ["multi"]  # children are reachable through the index, not listed as roots
    assert _skopeo_raw(f"oci:{layout}:multi") == index.manifest
    for child in index.images:
        assert (layout / "blobs" / "sha256" / child.digest.split(":")[1]).read_bytes() == child.manifest


async def test_second_copy_into_layout_skips(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    src = make_repo("src")
    im.push(registry, src, "v1", _image())
    layout = tmp_path / "again"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1")
        again = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1")
        other_tag = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v2")
    assert again.action is CopyAction.SKIPPED
    assert all(b.action is BlobAction.SKIPPED for b in other_tag.blobs)
    assert sorted(t for t in _refs(layout) if t) == ["v1", "v2"]


async def test_layout_source_forms(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    """``oci:DIR`` (its only tag), ``oci:DIR@DIGEST``; several tags and no tag named: one clear error."""
    image = _image()
    src = make_repo("src")
    im.push(registry, src, "v1", image)
    layout = tmp_path / "forms"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:only")
        by_default = await client.copy(f"oci:{layout}", f"{registry.host}/{make_repo('a')}:x")
        by_digest = await client.copy(f"oci:{layout}@{image.digest}", f"{registry.host}/{make_repo('b')}:x")
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:second")
        with pytest.raises(InputError, match="2 tagged images"):
            await client.copy(f"oci:{layout}", f"{registry.host}/{make_repo('c')}:x")
        assert await client.digest(f"oci:{layout}:second") == image.digest
    assert by_default.digest == by_digest.digest == image.digest


async def test_layout_to_layout_and_missing_tag(tmp_path: Path, registry: RegistryServer, make_repo: MakeRepo) -> None:
    src = make_repo("src")
    im.push(registry, src, "v1", _image())
    first, second = tmp_path / "one", tmp_path / "two"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{first}:v1")
        copied = await client.copy(f"oci:{first}:v1", f"oci:{second}")  # no tag: the source's
        with pytest.raises(Exception, match=r"unknown|not found"):
            await client.copy(f"oci:{first}:nope", f"oci:{second}:x")
    assert _refs(second) == ["v1"] and copied.action is CopyAction.COPIED


async def test_zstd_into_layout(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    src = make_repo("src")
    im.push(registry, src, "v1", _image(media="docker"))
    layout = tmp_path / "zstd"
    async with _client(registry) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1", compress="zstd")
    manifest = json.loads(_skopeo_raw(f"oci:{layout}:v1"))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert result.transformed and result.totals.blobs_recompressed == 2


async def test_push_from_layout_uploads_each_blob_once(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _image()
    im.push(registry, src, "v1", image)
    layout = tmp_path / "push"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1")
    mark = registry.mark()
    async with _client(registry) as client:
        await client.copy(f"oci:{layout}:v1", f"{registry.host}/{dst}:v1")
    assert len(blob_uploads(registry.requests(since=mark))) == len(image.blobs())


def test_cli_copy_to_layout_json(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    src = make_repo("src")
    image = _image()
    im.push(registry, src, "v1", image)
    layout = tmp_path / "cli"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ocicopy",
            "copy",
            "--plain-http",
            registry.host,
            "--no-docker-config",
            "--json",
            docker_ref(registry, src, "v1").removeprefix("docker://"),
            f"oci:{layout}:v1",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["digest"] == image.digest
    bad = subprocess.run(
        [sys.executable, "-m", "ocicopy", "copy", f"oci:{layout}:v1", "oci:/tmp/x@sha256:../../etc"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid" in bad.stderr


async def test_a_truncated_blob_in_the_layout_is_rewritten(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """A blob file of the wrong size (an interrupted cp/rsync) is not taken as present."""
    src = make_repo("src")
    image = _image()
    im.push(registry, src, "v1", image)
    layout = tmp_path / "repair"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1")
        blob = layout / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]
        blob.write_bytes(blob.read_bytes()[:100])
        again = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v2")
    assert blob.read_bytes() == bytes(image.layers[0])
    assert next(b for b in again.blobs if b.digest == image.layers[0].digest).action is BlobAction.COPIED
    assert _skopeo_raw(f"oci:{layout}:v2") == image.manifest


async def test_only_image_ignores_referrer_tags_and_takes_an_untagged_output(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """``oci:DIR``: its only image, even beside the fallback tag of its signature; and a builder's output that
    lists one untagged manifest."""
    from ocicopy.digest import Digest
    from ocicopy.subjects import fallback_tag

    src = make_repo("src")
    image = _image()
    sig = im.make_artifact(b"sig", artifact_type="application/vnd.example.sig", subject=image)
    im.push(registry, src, "v1", image)
    signed, untagged = tmp_path / "signed", tmp_path / "untagged"
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{signed}:v1")
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{untagged}@{image.digest}")
        im.push(registry, src, sig.digest, sig)
        await client.copy(f"{registry.host}/{src}@{sig.digest}", f"oci:{signed}@{sig.digest}")
        assert fallback_tag(Digest(image.digest)) in _refs(signed)
        assert await client.digest(f"oci:{signed}") == image.digest
        assert _refs(untagged) == [None]
        assert await client.digest(f"oci:{untagged}") == image.digest
