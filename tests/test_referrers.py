"""Referrers (signatures, SBOMs, attestations) travel with images: ``copy --referrers``.

The real registry (distribution 2.8, no referrers API) exercises the fallback tag scheme on both sides;
the fake registry with its API switched on exercises the API; an OCI layout destination keeps the fallback
tag in its ``index.json``. Pure helpers are checked with tables and hypothesis.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import images as im
from harness.fake_registry import FakeRegistry, Quirks
from harness.registry import RegistryServer
from ocicopy import Client, ClientOptions
from ocicopy.digest import Digest
from ocicopy.models import OCI_INDEX, parse_manifest
from ocicopy.referrers import add_to_index, cosign_tags, fallback_tag, referrer_descriptor

pytestmark = pytest.mark.anyio
MakeRepo = Callable[[str], str]
_seeds = itertools.count(9100)
SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
SBOM = "application/spdx+json"


def _client(*hosts: str) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=list(hosts))


def _image() -> im.Image:
    return im.make_image([im.layer(next(_seeds), 1200)])


def _artifact(subject: Any, artifact_type: str, text: str) -> im.Artifact:
    return im.make_artifact(text.encode(), artifact_type=artifact_type, subject=subject, annotations={"n": text})


def _fallback_index(*artifacts: im.Artifact) -> im.Index:
    """The index a pusher maintains under the fallback tag (distribution-spec "Referrers Tag Schema")."""
    entries = [
        {**im.descriptor(a.media_type, a.manifest), "artifactType": a.artifact_type, "annotations": {"n": "x"}}
        for a in artifacts
    ]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return im.Index(im.dump(doc), OCI_INDEX, [])


def _listed(server: RegistryServer | str, repo: str, digest: str) -> set[str]:
    index = json.loads(im.get_manifest(server, repo, fallback_tag(Digest(digest))).content)
    return {m["digest"] for m in index["manifests"]}


# -- pure -------------------------------------------------------------------------------------------------


def test_fallback_tag_and_cosign_tags() -> None:
    d = Digest("sha256:" + "ab" * 32)
    assert fallback_tag(d) == "sha256-" + "ab" * 32
    assert cosign_tags(d) == [f"sha256-{'ab' * 32}{s}" for s in (".sig", ".att", ".sbom")]
    long = Digest("sha512:" + "cd" * 64)
    assert fallback_tag(long) == "sha512-" + "cd" * 32  # the encoded part is cut to 64 characters


@given(st.binary(min_size=0, max_size=64), st.sampled_from(["sha256", "sha512"]))
def test_fallback_tag_is_a_valid_tag(data: bytes, algorithm: str) -> None:
    from ocicopy.reference import validate_tag

    tag = fallback_tag(Digest.of(data, algorithm))
    assert validate_tag(tag) == tag and len(tag) <= 128


def test_referrer_descriptor_and_index_update() -> None:
    subject = _image()
    art = _artifact(subject, SIG, "sig")
    manifest = parse_manifest(art.manifest, art.media_type)
    desc = referrer_descriptor(manifest)
    assert (desc.artifact_type, desc.annotations, desc.digest) == (SIG, {"n": "sig"}, manifest.digest)
    first = add_to_index(None, desc)
    assert first is not None and [c.digest for c in first.children()] == [manifest.digest]
    assert add_to_index(first, desc) is None  # already listed: nothing to push
    other = referrer_descriptor(parse_manifest(_artifact(subject, SBOM, "sbom").manifest))
    second = add_to_index(first, other)
    assert second is not None and [c.artifact_type for c in second.children()] == [SIG, SBOM]
    # an image manifest without artifactType is listed under its config media type
    plain = parse_manifest(_image().manifest)
    assert referrer_descriptor(plain).artifact_type == "application/vnd.oci.image.config.v1+json"


# -- real registry: no referrers API, fallback tags on both sides ---------------------------------------------


def _seed_signed(server: RegistryServer, repo: str) -> tuple[im.Image, im.Artifact, im.Artifact, im.Artifact]:
    """An image with a signature and an SBOM, and a signature of the SBOM, listed under fallback tags."""
    image = _image()
    sig, sbom = _artifact(image, SIG, "sig"), _artifact(image, SBOM, "sbom")
    sbom_sig = _artifact(sbom, SIG, "sbom-sig")
    im.push(server, repo, "v1", image)
    for art in (sig, sbom, sbom_sig):
        im.push(server, repo, art.digest, art)
    im.push(server, repo, fallback_tag(Digest(image.digest)), _fallback_index(sig, sbom))
    im.push(server, repo, fallback_tag(Digest(sbom.digest)), _fallback_index(sbom_sig))
    return image, sig, sbom, sbom_sig


async def test_referrers_follow_the_image_recursively(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image, sig, sbom, sbom_sig = _seed_signed(registry, src)
    async with _client(registry.host) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", referrers=True)
    assert {r.digest for r in result.referrers} == {sig.digest, sbom.digest, sbom_sig.digest}
    for art in (sig, sbom, sbom_sig):
        assert im.get_manifest(registry, dst, art.digest).content == art.manifest
    # the destination has no API: ocicopy maintained its fallback indexes
    assert _listed(registry, dst, image.digest) == {sig.digest, sbom.digest}
    assert _listed(registry, dst, sbom.digest) == {sbom_sig.digest}
    entry = json.loads(im.get_manifest(registry, dst, fallback_tag(Digest(image.digest))).content)["manifests"]
    assert {e["artifactType"] for e in entry} == {SIG, SBOM}


async def test_artifact_type_filter(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image, sig, sbom, _ = _seed_signed(registry, src)
    async with _client(registry.host) as client:
        result = await client.copy(
            f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", referrers=True, artifact_types=[SBOM]
        )
    assert {r.digest for r in result.referrers} == {sbom.digest}
    assert _listed(registry, dst, image.digest) == {sbom.digest}
    async with _client(registry.host) as client:
        listed = await client.referrers(f"{registry.host}/{src}:v1")
        sboms = await client.referrers(f"{registry.host}/{src}:v1", SBOM)
    assert {d.digest for d in listed} == {sig.digest, sbom.digest}
    assert [d.digest for d in sboms] == [sbom.digest]


async def test_a_platform_selection_says_the_index_signatures_stay_behind(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    amd = im.make_image([im.layer(next(_seeds), 1200)], platform=("linux", "amd64", None))
    arm = im.make_image([im.layer(next(_seeds), 1200)], platform=("linux", "arm64", "v8"))
    index = im.make_index([amd, arm])
    index_sig, amd_sig = _artifact(index, SIG, "index-sig"), _artifact(amd, SIG, "amd-sig")
    im.push(registry, src, "v1", index)
    for art in (index_sig, amd_sig):
        im.push(registry, src, art.digest, art)
    im.push(registry, src, fallback_tag(Digest(index.digest)), _fallback_index(index_sig))
    im.push(registry, src, fallback_tag(Digest(amd.digest)), _fallback_index(amd_sig))
    async with _client(registry.host) as client:
        result = await client.copy(
            f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", platforms=["linux/amd64"], referrers=True
        )
    assert result.digest == amd.digest
    assert {r.digest for r in result.referrers} == {amd_sig.digest}  # the child's own signature comes along
    said = [w for w in result.warnings if index.digest in w]  # was: the index's signature dropped silently
    assert len(said) == 1 and "1 referrer(s) of the source index" in said[0], result.warnings


async def test_rerun_is_idempotent_and_adds_new_signatures(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image, sig, sbom, _ = _seed_signed(registry, src)
    async with _client(registry.host) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", referrers=True)
    late = _artifact(image, SIG, "late-signature")
    im.push(registry, src, late.digest, late)
    im.push(registry, src, fallback_tag(Digest(image.digest)), _fallback_index(sig, sbom, late))
    async with _client(registry.host) as client:
        again = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", referrers=True)
    assert again.action.value == "skipped"  # the image itself was there
    assert _listed(registry, dst, image.digest) == {sig.digest, sbom.digest, late.digest}


async def test_cosign_legacy_tags(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _image()
    legacy = im.make_artifact(b"cosign signature", artifact_type="application/vnd.dev.cosign.simplesigning.v1+json")
    im.push(registry, src, "v1", image)
    tag = fallback_tag(Digest(image.digest)) + ".sig"
    im.push(registry, src, tag, legacy)
    async with _client(registry.host) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", referrers=True)
    assert im.get_manifest(registry, dst, tag).content == legacy.manifest
    assert [r.reference for r in result.referrers] == [tag]


async def test_without_flag_no_referrers(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    _, sig, _, _ = _seed_signed(registry, src)
    async with _client(registry.host) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1")
    assert result.referrers == []
    with pytest.raises(Exception, match=r"404|unknown|not found"):
        im.get_manifest(registry, dst, sig.digest)


# -- fake registry with the referrers API -----------------------------------------------------------------------


@pytest.fixture
def api_registry() -> Iterator[FakeRegistry]:
    with FakeRegistry(Quirks(no_referrers=False)) as server:
        yield server


async def test_referrers_api_both_sides(api_registry: FakeRegistry) -> None:
    fake = api_registry
    image = _image()
    sig, sbom = _artifact(image, SIG, "sig"), _artifact(image, SBOM, "sbom")
    fake.seed("src", "v1", image)
    for art in (sig, sbom):
        fake.seed("src", art.digest, art)
    async with _client(fake.host) as client:
        result = await client.copy(f"{fake.host}/src:v1", f"{fake.host}/dst:v1", referrers=True)
        listed = await client.registry(fake.host).referrers("dst", Digest(image.digest))
        only_sig = await client.registry(fake.host).referrers("dst", Digest(image.digest), SIG)
    assert {r.digest for r in result.referrers} == {sig.digest, sbom.digest}
    assert listed is not None and {d.digest for d in listed} == {sig.digest, sbom.digest}
    assert only_sig is not None and [d.digest for d in only_sig] == [sig.digest]
    # a registry with the API indexes subjects itself: no fallback tag is written
    assert fake.manifest("dst", fallback_tag(Digest(image.digest))) is None
    assert not any("/referrers/" in r.path and r.method != "GET" for r in fake.requests)


async def test_api_source_into_fallback_destination(api_registry: FakeRegistry, registry: RegistryServer) -> None:
    image = _image()
    sig = _artifact(image, SIG, "sig")
    api_registry.seed("src", "v1", image)
    api_registry.seed("src", sig.digest, sig)
    repo = f"referrers-api-{next(_seeds)}"
    async with _client(api_registry.host, registry.host) as client:
        await client.copy(f"{api_registry.host}/src:v1", f"{registry.host}/{repo}:v1", referrers=True)
    assert _listed(registry, repo, image.digest) == {sig.digest}


async def test_referrers_into_a_layout(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    src = make_repo("src")
    image, sig, sbom, sbom_sig = _seed_signed(registry, src)
    layout = tmp_path / "signed"
    async with _client(registry.host) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"oci:{layout}:v1", referrers=True)
    assert len(result.referrers) == 3
    index = json.loads((layout / "index.json").read_text())
    names = {m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]}
    assert {"v1", fallback_tag(Digest(image.digest)), fallback_tag(Digest(sbom.digest))} <= names
    # and back out of the layout into a registry, referrers included
    dst = make_repo("from-layout")
    async with _client(registry.host) as client:
        back = await client.copy(f"oci:{layout}:v1", f"{registry.host}/{dst}:v1", referrers=True)
    assert {r.digest for r in back.referrers} == {sig.digest, sbom.digest, sbom_sig.digest}
    assert _listed(registry, dst, image.digest) == {sig.digest, sbom.digest}


async def test_pushing_a_referrer_keeps_the_fallback_index(registry: RegistryServer, make_repo: MakeRepo) -> None:
    """Copying a manifest with a subject (no --referrers) into a registry without the API: the pusher keeps the
    subject's fallback index (distribution-spec "Pushing Manifests with Subject")."""
    src, dst = make_repo("src"), make_repo("dst")
    image = _image()
    sig = _artifact(image, SIG, "sig")
    im.push(registry, src, "v1", image)
    im.push(registry, src, sig.digest, sig)
    im.push(registry, dst, "v1", image)
    async with _client(registry.host) as client:
        await client.copy(f"{registry.host}/{src}@{sig.digest}", f"{registry.host}/{dst}@{sig.digest}")
        assert {d.digest for d in await client.referrers(f"{registry.host}/{dst}:v1")} == {sig.digest}
    assert _listed(registry, dst, image.digest) == {sig.digest}


async def test_registry_with_api_needs_no_fallback_on_push(api_registry: FakeRegistry) -> None:
    image = _image()
    sig = _artifact(image, SIG, "sig")
    api_registry.seed("src", sig.digest, sig)
    api_registry.seed("dst", "v1", image)
    async with _client(api_registry.host) as client:
        await client.copy(f"{api_registry.host}/src@{sig.digest}", f"{api_registry.host}/dst@{sig.digest}")
    assert api_registry.manifest("dst", fallback_tag(Digest(image.digest))) is None


async def test_referrer_listed_but_missing_is_a_warning() -> None:
    """A stale fallback index (distribution refuses such an index; other registries and tools do not check)."""
    image = _image()
    gone = _artifact(image, SIG, "deleted-signature")  # listed in the fallback index, never pushed
    with FakeRegistry() as fake:
        fake.seed("src", "v1", image)
        fake.seed("src", fallback_tag(Digest(image.digest)), _fallback_index(gone))
        async with _client(fake.host) as client:
            result = await client.copy(f"{fake.host}/src:v1", f"{fake.host}/dst:v1", referrers=True)
    assert result.referrers == [] and result.action.value == "copied"
    assert len(result.warnings) == 1 and gone.digest in result.warnings[0]


def test_next_page_stays_on_the_same_host() -> None:
    import httpx2

    from ocicopy.registry import _next_page

    here = httpx2.URL("https://r.example/v2/a/referrers/sha256:x")
    assert _next_page(here, '</v2/a/referrers/sha256:x?n=2&last=y>; rel="next"') == httpx2.URL(
        "https://r.example/v2/a/referrers/sha256:x?n=2&last=y"
    )
    assert _next_page(here, '<https://evil.example/v2/a/referrers/x>; rel="next"') is None
    assert _next_page(here, '<http://r.example/v2/a>; rel="next"') is None  # no downgrade either
    assert _next_page(here, None) is None and _next_page(here, '</x>; rel="prev"') is None


async def test_referrers_are_capped_with_a_warning(api_registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    import ocicopy.referrers

    monkeypatch.setattr(ocicopy.referrers, "MAX_REFERRERS", 5)
    image = _image()
    api_registry.seed("src", "v1", image)
    for i in range(12):
        art = _artifact(image, SIG, f"sig-{i}")
        api_registry.seed("src", art.digest, art)
    async with _client(api_registry.host) as client:
        result = await client.copy(f"{api_registry.host}/src:v1", f"{api_registry.host}/dst:v1", referrers=True)
    assert len(result.referrers) == 5
    assert any("stopped after 5 referrers" in w for w in result.warnings)


def test_referrer_tags_are_recognised() -> None:
    from ocicopy.subjects import is_referrer_tag

    d = Digest.of(b"x")
    assert all(is_referrer_tag(t) for t in [fallback_tag(d), *cosign_tags(d), fallback_tag(Digest.of(b"x", "sha512"))])
    assert not any(is_referrer_tag(t) for t in ["v1", "latest", "sha256-abc", fallback_tag(d) + ".foo"])
