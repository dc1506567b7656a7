"""HTTP transport: one ``httpx2.AsyncClient`` per host, auth (:class:`~ocicopy.auth.HostAuth`), retries,
redirects, capped reads, TLS trust per host (:mod:`ocicopy.tls`).

Every request names the registry host, a path built from validated values, and the :class:`Scopes` it needs.
The transport runs the host's auth flow (``Authorization`` learnt from the registry's 401 challenge), retries
what :mod:`ocicopy.retry` calls retryable with one :class:`~ocicopy.retry.Retrying` loop (a quota spent for
hours is not retried), keeps each host's requests in flight under its adaptive limit and notes the pull quota its
answers announce (:mod:`ocicopy.ratelimit`), follows redirects only
where asked (blob GETs) and never carries credentials to another host, and turns every unusable answer into a
:class:`RegistryError` (status + spec error codes + request, never a secret).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpcore2
import httpx2

from ocicopy import tls
from ocicopy.auth import TOKEN_REQUEST, Challenge, HostAuth, Scopes, parse_challenge
from ocicopy.credentials import Credentials, CredentialSource
from ocicopy.ecr import EcrAccounts, ecr_target
from ocicopy.errors import (
    AuthenticationError,
    BrokenBody,
    InputError,
    InsecureRequestError,
    NotFoundError,
    QuotaExhaustedError,
    RegistryError,
    SpecError,
    TLSError,
    TransportError,
)
from ocicopy.options import ClientOptions, EcrConfig
from ocicopy.ratelimit import PRESSURE, AdaptiveLimit, Quota, exhausted, parse_rate_limit
from ocicopy.result import RegistryStats
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
    """Counters the engine reports, per host: requests made, retries, answers saying "slow down" (429/503)."""

    requests: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)

    def count(self, host: str, counter: str = "requests") -> None:
        counts: dict[str, int] = getattr(self, counter)
        counts[host] = counts.get(host, 0) + 1

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def snapshot(self) -> Stats:
        return Stats(dict(self.requests), dict(self.retries), dict(self.throttled))


class Transport:
    """Sends registry requests; owns one :class:`HostAuth` per host. Use as an async context manager.

    A given ``client`` is used for every request as it is: its TLS settings are its own, so a registry's
    ``ca_file``/``cert_dir`` cannot apply (an :class:`InputError`) and the certs.d directories are not read.
    """

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
        self._retired: list[httpx2.AsyncClient] = []
        self._trusts: dict[str, tls.HostTrust] = self._explicit_trust(options)
        self._contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._auth: dict[str, HostAuth] = {}
        self._creds_cache: dict[str, Credentials | None] = {}
        self._paused_until: dict[str, float] = {}
        self._adaptive: dict[str, AdaptiveLimit] = {}
        self._quotas: dict[str, Quota] = {}
        self.stats = Stats()
        self.ecr = EcrAccounts()  # Amazon ECR's API (tokens, repositories), for hosts that are ECR
        #: told ``(host, new limit)`` after each cut of a host's adaptive limit (a Dask worker tells its peers)
        self.on_cut: Callable[[str, int], None] | None = None

    def reconfigure(self, options: ClientOptions) -> None:
        """Adopt new settings (e.g. a plan's registries); credentials are looked up again, and a host whose TLS
        trust changed gets a new pool (the old one is closed with the transport: requests in flight finish)."""
        trusts = self._explicit_trust(options)
        self.options = options
        self._creds_cache.clear()
        before, self._trusts = self._trusts, trusts
        for host, trust in before.items():
            if self._trust(host).key != trust.key and (pool := self._clients.pop(("https", host), None)):
                self._retired.append(pool)

    def _explicit_trust(self, options: ClientOptions) -> dict[str, tls.HostTrust]:
        """The trust of every https host with a ``ca_file`` or ``cert_dir``, its files checked now (no system
        store loaded): a bad file is an :class:`InputError` before any request."""
        explicit = {
            host: conf
            for host, conf in options.registries.items()
            if (conf.ca_file or conf.cert_dir) and not options.is_plain_http(host)
        }
        if explicit and self._given is not None:
            raise InputError(
                f"ca_file/cert_dir for {', '.join(sorted(explicit))} cannot apply to a given http_client "
                "(its TLS settings are its own)"
            )
        trusts = {}
        for host, conf in explicit.items():
            trusts[host] = tls.host_trust(host, options.cert_dir_roots, ca_file=conf.ca_file, cert_dir=conf.cert_dir)
            tls.check(trusts[host])
        return trusts

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in [self._given, *self._clients.values(), *self._retired]:
            if client is not None:
                await client.aclose()
        self._clients.clear()
        self._retired.clear()

    def _client(self, url: httpx2.URL) -> httpx2.AsyncClient:
        """The pool for ``url``'s scheme and host, made on first use.

        One pool per host: httpcore2 checks every idle connection of a pool whenever a request enters or leaves
        it (a socket poll each), so one pool shared by all hosts made each request pay for the others' idle
        connections (the profile of a mirror run: a third of its CPU). https always verifies TLS, with the host's
        own context (:meth:`_tls_context`); http pools have none and only ever send http:// URLs. Every request
        and redirect hop picks its pool by its own URL, so a host's extra trust never reaches another host.
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
                verify=self._tls_context(key[1]) if scheme == "https" else False,
            )
        return self._clients[key]

    def _tls_context(self, host: str) -> ssl.SSLContext:
        """``host``'s verifying context, made on first use: the system trust plus the host's own (certs.d,
        ``cert_dir``, ``ca_file``). Hosts with the same extra trust (most: none) share one context: loading the
        system store costs ~50 ms."""
        trust = self._trust(host)
        if trust.key not in self._contexts:
            self._contexts[trust.key] = tls.context(trust)
        return self._contexts[trust.key]

    def _trust(self, host: str) -> tls.HostTrust:
        """What ``host`` is trusted with beyond the system store (its files read on first use)."""
        if host not in self._trusts:
            conf = self.options.registry(host)
            roots = self.options.cert_dir_roots
            self._trusts[host] = tls.host_trust(host, roots, ca_file=conf.ca_file, cert_dir=conf.cert_dir)
        return self._trusts[host]

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

    def ecr_config(self, host: str) -> EcrConfig | None:
        """The ECR registry ``host`` is: its explicit ``ecr`` setting, else what its name says; None: not ECR."""
        return self.options.registry(host).ecr or ecr_target(host)

    def quota(self, host: str) -> Quota:
        """``host``'s pull quota as its answers announce it (:mod:`ocicopy.ratelimit`)."""
        if host not in self._quotas:
            self._quotas[host] = Quota(host)
        return self._quotas[host]

    def adaptive(self, host: str) -> AdaptiveLimit:
        """``host``'s in-flight limit: halved on 429/503, grown back on success."""
        if host not in self._adaptive:
            limit = self._adaptive[host] = AdaptiveLimit(self.options.limits.in_flight)
            limit.on_cut = lambda current: self.on_cut(host, current) if self.on_cut is not None else None
        return self._adaptive[host]

    def registry_stats(self, since: Stats) -> dict[str, RegistryStats]:
        """Per host, what was asked since ``since`` (a :meth:`Stats.snapshot`), with its quota and lowest limit."""
        out: dict[str, RegistryStats] = {}
        for host, count in sorted(self.stats.requests.items()):
            requests = count - since.requests.get(host, 0)
            if requests <= 0:
                continue
            throttled = self.stats.throttled.get(host, 0) - since.throttled.get(host, 0)
            limit = self._adaptive.get(host)
            peer_cuts = limit.peer_cuts if limit is not None else 0
            quota = self._quotas.get(host)
            out[host] = RegistryStats(
                requests=requests,
                retries=self.stats.retries.get(host, 0) - since.retries.get(host, 0),
                throttled=throttled,
                peer_cuts=peer_cuts,
                rate_limit=quota.last if quota is not None else None,
                lowest_concurrency=limit.lowest if limit is not None and (throttled or peer_cuts) else None,
            )
        return out

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
                self.stats.count(host, "retries")
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
            if attempt.number > 1:
                self.stats.count(host, "retries")
            await self._host_pause(host)
            hdrs = {"User-Agent": self.options.user_agent, **headers}
            request = httpx2.Request(method, url, headers=hdrs, content=content)
            async with self.adaptive(host).slot() as slot:
                try:
                    response = await self._authorized(host, request, scopes, replayable, follow_redirects)
                except httpx2.TransportError as exc:  # TLS failures are not: _pool_send made them ours (not retried)
                    attempt.retry(_transport_error(method, url, exc))
                    continue
                slot.answered(response.status_code)
            quota = parse_rate_limit(response.headers)
            if quota is not None:
                self.quota(host).observe(quota)
            if response.status_code in expect:
                return response
            body = await read_capped(response, self.options.limits.error_body_bytes, "error body")
            await response.aclose()
            errors = parse_error_body(body)
            if _https_only(response, body):
                raise RegistryError(400, method, redact(url), errors, f"{host} speaks https: drop --plain-http {host}")
            challenge = parse_challenge(response.headers.get("www-authenticate"))
            error = await self._registry_error(method, host, url, response.status_code, errors, scopes, challenge)
            if response.status_code in PRESSURE:
                self.stats.count(host, "throttled")
            if not is_retryable_status(response.status_code, tuple(e.code for e in errors)):
                raise error
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            spent = exhausted(host, response.status_code, quota, retry_after, self.options.retry.max_retry_after)
            if spent is not None:  # a quota spent for hours: waiting minutes would not help (Docker Hub: 6 h)
                raise QuotaExhaustedError(response.status_code, method, redact(url), errors, spent)
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
            via = "" if request.url.netloc.decode() == host else f"the token service of {host}"
            return await self._pool_send(request, via=via)
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
        response = await self._pool_send(request)
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
            response = await self._pool_send(hop, via="" if same_origin else f"a redirect from {host}")
            url = target
        return response

    async def _pool_send(self, request: httpx2.Request, via: str = "") -> httpx2.Response:
        """Send ``request`` on its own URL's pool. A failed TLS handshake is a :class:`TLSError` (not
        retried) saying what it means for that host (``via``: how it was reached, when it is not the registry)."""
        try:
            return await self._client(request.url).send(request, stream=True)
        except (httpx2.TransportError, ssl.SSLError) as exc:
            host = request.url.netloc.decode()
            error = tls.find_ssl_error(exc)
            if error is not None:
                reason = tls.explain(error, host, self._trust(host), self.options.cert_dir_roots, via=via)
                raise TLSError(request.method, redact(request.url), reason) from None
            if isinstance(exc, ssl.SSLError):  # an EOF that escaped httpcore2: a broken connection (retried)
                raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            if isinstance(exc, httpx2.ReadError) and (cert := self._client_cert(request.url)):
                # TLS 1.3: a server refuses our certificate after our side of the handshake is done; a server
                # that resets the connection at once loses its alert (Go's, about one time in three)
                raise httpx2.ReadError(
                    f"{exc or 'connection reset'} ({tls.reset_hint(host, cert)})", request=request
                ) from exc
            raise

    def _client_cert(self, url: httpx2.URL) -> tls.ClientCert | None:
        """The client certificate presented to ``url``'s host, if any."""
        if url.scheme != "https" or self._given is not None:
            return None
        return self._trust(url.netloc.decode()).client_cert

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
        found = self._creds_cache[host]
        if found is None and (ecr := self.ecr_config(host)) is not None:
            # no docker credential (nor helper) covers this ECR host: its token from the AWS chain, asked each time
            # (EcrAccounts holds it until shortly before its 12-hour expiry: a long run gets a fresh one)
            return await self.ecr.credentials(ecr)
        return found

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
            hint = ""
            ecr = self.ecr_config(host)
            if "NAME_UNKNOWN" in codes and method in ("POST", "PUT", "PATCH") and ecr is not None:
                # Amazon ECR creates no repository on push (REGISTRY-QUIRKS.md, "Amazon ECR"); with
                # create_repositories on, the repository was made or found before this push: it is gone since
                hint = (
                    "ECR has no such repository, though this run made or found it: removed meanwhile? (the next "
                    "run makes it again)"
                    if self.ecr.ensured_any(ecr)
                    else "ECR creates no repository on push: set create_repositories: true (or --create-repositories)"
                )
            return NotFoundError(status, method, shown, errors, hint)
        return RegistryError(status, method, shown, errors)


def _https_only(response: httpx2.Response, body: bytes) -> bool:
    """The answer of an https server to plain http: Go's net/http (distribution, Harbor, Zot) writes a bare
    ``HTTP/1.0 400`` without headers, then "Client sent an HTTP request to an HTTPS server." (unseen on a HEAD)."""
    if response.status_code != 400 or response.request.url.scheme != "http":
        return False
    return b"Client sent an HTTP request to an HTTPS server" in body or not response.headers


def _transport_error(method: str, url: httpx2.URL, exc: Exception) -> TransportError:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportError(method, redact(url), reason)


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
