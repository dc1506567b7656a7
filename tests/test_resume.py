"""Resuming a broken blob read with ``Range: bytes=N-`` (a scripted source; the code under test is ocicopy's).

Only a 206 whose ``Content-Range`` starts at N is appended; a 200 (Range ignored) or a range starting
elsewhere restarts the blob from zero with a new upload session; every outcome is digest-checked.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import httpx2
import pytest

from ocicopy import ClientOptions, RetryPolicy
from ocicopy.blobs import BlobCopier
from ocicopy.digest import Digest
from ocicopy.errors import ReadGaveUp
from ocicopy.models import Descriptor
from ocicopy.registry import Registry
from ocicopy.repository import Endpoint
from ocicopy.transport import Transport

pytestmark = pytest.mark.anyio

SRC, DST = "source.example", "mirror.example"
DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = Digest("sha256:" + hashlib.sha256(DATA).hexdigest())


class Broken(httpx2.AsyncByteStream):
    """A body that stops with a connection error after ``fail_at`` bytes."""

    def __init__(self, data: bytes, fail_at: int | None) -> None:
        self.data, self.fail_at = data, fail_at

    async def __aiter__(self) -> AsyncIterator[bytes]:
        end = len(self.data) if self.fail_at is None else self.fail_at
        for i in range(0, end, 65536):
            yield self.data[i : min(i + 65536, end)]
        if self.fail_at is not None:
            raise httpx2.ReadError("connection reset by peer")


@dataclass
class Scripted:
    """Source blob GETs follow ``plan`` (one entry per GET); the mirror accepts uploads and checks them."""

    plan: list[str]
    gets: list[httpx2.Request] = field(default_factory=list)
    committed: list[bytes] = field(default_factory=list)
    sessions: int = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.host == SRC:
            return self.source(request)
        if request.method == "HEAD":
            return httpx2.Response(404)
        if request.method == "POST":
            self.sessions += 1
            return httpx2.Response(202, headers={"Location": f"/v2/r/blobs/uploads/{self.sessions}"})
        if request.method == "PUT":
            body = request.read()
            if hashlib.sha256(body).hexdigest() != DIGEST.hex:
                return httpx2.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.committed.append(body)
            return httpx2.Response(201, headers={"Docker-Content-Digest": DIGEST})
        return httpx2.Response(202)  # DELETE of a cancelled session

    def source(self, request: httpx2.Request) -> httpx2.Response:
        self.gets.append(request)
        step = self.plan.pop(0) if self.plan else "full"
        start = int(request.headers.get("range", "bytes=0-")[6:-1] or 0)
        if step == "break":  # send some bytes from where asked, then reset
            status = 206 if start else 200
            headers = {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"} if start else {}
            return httpx2.Response(status, headers=headers, stream=Broken(DATA[start:], 300_000))
        if step == "ignore-range":
            return httpx2.Response(200, stream=Broken(DATA, None))
        if step == "wrong-start":
            headers = {"Content-Range": f"bytes 0-{len(DATA) - 1}/{len(DATA)}"}
            return httpx2.Response(206, headers=headers, stream=Broken(DATA, None))
        if start:
            headers = {"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"}
            return httpx2.Response(206, headers=headers, stream=Broken(DATA[start:], None))
        return httpx2.Response(200, stream=Broken(DATA, None))


async def copy_blob(script: Scripted, attempts: int = 4) -> None:
    options = ClientOptions(use_docker_config=False, retry=RetryPolicy(attempts=attempts, base_delay=0.001))
    async with Transport(options, None, httpx2.AsyncClient(transport=httpx2.MockTransport(script))) as t:
        copier = BlobCopier(anyio.CapacityLimiter(2), options.retry)
        desc = Descriptor.model_validate({"mediaType": "application/octet-stream", "digest": DIGEST, "size": len(DATA)})
        await copier.copy(Endpoint(Registry(t, SRC), "r"), Endpoint(Registry(t, DST), "r"), desc)


async def test_a_broken_read_resumes_at_the_byte_it_stopped() -> None:
    script = Scripted(["break"])
    await copy_blob(script)
    assert script.committed == [DATA] and script.sessions == 1
    assert [g.headers.get("range") for g in script.gets] == [None, "bytes=300000-"]


async def test_two_breaks_resume_twice_from_the_right_offsets() -> None:
    script = Scripted(["break", "break"])
    await copy_blob(script)
    assert script.committed == [DATA]
    assert [g.headers.get("range") for g in script.gets] == [None, "bytes=300000-", "bytes=600000-"]


@pytest.mark.parametrize("answer", ["ignore-range", "wrong-start"])
async def test_a_resume_that_does_not_start_at_n_restarts_from_zero(answer: str) -> None:
    script = Scripted(["break", answer])
    await copy_blob(script)
    assert script.committed == [DATA]
    assert script.sessions == 2  # the first upload session was abandoned, a new one carried the blob
    assert [g.headers.get("range") for g in script.gets] == [None, "bytes=300000-", None]


async def test_a_read_that_always_breaks_gives_up_and_commits_nothing() -> None:
    script = Scripted(["break"] * 20)
    with pytest.raises(ReadGaveUp, match="after 3 attempts"):
        await copy_blob(script, attempts=3)
    assert script.committed == []
    assert len(script.gets) == 3  # bounded: not retried again one level up
