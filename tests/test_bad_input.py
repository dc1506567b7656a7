"""Bad input against real registries: refused before any request, or failing with the right error and no push.

"Before any request" and "nothing pushed" are proven from the registries' access logs between two marks.
Bad settings are refused when options are built or changed (pure tests at the end).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from harness import images as im
from harness.registry import AccessEntry, RegistryServer, blob_uploads, manifest_puts
from ocicopy import Client, ClientOptions, CopyAction, NotFoundError, OcicopyError, TransportError
from ocicopy.errors import InputError, InvalidReferenceError, SettingsError
from ocicopy.options import Limits, Recompression, Timeouts, recompression, revalidated
from ocicopy.retry import RetryPolicy

MakeRepo = Callable[[str], str]
_seeds = itertools.count(9000)


def _image() -> im.Image:
    return im.make_image([im.layer(next(_seeds), 1000)])


def _client(*servers: RegistryServer) -> Client:
    return Client(ClientOptions(use_docker_config=False), plain_http=[s.host for s in servers])


def _writes(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in entries if e.method in ("PUT", "POST", "PATCH", "DELETE")]


def _malformed(host: str) -> dict[str, str]:
    return {
        "upper-case": f"{host}/UPPER/case:v1",
        "empty-component": f"{host}/a//b:v1",
        "path-in-digest": f"{host}/repo@sha256:../../x",
        "tag-too-long": f"{host}/repo:{'t' * 129}",
        "bad-tag-char": f"{host}/repo:v1/../../x",
        "trailing-slash": f"{host}/repo/:v1",
    }


KINDS = ["upper-case", "empty-component", "path-in-digest", "tag-too-long", "bad-tag-char", "trailing-slash"]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("side", ["source", "destination", "inspect", "digest", "resolve"])
async def test_malformed_reference_is_refused_before_any_request(
    kind: str, side: str, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    good_src = f"{registry.host}/{make_repo('src')}:v1"
    im.push(registry, good_src.split("/", 1)[1].rsplit(":", 1)[0], "v1", _image())
    bad = _malformed(registry.host if side != "destination" else registry2.host)[kind]

    marks = registry.mark(), registry2.mark()
    async with _client(registry, registry2) as client:
        with pytest.raises(InvalidReferenceError) as info:
            if side == "source":
                await client.copy(bad, f"{registry2.host}/{make_repo('dst')}:v1")
            elif side == "destination":
                await client.copy(good_src, bad)
            elif side == "inspect":
                await client.inspect(bad)
            elif side == "digest":
                await client.digest(bad)
            else:
                await client.resolve(bad)
        assert client.transport.stats.total_requests == 0
    assert registry.requests(marks[0]) == []
    assert registry2.requests(marks[1]) == []
    assert isinstance(info.value, InputError)
    assert "\n" not in str(info.value)


@pytest.mark.anyio
async def test_unknown_tag_is_not_found_and_nothing_is_pushed(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", _image())
    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        with pytest.raises(NotFoundError) as copied:
            await client.copy(f"{registry.host}/{src_repo}:nope", f"{registry2.host}/{dst_repo}:v1")
        with pytest.raises(NotFoundError) as inspected:
            await client.inspect(f"{registry.host}/{src_repo}:nope")
        with pytest.raises(NotFoundError):
            await client.digest(f"{registry.host}/{make_repo('never-pushed')}:v1")
        assert await client.resolve(f"{registry.host}/{src_repo}:nope") is None
    assert _writes(registry2.requests(mark)) == []
    for exc in (copied.value, inspected.value):
        assert exc.status == 404
        assert "nope" in str(exc)
        assert "\n" not in str(exc)


@pytest.mark.anyio
async def test_unknown_digest_is_not_found(
    registry: RegistryServer, registry2: RegistryServer, unique_repo: str
) -> None:
    im.push(registry, unique_repo, "v1", _image())
    missing = im.sha256(b"never pushed")
    async with _client(registry, registry2) as client:
        with pytest.raises(NotFoundError):
            await client.copy(f"{registry.host}/{unique_repo}@{missing}", f"{registry2.host}/{unique_repo}:v1")


@pytest.mark.anyio
@pytest.mark.parametrize("side", ["source", "destination"])
async def test_plain_http_registry_not_marked_suggests_plain_http_flag(
    side: str, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", _image())
    unmarked = registry if side == "source" else registry2
    marked = registry2 if side == "source" else registry

    marks = registry.mark(), registry2.mark()
    async with _client(marked) as client:
        with pytest.raises(TransportError) as info:
            await client.copy(f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{dst_repo}:v1")
    entries = registry.requests(marks[0]) + registry2.requests(marks[1])

    message = str(info.value)
    assert f"--plain-http {unmarked.host}" in message
    assert "\n" not in message
    assert _writes(entries) == []
    assert blob_uploads(entries) == [] and manifest_puts(entries) == []
    with im.RegistryClient(registry2, dst_repo) as reader:
        assert reader.tags() == []


@pytest.mark.anyio
async def test_destination_digest_that_cannot_match_is_refused(
    registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    other = im.sha256(b"something else")
    mark = registry2.mark()
    async with _client(registry, registry2) as client:
        with pytest.raises(OcicopyError) as info:
            await client.copy(f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{dst_repo}@{other}")
    assert other in str(info.value)
    assert _writes(registry2.requests(mark)) == []
    async with _client(registry, registry2) as client:
        ok = await client.copy(f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{dst_repo}@{img.digest}")
    assert ok.action is CopyAction.COPIED
    assert ok.digest == img.digest
    assert im.get_manifest(registry2, dst_repo, img.digest).content == img.manifest


@pytest.mark.anyio
@pytest.mark.parametrize("platform", ["linux", "Linux/amd64", "linux/amd64/v8/extra", "linux//amd64"])
async def test_malformed_platform_is_refused_before_any_request(
    platform: str, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    src_repo = make_repo("src")
    im.push(registry, src_repo, "v1", _image())
    marks = registry.mark(), registry2.mark()
    async with _client(registry, registry2) as client:
        with pytest.raises(InputError):
            await client.copy(
                f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{make_repo('dst')}:v1", platforms=[platform]
            )
    assert registry.requests(marks[0]) == []
    assert registry2.requests(marks[1]) == []


# --------------------------------------------------------------------------- options: validated whenever they change


def test_revalidated_checks_what_model_copy_does_not() -> None:
    options = ClientOptions(use_docker_config=False)
    changed = revalidated(options, blob_concurrency=16)
    assert changed.blob_concurrency == 16 and changed.limits is options.limits
    with pytest.raises(SettingsError):
        revalidated(options, blob_concurrency=500)
    with pytest.raises(SettingsError):
        revalidated(options, no_such_setting=1)
    assert options.model_copy(update={"blob_concurrency": 500}).blob_concurrency == 500  # why: it checks nothing


SETTINGS_ERRORS = {  # what the README promises: every error is an OcicopyError; these are InputErrors, one line
    "bound": (
        lambda: ClientOptions(blob_concurrency=500),
        "ClientOptions: blob_concurrency: must be at most 128 (got 500)",
    ),
    "nested": (
        lambda: ClientOptions(registries={"ghcr.io": {"plain_http": "maybe"}}),
        "ClientOptions: registries.ghcr.io.plain_http: must be true or false (a boolean), not a string",
    ),
    "unknown": (lambda: ClientOptions(blob_concurency=4), "ClientOptions: blob_concurency: unknown field"),
    "validate": (lambda: ClientOptions.model_validate({"mounts": "x"}), "ClientOptions: mounts: must be true or false"),
    "limits": (lambda: Limits(manifest_bytes=10), "Limits: manifest_bytes: must be at least 1024 (got 10)"),
    "timeouts": (lambda: Timeouts(read=0), "Timeouts: read: must be greater than 0.0 (got 0)"),
    "retry": (lambda: RetryPolicy(attempts=0), "RetryPolicy: attempts must be a whole number, at least 1 (got 0)"),
    "retry-nested": (lambda: ClientOptions(retry={"attempts": 0}), "RetryPolicy: attempts must be a whole number"),
    "retry-nan": (lambda: RetryPolicy(base_delay=float("nan")), "RetryPolicy: base_delay must be a number at least"),
    "recompression": (lambda: Recompression(level=40), "Recompression: level: must be at most 19 (got 40)"),
}


@pytest.mark.parametrize(("make", "said"), SETTINGS_ERRORS.values(), ids=SETTINGS_ERRORS.keys())
def test_a_bad_setting_is_an_input_error_of_one_line(make: Callable[[], object], said: str) -> None:
    with pytest.raises(InputError) as info:
        make()
    assert isinstance(info.value, OcicopyError) and not isinstance(info.value, ValidationError)
    assert str(info.value).startswith(said), str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_a_bad_password_setting_is_not_shown() -> None:
    secret = ["hunter2-do-not-print"]
    with pytest.raises(SettingsError) as info:
        ClientOptions(registries={"ghcr.io": {"username": "u", "password": secret}})
    assert "registries.ghcr.io.password" in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value.errors)


@pytest.mark.parametrize("level", [0, 20])
def test_recompression_level_out_of_range_is_an_input_error(level: int) -> None:
    with pytest.raises(InputError, match="out of range 1-19"):
        recompression("zstd", level)
    assert recompression(Recompression(level=5), 7) == Recompression(level=7)
