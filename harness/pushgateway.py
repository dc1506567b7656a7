"""A real Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) on 127.0.0.1 with a free port, in memory
(no persistence file), stopped at the end. It fails loudly: a missing binary or a gateway that does not become
ready raises, saying why.

    with Pushgateway(tmp_path) as gateway:
        ... ocicopy mirror PLAN --metrics-push gateway.url ...
        text = gateway.metrics()
"""

from __future__ import annotations

import shutil
import urllib.request

from harness.process import ServerProcess

__all__ = ["Pushgateway"]

BINARY = "prometheus-pushgateway"


class Pushgateway(ServerProcess):
    name = "pushgateway"
    ready_path = "/-/ready"

    def command(self) -> list[str]:
        binary = shutil.which(BINARY)
        if binary is None:
            raise RuntimeError(f"{BINARY} is not installed (tools/_setup.sh installs the Debian package)")
        return [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="]

    def metrics(self) -> str:
        """What the gateway exposes now (its ``/metrics``: every pushed group, and its own metrics)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:  # noqa: S310 - loopback
            return str(answer.read().decode("utf-8"))

    def __enter__(self) -> Pushgateway:
        super().__enter__()
        return self
