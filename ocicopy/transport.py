"""HTTP transport: one shared ``httpx2.AsyncClient``, the auth dance, retries, redirects, capped reads.

Every request names the registry host, a path built from validated values, and the :class:`Scopes` it needs.
The transport adds ``Authorization`` (basic or bearer, learnt from the registry's 401 challenge), retries what
:mod:`ocicopy.retry` calls retryable, follows redirects only where asked (blob GETs) and never carries
credentials to another host, and turns every unusable answer into a :class:`RegistryError` (status + spec
error codes + request, never a secret).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore2
import httpx2

from ocicopy.auth import (
    Challenge,
    HostAuthState,
    Scopes,
    Token,
    check_realm,
    parse_challenge,
    parse_token_response,
)
from ocicopy.credentials import Credentials, CredentialSource
from ocicopy.errors import (
    AuthenticationError,
    BodyTooLargeError,
    InsecureRequestError,
    NotFoundError,
    RegistryError,
    SpecError,
    TransportError,
)
from ocicopy.options import ClientOptions
from ocicopy.retry import is_retryable_status, parse_retry_after

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

# httpcore2 reads 64 KiB per socket receive; every piece then crosses h11, httpcore2, two anyio timeout scopes
# and an event-loop turn. 1 MiB reads cut the CPU of a streamed GET→PUT by about a third (benchmarks/README.md).
# A private attribute (httpcore2 1.0): set only where it exists, and it only raises the per-read maximum.
if isinstance(getattr(httpcore2.AsyncHTTP11Connection, "READ_NUM_BYTES", None), int):
    httpcore2.AsyncHTTP11Connection.READ_NUM_BYTES = max(httpcore2.AsyncHTTP11Connection.READ_NUM_BYTES, 1 << 20)


class BrokenBody(TransportError):
    """The connection broke while a body was being read (retryable, unlike an undecodable body)."""


def redact(url: httpx2.URL | str) -> str:
    """A URL safe to print: no userinfo, no query string (signed URLs carry secrets there)."""
    u = httpx2.URL(str(url))
    shown = f"{u.scheme}://{u.netloc.decode()}{u.path}"
    return shown + ("?…" if u.query else "")


async def read_capped(response: httpx2.Response, limit: int, what: str) -> bytes:
    """Read a streamed body into memory, aborting at ``limit + 1`` bytes whatever Content-Length says.

    The bytes are content-decoded (a gzip ``Content-Encoding`` is transport, not manifest content); the cap
    applies to the decoded stream, so a compression bomb is cut off too. Blobs never come through here.
    """
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(what, limit)
    buf = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            buf += chunk
            if len(buf) > limit:
                raise BodyTooLargeError(what, limit)
    except httpx2.HTTPError as exc:  # a broken (retryable) or undecodable (not) body
        request = response.request
        kind = BrokenBody if isinstance(exc, httpx2.TransportError) else TransportError
        raise kind(request.method, redact(request.url), f"reading {what}: {type(exc).__name__}") from None
    return bytes(buf)


async def _drain(response: httpx2.Response, limit: int) -> None:
    """Read a small unwanted body to its end, so the connection goes back to the pool (httpcore2 drops a
    connection whose response is closed unread); a body over ``limit`` is left and the connection dropped."""
    if response.is_stream_consumed:
        return
    seen = 0
    try:
        async for chunk in response.aiter_raw():
            seen += len(chunk)
            if seen > limit:
                return
    except httpx2.HTTPError:
        return


def parse_error_body(body: bytes) -> list[SpecError]:
    """The spec's ``{"errors": [{"code","message"}]}``; anything else yields no codes."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return []
    items = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return []
    return [
        SpecError(str(e.get("code", "")), str(e.get("message", ""))[:300])
        for e in items[:10]
        if isinstance(e, dict) and e.get("code")
    ]


@dataclass
class Stats:
    """Counters the engine reports: requests made and bytes moved, per host."""

    requests: dict[str, int] = field(default_factory=dict)

    def count(self, host: str) -> None:
        self.requests[host] = self.requests.get(host, 0) + 1

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class Transport:
    """Sends registry requests; owns auth state per host. Use as an async context manager."""

    def __init__(
        self,
        options: ClientOptions,
        credentials: CredentialSource | None = None,
        client: httpx2.AsyncClient | None = None,
    ) -> None:
        self.options = options
        self._credentials = credentials
        self._given = client
        self._clients: dict[str, httpx2.AsyncClient] = {}
        self._auth: dict[str, HostAuthState] = {}
        self._auth_locks: dict[str, anyio.Lock] = {}
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
        """The pool for ``url``'s scheme, made on first use.

        https always verifies TLS. The http pool is built without a TLS context (loading the CA bundle costs
        ~50 ms at start-up) and only ever sends http:// URLs: every request and redirect hop picks its pool
        by its own URL's scheme.
        """
        if self._given is not None:
            return self._given
        scheme = "https" if url.scheme == "https" else "http"
        if scheme not in self._clients:
            t = self.options.timeouts
            self._clients[scheme] = httpx2.AsyncClient(
                timeout=httpx2.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.pool),
                limits=httpx2.Limits(max_connections=128, max_keepalive_connections=64),
                follow_redirects=False,
                trust_env=True,
                verify=scheme == "https",
            )
        return self._clients[scheme]

    def url(self, host: str, path: str, params: Mapping[str, str] | None = None) -> httpx2.URL:
        scheme = "http" if self.options.is_plain_http(host) else "https"
        return httpx2.URL(f"{scheme}://{host}{path}", params=dict(params) if params else None)

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
        attempt = 0
        while True:
            attempt += 1
            try:
                with anyio.fail_after(self.options.timeouts.request):
                    async with self.stream(
                        method, host, url, scopes=scopes, expect=expect, headers=headers, content=content
                    ) as r:
                        if body_limit and method != "HEAD":
                            return r, await read_capped(r, body_limit, what)
                        await _drain(r, self.options.limits.error_body_bytes)
                        return r, b""
            except TimeoutError:
                raise TransportError(
                    method, redact(url), f"no complete answer within {self.options.timeouts.request:.0f} s"
                ) from None
            except BrokenBody:
                if attempt >= self.options.retry.attempts:
                    raise
                await anyio.sleep(self.options.retry.delay(attempt))

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
        policy = self.options.retry
        replayable = content is None or isinstance(content, bytes)
        started = time.monotonic()
        attempt, auth_retries = 0, 0
        while True:
            attempt += 1
            await self._host_pause(host)
            auth = await self._authorization(host, scopes)
            try:
                response = await self._send_once(method, host, url, {**headers, **auth}, content, follow_redirects)
            except httpx2.TransportError as exc:
                if not replayable or not self._may_retry(attempt, started) or _is_tls_error(exc):
                    raise self._transport_error(method, host, url, exc) from None
                await anyio.sleep(policy.delay(attempt))
                continue
            if response.status_code in expect:
                return response
            if response.status_code == 401 and replayable and auth_retries < 1:
                auth_retries += 1
                if await self._handle_401(host, response, scopes, had_auth=bool(auth)):
                    scopes = self._widened(host, response, scopes)
                    attempt -= 1  # a learnt challenge is not a failed try
                    continue
            body = await read_capped(response, self.options.limits.error_body_bytes, "error body")
            errors = parse_error_body(body)
            retryable = is_retryable_status(response.status_code, tuple(e.code for e in errors))
            if replayable and retryable and self._may_retry(attempt, started):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                wait = policy.delay(attempt, retry_after)
                await response.aclose()
                if retry_after is not None:  # the registry asked this client to wait: every request to the host
                    self._paused_until[host] = max(self._paused_until.get(host, 0.0), time.monotonic() + wait)
                else:
                    await anyio.sleep(wait)
                continue
            await response.aclose()
            challenge = parse_challenge(response.headers.get("www-authenticate"))
            raise self._registry_error(method, host, url, response.status_code, errors, scopes, challenge)

    async def _host_pause(self, host: str) -> None:
        """Wait while ``host`` asked for a pause (``Retry-After`` on a 429/503); the wait is capped by policy."""
        until = self._paused_until.get(host, 0.0)
        now = time.monotonic()
        if until > now:
            await anyio.sleep(until - now)

    def _may_retry(self, attempt: int, started: float) -> bool:
        policy = self.options.retry
        return attempt < policy.attempts and time.monotonic() - started < policy.deadline

    async def _send_once(
        self,
        method: str,
        host: str,
        url: httpx2.URL,
        headers: Mapping[str, str],
        content: bytes | AsyncIterable[bytes] | None,
        follow_redirects: bool,
    ) -> httpx2.Response:
        hdrs = {"User-Agent": self.options.user_agent, **headers}
        request = httpx2.Request(method, url, headers=hdrs, content=content)
        self.stats.count(host)
        response = await self._client(url).send(request, stream=True)
        hops = 0
        while follow_redirects and response.status_code in _REDIRECTS and "location" in response.headers:
            hops += 1
            target = self._redirect_target(url, response, hops)
            await response.aclose()
            # Credentials stay with the registry: a hop to another origin gets no Authorization (and httpx2 adds
            # no cookies to a hand-built request). ECR/S3/GCS signed URLs reject a second auth mechanism anyway.
            same_origin = (target.scheme, target.netloc) == (url.scheme, url.netloc)
            hop_headers = hdrs if same_origin else {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
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

    # -- auth ----------------------------------------------------------------------------------------------

    def _state(self, host: str) -> HostAuthState:
        return self._auth.setdefault(host, HostAuthState())

    async def _authorization(self, host: str, scopes: Scopes) -> dict[str, str]:
        state = self._state(host)
        challenge = state.challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = await self._creds(host)
            if creds is None:
                return {}
            raw = f"{creds.username}:{creds.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        token = state.token_for(scopes) or await self._fetch_token(host, scopes)
        return {"Authorization": f"Bearer {token.value}"}

    async def _handle_401(self, host: str, response: httpx2.Response, scopes: Scopes, had_auth: bool) -> bool:
        """Learn or refresh auth after a 401; True when the request should be sent again."""
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False
        state = self._state(host)
        if state.challenge is None:
            if challenge.scheme == "bearer":
                check_realm(challenge.realm or "", self.url(host, "/"))
            state.challenge = challenge
            return challenge.scheme == "bearer" or await self._creds(host) is not None
        if challenge.scheme == "bearer":
            if challenge.realm != state.challenge.realm:
                raise InsecureRequestError(f"registry {host} changed its token realm mid-session; refused")
            token = state.token_for(scopes)
            if token is not None:
                state.forget(token)  # expired or revoked early: fetch a new one once
            return True
        return not had_auth and await self._creds(host) is not None

    def _widened(self, host: str, response: httpx2.Response, scopes: Scopes) -> Scopes:
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        if challenge is not None and challenge.error == "insufficient_scope" and "scope" in challenge.params:
            return scopes.merge(Scopes.parse(challenge.params["scope"]))
        return scopes

    async def _fetch_token(self, host: str, scopes: Scopes) -> Token:
        lock = self._auth_locks.setdefault(host, anyio.Lock())
        async with lock:
            state = self._state(host)
            cached = state.token_for(scopes)
            if cached is not None:
                return cached
            assert state.challenge is not None
            token = await self._token_request(host, state.challenge, scopes)
            state.remember(token)
            return token

    async def _token_request(self, host: str, challenge: Challenge, scopes: Scopes) -> Token:
        realm = check_realm(challenge.realm or "", self.url(host, "/"))
        params: list[tuple[str, str]] = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in scopes.strings()]
        query: list[tuple[str, str | int | float | bool | None]] = list(params)
        creds = await self._creds(host)
        headers = {"User-Agent": self.options.user_agent, "Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": "ocicopy",
            }
            form.update(params)
            request = httpx2.Request("POST", realm, data=form | {"scope": " ".join(scopes.strings())}, headers=headers)
        else:
            if creds is not None:
                raw = f"{creds.username}:{creds.password}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
            request = httpx2.Request("GET", realm.copy_merge_params(query), headers=headers)
        return await self._exchange(host, request, scopes)

    async def _exchange(self, host: str, request: httpx2.Request, scopes: Scopes) -> Token:
        shown = redact(request.url)
        try:
            self.stats.count(request.url.netloc.decode())
            response = await self._client(request.url).send(request, stream=True)  # never follows redirects
        except httpx2.TransportError as exc:
            raise TransportError(request.method, shown, f"token request failed: {type(exc).__name__}") from None
        try:
            body = await read_capped(response, self.options.limits.token_body_bytes, "token response")
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise AuthenticationError(
                response.status_code,
                request.method,
                shown,
                parse_error_body(body),
                f"token request for {host} refused",
            )
        try:
            return parse_token_response(json.loads(body), scopes)
        except (ValueError, RecursionError) as exc:
            raise AuthenticationError(200, request.method, shown, (), f"unusable token response: {exc}") from None

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

    def _registry_error(
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
            needed = " ".join(scopes.strings()) if scopes is not None else ""
            hint = "authentication failed" if self._state(host).challenge is not None else ""
            if status == 401 and not self._creds_cache.get(host):
                hint = f"authentication required and no credentials are configured for {host}"
            elif (challenge is not None and challenge.error == "insufficient_scope") or status == 403:
                hint = f"access denied: the credentials for {host} do not grant {needed or 'this operation'}"
            elif status == 401:
                hint = f"credentials for {host} were rejected"
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
