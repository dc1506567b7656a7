"""``mounts=False`` (``--no-mount``): isolated uploads, for registries that refuse mounts and for benchmarks."""

from __future__ import annotations

import pytest

import ocicopy
from harness import images
from harness.registry import RegistryServer, blob_uploads, mounts, upload_starts

pytestmark = pytest.mark.anyio


async def test_same_registry_copy_without_mounts_uploads(registry: RegistryServer, make_repo) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = images.make_image([images.layer(1001, 3000), images.layer(1002, 2000)])
    images.push(registry, src, "v1", image)
    options = ocicopy.ClientOptions(plain_http=frozenset({registry.host}), use_docker_config=False, mounts=False)
    mark = registry.mark()
    async with ocicopy.Client(options) as client:
        result = await client.copy(f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1")
    entries = registry.requests(mark)
    assert result.totals.blobs_copied == 3 and result.totals.blobs_mounted == 0
    assert mounts(entries) == [] and all(e.param("mount") is None for e in upload_starts(entries))
    assert len([e for e in blob_uploads(entries) if e.method == "PUT" and e.status == 201]) == 3
