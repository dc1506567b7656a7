"""Tests of the test harness itself: real registries, token auth, seeding, log observation, oracle."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import images as im
from harness.oracle import SkopeoError, docker_ref, skopeo_digest, skopeo_inspect_raw, skopeo_list_tags
from harness.registry import (
    REPO_NAME_RE,
    RegistryServer,
    blob_gets,
    blob_uploads,
    for_repo,
    heads,
    manifest_puts,
    mounts,
    registry_version,
    start_registry,
    unique_repo_name,
    upload_starts,
    uploaded_digests,
)
from harness.tokenserver import Scope, TokenServer


def _challenge(resp: httpx2.Response) -> dict[str, str]:
    scheme, _, params = resp.headers["WWW-Authenticate"].partition(" ")
    out = {"scheme": scheme}
    for part in params.split('",'):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip('"')
    return out


def _token(ts: TokenServer, user: str, password: str, *scopes: str) -> httpx2.Response:
    return httpx2.get(ts.realm, params={"service": ts.service, "scope": list(scopes)}, auth=(user, password))


def _kinds() -> dict[str, im.Manifest]:
    oci = im.make_image([im.layer(1, 3000), im.layer(2, 700)], annotations={"org.example": "x"})
    docker = im.make_image([im.layer(3, 1200)], media="docker", platform=("linux", "arm64", "v8"))
    oci_arm = im.make_image([im.layer(4, 500)], platform=("linux", "arm64", "v8"))
    docker_amd = im.make_image([im.layer(5, 400)], media="docker")
    return {
        "oci-image": oci,
        "docker-image": docker,
        "oci-index": im.make_index([oci, oci_arm, im.make_artifact(subject=oci)]),
        "docker-list": im.make_index([docker_amd, docker], media="docker"),
        "artifact": im.make_artifact(b"sbom\n", subject=oci),
    }


# --------------------------------------------------------------------------- registries answer


def test_registry_version() -> None:
    assert registry_version().startswith("2.")


def test_anonymous_registries_answer_200(registry: RegistryServer, registry2: RegistryServer) -> None:
    assert registry.url != registry2.url
    for server in (registry, registry2):
        assert server.host.startswith("127.0.0.1:")
        resp = httpx2.get(f"{server.url}/v2/")
        assert resp.status_code == 200
        assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_basic_registry_challenges(basic_registry: RegistryServer) -> None:
    resp = httpx2.get(f"{basic_registry.url}/v2/")
    assert resp.status_code == 401
    assert _challenge(resp)["scheme"] == "Basic"
    ok = httpx2.get(f"{basic_registry.url}/v2/", auth=(basic_registry.username, basic_registry.password))
    assert ok.status_code == 200
    assert httpx2.get(f"{basic_registry.url}/v2/", auth=(basic_registry.username, "wrong")).status_code == 401


def test_token_registry_challenges_with_token_server_realm(
    token_registry: RegistryServer, token_server: TokenServer
) -> None:
    resp = httpx2.get(f"{token_registry.url}/v2/")
    assert resp.status_code == 401
    challenge = _challenge(resp)
    assert challenge["scheme"] == "Bearer"
    assert challenge["realm"] == token_server.realm
    assert challenge["service"] == token_server.service


def test_token_accepted_and_wrong_password_refused(
    token_registry: RegistryServer, token_server: TokenServer, unique_repo: str
) -> None:
    url = f"{token_registry.url}/v2/{unique_repo}/manifests/latest"
    assert httpx2.get(url).status_code == 401
    before = len(token_server.token_requests)
    resp = _token(token_server, token_registry.username, token_registry.password, f"repository:{unique_repo}:pull")
    assert resp.status_code == 200
    body = resp.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == token_server.expires_in
    # authorized: the registry gets past auth and answers "manifest unknown"
    assert httpx2.get(url, headers={"Authorization": f"Bearer {body['token']}"}).status_code == 404
    bad = _token(token_server, token_registry.username, "wrong", f"repository:{unique_repo}:pull")
    assert bad.status_code == 401
    recorded = token_server.token_requests[before:]
    assert [(r.user, r.scopes, r.status) for r in recorded] == [
        (token_registry.username, [f"repository:{unique_repo}:pull"], 200),
        (token_registry.username, [f"repository:{unique_repo}:pull"], 401),
    ]


def test_token_is_rs256_jwt_with_x5c(token_server: TokenServer) -> None:
    header_b64, claims_b64, _ = token_server.mint(["repository:a/b:pull,push"]).split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=="))
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=="))
    assert header["alg"] == "RS256"
    assert len(header["x5c"]) == 1
    assert claims["aud"] == token_server.service
    assert claims["iss"] == token_server.issuer
    assert claims["access"] == [{"type": "repository", "name": "a/b", "actions": ["pull", "push"]}]


def test_reader_gets_pull_only(token_registry: RegistryServer, token_server: TokenServer, unique_repo: str) -> None:
    scope = f"repository:{unique_repo}:pull,push"
    resp = _token(token_server, token_server.reader_user, token_server.reader_password, scope)
    assert resp.status_code == 200
    auth = {"Authorization": f"Bearer {resp.json()['token']}"}
    assert token_server.token_requests[-1].granted == [{"type": "repository", "name": unique_repo, "actions": ["pull"]}]
    assert httpx2.get(f"{token_registry.url}/v2/{unique_repo}/tags/list", headers=auth).status_code == 404
    push = httpx2.post(f"{token_registry.url}/v2/{unique_repo}/blobs/uploads/", headers=auth)
    assert push.status_code == 401
    assert _challenge(push)["error"] == "insufficient_scope"


def test_anonymous_token_has_no_access(token_registry: RegistryServer, token_server: TokenServer) -> None:
    resp = httpx2.get(token_server.realm, params={"service": token_server.service, "scope": "repository:a/b:pull"})
    assert resp.status_code == 200
    auth = {"Authorization": f"Bearer {resp.json()['token']}"}
    assert httpx2.get(f"{token_registry.url}/v2/", headers=auth).status_code == 200
    assert httpx2.get(f"{token_registry.url}/v2/a/b/tags/list", headers=auth).status_code == 401
    assert token_server.token_requests[-1].user is None


def test_post_password_grant_and_space_separated_scopes(token_server: TokenServer) -> None:
    form = {
        "grant_type": "password",
        "username": token_server.admin_user,
        "password": token_server.admin_password,
        "service": token_server.service,
        "scope": "repository:a:pull repository:b:push",
    }
    resp = httpx2.post(token_server.realm, data=form)
    assert resp.status_code == 200
    assert token_server.token_requests[-1].scopes == ["repository:a:pull", "repository:b:push"]
    assert Scope.parse("repository:host:5000/x:pull") == Scope("repository", "host:5000/x", ["pull"])


def test_expired_token_rejected_beyond_leeway(
    token_registry: RegistryServer, token_server: TokenServer, unique_repo: str
) -> None:
    """distribution 2.8 accepts tokens up to 60 s past ``exp``; only a token older than that is refused."""
    url = f"{token_registry.url}/v2/{unique_repo}/tags/list"
    fresh = token_server.mint([f"repository:{unique_repo}:pull"])
    stale = token_server.mint([f"repository:{unique_repo}:pull"], ttl=-120)
    assert httpx2.get(url, headers={"Authorization": f"Bearer {fresh}"}).status_code == 404
    assert httpx2.get(url, headers={"Authorization": f"Bearer {stale}"}).status_code == 401


# --------------------------------------------------------------------------- images


def test_layer_is_deterministic_and_sized() -> None:
    a, b = im.layer(7, 10_000), im.layer(7, 10_000)
    assert a == b
    assert a != im.layer(8, 10_000)
    assert a.digest == "sha256:" + hashlib.sha256(a).hexdigest()
    assert a.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(a)).hexdigest()
    assert 10_000 < len(a) < 10_000 + 1024


def test_manifest_json_is_not_canonical() -> None:
    raw = im.make_image([im.layer(1, 10)]).manifest
    obj = json.loads(raw)
    assert raw != json.dumps(obj).encode()
    assert raw != json.dumps(obj, separators=(",", ":")).encode()
    assert raw != json.dumps(obj, indent=2).encode()


def test_config_and_index_content() -> None:
    img = im.make_image([im.layer(1, 10)], platform=("linux", "arm", "v7"))
    config = json.loads(img.config)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")
    assert config["rootfs"]["diff_ids"] == [img.layers[0].diff_id]  # type: ignore[attr-defined]
    index = json.loads(im.make_index([img], media="docker").manifest)
    assert index["mediaType"] == im.DOCKER_LIST
    assert index["manifests"][0]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    assert index["manifests"][0]["digest"] == img.digest


@pytest.mark.parametrize("kind", list(_kinds()))
def test_push_round_trip_matches_skopeo(registry: RegistryServer, unique_repo: str, kind: str) -> None:
    obj = _kinds()[kind]
    assert im.push(registry, unique_repo, "v1", obj) == obj.digest
    fetched = im.get_manifest(registry, unique_repo, "v1")
    assert fetched.content == obj.manifest
    assert fetched.media_type == obj.media_type
    assert fetched.digest == obj.digest
    assert skopeo_inspect_raw(docker_ref(registry, unique_repo, "v1")) == obj.manifest
    assert skopeo_digest(docker_ref(registry, unique_repo, obj.digest)) == obj.digest
    for digest, data in obj.blobs().items():
        assert im.get_blob(registry, unique_repo, digest) == data
    for child in obj.children:
        assert im.get_manifest(registry, unique_repo, child.digest).content == child.manifest


@pytest.mark.parametrize("server_fixture", ["basic_registry", "token_registry"])
def test_push_with_auth_matches_skopeo(request: pytest.FixtureRequest, unique_repo: str, server_fixture: str) -> None:
    server: RegistryServer = request.getfixturevalue(server_fixture)
    obj = _kinds()["oci-index"]
    im.push(server, unique_repo, "v1", obj)
    assert im.get_manifest(server, unique_repo, "v1").content == obj.manifest
    ref = docker_ref(server, unique_repo, "v1")
    assert skopeo_digest(ref, creds=(server.username, server.password)) == obj.digest
    assert skopeo_list_tags(ref.rpartition(":")[0], creds=(server.username, server.password)) == ["v1"]


def test_skopeo_failure_is_clear(registry: RegistryServer, unique_repo: str) -> None:
    with pytest.raises(SkopeoError, match="manifest unknown"):
        skopeo_inspect_raw(docker_ref(registry, unique_repo, "missing"))


# --------------------------------------------------------------------------- access log observation


def test_access_log_sees_monolithic_upload(registry: RegistryServer, unique_repo: str) -> None:
    blob = im.layer(11, 2048)
    before = registry.mark()
    with im.RegistryClient(registry, unique_repo) as client:
        client.push_blob(blob)
        assert client.get_blob(blob.digest) == blob
    entries = registry.requests(before)
    assert [(e.method, e.status) for e in entries] == [("HEAD", 404), ("POST", 202), ("PUT", 201), ("GET", 200)]
    assert all(e.repo == unique_repo for e in entries)
    assert uploaded_digests(entries) == [blob.digest]
    assert len(blob_uploads(entries)) == 1
    assert len(upload_starts(entries)) == 1
    assert len(heads(entries)) == 1
    assert blob_gets(entries)[0].bytes_written == len(blob)
    assert entries[2].request_content_type == "application/octet-stream"
    assert mounts(entries) == []


def test_mark_excludes_earlier_requests(registry: RegistryServer, unique_repo: str) -> None:
    httpx2.head(f"{registry.url}/v2/{unique_repo}/manifests/before")
    mark = registry.mark()
    httpx2.head(f"{registry.url}/v2/{unique_repo}/manifests/after")
    entries = registry.requests(mark)
    assert [e.path for e in entries] == [f"/v2/{unique_repo}/manifests/after"]
    assert entries[0].status == 404
    assert any(e.path.endswith("/before") for e in registry.requests(0))


def test_manifest_puts_seen(registry: RegistryServer, unique_repo: str) -> None:
    index = _kinds()["docker-list"]
    mark = registry.mark()
    im.push(registry, unique_repo, "v1", index)
    puts = manifest_puts(registry.requests(mark))
    assert [(e.path.rpartition("/")[2], e.status) for e in puts] == [
        *((child.digest, 201) for child in index.children),
        ("v1", 201),
    ]
    assert puts[-1].request_content_type == im.DOCKER_LIST


def test_hand_made_mount_is_observed(registry: RegistryServer, make_repo: Callable[[str], str]) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    blob = im.layer(12, 4096)
    with im.RegistryClient(registry, src) as client:
        client.push_blob(blob)
    mark = registry.mark()
    resp = httpx2.post(f"{registry.url}/v2/{dst}/blobs/uploads/", params={"mount": blob.digest, "from": src})
    assert resp.status_code == 201
    entries = registry.requests(mark)
    assert [e.param("from") for e in mounts(entries, blob.digest)] == [src]
    assert blob_uploads(entries) == []
    assert upload_starts(entries) == []
    assert for_repo(entries, dst) == entries
    assert httpx2.head(f"{registry.url}/v2/{dst}/blobs/{blob.digest}").status_code == 200


def test_failed_mount_is_not_a_mount(registry: RegistryServer, make_repo: Callable[[str], str]) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    missing = im.sha256(b"never pushed")
    mark = registry.mark()
    resp = httpx2.post(f"{registry.url}/v2/{dst}/blobs/uploads/", params={"mount": missing, "from": src})
    assert resp.status_code == 202  # distribution falls back to opening an upload session
    httpx2.delete(httpx2.URL(registry.url).join(resp.headers["Location"]))
    entries = registry.requests(mark)
    assert mounts(entries) == []
    assert len(upload_starts(entries)) == 1


def test_auth_refusals_are_logged_as_401(
    token_registry: RegistryServer, token_server: TokenServer, unique_repo: str
) -> None:
    mark = token_registry.mark()
    httpx2.get(f"{token_registry.url}/v2/{unique_repo}/tags/list")
    token = token_server.mint([f"repository:{unique_repo}:pull"])
    httpx2.get(f"{token_registry.url}/v2/{unique_repo}/tags/list", headers={"Authorization": f"Bearer {token}"})
    entries = token_registry.requests(mark)
    assert [e.status for e in entries] == [401, 404]
    assert entries[0].message.startswith("error authorizing context")


def test_mount_needs_pull_on_source_under_token_auth(
    token_registry: RegistryServer, token_server: TokenServer, make_repo: Callable[[str], str]
) -> None:
    """distribution 2.8 refuses the whole mount POST (401) if the token lacks ``pull`` on ``from``."""
    src, dst = make_repo("src"), make_repo("dst")
    blob = im.layer(13, 100)
    with im.RegistryClient(token_registry, src) as client:
        client.push_blob(blob)
    url = f"{token_registry.url}/v2/{dst}/blobs/uploads/"
    params = {"mount": blob.digest, "from": src}
    only_dst = token_server.mint([f"repository:{dst}:pull,push"])
    resp = httpx2.post(url, params=params, headers={"Authorization": f"Bearer {only_dst}"})
    assert resp.status_code == 401
    assert f"repository:{src}:pull" in _challenge(resp)["scope"]
    both = token_server.mint([f"repository:{dst}:pull,push", f"repository:{src}:pull"])
    assert httpx2.post(url, params=params, headers={"Authorization": f"Bearer {both}"}).status_code == 201


# --------------------------------------------------------------------------- lifecycle and naming


def test_start_failure_raises_with_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited"):
        start_registry(tmp_path, extra_config={"storage": {"nosuchdriver": {}}})


def test_missing_binary_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("OCITEST_REGISTRY_BIN", raising=False)
    with pytest.raises(RuntimeError, match="not found"):
        start_registry(tmp_path)


def test_stop_terminates_and_frees_port(tmp_path: Path) -> None:
    server = start_registry(tmp_path)
    with server:
        assert httpx2.get(f"{server.url}/v2/").status_code == 200
    assert not server.alive()
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{server.url}/v2/")


def test_unique_repo_fixture(unique_repo: str) -> None:
    assert unique_repo.startswith("t/test-unique-repo-fixture-")
    assert REPO_NAME_RE.fullmatch(unique_repo)


@given(st.text(max_size=300))
def test_unique_repo_name_is_valid_and_fresh(label: str) -> None:
    a, b = unique_repo_name(label), unique_repo_name(label)
    assert a != b
    assert REPO_NAME_RE.fullmatch(a)
    assert len(a) < 255
