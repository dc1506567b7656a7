"""Content digests: a strict value type and an incremental verifier.

Only ``sha256`` and ``sha512`` with lower-case hex of the exact length are accepted (OCI image-spec
"Digests"); the format is checked before a digest is ever spliced into a URL or a file path, so
``sha256:../../x`` or upper-case hex never reach the network or the disk.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from ocicopy.errors import DigestMismatchError, InvalidDigestError

_HEX_LENGTH: Final = {"sha256": 64, "sha512": 128}
_DIGEST_RE: Final = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")


class Digest(str):
    """A validated ``algorithm:hex`` digest; a ``str`` subclass so it serialises as itself."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _DIGEST_RE.fullmatch(value):
            raise InvalidDigestError(value)
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return self.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.split(":", 1)[1]

    @property
    def short(self) -> str:
        """``sha256:0123456789ab`` — for human output only."""
        return self[: len(self.algorithm) + 13]

    @classmethod
    def parse(cls, value: str) -> Digest:
        return cls(value)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        """The digest of ``data`` (whole, in memory: for manifests and small blobs)."""
        return cls(f"{algorithm}:{_new_hash(algorithm)(data).hexdigest()}")

    def verifier(self) -> Verifier:
        return Verifier(self)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(value))


def _new_hash(algorithm: str) -> Any:
    if algorithm not in _HEX_LENGTH:
        raise InvalidDigestError(f"{algorithm}:")
    return getattr(hashlib, algorithm)


class Hasher:
    """Incremental hash that yields a :class:`Digest` (used when the digest is not known in advance)."""

    def __init__(self, algorithm: str = "sha256") -> None:
        self._algorithm = algorithm
        self._hash = _new_hash(algorithm)()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def digest(self) -> Digest:
        return Digest(f"{self._algorithm}:{self._hash.hexdigest()}")


class Verifier(Hasher):
    """Hashes a stream chunk by chunk and checks it against the expected digest (and size) at the end."""

    def __init__(self, expected: Digest, expected_size: int | None = None) -> None:
        super().__init__(expected.algorithm)
        self.expected = expected
        self.expected_size = expected_size

    def update(self, chunk: bytes) -> None:
        super().update(chunk)
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatchError(self.expected, None, self.size, self.expected_size, "body longer than descriptor")

    def verified(self) -> bool:
        size_ok = self.expected_size is None or self.size == self.expected_size
        return size_ok and self.digest() == self.expected

    def check(self) -> None:
        """Raise :class:`DigestMismatchError` unless the bytes seen match the expected digest and size."""
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatchError(
                self.expected, None, self.size, self.expected_size, "size differs from descriptor"
            )
        actual = self.digest()
        if actual != self.expected:
            raise DigestMismatchError(self.expected, actual, self.size, self.expected_size, "content digest differs")
