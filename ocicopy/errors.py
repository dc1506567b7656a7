"""Errors are data: what failed, where, and what the registry said.

::

    OcicopyError
    ├── InputError                      bad input from the caller; nothing was sent
    │   ├── InvalidReferenceError
    │   ├── InvalidDigestError
    │   └── InvalidPlatformError
    ├── ManifestError                   a manifest we refuse to handle
    │   └── UnsupportedManifestError    schema 1, unknown media type
    ├── DigestMismatchError             bytes do not match the digest or size they were promised under
    ├── BodyTooLargeError               a body over its in-memory cap
    ├── CredentialError                 docker config / credential helper failure
    ├── InsecureRequestError            a request we refuse to make (TLS downgrade, foreign realm...)
    ├── TransportError                  connection / TLS / timeout after retries
    └── RegistryError                   an HTTP answer we cannot use: status + spec error codes + request
        ├── AuthenticationError         401 / 403 after the auth dance
        └── NotFoundError               404, MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN

Messages never contain credentials or tokens; URLs are shown without query strings (signed redirect URLs
carry secrets there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class OcicopyError(Exception):
    """Base of every error ocicopy raises on purpose."""


class InputError(OcicopyError):
    """The caller's input is malformed; nothing was sent anywhere."""


class InvalidReferenceError(InputError):
    def __init__(self, reference: str, reason: str) -> None:
        self.reference = reference
        self.reason = reason
        super().__init__(f"invalid image reference {reference!r}: {reason}")


class InvalidDigestError(InputError, ValueError):  # ValueError: pydantic reports it as a validation error
    def __init__(self, value: object) -> None:
        self.value = value
        shown = repr(value) if len(repr(value)) <= 200 else repr(value)[:200] + "..."
        super().__init__(f"invalid digest {shown}: expected sha256:<64 hex> or sha512:<128 hex>, lower case")


class InvalidPlatformError(InputError):
    def __init__(self, value: str, reason: str = "expected os/arch[/variant]") -> None:
        self.value = value
        super().__init__(f"invalid platform {value!r}: {reason}")


class ManifestError(OcicopyError):
    """A manifest that is malformed or that ocicopy refuses to handle."""


class UnsupportedManifestError(ManifestError):
    pass


class DigestMismatchError(OcicopyError):
    def __init__(
        self,
        expected: str,
        actual: str | None,
        size: int | None = None,
        expected_size: int | None = None,
        reason: str = "content digest differs",
        where: str = "",
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.size = size
        self.expected_size = expected_size
        self.reason = reason
        detail = f"{reason}: expected {expected}"
        if expected_size is not None:
            detail += f" ({expected_size} bytes)"
        if actual is not None:
            detail += f", got {actual}"
        if size is not None:
            detail += f" ({size} bytes)"
        super().__init__(f"{where}: {detail}" if where else detail)


class BodyTooLargeError(OcicopyError):
    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"{what} is larger than the {limit}-byte limit; refusing to read it into memory")


class CredentialError(OcicopyError):
    pass


class InsecureRequestError(OcicopyError):
    pass


class TransportError(OcicopyError):
    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"{method} {url}: {reason}")


@dataclass(frozen=True)
class SpecError:
    """One entry of the distribution spec's error body ``{"errors": [{"code", "message", "detail"}]}``."""

    code: str
    message: str = ""


class RegistryError(OcicopyError):
    """An HTTP answer that cannot be used: status, spec error codes and the request (without secrets)."""

    def __init__(
        self,
        status: int,
        method: str,
        url: str,
        errors: Sequence[SpecError] = (),
        message: str = "",
    ) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.errors = tuple(errors)
        self.message = message
        super().__init__(self._render())

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.errors)

    def _render(self) -> str:
        text = f"{self.method} {self.url}: HTTP {self.status}"
        if self.errors:
            text += " " + "; ".join(f"{e.code}: {e.message}" if e.message else e.code for e in self.errors)
        if self.message:
            text += f" ({self.message})"
        return text


class AuthenticationError(RegistryError):
    pass


class NotFoundError(RegistryError):
    pass


def unwrap_group(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group, preferring an :class:`OcicopyError`.

    Concurrent steps run in task groups; a caller of the library wants the error that stopped the copy,
    not a group of one.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [unwrap_group(e) for e in exc.exceptions]
    return next((e for e in leaves if isinstance(e, OcicopyError)), leaves[0])
