"""Tests for the pure helpers of ocicopy.platforms (platform selection, index subsetting) and for the per-key
single flight (ocicopy.flight) that BlobCopier relies on."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.errors import ManifestError
from ocicopy.flight import SingleFlight
from ocicopy.models import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST, Manifest, parse_manifest
from ocicopy.platforms import PlatformSpec, apply_selection, parse_platform, select_platforms, subset_index


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


PLATFORMS: list[dict[str, str] | None] = [
    {"os": "linux", "architecture": "amd64"},
    {"os": "linux", "architecture": "arm", "variant": "v6"},
    {"os": "linux", "architecture": "arm", "variant": "v7"},
    {"os": "linux", "architecture": "arm64", "variant": "v8"},
    {"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.1"},
    {"os": "unknown", "architecture": "unknown"},  # buildx attestation manifest
    None,  # an entry without a platform
]


def index_doc(media_type: str = OCI_INDEX) -> dict[str, Any]:
    child = DOCKER_MANIFEST if media_type == DOCKER_MANIFEST_LIST else OCI_MANIFEST
    manifests = []
    for i, p in enumerate(PLATFORMS):
        entry: dict[str, Any] = {"mediaType": child, "digest": dg(100 + i), "size": 500 + i}
        if p is not None:
            entry["platform"] = p
        manifests.append(entry)
    manifests[5]["annotations"] = {"vnd.docker.reference.type": "attestation-manifest"}
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
        "annotations": {"org.opencontainers.image.ref.name": "v1", "x": "\u00e9t\u00e9"},
    }


def make_index(media_type: str = OCI_INDEX, indent: int | None = 2) -> Manifest:
    return parse_manifest(json.dumps(index_doc(media_type), indent=indent).encode(), media_type)


INDEX = make_index()


def specs(*texts: str) -> list[PlatformSpec]:
    return [parse_platform(t) for t in texts]


# --- select_platforms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (["linux/amd64"], [100]),
        (["linux/arm64"], [103]),
        (["linux/arm64/v8"], [103]),
        (["linux/arm/v7"], [102]),
        (["linux/arm"], [101]),  # variant not given: the first arm entry in index order
        (["linux/arm64", "linux/amd64"], [100, 103]),  # index order, not request order
        (["windows/amd64", "linux/arm/v6", "linux/amd64"], [100, 101, 104]),
        (["linux/amd64", "linux/amd64"], [100]),  # one entry however often it is asked for
        (["linux/arm", "linux/arm/v6"], [101]),
        ([], []),
    ],
)
def test_select_platforms_table(asked: list[str], expected: list[int]) -> None:
    chosen = select_platforms(INDEX, specs(*asked))
    assert [d.digest for d in chosen] == [dg(n) for n in expected]
    assert all(d in INDEX.children() for d in chosen)


@pytest.mark.parametrize("asked", ["linux/riscv64", "linux/arm/v5", "darwin/amd64", "linux/arm64/v9"])
def test_select_platforms_missing_lists_what_is_available(asked: str) -> None:
    with pytest.raises(ManifestError) as info:
        select_platforms(INDEX, specs("linux/amd64", asked))
    message = str(info.value)
    assert asked in message
    assert (
        "available: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8, unknown/unknown, windows/amd64" in message
    )


def test_select_platforms_on_index_without_platforms_says_none() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": dg(1), "size": 1}],
    }
    index = parse_manifest(json.dumps(doc).encode(), OCI_INDEX)
    with pytest.raises(ManifestError, match=r"available: none"):
        select_platforms(index, specs("linux/amd64"))


_available = [
    "linux/amd64",
    "linux/arm",
    "linux/arm/v6",
    "linux/arm/v7",
    "linux/arm64",
    "linux/arm64/v8",
    "windows/amd64",
]


@given(st.lists(st.sampled_from(_available), max_size=8))
def test_select_platforms_properties(asked: list[str]) -> None:
    wanted = specs(*asked)
    chosen = select_platforms(INDEX, wanted)
    positions = [INDEX.children().index(d) for d in chosen]
    assert positions == sorted(set(positions))  # index order, no duplicates
    for spec in wanted:  # every spec is served by the first matching entry
        first = next(d for d in INDEX.children() if spec.matches(d.platform))
        assert first in chosen
    for d in chosen:  # nothing unasked
        assert any(s.matches(d.platform) for s in wanted)


@given(st.lists(st.sampled_from(_available), min_size=1, max_size=8))
def test_a_selection_of_one_entry_is_that_entry_however_it_is_asked(asked: list[str]) -> None:
    chosen = select_platforms(INDEX, specs(*asked))
    result = apply_selection(INDEX, specs(*asked))
    if len(chosen) == 1:  # linux/arm64 twice, or linux/arm64 and linux/arm64/v8: that image (was a 1-entry index)
        assert result == chosen[0]
    else:
        assert result.media_type == INDEX.media_type and [d.digest for d in result.children()] == [  # type: ignore[union-attr]
            d.digest for d in chosen
        ]


# --- subset_index ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("media_type", [OCI_INDEX, DOCKER_MANIFEST_LIST])
def test_subset_index_keeps_only_kept_entries_and_other_fields(media_type: str) -> None:
    index = make_index(media_type)
    keep = select_platforms(index, specs("linux/arm64", "linux/amd64"))
    sub = subset_index(index, keep)
    assert sub.media_type == media_type
    assert sub.is_index
    assert [d.digest for d in sub.children()] == [dg(100), dg(103)]
    assert sub.children() == keep  # entries are unchanged (platform, size, media type)
    doc = json.loads(sub.raw)
    original = json.loads(index.raw)
    assert doc["annotations"] == original["annotations"]
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == media_type
    assert doc["manifests"] == [original["manifests"][0], original["manifests"][3]]
    assert sub.digest == Digest.of(sub.raw)
    assert sub.digest != index.digest
    assert sub.raw != index.raw
    reparsed = parse_manifest(sub.raw, media_type, sub.digest)
    assert reparsed.children() == sub.children()


def test_subset_index_keeps_unknown_top_level_fields_and_subject() -> None:
    doc = index_doc()
    doc["subject"] = {"mediaType": OCI_MANIFEST, "digest": dg(9), "size": 9}
    doc["artifactType"] = "application/vnd.example"
    doc["x-vendor"] = {"k": [1, 2, 3]}
    index = parse_manifest(json.dumps(doc).encode(), OCI_INDEX)
    sub = subset_index(index, index.children()[:1])
    out = json.loads(sub.raw)
    assert out["subject"] == doc["subject"]
    assert out["artifactType"] == "application/vnd.example"
    assert out["x-vendor"] == {"k": [1, 2, 3]}
    assert len(out["manifests"]) == 1


def test_subset_index_of_everything_has_the_same_entries() -> None:
    sub = subset_index(INDEX, INDEX.children())
    assert sub.children() == INDEX.children()
    assert json.loads(sub.raw) == json.loads(INDEX.raw)


def test_subset_index_without_media_type_field() -> None:
    doc = index_doc()
    del doc["mediaType"]
    index = parse_manifest(json.dumps(doc).encode(), None)
    sub = subset_index(index, index.children()[2:4])
    assert sub.media_type == OCI_INDEX
    assert [d.digest for d in sub.children()] == [dg(102), dg(103)]
    assert "mediaType" not in json.loads(sub.raw)


@given(st.sets(st.integers(0, len(PLATFORMS) - 1)))
def test_subset_index_property(kept: set[int]) -> None:
    keep = [INDEX.children()[i] for i in sorted(kept, reverse=True)]  # any order in, index order out
    sub = subset_index(INDEX, keep)
    assert [d.digest for d in sub.children()] == [dg(100 + i) for i in sorted(kept)]
    assert sub.digest == Digest.of(sub.raw)
    assert json.loads(sub.raw)["annotations"] == index_doc()["annotations"]


# --- SingleFlight --------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_single_flight_runs_once_for_concurrent_callers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    calls = 0
    release = anyio.Event()
    results: list[tuple[str, bool]] = []

    async def fn() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    async def caller() -> None:
        results.append(await flight.run("k", fn))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert calls == 1
    assert sorted(results) == [("value", False)] * 4 + [("value", True)]


@pytest.mark.anyio
async def test_single_flight_keeps_success_per_key_when_asked() -> None:
    flight: SingleFlight[int] = SingleFlight(keep_results=True)
    calls: list[str] = []

    def make(key: str, value: int) -> Callable[[], Awaitable[int]]:
        async def fn() -> int:
            calls.append(key)
            return value

        return fn

    assert await flight.run("a", make("a", 1)) == (1, True)
    assert await flight.run("a", make("a", 99)) == (1, False)
    assert await flight.run("b", make("b", 2)) == (2, True)
    assert calls == ["a", "b"]
    flight.forget("a")
    assert await flight.run("a", make("a", 3)) == (3, True)


@pytest.mark.anyio
async def test_single_flight_by_default_shares_only_runs_in_flight() -> None:
    flight: SingleFlight[int] = SingleFlight()
    release = anyio.Event()
    calls: list[int] = []
    results: list[tuple[int, bool]] = []

    async def slow() -> int:
        calls.append(1)
        await release.wait()
        return 1

    async def call() -> None:
        results.append(await flight.run("k", slow))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert sorted(results) == [(1, False), (1, True)] and calls == [1]

    async def fresh() -> int:
        calls.append(2)
        return 2

    assert await flight.run("k", fresh) == (2, True)  # finished runs are not served to later callers
    assert calls == [1, 2]


@pytest.mark.anyio
async def test_single_flight_failure_reaches_all_waiters_and_is_evicted() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = anyio.Event()
    calls = 0
    errors: list[BaseException] = []

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise ValueError("boom")

    async def caller() -> None:
        try:
            await flight.run("k", failing)
        except ValueError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            release.set()
    assert calls == 1
    assert len(errors) == 3
    assert all(str(e) == "boom" for e in errors)

    async def ok() -> str:
        return "second"

    assert await flight.run("k", ok) == ("second", True)


@pytest.mark.anyio
async def test_single_flight_leader_failure_after_forget_raises_the_real_error() -> None:
    # forget() while the leader runs, then the leader fails: run() does `del self._slots[key]` on a key that is
    # no longer there, so the caller gets KeyError instead of the ValueError fn raised.
    flight: SingleFlight[str] = SingleFlight()
    started = anyio.Event()
    release = anyio.Event()

    async def failing() -> str:
        started.set()
        await release.wait()
        raise ValueError("boom")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def leader() -> None:
                with pytest.raises(ValueError, match="boom"):
                    await flight.run("k", failing)

            tg.start_soon(leader)
            await started.wait()
            flight.forget("k")
            release.set()


@pytest.mark.anyio
async def test_single_flight_old_leader_failure_does_not_evict_a_newer_run() -> None:
    flight: SingleFlight[str] = SingleFlight(keep_results=True)
    started = anyio.Event()
    release = anyio.Event()
    second_calls = 0

    async def failing() -> str:
        started.set()
        await release.wait()
        raise ValueError("boom")

    async def second() -> str:
        nonlocal second_calls
        second_calls += 1
        return "fresh"

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def leader() -> None:
                with pytest.raises(ValueError):
                    await flight.run("k", failing)

            tg.start_soon(leader)
            await started.wait()
            flight.forget("k")
            assert await flight.run("k", second) == ("fresh", True)
            release.set()
    # the newer, successful result is still the cached one
    assert await flight.run("k", second) == ("fresh", False)
    assert second_calls == 1


@pytest.mark.anyio
async def test_single_flight_cancelled_leader_does_not_cancel_waiters() -> None:
    # The leader's caller is cancelled (its own task group failed). A waiter in another, uncancelled task must
    # not receive that cancellation: today it is re-raised into the waiter, whose task then ends silently as
    # "cancelled" (BlobCopier: the blob is never copied, yet the tree carries on to PUT the manifest).
    flight: SingleFlight[str] = SingleFlight()
    started = anyio.Event()
    outcome: list[object] = []
    scopes: list[anyio.CancelScope] = []

    async def slow() -> str:
        started.set()
        await anyio.sleep(3600)
        return "leader-value"

    async def leader() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await flight.run("k", slow)

    async def waiter() -> None:
        outcome.append("waiting")
        try:
            outcome.append(await flight.run("k", lambda: _value("waiter-value")))
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await started.wait()
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            scopes[0].cancel()
    assert outcome[0] == "waiting"
    assert "cancelled" not in outcome, "the leader's cancellation leaked into an uncancelled waiter"
    assert outcome[1:] == [("waiter-value", True)]  # the waiter takes over and runs its own fn


async def _value(v: str) -> str:
    return v
