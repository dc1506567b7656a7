"""A deterministic mirroring workload: 10 services × 3 environments sharing base layers, some multi-arch.

Shape (sizes are compressed MiB at ``scale=1``; every size is multiplied by ``scale``):

- an OS layer (4 MiB per architecture) under every image;
- a language-runtime layer: ``python`` (16 MiB per architecture) for 7 services, ``jre`` (24 MiB) for 2; the
  ``gateway`` service is a static binary on the OS layer alone;
- per service a dependency layer (6-16 MiB) and an app layer (0.75-8 MiB);
- environments ``prod`` and ``staging`` run the same version (the same source tag); ``dev`` runs the next version,
  which differs only in the app layer (and so in the config and manifest);
- ``api``, ``web`` and ``gateway`` are two-platform indexes (linux/amd64 + linux/arm64/v8) whose OS, runtime and
  dependency layers are per architecture; the Python app layer is architecture-independent (shared by both
  children), the gateway binary is not;
- media types alternate per service between OCI (image manifest / image index) and Docker schema 2 (manifest /
  manifest list).

About 255 MiB of unique blobs at ``scale=1`` (51 MiB at 0.2). Layer content (``content=``):

- ``usr`` (default when ``/usr`` has enough files): ``tar`` + gzip (level 6, like ``docker build``) of real files
  from ``/usr``: a deterministic window of the sorted file list (start drawn from the layer's seed), added in path
  order until the compressed size reaches the layer's target, with mtime 0, uid/gid 0 and a gzip header without
  name or time. Deterministic for a given ``/usr`` (the :attr:`Workload.fingerprint` tells two runs apart), and it
  compresses like real layers (about 3.8:1 with gzip -6 on this machine's /usr).
- ``random``: :func:`harness.images.layer` pseudo-random bytes (incompressible; identical on every
  machine); the fallback when ``/usr`` is too small.

Source layout: repository ``acme/<service>``, tags ``1.<i>.0`` (prod, staging) and ``1.<i>.1`` (dev);
:meth:`Workload.ship` adds ``1.<i>.2`` of one service (a new app layer) and moves its deployments to it. Run
``python -m benchmarks.workload [--scale S] [--content usr|random]`` to generate and describe it.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from harness.images import Image, Index, Layer, layer, make_image, make_index, push, sha256

if TYPE_CHECKING:
    from harness.registry import RegistryServer

MiB: Final = 1024 * 1024
SEED: Final = 20261126
ENVIRONMENTS: Final = ("prod", "staging", "dev")
LIVE_ENVIRONMENTS: Final = ("prod", "staging")  # same version; "dev" runs the next one
GZIP_LEVEL: Final = 6
USR_ROOTS: Final = ("bin", "include", "lib", "libexec", "sbin", "share")
MAX_USR_FILE: Final = 4 * MiB
MIN_LAYER: Final = 64 * 1024
PREFIX: Final = "mirror"  # the mirror's repository prefix in the plans
CLUSTER: Final = "bench"  # the cluster name: cluster mode's one repository is PREFIX/CLUSTER

Content = Literal["auto", "usr", "random"]
Arch = Literal["amd64", "arm64"]


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its runtime, platforms, media types and layer sizes (MiB at scale 1)."""

    name: str
    runtime: str | None  # "python", "jre" or None (static binary)
    archs: tuple[Arch, ...]
    media: Literal["oci", "docker"]
    deps_mib: float
    app_mib: float

    @property
    def multi_arch(self) -> bool:
        return len(self.archs) > 1

    @property
    def app_per_arch(self) -> bool:
        """A static binary is built per architecture; interpreted app code is the same bytes on both."""
        return self.runtime is None


SERVICES: Final = (
    ServiceSpec("api", "python", ("amd64", "arm64"), "oci", 12, 2),
    ServiceSpec("web", "python", ("amd64", "arm64"), "docker", 10, 3),
    ServiceSpec("gateway", None, ("amd64", "arm64"), "oci", 6, 8),
    ServiceSpec("auth", "python", ("amd64",), "docker", 8, 1),
    ServiceSpec("billing", "jre", ("amd64",), "oci", 14, 2),
    ServiceSpec("search", "jre", ("amd64",), "docker", 16, 2),
    ServiceSpec("worker", "python", ("amd64",), "oci", 12, 1.5),
    ServiceSpec("notify", "python", ("amd64",), "docker", 6, 0.75),
    ServiceSpec("reports", "python", ("amd64",), "oci", 10, 1.5),
    ServiceSpec("scheduler", "python", ("amd64",), "docker", 8, 1),
)
BASE_MIB: Final = {"os": 4.0, "python": 16.0, "jre": 24.0}


def versions(index: int) -> tuple[str, str]:
    """(live version for prod and staging, dev version) of the service at ``index``."""
    return f"1.{index}.0", f"1.{index}.1"


# --------------------------------------------------------------------------- layer content


@dataclass(frozen=True)
class LayerSpec:
    """A layer to generate: a stable key (``os/amd64``, ``app/api/1.0.1``…), its target size and seed."""

    key: str
    size: int

    @property
    def seed(self) -> int:
        return int.from_bytes(hashlib.sha256(f"{SEED}:{self.key}".encode()).digest()[:8], "big")


def layer_specs(scale: float) -> dict[str, LayerSpec]:
    """Every distinct layer of the workload, by key."""
    specs: dict[str, LayerSpec] = {}

    def add(key: str, mib: float) -> None:
        specs.setdefault(key, LayerSpec(key, max(MIN_LAYER, int(mib * scale * MiB))))

    for i, svc in enumerate(SERVICES):
        for arch in svc.archs:
            add(f"os/{arch}", BASE_MIB["os"])
            if svc.runtime is not None:
                add(f"{svc.runtime}/{arch}", BASE_MIB[svc.runtime])
            add(f"deps/{svc.name}/{arch}", svc.deps_mib)
            for version in versions(i):
                add(_app_key(svc, version, arch), svc.app_mib)
    return specs


def _app_key(svc: ServiceSpec, version: str, arch: str) -> str:
    return f"app/{svc.name}/{version}/{arch}" if svc.app_per_arch else f"app/{svc.name}/{version}"


def usr_files(root: Path = Path("/usr")) -> list[tuple[str, int]]:
    """Regular files (≤ 4 MiB, no symlinks) under ``/usr``'s usual directories, sorted by path."""
    files: list[tuple[str, int]] = []
    for sub in USR_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root / sub):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_USR_FILE and os.access(path, os.R_OK):
                    files.append((path, st.st_size))
    files.sort()
    return files


class _HashingWriter(io.RawIOBase):
    """Passes writes to ``target`` and hashes them (the uncompressed tar: the layer's diff_id)."""

    def __init__(self, target: gzip.GzipFile) -> None:
        self.target = target
        self.hasher = hashlib.sha256()
        self.position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hasher.update(view)
        self.target.write(view)
        self.position += len(view)
        return len(view)


def usr_layer(files: list[tuple[str, int]], spec: LayerSpec, level: int = GZIP_LEVEL) -> tuple[bytes, str]:
    """``tar+gzip`` of a deterministic window of ``files`` reaching ``spec.size`` compressed: (blob, diff_id)."""
    out = io.BytesIO()
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=level, mtime=0)
    raw = _HashingWriter(gz)
    index = spec.seed % len(files)
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(len(files)):
            if out.tell() >= spec.size:
                break
            path, size = files[index]
            index = (index + 1) % len(files)
            # Near the target, skip files that would overshoot it by far (assume about 2:1 compression).
            if size > 2 * (spec.size - out.tell()) + MIN_LAYER:
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read(MAX_USR_FILE + 1)
            except OSError:
                continue
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime, info.mode = len(data), 0, os.lstat(path).st_mode & 0o755
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    gz.close()
    return out.getvalue(), "sha256:" + raw.hasher.hexdigest()


_POOL: list[tuple[str, int]] = []


def _init_worker(files: list[tuple[str, int]]) -> None:
    global _POOL
    _POOL = files


def _make_usr_layer(spec: LayerSpec) -> tuple[str, bytes, str]:
    blob, diff = usr_layer(_POOL, spec)
    return spec.key, blob, diff


def generate_layers(
    specs: dict[str, LayerSpec], content: Content, jobs: int, log: Callable[[str], None]
) -> tuple[dict[str, Layer], str]:
    """Build every layer: (layers by key, the content kind actually used)."""
    files: list[tuple[str, int]] = []
    if content in ("auto", "usr"):
        files = usr_files()
        available = sum(size for _, size in files)
        needed = 4 * sum(s.size for s in specs.values())  # windows are drawn at random: keep them mostly distinct
        if available < needed:
            if content == "usr":
                raise SystemExit(f"/usr holds {available // MiB} MiB of usable files, {needed // MiB} MiB needed")
            log(f"/usr holds only {available // MiB} MiB of usable files: falling back to random content")
            files = []
    if not files:
        return {k: layer(s.seed % 2**32, s.size) for k, s in specs.items()}, "random"
    log(f"{len(files)} files ({sum(size for _, size in files) // MiB} MiB) under /usr to draw layers from")
    ordered = sorted(specs.values(), key=lambda s: -s.size)  # largest first: balances the workers
    layers: dict[str, Layer] = {}
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(files,)) as pool:
        for key, blob, diff in pool.map(_make_usr_layer, ordered):
            layers[key] = Layer(blob, diff)
    return layers, "usr"


# --------------------------------------------------------------------------- images and deployments


@dataclass(frozen=True)
class Deployment:
    service: str
    environment: str
    repository: str  # in the source registry
    tag: str

    def image(self, host: str) -> str:
        return f"{host}/{self.repository}:{self.tag}"


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    repository: str  # a source repository that holds it
    kind: str  # the layer key, or "config"


@dataclass(frozen=True)
class ManifestItem:
    """A manifest as a copier must push it: children by digest first (``child``), then tagged tops."""

    repository: str
    reference: str  # source tag for a top, digest for an index child
    data: bytes
    media_type: str
    child: bool

    @property
    def digest(self) -> str:
        return sha256(self.data)


@dataclass
class Workload:
    """The generated images (in memory) and the 30 deployments that use them."""

    scale: float
    content: str
    images: dict[tuple[str, str], Image | Index]  # (service, version) -> image or index
    layer_keys: dict[str, str]  # layer digest -> layer key
    deployments: list[Deployment]
    generation_seconds: float = 0.0
    pushed: bool = field(default=False, repr=False)
    layers: dict[str, Layer] = field(default_factory=dict, repr=False)  # layer key -> layer
    shipped: dict[str, str] = field(default_factory=dict)  # service -> the version :meth:`ship` added

    @staticmethod
    def repository(service: str) -> str:
        return f"acme/{service}"

    def blobs(self) -> dict[str, BlobInfo]:
        """Every unique blob (layers and configs) by digest."""
        out: dict[str, BlobInfo] = {}
        for (service, _), obj in self.images.items():
            for digest, data in obj.blobs().items():
                kind = self.layer_keys.get(digest, "config")
                out.setdefault(digest, BlobInfo(digest, len(data), self.repository(service), kind))
        return out

    def manifests(self) -> list[ManifestItem]:
        """Every unique manifest: index children (by digest) first, then each source tag's top manifest."""
        children: list[ManifestItem] = []
        tops: list[ManifestItem] = []
        for (service, version), obj in self.images.items():
            repo = self.repository(service)
            if isinstance(obj, Index):
                for child in obj.images:
                    children.append(ManifestItem(repo, child.digest, child.manifest, child.media_type, True))
            tops.append(ManifestItem(repo, version, obj.manifest, obj.media_type, False))
        return children + tops

    @property
    def unique_bytes(self) -> int:
        return sum(b.size for b in self.blobs().values())

    @property
    def has_index(self) -> bool:
        """Some source tag is a multi-platform index (its copy chain has the children's GETs and PUTs)."""
        return any(isinstance(obj, Index) for obj in self.images.values())

    @property
    def fingerprint(self) -> str:
        """sha256 over the sorted top-level manifest digests: equal fingerprints, identical workloads."""
        tops = sorted(obj.digest for obj in self.images.values())
        return sha256("\n".join(tops).encode())

    def summary(self) -> dict[str, Any]:
        blobs = self.blobs()
        layers = [b for b in blobs.values() if b.kind != "config"]
        kinds: dict[str, int] = {}
        for b in layers:
            kinds[b.kind.split("/")[0]] = kinds.get(b.kind.split("/")[0], 0) + b.size
        manifests = self.manifests()
        return {
            "scale": self.scale,
            "content": self.content,
            "services": len(SERVICES),
            "environments": list(ENVIRONMENTS),
            "deployments": len(self.deployments),
            "source_tags": len(self.images),
            "multi_arch_services": [s.name for s in SERVICES if s.multi_arch],
            "media_types": sorted({m.media_type for m in manifests}),
            "unique_blobs": len(blobs),
            "unique_layers": len(layers),
            "unique_bytes": self.unique_bytes,
            "bytes_by_layer_kind": kinds,
            "manifests": len(manifests),
            "index_children": sum(m.child for m in manifests),
            "fingerprint": self.fingerprint,
            "generation_seconds": round(self.generation_seconds, 2),
        }

    def push(self, server: RegistryServer, jobs: int = 4, only: Iterable[tuple[str, str]] | None = None) -> None:
        """Seed the source registry: every (service, version) under ``acme/<service>:<version>`` (or ``only``)."""
        wanted = None if only is None else set(only)
        # One thread per repository: distribution 2.8 can answer "blob unknown" to a manifest PUT while another
        # upload of the same blob into the same repository rewrites its link file (seen at tiny scales, where
        # versions of a service share every layer).
        by_repo: dict[str, list[tuple[str, Image | Index]]] = {}
        for (service, version), obj in self.images.items():
            if wanted is None or (service, version) in wanted:
                by_repo.setdefault(self.repository(service), []).append((version, obj))

        def one(repo: str) -> None:
            for version, obj in by_repo[repo]:
                push(server, repo, version, obj)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, list(by_repo)))
        self.pushed = True

    def ship(self, service: str, log: Callable[[str], None] | None = None) -> Workload:
        """The workload after ``service`` ships its next version: a new app layer, everything else reused.

        The new version (``1.<i>.2``) differs from the dev version only in its app layer (same size, new
        content of the same kind), so in its config and manifest(s); every deployment of ``service`` (prod,
        staging and dev) moves to it. Push it with ``push(server, only=[(service, version)])``.
        """
        index = next((i for i, s in enumerate(SERVICES) if s.name == service), None)
        if index is None:
            raise ValueError(f"unknown service {service!r} (one of {', '.join(s.name for s in SERVICES)})")
        svc, version = SERVICES[index], f"1.{index}.2"
        specs = {
            key: LayerSpec(key, max(MIN_LAYER, int(svc.app_mib * self.scale * MiB)))
            for key in dict.fromkeys(_app_key(svc, version, arch) for arch in svc.archs)
        }
        content: Content = "usr" if self.content == "usr" else "random"
        new_layers, _ = generate_layers(specs, content, min(len(specs), os.cpu_count() or 1), log or (lambda _m: None))
        layers = self.layers | new_layers
        images = dict(self.images)
        images[(service, version)] = _service_image(svc, version, layers)
        deployments = [
            Deployment(d.service, d.environment, d.repository, version) if d.service == service else d
            for d in self.deployments
        ]
        return Workload(
            self.scale,
            self.content,
            images,
            self.layer_keys | {lay.digest: key for key, lay in new_layers.items()},
            deployments,
            self.generation_seconds,
            layers=layers,
            shipped=self.shipped | {service: version},
        )

    def plan(
        self,
        source_host: str,
        mirror_host: str,
        *,
        mode: str = "cluster",
        cluster: str = CLUSTER,
        prefix: str = PREFIX,
        per_environment: bool = False,
    ) -> dict[str, Any]:
        """A mirroring plan (``ocicopy.plan`` format) for every deployment; both registries plain HTTP.

        ``per_environment``: every (service, environment) is its own service (``api-prod``, ``api-staging``…), as
        platforms that key services per environment have: 30 repositories in service mode instead of 10.
        """
        return {
            "mirror": {"registry": mirror_host, "prefix": prefix, "mode": mode, "cluster": cluster},
            "registries": {source_host: {"plain_http": True}, mirror_host: {"plain_http": True}},
            "deployments": [
                {
                    "service": f"{d.service}-{d.environment}" if per_environment else d.service,
                    "environment": d.environment,
                    "image": d.image(source_host),
                }
                for d in self.deployments
            ],
        }


def build_workload(
    scale: float = 1.0, content: Content = "auto", jobs: int | None = None, log: Callable[[str], None] | None = None
) -> Workload:
    """Generate the workload in memory (nothing is pushed); deterministic for a scale and a content kind."""
    log = log or (lambda _m: None)
    if scale <= 0:
        raise ValueError("scale must be positive")
    started = time.monotonic()
    specs = layer_specs(scale)
    layers, used = generate_layers(specs, content, jobs or os.cpu_count() or 1, log)
    images: dict[tuple[str, str], Image | Index] = {}
    deployments: list[Deployment] = []
    for i, svc in enumerate(SERVICES):
        live, dev = versions(i)
        for version in (live, dev):
            images[(svc.name, version)] = _service_image(svc, version, layers)
        for env in ENVIRONMENTS:
            tag = live if env in LIVE_ENVIRONMENTS else dev
            deployments.append(Deployment(svc.name, env, Workload.repository(svc.name), tag))
    keys_by_digest = {lay.digest: key for key, lay in layers.items()}
    return Workload(scale, used, images, keys_by_digest, deployments, time.monotonic() - started, layers=layers)


def _service_image(svc: ServiceSpec, version: str, layers: dict[str, Layer]) -> Image | Index:
    """The image (or two-platform index) of ``svc`` at ``version``: OS, runtime, dependency and app layers."""
    children = []
    for arch in svc.archs:
        keys = [f"os/{arch}"]
        if svc.runtime is not None:
            keys.append(f"{svc.runtime}/{arch}")
        keys += [f"deps/{svc.name}/{arch}", _app_key(svc, version, arch)]
        platform = ("linux", arch, "v8" if arch == "arm64" else None)
        labels = {"org.opencontainers.image.title": svc.name, "org.opencontainers.image.version": version}
        config = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Labels": labels}
        image = make_image(
            [layers[k] for k in keys], media=svc.media, platform=platform, config_extra={"config": config}
        )
        children.append(image)
    return make_index(children, media=svc.media) if svc.multi_arch else children[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workload", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier (default 1.0: about 255 MiB)")
    parser.add_argument("--content", choices=["auto", "usr", "random"], default="auto", help="layer content")
    parser.add_argument("--jobs", type=int, default=None, help="processes compressing layers (default: CPUs)")
    args = parser.parse_args(argv)
    workload = build_workload(args.scale, args.content, args.jobs, lambda m: print(m, file=sys.stderr))
    print(json.dumps(workload.summary(), indent=2))
    for digest, blob in sorted(workload.blobs().items(), key=lambda kv: kv[1].kind):
        print(f"{blob.kind:28s} {blob.size / MiB:8.2f} MiB  {digest[:19]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
