"""The blob-location ledger: stored in the real registry, merged across writers, hostile content refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness import images
from harness.registry import RegistryServer, manifest_gets, manifest_puts
from ocicopy import ClientOptions
from ocicopy.digest import Digest
from ocicopy.ledger import (
    ARTIFACT_TYPE,
    LEDGER_TAG,
    MAX_REPOS_PER_BLOB,
    SHARD_GRACE,
    SHARD_PREFIX,
    Ledger,
    LedgerDoc,
    _decode,
    new_run_id,
    shard_time,
)
from ocicopy.models import OCI_LAYER_ZSTD, OCI_MANIFEST, Descriptor
from ocicopy.reference import validate_tag
from ocicopy.registry import Registry
from ocicopy.transform import Conversion
from ocicopy.transport import Transport

pytestmark = pytest.mark.anyio

D = [Digest("sha256:" + f"{i:x}" * 64) for i in range(1, 6)]
CONVERTED = Descriptor.model_validate({"mediaType": OCI_LAYER_ZSTD, "digest": D[3], "size": 10})


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
    # its shard (a tag of its own), then the fold: the head read once (first's shard is folded in it) and written
    assert len(manifest_gets(entries)) == 1 and len(manifest_puts(entries)) == 2


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


# --- shards: concurrent writers never lose entries -----------------------------------------------------------


def _ledger(t: Transport, host: str, repo: str, run_id: str | None = None) -> Ledger:
    return Ledger(Registry(t, host), repo, run_id)


async def test_a_stale_head_written_over_a_newer_one_loses_nothing(registry: RegistryServer, unique_repo: str) -> None:
    """Two folds raced and the older head won: the shards are still there, so a reader still sees the union."""
    async with transport_for(registry) as t:
        first = _ledger(t, registry.host, unique_repo)
        first.record(D[0], "mirror/a")
        await first.save()
        stale = images.get_manifest(registry, unique_repo, LEDGER_TAG).content  # folds only first's shard
        second = _ledger(t, registry.host, unique_repo)
        second.record(D[1], "mirror/b")
        second.record_conversion(Conversion(D[2], CONVERTED))
        await second.save()
        with images.RegistryClient(registry, unique_repo) as reg:  # a slower fold puts the old head back
            reg.push_manifest(LEDGER_TAG, stale, OCI_MANIFEST)
        reader = _ledger(t, registry.host, unique_repo)
        assert await reader.candidates(registry.host, D[0]) == ("mirror/a",)
        assert await reader.candidates(registry.host, D[1]) == ("mirror/b",)
        assert [c.source for c in await reader.conversions()] == [D[2]]
        assert await reader.repositories() == {"mirror/a", "mirror/b"}


async def test_a_head_in_the_first_format_is_still_read(registry: RegistryServer, unique_repo: str) -> None:
    v1 = json.dumps({"version": 1, "blobs": {D[0]: ["mirror/old"]}}).encode()
    async with transport_for(registry) as t:
        old = _ledger(t, registry.host, unique_repo)
        await old._write(LEDGER_TAG, v1)
        reader = _ledger(t, registry.host, unique_repo)
        assert await reader.candidates(registry.host, D[0]) == ("mirror/old",)
        assert await reader.repositories() == {"mirror/old"}


async def test_folded_shards_older_than_the_grace_are_deleted(registry: RegistryServer, unique_repo: str) -> None:
    old_run = new_run_id(datetime.now(UTC) - timedelta(seconds=SHARD_GRACE + 60))
    async with transport_for(registry) as t:
        old = _ledger(t, registry.host, unique_repo, old_run)
        old.record(D[0], "mirror/a")
        await old.save()  # its shard is folded into the head at once, and (by its run id) already old
        young = _ledger(t, registry.host, unique_repo)
        young.record(D[1], "mirror/b")
        await young.save()
        assert young.deleted_shards == 1  # the old one (the harness registry allows DELETE); its own is young
        with images.RegistryClient(registry, unique_repo) as reg:
            assert sorted(reg.tags()) == sorted([LEDGER_TAG, young.shard_tag])
        reader = _ledger(t, registry.host, unique_repo)
        assert await reader.repositories() == {"mirror/a", "mirror/b"}


async def test_a_registry_refusing_deletes_keeps_its_shards_and_the_run_succeeds() -> None:
    from harness.fake_registry import FakeRegistry, Response

    old_run = new_run_id(datetime.now(UTC) - timedelta(seconds=SHARD_GRACE + 60))
    with FakeRegistry() as fake:
        fake.before(lambda r: Response.error(405, "UNSUPPORTED", "deletes disabled") if r.method == "DELETE" else None)
        async with Transport(ClientOptions(plain_http=frozenset({fake.host}), use_docker_config=False)) as t:
            old = _ledger(t, fake.host, "mirror/ocicopy-ledger", old_run)
            old.record(D[0], "mirror/a")
            assert await old.save() is True
            assert old.deleted_shards == 0
        assert fake.tags("mirror/ocicopy-ledger") == sorted([LEDGER_TAG, old.shard_tag])


def test_shard_time_reads_the_run_id() -> None:
    when = datetime(2026, 12, 1, 23, 30, 0, tzinfo=UTC)
    run = new_run_id(when)
    assert validate_tag(SHARD_PREFIX + run) == SHARD_PREFIX + run
    assert shard_time(SHARD_PREFIX + run) == when.timestamp()
    assert shard_time(LEDGER_TAG) is None and shard_time("shard-garbage") is None


_repos = st.from_regex(r"mirror/[a-z]{1,8}", fullmatch=True)
_digests = st.sampled_from(D)
_docs = st.builds(
    LedgerDoc,
    blobs=st.dictionaries(_digests, st.lists(_repos, min_size=1, max_size=MAX_REPOS_PER_BLOB, unique=True), max_size=4),
    repositories=st.sets(_repos, max_size=4),
    folded=st.sets(st.from_regex(r"shard-[a-z0-9]{1,8}", fullmatch=True), max_size=3),
)


@given(_docs)
def test_a_document_round_trips(doc: LedgerDoc) -> None:
    back = LedgerDoc.decode(doc.encode())
    assert back.blobs == doc.blobs and back.folded == doc.folded
    assert back.repositories == doc.repositories | {r for repos in doc.blobs.values() for r in repos}


@given(_docs, _docs)
def test_merging_loses_no_repository_blob_or_fold_whatever_the_order(a: LedgerDoc, b: LedgerDoc) -> None:
    ab, ba = LedgerDoc(), LedgerDoc()
    ab.merge(a), ab.merge(b), ba.merge(b), ba.merge(a)
    for merged in (ab, ba):
        assert merged.repositories >= a.repositories | b.repositories
        assert set(merged.blobs) == set(a.blobs) | set(b.blobs)
        assert merged.folded == a.folded | b.folded
    assert ab.repositories == ba.repositories


async def test_the_head_lists_only_shards_that_still_exist(registry: RegistryServer, unique_repo: str) -> None:
    old_run = new_run_id(datetime.now(UTC) - timedelta(seconds=SHARD_GRACE + 60))
    async with transport_for(registry) as t:
        old = _ledger(t, registry.host, unique_repo, old_run)
        old.record(D[0], "mirror/a")
        await old.save()  # folded, then deleted (old)
        young = _ledger(t, registry.host, unique_repo)
        young.record(D[1], "mirror/b")
        await young.save()  # folds the old shard, then deletes it
        third = _ledger(t, registry.host, unique_repo)
        third.record(D[2], "mirror/c")
        await third.save()  # the deleted shard is no longer listed
    head = json.loads(images.get_blob(registry, unique_repo, _head_layer(registry, unique_repo)))
    assert head["folded"] == sorted([young.shard_tag, third.shard_tag])
    assert sorted(head["repositories"]) == ["mirror/a", "mirror/b", "mirror/c"]


def _head_layer(registry: RegistryServer, repo: str) -> str:
    manifest = json.loads(images.get_manifest(registry, repo, LEDGER_TAG).content)
    return str(manifest["layers"][0]["digest"])
