"""Rate limits: the pull quota a registry announces, reservations against it, and the adaptive in-flight limit.

* :func:`parse_rate_limit`: Docker Hub's ``ratelimit-limit: 100;w=21600`` / ``ratelimit-remaining: 76;w=21600``
  (and ``docker-ratelimit-source``) on manifest answers, GET and HEAD; a HEAD does not spend quota, so existence
  and digest checks are HEADs (REGISTRY-QUIRKS.md, "Rate limits").
* :class:`Quota`: what one host's last answer said is left, minus the GETs reserved and not answered yet;
  ``--min-pull-quota N`` reserves a deployment's manifest GETs before it starts (:meth:`Quota.reserve`), and a
  deployment that would leave fewer than N is not started (:class:`QuotaError`, nothing written).
* :func:`exhausted`: a 429 whose quota is spent (``ratelimit-remaining: 0``) or whose ``Retry-After`` is beyond
  the retry policy's cap is not retried: the window is in the message (Docker Hub's window is 6 hours).
* :class:`AdaptiveLimit`: requests in flight to one host, additive increase / multiplicative decrease: a 429 or
  503 halves the limit (once per round of requests: the answers to requests sent before the cut do not cut it
  again), each success adds ``1/limit`` (one per round), between 1 and the ceiling (``Limits.in_flight``). On
  Dask it holds across the workers: a cut on one worker is sent to every worker of the run, which lowers its own
  limit for that host to it (:meth:`AdaptiveLimit.adopt`; :mod:`ocicopy.dask_executor`); each grows back on its
  own successes. :func:`merge_stats` adds up what the workers saw.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Final

import anyio

from ocicopy.errors import QuotaError
from ocicopy.result import RateLimit, RegistryStats

#: Answers that mean "slow down" to the adaptive limit (distribution spec: 429 TOOMANYREQUESTS; 503 from
#: load balancers and ECR's per-action TPS limits).
PRESSURE: Final = frozenset({429, 503})


def _number(text: str | None) -> tuple[int | None, int | None]:
    """``"76;w=21600"`` → (76, 21600); anything malformed → (None, None)."""
    if not text:
        return None, None
    head, *params = (p.strip() for p in text.split(";"))
    if not head.isdigit() or len(head) > 18:
        return None, None
    window = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "w" and value.strip().isdigit() and len(value.strip()) <= 18:
            window = int(value.strip())
    return int(head), window


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """The quota an answer announces (``headers`` as httpx2 gives them: case-insensitive), or None."""
    remaining, window = _number(headers.get("ratelimit-remaining"))
    if remaining is None:
        return None
    limit, limit_window = _number(headers.get("ratelimit-limit"))
    source = headers.get("docker-ratelimit-source")
    return RateLimit(
        limit=limit,
        remaining=remaining,
        window_seconds=window if window is not None else limit_window,
        source=source[:100] if source else None,
    )


def describe(host: str, quota: RateLimit) -> str:
    """``registry-1.docker.io has 12 of 100 pulls left (window 6h)``."""
    of = f" of {quota.limit}" if quota.limit is not None else ""
    window = f" (window {_duration(quota.window_seconds)})" if quota.window_seconds else ""
    return f"{host} has {quota.remaining}{of} pulls left{window}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds % 60 else f"{seconds // 60}m"
    return f"{seconds}s"


def exhausted(host: str, status: int, quota: RateLimit | None, retry_after: float | None, cap: float) -> str | None:
    """Why a 429 is not worth retrying now (its quota is spent, or the registry asks for a wait beyond ``cap``
    seconds), or None (a transient 429: retry)."""
    if status != 429:
        return None
    spent = quota is not None and quota.remaining == 0
    if not spent and (retry_after is None or retry_after <= cap):
        return None
    parts = ["pull rate limit exhausted" if spent else "rate limited"]
    if quota is not None:
        parts.append(describe(host, quota))
    if retry_after is not None:
        parts.append(f"retry after {_duration(retry_after)}")
    elif quota is not None and quota.window_seconds:
        parts.append(f"the quota refills over {_duration(quota.window_seconds)}")
    parts.append("not retried now: run again later, or authenticate for a larger quota")
    return "; ".join(parts)


class Quota:
    """One host's quota as last announced, and the GETs reserved against it and not answered yet."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.last: RateLimit | None = None
        self.pending = 0

    def observe(self, quota: RateLimit) -> None:
        self.last = quota

    def reserve(self, count: int, floor: int) -> None:
        """Take ``count`` GETs, or raise :class:`QuotaError` when that would leave fewer than ``floor`` (an unknown
        quota, a registry sending no headers, never refuses)."""
        last = self.last
        if last is not None and last.remaining - self.pending - count < floor:
            left = max(last.remaining - self.pending, 0)
            raise QuotaError(
                f"not started: it needs {count} manifest GET(s) from "
                f"{describe(self.host, last.model_copy(update={'remaining': left})).replace(' has ', ', which has ')}"
                f"; --min-pull-quota {floor} keeps {floor}"
            )
        self.pending += count

    def release(self, count: int) -> None:
        """Reserved GETs answered (or not sent): the next announcement counts them."""
        self.pending = max(0, self.pending - count)


class AdaptiveLimit:
    """Requests in flight to one host, AIMD between 1 and ``ceiling`` (module docstring)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.lowest: int | None = None  # lowest limit reached; None: never lowered
        self.peer_cuts = 0  # cuts adopted from another process (a Dask worker throttled by this host)
        self.on_cut: Callable[[int], None] | None = None  # told the new limit after each cut of its own
        self.in_flight = 0
        self._round = 0  # bumped at each cut: answers to requests of an earlier round do not cut again
        self._freed = anyio.Event()

    @property
    def current(self) -> int:
        return max(1, math.floor(self.limit))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        while self.in_flight >= self.current:
            await self._freed.wait()
        self.in_flight += 1
        try:
            yield Slot(self, self._round)
        finally:
            self.in_flight -= 1
            self._wake()

    def _wake(self) -> None:
        """Every waiter checks again (each waits on the event of its time; a new one for the next)."""
        self._freed.set()
        self._freed = anyio.Event()

    def pressure(self, round_: int) -> None:
        if round_ != self._round:
            return  # sent before the last cut: that cut already answered this pressure
        self._lower(self.limit / 2)
        if self.on_cut is not None:
            self.on_cut(self.current)

    def adopt(self, limit: int) -> bool:
        """Another process's cut (a peer throttled by this host): go down to ``limit`` if above it."""
        if limit >= self.current:
            return False
        self._lower(float(limit))
        self.peer_cuts += 1
        return True

    def _lower(self, limit: float) -> None:
        self._round += 1
        self.limit = max(1.0, limit)
        self.lowest = self.current if self.lowest is None else min(self.lowest, self.current)

    def success(self) -> None:
        if self.limit < self.ceiling:
            before = self.current
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            if self.current > before:
                self._wake()


class Slot:
    """One request's place in an :class:`AdaptiveLimit`: say how its answer went."""

    def __init__(self, limit: AdaptiveLimit, round_: int) -> None:
        self._limit, self._round = limit, round_

    def answered(self, status: int) -> None:
        if status in PRESSURE:
            self._limit.pressure(self._round)
        elif status < 400:
            self._limit.success()


def merge_stats(parts: Iterable[Mapping[str, RegistryStats]]) -> dict[str, RegistryStats]:
    """Several processes' registry stats as one (a Dask run: the client's and each worker's): counts added, the
    lowest limit the lowest of all, the quota the one with the least left."""
    out: dict[str, RegistryStats] = {}
    for part in parts:
        for host, s in part.items():
            if host not in out:
                out[host] = s
                continue
            o = out[host]
            lows = [x for x in (o.lowest_concurrency, s.lowest_concurrency) if x is not None]
            quotas = [q for q in (o.rate_limit, s.rate_limit) if q is not None]
            out[host] = RegistryStats(
                requests=o.requests + s.requests,
                retries=o.retries + s.retries,
                throttled=o.throttled + s.throttled,
                peer_cuts=o.peer_cuts + s.peer_cuts,
                rate_limit=min(quotas, key=lambda q: q.remaining) if quotas else None,
                lowest_concurrency=min(lows) if lows else None,
            )
    return dict(sorted(out.items()))
