"""Registry authentication: challenges, scopes, token answers (pure), and :class:`HostAuth`, the auth of one
registry host as one unit (challenge, token cache, credentials) with an httpx-style flow.

The flow (distribution "Token Authentication Specification"): a request answered 401 carries
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` (or ``Basic``). For Bearer, ocicopy asks the realm
for a token covering *every* scope the operation needs (a mount needs ``pull`` on the source repository and
``pull,push`` on the destination: one token request), caches it until shortly before it expires, and retries
the request once. The realm is checked before any credential is sent to it (see :func:`check_realm`) and is
pinned per registry for the session: a registry that changes its realm mid-session is refused.

:meth:`HostAuth.flow` sends nothing itself (after httpx's ``Auth.auth_flow``): it yields the requests to send
(the request with its ``Authorization``, and a token request when one is needed) and receives their answers,
so the whole dance is tested with in-memory responses; :class:`~ocicopy.transport.Transport` drives it.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import anyio
import httpx2

from ocicopy.credentials import Credentials
from ocicopy.errors import AuthenticationError, InsecureRequestError, SpecError, TransportError
from ocicopy.wire import drain, parse_error_body, read_capped, redact

PULL: Final = frozenset({"pull"})
PUSH: Final = frozenset({"pull", "push"})
DEFAULT_TOKEN_TTL: Final = 60.0  # distribution token spec: expires_in defaults to 60 s
REFRESH_MARGIN: Final = 10.0

_PARAM_RE: Final = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # lower-case: "bearer" or "basic"
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse a ``WWW-Authenticate`` value (single challenge, as registries send); None if unusable."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if not scheme or len(header) > 4096:
        return None
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)


@dataclass(frozen=True)
class Scopes:
    """Repository scopes an operation needs: ``{repository: actions}``; merged, sorted, hashable."""

    items: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def of(cls, mapping: Mapping[str, Iterable[str]]) -> Scopes:
        return cls(tuple(sorted((repo, frozenset(actions)) for repo, actions in mapping.items())))

    @classmethod
    def pull(cls, repository: str) -> Scopes:
        return cls.of({repository: PULL})

    @classmethod
    def push(cls, repository: str) -> Scopes:
        return cls.of({repository: PUSH})

    def merge(self, other: Scopes) -> Scopes:
        merged: dict[str, set[str]] = {}
        for repo, actions in (*self.items, *other.items):
            merged.setdefault(repo, set()).update(actions)
        return Scopes.of(merged)

    def covers(self, other: Scopes) -> bool:
        mine = dict(self.items)
        return all(actions <= mine.get(repo, frozenset()) for repo, actions in other.items)

    def strings(self) -> list[str]:
        """``repository:<name>:<actions>`` strings for the token request, actions sorted."""
        return [f"repository:{repo}:{','.join(sorted(actions))}" for repo, actions in self.items]

    @classmethod
    def parse(cls, scope: str) -> Scopes:
        """Parse a challenge's ``scope`` parameter (space-separated ``repository:name:actions``)."""
        found: dict[str, set[str]] = {}
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and name:
                found.setdefault(name, set()).update(a for a in actions.split(",") if a)
        return Scopes.of(found)


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    scopes: Scopes
    expires_at: float  # time.monotonic() based

    def fresh(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) < self.expires_at - REFRESH_MARGIN


def _header_safe(value: str) -> bool:
    """Printable ASCII without spaces: what can go in an ``Authorization`` header."""
    return value.isascii() and value.isprintable() and not any(c.isspace() for c in value)


def parse_token_response(body: object, scopes: Scopes, now: float | None = None) -> Token:
    """Read a token endpoint answer: ``token`` or ``access_token``; ``expires_in`` defaults to 60 s."""
    if not isinstance(body, dict):
        raise ValueError("token response is not a JSON object")
    value = body.get("token") or body.get("access_token")
    if not isinstance(value, str) or not value or len(value) > 16384 or not _header_safe(value):
        raise ValueError("token response has no usable token")
    ttl = body.get("expires_in")
    lifetime = (
        float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0 else DEFAULT_TOKEN_TTL
    )
    lifetime = max(lifetime, REFRESH_MARGIN + 1)
    return Token(value, scopes, (now if now is not None else time.monotonic()) + lifetime)


def check_realm(realm: str, registry_url: httpx2.URL) -> httpx2.URL:
    """Validate a token realm before credentials are sent to it.

    The realm must be an absolute https URL (http only when the registry itself was marked plain-HTTP), and
    must carry no userinfo. A malicious registry could otherwise point it anywhere to collect credentials.
    """
    try:
        url = httpx2.URL(realm)
    except (httpx2.InvalidURL, TypeError) as exc:
        raise InsecureRequestError(f"registry {registry_url.netloc.decode()} sent an invalid token realm") from exc
    host = registry_url.netloc.decode()
    if url.scheme not in ("https", "http") or not url.host:
        raise InsecureRequestError(f"registry {host} sent a token realm that is not an absolute http(s) URL")
    if url.scheme == "http" and registry_url.scheme != "http":
        raise InsecureRequestError(f"registry {host} asks for credentials over plain http ({url.host}); refused")
    if url.userinfo:
        raise InsecureRequestError(f"registry {host} sent a token realm with embedded userinfo; refused")
    return url.copy_with(query=None, fragment=None) if not url.query else url


@dataclass
class HostAuthState:
    """What ocicopy knows about one registry's auth: its challenge (pinned realm) and cached tokens."""

    challenge: Challenge | None = None
    tokens: list[Token] = field(default_factory=list)

    def token_for(self, scopes: Scopes) -> Token | None:
        now = time.monotonic()
        self.tokens = [t for t in self.tokens if t.fresh(now)]
        for token in self.tokens:
            if token.scopes.covers(scopes):
                return token
        return None

    def forget(self, token: Token) -> None:
        self.tokens = [t for t in self.tokens if t is not token]

    def remember(self, token: Token) -> None:
        self.tokens = [t for t in self.tokens if not token.scopes.covers(t.scopes)] + [token]


#: Marks a request a flow yields to ask the token service (not the registry) for a token.
TOKEN_REQUEST: Final = "ocicopy.token_request"  # noqa: S105 (an extension key, not a secret)
#: The flow of one request: yields requests to send, receives their answers; the last answer is the result.
Flow = AsyncGenerator[httpx2.Request, httpx2.Response]


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


class HostAuth:
    """The auth of one registry host: its challenge (pinned realm), cached tokens and credentials.

    ``credentials`` looks them up (explicit settings, the docker config, a credential helper; the caller caches);
    ``registry_url`` is the host's base URL (its scheme decides whether a plain-http realm is acceptable).
    """

    def __init__(
        self,
        host: str,
        registry_url: httpx2.URL,
        credentials: Callable[[], Awaitable[Credentials | None]],
        *,
        user_agent: str = "ocicopy",
        token_body_limit: int = 64 * 1024,
    ) -> None:
        self.host = host
        self.registry_url = registry_url
        self.state = HostAuthState()
        self._credentials = credentials
        self._user_agent = user_agent
        self._token_body_limit = token_body_limit
        self._lock = anyio.Lock()  # one token request at a time per host: the others then find it cached

    @property
    def challenge(self) -> Challenge | None:
        return self.state.challenge

    async def credentials(self) -> Credentials | None:
        return await self._credentials()

    async def flow(self, request: httpx2.Request, scopes: Scopes, *, replayable: bool = True) -> Flow:
        """Authorize ``request`` for ``scopes``; on a 401, learn or refresh the auth and send it once more.

        The driver must close the flow (``aclose``) when it stops early: a token request is in flight under the
        host's token lock.
        """
        for last in (False, True):
            challenge = self.state.challenge
            if challenge is not None and challenge.scheme == "basic":
                creds = await self._credentials()
                if creds is not None:
                    request.headers["Authorization"] = basic_header(creds)
            elif challenge is not None:
                token = self.state.token_for(scopes)
                if token is None:
                    async with self._lock:  # the others waiting here then find it cached
                        token = self.state.token_for(scopes)
                        if token is None:
                            token_request = await self.token_request(challenge, scopes)
                            answer = yield token_request
                            token = await self.read_token(token_request, answer, scopes)
                            self.state.remember(token)
                request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
            if last or response.status_code != 401 or not replayable:
                return
            retry, scopes = await self._after_401(response, scopes, had_auth="authorization" in request.headers)
            if not retry:
                return
            await drain(response, 64 * 1024)  # read to its end: the connection goes back to the pool
            await response.aclose()
            request = _resend(request)

    async def _after_401(self, response: httpx2.Response, scopes: Scopes, had_auth: bool) -> tuple[bool, Scopes]:
        """Learn or refresh auth after a 401: whether to send again, and with which scopes."""
        challenge = parse_challenge(response.headers.get("www-authenticate"))
        if challenge is None or challenge.scheme not in ("basic", "bearer"):
            return False, scopes
        state = self.state
        if state.challenge is None:
            if challenge.scheme == "bearer":
                check_realm(challenge.realm or "", self.registry_url)
            state.challenge = challenge
            retry = challenge.scheme == "bearer" or await self._credentials() is not None
            return retry, _widened(challenge, scopes)
        if challenge.scheme == "bearer":
            if challenge.realm != state.challenge.realm:
                raise InsecureRequestError(f"registry {self.host} changed its token realm mid-session; refused")
            token = state.token_for(scopes)
            if token is not None:
                state.forget(token)  # expired or revoked early: fetch a new one once
            return True, _widened(challenge, scopes)
        return not had_auth and await self._credentials() is not None, scopes

    async def token_request(self, challenge: Challenge, scopes: Scopes) -> httpx2.Request:
        """The request to the (validated) realm for a token covering ``scopes``: a GET with basic credentials, or a
        POST with the identity token (OAuth2 refresh_token grant) when the credentials carry one."""
        realm = check_realm(challenge.realm or "", self.registry_url)
        params: list[tuple[str, str]] = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in scopes.strings()]
        creds = await self._credentials()
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        if creds is not None and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token, "client_id": "ocicopy"}
            form.update(params)
            data = form | {"scope": " ".join(scopes.strings())}
            request = httpx2.Request("POST", realm, data=data, headers=headers, extensions={TOKEN_REQUEST: True})
        else:
            if creds is not None:
                headers["Authorization"] = basic_header(creds)
            query: list[tuple[str, str | int | float | bool | None]] = list(params)
            url = realm.copy_merge_params(query)
            request = httpx2.Request("GET", url, headers=headers, extensions={TOKEN_REQUEST: True})
        return request

    async def read_token(self, request: httpx2.Request, response: httpx2.Response, scopes: Scopes) -> Token:
        """The token in the realm's answer, or an :class:`AuthenticationError` saying why there is none."""
        shown = redact(request.url)
        try:
            body = await read_capped(response, self._token_body_limit, "token response")
        finally:
            await response.aclose()
        if response.status_code != 200:
            errors: list[SpecError] = parse_error_body(body)
            raise AuthenticationError(
                response.status_code, request.method, shown, errors, f"token request for {self.host} refused"
            )
        try:
            return parse_token_response(json.loads(body), scopes)
        except (ValueError, RecursionError) as exc:
            raise AuthenticationError(200, request.method, shown, (), f"unusable token response: {exc}") from None

    def token_failed(self, request: httpx2.Request, exc: Exception) -> TransportError:
        return TransportError(request.method, redact(request.url), f"token request failed: {type(exc).__name__}")

    async def refusal_hint(self, status: int, challenge: Challenge | None, scopes: Scopes | None) -> str:
        """Why a 401/403 happened, for the error message (never a secret)."""
        needed = " ".join(scopes.strings()) if scopes is not None else ""
        if status == 401 and await self._credentials() is None:
            return f"authentication required and no credentials are configured for {self.host}"
        if (challenge is not None and challenge.error == "insufficient_scope") or status == 403:
            return f"access denied: the credentials for {self.host} do not grant {needed or 'this operation'}"
        if status == 401:
            return f"credentials for {self.host} were rejected"
        return "authentication failed" if self.state.challenge is not None else ""


def _resend(request: httpx2.Request) -> httpx2.Request:
    """A new request like ``request`` (its body is replayable bytes), without its ``Authorization``."""
    headers = {k: v for k, v in request.headers.items() if k.lower() not in ("authorization", "content-length")}
    return httpx2.Request(request.method, request.url, headers=headers, content=request.content)


def _widened(challenge: Challenge, scopes: Scopes) -> Scopes:
    """``scopes`` plus what an ``insufficient_scope`` challenge names."""
    if challenge.error == "insufficient_scope" and "scope" in challenge.params:
        return scopes.merge(Scopes.parse(challenge.params["scope"]))
    return scopes
