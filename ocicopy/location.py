"""Where an image is: one :data:`Location` type, a registry reference or an OCI layout reference.

* :class:`~ocicopy.reference.Reference` — ``host/repository[:tag][@digest]`` (docker's grammar);
* :class:`LayoutReference` — ``oci:PATH[:TAG][@DIGEST]`` (skopeo's syntax: PATH holds no ``:`` and no ``@``; a
  relative PATH is made absolute against the current directory when parsed).

:func:`parse_location` is the one place that tells them apart (``oci:`` is a layout; ``docker://`` forces a
registry reference, also the way to name a registry host called ``oci``), and :func:`pinned` the one place
that writes ``where@digest``. Pure: no I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from ocicopy.digest import Digest, is_digest
from ocicopy.errors import InvalidReferenceError
from ocicopy.reference import DEFAULT_TAG, Reference, parse_reference, validate_tag

__all__ = [
    "LAYOUT_SCHEME",
    "MAX_LAYOUT_REFERENCE_LENGTH",
    "LayoutReference",
    "Location",
    "LocationLike",
    "as_location",
    "is_layout_reference",
    "parse_layout_reference",
    "parse_location",
    "pinned",
    "with_source_tag",
]

LAYOUT_SCHEME: Final = "oci:"
DOCKER_SCHEME: Final = "docker://"
MAX_LAYOUT_REFERENCE_LENGTH: Final = 4096
_DIGEST_FORMAT: Final = "digest must be sha256:<64 lower-case hex> or sha512:<128 lower-case hex>"


# --- layout references ------------------------------------------------------------------------------------------


class _Invalid(Exception):
    """Internal: the reason a reference is refused."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _normalize_path(path: str | Path) -> Path:
    """Absolute and normalized (``..`` folded), without requiring the path to exist."""
    try:
        return Path(os.path.normpath(Path(path).expanduser().absolute()))
    except RuntimeError as exc:  # '~' with no home directory
        raise _Invalid(f"cannot expand the layout path: {exc}") from None


def _check_path(path: str | Path) -> Path:
    if not str(path):
        raise _Invalid("layout path is empty")
    normalized = _normalize_path(path)
    text = str(normalized)
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        raise _Invalid("layout path contains control characters")
    for char in ":@":
        if char in text:
            raise _Invalid(f"layout path {text!r} must not contain {char!r} (oci:PATH[:TAG][@DIGEST])")
    return normalized


def _check_tag(tag: str) -> str:
    try:
        return validate_tag(tag)
    except InvalidReferenceError as exc:
        raise _Invalid(exc.reason) from None


def _check_digest(digest: str) -> Digest:
    if isinstance(digest, str) and is_digest(digest):
        return Digest(digest)
    raise _Invalid(_DIGEST_FORMAT)


def _render(path: object, tag: object, digest: object) -> str:
    text = f"{LAYOUT_SCHEME}{path}"
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An image in an OCI layout: ``oci:PATH[:TAG][@DIGEST]``; ``str()`` parses back to an equal value.

    Constructing one validates and normalizes like :func:`parse_layout_reference` (raising
    :class:`InvalidReferenceError`). :class:`~ocicopy.reference.Reference` has no ``is_layout``: tell the two
    apart with ``isinstance``.
    """

    path: Path
    tag: str | None = None
    digest: Digest | None = None

    is_layout: ClassVar[bool] = True

    def __post_init__(self) -> None:
        try:
            path = _check_path(self.path)
            tag = None if self.tag is None else _check_tag(self.tag)
            digest = None if self.digest is None else _check_digest(self.digest)
        except _Invalid as exc:
            raise InvalidReferenceError(_render(self.path, self.tag, self.digest)[:200], exc.reason) from None
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "tag", tag)
        object.__setattr__(self, "digest", digest)

    def __str__(self) -> str:
        return _render(self.path, self.tag, self.digest)

    @property
    def identifier(self) -> str | None:
        """The digest if there is one, else the tag (or ``None``)."""
        return self.digest if self.digest is not None else self.tag

    def with_tag(self, tag: str) -> LayoutReference:
        """The same layout at ``tag``; any digest is dropped."""
        return LayoutReference(self.path, tag, None)

    def with_digest(self, digest: str) -> LayoutReference:
        """The same layout pinned to ``digest``, keeping the tag."""
        try:
            checked = _check_digest(digest)
        except _Invalid as exc:
            raise InvalidReferenceError(str(digest)[:200], exc.reason) from None
        return LayoutReference(self.path, self.tag, checked)

    def without_identifier(self) -> LayoutReference:
        """Just the layout, with neither tag nor digest."""
        return LayoutReference(self.path, None, None)


def is_layout_reference(text: str) -> bool:
    """Whether ``text`` names an OCI layout (``oci:...``) rather than a registry image."""
    return isinstance(text, str) and text.startswith(LAYOUT_SCHEME)


def parse_layout_reference(text: str) -> LayoutReference:
    """Parse ``oci:PATH``, ``oci:PATH:TAG`` or ``oci:PATH@DIGEST``; raise :class:`InvalidReferenceError`."""
    if not isinstance(text, str):
        raise InvalidReferenceError(repr(text)[:100], f"reference must be a string, not {type(text).__name__}")
    try:
        path, tag, digest = _split(text)
    except _Invalid as exc:
        shown = text if len(text) <= MAX_LAYOUT_REFERENCE_LENGTH else text[:64] + "..."
        raise InvalidReferenceError(shown, exc.reason) from None
    return LayoutReference(path, tag, digest)


def _split(text: str) -> tuple[Path, str | None, Digest | None]:
    if len(text) > MAX_LAYOUT_REFERENCE_LENGTH:
        raise _Invalid(f"layout reference longer than {MAX_LAYOUT_REFERENCE_LENGTH} characters ({len(text)})")
    if not is_layout_reference(text):
        raise _Invalid(f"a layout reference starts with {LAYOUT_SCHEME!r}")
    rest, digest = text[len(LAYOUT_SCHEME) :], None
    if "@" in rest:  # the digest follows the last '@'
        rest, _, digest_text = rest.rpartition("@")
        digest = _check_digest(digest_text)
    path, colon, tag = rest.partition(":")
    if not path:
        raise _Invalid("layout path is empty")
    if colon and not tag:
        raise _Invalid("tag is empty (nothing after ':')")
    return _check_path(path), _check_tag(tag) if colon else None, digest


# --- one location type -----------------------------------------------------------------------------------

Location = Reference | LayoutReference
LocationLike = str | Reference | LayoutReference


def parse_location(text: str, *, default_tag: str | None = DEFAULT_TAG) -> Location:
    """A layout for ``oci:...``; otherwise a registry reference (``docker://`` stripped), with ``default_tag``
    when it names neither tag nor digest (a layout has no default tag: ``oci:DIR`` means its only image)."""
    if is_layout_reference(text):
        return parse_layout_reference(text)
    if isinstance(text, str) and text.startswith(DOCKER_SCHEME):
        text = text[len(DOCKER_SCHEME) :]
    return parse_reference(text, default_tag=default_tag)


def as_location(ref: LocationLike, *, default_tag: str | None = DEFAULT_TAG) -> Location:
    """``ref`` itself when it is already a :data:`Location`, else :func:`parse_location`."""
    if isinstance(ref, Reference | LayoutReference):
        return ref
    return parse_location(ref, default_tag=default_tag)


def pinned(location: Location, digest: Digest) -> str:
    """``location`` as ``where@digest`` (its tag dropped): the reference to deploy, or to read back."""
    return str(location.without_identifier().with_digest(digest))


def with_source_tag(dst: Location, src: Location) -> Location:
    """A destination that names neither tag nor digest takes the source's tag (as ``docker push`` would)."""
    if dst.tag is None and dst.digest is None and src.tag is not None:
        return dst.with_tag(src.tag)
    return dst
