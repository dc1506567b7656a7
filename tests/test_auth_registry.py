"""Authentication against real registries: htpasswd basic auth and distribution token auth.

The token server records every token request, so scope merging (one token for a mount's two
repositories) and token reuse are observed, not assumed. Secrets are checked to stay out of every
error message and ``repr``: the password, and every ``Authorization`` value ocicopy actually sent
(captured with an httpx2 request hook on the client's own connection pool).
"""

from __future__ import annotations

import base64
import itertools
import secrets
from collections.abc import Callable

import httpx2
import pytest

import ocicopy
from harness import images as im
from harness.oracle import docker_ref, skopeo_inspect_raw
from harness.registry import AccessEntry, RegistryServer, blob_uploads, mounts
from harness.tokenserver import Scope, TokenRequest, TokenServer, pull_only
from ocicopy import AuthenticationError, BlobAction, Client, ClientOptions, CopyAction, Credentials

MakeRepo = Callable[[str], str]
_seeds = itertools.count(5000)


def _image(n: int = 2) -> im.Image:
    return im.make_image([im.layer(next(_seeds), 1200 + 100 * i) for i in range(n)])


def _ref(server: RegistryServer, repo: str, ref: str = "latest") -> str:
    return f"{server.host}/{repo}{'@' if ':' in ref else ':'}{ref}"


class Recorder:
    """An httpx2 client for ocicopy that records the Authorization headers it sends."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        self.http = httpx2.AsyncClient(timeout=30, event_hooks={"request": [self._hook]})

    async def _hook(self, request: httpx2.Request) -> None:
        if "authorization" in request.headers:
            self.authorizations.append(request.headers["authorization"])

    def secrets(self) -> set[str]:
        """Every credential part sent: bearer tokens and basic ``user:password`` blobs (encoded and decoded)."""
        found: set[str] = set()
        for value in self.authorizations:
            scheme, _, secret = value.partition(" ")
            found.add(secret)
            if scheme.lower() == "basic":
                found.add(base64.b64decode(secret).decode())
            else:
                found.update(part for part in secret.split(".") if len(part) > 16)  # JWT header/claims/signature
        return found


def _client(
    servers: list[RegistryServer],
    credentials: dict[str, Credentials] | None = None,
    recorder: Recorder | None = None,
) -> Client:
    return Client(
        ClientOptions(use_docker_config=False),
        plain_http=[s.host for s in servers],
        credentials=credentials,
        http_client=recorder.http if recorder else None,
    )


def _writes_accepted(entries: list[AccessEntry]) -> list[AccessEntry]:
    return [e for e in entries if e.method in ("PUT", "POST", "PATCH") and 200 <= e.status < 300]


def _assert_no_secrets(exc: BaseException, *secret_values: str) -> None:
    shown = [str(exc), repr(exc), *(str(a) for a in exc.args)]
    for value in secret_values:
        assert value, "empty secret makes the check meaningless"
        for text in shown:
            assert value not in text, "a secret leaked into an error message or repr"
    assert "\n" not in str(exc), "error message is not one line"


def _covers(request: TokenRequest, repo: str, actions: set[str]) -> bool:
    return any(
        (s := Scope.parse(text)).name == repo and actions <= set(s.actions) and s.type == "repository"
        for text in request.scopes
    )


# --------------------------------------------------------------------------- basic auth


@pytest.mark.anyio
async def test_basic_auth_copy_to_and_from_with_explicit_credentials(
    registry: RegistryServer, basic_registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, mid_repo, dst_repo = make_repo("src"), make_repo("mid"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    creds = {basic_registry.host: Credentials(basic_registry.username, basic_registry.password)}

    async with _client([registry, basic_registry, registry2], creds) as client:
        pushed = await client.copy(_ref(registry, src_repo, "v1"), _ref(basic_registry, mid_repo, "v1"))
        pulled = await client.copy(_ref(basic_registry, mid_repo, "v1"), _ref(registry2, dst_repo, "v1"))

    assert pushed.action is pulled.action is CopyAction.COPIED
    assert pushed.digest == pulled.digest == img.digest
    user_pw = (basic_registry.username, basic_registry.password)
    assert skopeo_inspect_raw(docker_ref(basic_registry, mid_repo, "v1"), creds=user_pw) == img.manifest
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == img.manifest
    for digest, data in img.blobs().items():
        assert im.get_blob(basic_registry, mid_repo, digest) == data
        assert im.get_blob(registry2, dst_repo, digest) == data


@pytest.mark.anyio
async def test_basic_auth_wrong_password_is_one_clear_error_and_pushes_nothing(
    registry: RegistryServer, basic_registry: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    wrong = "wrong-" + secrets.token_hex(8)
    recorder = Recorder()

    mark = basic_registry.mark()
    async with _client([registry, basic_registry], {basic_registry.host: Credentials("ocitest", wrong)}, recorder) as c:
        with pytest.raises(AuthenticationError) as info:
            await c.copy(_ref(registry, src_repo, "v1"), _ref(basic_registry, dst_repo, "v1"))
    entries = basic_registry.requests(mark)

    exc = info.value
    assert exc.status == 401
    assert basic_registry.host in str(exc)
    assert "credentials" in str(exc).lower()
    _assert_no_secrets(exc, wrong, *recorder.secrets())
    assert recorder.authorizations, "the wrong password was never even tried"
    assert _writes_accepted(entries) == []
    assert blob_uploads(entries) == []


@pytest.mark.anyio
async def test_basic_auth_without_credentials_names_the_host(
    registry: RegistryServer, basic_registry: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo = make_repo("src")
    im.push(basic_registry, src_repo, "v1", img)
    async with _client([registry, basic_registry]) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.copy(_ref(basic_registry, src_repo, "v1"), _ref(registry, make_repo("dst"), "v1"))
        with pytest.raises(AuthenticationError) as inspected:
            await client.inspect(_ref(basic_registry, src_repo, "v1"))
    for exc in (info.value, inspected.value):
        assert basic_registry.host in str(exc)
        assert "credential" in str(exc).lower()
        assert "\n" not in str(exc)


def test_credentials_repr_hides_the_password() -> None:
    creds = Credentials("someone", "s3cret-" + secrets.token_hex(8))
    assert creds.password not in repr(creds)
    assert "someone" in repr(creds)


# --------------------------------------------------------------------------- token auth


@pytest.mark.anyio
async def test_token_auth_copy_works_and_reuses_tokens(
    registry: RegistryServer, token_registry: RegistryServer, token_server: TokenServer, make_repo: MakeRepo
) -> None:
    img = _image(n=6)  # 7 blobs: a token per blob would show
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    creds = {token_registry.host: Credentials(token_server.admin_user, token_server.admin_password)}

    before = len(token_server.token_requests)
    async with _client([registry, token_registry], creds) as client:
        result = await client.copy(_ref(registry, src_repo, "v1"), _ref(token_registry, dst_repo, "v1"))
    requests = token_server.token_requests[before:]

    assert result.action is CopyAction.COPIED
    assert result.totals.blobs_copied == len(img.blobs()) == 7
    assert im.get_manifest(token_registry, dst_repo, "v1").content == img.manifest
    for digest, data in img.blobs().items():
        assert im.get_blob(token_registry, dst_repo, digest) == data
    assert all(r.status == 200 and r.user == token_server.admin_user for r in requests)
    assert 1 <= len(requests) <= 3, [r.scopes for r in requests]
    assert len([r for r in requests if _covers(r, dst_repo, {"push"})]) == 1


@pytest.mark.anyio
async def test_token_auth_mount_asks_one_token_for_both_repositories(
    token_registry: RegistryServer, token_server: TokenServer, make_repo: MakeRepo
) -> None:
    img = _image(n=3)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(token_registry, src_repo, "v1", img)
    creds = {token_registry.host: Credentials(token_server.admin_user, token_server.admin_password)}

    before, mark = len(token_server.token_requests), token_registry.mark()
    async with _client([token_registry], creds) as client:
        result = await client.copy(_ref(token_registry, src_repo, "v1"), _ref(token_registry, dst_repo, "v1"))
    requests, entries = token_server.token_requests[before:], token_registry.requests(mark)

    assert all(b.action is BlobAction.MOUNTED for b in result.blobs)
    assert len(mounts(entries)) == len(img.blobs())
    assert blob_uploads(entries) == []
    both = [r for r in requests if _covers(r, src_repo, {"pull"}) and _covers(r, dst_repo, {"pull", "push"})]
    assert len(both) == 1, [r.scopes for r in requests]
    granted = {g["name"]: set(g["actions"]) for g in both[0].granted}
    assert granted[src_repo] >= {"pull"}
    assert granted[dst_repo] == {"pull", "push"}
    assert len([r for r in requests if _covers(r, dst_repo, {"push"})]) == 1
    assert len(requests) <= 3, [r.scopes for r in requests]
    assert im.get_manifest(token_registry, dst_repo, "v1").content == img.manifest


@pytest.mark.anyio
async def test_token_auth_pull_only_user_can_pull_but_not_push(
    registry: RegistryServer,
    registry2: RegistryServer,
    token_registry: RegistryServer,
    token_server: TokenServer,
    make_repo: MakeRepo,
) -> None:
    img = _image()
    user, password = f"puller{secrets.token_hex(3)}", "pw-" + secrets.token_hex(10)
    token_server.add_user(user, password, pull_only)
    seeded_repo, src_repo, dst_repo = make_repo("seeded"), make_repo("src"), make_repo("dst")
    im.push(token_registry, seeded_repo, "v1", img)
    im.push(registry, src_repo, "v1", img)
    creds = {token_registry.host: Credentials(user, password)}

    async with _client([registry, registry2, token_registry], creds) as client:
        pulled = await client.copy(_ref(token_registry, seeded_repo, "v1"), _ref(registry2, dst_repo, "v1"))
    assert pulled.digest == img.digest  # the user is valid: pulling works

    recorder = Recorder()
    mark = token_registry.mark()
    async with _client([registry, token_registry], creds, recorder) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.copy(_ref(registry, src_repo, "v1"), _ref(token_registry, dst_repo, "v1"))
    entries = token_registry.requests(mark)

    exc = info.value
    assert exc.status in (401, 403)
    assert token_registry.host in str(exc)
    assert f"do not grant repository:{dst_repo}:pull,push" in str(exc)  # the scope that was refused is named
    _assert_no_secrets(exc, password, *recorder.secrets())
    assert any(a.lower().startswith("bearer ") for a in recorder.authorizations)
    assert _writes_accepted(entries) == []
    assert blob_uploads(entries) == []
    with im.RegistryClient(token_registry, dst_repo) as reader:
        assert reader.tags() == []


@pytest.mark.anyio
async def test_token_auth_wrong_password_is_refused_without_leaking_it(
    registry: RegistryServer, token_registry: RegistryServer, token_server: TokenServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    wrong = "wrong-" + secrets.token_hex(8)
    before, mark = len(token_server.token_requests), token_registry.mark()
    async with _client([registry, token_registry], {token_registry.host: Credentials("ocitest", wrong)}) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.copy(_ref(registry, src_repo, "v1"), _ref(token_registry, dst_repo, "v1"))
    requests, entries = token_server.token_requests[before:], token_registry.requests(mark)
    assert [r.status for r in requests] == [401]
    assert token_registry.host in str(info.value)
    _assert_no_secrets(info.value, wrong)
    assert _writes_accepted(entries) == []


def test_sync_copy_with_token_credentials(
    registry: RegistryServer, token_registry: RegistryServer, token_server: TokenServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    result = ocicopy.copy(
        _ref(registry, src_repo, "v1"),
        _ref(token_registry, dst_repo, "v1"),
        plain_http=[registry.host, token_registry.host],
        credentials={token_registry.host: Credentials(token_server.admin_user, token_server.admin_password)},
        options=ClientOptions(use_docker_config=False),
    )
    assert result.digest == img.digest
    assert im.get_manifest(token_registry, dst_repo, "v1").content == img.manifest


@pytest.mark.anyio
async def test_token_auth_without_credentials_names_the_host(
    registry: RegistryServer, token_registry: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo = make_repo("src")
    im.push(token_registry, src_repo, "v1", img)
    mark = token_registry.mark()
    async with _client([registry, token_registry]) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.copy(_ref(token_registry, src_repo, "v1"), _ref(registry, make_repo("dst"), "v1"))
    exc = info.value
    assert token_registry.host in str(exc)
    assert "credential" in str(exc).lower()
    assert "\n" not in str(exc)
    assert _writes_accepted(token_registry.requests(mark)) == []
