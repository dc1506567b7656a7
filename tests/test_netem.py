"""The benchmarks' link emulator (``harness/netem.py``): token-bucket math and proxy behaviour.

No timing assertions: the bucket is tested with a fake clock, the proxy for what it delivers (every byte, in
order, half-closes, closes on stop and on errors), never for how fast. Each socket test is bounded by
``anyio.fail_after``. Latency and throughput were measured by hand (see the module's docstring).
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from anyio.abc import SocketAttribute, SocketStream
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.netem import PROFILES, LinkEmulator, TokenBucket, default_burst
from harness.registry import RegistryServer, unique_repo_name

MiB = 1024 * 1024
DEADLINE = 30.0  # generous bound per socket test: a hang fails instead of blocking the suite


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- TokenBucket (pure)


def test_bucket_starts_full_then_queues_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 500, clock)
    assert bucket.reserve(500) == 0.0  # the burst is free
    assert bucket.reserve(100) == pytest.approx(0.1)
    assert bucket.reserve(200) == pytest.approx(0.3)  # queued behind the previous debt
    assert bucket.tokens == pytest.approx(-300)
    clock.now += 0.3
    assert bucket.reserve(0) == pytest.approx(0.0, abs=1e-9)
    assert bucket.reserve(1000) == pytest.approx(1.0)  # larger than the burst: allowed, after a wait


def test_bucket_waits_add_up_to_bytes_over_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(25e6, 64 * 1024, clock)
    sizes = [65536, 1, 4096, 65536, 12345, 65536, 7]
    waits = [bucket.reserve(n) for n in sizes]
    assert waits[0] == 0.0
    assert waits == sorted(waits)
    assert waits[-1] == pytest.approx((sum(sizes) - 64 * 1024) / 25e6)


def test_bucket_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 500, clock)
    bucket.reserve(500)
    clock.now += 3600  # an hour idle refills only the burst
    assert bucket.tokens == 500
    assert bucket.reserve(500) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.001)


def test_bucket_clock_going_backwards_refills_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, 100, clock)
    bucket.reserve(300)
    clock.now -= 10
    assert bucket.reserve(0) == pytest.approx(0.2)
    clock.now += 10
    assert bucket.reserve(0) == pytest.approx(0.2)  # time before the last reading is not counted twice


@pytest.mark.parametrize(("rate", "burst"), [(0, 10), (-1, 10), (math.nan, 10), (10, -1), (10, math.inf)])
def test_bucket_rejects_bad_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, FakeClock())


def test_bucket_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        TokenBucket(10, 10, FakeClock()).reserve(-1)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=1.0, max_value=1e10),
    burst=st.integers(min_value=0, max_value=4 * MiB),
    steps=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=5.0), st.integers(min_value=0, max_value=8 * MiB)),
        min_size=1,
        max_size=60,
    ),
)
def test_bucket_never_exceeds_burst_plus_rate_times_t(rate: float, burst: int, steps: list[tuple[float, int]]) -> None:
    """Bytes sendable by time t (each reservation sends at reserve time + wait) <= burst + rate * t."""
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, burst, clock)
    sends: list[tuple[float, int]] = []  # (send time, bytes)
    for advance, size in steps:
        clock.now += advance
        latest = max((t for t, _ in sends), default=0.0)
        idle_enough = clock.now >= latest + burst / rate
        wait = bucket.reserve(size)
        assert wait >= 0.0
        if idle_enough and size <= burst:
            assert wait == pytest.approx(
                0.0, abs=1e-6
            )  # work-conserving: a refilled bucket lets a burst-sized send through at once
        sends.append((clock.now + wait, size))
    sends.sort()
    total = 0
    for when, size in sends:
        total += size
        allowed = burst + rate * when
        assert total <= allowed * (1 + 1e-9) + 1e-6, (total, allowed)
    # and the bound is reached: everything queued at once is released exactly at the cap
    last, _ = sends[-1]
    if steps and all(advance == 0.0 for advance, _ in steps) and total > burst:
        assert total == pytest.approx(burst + rate * last)


def test_default_burst_covers_timer_granularity() -> None:
    assert default_burst(1000.0) == 64 * 1024
    assert default_burst(250e6) == pytest.approx(250e6 * 0.005)


# --------------------------------------------------------------------------- configuration


def test_profiles_shape() -> None:
    assert PROFILES["loopback"] == {}
    assert PROFILES["wan"] == {"source": (0.040, 200e6), "mirror": (0.002, 2e9)}
    for roles in PROFILES.values():
        for rtt, bandwidth in roles.values():
            LinkEmulator("127.0.0.1:1", rtt=rtt, bandwidth_bps=bandwidth)  # every profile is accepted


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bad_target(target: str) -> None:
    with pytest.raises(ValueError):
        LinkEmulator(target)


@pytest.mark.parametrize(
    ("rtt", "bandwidth"), [(-0.001, 1e6), (math.inf, 1e6), (0.01, 0), (0.01, -5), (0.01, math.nan)]
)
def test_bad_link_parameters(rtt: float, bandwidth: float) -> None:
    with pytest.raises(ValueError):
        LinkEmulator("127.0.0.1:5000", rtt=rtt, bandwidth_bps=bandwidth)


def test_start_once_and_stop_idempotent() -> None:
    link = LinkEmulator("127.0.0.1:9", rtt=0, name="once")
    assert link.host == ""
    link.stop()  # never started: nothing to do
    with link as started:
        assert started is link
        assert link.running
        host, _, port = link.host.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        with pytest.raises(RuntimeError):
            link.start()
    assert not link.running
    link.stop()


# --------------------------------------------------------------------------- proxy behaviour (sockets)

Handler = Callable[[SocketStream], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 in the test's event loop; yields ``"127.0.0.1:PORT"``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield f"127.0.0.1:{listener.extra(SocketAttribute.local_port)}"  # noqa: S610
        tg.cancel_scope.cancel()


@asynccontextmanager
async def emulate(target: str, *, rtt: float, bandwidth_bps: float) -> AsyncIterator[LinkEmulator]:
    link = LinkEmulator(target, rtt=rtt, bandwidth_bps=bandwidth_bps, name="test").start()
    try:
        yield link
    finally:
        await anyio.to_thread.run_sync(link.stop)
    assert not link.running


async def connect(host: str) -> SocketStream:
    address, _, port = host.rpartition(":")
    return await anyio.connect_tcp(address, int(port))


async def read_all(stream: SocketStream) -> bytes:
    """Read until end of stream (a reset counts as the end)."""
    chunks = []
    try:
        while True:
            chunks.append(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass
    return b"".join(chunks)


async def echo(stream: SocketStream) -> None:
    """Echo every byte; half-close when the client half-closes."""
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except anyio.EndOfStream:
            await stream.send_eof()
            await read_all(stream)
        except (anyio.BrokenResourceError, OSError):
            pass


async def digest_reply(stream: SocketStream) -> None:
    """Read to end of stream, then answer ``<length> <sha256>`` and close."""
    async with stream:
        data = await read_all(stream)
        await stream.send(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())


async def exchange(host: str, payload: bytes) -> bytes:
    """Send ``payload`` (then half-close) while reading the reply to its end."""
    async with await connect(host) as stream:
        result = b""

        async def receive() -> None:
            nonlocal result
            result = await read_all(stream)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            for offset in range(0, len(payload), 100_000):  # uneven writes
                await stream.send(payload[offset : offset + 100_000])
            await stream.send_eof()
        return result


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rtt", "bandwidth"),
    [(0.0, math.inf), (0.002, 2e9), (0.040, 200e6)],
    ids=["no-delay-no-cap", "mirror-profile", "source-profile"],
)
async def test_pass_through_is_byte_exact_both_ways(rtt: float, bandwidth: float) -> None:
    payload = os.urandom(3 * MiB + 12345)
    with anyio.fail_after(DEADLINE):
        async with serve(echo) as target, emulate(target, rtt=rtt, bandwidth_bps=bandwidth) as link:
            assert link.host != target
            echoed = await exchange(link.host, payload)
    assert len(echoed) == len(payload)
    assert echoed == payload
    assert link.stats["bytes_up"] == len(payload)
    assert link.stats["bytes_down"] == len(payload)
    assert link.stats["connections"] == 1
    assert link.stats["errors"] == 0


@pytest.mark.anyio
async def test_concurrent_connections_share_the_link_without_mixing() -> None:
    payloads = [os.urandom(512 * 1024 + i * 777) for i in range(8)]
    results: dict[int, bytes] = {}

    async def one(i: int, host: str) -> None:
        results[i] = await exchange(host, payloads[i])

    with anyio.fail_after(DEADLINE):
        async with (
            serve(echo) as target,
            emulate(target, rtt=0.010, bandwidth_bps=400e6) as link,
            anyio.create_task_group() as tg,
        ):
            for i in range(len(payloads)):
                tg.start_soon(one, i, link.host)
    assert [results[i] == payloads[i] for i in range(len(payloads))] == [True] * len(payloads)
    total = sum(map(len, payloads))
    assert link.stats == {"bytes_up": total, "bytes_down": total, "connections": len(payloads), "errors": 0}


@pytest.mark.anyio
async def test_cpu_seconds_counts_the_emulator_thread_only() -> None:
    """What the benchmarks subtract from this process's CPU: the relaying thread's time, and nothing else."""
    link = LinkEmulator("127.0.0.1:9", rtt=0, bandwidth_bps=math.inf, name="cpu")
    assert link.cpu_seconds == 0.0  # not started
    payload = os.urandom(16 * MiB)
    with anyio.fail_after(DEADLINE):
        async with serve(echo) as target, emulate(target, rtt=0.0, bandwidth_bps=math.inf) as link:
            idle = link.cpu_seconds
            busy_here = time.thread_time()
            sum(range(3_000_000))  # CPU in this thread: not the emulator's
            busy_here = time.thread_time() - busy_here
            assert link.cpu_seconds - idle < busy_here / 2
            process = time.process_time()
            assert await exchange(link.host, payload) == payload
            relayed = link.cpu_seconds - idle
            process = time.process_time() - process
    assert 0 < relayed <= process  # 32 MiB relayed; the emulator is a thread of this process
    assert link.cpu_seconds == pytest.approx(idle + relayed)  # stopped: the last reading stays


@pytest.mark.anyio
async def test_client_half_close_reaches_server_and_reply_still_arrives() -> None:
    payload = os.urandom(2 * MiB + 1)
    with anyio.fail_after(DEADLINE):
        async with serve(digest_reply) as target, emulate(target, rtt=0.020, bandwidth_bps=200e6) as link:
            reply = await exchange(link.host, payload)
    assert reply.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
    assert link.stats["bytes_down"] == len(reply)


@pytest.mark.anyio
async def test_server_half_close_reaches_client_and_client_can_still_send() -> None:
    banner = b"hello, then EOF from my side\n"
    received: list[bytes] = []
    done = anyio.Event()

    async def speak_first(stream: SocketStream) -> None:
        async with stream:
            await stream.send(banner)
            await stream.send_eof()
            received.append(await read_all(stream))
            done.set()

    payload = os.urandom(MiB)
    with anyio.fail_after(DEADLINE):
        async with (
            serve(speak_first) as target,
            emulate(target, rtt=0.020, bandwidth_bps=200e6) as link,
            await connect(link.host) as client,
        ):
            assert await read_all(client) == banner  # the server's EOF came through...
            await client.send(payload)  # ...and the other direction still flows
            await client.send_eof()
            await done.wait()
    assert received == [payload]


@pytest.mark.anyio
async def test_stop_closes_open_connections() -> None:
    with anyio.fail_after(DEADLINE):
        async with serve(echo) as target:
            link = LinkEmulator(target, rtt=0.002, bandwidth_bps=1e9).start()
            try:
                clients = [await connect(link.host) for _ in range(3)]
                for client in clients:
                    await client.send(b"ping")
                    assert await client.receive() == b"ping"  # the connection is open end to end
                await anyio.to_thread.run_sync(link.stop)
                assert not link.running
                for client in clients:
                    with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                        await client.receive()
                    await client.aclose()
                with pytest.raises(OSError):
                    await connect(link.host)  # the listener is closed too
            finally:
                link.stop()


@pytest.mark.anyio
async def test_refused_target_closes_the_client_quietly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        with anyio.fail_after(DEADLINE):
            async with emulate(f"127.0.0.1:{port}", rtt=0.002, bandwidth_bps=1e9) as link:
                async with await connect(link.host) as client:
                    assert await read_all(client) == b""
                assert link.running  # the emulator survives
    assert link.stats["connections"] == 1
    assert link.stats["errors"] == 1


@pytest.mark.anyio
async def test_client_reset_closes_the_server_side_and_the_link_keeps_working() -> None:
    ended = anyio.Event()
    received: list[bytes] = []

    async def sink_then_note_end(stream: SocketStream) -> None:
        async with stream:
            received.append(await read_all(stream))
            ended.set()

    with anyio.fail_after(DEADLINE):
        async with serve(sink_then_note_end) as target, emulate(target, rtt=0.010, bandwidth_bps=100e6) as link:
            address, _, port = link.host.rpartition(":")
            raw = socket.create_connection((address, int(port)))
            raw.sendall(os.urandom(256 * 1024))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # RST instead of FIN
            await ended.wait()  # the proxy closed the server side too
            assert link.running
            ended = anyio.Event()
            reply = await exchange(link.host, b"still works")  # a later connection is unaffected
            assert reply == b""
            await ended.wait()
    assert received[-1] == b"still works"
    assert link.stats["connections"] == 2
    assert link.stats["errors"] == 1  # the reset


# --------------------------------------------------------------------------- a real registry through the link


def test_registry_http_through_the_link(registry: RegistryServer) -> None:
    blob = os.urandom(3 * MiB)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    repo = unique_repo_name("netem")
    with (
        LinkEmulator(registry.host, rtt=0.004, bandwidth_bps=1e9, name="registry") as link,
        httpx2.Client(base_url=f"http://{link.host}", trust_env=False, timeout=DEADLINE) as http,
    ):
        ping = http.get("/v2/")
        assert ping.status_code == 200
        assert ping.headers["docker-distribution-api-version"] == "registry/2.0"
        started = http.post(f"/v2/{repo}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = httpx2.URL(started.headers["location"])
        assert location.host == "127.0.0.1"
        assert location.port == int(link.host.rpartition(":")[2])  # the registry saw the link's Host header
        done = http.put(location.copy_merge_params({"digest": digest}), content=blob)
        assert done.status_code == 201, done.text
        fetched = http.get(f"/v2/{repo}/blobs/{digest}")
        assert fetched.status_code == 200
        assert fetched.content == blob
    assert link.stats["bytes_up"] > len(blob)
    assert link.stats["bytes_down"] > len(blob)
    assert link.stats["connections"] >= 1
    assert link.stats["errors"] == 0
