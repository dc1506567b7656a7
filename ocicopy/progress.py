"""Progress events: the engine reports, a front end (CLI, embedding tool) renders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # annotations only: importing this module builds no pydantic model
    from ocicopy.digest import Digest
    from ocicopy.result import BlobResult


class Progress(Protocol):
    def blob_started(self, digest: Digest, size: int) -> None: ...
    def blob_advanced(self, digest: Digest, nbytes: int) -> None: ...
    def blob_finished(self, result: BlobResult) -> None: ...
    def manifest_pushed(self, digest: Digest, reference: str) -> None: ...


class NoProgress:
    """The default: report nothing."""

    def blob_started(self, digest: Digest, size: int) -> None:
        pass

    def blob_advanced(self, digest: Digest, nbytes: int) -> None:
        pass

    def blob_finished(self, result: BlobResult) -> None:
        pass

    def manifest_pushed(self, digest: Digest, reference: str) -> None:
        pass
