"""A real Dask cluster of separate processes for the tests: ``dask scheduler`` and ``dask worker`` (no nanny,
so killing a worker's process kills the worker), on 127.0.0.1 with free ports, stopped at the end.

    with DaskProcesses(workers=[{}, {"region-eu": 1}]) as dask:
        ... ocicopy mirror PLAN --dask dask.address ...
        dask.kill_worker(0)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.registry import free_port

__all__ = ["DaskProcesses"]


class DaskProcesses:
    def __init__(
        self, workers: Sequence[Mapping[str, float]] = ({}, {}), threads: int = 4, log_dir: Path | None = None
    ):
        self.resources = [dict(r) for r in workers]
        self.threads = threads
        self.log_dir = log_dir
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.log_dir / f"{name}.log", "wb") if self.log_dir else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env)

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            "scheduler",
            ["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"],
        )

    def start_worker(self, resources: Mapping[str, float]) -> subprocess.Popen[bytes]:
        args = ["distributed.cli.dask_worker", self.address, "--nthreads", str(self.threads), "--no-nanny"]
        args += ["--host", "127.0.0.1", "--no-dashboard", "--name", f"w{len(self.workers)}"]
        if resources:
            args += ["--resources", " ".join(f"{k}={v:g}" for k, v in resources.items())]
        proc = self._spawn(f"worker{len(self.workers)}", args)
        self.workers.append(proc)
        return proc

    def wait(self, workers: int, timeout: float = 60) -> None:
        """Until the scheduler has ``workers`` workers; a ``RuntimeError`` saying what failed otherwise."""
        import distributed

        deadline = time.monotonic() + timeout
        while True:
            if self.scheduler is not None and self.scheduler.poll() is not None:
                raise RuntimeError(f"the Dask scheduler exited ({self.scheduler.returncode}) on port {self.port}")
            try:
                with distributed.Client(self.address, timeout=5, set_as_default=False) as client:
                    client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                    return
            except (OSError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Dask cluster at {self.address} has not {workers} workers: {exc}") from None
                time.sleep(0.5)

    def __enter__(self) -> DaskProcesses:
        self.start_scheduler()
        for resources in self.resources:
            self.start_worker(resources)
        try:
            self.wait(len(self.resources))
        except BaseException:
            self.stop()
            raise
        return self

    def kill_worker(self, i: int) -> None:
        self.workers[i].kill()
        self.workers[i].wait(10)

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
            self.scheduler.wait(10)

    def stop(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
