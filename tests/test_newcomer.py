"""What a newcomer meets (issue 11): each defect found by trying ocicopy as a skopeo/crane/regctl user would,
held by a test against the real registry that failed before the fix."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest

import ocicopy
import ocicopy.models
from harness import images as im
from harness.registry import RegistryServer, manifest_puts, upload_starts
from ocicopy import Client, ClientOptions

pytestmark = pytest.mark.anyio
MakeRepo = Callable[[str], str]


def client(*servers: RegistryServer) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


# --- 1. --platform on a single image -------------------------------------------------------------------------


async def test_a_platform_the_single_image_is_not_fails_and_pushes_nothing(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([im.layer(11_001, 2000)], platform=("linux", "amd64", None))
    im.push(registry, src, "v1", image)
    mark = registry.mark()
    async with client(registry) as c:
        with pytest.raises(ocicopy.ManifestError, match=r"single linux/amd64 image, not linux/arm64"):
            await c.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", platforms=["linux/arm64"])
    log = [e for e in registry.requests(mark) if e.repo == dst]
    assert manifest_puts(log) == [] and upload_starts(log) == []


async def test_a_platform_the_single_image_is_copies_it_as_it_is(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([im.layer(11_002, 2000)], platform=("linux", "arm64", "v8"))
    im.push(registry, src, "v1", image)
    async with client(registry) as c:
        result = await c.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1", platforms=["linux/arm64"])
    assert result.digest == image.digest and not result.transformed


async def test_an_artifact_has_no_platform_to_select(registry: RegistryServer, make_repo: MakeRepo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    artifact = im.make_artifact()
    im.push(registry, src, "sig", artifact)
    async with client(registry) as c:
        with pytest.raises(ocicopy.ManifestError, match="names no platform"):
            await c.copy(f"{registry.host}/{src}:sig", f"{registry.host}/{dst}:sig", platforms=["linux/amd64"])


async def test_a_plan_deployment_with_a_platform_the_image_is_not_fails_that_deployment(
    registry: RegistryServer, make_repo: MakeRepo
) -> None:
    src = make_repo("src")
    im.push(registry, src, "v1", im.make_image([im.layer(11_003, 2000)]))
    plan = ocicopy.parse_plan(
        {
            "mirror": {"registry": registry.host, "prefix": make_repo("m"), "mode": "cluster", "cluster": "c1"},
            "registries": {registry.host: {"plain_http": True}},
            "deployments": [
                {
                    "service": "api",
                    "environment": "prod",
                    "image": f"{registry.host}/{src}:v1",
                    "platforms": ["linux/arm64"],
                },
                {"service": "api", "environment": "dev", "image": f"{registry.host}/{src}:v1"},
            ],
        }
    )
    async with client(registry) as c:
        report = await c.mirror(plan)
    by_env = {d.environment: d for d in report.deployments}
    assert by_env["prod"].action is ocicopy.MirrorAction.FAILED
    assert "single linux/amd64 image, not linux/arm64" in (by_env["prod"].error or "")
    assert by_env["dev"].action is ocicopy.MirrorAction.COPIED


# --- 3. a destination without a tag takes the source's, also from a layout ------------------------------------


async def test_a_layouts_only_tag_goes_to_a_destination_without_one(
    registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = im.make_image([im.layer(11_010, 2000)])
    im.push(registry, src, "1", image)
    async with client(registry) as c:
        await c.copy(f"{registry.host}/{src}:1", f"oci:{tmp_path / 'out'}:1")
        result = await c.copy(f"oci:{tmp_path / 'out'}", f"{registry.host}/{dst}")
    assert result.destination == f"{registry.host}/{dst}:1"
    assert im.get_manifest(registry, dst, "1").content == image.manifest


# --- 5. digest REF asks with a HEAD ---------------------------------------------------------------------------


async def test_digest_is_answered_by_a_head(registry: RegistryServer, unique_repo: str) -> None:
    image = im.make_image([im.layer(11_011, 2000)])
    im.push(registry, unique_repo, "v1", image)
    mark = registry.mark()
    async with client(registry) as c:
        assert await c.digest(f"{registry.host}/{unique_repo}:v1") == image.digest
    asked = [(e.method, e.status) for e in registry.requests(mark) if "/manifests/" in e.path]
    assert asked == [("HEAD", 200)]


# --- 9. layouts: say what is true -----------------------------------------------------------------------------


async def test_a_missing_layout_is_said_to_be_missing_and_lookup_says_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    async with client() as c:
        for call in (c.inspect, c.digest):
            with pytest.raises(ocicopy.UnknownReferenceError, match="no OCI image layout at") as info:
                await call(f"oci:{missing}")
            assert info.value.status == 0 and "HTTP" not in str(info.value)
        with pytest.raises(ocicopy.UnknownReferenceError, match="no OCI image layout at"):
            await c.copy(f"oci:{missing}:1", f"oci:{tmp_path / 'dst'}:1")
        assert await c.resolve(f"oci:{missing}") is None
        assert await c.resolve(f"oci:{missing}:1") is None
    assert not (tmp_path / "dst").exists()


async def test_a_directory_that_is_not_a_layout_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    async with client() as c:
        with pytest.raises(ocicopy.InputError, match="is not an OCI image layout"):
            await c.inspect(f"oci:{tmp_path}")


async def test_several_untagged_entries_suggest_a_digest_and_list_them(tmp_path: Path) -> None:
    layout = ocicopy.Layout(tmp_path / "out")
    digests = []
    for seed in (11_020, 11_021):
        image = im.make_image([im.layer(seed, 500)])
        for data in image.blobs().values():
            await layout.write_blob(ocicopy.Digest.of(data), len(data), _once(data))
        await layout.manifest_put(image.digest, ocicopy.models.parse_manifest(image.manifest, image.media_type))
        digests.append(image.digest)
    async with client() as c:
        with pytest.raises(ocicopy.InputError, match=r"2 untagged images .* oci:PATH@DIGEST") as info:
            await c.inspect(f"oci:{tmp_path / 'out'}")
    assert all(d in str(info.value) for d in digests)


# --- 10. a missing tag reads the same whichever command asked --------------------------------------------------


async def test_a_missing_tag_reads_the_same_from_every_verb(registry: RegistryServer, unique_repo: str) -> None:
    im.push(registry, unique_repo, "v1", im.make_image([im.layer(11_030, 500)]))
    ref = f"{registry.host}/{unique_repo}:nope"
    async with client(registry) as c:
        messages = []
        for call in (c.digest, c.inspect, lambda r: c.copy(r, f"{registry.host}/{unique_repo}-copy:x")):
            with pytest.raises(ocicopy.UnknownReferenceError) as info:
                await call(ref)
            messages.append(str(info.value))
    assert all(m.startswith(f"{ref}: manifest unknown (HTTP 404") for m in messages), messages
    assert "MANIFEST_UNKNOWN" in messages[1]  # the GET's answer carried the spec's code


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


# --- 8. bad input: one line, in the plan's terms, before anything is sent -------------------------------------


def _plan(**mirror: object) -> dict[str, object]:
    return {
        "mirror": {"registry": "mirror.example.com", "prefix": "m", **mirror},
        "deployments": [{"service": "api", "environment": "prod", "image": "ghcr.io/acme/api:1"}],
    }


@pytest.mark.parametrize(
    ("mirror", "said"),
    [
        ({"compress_level": 9}, "compress_level needs compress"),
        ({"artifact_types": ["application/vnd.dev.sigstore.bundle+json"]}, "artifact_types filters referrers"),
    ],
)
def test_plan_settings_that_need_another_are_refused(mirror: dict[str, object], said: str) -> None:
    with pytest.raises(ocicopy.PlanError, match=said):
        ocicopy.parse_plan(_plan(**mirror))


def test_a_plan_of_the_wrong_shape_is_said_in_the_plans_terms() -> None:
    for bad, said in (([], "plan: must be an object"), ({**_plan(), "mirror": "x"}, "mirror: must be an object")):
        with pytest.raises(ocicopy.PlanError) as info:
            ocicopy.parse_plan(bad)
        assert (
            said in str(info.value)
            and "Input should be" not in str(info.value)
            and "instance of" not in str(info.value)
        )


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_key_given_twice_in_a_plan_file_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"plan{suffix}"
    if suffix == ".json":
        path.write_text('{"mirror": {"registry": "a.example.com", "registry": "b.example.com"}, "deployments": []}')
    else:
        path.write_text("mirror:\n  registry: a.example.com\n  registry: b.example.com\ndeployments: []\n")
    with pytest.raises(ocicopy.PlanError, match=r"'registry' appears twice"):
        ocicopy.load_plan(path)


async def test_a_bad_mount_from_is_refused_even_when_nothing_needs_a_mount(
    registry: RegistryServer, unique_repo: str
) -> None:
    im.push(registry, unique_repo, "v1", im.make_image([im.layer(11_040, 500)]))
    mark = registry.mark()
    async with client(registry) as c:
        with pytest.raises(ocicopy.InputError, match="bad repo"):
            await c.copy(
                f"{registry.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:v2", mount_from=["bad repo"]
            )
    assert registry.requests(mark) == []


# --- 12. the library: real signatures, a closed client refuses ------------------------------------------------


def test_the_sync_copy_has_the_real_signature() -> None:
    import inspect

    params = inspect.signature(ocicopy.copy).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())  # a typo is an error
    wanted = set(inspect.signature(Client.copy).parameters) - {"self"}
    wanted |= set(inspect.signature(Client.__init__).parameters) - {"self", "http_client"}
    assert wanted <= set(params)
    with pytest.raises(TypeError, match="platfroms"):
        ocicopy.copy("a.example.com/x:1", "b.example.com/x:1", platfroms=["linux/amd64"])  # type: ignore[call-arg]


def test_the_sync_mirror_runs_a_plan(registry: RegistryServer, make_repo: MakeRepo, tmp_path: Path) -> None:
    src = make_repo("src")
    image = im.make_image([im.layer(11_050, 500)])
    im.push(registry, src, "v1", image)
    prefix = make_repo("m")
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps(
            {
                "mirror": {"registry": registry.host, "prefix": prefix},
                "registries": {registry.host: {"plain_http": True}},
                "deployments": [{"service": "api", "environment": "prod", "image": f"{registry.host}/{src}:v1"}],
            }
        )
    )
    report = ocicopy.mirror(plan, options=ClientOptions(use_docker_config=False))
    assert report.ok and report.deployments[0].pinned == f"{registry.host}/{prefix}/api@{image.digest}"


async def test_a_closed_client_refuses_to_work(registry: RegistryServer, unique_repo: str) -> None:
    im.push(registry, unique_repo, "v1", im.make_image([im.layer(11_051, 500)]))
    ref = f"{registry.host}/{unique_repo}:v1"
    async with client(registry) as c:
        await c.resolve(ref)
    mark = registry.mark()
    for call in (c.resolve, c.inspect, c.digest, lambda r: c.copy(r, f"{registry.host}/{unique_repo}:v2")):
        with pytest.raises(ocicopy.ClosedClientError, match="closed"):
            await call(ref)
    plan = ocicopy.parse_plan(
        {
            "mirror": {"registry": registry.host, "prefix": "m"},
            "deployments": [{"service": "api", "environment": "prod", "image": ref}],
        }
    )
    with pytest.raises(ocicopy.ClosedClientError):
        await c.mirror(plan)
    assert registry.requests(mark) == []


# --- 13. inspect --json: describe ------------------------------------------------------------------------------


async def test_describe_reads_a_layouts_image_config_too(
    registry: RegistryServer, unique_repo: str, tmp_path: Path
) -> None:
    image = im.make_image([im.layer(11_301, 1500)], platform=("linux", "riscv64", None), media="docker")
    im.push(registry, unique_repo, "v1", image)
    layout = f"oci:{tmp_path / 'out'}:v1"
    async with client(registry) as c:
        await c.copy(f"{registry.host}/{unique_repo}:v1", layout)
        from_registry = await c.describe(f"{registry.host}/{unique_repo}:v1")
        from_layout = await c.describe(layout)
    assert str(from_layout.platform) == str(from_registry.platform) == "linux/riscv64"
    assert from_layout.created == "1970-01-01T00:00:00Z" and from_layout.labels == {}
    assert from_layout.model_dump(exclude={"reference"}) == from_registry.model_dump(exclude={"reference"})
    assert from_layout.reference == layout


# --- every command's bad input, read (issue 11): what the review found -----------------------------------------


async def test_digest_of_a_digest_the_registry_lacks_is_unknown(registry: RegistryServer, unique_repo: str) -> None:
    image = im.make_image([im.layer(11_030, 2000)])
    im.push(registry, unique_repo, "v1", image)
    absent = "sha256:" + "0" * 64
    async with client(registry) as c:
        assert await c.digest(f"{registry.host}/{unique_repo}@{image.digest}") == image.digest
        with pytest.raises(ocicopy.UnknownReferenceError, match=f"no manifest {absent}") as info:
            await c.digest(f"{registry.host}/{unique_repo}@{absent}")  # was: printed back without asking
    assert info.value.status == 404


async def _layout_with_image(root: Path, seed: int, tag: str = "v1") -> im.Manifest:
    layout, image = ocicopy.Layout(root), im.make_image([im.layer(seed, 500)])
    for data in image.blobs().values():
        await layout.write_blob(ocicopy.Digest.of(data), len(data), _once(data))
    await layout.manifest_put(tag, ocicopy.models.parse_manifest(image.manifest, image.media_type))
    return image


async def test_a_destination_layout_that_cannot_be_written_is_refused_before_the_source_is_read(
    tmp_path: Path,
) -> None:
    await _layout_with_image(tmp_path / "src", 11_031)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    src = f"oci:{tmp_path / 'src'}:v1"
    async with client() as c:
        for dst, said in (
            (tmp_path / "a-file" / "out", f"{tmp_path / 'a-file'} is a file, not a directory"),
            (tmp_path / "a-file", "is a file, not an OCI image layout"),
            (tmp_path / "foreign", "a non-empty directory without an oci-layout file"),
        ):
            with pytest.raises(ocicopy.InputError, match=said):
                await c.copy(f"oci:{tmp_path / 'missing-source'}:v1", f"oci:{dst}:v1")  # the source is not read
            with pytest.raises(ocicopy.InputError, match=said):
                await c.copy(src, f"oci:{dst}:v1")
    assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["notes.txt"]


async def test_a_file_system_error_fails_its_deployment_and_the_others_go_on(tmp_path: Path) -> None:
    await _layout_with_image(tmp_path / "good", 11_032)
    await _layout_with_image(tmp_path / "broken", 11_033)
    (tmp_path / "broken" / "index.json").unlink()
    (tmp_path / "broken" / "index.json").mkdir()  # a file system error, not a malformed document
    plan = ocicopy.parse_plan(
        {
            "mirror": {"layout": f"oci:{tmp_path / 'mirror'}"},
            "deployments": [
                {"service": "bad", "environment": "prod", "image": f"oci:{tmp_path / 'broken'}:v1"},
                {"service": "good", "environment": "prod", "image": f"oci:{tmp_path / 'good'}:v1"},
            ],
        }
    )
    async with client() as c:
        report = await c.mirror(plan)  # was: the whole run ended with "unexpected ExceptionGroup", no report
    bad, good = report.deployments
    assert bad.action is ocicopy.MirrorAction.FAILED
    assert bad.error == f"{tmp_path / 'broken' / 'index.json'}: is a directory"
    assert good.action is ocicopy.MirrorAction.COPIED


async def test_a_mirror_layout_no_deployment_could_write_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    plan = ocicopy.parse_plan(
        {
            "mirror": {"layout": f"oci:{tmp_path / 'a-file'}"},
            "deployments": [{"service": "api", "environment": "prod", "image": f"oci:{tmp_path / 'nowhere'}:v1"}],
        }
    )
    async with client() as c:
        with pytest.raises(ocicopy.InputError, match="is a file, not a directory"):
            await c.mirror(plan, dry_run=True)


async def test_a_blob_that_is_not_a_manifest_is_said_to_be_so(tmp_path: Path) -> None:
    image = await _layout_with_image(tmp_path / "src", 11_034)
    layer = json.loads(image.manifest)["layers"][0]["digest"]  # gzip bytes: not UTF-8
    async with client() as c:
        with pytest.raises(ocicopy.ManifestError, match="not UTF-8 text") as info:
            await c.inspect(f"oci:{tmp_path / 'src'}@{layer}")
    assert "UnicodeDecodeError" not in str(info.value)


@pytest.mark.parametrize(
    ("mirror", "said"),
    [
        ({"compress": "zstd", "compress_level": True}, "compress_level: must be a whole number, not true/false"),
        ({"compress": "zstd", "compress_level": "3"}, "compress_level: must be a whole number, not a string"),
        ({"compress": "zstd", "compress_level": 3.0}, "compress_level: must be a whole number, not 3.0"),
        ({"compress": "zstd", "compress_level": 30}, "compress_level: must be at most 19"),
        ({"compress": "gzip"}, "compress: must be 'zstd'"),
        ({"mode": "fleet"}, "mode: must be 'service' or 'cluster'"),
        ({"referrers": True, "artifact_types": [""]}, "artifact_types.0: must not be empty"),
    ],
)
def test_plan_values_are_checked_strictly_and_said_in_the_plans_words(mirror: dict[str, object], said: str) -> None:
    with pytest.raises(ocicopy.PlanError) as info:  # compress_level true, "3", 3.0 were taken as 1, 3, 3
        ocicopy.parse_plan(_plan(**mirror))
    assert said in str(info.value), str(info.value)
    assert "Input should" not in str(info.value) and "String should" not in str(info.value)


def test_a_yaml_plan_may_merge_keys_from_an_anchor(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        "mirror:\n  registry: mirror.example.com\n"
        "deployments:\n"
        "  - &api\n    service: api\n    environment: dev\n    image: registry.example.com/api:v1\n"
        "  - <<: *api\n    environment: prod\n"
    )
    plan = ocicopy.load_plan(path)  # was refused: the duplicate-key check took the merge key for a key
    assert [(d.service, d.environment, d.image) for d in plan.deployments] == [
        ("api", "dev", "registry.example.com/api:v1"),
        ("api", "prod", "registry.example.com/api:v1"),
    ]


async def test_a_wrong_size_in_one_manifest_fails_that_deployment_only(tmp_path: Path) -> None:
    shared = im.layer(11_035, 4000)
    good = im.make_image([shared, im.layer(11_036, 500)])
    await _write_layout(tmp_path / "good", good.manifest, good.media_type, good.blobs().values())
    doc = json.loads(good.manifest)
    doc["layers"][0]["size"] -= 1  # the shared layer, one byte short in this manifest only
    bad = json.dumps(doc).encode()
    await _write_layout(tmp_path / "bad", bad, good.media_type, good.blobs().values())
    plan = ocicopy.parse_plan(
        {
            "mirror": {"layout": f"oci:{tmp_path / 'mirror'}", "mode": "cluster", "cluster": "c1"},
            "deployments": [
                {"service": "bad", "environment": "prod", "image": f"oci:{tmp_path / 'bad'}:v1"},
                {"service": "good", "environment": "prod", "image": f"oci:{tmp_path / 'good'}:v1"},
            ],
        }
    )
    async with client() as c:
        report = await c.mirror(plan)
    by_service = {d.service: d for d in report.deployments}
    assert by_service["good"].action is ocicopy.MirrorAction.COPIED, by_service["good"].error
    assert by_service["bad"].action is ocicopy.MirrorAction.FAILED  # was: the blob's one flight failed both, or neither
    assert f"body longer than descriptor: expected {shared.digest} ({len(shared) - 1} bytes), got at least" in (
        by_service["bad"].error or ""
    ), by_service["bad"].error


async def _write_layout(root: Path, manifest: bytes, media_type: str, blobs: Iterable[bytes]) -> None:
    layout = ocicopy.Layout(root)
    for data in blobs:
        await layout.write_blob(ocicopy.Digest.of(data), len(data), _once(data))
    await layout.manifest_put("v1", ocicopy.models.parse_manifest(manifest, media_type))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"mirror": {"registry": "m.example.com", "compress_level": 1' + b"0" * 5000 + b"}}", "over 4300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"mirror": {"registry": "m.example.com\xff"}}', "is not UTF-8 text (byte 0xff at offset 38)"),
        (b'{"mirror": {"registry": ""}, "deployments": []}', "mirror: registry: must not be empty"),
        (b'{"mirror": {"registry": "a host"}, "deployments": []}', "not a registry host[:port]: reference contains"),
    ],
)
def test_a_plan_file_that_cannot_be_read_says_why_in_its_authors_terms(
    tmp_path: Path, content: bytes, said: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(ocicopy.PlanError) as info:
        ocicopy.load_plan(path)
    assert said in str(info.value), str(info.value)
    assert "sys.set_int_max_str_digits" not in str(info.value) and "/x/y" not in str(info.value)
