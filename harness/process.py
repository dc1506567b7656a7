"""A server started as a real process on 127.0.0.1 with a free port, ready once an HTTP URL answers, stopped at
the end; it fails loudly (a missing binary, an early exit, no answer in time: a ``RuntimeError`` saying why,
with the end of its log). :class:`harness.moto_server.MotoServer` and :class:`harness.pushgateway.Pushgateway`
are two."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

from harness.registry import free_port

__all__ = ["ServerProcess"]


class ServerProcess:
    name = "server"
    ready_path = "/"
    ready_seconds = 60.0

    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / f"{self.name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The argv that starts it on :attr:`port` (raise ``RuntimeError`` when it is not installed)."""
        raise NotImplementedError

    def __enter__(self) -> ServerProcess:
        argv = self.command()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_seconds
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self._tail()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2):  # noqa: S310 - loopback
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} on port {self.port} not ready in {self.ready_seconds:g} s: {self._tail()}"
                )
            time.sleep(0.1)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()
