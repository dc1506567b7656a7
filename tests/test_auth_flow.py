"""HostAuth.flow without sockets: the flow yields requests and is fed in-memory answers (httpx-style)."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest

from ocicopy.auth import TOKEN_REQUEST, HostAuth, Scopes
from ocicopy.credentials import Credentials
from ocicopy.errors import AuthenticationError, InsecureRequestError

pytestmark = pytest.mark.anyio

HOST = "registry.example"
SECRET = "s3cr3t-PASSWORD"
BEARER = 'Bearer realm="https://auth.example/token",service="registry.example"'


ALICE = Credentials("alice", SECRET)


def auth(creds: Credentials | None = ALICE) -> HostAuth:
    async def lookup() -> Credentials | None:
        return creds

    return HostAuth(HOST, httpx2.URL(f"https://{HOST}/"), lookup)


def get(path: str = "/v2/app/manifests/1") -> httpx2.Request:
    return httpx2.Request("GET", f"https://{HOST}{path}")


def token_answer(value: str = "tok-1", status: int = 200) -> httpx2.Response:
    return httpx2.Response(status, content=json.dumps({"token": value, "expires_in": 300}).encode())


async def drive(flow: object, answers: list[httpx2.Response]) -> list[httpx2.Request]:
    """Feed ``answers`` to the flow in order; the requests it yielded."""
    sent: list[httpx2.Request] = []
    gen = flow  # an async generator
    request = await gen.__anext__()  # type: ignore[attr-defined]
    for answer in answers:
        sent.append(request)
        try:
            request = await gen.asend(answer)  # type: ignore[attr-defined]
        except StopAsyncIteration:
            return sent
    raise AssertionError(f"the flow wants more after {len(answers)} answers: {request}")


async def test_bearer_challenge_then_token_then_the_request_again() -> None:
    a = auth()
    scopes = Scopes.pull("app")
    sent = await drive(
        a.flow(get(), scopes),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER}), token_answer("tok-1"), httpx2.Response(200)],
    )
    first, token, again = sent
    assert "authorization" not in first.headers
    assert token.extensions.get(TOKEN_REQUEST) and token.url.host == "auth.example"
    assert token.url.params.get_list("scope") == ["repository:app:pull"]
    assert token.url.params["service"] == "registry.example"
    assert token.headers["authorization"].startswith("Basic ")  # credentials go to the realm, not the registry
    assert again.headers["authorization"] == "Bearer tok-1"
    assert again is not first  # a new request object: what was sent first stays as it was


async def test_a_cached_token_goes_up_front_and_a_superset_is_reused() -> None:
    a = auth()
    await drive(
        a.flow(get(), Scopes.push("app")),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER}), token_answer("wide"), httpx2.Response(200)],
    )
    sent = await drive(a.flow(get(), Scopes.pull("app")), [httpx2.Response(200)])
    assert [r.headers.get("authorization") for r in sent] == ["Bearer wide"]


async def test_insufficient_scope_widens_the_next_token_request() -> None:
    a = auth()
    challenge = BEARER + ',error="insufficient_scope",scope="repository:base:pull"'
    sent = await drive(
        a.flow(get(), Scopes.push("app")),
        [httpx2.Response(401, headers={"WWW-Authenticate": challenge}), token_answer(), httpx2.Response(200)],
    )
    assert sent[1].url.params.get_list("scope") == ["repository:app:pull,push", "repository:base:pull"]


async def test_basic_challenge_is_answered_with_the_credentials() -> None:
    a = auth()
    sent = await drive(
        a.flow(get(), Scopes.pull("app")),
        [httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), httpx2.Response(200)],
    )
    assert [r.headers.get("authorization", "").split(" ")[0] for r in sent] == ["", "Basic"]


async def test_a_second_401_ends_the_flow_with_that_answer() -> None:
    a = auth()
    challenge = httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    sent = await drive(a.flow(get(), Scopes.pull("app")), [challenge, httpx2.Response(401)])
    assert len(sent) == 2


async def test_without_credentials_a_basic_challenge_is_not_retried() -> None:
    sent = await drive(
        auth(None).flow(get(), Scopes.pull("app")),
        [httpx2.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})],
    )
    assert len(sent) == 1


async def test_a_streamed_request_is_never_sent_twice() -> None:
    sent = await drive(
        auth().flow(get(), Scopes.pull("app"), replayable=False),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER})],
    )
    assert len(sent) == 1


async def test_the_realm_is_pinned_for_the_session() -> None:
    a = auth()
    await drive(
        a.flow(get(), Scopes.pull("app")),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER}), token_answer(), httpx2.Response(200)],
    )
    other = 'Bearer realm="https://evil.example/token",service="registry.example"'
    with pytest.raises(InsecureRequestError, match="changed its token realm"):
        await drive(
            a.flow(get(), Scopes.pull("other")),
            [token_answer(), httpx2.Response(401, headers={"WWW-Authenticate": other})],
        )


async def test_an_http_realm_for_an_https_registry_is_refused_before_any_credential_goes() -> None:
    challenge = 'Bearer realm="http://auth.example/token"'
    with pytest.raises(InsecureRequestError, match="plain http"):
        await drive(
            auth().flow(get(), Scopes.pull("app")), [httpx2.Response(401, headers={"WWW-Authenticate": challenge})]
        )


async def test_a_refused_token_request_is_an_authentication_error_without_the_secret() -> None:
    with pytest.raises(AuthenticationError) as info:
        await drive(
            auth().flow(get(), Scopes.pull("app")),
            [
                httpx2.Response(401, headers={"WWW-Authenticate": BEARER}),
                httpx2.Response(401, content=b'{"errors":[{"code":"UNAUTHORIZED","message":"bad creds"}]}'),
            ],
        )
    assert info.value.status == 401 and "UNAUTHORIZED" in info.value.codes
    assert SECRET not in str(info.value)


async def test_concurrent_flows_share_one_token_request() -> None:
    a = auth()
    await drive(
        a.flow(get(), Scopes.pull("warmup")),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER}), token_answer(), httpx2.Response(200)],
    )
    token_requests: list[httpx2.Request] = []
    release = anyio.Event()

    async def one() -> None:
        flow = a.flow(get(), Scopes.pull("app"))
        request = await flow.__anext__()
        if request.extensions.get(TOKEN_REQUEST):
            token_requests.append(request)
            await release.wait()
            request = await flow.asend(token_answer("shared"))
        assert request.headers["authorization"] == "Bearer shared"
        with pytest.raises(StopAsyncIteration):
            await flow.asend(httpx2.Response(200))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
        await anyio.sleep(0.01)
        release.set()
    assert len(token_requests) == 1


async def test_closing_an_abandoned_flow_releases_the_token_lock() -> None:
    a = auth()
    await drive(
        a.flow(get(), Scopes.pull("warmup")),
        [httpx2.Response(401, headers={"WWW-Authenticate": BEARER}), token_answer(), httpx2.Response(200)],
    )
    abandoned = a.flow(get(), Scopes.pull("app"))
    assert (await abandoned.__anext__()).extensions.get(TOKEN_REQUEST)  # holds the lock now
    await abandoned.aclose()  # what the transport does when the token request itself failed
    with anyio.fail_after(1):
        sent = await drive(a.flow(get(), Scopes.pull("app")), [token_answer("next"), httpx2.Response(200)])
    assert sent[-1].headers["authorization"] == "Bearer next"
