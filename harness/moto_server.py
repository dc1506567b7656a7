"""moto's server mode as a real process: AWS's control planes (here ECR's) on 127.0.0.1 with a free port, in
memory, stopped at the end. It fails loudly: a missing ``moto_server`` or one that does not answer raises.

    with MotoServer(tmp_path) as moto:
        env = moto.env()               # AWS_ENDPOINT_URL_ECR, test credentials, region
        ecr = moto.client("ecr")       # boto3, to look at what ocicopy did
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness.registry import free_port

__all__ = ["ACCOUNT", "REGION", "MotoServer"]

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-3"


class MotoServer:
    def __init__(self, log_dir: Path) -> None:
        self.log = log_dir / "moto.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """What a process needs to reach this moto as ECR: the endpoint (boto3 honours it) and test credentials."""
        return {
            "AWS_ENDPOINT_URL_ECR": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, service: str = "ecr") -> Any:
        import boto3

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def __enter__(self) -> MotoServer:
        binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        if not os.path.exists(binary):
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]': tools/_setup.sh does)")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(self.port)], stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):  # noqa: S310 - loopback
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto_server on port {self.port} not answering in 60 s: {self.log.read_text()}")
            time.sleep(0.2)

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
