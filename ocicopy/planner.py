"""Planning (pure): where each deployment goes in the mirror, under which tag, and build keys.

Mirror repository
    service mode: ``{registry}/{prefix}/{service}``; cluster mode: ``{registry}/{prefix}/{cluster}``.

Mirror tag (:func:`mirror_tag`) for a source image
    ``{readable}--{hash}`` where ``readable`` is the source ``registry/repository[:tag][@alg-hex12]`` with every
    character outside ``[A-Za-z0-9_.-]`` turned into ``-`` (so ``ghcr.io/acme/api:1.4.2`` reads
    ``ghcr.io-acme-api-1.4.2``), leading ``-``/``.`` dropped (a tag starts with a word character: an IPv6
    registry ``[::1]:5000`` reads ``1--5000``), cut to fit, and ``hash`` is the first 24 hex digits (96 bits)
    of the SHA-256 of the normalised source reference (with a platform selection, followed by a newline and
    ``platforms=`` and the sorted, normalised platforms: ``linux/amd64,linux/arm64/v8``). At most 128 characters,
    valid tag grammar, the same for the same source on every machine, and distinct sources (or selections of one)
    get distinct tags (the readable part is for people; the hash decides; a collision needs 2^48 sources).

Build key (:func:`build_key`) for a build from git
    ``build-v1-`` + SHA-256 over canonical JSON (sorted keys, no spaces, UTF-8) of
    ``{"v": 1, "repository", "commit", "env", "build_args", "dockerfile", "target"}`` with the repository URL
    trimmed of whitespace, a trailing ``/`` and ``.git``, the commit lower-case, and the dockerfile path
    normalised (``./Dockerfile`` = ``Dockerfile``). It is used as the mirror tag of the build. Changing this
    function changes every key: bump the version instead.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ocicopy.location import LayoutReference, Location, parse_layout_reference
from ocicopy.plan import BuildSpec, Deployment, Mode, Plan
from ocicopy.platforms import parse_platform
from ocicopy.reference import Reference

MAX_TAG: Final = 128
HASH_HEX: Final = 24
BUILD_KEY_VERSION: Final = 1
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]")


def mirror_tag(source: Location, platforms: Sequence[str] = ()) -> str:
    """The mirror tag of a source image reference (see the module docstring); an OCI layout source reads
    ``oci-<path>``. A platform selection is another image (a child, or a subset index): its own tag."""
    readable = source.name if isinstance(source, Reference) else f"oci{source.path}"
    if source.tag is not None:
        readable += f":{source.tag}"
    if source.digest is not None:
        readable += f"@{source.digest.algorithm}-{source.digest.hex[:12]}"
    # A tag must start with [A-Za-z0-9_]: an IPv6 registry ("[::1]:5000") would start with "-".
    readable = _UNSAFE.sub("-", readable).lstrip("-.")[: MAX_TAG - HASH_HEX - 2] or "_"
    key = str(source)
    if platforms:
        key += "\nplatforms=" + ",".join(sorted({str(parse_platform(p)) for p in platforms}))
    digest = hashlib.sha256(key.encode()).hexdigest()[:HASH_HEX]
    return f"{readable}--{digest}"


def build_inputs(spec: BuildSpec) -> dict[str, object]:
    """The canonical inputs a build key hashes."""
    repository = spec.repository.strip().rstrip("/")
    repository = repository.removesuffix(".git")
    dockerfile = posixpath.normpath(spec.dockerfile.strip())
    return {
        "v": BUILD_KEY_VERSION,
        "repository": repository,
        "commit": spec.commit.lower(),
        "env": dict(sorted(spec.env.items())),
        "build_args": dict(sorted(spec.build_args.items())),
        "dockerfile": dockerfile,
        "target": spec.target or None,
    }


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build_key(spec: BuildSpec) -> str:
    """``build-v1-<sha256 hex>``: stable across releases and machines (test vectors in the tests)."""
    return f"build-v{BUILD_KEY_VERSION}-" + hashlib.sha256(canonical_json(build_inputs(spec))).hexdigest()


def mirror_repository(plan: Plan, deployment: Deployment) -> str:
    name = deployment.service if plan.target.mode is Mode.SERVICE else plan.target.cluster
    assert name is not None  # the plan validator requires a cluster in cluster mode
    return f"{plan.target.prefix}/{name}" if plan.target.prefix else name


@dataclass(frozen=True)
class Target:
    """One deployment, planned: its source (or build key) and its destination in the mirror."""

    index: int
    deployment: Deployment
    destination: Location
    source: Location | None = None
    build_key: str | None = None


def plan_targets(plan: Plan) -> list[Target]:
    """Every deployment's target, in plan order."""
    targets = []
    for i, d in enumerate(plan.deployments):
        repo = mirror_repository(plan, d)
        if d.build is not None:
            key = build_key(d.build)
            targets.append(Target(i, d, destination(plan, repo, key), build_key=key))
        else:
            assert d.source is not None
            tag = mirror_tag(d.source, d.platforms)
            targets.append(Target(i, d, destination(plan, repo, tag), d.source))
    return targets


def destination(plan: Plan, repository: str, tag: str) -> Location:
    """``registry/repository:tag``, or for a layout mirror ``oci:DIR/repository:tag`` (a layout per repository)."""
    if plan.target.layout is not None:
        root = parse_layout_reference(plan.target.layout)
        return LayoutReference(root.path / repository, tag, None)
    assert plan.target.registry is not None
    return Reference(plan.target.registry, repository, tag)


def ledger_repository(plan: Plan) -> str:
    """Where the blob-location ledger lives in the mirror registry."""
    if plan.target.ledger_repository:
        return plan.target.ledger_repository
    return f"{plan.target.prefix}/ocicopy-ledger" if plan.target.prefix else "ocicopy-ledger"
