"""Network emulation for the benchmarks: a TCP proxy on 127.0.0.1 that adds latency and a bandwidth cap.

Everything runs on loopback and in this process (anyio, no ``tc``/``netem``, no root). A :class:`LinkEmulator`
listens on ``127.0.0.1:<free port>`` and forwards every accepted connection to ``target``; point a client at
:attr:`LinkEmulator.host` instead of the registry's own address::

    with LinkEmulator(registry.host, rtt=0.040, bandwidth_bps=200e6, name="source") as link:
        copy(f"{link.host}/repo:tag", ...)

Model (per emulator, i.e. per emulated network path):

- **Latency.** Every chunk read from one side is written to the other side no earlier than
  ``departure + rtt/2`` (one-way delay in both directions, so a request/response round trip costs ``rtt``).
  The delay is a pipeline, not a per-chunk stall: a reader task stamps each chunk with its due time and
  queues it, a writer task sleeps until each chunk is due and writes it, so a long transfer still reaches
  the bandwidth cap (it is only shifted by ``rtt/2``). End of stream travels the same way: a half-close
  (``shutdown(SHUT_WR)``) reaches the other side ``rtt/2`` after the last byte before it.
  Connection set-up is *not* charged (the proxy accepts on loopback at once), so a request on a fresh
  connection costs one ``rtt``, like one on a reused connection; a real TCP handshake would add one more.
- **Bandwidth.** One :class:`TokenBucket` per *direction* (up: client to target, down: target to client),
  each shared by all the emulator's connections: like a full-duplex link, an upload does not slow a
  concurrent download, but two downloads share the cap. A chunk *departs* when its tokens allow (its due
  time is ``departure + rtt/2``), and the reader sleeps until then before reading more, so back-pressure
  reaches the sender through TCP instead of piling up in the proxy. The burst is small: 64 KiB or 5 ms of
  traffic, whichever is larger (the event loop's timers are ~1 ms coarse; a smaller burst would lose
  capacity at high rates).
- **Memory** is bounded: reads are at most 64 KiB and each direction of a connection queues at most 64
  chunks (4 MiB); a full queue stops reading, which stops the sender.
- **Closing.** When one side half-closes, the proxy half-closes the other side (``send_eof``) after the
  delayed bytes, and the other direction keeps flowing until it ends too; then both sockets are closed. Any
  error (reset, broken pipe, refused connection to the target) closes both sides of that connection
  quietly. :meth:`LinkEmulator.stop` closes the listener and every open connection.

:data:`PROFILES` names the paths used by the benchmarks: ``(rtt seconds, bits per second)`` per registry
role; ``loopback`` has no entries (no emulator, connect directly).

Measured by hand (raw sockets, TCP_NODELAY, one connection reused; 2 CPUs, Python 3.11):

=============  ===========================  ================================  ====================
profile        small request/response       50 MiB one way (ideal)            4 x 12.5 MiB at once
=============  ===========================  ================================  ====================
direct         0.02 ms                      0.02 s                            0.08 s
wan/source     41.3 ms (fresh conn 43.6)    2.136 s (2.097 + 0.040 = 2.137)   2.16 s
wan/mirror     2.6 ms (fresh conn 4.6)      0.211 s (0.210 + 0.002 = 0.212)   0.23 s
=============  ===========================  ================================  ====================

Through a real ``docker-registry`` and httpx2 on the source profile: ``GET /v2/`` 45 ms, a 50 MiB blob
``GET`` 2.18-2.20 s. Uploads measure the same as downloads.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from anyio.abc import SocketStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from harness.loopserver import LoopbackServer, parse_target

__all__ = ["PROFILES", "LinkEmulator", "TokenBucket", "default_burst"]

READ_SIZE = 64 * 1024
"""Largest chunk read from a socket at once."""
QUEUE_CHUNKS = 64
"""Chunks in flight per direction of a connection (the delay line's bound)."""
MIN_BURST = 64 * 1024
"""Smallest token-bucket burst, in bytes."""
BURST_SECONDS = 0.005
"""The burst also covers this much traffic at the link's rate (timer granularity headroom)."""

PROFILES: dict[str, dict[str, tuple[float, float]]] = {
    "loopback": {},
    "wan": {"source": (0.040, 200e6), "mirror": (0.002, 2e9)},
}
"""Named network set-ups: registry role -> ``(rtt seconds, bandwidth bits per second)``."""

_ERRORS = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError)


class TokenBucket:
    """Token bucket in bytes, with an injected clock; it never sleeps itself.

    The bucket starts full (``burst`` bytes) and refills at ``rate_bytes_per_s`` up to ``burst``.
    :meth:`reserve` takes the tokens for ``n`` bytes *now* (the balance may go negative: a debt that later
    callers queue behind) and returns how long the caller must wait before sending them. Hence bytes may
    exceed the burst, callers are served in order, and the bytes sendable by time ``t`` after creation
    never exceed ``burst + rate * t``.
    """

    def __init__(self, rate_bytes_per_s: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_bytes_per_s > 0:
            raise ValueError(f"rate must be positive, got {rate_bytes_per_s!r}")
        if not burst >= 0 or math.isinf(burst):
            raise ValueError(f"burst must be a finite number >= 0, got {burst!r}")
        self.rate = float(rate_bytes_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    @property
    def tokens(self) -> float:
        """Current balance in bytes (negative while callers wait), refilled up to now."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:  # a clock that goes backwards refills nothing
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now

    def reserve(self, n: int) -> float:
        """Take ``n`` bytes' tokens now; return the seconds to wait (>= 0) before sending them."""
        if n < 0:
            raise ValueError(f"cannot reserve a negative number of bytes: {n}")
        self._refill()
        self._tokens -= n
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


def default_burst(rate_bytes_per_s: float) -> float:
    """The emulator's burst for a rate: 64 KiB or :data:`BURST_SECONDS` of traffic, whichever is larger."""
    return max(float(MIN_BURST), rate_bytes_per_s * BURST_SECONDS)


class LinkEmulator(LoopbackServer):
    """A TCP proxy on 127.0.0.1 that adds a round-trip delay and a bandwidth cap shared by all its connections.

    ``rtt`` is in seconds (``0`` for none); ``bandwidth_bps`` in bits per second, per direction
    (``math.inf`` for no cap). :meth:`start` runs the proxy's own event loop in a daemon thread;
    :attr:`host` (``"127.0.0.1:PORT"``) is valid after it. :attr:`stats` holds totals: ``bytes_up``
    (delivered to the target), ``bytes_down`` (delivered to clients), ``connections`` (accepted) and
    ``errors`` (connections closed by a reset, a broken pipe or a refused connection to the target).
    :attr:`cpu_seconds` is the CPU its thread has used, so a benchmark can leave the emulation out of the CPU it
    measures in the same process.
    """

    stats: dict[str, int]

    def __init__(self, target: str, *, rtt: float = 0.040, bandwidth_bps: float = 200e6, name: str = "link") -> None:
        if not rtt >= 0 or math.isinf(rtt):
            raise ValueError(f"rtt must be a finite number of seconds >= 0, got {rtt!r}")
        if not bandwidth_bps > 0:
            raise ValueError(f"bandwidth_bps must be positive (math.inf for no cap), got {bandwidth_bps!r}")
        super().__init__(f"netem-{name}")
        self.target = target
        self._target_host, self._target_port = parse_target(target)
        self.rtt = float(rtt)
        self.bandwidth_bps = float(bandwidth_bps)
        self.name = name
        self.stats = {"bytes_up": 0, "bytes_down": 0, "connections": 0, "errors": 0}
        self._up: TokenBucket | None = None
        self._down: TokenBucket | None = None
        self._cpu_clock: int | None = None
        self._cpu_seconds = 0.0

    def __repr__(self) -> str:
        return (
            f"LinkEmulator({self.name!r}, {self.host or 'not started'} -> {self.target}, "
            f"rtt={self.rtt * 1000:g} ms, bandwidth={self.bandwidth_bps / 1e6:g} Mbit/s)"
        )

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the emulator's thread has used: 0 before start, the last reading once stopped."""
        if self._cpu_clock is not None and self.running:
            with contextlib.suppress(OSError):  # the thread ended between the check and the reading
                self._cpu_seconds = time.clock_gettime(self._cpu_clock)
        return self._cpu_seconds

    async def _prepare(self) -> None:
        self._cpu_clock = time.pthread_getcpuclockid(threading.get_ident())  # this runs in the emulator's thread
        rate = self.bandwidth_bps / 8
        if not math.isinf(rate):  # one bucket per direction, shared by every connection
            self._up = TokenBucket(rate, default_burst(rate), anyio.current_time)
            self._down = TokenBucket(rate, default_burst(rate), anyio.current_time)

    async def _handle(self, client: SocketStream) -> None:
        await self._connection(client, self._up, self._down)

    async def _connection(self, client: SocketStream, up: TokenBucket | None, down: TokenBucket | None) -> None:
        self.stats["connections"] += 1
        async with client:
            try:
                upstream = await anyio.connect_tcp(self._target_host, self._target_port)
            except OSError:
                self.stats["errors"] += 1
                return  # target refused: the client sees its connection closed
            up_send, up_receive = anyio.create_memory_object_stream[tuple[float, bytes]](QUEUE_CHUNKS)
            down_send, down_receive = anyio.create_memory_object_stream[tuple[float, bytes]](QUEUE_CHUNKS)
            with up_send, up_receive, down_send, down_receive:
                async with upstream, anyio.create_task_group() as tg:
                    scope = tg.cancel_scope
                    tg.start_soon(self._guard, partial(self._read_side, client, up_send, up), scope)
                    tg.start_soon(self._guard, partial(self._write_side, up_receive, upstream, "bytes_up"), scope)
                    tg.start_soon(self._guard, partial(self._read_side, upstream, down_send, down), scope)
                    tg.start_soon(self._guard, partial(self._write_side, down_receive, client, "bytes_down"), scope)
        # both directions ended (or one failed): leaving the blocks closes both sockets

    async def _guard(self, work: Callable[[], Awaitable[None]], connection: anyio.CancelScope) -> None:
        """Run one half of a direction; a socket error (reset, broken pipe) closes the whole connection."""
        try:
            await work()
        except _ERRORS:
            if not connection.cancel_called:
                self.stats["errors"] += 1
                connection.cancel()

    async def _read_side(
        self, src: SocketStream, send: MemoryObjectSendStream[tuple[float, bytes]], bucket: TokenBucket | None
    ) -> None:
        """Read ``src``, stamp each chunk with its due time, queue it; queue ``b""`` at end of stream."""
        one_way = self.rtt / 2
        async with send:
            while True:
                try:
                    data = await src.receive(READ_SIZE)
                except anyio.EndOfStream:
                    await send.send((anyio.current_time() + one_way, b""))
                    return
                wait = bucket.reserve(len(data)) if bucket is not None else 0.0
                await send.send((anyio.current_time() + wait + one_way, data))
                if wait > 0:
                    await anyio.sleep(wait)  # back-pressure: read no faster than the link drains

    async def _write_side(
        self, receive: MemoryObjectReceiveStream[tuple[float, bytes]], dst: SocketStream, counter: str
    ) -> None:
        """Write each queued chunk to ``dst`` once due; half-close ``dst`` at the end-of-stream marker."""
        async with receive:
            async for due, data in receive:
                delay = due - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                if not data:
                    await dst.send_eof()
                    return
                await dst.send(data)
                self.stats[counter] += len(data)
