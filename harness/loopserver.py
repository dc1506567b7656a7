"""A TCP listener on 127.0.0.1 served on its own anyio event loop in a daemon thread.

The link emulator (``harness/netem.py``) and the fault proxy (``harness/fault_proxy.py``) are both
such servers: sync tests and benchmarks start and stop them from their own thread.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.from_thread import BlockingPortal

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def parse_target(target: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 in brackets) to a host and port, or ValueError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"target must be 'HOST:PORT', got {target!r}")
    return host.strip("[]"), int(port)


class LoopbackServer:
    """Subclasses implement :meth:`_handle` (one accepted connection) and may override :meth:`_prepare`."""

    host: str

    def __init__(self, thread_name: str) -> None:
        self.host = ""
        self._thread_name = thread_name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._portal: BlockingPortal | None = None
        self._scope: anyio.CancelScope | None = None

    @property
    def running(self) -> bool:
        """True while the server's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ lifecycle (caller's thread)

    def start(self) -> Self:
        """Start listening (in a daemon thread with its own event loop); return self. Starts only once."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} was already started")
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"{self!r} did not start within {START_TIMEOUT:g} s")
        if self._error is not None or not self.host:
            raise RuntimeError(f"{self!r} failed to start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join the thread (at most ``STOP_TIMEOUT`` s). Idempotent."""
        thread, portal, scope = self._thread, self._portal, self._scope
        if thread is None:
            return
        if portal is not None and scope is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                portal.call(scope.cancel)
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            warnings.warn(f"{self!r}: thread still running {STOP_TIMEOUT:g} s after stop()", RuntimeWarning, 2)
        elif self._error is not None:
            warnings.warn(f"{self!r}: the server's event loop failed: {self._error!r}", RuntimeWarning, 2)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ event loop (server thread)

    def _run(self) -> None:
        try:
            anyio.run(self._main)
        except BaseException as exc:  # reported by start() if it happens before the listener is up
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        await self._prepare()
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener, BlockingPortal() as portal, anyio.create_task_group() as tg:
            self._portal, self._scope = portal, tg.cancel_scope
            self.host = f"127.0.0.1:{listener.extra(SocketAttribute.local_port)}"  # noqa: S610
            self._ready.set()
            await listener.serve(self._handle, task_group=tg)

    async def _prepare(self) -> None:
        """Runs on the server's loop before it listens."""

    async def _handle(self, client: SocketStream) -> None:
        raise NotImplementedError
