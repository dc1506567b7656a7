"""Retry policy: what is retryable (a table), the backoff schedule, ``Retry-After`` parsing, and
:class:`Retrying`, the one retry loop every retrying step uses (requests, broken bodies, blob streams, blob
read resumes, manifest PUTs that race a concurrent writer).

The schedule is deterministic given its inputs (the jitter source, clock and sleep are passed in), so it is
tested without sockets or clocks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import anyio

from ocicopy.errors import SettingsError

#: HTTP statuses worth another try (distribution spec: 429 TOOMANYREQUESTS; 5xx transient server faults).
RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Spec error codes that are transient even when the status alone would not say so.
RETRYABLE_CODES: Final = frozenset({"TOOMANYREQUESTS", "UNAVAILABLE"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded in count and in time; ``Retry-After`` is honoured up to ``max_retry_after``."""

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    deadline: float = 300.0

    def __post_init__(self) -> None:
        # a policy of 0 attempts would make no request at all, and say nothing
        if not (_whole(self.attempts) and self.attempts >= 1):
            raise SettingsError(f"RetryPolicy: attempts must be a whole number, at least 1 (got {self.attempts!r})")
        for name in ("base_delay", "max_delay", "max_retry_after", "deadline"):
            value = getattr(self, name)
            if not (_number(value) and (value > 0 if name == "deadline" else value >= 0)):
                rule = "greater than 0" if name == "deadline" else "at least 0"
                raise SettingsError(f"RetryPolicy: {name} must be a number {rule} (got {value!r})")

    def counted(self) -> RetryPolicy:
        """The same policy bounded by count only: for steps that make progress and have deadlines of their own
        (a blob transfer may rightly take longer than ``deadline``)."""
        return replace(self, deadline=math.inf)

    def delay(self, attempt: int, retry_after: float | None = None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1).

        Exponential with "equal jitter": uniformly between half the ceiling and the ceiling, where the ceiling is
        ``base_delay * 2**(attempt-1)`` capped at ``max_delay`` (never a near-zero wait, yet concurrent clients
        spread out). A server's ``Retry-After`` replaces the schedule, capped at ``max_retry_after``.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 63))
        return float(ceiling / 2 + rand() * ceiling / 2)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


NO_RETRY: Final = RetryPolicy(attempts=1)


class Attempt:
    """One try of a :class:`Retrying` loop."""

    def __init__(self, loop: Retrying, number: int) -> None:
        self.number = number  # from 1
        self._loop = loop
        self.failed = False
        self.wait = 0.0

    @property
    def last(self) -> bool:
        """No further try is allowed (count or deadline reached)."""
        return not self._loop.may_retry(self.number)

    def retry(self, exc: BaseException, retry_after: float | None = None) -> None:
        """This try failed with ``exc``: re-raise it when no try is left, else schedule the next one (after the
        backoff, or ``retry_after`` seconds when the server said so)."""
        if self.last:
            raise exc
        self.failed = True
        self.wait = self._loop.policy.delay(self.number, retry_after, self._loop.rand)


class Retrying:
    """``async for attempt in Retrying(policy): try: return await step() except E as e: attempt.retry(e)``.

    Yields tries numbered from 1, sleeping the policy's delay between them; a try that neither returns nor
    calls :meth:`Attempt.retry` ends the loop. Bounded by ``policy.attempts`` and ``policy.deadline`` (from the
    first try). ``sleep``, ``clock`` and ``rand`` are injectable for tests.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self.sleep = sleep or anyio.sleep  # looked up now, not at import: tests replace anyio.sleep
        self.clock = clock
        self.rand = rand
        self.started = 0.0

    def may_retry(self, number: int) -> bool:
        return number < self.policy.attempts and self.clock() - self.started < self.policy.deadline

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        self.started = self.clock()
        number = 0
        while True:
            number += 1
            attempt = Attempt(self, number)
            yield attempt
            if not attempt.failed:
                return
            if attempt.wait > 0:  # 0: the caller waits its own way (a pause shared by every request to a host)
                await self.sleep(attempt.wait)


def is_retryable_status(status: int, codes: tuple[str, ...] = ()) -> bool:
    return status in RETRYABLE_STATUS or any(code in RETRYABLE_CODES for code in codes)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None when unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
