"""Registry authentication: challenges, scopes, token answers (pure) and the per-host token cache.

The flow (distribution "Token Authentication Specification"): a request answered 401 carries
``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` (or ``Basic``). For Bearer, ocicopy asks the realm
for a token covering *every* scope the operation needs (a mount needs ``pull`` on the source repository and
``pull,push`` on the destination: one token request), caches it until shortly before it expires, and retries
the request once. The realm is checked before any credential is sent to it (see :func:`check_realm`) and is
pinned per registry for the session: a registry that changes its realm mid-session is refused.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx2

from ocicopy.errors import InsecureRequestError

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
