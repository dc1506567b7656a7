"""Errors are data: what failed, where, and what the registry said. Every error ocicopy raises on purpose is
defined here (other modules re-export the ones they raise, for their callers' convenience).

::

    OcicopyError
    ├── InputError                      bad input from the caller; nothing was sent
    │   ├── InvalidReferenceError       image or layout reference, tag, repository name
    │   ├── InvalidDigestError
    │   ├── InvalidPlatformError
    │   ├── PlanError                   a plan file or plan object that cannot be used; names the entry
    │   ├── SettingsError               a ClientOptions (or other settings) value that is not allowed
    │   └── ClosedClientError           a Client used after it was closed
    ├── ManifestError                   a manifest we refuse to handle
    │   └── UnsupportedManifestError    schema 1, unknown media type
    ├── DigestMismatchError             bytes do not match the digest or size they were promised under
    ├── BodyTooLargeError               a body over its in-memory cap
    ├── CompressionError                recompression / bounded decompression
    │   ├── CorruptDataError            malformed or truncated gzip/zstd stream
    │   ├── OutputLimitError            decompresses to more than allowed (bomb guard)
    │   ├── WindowTooLargeError         zstd frame window over the cap
    │   └── NotConvertibleError         not a gzip layer
    ├── CredentialError                 docker config / credential helper failure
    ├── CloudError                      a cloud control plane (Amazon ECR's API) refused or failed a call
    ├── LayoutError                     a file-system error in an OCI layout: the path and the OS's reason
    ├── InsecureRequestError            a request we refuse to make (TLS downgrade, foreign realm...)
    ├── ExecutorError                   the run's executor (a Dask cluster) was lost, or a task kept dying
    ├── RemoteError                     what a task met where it ran (a Dask worker), by its message
    ├── QuotaError                      a deployment not started: it would go below --min-pull-quota
    ├── TransportError                  connection / TLS / timeout after retries
    │   ├── BrokenBody                  the connection broke while a body was read (retryable)
    │   ├── ReadGaveUp                  a blob read that failed on every resume (not retried again)
    │   └── TLSError                    a TLS handshake that failed: untrusted, refused, not TLS (not retried)
    └── RegistryError                   an HTTP answer we cannot use: status + spec error codes + request
        ├── AuthenticationError         401 / 403 after the auth dance
        ├── QuotaExhaustedError         a 429 whose quota is spent, or whose wait is beyond the cap (not retried)
        └── NotFoundError               404, MANIFEST_UNKNOWN, BLOB_UNKNOWN, NAME_UNKNOWN
            └── UnknownReferenceError   a reference (tag, digest, layout) that does not resolve: one wording

Messages never contain credentials or tokens; URLs are shown without query strings (signed redirect URLs
carry secrets there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final


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


class PlanError(InputError):
    """A plan that cannot be used; the message names the entry."""


class SettingsError(InputError):
    """A settings model (:class:`~ocicopy.ClientOptions`, :class:`~ocicopy.Limits`...) given a value it does not
    allow. ``errors`` are the validator's findings (field path, kind, message), without the values given."""

    def __init__(self, message: str, errors: Sequence[Mapping[str, object]] = ()) -> None:
        super().__init__(message)
        self.errors = tuple(errors)


class ClosedClientError(InputError):
    """A :class:`~ocicopy.Client` used after its ``async with`` block ended (or ``aclose()``)."""


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
            detail += f", got {actual}" + (f" ({size} bytes)" if size is not None else "")
        elif size is not None:  # the size was wrong; over it, the reader stopped there: at least that many came
            more = expected_size is not None and size > expected_size
            detail += f", got {'at least ' if more else ''}{size} bytes"
        super().__init__(f"{where}: {detail}" if where else detail)


class BodyTooLargeError(OcicopyError):
    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        super().__init__(f"{what} is larger than the {limit}-byte limit; refusing to read it into memory")


class CompressionError(OcicopyError):
    """Base of recompression / decompression failures."""


class CorruptDataError(CompressionError):
    """The compressed stream is malformed or truncated."""

    def __init__(self, fmt: str, reason: str) -> None:
        self.format = fmt
        self.reason = reason
        super().__init__(f"corrupt {fmt} stream: {reason}")


class OutputLimitError(CompressionError):
    """Decompressed output exceeded the allowed size (decompression bomb guard)."""

    def __init__(self, fmt: str, limit: int) -> None:
        self.format = fmt
        self.limit = limit
        super().__init__(f"{fmt} stream decompresses to more than the limit of {limit} bytes")


class WindowTooLargeError(CompressionError):
    """A zstd frame needs a decompression window above the allowed ``2**max_window_log``."""

    def __init__(self, max_window_log: int, detail: str) -> None:
        self.max_window_log = max_window_log
        super().__init__(f"zstd frame needs a window larger than 2**{max_window_log} bytes ({detail})")


class NotConvertibleError(CompressionError):
    """The media type is not a gzip layer that can be recompressed to zstd."""

    def __init__(self, media_type: str) -> None:
        self.media_type = media_type
        super().__init__(f"media type {media_type!r} is not a gzip layer convertible to zstd")


class CredentialError(OcicopyError):
    pass


class CloudError(OcicopyError):
    """A cloud registry's control plane (Amazon ECR's API: CreateRepository, GetAuthorizationToken...) refused
    or failed a call: ``operation`` and the service's error ``code`` (``AccessDeniedException``...), or
    ``NoCredentials`` when the AWS credential chain found none."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation, self.code = operation, code
        super().__init__(message)


class LayoutError(OcicopyError):
    """An OCI layout (or spool) the file system refused: permissions, a full disk, a file where a directory
    belongs. One line: the path and the OS's reason (``OSError`` is its ``__cause__``)."""

    def __init__(self, exc: OSError) -> None:
        self.path = exc.filename
        reason = (exc.strerror or type(exc).__name__).lower()
        super().__init__(f"{exc.filename}: {reason}" if exc.filename else f"OCI layout: {reason}")


class InsecureRequestError(OcicopyError):
    pass


class ExecutorError(OcicopyError):
    """The run's executor failed: a lost Dask scheduler, a task whose workers kept dying."""


class RemoteError(OcicopyError):
    """An error a task met where it ran (e.g. on a Dask worker), carried back as its one-line message."""


class TransportError(OcicopyError):
    def __init__(self, method: str, url: str, reason: str) -> None:
        self.method = method
        self.url = url
        self.reason = reason
        super().__init__(f"{method} {url}: {reason}")


class BrokenBody(TransportError):
    """The connection broke while a body was being read (retryable, unlike an undecodable body)."""


class ReadGaveUp(TransportError):
    """A blob read that failed on every resume: not retried again one level up (the bound stays the policy's)."""


class TLSError(TransportError):
    """A TLS handshake that failed in a way asking again cannot fix (an untrusted certificate, a refused client
    certificate, a server that does not speak TLS); the reason says which host and what would fix it."""


@dataclass(frozen=True)
class SpecError:
    """One entry of the distribution spec's error body ``{"errors": [{"code", "message", "detail"}]}``.

    ``detail`` is the entry's ``detail`` as compact JSON text (capped), e.g. the digest distribution names in a
    ``MANIFEST_BLOB_UNKNOWN``.
    """

    code: str
    message: str = ""
    detail: str = ""


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
            text += " " + "; ".join(_entry(e) for e in self.errors)
        if self.message:
            text += f" ({self.message})"
        return text


def _entry(error: SpecError) -> str:
    text = f"{error.code}: {error.message}" if error.message else error.code
    if error.detail and len(error.detail) <= 140:  # e.g. the digest of a MANIFEST_BLOB_UNKNOWN
        text += f" ({error.detail})"
    return text


class AuthenticationError(RegistryError):
    pass


class QuotaExhaustedError(RegistryError):
    """A 429 whose quota is spent (``ratelimit-remaining: 0``) or whose wait is beyond the retry cap."""


class QuotaError(OcicopyError):
    """A deployment not started: its manifest GETs would take a source's pull quota below ``--min-pull-quota``."""


class NotFoundError(RegistryError):
    pass


class UnknownReferenceError(NotFoundError):
    """A reference that does not resolve, said the same whichever command asked:
    ``REF: manifest unknown (HTTP 404 MANIFEST_UNKNOWN)``; for an OCI layout (``status`` 0: no HTTP) the reason
    says what is true (``no OCI image layout there``, ``no tag '1' (tags: a, b)``)."""

    def __init__(
        self,
        reference: str,
        reason: str = "manifest unknown",
        *,
        method: str = "HEAD",
        status: int = 404,
        errors: Sequence[SpecError] = (),
    ) -> None:
        self.reference = reference
        super().__init__(status, method, reference, errors, reason)

    def _render(self) -> str:
        text = f"{self.url}: {self.message}"
        if self.status:
            text += f" (HTTP {self.status}{''.join(' ' + code for code in self.codes)})"
        return text


def unwrap_group(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group, preferring an :class:`OcicopyError`.

    Concurrent steps run in task groups; a caller of the library wants the error that stopped the copy,
    not a group of one.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [unwrap_group(e) for e in exc.exceptions]
    return next((e for e in leaves if isinstance(e, OcicopyError)), leaves[0])


def validation_words(err: Mapping[str, Any]) -> str:
    """A validator's finding (a pydantic error entry) in the words of whoever wrote the value, without the
    validator's class names: ``must be a whole number, not 3.5``, ``must not be empty``, ``must be 'zstd'``."""
    kind, ctx, given = err.get("type"), err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field missing"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, not {json_type(given)}"
    if kind in ("literal_error", "enum") and "expected" in ctx:
        return f"must be {ctx['expected']}"
    if kind == "string_too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_too_long" and "max_length" in ctx:
        return f"must be at most {ctx['max_length']} characters long"
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"must have at least {n} {'entry' if n == 1 else 'entries'}"
    if kind == "too_long" and "max_length" in ctx:
        return f"must have at most {ctx['max_length']} entries"
    if kind == "int_from_float":
        return "must be a whole number (no fractional part)"
    if kind == "finite_number":
        return "must be a finite number"
    for bound, words in _BOUNDS.items():
        if kind == bound and words[0] in ctx:
            return f"must be {words[1]} {ctx[words[0]]}"
    return " ".join(str(err.get("msg", "")).removeprefix("Value error, ").split())


_TYPE_WORDS: Final = {
    "model_type": "an object (a dictionary of fields)",
    "model_attributes_type": "an object (a dictionary of fields)",
    "dict_type": "an object (a dictionary)",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false (a boolean)",
    "bool_parsing": "true or false (a boolean)",
}

_BOUNDS: Final = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "greater than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def json_type(value: object) -> str:
    """How the author of a JSON or YAML document would name the type of ``value``."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value!r:.40}"
    return next((name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__)
