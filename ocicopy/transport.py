"""HTTP transport: one ``httpx2.AsyncClient`` per scheme, auth (:class:`~ocicopy.auth.HostAuth`), retries,
redirects, capped reads.

Every request names the registry host, a path built from validated values, and the :class:`Scopes` it needs.
The transport runs the host's auth flow (``Authorization`` learnt from the registry's 401 challenge), retries
what :mod:`ocicopy.retry` calls retryable with one :class:`~ocicopy.retry.Retrying` loop, follows redirects only
where asked (blob GETs) and never carries credentials to another host, and turns every unusable answer into a
:class:`RegistryError` (status + spec error codes + request, never a secret).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore2
import httpx2

from ocicopy.auth import TOKEN_REQUEST, Challenge, HostAuth, Scopes, parse_challenge
from ocicopy.credentials import Credentials, CredentialSource
from ocicopy.errors import (
    AuthenticationError,
    BrokenBody,
    InsecureRequestError,
    NotFoundError,
    RegistryError,
    SpecError,
    TransportError,
)
from ocicopy.options import ClientOptions
from ocicopy.retry import NO_RETRY, Retrying, is_retryable_status, parse_retry_after
from ocicopy.wire import drain, parse_error_body, read_capped, redact

__all__ = ["Stats", "Transport", "parse_error_body", "read_capped", "redact"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# httpcore2 reads 64 KiB per socket receive; every piece then crosses h11, httpcore2, two anyio timeout scopes
# and an event-loop turn. 1 MiB reads cut the CPU of a streamed GET→PUT by about a third (benchmarks/README.md).
# A private attribute (httpcore 1.0, kept by httpcore2): set only where it exists; it only raises the per-read
# maximum.
if isinstance(getattr(httpcore2.AsyncHTTP11Connection, "READ_NUM_BYTES", None), int):
    httpcore2.AsyncHTTP11Connection.READ_NUM_BYTES = max(httpcore2.AsyncHTTP11Connection.READ_NUM_BYTES, 1 << 20)


@dataclass
class Stats:
    """Counters the engine reports: requests made, per host."""

    requests: dict[str, int] = field(default_factory=dict)

    def count(self, host: str) -> None:
        self.requests[host] = self.requests.get(host, 0) + 1

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class Transport:
    """Sends registry requests; owns one :class:`HostAuth` per host. Use as an async context manager."""

    def __init__(
        self,
        options: ClientOptions,
        credentials: CredentialSource | None = None,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.options = options
        self._credentials = credentials
        self._given = client
        self._clients: dict[tuple[str, str], httpx2.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None
        self._auth: dict[str, HostAuth] = {}
        self._creds_cache: dict[str, Credentials | None] = {}
        self._paused_until: dict[str, float] = {}
        self.stats = Stats()

    def reconfigure(self, options: ClientOptions) -> None:
        """Adopt new settings (e.g. a plan's registries); credentials are looked up again."""
        self.options = options
        self._creds_cache.clear()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in [self._given, *self._clients.values()]:
            if client is not None:
                await client.aclose()
        self._clients.clear()

    def _client(self, url: httpx2.URL) -> httpx2.AsyncClient:
        """The pool for ``url``'s scheme and host, made on first use.

        One pool per host: httpcore2 checks every idle connection of a pool whenever a request enters or leaves
        it (a socket poll each), so one pool shared by all hosts made each request pay for the others' idle
        connections (the profile of a mirror run: a third of its CPU). https always verifies TLS, with one TLS
        context for all hosts (loading the trust store costs ~50 ms); http pools have none and only ever send
        http:// URLs: every request and redirect hop picks its pool by its own URL.
        """
        if self._given is not None:
            return self._given
        scheme = "https" if url.scheme == "https" else "http"
        key = (scheme, url.netloc.decode())
        if key not in self._clients:
            t = self.options.timeouts
            self._clients[key] = httpx2.AsyncClient(
                timeout=httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.pool),
                limits=httpx2.Limits(max_connections=64, max_keepalive_connections=32),
                follow_redirects=False,
                trust_env=True,
                verify=self._tls_context() if scheme == "https" else False,
            )
        return self._clients[key]

    def _tls_context(self) -> ssl.SSLContext:
        """The verifying TLS context every https pool shares (the system's trust, ``SSL_CERT_FILE``/``_DIR``)."""
        if self._tls is None:
            self._tls = httpx2.create_ssl_context(verify=True, trust_env=True)
        return self._tls

    def url(self, host: str, path: str, params: Mapping[str, str] | None = None) -> httpx2.URL:
        scheme = "http" if self.options.is_plain_http(host) else "https"
        return httpx2.URL(f"{scheme}://{host}{path}", params=dict(params) if params else None)

    def auth(self, host: str) -> HostAuth:
        """The auth unit of ``host`` (challenge, tokens, credentials), made on first use."""
        if host not in self._auth:
            self._auth[host] = HostAuth(
                host,
                self.url(host, "/"),
                lambda: self._creds(host),
                user_agent=self.options.user_agent,
                token_body_limit=self.options.limits.token_body_bytes,
            )
        return self._auth[host]

    # -- public verbs -------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        host: str,
        url: httpx2.URL,
        *,
        scopes: Scopes,
        expect: Collection[int],
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        body_limit: int = 0,
        what: str = "response",
    ) -> tuple[httpx2.Response, bytes]:
        """Send a request whose body (if any) is replayable; return the answer and its capped body.

        An answer whose body breaks mid-way is asked again, under the same retry policy.
        """
        async for attempt in Retrying(self.options.retry):
            try:
                with anyio.fail_after(self.options.timeouts.request):
                    async with self.stream(
                        method, host, url, scopes=scopes, expect=expect, headers=headers, content=content
                    ) as r:
                        if body_limit and method != "HEAD":
                            return r, await read_capped(r, body_limit, what)
                        await drain(r, self.options.limits.error_body_bytes)
                        return r, b""
            except TimeoutError:
                raise TransportError(
                    method, redact(url), f"no complete answer within {self.options.timeouts.request:.0f} s"
                ) from None
            except BrokenBody as exc:
                attempt.retry(exc)
        raise AssertionError("unreachable: every try returns or raises")

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        host: str,
        url: httpx2.URL,
        *,
        scopes: Scopes,
        expect: Collection[int],
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        follow_redirects: bool = False,
    ) -> AsyncIterator[httpx2.Response]:
        """Send a request and yield the streamed answer (closed on exit).

        A streamed ``content`` cannot be replayed, so such a request is tried once (the caller owns retries);
        the auth challenge must have been learnt before (uploads start with a POST, which learns it).
        """
        response = await self._send(method, host, url, scopes, expect, headers or {}, content, follow_redirects)
        try:
            yield response
        finally:
            await response.aclose()

    # -- the loop ------------------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        host: str,
        url: httpx2.URL,
        scopes: Scopes,
        expect: Collection[int],
        headers: Mapping[str, str],
        content: bytes | AsyncIterable[bytes] | None,
        follow_redirects: bool,
    ) -> httpx2.Response:
        replayable = content is None or isinstance(content, bytes)
        async for attempt in Retrying(self.options.retry if replayable else NO_RETRY):
            await self._host_pause(host)
            hdrs = {"User-Agent": self.options.user_agent, **headers}
            request = httpx2.Request(method, url, headers=hdrs, content=content)
            try:
                response = await self._authorized(host, request, scopes, replayable, follow_redirects)
            except httpx2.TransportError as exc:
                failure = self._transport_error(method, host, url, exc)
                if _is_tls_error(exc):
                    raise failure from None
                attempt.retry(failure)
                continue
            if response.status_code in expect:
                return response
            body = await read_capped(response, self.options.limits.error_body_bytes, "error body")
            await response.aclose()
            errors = parse_error_body(body)
            challenge = parse_challenge(response.headers.get("www-authenticate"))
            error = await self._registry_error(method, host, url, response.status_code, errors, scopes, challenge)
            if not is_retryable_status(response.status_code, tuple(e.code for e in errors)):
                raise error
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            attempt.retry(error, retry_after)
            if retry_after is not None:  # the registry asked this client to wait: every request to the host
                self._paused_until[host] = max(self._paused_until.get(host, 0.0), time.monotonic() + attempt.wait)
                attempt.wait = 0.0
        raise AssertionError("unreachable: every try returns or raises")

    async def _authorized(
        self, host: str, request: httpx2.Request, scopes: Scopes, replayable: bool, follow_redirects: bool
    ) -> httpx2.Response:
        """Run the host's auth flow for ``request``: the answer to the last request it yields."""
        flow = self.auth(host).flow(request, scopes, replayable=replayable)
        try:
            pending = await flow.__anext__()
            while True:
                if pending.extensions.get(TOKEN_REQUEST):
                    response = await self._token_exchange(host, pending)
                else:
                    response = await self._send_once(host, pending, follow_redirects)
                try:
                    pending = await flow.asend(response)
                except StopAsyncIteration:
                    return response
        finally:
            await flow.aclose()  # releases the host's token lock if a token request failed

    async def _token_exchange(self, host: str, request: httpx2.Request) -> httpx2.Response:
        """Send a token request (never following redirects: a token service that redirects is refused)."""
        try:
            self.stats.count(request.url.netloc.decode())
            return await self._client(request.url).send(request, stream=True)
        except httpx2.TransportError as exc:
            raise self.auth(host).token_failed(request, exc) from None

    async def _host_pause(self, host: str) -> None:
        """Wait while ``host`` asked for a pause (``Retry-After`` on a 429/503; the wait is capped by policy)."""
        until = self._paused_until.get(host, 0.0)
        now = time.monotonic()
        if until > now:
            await anyio.sleep(until - now)

    async def _send_once(self, host: str, request: httpx2.Request, follow_redirects: bool) -> httpx2.Response:
        self.stats.count(host)
        url = request.url
        response = await self._client(url).send(request, stream=True)
        hops = 0
        while follow_redirects and response.status_code in _REDIRECTS and "location" in response.headers:
            hops += 1
            target = self._redirect_target(url, response, hops)
            await response.aclose()
            # Credentials stay with the registry: a hop to another origin gets no Authorization (and httpx2 adds
            # no cookies to a hand-built request). ECR/S3/GCS signed URLs reject a second auth mechanism anyway.
            same_origin = (target.scheme, target.netloc) == (url.scheme, url.netloc)
            hop_headers = {k: v for k, v in request.headers.items() if same_origin or k.lower() != "authorization"}
            self.stats.count(target.netloc.decode())
            hop = httpx2.Request("GET", target, headers=hop_headers)
            response = await self._client(target).send(hop, stream=True)
            url = target
        return response

    def _redirect_target(self, url: httpx2.URL, response: httpx2.Response, hops: int) -> httpx2.URL:
        if hops > self.options.limits.max_redirects:
            raise InsecureRequestError(f"too many redirects from {redact(url)}")
        target = url.join(response.headers["location"])
        if target.scheme not in ("http", "https"):
            raise InsecureRequestError(f"redirect from {redact(url)} to a non-http URL refused")
        if url.scheme == "https" and target.scheme == "http":
            raise InsecureRequestError(f"redirect from {redact(url)} to plain http ({redact(target)}) refused")
        if _is_internal(target.host) and not _is_internal(url.host):
            raise InsecureRequestError(f"redirect from {redact(url)} to an internal address refused")
        return target

    async def _creds(self, host: str) -> Credentials | None:
        if host not in self._creds_cache:
            conf = self.options.registry(host)
            if conf.username is not None and conf.password is not None:
                self._creds_cache[host] = Credentials(conf.username, conf.password.get_secret_value())
            elif self._credentials is not None:
                self._creds_cache[host] = await self._credentials.get(host)
            else:
                self._creds_cache[host] = None
        return self._creds_cache[host]

    # -- errors ----------------------------------------------------------------------------------------------

    async def _registry_error(
        self,
        method: str,
        host: str,
        url: httpx2.URL,
        status: int,
        errors: list[SpecError],
        scopes: Scopes | None = None,
        challenge: Challenge | None = None,
    ) -> RegistryError:
        shown = redact(url)
        codes = {e.code for e in errors}
        if status in (401, 403) or codes & {"UNAUTHORIZED", "DENIED"}:
            hint = await self.auth(host).refusal_hint(status, challenge, scopes)
            return AuthenticationError(status, method, shown, errors, hint)
        if status == 404 or codes & {"MANIFEST_UNKNOWN", "BLOB_UNKNOWN", "NAME_UNKNOWN"}:
            return NotFoundError(status, method, shown, errors)
        return RegistryError(status, method, shown, errors)

    def _transport_error(self, method: str, host: str, url: httpx2.URL, exc: Exception) -> TransportError:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if _is_tls_error(exc) and url.scheme == "https":
            reason += f" (if {host} speaks plain HTTP, mark it with --plain-http {host})"
        return TransportError(method, redact(url), reason)


def _is_tls_error(exc: BaseException) -> bool:
    text = f"{exc!r} {exc.__cause__!r} {exc.__context__!r}"
    return "SSL" in text or "CERTIFICATE" in text.upper()


def _is_internal(host: str) -> bool:
    """Loopback, link-local or unspecified IP literal (or ``localhost``): a redirect must not pivot there."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost.") or host.endswith(".localhost"):
        return True
    try:
        ip: Any = ipaddress.ip_address(host)
    except ValueError:
        try:  # the resolver also takes 127.1, 2130706433, 0x7f000001, 0x7f.0.0.1
            ip = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_loopback or ip.is_link_local or ip.is_unspecified)
