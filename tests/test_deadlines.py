"""A trickling source (slow-loris) cannot hold a copy: overall deadlines, against the real registry."""

from __future__ import annotations

import anyio
import pytest

import ocicopy
from harness import images
from harness.fault_proxy import Fault, FaultProxy
from harness.registry import RegistryServer, manifest_puts

pytestmark = pytest.mark.anyio


def options(*hosts: str, **timeouts: float) -> ocicopy.ClientOptions:
    return ocicopy.ClientOptions(
        plain_http=frozenset(hosts),
        use_docker_config=False,
        retry=ocicopy.RetryPolicy(attempts=2, base_delay=0.01),
        timeouts=ocicopy.Timeouts(read=30.0, **timeouts),
    )


async def test_slowloris_blob_hits_the_transfer_deadline(
    registry: RegistryServer, registry2: RegistryServer, make_repo
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = images.make_image([images.layer(3001, 200_000)])
    images.push(registry, src, "v1", image)
    with FaultProxy(registry.host) as proxy:
        # Every blob GET of the layer trickles at 2 kB/s: no read ever times out, the transfer would take minutes.
        proxy.add(Fault("slowloris", after_bytes=1000, rate_bytes_per_s=2000, times=-1, match=b"/blobs/sha256:"))
        mark = registry2.mark()
        opts = options(proxy.host, registry2.host, transfer_base=1.0, min_rate=10_000_000)
        with anyio.fail_after(60):
            async with ocicopy.Client(opts) as client:
                with pytest.raises(ocicopy.TransportError, match="deadline"):
                    await client.copy(f"{proxy.host}/{src}:v1", f"{registry2.host}/{dst}:v1")
    assert manifest_puts(registry2.requests(mark)) == []  # nothing tagged


async def test_slowloris_manifest_hits_the_request_deadline(registry: RegistryServer, make_repo) -> None:
    src = make_repo("src")
    images.push(registry, src, "v1", images.make_image([images.layer(3002, 1000)]))
    with FaultProxy(registry.host) as proxy:
        proxy.add(Fault("slowloris", after_bytes=10, rate_bytes_per_s=20, times=-1, match=b"/manifests/"))
        with anyio.fail_after(60):
            async with ocicopy.Client(options(proxy.host, request=1.0)) as client:
                with pytest.raises(ocicopy.TransportError, match="no complete answer within 1 s"):
                    await client.inspect(f"{proxy.host}/{src}:v1")
