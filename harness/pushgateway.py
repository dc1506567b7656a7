"""A real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on 127.0.0.1 with a free port, in memory
(no persistence file), stopped at the end. It fails loudly: a missing binary or a gateway that does not become
ready raises, saying why.

    with Pushgateway(tmp_path) as gateway:
        ... ocicopy mirror PLAN --metrics-push gateway.url ...
        text = gateway.metrics()
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from harness.registry import free_port

__all__ = ["Pushgateway"]

BINARY = "prometheus-pushgateway"


class Pushgateway:
    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "pushgateway.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Pushgateway:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed (tools/_setup.sh installs the Debian package)")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{BINARY} exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{BINARY} on port {self.port} not ready in 30 s: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def metrics(self) -> str:
        """What the gateway exposes now (its ``/metrics``: every pushed group, and its own metrics)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
            return str(answer.read().decode("utf-8"))

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
