"""Retry policy: what is retryable (a table), the backoff schedule, ``Retry-After`` parsing. Pure.

The async loop that uses these lives in :mod:`ocicopy.transport`; everything here is deterministic given
its inputs (the jitter source is passed in), so it is tested without sockets or clocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

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

    def delay(self, attempt: int, retry_after: float | None = None, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1): full-jitter exponential."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 63))
        return float(ceiling / 2 + rand() * ceiling / 2)


NO_RETRY: Final = RetryPolicy(attempts=1)


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
