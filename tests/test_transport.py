"""Transport behaviour a real registry will not show on demand: 429/503, challenges, tokens, redirects.

A scripted registry (``httpx2.MockTransport``) plays the server; the code under test is ocicopy's own
request loop (auth dance, retry, redirect policy), which runs unmodified.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx2
import pytest

from ocicopy import ClientOptions, Credentials
from ocicopy.auth import Scopes
from ocicopy.credentials import StaticCredentials
from ocicopy.errors import (
    AuthenticationError,
    BodyTooLargeError,
    DigestMismatchError,
    InsecureRequestError,
    NotFoundError,
    RegistryError,
    TransportError,
)
from ocicopy.registry import Registry
from ocicopy.retry import RetryPolicy
from ocicopy.transport import Transport

pytestmark = pytest.mark.anyio

HOST = "registry.example"
SECRET = "pa55-SECRET-word"
Handler = Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Script:
    """Records every request; ``handler`` decides answers."""

    handler: Handler
    seen: list[httpx2.Request] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        return self.handler(request)

    def to(self, host: str) -> list[httpx2.Request]:
        return [r for r in self.seen if r.url.host == host]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff delays instead of sleeping."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr("ocicopy.transport.anyio.sleep", fake_sleep)
    return recorded


def make(script: Script, *, creds: bool = True, attempts: int = 3, **options: object) -> Transport:
    opts = ClientOptions(use_docker_config=False, retry=RetryPolicy(attempts=attempts), **options)  # type: ignore[arg-type]
    source = StaticCredentials({HOST: Credentials("alice", SECRET)}) if creds else None
    return Transport(opts, source, httpx2.AsyncClient(transport=httpx2.MockTransport(script)))


async def get(transport: Transport, path: str = "/v2/app/manifests/v1") -> httpx2.Response:
    response, _ = await transport.request(
        "GET", HOST, transport.url(HOST, path), scopes=Scopes.pull("app"), expect={200}
    )
    return response


def bearer_challenge(realm: str = "https://auth.example/token", extra: str = "") -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry.example"{extra}'}


# -- retries -----------------------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(sleeps: list[float]) -> None:
    answers = iter([httpx2.Response(429, headers={"Retry-After": "2"}), httpx2.Response(200)])
    script = Script(lambda r: next(answers))
    async with make(script) as t:
        assert (await get(t)).status_code == 200
    assert sleeps == [pytest.approx(2.0, abs=0.5)]
    assert len(script.seen) == 2


async def test_retry_after_is_capped(sleeps: list[float]) -> None:
    answers = iter([httpx2.Response(503, headers={"Retry-After": "86400"}), httpx2.Response(200)])
    async with make(Script(lambda r: next(answers))) as t:
        await get(t)
    assert sleeps == [pytest.approx(RetryPolicy().max_retry_after, abs=0.5)]


async def test_5xx_retries_are_bounded_and_the_error_is_data(sleeps: list[float]) -> None:
    body = b'{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}'
    script = Script(lambda r: httpx2.Response(503, content=body))
    async with make(script, attempts=4) as t:
        with pytest.raises(RegistryError) as info:
            await get(t, "/v2/app/manifests/v1?sig=SIGNED")
    assert len(script.seen) == 4 and len(sleeps) == 3
    assert info.value.status == 503 and info.value.codes == ("UNAVAILABLE",)
    assert "GET https://registry.example/v2/app/manifests/v1" in str(info.value)
    assert "SIGNED" not in str(info.value)


async def test_404_is_not_retried(sleeps: list[float]) -> None:
    script = Script(lambda r: httpx2.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]}))
    async with make(script) as t:
        with pytest.raises(NotFoundError):
            await get(t)
    assert len(script.seen) == 1 and sleeps == []


async def test_connection_errors_are_retried_then_reported(sleeps: list[float]) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    script = Script(refuse)
    async with make(script, attempts=3) as t:
        with pytest.raises(TransportError, match="connection refused"):
            await get(t)
    assert len(script.seen) == 3 and len(sleeps) == 2


# -- basic and bearer auth -----------------------------------------------------------------------------------


def basic_server(request: httpx2.Request) -> httpx2.Response:
    expected = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    if request.headers.get("authorization") == expected:
        return httpx2.Response(200)
    return httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})


async def test_basic_challenge_is_answered_with_credentials() -> None:
    script = Script(basic_server)
    async with make(script) as t:
        await get(t)
        await get(t)
    # The first request learns the challenge; afterwards credentials go up front.
    assert [bool(r.headers.get("authorization")) for r in script.seen] == [False, True, True]


async def test_basic_without_credentials_names_the_host() -> None:
    async with make(Script(basic_server), creds=False) as t:
        with pytest.raises(AuthenticationError, match=r"no credentials are configured for registry\.example"):
            await get(t)


async def test_rejected_basic_credentials_fail_once_without_the_password() -> None:
    script = Script(lambda r: httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}))
    async with make(script) as t:
        with pytest.raises(AuthenticationError) as info:
            await get(t)
    assert len(script.seen) == 2
    assert "rejected" in str(info.value) and SECRET not in str(info.value)


@dataclass
class TokenRegistry:
    """A registry with a token service: accepts tokens listed in ``valid``."""

    valid: set[str] = field(default_factory=lambda: {"tok-1"})
    issued: list[str] = field(default_factory=lambda: ["tok-1", "tok-2", "tok-3"])
    realm: str = "https://auth.example/token"
    challenge_extra: str = ""

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host == "auth.example":
            return httpx2.Response(200, json={"token": self.issued.pop(0), "expires_in": 300})
        auth = request.headers.get("authorization", "")
        if auth.removeprefix("Bearer ") in self.valid:
            return httpx2.Response(200)
        return httpx2.Response(401, headers=bearer_challenge(self.realm, self.challenge_extra))


async def test_bearer_token_is_fetched_once_for_all_scopes_and_reused() -> None:
    server = TokenRegistry(valid={"tok-1", "tok-2", "tok-3"})
    script = Script(server)
    async with make(script) as t:
        url = t.url(HOST, "/v2/dst/blobs/uploads/")
        scopes = Scopes.push("dst").merge(Scopes.pull("src"))
        await t.request("GET", HOST, url, scopes=scopes, expect={200})
        await get(t)  # pull on app is not covered by the first token: a second token request
        await t.request("GET", HOST, url, scopes=Scopes.pull("dst"), expect={200})  # covered: reused
    token_requests = script.to("auth.example")
    assert len(token_requests) == 2
    first = token_requests[0]
    assert first.url.params.get_list("scope") == ["repository:dst:pull,push", "repository:src:pull"]
    assert first.url.params["service"] == "registry.example"
    assert first.headers["authorization"].startswith("Basic ")


async def test_expired_token_is_refreshed_once_then_fails() -> None:
    server = TokenRegistry(valid={"tok-1"})
    script = Script(server)
    async with make(script) as t:
        await get(t)
        server.valid = {"tok-2"}  # the cached token expired early (revoked): one refresh fixes it
        await get(t)
        assert len(script.to("auth.example")) == 2
        server.valid = set()  # now every token is refused: exactly one refresh, then an error
        with pytest.raises(AuthenticationError):
            await get(t)
    assert len(script.to("auth.example")) == 3


async def test_insufficient_scope_refetches_with_merged_scope() -> None:
    server = TokenRegistry(valid={"tok-1"})
    script = Script(server)
    async with make(script) as t:
        await get(t)
        server.valid = {"tok-2"}
        server.challenge_extra = ',scope="repository:other:pull",error="insufficient_scope"'
        await get(t)
    second = script.to("auth.example")[1]
    assert set(second.url.params.get_list("scope")) == {"repository:app:pull", "repository:other:pull"}


@pytest.mark.parametrize(
    ("realm", "why"),
    [
        ("http://auth.example/token", "plain http"),
        ("https://user:pw@auth.example/token", "userinfo"),
        ("/relative/token", "absolute"),
        ("ftp://auth.example/token", "absolute"),
    ],
)
async def test_unsafe_realms_get_no_credentials(realm: str, why: str) -> None:
    server = TokenRegistry(realm=realm)
    script = Script(server)
    async with make(script) as t:
        with pytest.raises(InsecureRequestError, match=why):
            await get(t)
    assert [r for r in script.seen if r.url.host != HOST] == []
    assert all(SECRET not in str(r.headers) for r in script.seen)


async def test_realm_change_mid_session_is_refused() -> None:
    server = TokenRegistry(valid={"tok-1"})
    script = Script(server)
    async with make(script) as t:
        await get(t)
        server.valid, server.realm = set(), "https://evil.example/token"
        with pytest.raises(InsecureRequestError, match="changed its token realm"):
            await get(t)
    assert script.to("evil.example") == []


# -- redirects -------------------------------------------------------------------------------------------------


def redirecting(location: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.host == HOST and "/blobs/" in request.url.path:
            if not request.headers.get("authorization"):
                return httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx2.Response(307, headers={"Location": location})
        return httpx2.Response(200, content=b"blob-bytes")

    return handler


DIGEST = "sha256:" + "ab" * 32


async def test_blob_redirect_to_another_host_drops_authorization() -> None:
    script = Script(redirecting("https://bucket.storage.example/blob?X-Signature=SIGNED"))
    async with make(script) as t, Registry(t, HOST).blob_get("app", DIGEST) as response:
        assert await response.aread() == b"blob-bytes"
    hop = script.to("bucket.storage.example")
    assert len(hop) == 1
    assert "authorization" not in hop[0].headers and "cookie" not in hop[0].headers
    assert hop[0].headers["accept-encoding"] == "identity"


async def test_blob_redirect_on_the_same_origin_keeps_authorization() -> None:
    script = Script(redirecting(f"https://{HOST}/storage/blob"))
    async with make(script) as t, Registry(t, HOST).blob_get("app", DIGEST) as response:
        assert response.status_code == 200
    assert script.seen[-1].url.path == "/storage/blob" and script.seen[-1].headers.get("authorization")


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://bucket.storage.example/blob?sig=SIGNED", "plain http"),
        ("https://127.0.0.1/blob?sig=SIGNED", "internal address"),
        ("https://169.254.169.254/latest/meta-data?sig=SIGNED", "internal address"),
    ],
)
async def test_unsafe_redirects_are_refused_and_redacted(location: str, why: str) -> None:
    script = Script(redirecting(location))
    async with make(script) as t:
        with pytest.raises(InsecureRequestError, match=why) as info:
            async with Registry(t, HOST).blob_get("app", DIGEST):
                pass
    assert "SIGNED" not in str(info.value)
    assert [r for r in script.seen if r.url.host != HOST] == []


# -- caps ------------------------------------------------------------------------------------------------------


async def test_manifest_over_the_cap_is_refused() -> None:
    big = b'{"schemaVersion":2,' + b" " * 5000 + b"}"
    script = Script(lambda r: httpx2.Response(200, content=big, headers={"Content-Type": "application/json"}))
    limits = {"manifest_bytes": 4096}
    async with make(script, limits=limits) as t:
        with pytest.raises(BodyTooLargeError, match="4096"):
            await Registry(t, HOST).manifest_get("app", "v1")


async def test_endless_manifest_stream_is_cut_at_the_cap() -> None:
    sent = 0

    async def endless():  # type: ignore[no-untyped-def]
        nonlocal sent
        while True:
            sent += 1024
            yield b"x" * 1024

    script = Script(lambda r: httpx2.Response(200, content=endless()))
    async with make(script, limits={"manifest_bytes": 8192}) as t:
        with pytest.raises(BodyTooLargeError):
            await Registry(t, HOST).manifest_get("app", "v1")
    assert sent <= 8192 + 2048


async def test_undecodable_content_encoding_is_a_transport_error() -> None:
    script = Script(
        lambda r: httpx2.Response(  # a stream, as from the network: decoding happens while reading
            200, stream=httpx2.ByteStream(b"definitely not gzip"), headers={"Content-Encoding": "gzip"}
        )
    )
    async with make(script) as t:
        with pytest.raises(TransportError, match="reading manifest: DecodingError"):
            await Registry(t, HOST).manifest_get("app", "v1")


async def test_retry_after_pauses_every_request_to_that_host(sleeps: list[float]) -> None:
    answers = iter([httpx2.Response(429, headers={"Retry-After": "7"})])
    script = Script(lambda r: next(answers, httpx2.Response(200)))
    async with make(script) as t:
        await get(t)  # 429 → waits 7 s (recorded), then succeeds
        assert sleeps == [pytest.approx(7.0, abs=0.5)]
        sleeps.clear()
        # Another request to the same host (the faked sleep let no time pass): it waits out the host's pause too.
        await get(t, "/v2/other/manifests/v1")
    assert sleeps == [pytest.approx(7.0, abs=0.5)]


async def test_manifest_put_413_names_the_size_and_is_not_retried(sleeps: list[float]) -> None:
    from ocicopy.models import parse_manifest

    config = {"mediaType": "a", "digest": "sha256:" + "a" * 64, "size": 1}
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [],
    }
    raw = json.dumps(doc).encode()
    manifest = parse_manifest(raw)
    script = Script(lambda r: httpx2.Response(413, json={"errors": [{"code": "SIZE_INVALID"}]}))
    async with make(script) as t:
        with pytest.raises(RegistryError, match=f"refused a {len(raw)}-byte manifest as too large") as info:
            await Registry(t, HOST).manifest_put("app", "v1", manifest)
    assert info.value.status == 413 and len(script.seen) == 1 and sleeps == []


def _manifest_bytes() -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2}
    media_type = "application/vnd.oci.image.manifest.v1+json"
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": []}).encode()


async def test_tag_whose_docker_content_digest_disagrees_is_rejected() -> None:
    raw = _manifest_bytes()
    headers = {
        "Content-Type": "application/vnd.oci.image.manifest.v1+json",
        "Docker-Content-Digest": "sha256:" + "d" * 64,
    }
    script = Script(lambda r: httpx2.Response(200, content=raw, headers=headers))
    async with make(script) as t:
        with pytest.raises(DigestMismatchError, match="Docker-Content-Digest differs"):
            await Registry(t, HOST).manifest_get("app", "v1")


async def test_manifest_fetched_by_digest_must_hash_to_it() -> None:
    raw = _manifest_bytes()
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    script = Script(lambda r: httpx2.Response(200, content=raw, headers=headers))
    async with make(script) as t:
        with pytest.raises(DigestMismatchError, match="hash differently"):
            await Registry(t, HOST).manifest_get("app", "sha256:" + "e" * 64)
