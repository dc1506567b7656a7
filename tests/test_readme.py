"""The README's library example runs, as written, against two real registries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ocicopy
from harness import images
from harness.oracle import docker_ref, skopeo_digest
from harness.registry import RegistryServer, manifest_puts

README = Path(__file__).resolve().parent.parent / "README.md"


def library_example() -> str:
    text = README.read_text()
    section = text.split("## Library", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README has no python example under '## Library'"
    return match.group(1)


def test_readme_library_example_runs(registry: RegistryServer, registry2: RegistryServer) -> None:
    code = library_example()
    assert 'SOURCE = "127.0.0.1:5000"' in code and 'MIRROR = "127.0.0.1:5001"' in code
    code = code.replace('"127.0.0.1:5000"', repr(registry.host)).replace('"127.0.0.1:5001"', repr(registry2.host))
    image = images.make_image([images.layer(4242, 3000), images.layer(4243, 2000)])
    images.push(registry, "app", "1", image)
    mark = registry2.mark()
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})  # noqa: S102
    # The example copied once (one manifest PUT) and skipped twice; the mirror holds the exact source bytes.
    assert len(manifest_puts(registry2.requests(mark))) == 1
    assert skopeo_digest(docker_ref(registry2, "mirror/app", "1")) == image.digest


def test_readme_plan_example_is_a_valid_plan() -> None:
    section = README.read_text().split("## Mirroring", 1)[1]
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match, "README has no JSON plan under '## Mirroring'"
    plan = ocicopy.parse_plan(json.loads(match.group(1)))
    assert plan.mirror.mode is ocicopy.Mode.CLUSTER
    assert [d.service for d in plan.deployments] == ["api", "worker"]
    assert plan.deployments[1].build is not None
