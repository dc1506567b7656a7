"""The blob-location ledger: stored in the real registry, merged across writers, hostile content refused."""

from __future__ import annotations

import json

import pytest

from harness import images
from harness.registry import RegistryServer, manifest_gets, manifest_puts
from ocicopy import ClientOptions
from ocicopy.digest import Digest
from ocicopy.ledger import ARTIFACT_TYPE, LEDGER_TAG, MAX_REPOS_PER_BLOB, Ledger, _decode
from ocicopy.registry import Registry
from ocicopy.transport import Transport

pytestmark = pytest.mark.anyio

D = [Digest("sha256:" + f"{i:x}" * 64) for i in range(1, 6)]


def transport_for(server: RegistryServer) -> Transport:
    return Transport(ClientOptions(plain_http=frozenset({server.host}), use_docker_config=False))


async def test_ledger_round_trips_through_the_registry(registry: RegistryServer, unique_repo: str) -> None:
    async with transport_for(registry) as t:
        writer = Ledger(Registry(t, registry.host), unique_repo)
        writer.record(D[0], "mirror/api")
        writer.record(D[1], "mirror/web")
        assert await writer.save() is True
        reader = Ledger(Registry(t, registry.host), unique_repo)
        assert await reader.candidates(registry.host, D[0]) == ("mirror/api",)
        assert await reader.candidates(registry.host, D[2]) == ()
        assert await reader.candidates("other.example:5000", D[0]) == ()  # never across registries
    stored = images.get_manifest(registry, unique_repo, LEDGER_TAG)
    assert json.loads(stored.content)["artifactType"] == ARTIFACT_TYPE


async def test_nothing_new_means_nothing_read_or_written(registry: RegistryServer, unique_repo: str) -> None:
    async with transport_for(registry) as t:
        ledger = Ledger(Registry(t, registry.host), unique_repo)
        mark = registry.mark()
        assert await ledger.save() is False
        assert registry.requests(mark) == []


async def test_concurrent_writers_merge_instead_of_overwriting(registry: RegistryServer, unique_repo: str) -> None:
    async with transport_for(registry) as t:
        first = Ledger(Registry(t, registry.host), unique_repo)
        second = Ledger(Registry(t, registry.host), unique_repo)
        await first.load()
        await second.load()  # both start from the same (empty) state
        first.record(D[0], "mirror/a")
        second.record(D[1], "mirror/b")
        second.record(D[0], "mirror/b")
        await first.save()
        mark = registry.mark()
        await second.save()  # re-reads what `first` wrote, merges, writes
        entries = registry.requests(mark)
        third = Ledger(Registry(t, registry.host), unique_repo)
        assert await third.candidates(registry.host, D[0]) == ("mirror/b", "mirror/a")  # newest first
        assert await third.candidates(registry.host, D[1]) == ("mirror/b",)
    assert len(manifest_gets(entries)) == 1 and len(manifest_puts(entries)) == 1


async def test_repositories_per_blob_are_capped() -> None:
    ledger = Ledger(Registry(transport_for_dummy(), "mirror.example"), "ledger")
    for i in range(MAX_REPOS_PER_BLOB + 3):
        ledger.record(D[0], f"repo{i}")
    assert ledger.blobs[D[0]] == [f"repo{i}" for i in range(MAX_REPOS_PER_BLOB + 2, 2, -1)]


def transport_for_dummy() -> Transport:
    return Transport(ClientOptions(use_docker_config=False))


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[" * 5000,
        b'{"version": 2, "blobs": {}}',
        b'{"version": 1, "blobs": []}',
        b"[]",
    ],
)
def test_unusable_ledgers_decode_to_nothing(data: bytes) -> None:
    assert _decode(data) == {}


def test_hostile_entries_are_dropped_and_valid_ones_kept() -> None:
    doc = {
        "version": 1,
        "blobs": {
            "sha256:../../etc/passwd": ["mirror/a"],
            "SHA256:" + "A" * 64: ["mirror/a"],
            D[0]: ["mirror/ok", "../escape", "UPPER/case", 7, "mirror/ok2"],
            D[1]: "not-a-list",
        },
    }
    assert _decode(json.dumps(doc).encode()) == {D[0]: ["mirror/ok", "mirror/ok2"]}
