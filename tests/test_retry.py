"""Tests for ocicopy.retry: the backoff schedule (deterministic with an injected jitter source), the
retryable table, and Retry-After parsing against a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocicopy.retry import NO_RETRY, RETRYABLE_CODES, Retrying, RetryPolicy, is_retryable_status, parse_retry_after

NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_delay=0.25, max_delay=8.0, max_retry_after=60.0)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


# --- delay ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [
        (1, 0.125, 0.25),
        (2, 0.25, 0.5),
        (3, 0.5, 1.0),
        (4, 1.0, 2.0),
        (5, 2.0, 4.0),
        (6, 4.0, 8.0),
        (7, 4.0, 8.0),  # capped
        (30, 4.0, 8.0),
    ],
)
def test_delay_schedule(attempt: int, low: float, high: float) -> None:
    assert POLICY.delay(attempt, rand=fixed(0.0)) == pytest.approx(low)
    assert POLICY.delay(attempt, rand=fixed(1.0)) == pytest.approx(high)
    assert low < POLICY.delay(attempt, rand=fixed(0.5)) < high


def test_delay_is_deterministic_given_rand() -> None:
    assert POLICY.delay(3, rand=fixed(0.3)) == POLICY.delay(3, rand=fixed(0.3))
    assert POLICY.delay(3, rand=fixed(0.3)) != POLICY.delay(3, rand=fixed(0.7))


def test_delay_uses_the_injected_source() -> None:
    calls: list[int] = []

    def rand() -> float:
        calls.append(1)
        return 0.0

    POLICY.delay(2, rand=rand)
    assert calls == [1]


def test_delay_default_random_stays_in_range() -> None:
    for _ in range(50):
        assert 0.125 <= POLICY.delay(1) <= 0.25


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, 0.0), (5.0, 5.0), (59.5, 59.5), (60.0, 60.0), (61.0, 60.0), (1e9, 60.0), (-3.0, 0.0), (float("inf"), 60.0)],
)
def test_delay_honours_retry_after_capped(retry_after: float, expected: float) -> None:
    def never() -> float:
        raise AssertionError("jitter must not be used when the server said when")

    assert POLICY.delay(1, retry_after, rand=never) == expected
    assert POLICY.delay(9, retry_after, rand=never) == expected


def test_retry_after_may_exceed_max_delay() -> None:
    assert POLICY.delay(1, 30.0) == 30.0 > POLICY.max_delay


def test_custom_policy_caps() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=3.0, max_retry_after=2.0)
    assert p.delay(1, rand=fixed(1.0)) == 1.0
    assert p.delay(2, rand=fixed(1.0)) == 2.0
    assert p.delay(3, rand=fixed(1.0)) == 3.0
    assert p.delay(1, 10.0) == 2.0


def test_no_retry_policy() -> None:
    assert NO_RETRY.attempts == 1


@given(
    st.integers(1, 64),
    st.floats(0.0, 1.0, exclude_max=True),
    st.floats(0.001, 10.0),
    st.floats(0.01, 100.0),
)
def test_delay_is_bounded_and_positive(attempt: int, r: float, base: float, cap: float) -> None:
    p = RetryPolicy(base_delay=base, max_delay=cap)
    d = p.delay(attempt, rand=fixed(r))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert ceiling / 2 <= d <= ceiling
    assert 0 < d <= cap


@given(st.integers(1, 63), st.floats(0.0, 1.0))
def test_delay_never_shrinks_with_attempts(attempt: int, r: float) -> None:
    assert POLICY.delay(attempt + 1, rand=fixed(r)) >= POLICY.delay(attempt, rand=fixed(r))


@given(st.floats(allow_nan=False), st.integers(1, 20))
def test_retry_after_delay_is_within_zero_and_cap(retry_after: float, attempt: int) -> None:
    d = POLICY.delay(attempt, retry_after)
    assert 0.0 <= d <= POLICY.max_retry_after


@pytest.mark.parametrize("attempt", [1025, 1100, 5000])
def test_delay_for_a_large_attempt_is_capped_not_an_overflow(attempt: int) -> None:
    # RetryPolicy(attempts=...) is the caller's choice; base_delay * 2 ** (attempt - 1) overflows a float once
    # attempt > 1024, although the result is capped by max_delay anyway.
    assert RetryPolicy(attempts=10_000).delay(attempt, rand=fixed(1.0)) == pytest.approx(8.0)


# --- retryable table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (425, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (200, False),
        (201, False),
        (202, False),
        (307, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (405, False),
        (409, False),
        (413, False),
        (416, False),
    ],
)
def test_retryable_status_table(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("status", "codes", "retryable"),
    [
        (400, ("TOOMANYREQUESTS",), True),
        (403, ("TOOMANYREQUESTS",), True),  # Docker Hub rate limit has been seen as 403 + TOOMANYREQUESTS
        (400, ("UNAVAILABLE",), True),
        (400, ("DENIED", "UNAVAILABLE"), True),
        (400, ("DENIED",), False),
        (404, ("MANIFEST_UNKNOWN",), False),
        (401, ("UNAUTHORIZED",), False),
        (400, ("toomanyrequests",), False),  # spec codes are upper case
        (503, ("DENIED",), True),
        (400, (), False),
    ],
)
def test_retryable_codes_table(status: int, codes: tuple[str, ...], retryable: bool) -> None:
    assert is_retryable_status(status, codes) is retryable


def test_retryable_codes_constant() -> None:
    assert frozenset({"TOOMANYREQUESTS", "UNAVAILABLE"}) == RETRYABLE_CODES


# --- Retry-After -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("007", 7.0),
        ("86400", 86400.0),
        ("Fri, 01 Mar 2024 12:00:30 GMT", 30.0),
        ("Fri, 01 Mar 2024 13:00:00 GMT", 3600.0),
        ("Friday, 01-Mar-24 12:01:00 GMT", 60.0),  # RFC 850 form
        ("Fri Mar  1 12:00:10 2024", 10.0),  # asctime form, no zone: UTC
        ("Fri, 01 Mar 2024 12:00:00 GMT", 0.0),
        ("Fri, 01 Mar 2024 11:00:00 GMT", 0.0),  # in the past
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Fri, 01 Mar 2024 13:00:00 +0100", 0.0),  # zone offset honoured: that is 12:00 UTC
    ],
)
def test_parse_retry_after_table(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "1.5", "1e3", "0x10", "+5", "Fri, 32 Mar 2024 12:00:00 GMT", "tomorrow at noon"],
)
def test_parse_retry_after_junk(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("\u00b2", id="superscript-two"),  # str.isdigit() is True, float() refuses it
        pytest.param("1\u00b2", id="digit-superscript"),
        pytest.param("Fri, 01 Mar 2024 12:00:00 +9999999999999999999999", id="huge-zone-offset"),
        pytest.param("Fri, 01 Mar 99999999999999999999 12:00:00 GMT", id="huge-year"),
    ],
)
def test_parse_retry_after_hostile_values_are_none_not_crashes(value: str) -> None:
    # A registry controls this header (httpx2 decodes non-UTF-8 header bytes as latin-1, so b"\xb2" becomes "²").
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_uses_the_real_clock_by_default() -> None:
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    got = parse_retry_after(future)
    assert got is not None
    assert 3500 < got <= 3600


@given(st.integers(0, 10**12))
def test_parse_retry_after_delta_seconds(n: int) -> None:
    assert parse_retry_after(str(n), now=NOW) == float(n)


@given(st.integers(0, 10**8))
def test_parse_retry_after_http_date_round_trip(seconds: int) -> None:
    when = NOW + timedelta(seconds=seconds)
    assert parse_retry_after(when.strftime("%a, %d %b %Y %H:%M:%S GMT"), now=NOW) == pytest.approx(seconds)


@given(st.text(st.characters(max_codepoint=127), max_size=60))
def test_parse_retry_after_is_none_or_non_negative(value: str) -> None:
    got = parse_retry_after(value, now=NOW)
    assert got is None or got >= 0.0


# --- Retrying: the one retry loop ------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def _run(policy: RetryPolicy, fail_times: int, clock: _Clock, retry_after: float | None = None) -> int:
    tries = 0
    async for attempt in Retrying(policy, sleep=clock.sleep, clock=clock, rand=fixed(1.0)):
        tries += 1
        try:
            if tries <= fail_times:
                raise OSError(f"try {tries}")
            return tries
        except OSError as exc:
            attempt.retry(exc, retry_after)
    raise AssertionError("the loop ended without a result")


@pytest.mark.anyio
async def test_retrying_retries_until_success_with_the_policy_delays() -> None:
    clock = _Clock()
    assert await _run(RetryPolicy(attempts=5, base_delay=0.25, max_delay=8.0), 3, clock) == 4
    assert clock.slept == [0.25, 0.5, 1.0]


@pytest.mark.anyio
async def test_retrying_reraises_the_last_failure_when_attempts_run_out() -> None:
    clock = _Clock()
    with pytest.raises(OSError, match="try 3"):
        await _run(RetryPolicy(attempts=3), 10, clock)
    assert len(clock.slept) == 2


@pytest.mark.anyio
async def test_retrying_stops_at_the_deadline() -> None:
    clock = _Clock()
    with pytest.raises(OSError, match="try 3"):  # 0 + 4 s + 8 s: past the 10 s deadline after the third
        await _run(RetryPolicy(attempts=50, base_delay=4.0, max_delay=8.0, deadline=10.0), 99, clock)
    assert clock.slept == [4.0, 8.0]


@pytest.mark.anyio
async def test_retrying_honours_retry_after_and_no_retry_policy() -> None:
    clock = _Clock()
    assert await _run(RetryPolicy(attempts=3), 1, clock, retry_after=7.0) == 2
    assert clock.slept == [7.0]
    with pytest.raises(OSError, match="try 1"):
        await _run(NO_RETRY, 1, _Clock())


@given(attempts=st.integers(1, 12), failures=st.integers(0, 20))
def test_retrying_tries_at_most_the_policy_attempts(attempts: int, failures: int) -> None:
    clock = _Clock()

    async def main() -> int | None:
        try:
            return await _run(RetryPolicy(attempts=attempts, deadline=1e9), failures, clock)
        except OSError:
            return None

    result = anyio.run(main)
    assert result == (failures + 1 if failures < attempts else None)
    assert len(clock.slept) == min(failures, attempts - 1)
