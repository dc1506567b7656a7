"""OCI layouts shared with real tools, both ways: what ocicopy writes, skopeo and umoci read (and umoci
unpacks), and what skopeo and umoci write, ocicopy reads with every digest verified.

Both tools are required: a missing binary fails the test and says how to install it (tools/_setup.sh).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from harness.images import Image, Index, layer, make_image, make_index
from harness.oracle import skopeo_copy, skopeo_inspect_raw
from ocicopy.digest import Digest
from ocicopy.layout import Layout
from ocicopy.models import Descriptor, Manifest, parse_manifest

UMOCI_TIMEOUT = 120


# --- helpers ---------------------------------------------------------------------------------------------


def umoci(*args: str) -> str:
    """Run umoci; fail (never skip) when it is missing or the command fails."""
    binary = shutil.which("umoci")
    if binary is None:
        pytest.fail("umoci not found on PATH: run tools/_setup.sh (it installs the Debian package `umoci`)")
    proc = subprocess.run([binary, *args], capture_output=True, timeout=UMOCI_TIMEOUT, check=False)
    if proc.returncode != 0:
        pytest.fail(f"umoci {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _write(path: Path, image: Image | Index, tag: str) -> None:
    """Blobs, then children (by digest, not listed), then the tagged root: the order the copier uses."""
    layout = Layout(path)
    children = image.images if isinstance(image, Index) else []
    for child in children:
        for digest, data in child.blobs().items():
            await layout.write_blob(Digest(digest), len(data), _one(data))
        await layout.manifest_put(child.digest, parse_manifest(child.manifest), root=False)
    for digest, data in image.blobs().items():
        await layout.write_blob(Digest(digest), len(data), _one(data))
    await layout.manifest_put(tag, parse_manifest(image.manifest))


def write(path: Path, image: Image | Index, tag: str) -> None:
    anyio.run(_write, path, image, tag)


async def _verified_blob(layout: Layout, descriptor: Descriptor) -> bytes:
    data = b"".join([chunk async for chunk in layout.read_blob(descriptor)])
    assert Digest.of(data, descriptor.digest.algorithm) == descriptor.digest
    assert len(data) == descriptor.size
    return data


async def _read_image(path: Path, reference: str) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest at ``reference`` and every blob it names, each verified against its descriptor."""
    layout = Layout(path)
    manifest = await layout.manifest_get(reference)
    head = await layout.manifest_head(reference)
    assert head is not None and (head.digest, head.size) == (manifest.digest, manifest.size)
    blobs = {str(d.digest): await _verified_blob(layout, d) for d in manifest.blobs()}
    return manifest, blobs


def read_image(path: Path, reference: str) -> tuple[Manifest, dict[str, bytes]]:
    return anyio.run(_read_image, path, reference)


def tags(path: Path) -> list[str]:
    return anyio.run(Layout(path).tags)


def layer_files(blob: bytes) -> dict[str, bytes]:
    """Regular files of a tar+gzip layer, read as a stream.

    The layers ``umoci insert`` 0.4.7 writes stop right after the last file's bytes (no padding to 512 and
    no end-of-archive blocks; umoci itself unpacks them), so the end of the stream is taken as the end.
    """
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r|") as tar:
        try:
            for member in tar:
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None:
                    files[member.name.removeprefix("./")] = extracted.read()
        except tarfile.ReadError:
            pass
    return files


def payload(seed: int, size: int) -> bytes:
    """The file inside ``images.layer(seed, size)``."""
    return random.Random(seed).randbytes(size)


# --- ocicopy writes, the tools read ----------------------------------------------------------------------


@pytest.mark.skopeo
def test_skopeo_reads_and_copies_what_ocicopy_writes(tmp_path: Path) -> None:
    image = make_image([layer(1, 5000), layer(2, 3 << 20)])
    write(tmp_path / "a", image, "v1")
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'a'}:v1") == image.manifest
    skopeo_copy(f"oci:{tmp_path / 'a'}:v1", f"oci:{tmp_path / 'b'}:v1")  # --all --preserve-digests
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'b'}:v1") == image.manifest
    manifest, blobs = read_image(tmp_path / "b", "v1")
    assert manifest.raw == image.manifest and blobs == image.blobs()


@pytest.mark.skopeo
def test_skopeo_reads_an_index_whose_children_are_unlisted(tmp_path: Path) -> None:
    arm = make_image([layer(4, 300)], platform=("linux", "arm64", "v8"))
    index = make_index([make_image([layer(3, 300)]), arm])
    write(tmp_path / "a", index, "multi")
    assert [e["digest"] for e in json.loads((tmp_path / "a" / "index.json").read_bytes())["manifests"]] == [
        index.digest
    ]
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'a'}:multi") == index.manifest
    skopeo_copy(f"oci:{tmp_path / 'a'}:multi", f"oci:{tmp_path / 'b'}:multi")
    root, _ = read_image(tmp_path / "b", "multi")
    assert root.raw == index.manifest
    for child in index.images:
        manifest, blobs = read_image(tmp_path / "b", child.digest)
        assert manifest.raw == child.manifest and blobs == child.blobs()


def test_umoci_lists_stats_and_unpacks_what_ocicopy_writes(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = make_image([layer(5, 4000), layer(6, 70_000)])
    write(layout, image, "v1")
    write(layout, make_image([layer(7, 10)]), "other")
    assert sorted(umoci("ls", "--layout", str(layout)).split()) == ["other", "v1"]
    stat = json.loads(umoci("stat", "--json", "--image", f"{layout}:v1"))
    assert isinstance(stat, dict)
    bundle = tmp_path / "bundle"
    umoci("unpack", "--rootless", "--image", f"{layout}:v1", str(bundle))
    assert (bundle / "rootfs" / "ocitest" / "seed-5.bin").read_bytes() == payload(5, 4000)
    assert (bundle / "rootfs" / "ocitest" / "seed-6.bin").read_bytes() == payload(6, 70_000)


# --- the tools write, ocicopy reads ----------------------------------------------------------------------


@pytest.mark.skopeo
def test_ocicopy_reads_what_skopeo_writes(tmp_path: Path) -> None:
    image = make_image([layer(8, 2000), layer(9, (1 << 20) + 17)])
    write(tmp_path / "a", image, "t")
    skopeo_copy(f"oci:{tmp_path / 'a'}:t", f"oci:{tmp_path / 'b'}:t2")
    assert tags(tmp_path / "b") == ["t2"]
    manifest, blobs = read_image(tmp_path / "b", "t2")
    assert manifest.raw == image.manifest and blobs == image.blobs()
    # and back: ocicopy adds a tag to the skopeo-made layout, skopeo reads it
    other = make_image([layer(10, 100)])
    write(tmp_path / "b", other, "mine")
    assert sorted(tags(tmp_path / "b")) == ["mine", "t2"]
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'b'}:mine") == other.manifest
    assert skopeo_inspect_raw(f"oci:{tmp_path / 'b'}:t2") == image.manifest


def test_ocicopy_reads_what_umoci_writes(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    source = tmp_path / "greeting.txt"
    source.write_text("hello from umoci\n")
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:t")
    umoci("insert", "--rootless", "--image", f"{layout}:t", str(source), "/etc/greeting.txt")
    assert tags(layout) == ["t"]
    manifest, blobs = read_image(layout, "t")
    config_descriptor, *layer_descriptors = manifest.blobs()
    config = json.loads(blobs[config_descriptor.digest])
    assert len(layer_descriptors) == 1
    layer_blob = blobs[layer_descriptors[0].digest]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer_blob)).hexdigest()]
    assert layer_files(layer_blob)["etc/greeting.txt"] == b"hello from umoci\n"
    # and back: ocicopy tags a new image into the umoci layout, umoci reads both
    image = make_image([layer(11, 500)])
    write(layout, image, "ours")
    assert sorted(umoci("ls", "--layout", str(layout)).split()) == ["ours", "t"]
    umoci("stat", "--image", f"{layout}:ours")
    umoci("unpack", "--rootless", "--image", f"{layout}:t", str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "greeting.txt").read_text() == "hello from umoci\n"
