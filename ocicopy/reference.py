"""Docker-style image references: parsing, validation and normalization (pure, no I/O).

Grammar (distribution/reference)::

    reference  := name [":" tag] ["@" digest]
    name       := [registry "/"] path                  (total length <= 255)
    registry   := host [":" port]
    host       := label ("." label)* | "[" IPv6 "]"
    label      := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    path       := component ("/" component)*
    component  := [a-z0-9]+ ((?:[._]|__|-+) [a-z0-9]+)*
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := sha256:<64 lower-case hex> | sha512:<128 lower-case hex>

Normalization rules (those of ``docker pull``):

* The first ``/``-separated component is the registry only if it contains ``.`` or ``:``, is
  ``localhost``, or is a bracketed IPv6 literal; otherwise the registry is ``docker.io`` and the whole
  name is the repository path (``user/app`` -> ``docker.io/user/app``).
* The registry is lower-cased (host names are case-insensitive); ``index.docker.io`` and
  ``registry-1.docker.io`` become ``docker.io``.
* A single-component Docker Hub repository gets ``library/`` (``nginx`` -> ``docker.io/library/nginx``).
* With neither tag nor digest the tag is ``default_tag`` (``latest``); with only a digest there is no
  tag; ``repo:tag@digest`` keeps both (the digest is what identifies the content).
* A ``:`` after the last ``/`` starts the tag, so ``host:5000/repo`` has a port, not a tag.

Stricter than the distribution grammar, on purpose: ports must be 1-65535, an IPv6 literal must parse as
an address, digests are only sha256/sha512 (see :mod:`ocicopy.digest`), input is capped at
:data:`MAX_REFERENCE_LENGTH` characters before any other work, and a bare digest (``sha256:...``) or a
64-hex image ID is refused instead of being read as a Docker Hub repository.

Every check is either a character scan or a regex with no nested ambiguity, so the time taken is linear
in the (capped) input length. Everything rejected raises :class:`~ocicopy.errors.InvalidReferenceError`
with a specific reason; validated repositories, tags and digests are safe to splice into
``/v2/<repository>/manifests/<tag|digest>``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from ocicopy.digest import Digest, is_digest
from ocicopy.errors import InvalidReferenceError

__all__ = [
    "DEFAULT_REGISTRY",
    "DEFAULT_TAG",
    "DOCKER_HUB_API_HOST",
    "MAX_NAME_LENGTH",
    "MAX_REFERENCE_LENGTH",
    "MAX_TAG_LENGTH",
    "Reference",
    "api_host",
    "parse_reference",
    "validate_repository",
    "validate_tag",
]

DEFAULT_REGISTRY: Final = "docker.io"
DOCKER_HUB_API_HOST: Final = "registry-1.docker.io"
DEFAULT_TAG: Final = "latest"
MAX_REFERENCE_LENGTH: Final = 1024
MAX_NAME_LENGTH: Final = 255
MAX_TAG_LENGTH: Final = 128

_DOCKER_HUB_ALIASES: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_OFFICIAL_PREFIX: Final = "library/"
_DIGEST_FORMAT: Final = "digest must be sha256:<64 lower-case hex> or sha512:<128 lower-case hex>"
_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}

_DIGITS: Final = frozenset("0123456789")
_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER_HEX: Final = frozenset("0123456789abcdef")
_HOST_LABEL_CHARS: Final = _LOWER | _UPPER | _DIGITS | {"-"}
_IPV6_CHARS: Final = _LOWER_HEX | frozenset("ABCDEF:")
_PATH_CHARS: Final = _LOWER | _DIGITS | frozenset("._-/")
_ALNUM_LOWER: Final = _LOWER | _DIGITS
_TAG_FIRST: Final = _LOWER | _UPPER | _DIGITS | {"_"}
_TAG_CHARS: Final = _TAG_FIRST | frozenset(".-")

# Each alternative of the repeated group starts with a separator character that cannot also be matched by
# the preceding ``[a-z0-9]+``, so a failing match backtracks at most once per character: linear time.
_PATH_COMPONENT_RE: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)


class _Invalid(Exception):
    """Internal: carries the reason up to the public function, which knows the text to report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _shown(text: str) -> str:
    """The input as quoted in the error: whole unless it is over the length cap."""
    return text if len(text) <= MAX_REFERENCE_LENGTH else text[:64] + "..."


# --- component checks (raise _Invalid) -------------------------------------------------------------------


def _check_tag(tag: str) -> str:
    if not tag:
        raise _Invalid("tag is empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise _Invalid(f"tag longer than {MAX_TAG_LENGTH} characters ({len(tag)})")
    if tag[0] not in _TAG_FIRST:
        raise _Invalid(f"tag must start with a letter, digit or '_', not {tag[0]!r}")
    for char in tag:
        if char not in _TAG_CHARS:
            raise _Invalid(f"tag contains invalid character {char!r} (allowed: letters, digits, '_', '.', '-')")
    return tag


def _check_path(path: str) -> str:
    if not path:
        raise _Invalid("repository path is empty")
    if len(path) > MAX_NAME_LENGTH:
        raise _Invalid(f"repository path longer than {MAX_NAME_LENGTH} characters ({len(path)})")
    if any(char in _UPPER for char in path):
        raise _Invalid("repository path must be lower case")
    for char in path:
        if char not in _PATH_CHARS:
            raise _Invalid(f"repository path contains invalid character {char!r}")
    if path.startswith("/"):
        raise _Invalid("repository path must not start with '/'")
    if path.endswith("/"):
        raise _Invalid("repository path must not end with '/'")
    if "//" in path:
        raise _Invalid("repository path has an empty component ('//')")
    for component in path.split("/"):
        if _PATH_COMPONENT_RE.fullmatch(component):
            continue
        if component[0] not in _ALNUM_LOWER or component[-1] not in _ALNUM_LOWER:
            raise _Invalid(f"path component {component!r} must start and end with a lower-case letter or digit")
        raise _Invalid(
            f"path component {component!r} has an invalid separator "
            "(allowed between letters and digits: '.', '_', '__' or a run of '-')"
        )
    return path


def _check_port(port: str) -> str:
    if not port:
        raise _Invalid("registry port is empty")
    if len(port) > 5 or any(char not in _DIGITS for char in port) or not 1 <= int(port) <= 65535:
        raise _Invalid(f"registry port {port!r} is not a number between 1 and 65535")
    return port


def _check_host_label(label: str, host: str) -> None:
    if not label:
        raise _Invalid(f"registry host {host!r} has an empty label")
    if any(char not in _HOST_LABEL_CHARS for char in label) or label[0] == "-" or label[-1] == "-":
        raise _Invalid(f"registry host label {label!r} is invalid (letters, digits and '-', not at either end)")


def _normalize_registry(registry: str) -> str:
    """Validate ``host[:port]`` and return it lower-cased, with Docker Hub aliases mapped to ``docker.io``."""
    if not registry:
        raise _Invalid("registry is empty")
    if registry.startswith("["):
        close = registry.find("]")
        if close == -1:
            raise _Invalid("unterminated IPv6 address in registry ('[' without ']')")
        address, rest = registry[1:close], registry[close + 1 :]
        if not address or any(char not in _IPV6_CHARS for char in address):
            raise _Invalid(f"invalid IPv6 address {address!r} in registry")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _Invalid(f"invalid IPv6 address {address!r} in registry") from None
        host = f"[{address.lower()}]"
        if rest and not rest.startswith(":"):
            raise _Invalid(f"unexpected {rest!r} after the IPv6 address in registry")
        port = rest[1:] if rest else None
    else:
        raw_host, colon, raw_port = registry.partition(":")
        if not raw_host:
            raise _Invalid("registry host is empty")
        for label in raw_host.split("."):
            _check_host_label(label, raw_host)
        host = raw_host.lower()
        port = raw_port if colon else None
    if port is not None:
        return f"{host}:{_check_port(port)}"
    return DEFAULT_REGISTRY if host in _DOCKER_HUB_ALIASES else host


def _names_a_registry(component: str) -> bool:
    """Docker's rule: is the first component of a name a registry rather than a Docker Hub namespace?"""
    return "." in component or ":" in component or component.lower() == "localhost" or component.startswith("[")


def _check_digest(digest: str) -> Digest:
    if is_digest(digest):
        return Digest(digest)
    if not digest:
        raise _Invalid(f"digest is empty ({_DIGEST_FORMAT})")
    algorithm, colon, hex_part = digest.partition(":")
    if not colon:
        problem = "digest has no ':' between algorithm and hex"
    elif algorithm not in _HEX_LENGTH:
        if algorithm.lower() in _HEX_LENGTH:
            problem = "digest algorithm must be lower case"
        else:
            problem = f"unsupported digest algorithm {algorithm[:20]!r}"
    elif hex_part.lower() != hex_part and all(char in _LOWER_HEX for char in hex_part.lower()):
        problem = "digest hex must be lower case"
    elif any(char not in _LOWER_HEX for char in hex_part):
        problem = "digest contains characters other than hex digits"
    else:
        problem = f"{algorithm} digest must have {_HEX_LENGTH[algorithm]} hex characters, not {len(hex_part)}"
    raise _Invalid(f"{problem} ({_DIGEST_FORMAT})")


def _normalize(
    registry: str, repository: str, tag: str | None, digest: str | None
) -> tuple[str, str, str | None, Digest | None]:
    """Validate the parts and return them in normal form (``library/`` added, registry normalized)."""
    registry = _normalize_registry(registry)
    if not _names_a_registry(registry):
        raise _Invalid(
            f"registry {registry!r} would be read as a Docker Hub namespace; "
            "a registry needs a '.', a port, or to be 'localhost'"
        )
    repository = _check_path(repository)
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = _OFFICIAL_PREFIX + repository
    name_length = len(registry) + 1 + len(repository)
    if name_length > MAX_NAME_LENGTH:
        raise _Invalid(f"name longer than {MAX_NAME_LENGTH} characters ({name_length})")
    checked_tag = None if tag is None else _check_tag(tag)
    checked_digest = None if digest is None else _check_digest(digest)
    return registry, repository, checked_tag, checked_digest


# --- public API ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalized image reference; ``str()`` gives the full form, which parses back to an equal value.

    Constructing one directly validates and normalizes the fields like :func:`parse_reference` does
    (``Reference("index.docker.io", "nginx", "1", None)`` is ``docker.io/library/nginx:1``), raising
    :class:`InvalidReferenceError`. ``tag`` and ``digest`` may both be ``None``: a repository with no
    identifier (parse it back with ``default_tag=None``).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        parts = (self.registry, self.repository, self.tag, self.digest)
        if not all(isinstance(part, str) for part in parts[:2]) or not all(
            part is None or isinstance(part, str) for part in parts[2:]
        ):
            raise InvalidReferenceError(
                repr(parts)[:200], "registry and repository must be strings; tag and digest strings or None"
            )
        try:
            normalized = _normalize(*parts)
        except _Invalid as exc:
            raise InvalidReferenceError(_render(*parts), exc.reason) from None
        for field, value in zip(("registry", "repository", "tag", "digest"), normalized, strict=True):
            object.__setattr__(self, field, value)

    def __str__(self) -> str:
        return _render(self.registry, self.repository, self.tag, self.digest)

    @property
    def name(self) -> str:
        """``registry/repository``, e.g. ``docker.io/library/nginx``."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str | None:
        """What goes after ``/manifests/``: the digest if there is one, else the tag (or ``None``)."""
        return self.digest if self.digest is not None else self.tag

    @property
    def api_host(self) -> str:
        """``host[:port]`` to send HTTP requests to (Docker Hub's API lives on ``registry-1.docker.io``)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def familiar(self) -> str:
        """The short human form, as docker prints it: ``nginx:latest``, ``user/app:1``, ``ghcr.io/a/b:2``.

        It always parses back (with ``default_tag=None``) to this same reference: ``docker.io/`` and
        ``library/`` are only dropped when that stays unambiguous (``docker.io/foo.com/x`` keeps its prefix).
        """
        candidates: list[str] = []
        if self.registry == DEFAULT_REGISTRY:
            if self.repository.startswith(_OFFICIAL_PREFIX):
                candidates.append(self.repository[len(_OFFICIAL_PREFIX) :])
            candidates.append(self.repository)
        for path in candidates:
            text = _render(None, path, self.tag, self.digest)
            try:
                if parse_reference(text, default_tag=None) == self:
                    return text
            except InvalidReferenceError:
                continue
        return str(self)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag``; any digest is dropped, so the tag is what identifies it."""
        return Reference(self.registry, self.repository, validate_tag(tag), None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest``, keeping the tag (``repo:tag@digest``)."""
        if not isinstance(digest, str):
            raise InvalidReferenceError(repr(digest)[:100], "digest must be a string")
        try:
            checked = _check_digest(digest)
        except _Invalid as exc:
            raise InvalidReferenceError(_shown(digest), exc.reason) from None
        return Reference(self.registry, self.repository, self.tag, checked)

    def without_identifier(self) -> Reference:
        """Just the repository, with neither tag nor digest."""
        return Reference(self.registry, self.repository, None, None)


def api_host(registry: str) -> str:
    """The ``host[:port]`` that serves ``registry``'s API: validated and normalized like a reference's registry
    (lower case; ``index.docker.io`` and ``docker.io`` → ``registry-1.docker.io``)."""
    try:
        normalized = _normalize_registry(registry)
    except _Invalid as exc:
        raise InvalidReferenceError(_shown(registry), exc.reason) from None
    return DOCKER_HUB_API_HOST if normalized == DEFAULT_REGISTRY else normalized


def _render(registry: str | None, repository: str, tag: str | None, digest: str | None) -> str:
    text = repository if registry is None else f"{registry}/{repository}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


def parse_reference(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse a docker-style reference (``nginx``, ``ghcr.io/a/b:1``, ``host:5000/x@sha256:...``).

    ``default_tag`` is used when neither a tag nor a digest is given; pass ``None`` to get a reference
    without an identifier instead. Raises :class:`InvalidReferenceError` (and nothing else) on bad input.
    """
    if not isinstance(text, str):
        raise InvalidReferenceError(repr(text)[:100], f"reference must be a string, not {type(text).__name__}")
    try:
        registry, repository, tag, digest = _parse(text, default_tag)
    except _Invalid as exc:
        raise InvalidReferenceError(_shown(text), exc.reason) from None
    return Reference(registry, repository, tag, digest)


def _parse(text: str, default_tag: str | None) -> tuple[str, str, str | None, Digest | None]:
    if len(text) > MAX_REFERENCE_LENGTH:
        raise _Invalid(f"reference longer than {MAX_REFERENCE_LENGTH} characters ({len(text)})")
    if not text:
        raise _Invalid("reference is empty")
    if any(char.isspace() for char in text):
        raise _Invalid("reference contains whitespace")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in text):
        raise _Invalid("reference contains control characters")
    if not text.isascii():
        raise _Invalid("reference contains non-ASCII characters")
    if "://" in text:
        scheme = text.split("://", 1)[0][:20]
        raise _Invalid(f"a reference has no URL scheme (remove {scheme + '://'!r})")
    if default_tag is not None:
        try:
            _check_tag(default_tag)
        except _Invalid as exc:
            raise _Invalid(f"invalid default tag {default_tag!r}: {exc.reason}") from None

    remainder, at, digest_text = text.partition("@")
    if at and "@" in digest_text:
        raise _Invalid("more than one '@'")
    digest = _check_digest(digest_text) if at else None

    name, tag = remainder, None
    colon, slash = remainder.rfind(":"), remainder.rfind("/")
    if colon > slash:
        name, tag = remainder[:colon], remainder[colon + 1 :]
        if not tag:
            raise _Invalid("tag is empty (nothing after ':')")
    if not name:
        raise _Invalid("repository name is missing")
    if "/" not in name and not at:
        if name.startswith("["):
            raise _Invalid("a registry alone is not a reference; add '/<repository>'")
        if name in _HEX_LENGTH and tag is not None:
            raise _Invalid("a bare digest is not a reference; use <repository>@<digest>")
        if len(name) == 64 and tag is None and all(char in _LOWER_HEX for char in name):
            raise _Invalid("a 64-character hex string is an image ID, not a repository name")

    first, slash_sep, rest = name.partition("/")
    if slash_sep and _names_a_registry(first):
        registry, repository = first, rest
        if not repository:
            raise _Invalid("repository path is missing after the registry")
    else:
        registry, repository = DEFAULT_REGISTRY, name

    if tag is None and digest is None:
        tag = default_tag
    return _normalize(registry, repository, tag, digest)


def validate_repository(path: str) -> str:
    """Return ``path`` (``library/nginx``, no registry) unchanged if it is a valid repository path."""
    if not isinstance(path, str):
        raise InvalidReferenceError(repr(path)[:100], "repository path must be a string")
    try:
        return _check_path(path)
    except _Invalid as exc:
        raise InvalidReferenceError(_shown(path), exc.reason) from None


def validate_tag(tag: str) -> str:
    """Return ``tag`` unchanged if it is a valid tag (``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``)."""
    if not isinstance(tag, str):
        raise InvalidReferenceError(repr(tag)[:100], "tag must be a string")
    try:
        return _check_tag(tag)
    except _Invalid as exc:
        raise InvalidReferenceError(_shown(tag), exc.reason) from None
