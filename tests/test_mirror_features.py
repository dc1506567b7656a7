"""Mirror plans with OCI layouts (destination, deployment source, builder output), ``compress: zstd`` across
runs, and ``referrers: true`` — against real registries, observed through their access logs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from harness import images as im
from harness.registry import RegistryServer, blob_gets, unique_repo_name
from ocicopy import Client, ClientOptions, MirrorReport, parse_plan
from ocicopy.digest import Digest
from ocicopy.plan import BuildSpec
from ocicopy.planner import build_key
from ocicopy.referrers import fallback_tag
from tests.test_zstd_copy import gzip_layer

pytestmark = pytest.mark.anyio
_seeds = itertools.count(12_000)
COMMIT = "a" * 40


def _client(*servers: RegistryServer) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


async def _mirror(plan: dict[str, Any], *servers: RegistryServer) -> MirrorReport:
    async with _client(*servers) as client:
        return await client.mirror(parse_plan(plan))


def _actions(report: MirrorReport) -> list[str]:
    assert report.ok, [d.error for d in report.deployments]
    return [d.action.value for d in report.deployments]


def _seed(server: RegistryServer, repo: str, tag: str, layers: list[im.Layer] | None = None) -> im.Image:
    image = im.make_image(layers or [im.layer(next(_seeds), 1300)])
    im.push(server, repo, tag, image)
    return image


async def test_mirror_into_layouts_one_per_repository(registry: RegistryServer, tmp_path: Path) -> None:
    src = unique_repo_name("lsrc")
    api, web = _seed(registry, src, "api"), _seed(registry, src, "web")
    plan = {
        "mirror": {"layout": f"oci:{tmp_path}", "prefix": "mirror"},
        "deployments": [
            {"service": "api", "environment": "prod", "image": f"{registry.host}/{src}:api"},
            {"service": "web", "environment": "prod", "image": f"{registry.host}/{src}:web"},
        ],
    }
    first = await _mirror(plan, registry)
    assert _actions(first) == ["copied", "copied"]
    for service, image in (("api", api), ("web", web)):
        layout = tmp_path / "mirror" / service
        index = json.loads((layout / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [image.digest]
    assert first.deployments[0].pinned == f"oci:{tmp_path}/mirror/api@{api.digest}"
    assert _actions(await _mirror(plan, registry)) == ["skipped", "skipped"]


async def test_layout_as_deployment_source(registry: RegistryServer, tmp_path: Path) -> None:
    src = unique_repo_name("lsrc")
    image = _seed(registry, src, "v1")
    async with _client(registry) as client:
        await client.copy(f"{registry.host}/{src}:v1", f"oci:{tmp_path}/built:v1")
    prefix = unique_repo_name("m")
    plan = {
        "mirror": {"registry": registry.host, "prefix": prefix},
        "registries": {registry.host: {"plain_http": True}},
        "deployments": [{"service": "api", "environment": "prod", "image": f"oci:{tmp_path}/built:v1"}],
    }
    report = await _mirror(plan, registry)
    assert _actions(report) == ["copied"] and report.deployments[0].source_digest == image.digest
    assert _actions(await _mirror(plan, registry)) == ["skipped"]


async def test_build_output_layout_is_pushed_when_needed(registry: RegistryServer, tmp_path: Path) -> None:
    """build-needed → the builder writes oci:DIR:<build key> → the next run pushes it → then build-cached."""
    prefix = unique_repo_name("m")
    build = {"repository": "https://git.example/acme/api", "commit": COMMIT, "output": f"oci:{tmp_path}/out"}
    plan = {
        "mirror": {"registry": registry.host, "prefix": prefix},
        "registries": {registry.host: {"plain_http": True}},
        "deployments": [{"service": "api", "environment": "prod", "build": build}],
    }
    assert _actions(await _mirror(plan, registry)) == ["build-needed"]
    key = build_key(BuildSpec.model_validate(build))
    builder_repo = unique_repo_name("builder")
    built = _seed(registry, builder_repo, "x")
    async with _client(registry) as client:  # stands in for the builder writing its OCI layout output
        await client.copy(f"{registry.host}/{builder_repo}:x", f"oci:{tmp_path}/out:{key}")
    pushed = await _mirror(plan, registry)
    assert _actions(pushed) == ["build-pushed"]
    assert str(pushed.deployments[0].pinned).endswith(built.digest)
    assert im.get_manifest(registry, f"{prefix}/api", key).content == built.manifest
    assert _actions(await _mirror(plan, registry)) == ["build-cached"]


async def test_compress_across_runs(registry: RegistryServer, registry2: RegistryServer) -> None:
    """Run 1 converts; run 2 (a new process) skips without reading a source blob; a new service sharing the
    base layer in run 3 gets the converted base from the ledger's record (mounted), not recompressed."""
    src, prefix = unique_repo_name("zsrc"), unique_repo_name("m")
    base = gzip_layer()
    api = _seed(registry, src, "api", [base, gzip_layer()])
    web = _seed(registry, src, "web", [base, gzip_layer()])

    def plan(*services: str) -> dict[str, Any]:
        return {
            "mirror": {"registry": registry2.host, "prefix": prefix, "compress": "zstd", "compress_level": 5},
            "registries": {registry.host: {"plain_http": True}, registry2.host: {"plain_http": True}},
            "deployments": [
                {"service": s, "environment": "prod", "image": f"{registry.host}/{src}:{s}"} for s in services
            ],
        }

    first = await _mirror(plan("api"), registry, registry2)
    assert _actions(first) == ["copied"] and first.deployments[0].blobs_recompressed == 2
    pinned = first.deployments[0].pinned
    assert pinned is not None and not pinned.endswith(api.digest)
    mark = registry.mark()
    second = await _mirror(plan("api"), registry, registry2)
    assert _actions(second) == ["skipped"] and second.deployments[0].pinned == pinned
    assert blob_gets(registry.requests(since=mark)) == []
    mark = registry.mark()
    third = await _mirror(plan("api", "web"), registry, registry2)
    assert _actions(third) == ["skipped", "copied"]
    fetched = {e.path.rsplit("/", 1)[-1] for e in blob_gets(registry.requests(since=mark))}
    assert base.digest not in fetched  # the base layer's conversion was known: mounted from api
    web_doc = json.loads(
        im.get_manifest(registry2, f"{prefix}/web", str(third.deployments[1].pinned).split("@")[1]).content
    )
    api_doc = json.loads(im.get_manifest(registry2, f"{prefix}/api", pinned.split("@")[1]).content)
    assert web_doc["layers"][0] == api_doc["layers"][0]
    blob = im.get_blob(registry2, f"{prefix}/web", web_doc["layers"][0]["digest"])
    assert im.sha256(zstandard.ZstdDecompressor().decompressobj().decompress(blob)) == base.diff_id
    assert web.digest != third.deployments[1].pinned


def _seed_signed(registry: RegistryServer, src: str) -> tuple[im.Image, im.Artifact]:
    """An image ``src:v1`` and a signature listed under its fallback tag (as a signer without the API leaves it)."""
    image = _seed(registry, src, "v1")
    sig = im.make_artifact(b"sig", artifact_type="application/vnd.example.sig", subject=image)
    im.push(registry, src, sig.digest, sig)
    entry = {**im.descriptor(sig.media_type, sig.manifest), "artifactType": sig.artifact_type}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}
    im.push(registry, src, fallback_tag(Digest(image.digest)), im.Index(im.dump(index), index["mediaType"], []))
    return image, sig


async def test_mirror_referrers(registry: RegistryServer, registry2: RegistryServer) -> None:
    src, prefix = unique_repo_name("rsrc"), unique_repo_name("m")
    image, sig = _seed_signed(registry, src)
    plan = {
        "mirror": {"registry": registry2.host, "prefix": prefix, "referrers": True},
        "registries": {registry.host: {"plain_http": True}, registry2.host: {"plain_http": True}},
        "deployments": [
            {"service": "api", "environment": env, "image": f"{registry.host}/{src}:v1"} for env in ("dev", "prod")
        ],
    }
    report = await _mirror(plan, registry, registry2)
    assert [d.referrers for d in report.deployments] == [1, 1]
    listed = json.loads(im.get_manifest(registry2, f"{prefix}/api", fallback_tag(Digest(image.digest))).content)
    assert [m["digest"] for m in listed["manifests"]] == [sig.digest]
    again = await _mirror(plan, registry, registry2)
    assert _actions(again) == ["skipped", "skipped"] and again.deployments[0].referrers == 1


def test_plan_validation_of_new_fields(tmp_path: Path) -> None:
    from ocicopy.plan import PlanError

    base: dict[str, Any] = {"deployments": [{"service": "a", "environment": "b", "image": "x.io/a:1"}]}
    with pytest.raises(PlanError, match=r"exactly one of mirror.registry or mirror.layout"):
        parse_plan({**base, "mirror": {"registry": "r.io", "layout": f"oci:{tmp_path}"}})
    with pytest.raises(PlanError, match="exclude each other"):
        parse_plan({**base, "mirror": {"registry": "r.io", "compress": "zstd", "referrers": True}})
    with pytest.raises(PlanError, match="compress"):
        parse_plan({**base, "mirror": {"registry": "r.io", "compress": "brotli"}})
    with pytest.raises(PlanError, match="without a tag"):
        parse_plan({**base, "mirror": {"layout": f"oci:{tmp_path}:tag"}})
    ok = parse_plan({**base, "mirror": {"layout": "oci:relative/dir"}})
    assert ok.mirror.layout is not None and ok.mirror.layout.startswith("oci:/")


async def test_dry_run_writes_no_referrers(registry: RegistryServer, registry2: RegistryServer) -> None:
    src, prefix = unique_repo_name("rsrc"), unique_repo_name("m")
    image, sig = _seed_signed(registry, src)
    plan = {
        "mirror": {"registry": registry2.host, "prefix": prefix, "referrers": True},
        "registries": {registry.host: {"plain_http": True}, registry2.host: {"plain_http": True}},
        "deployments": [{"service": "api", "environment": "prod", "image": f"{registry.host}/{src}:v1"}],
    }
    without = {**plan, "mirror": {**plan["mirror"], "referrers": False}}
    assert _actions(await _mirror(without, registry, registry2)) == ["copied"]  # the image, no signature
    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        report = await client.mirror(parse_plan(plan), dry_run=True)
    assert _actions(report) == ["skipped"]
    assert [e for e in registry2.requests(since=mark) if e.method in ("PUT", "POST", "PATCH", "DELETE")] == []
    assert _actions(await _mirror(plan, registry, registry2)) == ["skipped"]  # a real run brings the signature
    listed = json.loads(im.get_manifest(registry2, f"{prefix}/api", fallback_tag(Digest(image.digest))).content)
    assert [m["digest"] for m in listed["manifests"]] == [sig.digest]


async def test_dry_run_of_a_compress_mirror_predicts_skips(registry: RegistryServer, registry2: RegistryServer) -> None:
    src, prefix = unique_repo_name("zsrc"), unique_repo_name("m")
    _seed(registry, src, "api", [gzip_layer()])
    plan = {
        "mirror": {"registry": registry2.host, "prefix": prefix, "compress": "zstd"},
        "registries": {registry.host: {"plain_http": True}, registry2.host: {"plain_http": True}},
        "deployments": [{"service": "api", "environment": "prod", "image": f"{registry.host}/{src}:api"}],
    }
    assert _actions(await _mirror(plan, registry, registry2)) == ["copied"]
    async with _client(registry, registry2) as client:
        dry = await client.mirror(parse_plan(plan), dry_run=True)
    assert _actions(dry) == ["skipped"]


def test_mirror_options_refuse_bad_values_as_input_errors() -> None:
    from ocicopy.errors import InputError
    from ocicopy.mirroring import MirrorOptions

    with pytest.raises(InputError, match="not a valid regular expression"):
        MirrorOptions(immutable_tags="v(1")
    for bad in (0, -3, True, 1025):
        with pytest.raises(InputError, match="concurrency"):
            MirrorOptions(concurrency=bad)
    with pytest.raises(InputError):
        MirrorOptions(run_id="bad id/with slash")
    assert MirrorOptions(immutable_tags=r"^v\d+$", concurrency=1).concurrency == 1


async def test_a_plan_with_a_bad_immutable_pattern_is_an_input_error_for_library_callers() -> None:
    from ocicopy import Client, ClientOptions, parse_plan
    from ocicopy.errors import InputError

    plan = parse_plan(
        {
            "mirror": {"registry": "127.0.0.1:1", "prefix": "m"},
            "deployments": [{"service": "api", "environment": "prod", "image": "127.0.0.1:1/app:1"}],
        }
    )
    async with Client(ClientOptions(use_docker_config=False)) as client:
        with pytest.raises(InputError, match="regular expression"):
            await client.mirror(plan, immutable_tags="(")
