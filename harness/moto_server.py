"""moto's server mode as a real process: AWS's control planes (here ECR's) on 127.0.0.1 with a free port, in
memory, stopped at the end. It fails loudly: a missing ``moto_server`` or one that does not answer raises.

    with MotoServer(tmp_path) as moto:
        env = moto.env()               # AWS_ENDPOINT_URL_ECR, test credentials, region
        ecr = moto.client("ecr")       # boto3, to look at what ocicopy did
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from harness.process import ServerProcess

__all__ = ["ACCOUNT", "REGION", "MotoServer"]

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-3"


class MotoServer(ServerProcess):
    name = "moto"
    ready_path = "/moto-api/"

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

    def command(self) -> list[str]:
        binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
        if not os.path.exists(binary):
            raise RuntimeError("moto_server is not installed (pip install 'moto[server]': tools/_setup.sh does)")
        return [binary, "-H", "127.0.0.1", "-p", str(self.port)]

    def __enter__(self) -> MotoServer:
        super().__enter__()
        return self
