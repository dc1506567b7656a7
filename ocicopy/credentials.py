"""Where registry credentials come from: explicit values, docker's ``config.json`` and credential helpers.

Resolution for one registry host follows the docker CLI: ``credHelpers[host]`` if configured, else
``credsStore`` if set, else ``auths[host]``. The first *configured* mechanism decides; a helper that
answers "not found" yields no credentials rather than falling back to ``auths`` (docker ignores
``auths`` entries once a store is configured; they are mere placeholders then).

Secrets never appear in ``repr``/``str`` or in error messages: malformed files and failing helpers are
reported by file name, field name, helper name and exit status only, and no parsing exception that
carries the raw text is chained to a :class:`~ocicopy.errors.CredentialError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import anyio

from ocicopy.errors import CredentialError

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_SERVER_URL",
    "ChainCredentials",
    "CredentialSource",
    "Credentials",
    "DockerConfigCredentials",
    "StaticCredentials",
    "default_credentials",
    "normalize_host",
]

DOCKER_HUB: Final = "docker.io"
"""Canonical host key for Docker Hub, whatever name it was given under."""
DOCKER_HUB_SERVER_URL: Final = "https://index.docker.io/v1/"
"""The key docker uses for Docker Hub in ``auths`` and when asking credential helpers."""

_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HOST_RE: Final = re.compile(r"(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_HELPER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NOT_FOUND: Final = "credentials not found in native keychain"
_TOKEN_USERNAME: Final = "<token>"  # noqa: S105 - protocol marker, not a secret
_MAX_HOST_LENGTH: Final = 261  # 255-character name + ":65535"


@dataclass(frozen=True)
class Credentials:
    """A username and password, or an identity (OAuth2 refresh) token; secrets are kept out of ``repr``."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @property
    def is_identity_token(self) -> bool:
        """True when the token server should be given ``identity_token`` as a refresh token."""
        return self.identity_token is not None


class CredentialSource(Protocol):
    """Anything that can answer "which credentials for this registry host?"."""

    async def get(self, host: str) -> Credentials | None: ...


def normalize_host(value: str) -> str:
    """The lower-case ``host[:port]`` of a host or URL-shaped key; every Docker Hub alias → ``docker.io``.

    Accepts ``registry.example:5000``, ``https://index.docker.io/v1/``, ``host:5000/v2/`` and bracketed
    IPv6 literals; raises :class:`CredentialError` for anything else.
    """
    text = value.strip()
    lowered = text.lower()
    for scheme in ("https://", "http://"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    host = text.split("/", 1)[0].lower()
    if len(host) > _MAX_HOST_LENGTH or not _HOST_RE.fullmatch(host):
        raise CredentialError(f"invalid registry host {_redact_userinfo(value)!r}")
    return DOCKER_HUB if host in _HUB_ALIASES else host


def _redact_userinfo(value: str) -> str:
    """``value`` cut short and with anything before an ``@`` (URL user info) hidden."""
    shown = value if "@" not in value else "<redacted>@" + value.rsplit("@", 1)[1]
    return shown if len(shown) <= 100 else shown[:100] + "..."


def _try_normalize(value: str) -> str | None:
    try:
        return normalize_host(value)
    except CredentialError:
        return None


def _server_url(host: str) -> str:
    """What docker passes to a credential helper (and prefers as an ``auths`` key) for ``host``."""
    return DOCKER_HUB_SERVER_URL if host == DOCKER_HUB else host


class StaticCredentials:
    """Explicit credentials from the caller, keyed by registry host (Docker Hub aliases are one key)."""

    def __init__(self, mapping: Mapping[str, Credentials]) -> None:
        self._by_host: dict[str, Credentials] = {}
        seen: dict[str, str] = {}
        for key, credentials in mapping.items():
            host = normalize_host(key)
            if host in seen and self._by_host[host] != credentials:
                raise CredentialError(
                    f"registry hosts {seen[host]!r} and {key!r} both name {host} with different credentials"
                )
            seen[host] = key
            self._by_host[host] = credentials

    def __repr__(self) -> str:
        return f"StaticCredentials(hosts={sorted(self._by_host)!r})"

    async def get(self, host: str) -> Credentials | None:
        return self._by_host.get(normalize_host(host))


class ChainCredentials:
    """Asks each source in turn; the first non-``None`` answer wins."""

    def __init__(self, *sources: CredentialSource) -> None:
        self.sources: tuple[CredentialSource, ...] = sources

    def __repr__(self) -> str:
        return f"ChainCredentials({', '.join(map(repr, self.sources))})"

    async def get(self, host: str) -> Credentials | None:
        for source in self.sources:
            found = await source.get(host)
            if found is not None:
                return found
        return None


@dataclass(frozen=True)
class _DockerConfig:
    """The parts of ``config.json`` that matter here, validated."""

    path: Path
    auths: Mapping[str, Mapping[str, Any]]
    creds_store: str | None
    cred_helpers: Mapping[str, str]

    def helper_for(self, host: str) -> tuple[str | None, str]:
        """``(helper name or None, what configured it)`` for ``host``; docker's precedence."""
        for key, name in self.cred_helpers.items():
            if _try_normalize(key) == host:
                # An empty entry opts the host out of credsStore, as in docker.
                return (name or None), f"credHelpers[{key!r}]"
        return self.creds_store, "credsStore"

    def auth_entry(self, host: str) -> tuple[str, Mapping[str, Any]] | None:
        """The ``auths`` entry for ``host``: docker's own key if present, else the first that matches."""
        matches = [key for key in self.auths if _try_normalize(key) == host]
        if not matches:
            return None
        preferred = _server_url(host)
        key = preferred if preferred in matches else matches[0]
        return key, self.auths[key]


class DockerConfigCredentials:
    """Credentials from docker's ``config.json``: ``credHelpers``, ``credsStore`` and ``auths``.

    The file is ``config_dir/config.json``, else ``$DOCKER_CONFIG/config.json``, else
    ``~/.docker/config.json``; it is read lazily, once; a missing file means no credentials.
    ``env`` (default: ``os.environ``) is the environment used to find the file and the helpers
    (``PATH``) and that helpers run with. Answers are cached per host for the life of the object;
    :meth:`invalidate` forgets them (e.g. after a 401 with short-lived helper tokens).
    """

    def __init__(
        self,
        config_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        helper_timeout: float = 30.0,
    ) -> None:
        self._config_dir = config_dir
        self._env = env
        self._helper_timeout = helper_timeout
        self._config: _DockerConfig | None = None
        self._load_lock: anyio.Lock | None = None
        self._cache: dict[str, Credentials | None] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def __repr__(self) -> str:
        return f"DockerConfigCredentials(path={str(self.config_path)!r})"

    @property
    def config_path(self) -> Path:
        """The ``config.json`` this source reads (whether or not it exists)."""
        if self._config_dir is not None:
            return self._config_dir / "config.json"
        env = os.environ if self._env is None else self._env
        if env.get("DOCKER_CONFIG"):
            return Path(env["DOCKER_CONFIG"]) / "config.json"
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
        return home / ".docker" / "config.json"

    def invalidate(self, host: str | None = None) -> None:
        """Forget the cached answer for ``host`` (or for every host); the file itself stays cached."""
        if host is None:
            self._cache.clear()
        else:
            self._cache.pop(normalize_host(host), None)

    async def get(self, host: str) -> Credentials | None:
        key = normalize_host(host)
        if key in self._cache:
            return self._cache[key]
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = anyio.Lock()
        async with lock:
            if key not in self._cache:
                self._cache[key] = await self._resolve(key)
        return self._cache[key]

    async def _resolve(self, host: str) -> Credentials | None:
        config = await self._load()
        helper, origin = config.helper_for(host)
        if helper is not None:
            return await self._run_helper(helper, origin, _server_url(host), config.path)
        entry = config.auth_entry(host)
        return None if entry is None else _credentials_from_auth(entry[1], entry[0], config.path)

    async def _load(self) -> _DockerConfig:
        if self._config is not None:
            return self._config
        if self._load_lock is None:
            self._load_lock = anyio.Lock()
        async with self._load_lock:
            if self._config is None:
                path = self.config_path
                self._config = _parse_config(await _read_optional(path), path)
        return self._config

    async def _run_helper(self, name: str, origin: str, server_url: str, config_path: Path) -> Credentials | None:
        program = f"docker-credential-{name}"
        if not _HELPER_NAME_RE.fullmatch(name):
            raise CredentialError(f"{config_path}: {origin} names an invalid credential helper {name!r}")
        env = os.environ if self._env is None else self._env
        executable = shutil.which(program, path=env.get("PATH", os.defpath))
        if executable is None:
            raise CredentialError(f"credential helper {program} (from {origin} in {config_path}) was not found on PATH")
        try:
            with anyio.fail_after(self._helper_timeout):
                result = await anyio.run_process(
                    [executable, "get"],
                    input=server_url.encode(),
                    check=False,
                    env=None if self._env is None else dict(self._env),
                )
        except TimeoutError:
            raise CredentialError(
                f"credential helper {program} did not answer within {self._helper_timeout:g} s"
            ) from None
        except OSError as exc:
            raise CredentialError(f"credential helper {program} could not be run: {exc.strerror}") from None
        return _parse_helper_output(program, result.returncode, result.stdout, result.stderr)


async def _read_optional(path: Path) -> bytes | None:
    """The bytes of ``path``, or ``None`` if it does not exist."""
    try:
        return await anyio.Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"cannot read docker config {path}: {exc.strerror}") from None


def _load_json(raw: bytes) -> tuple[Any, str | None]:
    """``(value, None)`` or ``(None, reason)``.

    Errors are returned, not raised: ``JSONDecodeError.doc`` and ``UnicodeDecodeError.object`` hold the
    raw text, and an exception raised inside ``except`` would keep them reachable as ``__context__``.
    """
    try:
        return json.loads(raw.decode("utf-8-sig")), None
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON at line {exc.lineno} column {exc.colno}"


def _parse_config(raw: bytes | None, path: Path) -> _DockerConfig:
    """Validate ``config.json``; errors name the file and the field, never the content."""
    if raw is None:
        return _DockerConfig(path, {}, None, {})
    data, problem = _load_json(raw)
    if problem is not None:
        raise CredentialError(f"malformed docker config {path}: {problem}")
    if not isinstance(data, dict):
        raise CredentialError(f"malformed docker config {path}: top level is not a JSON object")
    auths = {} if data.get("auths") is None else data["auths"]
    if not isinstance(auths, dict) or not all(isinstance(v, dict) for v in auths.values()):
        raise CredentialError(f"malformed docker config {path}: 'auths' must map hosts to objects")
    helpers = {} if data.get("credHelpers") is None else data["credHelpers"]
    if not isinstance(helpers, dict) or not all(isinstance(v, str) for v in helpers.values()):
        raise CredentialError(f"malformed docker config {path}: 'credHelpers' must map hosts to names")
    store = data.get("credsStore")
    if store is not None and not isinstance(store, str):
        raise CredentialError(f"malformed docker config {path}: 'credsStore' must be a string")
    return _DockerConfig(path, auths, store or None, helpers)


def _credentials_from_auth(entry: Mapping[str, Any], key: str, path: Path) -> Credentials | None:
    """Credentials from one ``auths`` entry (``auth`` wins over ``username``/``password``, as in docker)."""
    where = f"docker config {path}, auths[{key!r}]"
    fields = {name: entry.get(name) for name in ("auth", "username", "password", "identitytoken")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise CredentialError(f"malformed {where}: {name!r} must be a string")
    username, password = fields["username"] or "", fields["password"] or ""
    if fields["auth"]:
        username, password = _decode_auth(fields["auth"], where)
    token = fields["identitytoken"] or None
    if not (username or password or token):
        return None
    return Credentials(username=username, password=password, identity_token=token)


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    """Split a base64 ``user:password`` on its first colon (passwords may contain colons)."""
    try:
        decoded: str | None = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        decoded = None  # raised below, outside ``except``: the exception holds the decoded bytes
    if decoded is None:
        raise CredentialError(f"malformed {where}: 'auth' is not base64 of UTF-8 text")
    username, colon, password = decoded.partition(":")
    if not colon:
        raise CredentialError(f"malformed {where}: 'auth' does not decode to user:password")
    return username, password


def _parse_helper_output(program: str, status: int, stdout: bytes, stderr: bytes) -> Credentials | None:
    """Interpret ``docker-credential-* get``; nothing the helper printed ends up in an error."""
    if status != 0:
        if any(_NOT_FOUND in out.decode("utf-8", "replace").lower() for out in (stdout, stderr)):
            return None
        raise CredentialError(
            f"credential helper {program} failed with exit status {status} "
            f"(run `{program} get` by hand to see its message)"
        )
    data, _ = _load_json(stdout)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("Username", "Secret")):
        raise CredentialError(f"credential helper {program} returned malformed output (expected JSON)")
    username, secret = data["Username"], data["Secret"]
    if not secret:
        return None
    if username == _TOKEN_USERNAME:
        return Credentials(username="", password="", identity_token=secret)
    return Credentials(username=username, password=secret)


def default_credentials(explicit: Mapping[str, Credentials] | None = None) -> CredentialSource:
    """``explicit`` credentials first (if any), then docker's config file and helpers."""
    docker = DockerConfigCredentials()
    if not explicit:
        return docker
    return ChainCredentials(StaticCredentials(explicit), docker)
