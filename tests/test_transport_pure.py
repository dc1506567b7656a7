"""Tests for the pure helpers of ocicopy.transport: URL redaction, the spec error body, capped body reads (on
in-memory httpx2 responses), the internal-address check used on redirects, and which TLS context each pool
gets (a redirect hop never the registry's)."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.registry import CertAuthority, make_ca
from ocicopy import ClientOptions, tls
from ocicopy.errors import BodyTooLargeError, InputError, SpecError
from ocicopy.options import RegistryConfig
from ocicopy.transport import Transport, _is_internal, parse_error_body, read_capped, redact

# --- redact -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://reg.example/v2/", "https://reg.example/v2/"),
        ("https://reg.example:5000/v2/a/blobs/x", "https://reg.example:5000/v2/a/blobs/x"),
        ("https://user:pass@reg.example/v2/", "https://reg.example/v2/"),
        ("https://user@reg.example/v2/", "https://reg.example/v2/"),
        (
            "https://bucket.s3.amazonaws.com/blob?X-Amz-Signature=abc&X-Amz-Credential=k",
            "https://bucket.s3.amazonaws.com/blob?…",
        ),
        ("https://reg.example/v2/?", "https://reg.example/v2/"),
        ("https://reg.example/v2/#frag", "https://reg.example/v2/"),
        ("http://u:p@127.0.0.1:5000/v2/x?token=t#f", "http://127.0.0.1:5000/v2/x?…"),
        ("https://REG.Example/V2/", "https://reg.example/V2/"),
        ("http://[::1]:5000/v2/", "http://[::1]:5000/v2/"),
    ],
)
def test_redact_table(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert redact(httpx2.URL(url)) == expected


_secret = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=4, max_size=20).map(
    lambda s: "Zq" + s
)


@given(_secret, _secret, st.sampled_from(["https", "http"]))
def test_redact_never_shows_userinfo_or_query(password: str, signature: str, scheme: str) -> None:
    url = f"{scheme}://user:{quote(password, safe='')}@reg.example:5000/v2/r/blobs/b?sig={quote(signature, safe='')}"
    shown = redact(url)
    assert "Zq" not in shown
    assert "user" not in shown
    assert shown == f"{scheme}://reg.example:5000/v2/r/blobs/b?…"


# --- parse_error_body ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}',
            [SpecError("MANIFEST_UNKNOWN", "manifest unknown", '{"Tag":"x"}')],
            id="spec",
        ),
        pytest.param(
            b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},'
            b'{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:'
            + b"a" * 64
            + b'"}]}',
            [
                SpecError("DIGEST_INVALID", "provided digest did not match uploaded content"),
                SpecError("MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", "sha256:" + "a" * 64),
            ],
            id="distribution-blob-race",
        ),
        pytest.param(
            b'{"errors":[{"code":"DENIED","message":"a"},{"code":"UNAUTHORIZED"}]}',
            [SpecError("DENIED", "a"), SpecError("UNAUTHORIZED", "")],
            id="two",
        ),
        pytest.param(
            b'{"errors":[{"message":"no code"},{"code":""},"str",null,{"code":"BLOB_UNKNOWN"}]}',
            [SpecError("BLOB_UNKNOWN", "")],
            id="skips-unusable",
        ),
        pytest.param(b'{"errors":[{"code":429,"message":5}]}', [SpecError("429", "5")], id="non-string"),
        pytest.param(b"", [], id="empty"),
        pytest.param(b"<html>502 Bad Gateway</html>", [], id="html"),
        pytest.param(b"\xff\xfe\x00", [], id="binary"),
        pytest.param(b"[]", [], id="array"),
        pytest.param(b"null", [], id="null"),
        pytest.param(b'{"errors":"DENIED"}', [], id="errors-not-list"),
        pytest.param(b'{"errors":null}', [], id="errors-null"),
        pytest.param(b'{"error":"invalid_token"}', [], id="oauth-style"),
        pytest.param(b'{"details":"x"}', [], id="other-object"),
    ],
)
def test_parse_error_body_table(body: bytes, expected: list[SpecError]) -> None:
    assert parse_error_body(body) == expected


def test_parse_error_body_caps_entries_and_message_length() -> None:
    items = [{"code": f"C{i}", "message": "m" * 1000} for i in range(50)]
    got = parse_error_body(json.dumps({"errors": items}).encode())
    assert [e.code for e in got] == [f"C{i}" for i in range(10)]
    assert all(len(e.message) == 300 for e in got)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 5000, id="deep-arrays"),
        pytest.param(b'{"errors":' + b"[" * 5000 + b"]" * 5000 + b"}", id="deep-valid"),
    ],
)
def test_parse_error_body_deeply_nested_is_junk(body: bytes) -> None:
    # The error body is registry-controlled (capped at 64 KiB, plenty for nesting): json raises RecursionError,
    # which must count as "junk" like any other unparsable body, not escape from Transport._send.
    assert parse_error_body(body) == []


@given(st.binary(max_size=300))
def test_parse_error_body_never_raises_on_bytes(body: bytes) -> None:
    got = parse_error_body(body)
    assert len(got) <= 10
    assert all(isinstance(e, SpecError) and e.code for e in got)


@given(
    st.lists(
        st.fixed_dictionaries({"code": st.text(min_size=1, max_size=10)}, optional={"message": st.text(max_size=400)}),
        max_size=20,
    )
)
def test_parse_error_body_reads_spec_bodies(items: list[dict[str, str]]) -> None:
    got = parse_error_body(json.dumps({"errors": items}).encode())
    assert got == [SpecError(i["code"], i.get("message", "")[:300]) for i in items[:10]]


# --- read_capped ------------------------------------------------------------------------------------------------


class Chunks(httpx2.AsyncByteStream):
    """A streamed body that records how much of it was pulled; ``endless`` never ends."""

    def __init__(self, chunks: list[bytes], endless: bool = False) -> None:
        self.chunks = chunks
        self.endless = endless
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            for chunk in self.chunks:
                self.pulled += 1
                yield chunk
            if not self.endless:
                return


def streamed(body: bytes | Chunks, headers: dict[str, str] | None = None) -> httpx2.Response:
    stream = body if isinstance(body, Chunks) else httpx2.ByteStream(body)
    return httpx2.Response(200, headers=headers or {}, stream=stream)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "limit"),
    [(b"", 1), (b"x", 1), (b"hello", 5), (b"hello", 6), (b"a" * 1000, 1000)],
)
async def test_read_capped_within_limit(body: bytes, limit: int) -> None:
    assert await read_capped(streamed(body), limit, "manifest") == body


@pytest.mark.anyio
async def test_read_capped_with_truthful_content_length() -> None:
    r = streamed(b"hello", {"content-length": "5"})
    assert await read_capped(r, 5, "manifest") == b"hello"


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "limit"), [(b"hello!", 5), (b"ab", 1), (b"a" * 1001, 1000)])
async def test_read_capped_over_limit(body: bytes, limit: int) -> None:
    with pytest.raises(BodyTooLargeError) as info:
        await read_capped(streamed(body), limit, "manifest")
    assert info.value.limit == limit
    assert info.value.what == "manifest"
    assert f"{limit}-byte limit" in str(info.value)


@pytest.mark.anyio
async def test_read_capped_stops_pulling_an_endless_body() -> None:
    stream = Chunks([b"x" * 100], endless=True)
    with anyio.fail_after(5), pytest.raises(BodyTooLargeError):
        await read_capped(streamed(stream), 1000, "error body")
    assert stream.pulled == 11  # 1,100 bytes is the first moment it is over 1,000


@pytest.mark.anyio
async def test_read_capped_refuses_a_declared_oversize_before_reading() -> None:
    stream = Chunks([b"tiny"])
    with pytest.raises(BodyTooLargeError):
        await read_capped(streamed(stream, {"content-length": "1000001"}), 1_000_000, "manifest")
    assert stream.pulled == 0


@pytest.mark.anyio
@pytest.mark.parametrize("declared", ["1", "0", "3"])
async def test_read_capped_does_not_trust_a_small_content_length(declared: str) -> None:
    # A lying Content-Length under the cap does not let more than the cap through.
    with pytest.raises(BodyTooLargeError):
        await read_capped(streamed(Chunks([b"a" * 6]), {"content-length": declared}), 5, "token response")


@pytest.mark.anyio
@pytest.mark.parametrize("declared", ["abc", "-1", "", " 5"])
async def test_read_capped_ignores_unusable_content_length(declared: str) -> None:
    assert await read_capped(streamed(Chunks([b"ok"]), {"content-length": declared}), 5, "x") == b"ok"


@pytest.mark.anyio
@given(chunks=st.lists(st.binary(max_size=50), max_size=10), limit=st.integers(1, 300))
async def test_read_capped_property(chunks: list[bytes], limit: int) -> None:
    body = b"".join(chunks)
    if len(body) <= limit:
        assert await read_capped(streamed(Chunks(chunks)), limit, "x") == body
    else:
        with pytest.raises(BodyTooLargeError):
            await read_capped(streamed(Chunks(chunks)), limit, "x")


# --- _is_internal -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "internal"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("localhost.", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("169.254.169.254", True),  # cloud metadata
        ("fe80::1", True),
        ("0.0.0.0", True),
        ("::", True),
        ("reg.example", False),
        ("registry-1.docker.io", False),
        ("8.8.8.8", False),
        ("10.0.0.1", False),  # private networks are legitimate redirect targets (on-prem object stores)
        ("192.168.1.10", False),
        ("2001:db8::1", False),
        ("localhost.example", False),
        ("", False),
    ],
)
def test_is_internal_table(host: str, internal: bool) -> None:
    assert _is_internal(host) is internal


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.1", id="short-dotted"),
        pytest.param("2130706433", id="decimal"),
        pytest.param("0x7f.0.0.1", id="hex-octet"),
        pytest.param("0x7f000001", id="hex"),
        pytest.param("0", id="zero"),
        pytest.param("::ffff:127.0.0.1", id="ipv4-mapped-loopback"),
        pytest.param("::ffff:169.254.169.254", id="ipv4-mapped-metadata"),
    ],
)
def test_is_internal_sees_other_spellings_of_loopback(host: str) -> None:
    # httpx2 keeps these hosts verbatim (httpx2.URL(f"http://{host}/").host == host) and the resolver
    # (getaddrinfo / inet_aton) turns them into 127.0.0.1, 0.0.0.0 or the mapped address, so a redirect
    # from a plain-http registry to http://2130706433:port/ reaches loopback although _is_internal says no.
    assert httpx2.URL(f"http://{'[' + host + ']' if ':' in host else host}/").host == host
    assert _is_internal(host) is True


# --- TLS trust per pool ---------------------------------------------------------------------------------------

REGISTRY, BUCKET = "registry.example", "bucket.example"
BLOB = b"layer bytes"


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"), "pool test CA")


def _tls_options(ca: CertAuthority) -> ClientOptions:
    registries = {REGISTRY: RegistryConfig(ca_file=str(ca.cert_path))}
    return ClientOptions(use_docker_config=False, cert_dir_roots=(), registries=registries)


def _trusts(context: ssl.SSLContext, ca: CertAuthority) -> bool:
    return any(dict(item[0] for item in c["subject"]).get("commonName") == ca.name for c in context.get_ca_certs())


@pytest.fixture
def pool_contexts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Every pool the transport makes answers through a MockTransport that records (host, the pool's ``verify``):
    the registry redirects a blob GET to the bucket, which serves it."""
    seen: list[tuple[str, object]] = []
    real = httpx2.AsyncClient

    def answer(request: httpx2.Request, verify: object) -> httpx2.Response:
        seen.append((request.url.host, verify))
        if request.url.host == REGISTRY:
            return httpx2.Response(307, headers={"Location": f"https://{BUCKET}/blob?X-Signature=s"})
        return httpx2.Response(200, content=BLOB)

    def pool(**kwargs: Any) -> httpx2.AsyncClient:
        verify = kwargs["verify"]
        return real(**kwargs, transport=httpx2.MockTransport(lambda request: answer(request, verify)))

    monkeypatch.setattr(httpx2, "AsyncClient", pool)
    return seen


@pytest.mark.anyio
async def test_a_redirect_hop_gets_the_system_trust_not_the_registrys(
    private_ca: CertAuthority, pool_contexts: list[tuple[str, object]]
) -> None:
    from ocicopy.auth import Scopes

    async with Transport(_tls_options(private_ca)) as transport:
        url = transport.url(REGISTRY, "/v2/app/blobs/sha256:" + "a" * 64)
        async with transport.stream(
            "GET", REGISTRY, url, scopes=Scopes.pull("app"), expect={200}, follow_redirects=True
        ) as response:
            assert await response.aread() == BLOB
        system = transport._tls_context("elsewhere.example")
    (first, registry_ctx), (second, hop_ctx) = pool_contexts
    assert (first, second) == (REGISTRY, BUCKET)
    assert isinstance(registry_ctx, ssl.SSLContext) and _trusts(registry_ctx, private_ca)
    assert hop_ctx is system and not _trusts(system, private_ca)  # the shared system context


def test_plain_http_hosts_do_no_tls_work(private_ca: CertAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tls(*args: object) -> ssl.SSLContext:
        raise AssertionError("a TLS context was made for a plain-http host")

    monkeypatch.setattr(tls, "system_context", no_tls)
    monkeypatch.setattr(tls, "host_trust", no_tls)
    transport = Transport(ClientOptions(use_docker_config=False, plain_http=frozenset({"127.0.0.1:5000"})))
    transport._client(transport.url("127.0.0.1:5000", "/v2/"))
    assert transport._contexts == {} and transport._trusts == {}


@pytest.mark.anyio
async def test_new_trust_for_a_host_gets_it_a_new_pool(private_ca: CertAuthority) -> None:
    async with Transport(ClientOptions(use_docker_config=False, cert_dir_roots=())) as transport:
        before = transport._client(httpx2.URL(f"https://{REGISTRY}/v2/"))
        other = transport._client(httpx2.URL(f"https://{BUCKET}/"))
        transport.reconfigure(_tls_options(private_ca))
        after = transport._client(httpx2.URL(f"https://{REGISTRY}/v2/"))
        assert after is not before and transport._retired == [before]
        assert transport._client(httpx2.URL(f"https://{BUCKET}/")) is other  # its trust did not change
    assert before.is_closed


def test_ca_options_cannot_apply_to_a_given_http_client(private_ca: CertAuthority) -> None:
    with pytest.raises(InputError, match=f"ca_file/cert_dir for {REGISTRY} cannot apply to a given http_client"):
        Transport(_tls_options(private_ca), client=httpx2.AsyncClient())
