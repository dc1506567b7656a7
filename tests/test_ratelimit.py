"""Rate limits (issue 13): the quota a registry announces, ``--min-pull-quota``, a spent quota failing fast, and the
adaptive in-flight limit per registry. Pure parts with hypothesis; the rest against the fake registry playing
Docker Hub's quota (``ratelimit-*`` headers on manifest answers, GETs counted, HEADs not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ocicopy
from harness import images
from harness.fake_registry import FakeRegistry, PullQuota, Quirks, is_blob_upload, is_manifest_get
from ocicopy.errors import QuotaError, QuotaExhaustedError
from ocicopy.ratelimit import AdaptiveLimit, Quota, describe, exhausted, parse_rate_limit
from ocicopy.result import RateLimit

# --------------------------------------------------------------------------- pure


def test_docker_hub_headers() -> None:
    quota = parse_rate_limit(
        {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600", "docker-ratelimit-source": "1.2.3.4"}
    )
    assert quota == RateLimit(limit=100, remaining=76, window_seconds=21600, source="1.2.3.4")
    assert describe("registry-1.docker.io", quota) == "registry-1.docker.io has 76 of 100 pulls left (window 6h)"
    assert parse_rate_limit({"ratelimit-limit": "100;w=21600"}) is None  # nothing said of what is left
    assert parse_rate_limit({"ratelimit-remaining": "lots"}) is None


@given(
    st.dictionaries(st.sampled_from(["ratelimit-limit", "ratelimit-remaining", "docker-ratelimit-source"]), st.text())
)
def test_any_header_text_parses_or_is_none(headers: dict[str, str]) -> None:
    quota = parse_rate_limit(headers)
    assert quota is None or (quota.remaining >= 0 and headers["ratelimit-remaining"].split(";")[0].strip().isdigit())


@given(st.integers(0, 10**6), st.integers(1, 10**6), st.integers(0, 10**6))
def test_values_round_trip(remaining: int, limit: int, window: int) -> None:
    quota = parse_rate_limit(
        {"ratelimit-remaining": f"{remaining};w={window}", "ratelimit-limit": f"{limit};w={window}"}
    )
    assert quota == RateLimit(limit=limit, remaining=remaining, window_seconds=window)


def test_a_spent_quota_or_a_long_wait_is_not_worth_retrying() -> None:
    spent = RateLimit(limit=100, remaining=0, window_seconds=21600)
    why = exhausted("hub", 429, spent, None, cap=60)
    assert why is not None and "pull rate limit exhausted" in why and "refills over 6h" in why
    assert "retry after 2h" in (exhausted("hub", 429, None, 7200, cap=60) or "")
    assert exhausted("hub", 429, None, 5, cap=60) is None  # a short wait: retried
    assert exhausted("hub", 429, RateLimit(remaining=3), None, cap=60) is None
    assert exhausted("hub", 503, spent, None, cap=60) is None  # only a 429 speaks of the quota


@given(st.integers(0, 50), st.lists(st.integers(0, 20), max_size=20), st.integers(0, 50))
def test_reservations_never_take_the_quota_below_the_floor(remaining: int, asks: list[int], floor: int) -> None:
    quota = Quota("hub")
    quota.observe(RateLimit(remaining=remaining))
    for n in asks:
        try:
            quota.reserve(n, floor)
        except QuotaError as exc:
            assert remaining - quota.pending - n < floor and f"--min-pull-quota {floor}" in str(exc)
        assert remaining - quota.pending >= floor or quota.pending == 0
    quota.release(quota.pending)
    assert quota.pending == 0


def test_an_unknown_quota_never_refuses() -> None:
    quota = Quota("fake")
    quota.reserve(1000, 10)
    assert quota.pending == 1000


@given(st.integers(1, 256), st.lists(st.booleans(), max_size=300))
def test_aimd_stays_between_one_and_the_ceiling(ceiling: int, answers: list[bool]) -> None:
    limit = AdaptiveLimit(ceiling)
    for pressure in answers:
        before = limit.limit
        if pressure:
            limit.pressure(limit._round)
            assert limit.limit == max(1.0, before / 2)
        else:
            limit.success()
            assert before <= limit.limit <= max(before + 1, ceiling)
        assert 1 <= limit.current <= ceiling
    assert (limit.lowest is None) == (not any(answers))


def test_answers_to_requests_sent_before_a_cut_do_not_cut_again() -> None:
    limit = AdaptiveLimit(64)
    rounds = [limit._round] * 10  # ten requests in flight when the registry starts answering 503
    for r in rounds:
        limit.pressure(r)
    assert limit.current == 32 and limit.lowest == 32
    limit.pressure(limit._round)  # a request sent after the cut: the pressure goes on
    assert limit.current == 16
    for _ in range(400):  # from 16 to 32 at +1/limit each: (32² - 16²) / 2 = 384 successes
        limit.success()
    assert limit.current == 32  # grown back by one per round of successes


@pytest.mark.anyio
async def test_the_limit_holds_requests_back() -> None:
    limit = AdaptiveLimit(2)
    limit.pressure(limit._round)  # down to 1
    peak, inside = 0, 0

    async def one() -> None:
        nonlocal peak, inside
        async with limit.slot():
            inside += 1
            peak = max(peak, inside)
            await anyio.sleep(0.01)
            inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert peak == 1


# --------------------------------------------------------------------------- the fake registry as Docker Hub


def client_for(*fakes: FakeRegistry, **limits: int) -> ocicopy.Client:
    retry = ocicopy.RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.002)
    hosts = frozenset(f.host for f in fakes)
    options = ocicopy.ClientOptions(
        plain_http=hosts, use_docker_config=False, retry=retry, limits=ocicopy.Limits(**limits)
    )
    return ocicopy.Client(options)


def plan_of(source: FakeRegistry, mirror: FakeRegistry, *images_: str) -> ocicopy.Plan:
    return ocicopy.parse_plan(
        {
            "mirror": {"registry": mirror.host, "prefix": "m", "mode": "service"},
            "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
            "deployments": [
                {"service": f"s{i}", "environment": "prod", "image": f"{source.host}/{ref}"}
                for i, ref in enumerate(images_)
            ],
        }
    )


@pytest.mark.anyio
async def test_the_report_says_what_quota_is_left() -> None:
    with FakeRegistry() as source, FakeRegistry() as mirror:
        source.seed("lib/app", "v1", images.make_image([images.layer(4101, 2000)]))
        quota = source.quirks.pull_quota = PullQuota(50)
        async with client_for(source, mirror) as client:
            report = await client.mirror(plan_of(source, mirror, "lib/app:v1"), ledger=False)
    assert report.ok, report
    stats = report.registries[source.host]
    assert stats.rate_limit is not None and stats.rate_limit.remaining == quota.left == 49  # one GET spent
    assert stats.rate_limit.limit == 100 and stats.rate_limit.window_seconds == 21600
    assert stats.requests == sum(1 for r in source.requests if r.kind != "v2")
    assert report.registries[mirror.host].rate_limit is None  # the mirror announces nothing


@pytest.mark.anyio
async def test_min_pull_quota_does_not_start_a_deployment_below_it() -> None:
    """4 pulls left, --min-pull-quota 2: an index of three platforms needs 4 GETs (the index, then 3 children
    reserved together): it is not started past the index, and nothing of it reaches the mirror. A single image
    (one GET) goes."""
    children = [images.make_image([images.layer(4200 + i, 900)], platform=("linux", a, None)) for i, a in
                enumerate(("amd64", "arm64", "s390x"))]  # fmt: skip
    with FakeRegistry() as source, FakeRegistry() as mirror:
        source.seed("lib/multi", "v1", images.make_index(children))
        source.seed("lib/one", "v1", images.make_image([images.layer(4300, 900)]))
        quota = source.quirks.pull_quota = PullQuota(4)
        async with client_for(source, mirror) as client:
            first = await client.mirror(plan_of(source, mirror, "lib/one:v1"), ledger=False, min_pull_quota=2)
            assert first.ok and quota.left == 3, first
            report = await client.mirror(plan_of(source, mirror, "lib/multi:v1"), ledger=False, min_pull_quota=2)
    (d,) = report.deployments
    assert d.action is ocicopy.MirrorAction.FAILED and d.error is not None
    assert "not started" in d.error and "--min-pull-quota 2" in d.error and "window 6h" in d.error, d.error
    assert quota.left == 2  # the index's GET, then no child's
    assert not [t for t in mirror.tags("m/s0") if "multi" in t]
    assert len([r for r in mirror.requests if is_blob_upload(r) and r.method == "PUT"]) == 2  # lib/one's only


@pytest.mark.anyio
async def test_a_spent_quota_fails_fast_with_its_window() -> None:
    with FakeRegistry() as source, FakeRegistry() as mirror:
        source.seed("lib/app", "v1", images.make_image([images.layer(4401, 900)]))
        source.quirks.pull_quota = PullQuota(0)
        async with client_for(source, mirror) as client:
            with pytest.raises(QuotaExhaustedError) as caught:
                await client.copy(f"{source.host}/lib/app:v1", f"{mirror.host}/m/app:v1")
    message = str(caught.value)
    assert "pull rate limit exhausted" in message and "retry after 6h" in message, message
    assert len([r for r in source.requests if is_manifest_get(r)]) == 1  # not retried
    assert mirror.tags("m/app") == []


@pytest.mark.anyio
async def test_pressure_halves_the_registrys_limit_and_the_copy_completes() -> None:
    """The mirror answers 503 to the first blob uploads: its in-flight limit is halved (once per round), the
    copy completes, and the report says how low it went and how many answers said so."""
    from harness.fake_registry import fail

    layers = [images.layer(4500 + i, 1500) for i in range(12)]
    with FakeRegistry() as source, FakeRegistry() as mirror:
        source.seed("lib/big", "v1", images.make_image(layers))
        mirror.before(fail(6, 503, when=lambda r: r.method == "POST" and r.kind == "upload"))
        async with client_for(source, mirror, in_flight=8) as client:
            result = await client.copy(f"{source.host}/lib/big:v1", f"{mirror.host}/m/big:v1")
    stats = result.registries[mirror.host]
    assert result.action is ocicopy.CopyAction.COPIED and stats.throttled == 6 and stats.retries >= 6
    assert stats.lowest_concurrency is not None and 1 <= stats.lowest_concurrency <= 4, stats
    assert result.registries[source.host].throttled == 0
    assert result.requests == sum(s.requests for s in result.registries.values())


def test_min_pull_quota_flag(tmp_path: Path) -> None:
    """The CLI: --min-pull-quota reaches the run (a deployment fails with the reason), and a negative one is
    exit 2 in one line."""
    with FakeRegistry(Quirks()) as source, FakeRegistry() as mirror:
        source.seed("lib/app", "v1", images.make_image([images.layer(4601, 900)]))
        source.quirks.pull_quota = PullQuota(1)
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({
            "mirror": {"registry": mirror.host, "prefix": "m"},
            "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
            "deployments": [{"service": "app", "environment": "prod", "image": f"{source.host}/lib/app:v1"}],
        }))  # fmt: skip
        run = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--no-ledger", "--json", "-"]
        # a cold mirror: the quota is learnt by a HEAD of the source (free) before the first GET
        refused = subprocess.run([*run, "--min-pull-quota", "1"], capture_output=True, check=False, timeout=120)
        assert refused.returncode == 1, refused.stderr.decode()
        (d,) = ocicopy.MirrorReport.model_validate_json(refused.stdout).deployments
        assert d.error is not None and "has 1 of 100 pulls left" in d.error, d.error
        assert not [r for r in source.requests if is_manifest_get(r)] and mirror.tags("m/app") == []
        done = subprocess.run([*run, "--min-pull-quota", "0"], capture_output=True, check=False, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        report = ocicopy.MirrorReport.model_validate_json(done.stdout)
        assert report.registries[source.host].rate_limit == RateLimit(limit=100, remaining=0, window_seconds=21600)
        bad = subprocess.run([*run, "--min-pull-quota", "-1"], capture_output=True, check=False, timeout=60)
    assert bad.returncode == 2 and bad.stderr.decode().count("\n") == 1, bad.stderr.decode()
    assert "--min-pull-quota must be 0 or more" in bad.stderr.decode()


@pytest.mark.anyio
async def test_a_concurrency_limiter_is_met_by_backing_off() -> None:
    """The fake's rate-limit switch: the mirror refuses (429) any request beyond 3 in flight. The copy of 16
    layers completes byte-exact: the 429s cut the mirror's limit (lowest below the start), each refused request
    was sent again (or, an upload's PUT, its upload started again), and the registry's own count of refusals is
    the report's."""
    layers = [images.layer(4700 + i, 3000) for i in range(16)]
    image = images.make_image(layers)
    with FakeRegistry() as source, FakeRegistry(Quirks(max_in_flight=3)) as mirror:
        source.seed("lib/wide", "v1", image)
        async with client_for(source, mirror, in_flight=16) as client:
            result = await client.copy(f"{source.host}/lib/wide:v1", f"{mirror.host}/m/wide:v1")
    refused = [r for r in mirror.requests if r.status == 429]
    stats = result.registries[mirror.host]
    assert result.digest == image.digest and mirror.manifest("m/wide", "v1") == image.manifest
    assert all(mirror.blob("m/wide", images.sha256(b)) == b for b in image.blobs().values())
    assert refused and stats.throttled == len(refused) and stats.retries >= 1, stats
    assert stats.lowest_concurrency is not None and stats.lowest_concurrency < 16, stats
