"""Benchmark gzip → zstd recompression on the benchmark workload: mirror size, decompression time, extra CPU.

The layers are those of :mod:`benchmarks.workload` (tar + gzip level 6 of real files from ``/usr``), at the
sizes of :mod:`benchmarks.mirror` (scale 1, about 255 MiB of blobs; ``--quick``: 0.2). Every *distinct* layer
counts once, as it does in a mirror. Three parts:

1. **Size** (offline, no registry). Each layer is recompressed at every zstd level of ``--levels`` (1, 3, 9)
   with :func:`ocicopy.compression.gzip_to_zstd`, the function the copy engine streams through; per level the
   total zstd bytes and the ratio to the gzip total. The time of that pass (one layer after the other, so one
   core; inflate + zstd + both sha256s, as the engine does it) is recorded as the offline recompression cost.
2. **Decompression** (offline, one thread, in this process). All layers are decompressed as a runtime unpacking
   them would: gzip with ``zlib.decompressobj(31)``, zstd with ``zstandard.ZstdDecompressor().decompressobj()``,
   both fed 1 MiB of compressed input at a time, the output counted and dropped. First an untimed pass per
   format hashes the output and checks it against every layer's ``diff_id`` (so the timed passes cannot measure
   garbage), then ``--repeats`` timed passes (5; quick 3); the median, MiB/s of uncompressed output, and the
   ratio of gzip's time to zstd's.
3. **Mirror CPU** (two real loopback registries, :mod:`harness.registry`). The workload's images are pushed
   to a source registry, then every deployment is mirrored (cluster mode, ledger off) by ``Client.mirror`` in
   this process into a *fresh* destination registry per run: ``plain`` (byte-exact copy) and ``zstd-N``
   (plan setting ``mirror.compress: zstd``, ``compress_level: N``), alternating which goes first, after one
   unmeasured warm-up of each. Measured around the call: wall time, ``time.process_time()`` (every thread of
   this process: the recompression runs in worker threads) and ``getrusage(RUSAGE_SELF)`` user + system; the
   registries are other processes (their CPU is recorded apart). Each run is checked on the destination's disk:
   plain must store every gzip layer and no zstd one, zstd-N every layer as zstd and no gzip one. Reported: the
   medians (``--runs``: 3; quick 2), the extra CPU (median zstd minus median plain), per GiB of uncompressed
   layer data, the wall ratio and the bytes sent to / stored in the destination.

Run from the repository root::

    .venv/bin/python -m benchmarks compression            # scale 1, levels 1,3,9, 5 repeats, 3 mirror runs
    .venv/bin/python -m benchmarks.compression --quick    # scale 0.2, 3 repeats, 2 mirror runs
    .venv/bin/python -m benchmarks compression --levels 1,3,9,19 --no-mirror --json /tmp/sizes.json

Results: ``benchmarks/results/compression.json`` (``--json``), a :class:`benchmarks.results.Results` document:
machine metadata, the timed figures as rows (so ``python -m benchmarks compare`` reads two of them) and the
three parts in ``details``; a table on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import zstandard

from benchmarks.chart import format_table
from benchmarks.cli import positive_int
from benchmarks.engine import Recompressed, detect, gzip_to_zstd
from benchmarks.procs import cpu_seconds
from benchmarks.results import ProfileInfo, Results, Row, git_revision, machine_metadata, timestamp
from benchmarks.workload import CLUSTER, GZIP_LEVEL, PREFIX, Workload, build_workload
from harness.images import Layer
from harness.registry import RegistryServer, start_registry, uploaded_digests
from ocicopy import Client, ClientOptions, MirrorReport, MirrorSettings, Plan, parse_plan

MiB: Final = 1024 * 1024
GiB: Final = 1024 * MiB
CHUNK: Final = 1 << 20  # compressed bytes fed per decompression call, and per chunk given to gzip_to_zstd
DEFAULT_SCALE, QUICK_SCALE = 1.0, 0.2  # as benchmarks.mirror on loopback
DEFAULT_LEVELS: Final = (1, 3, 9)
DEFAULT_REPEATS, QUICK_REPEATS = 5, 3
DEFAULT_RUNS, QUICK_RUNS = 3, 2
MIRROR_LEVEL: Final = 3  # the engine's default level
MAX_LEVEL: Final = 19  # as the engine accepts
MODE: Final = "cluster"
ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results" / "compression.json"
OFFLINE, LOOPBACK = "offline", "loopback"  # the ``profile`` of result rows

Sink = Callable[[bytes], object]
Decoder = Callable[[bytes, Sink], int]


def log(message: str) -> None:
    print(f"[compression] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- decoding


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, /) -> bytes: ...


def _decode_members(blob: bytes, sink: Sink, start: Callable[[], _Decoder], name: str) -> int:
    """Feed ``blob`` 1 MiB at a time through decoders from ``start`` (a new one per member or frame)."""
    d = start()
    view, total = memoryview(blob), 0
    for offset in range(0, len(view), CHUNK):
        data: bytes | memoryview = view[offset : offset + CHUNK]
        while data:
            if d.eof:
                d = start()
            out = d.decompress(data)
            total += len(out)
            sink(out)
            data = d.unused_data if d.eof else b""
    if not d.eof:
        raise ValueError(f"truncated {name} stream")
    return total


def inflate(blob: bytes, sink: Sink) -> int:
    """Decompress a (possibly multi-member) gzip blob 1 MiB of input at a time into ``sink``; uncompressed size."""
    return _decode_members(blob, sink, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), "gzip")


def unzstd(blob: bytes, sink: Sink) -> int:
    """Decompress a (possibly multi-frame) zstd blob 1 MiB of input at a time into ``sink``; uncompressed size."""
    dctx = zstandard.ZstdDecompressor()
    return _decode_members(blob, sink, lambda: dctx.decompressobj(), "zstd")


def _drop(_data: bytes) -> None:
    return None


def decoded_digest(blob: bytes, decoder: Decoder) -> tuple[str, int]:
    """``(sha256:… of the uncompressed bytes, their size)``."""
    hasher = hashlib.sha256()
    size = decoder(blob, hasher.update)
    return "sha256:" + hasher.hexdigest(), size


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerData:
    """A distinct gzip layer of the workload, checked: its uncompressed bytes hash to ``diff_id``."""

    key: str
    blob: bytes = field(repr=False)
    digest: str
    diff_id: str
    raw_size: int

    @property
    def size(self) -> int:
        return len(self.blob)


def distinct_layers(layers: Mapping[str, Layer]) -> list[LayerData]:
    """Each distinct layer once (by digest; ordered by key), after checking its gzip decodes to its ``diff_id``."""
    out: dict[str, LayerData] = {}
    for key in sorted(layers):
        lay = layers[key]
        if lay.digest in out:
            continue
        blob = bytes(lay)
        diff_id, raw_size = decoded_digest(blob, inflate)
        if diff_id != lay.diff_id:
            raise RuntimeError(f"layer {key}: gzip decodes to {diff_id}, not its diff_id {lay.diff_id}")
        out[lay.digest] = LayerData(key, blob, lay.digest, lay.diff_id, raw_size)
    return list(out.values())


# --------------------------------------------------------------------------- part 1: sizes


@dataclass(frozen=True)
class LevelResult:
    """Every layer recompressed at one zstd level (blobs in the order of the layers)."""

    level: int
    blobs: list[bytes] = field(repr=False)
    digests: list[str]
    seconds: float  # wall time of the whole pass
    cpu_seconds: float  # process CPU of the pass

    @property
    def total(self) -> int:
        return sum(len(b) for b in self.blobs)


async def _chunks(blob: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(blob), CHUNK):
        yield blob[start : start + CHUNK]


async def recompress_layer(lay: LayerData, level: int) -> tuple[bytes, Recompressed]:
    """One layer through :func:`gzip_to_zstd` (bounded by its known uncompressed size): the zstd blob and result."""
    result = Recompressed()
    out = bytearray()
    async for piece in gzip_to_zstd(_chunks(lay.blob), level=level, max_output=lay.raw_size, result=result):
        out += piece
    return bytes(out), result


def recompress_all(layers: Sequence[LayerData], level: int) -> LevelResult:
    """Every layer at ``level``, one after the other; checks each result's ``diff_id``, size and digest."""

    async def run() -> list[tuple[bytes, Recompressed]]:
        return [await recompress_layer(lay, level) for lay in layers]

    cpu, started = time.process_time(), time.perf_counter()
    done = anyio.run(run)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    for lay, (blob, result) in zip(layers, done, strict=True):
        if result.diff_id != lay.diff_id or result.size != len(blob) or result.source_size != lay.size:
            raise RuntimeError(f"layer {lay.key}: zstd-{level} result inconsistent ({result.diff_id}, {result.size})")
        if result.digest != "sha256:" + hashlib.sha256(blob).hexdigest():
            raise RuntimeError(f"layer {lay.key}: zstd-{level} digest does not match the bytes produced")
    return LevelResult(level, [b for b, _ in done], [str(r.digest) for _, r in done], seconds, cpu)


def size_summary(layers: Sequence[LayerData], levels: Sequence[LevelResult]) -> dict[str, Any]:
    """Totals per format and level, ratios to gzip, and the offline recompression cost."""
    gzip_total = sum(lay.size for lay in layers)
    raw_total = sum(lay.raw_size for lay in layers)
    rows = []
    for lv in levels:
        rows.append(
            {
                "level": lv.level,
                "bytes": lv.total,
                "ratio_to_gzip": round(lv.total / gzip_total, 4),
                "saved_bytes": gzip_total - lv.total,
                "compression_ratio": round(raw_total / lv.total, 3),
                "recompress_seconds": round(lv.seconds, 3),
                "recompress_cpu_seconds": round(lv.cpu_seconds, 3),
                "recompress_mib_per_s": round(raw_total / MiB / lv.seconds, 1),
            }
        )
    return {
        "layers": len(layers),
        "uncompressed_bytes": raw_total,
        "gzip": {"level": GZIP_LEVEL, "bytes": gzip_total, "compression_ratio": round(raw_total / gzip_total, 3)},
        "zstd": rows,
        "per_layer": [
            {"key": lay.key, "gzip": lay.size, "uncompressed": lay.raw_size}
            | {f"zstd_{lv.level}": len(lv.blobs[i]) for lv in levels}
            for i, lay in enumerate(layers)
        ],
    }


# --------------------------------------------------------------------------- part 2: decompression


@dataclass(frozen=True)
class Timing:
    """Timed passes over all layers: wall and process CPU seconds per pass."""

    name: str
    seconds: list[float]
    cpu_seconds: list[float]
    raw_bytes: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mib_per_s(self) -> float:
        return self.raw_bytes / MiB / self.median


def verify_decoding(blobs: Sequence[bytes], layers: Sequence[LayerData], decoder: Decoder, name: str) -> None:
    """Untimed pass: each blob must decode to its layer's ``diff_id`` and uncompressed size."""
    for blob, lay in zip(blobs, layers, strict=True):
        digest, size = decoded_digest(blob, decoder)
        if digest != lay.diff_id or size != lay.raw_size:
            raise RuntimeError(f"{name}: layer {lay.key} decodes to {digest} ({size} bytes), not {lay.diff_id}")


def time_decoding(name: str, blobs: Sequence[bytes], decoder: Decoder, repeats: int, raw_bytes: int) -> Timing:
    """``repeats`` passes decoding every blob (output counted and dropped); each must yield ``raw_bytes``."""
    seconds, cpu = [], []
    for _ in range(repeats):
        cpu_before, started = time.process_time(), time.perf_counter()
        total = sum(decoder(blob, _drop) for blob in blobs)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_before)
        if total != raw_bytes:
            raise RuntimeError(f"{name}: a pass decoded {total} bytes, expected {raw_bytes}")
    return Timing(name, seconds, cpu, raw_bytes)


def measure_decompression(
    layers: Sequence[LayerData], levels: Sequence[LevelResult], repeats: int, progress: Callable[[str], None] = log
) -> list[Timing]:
    """gzip, then zstd at every level: verified once, then timed ``repeats`` times."""
    raw_bytes = sum(lay.raw_size for lay in layers)
    candidates: list[tuple[str, list[bytes], Decoder]] = [("gzip", [lay.blob for lay in layers], inflate)]
    candidates += [(f"zstd-{lv.level}", lv.blobs, unzstd) for lv in levels]
    timings = []
    for name, blobs, decoder in candidates:
        verify_decoding(blobs, layers, decoder, name)
        timing = time_decoding(name, blobs, decoder, repeats, raw_bytes)
        progress(f"decompress {name}: median {timing.median:.3f} s, {timing.mib_per_s:.0f} MiB/s")
        timings.append(timing)
    return timings


def decompression_summary(timings: Sequence[Timing], repeats: int) -> dict[str, Any]:
    gzip_median = timings[0].median
    return {
        "repeats": repeats,
        "input_chunk_bytes": CHUNK,
        "uncompressed_bytes": timings[0].raw_bytes if timings else 0,
        "formats": [
            {
                "format": t.name,
                "seconds": [round(s, 4) for s in t.seconds],
                "median": round(t.median, 4),
                "min": round(min(t.seconds), 4),
                "max": round(max(t.seconds), 4),
                "cpu_seconds_median": round(statistics.median(t.cpu_seconds), 4),
                "mib_per_s": round(t.mib_per_s, 1),
                "gzip_time_ratio": round(gzip_median / t.median, 3),  # gzip seconds ÷ these seconds
            }
            for t in timings
        ],
    }


# --------------------------------------------------------------------------- part 3: mirror CPU


@dataclass(frozen=True)
class Variant:
    """A way of mirroring: plain (``level`` None) or recompressing to zstd at ``level``."""

    level: int | None

    @property
    def name(self) -> str:
        return "plain" if self.level is None else f"zstd-{self.level}"


@dataclass
class MirrorSample:
    """One measured mirror run into a fresh destination registry."""

    variant: str
    run: int
    seconds: float
    cpu_seconds: float  # time.process_time(): every thread of this process
    rusage_user: float
    rusage_system: float
    registry_cpu_seconds: dict[str, float]
    bytes_from_source: int  # from ocicopy's report
    bytes_to_mirror: int  # from ocicopy's report
    stored_bytes: int  # every blob file in the destination's storage (layers, configs, manifests)
    uploads_by_format: dict[str, int]  # committed uploads by the stored blob's format (gzip, zstd, none)
    uploaded_layer_bytes: int  # stored size of the uploaded gzip or zstd blobs
    offline_matches: int | None  # uploaded zstd layers byte-identical to part 1's (None: level not in part 1)

    @property
    def rusage_cpu(self) -> float:
        return self.rusage_user + self.rusage_system


def plan_for(workload: Workload, source: str, mirror: str, variant: Variant, limit: int | None = None) -> Plan:
    """The parsed mirroring plan: every deployment (or the first ``limit``), cluster mode, no ledger."""
    data = workload.plan(source, mirror, mode=MODE, cluster=CLUSTER, prefix=PREFIX)
    data["mirror"]["ledger"] = False
    if variant.level is not None:
        data["mirror"] |= {"compress": "zstd", "compress_level": variant.level}
    if limit is not None:
        data["deployments"] = data["deployments"][:limit]
    return parse_plan(data)


def run_client_mirror(plan: Plan) -> dict[str, Any]:
    """``Client.mirror(plan)`` with a fresh client in this process; the report's totals (raises on a failure)."""

    async def go() -> MirrorReport:
        async with Client(ClientOptions(use_docker_config=False)) as client:
            return await client.mirror(plan)

    report = anyio.run(go)
    failed = [d for d in report.deployments if d.error]
    if not report.ok or failed:
        raise RuntimeError(f"mirror failed: {failed[0].error if failed else report.warnings}")
    totals: dict[str, Any] = report.totals.model_dump(mode="json")
    return totals


def blob_path(server: RegistryServer, digest: str) -> Path:
    """Where the filesystem driver of the registry stores a blob."""
    algorithm, hexdigest = digest.split(":", 1)
    return server.root / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"


def stored_bytes(server: RegistryServer) -> int:
    """Total size of every blob file the registry stores (manifests are blobs too)."""
    return sum(p.stat().st_size for p in (server.root / "docker/registry/v2/blobs").rglob("data"))


def inspect_uploads(server: RegistryServer, offline: set[str] | None) -> tuple[dict[str, int], int, int | None]:
    """Committed uploads by stored format, the bytes of the layer ones, and how many match ``offline`` digests."""
    formats: dict[str, int] = {"gzip": 0, "zstd": 0, "none": 0}
    layer_bytes, matches = 0, 0
    for digest in set(uploaded_digests(server.requests())):
        path = blob_path(server, digest)
        with path.open("rb") as f:
            kind = detect(f.read(4))
        formats[kind] += 1
        if kind != "none":
            layer_bytes += path.stat().st_size
        matches += kind == "zstd" and offline is not None and digest in offline
    return formats, layer_bytes, (matches if offline is not None else None)


def check_uploads(variant: Variant, formats: Mapping[str, int], layers: int) -> None:
    """Plain stores every layer as gzip; zstd-N every layer as zstd: otherwise the run measured something else."""
    want = {"gzip": layers, "zstd": 0} if variant.level is None else {"gzip": 0, "zstd": layers}
    got = {k: formats.get(k, 0) for k in want}
    if got != want:
        raise RuntimeError(f"{variant.name}: the destination received layers {got}, expected {want}")


@dataclass
class MirrorBench:
    """The source registry (seeded) and what a run needs: the workload, its layers, a work directory."""

    source: RegistryServer
    workload: Workload
    layers: Sequence[LayerData]
    workdir: Path
    offline: dict[int, set[str]] = field(default_factory=dict)  # level -> zstd digests from part 1
    _count: int = 0

    def fresh(self, label: str) -> RegistryServer:
        self._count += 1
        return start_registry(self.workdir / f"mirror-{self._count}-{label}")

    def warm_up(self, variant: Variant) -> None:
        """One unmeasured mirror of the first deployment: imports, thread pools and first-use costs."""
        dest = self.fresh(f"warm-{variant.name}")
        try:
            run_client_mirror(plan_for(self.workload, self.source.host, dest.host, variant, limit=1))
        finally:
            self._remove(dest)

    def measure(self, variant: Variant, run: int) -> MirrorSample:
        """Mirror every deployment into a fresh registry; time it and check what the destination stored."""
        dest = self.fresh(variant.name)
        try:
            plan = plan_for(self.workload, self.source.host, dest.host, variant)
            regs = cpu_seconds(self.source.process.pid), cpu_seconds(dest.process.pid)
            ru, cpu, started = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
            totals = run_client_mirror(plan)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            ru_after = resource.getrusage(resource.RUSAGE_SELF)
            regs_after = cpu_seconds(self.source.process.pid), cpu_seconds(dest.process.pid)
            offline = self.offline.get(variant.level) if variant.level is not None else None
            formats, layer_bytes, matches = inspect_uploads(dest, offline)
            check_uploads(variant, formats, len(self.layers))
            return MirrorSample(
                variant=variant.name,
                run=run,
                seconds=seconds,
                cpu_seconds=cpu,
                rusage_user=ru_after.ru_utime - ru.ru_utime,
                rusage_system=ru_after.ru_stime - ru.ru_stime,
                registry_cpu_seconds={
                    "source": round(regs_after[0] - regs[0], 2),
                    "mirror": round(regs_after[1] - regs[1], 2),
                },
                bytes_from_source=int(totals["bytes_from_source"]),
                bytes_to_mirror=int(totals["bytes_to_mirror"]),
                stored_bytes=stored_bytes(dest),
                uploads_by_format=formats,
                uploaded_layer_bytes=layer_bytes,
                offline_matches=matches,
            )
        finally:
            self._remove(dest)

    @staticmethod
    def _remove(server: RegistryServer) -> None:
        server.stop()
        shutil.rmtree(server.root.parent, ignore_errors=True)


def engine_recompresses() -> bool:
    """Whether this ocicopy knows the plan setting ``mirror.compress`` (the recompressing copy engine)."""
    return "compress" in MirrorSettings.model_fields


def measure_mirror(
    workload: Workload,
    layers: Sequence[LayerData],
    levels: Sequence[LevelResult],
    level: int,
    runs: int,
    workdir: Path,
    progress: Callable[[str], None] = log,
) -> list[MirrorSample]:
    """Seed a source registry, warm up, then ``runs`` × (plain, zstd-``level``), alternating the order."""
    source = start_registry(workdir / "source")
    try:
        started = time.perf_counter()
        workload.push(source)
        progress(f"pushed the workload into the source registry in {time.perf_counter() - started:.1f} s")
        bench = MirrorBench(source, workload, layers, workdir, {lv.level: set(lv.digests) for lv in levels})
        variants = [Variant(None), Variant(level)]
        for variant in variants:
            bench.warm_up(variant)
        samples = []
        for run in range(runs):
            for variant in variants if run % 2 == 0 else variants[::-1]:
                s = bench.measure(variant, run)
                progress(
                    f"mirror {s.variant} run {run + 1}/{runs}: {s.seconds:.2f} s wall, CPU {s.cpu_seconds:.2f} s "
                    f"(rusage {s.rusage_cpu:.2f} s), registries {s.registry_cpu_seconds['source']:.2f} + "
                    f"{s.registry_cpu_seconds['mirror']:.2f} s, {s.bytes_to_mirror / MiB:.1f} MiB sent, "
                    f"{s.stored_bytes / MiB:.1f} MiB stored"
                )
                samples.append(s)
        return samples
    finally:
        source.stop()


def _med(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def mirror_summary(samples: Sequence[MirrorSample], raw_bytes: int, level: int) -> dict[str, Any]:
    """Medians per variant, and the cost of recompression: extra CPU (total, per GiB), wall ratio, bytes."""
    variants: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(s.variant for s in samples):
        group = [s for s in samples if s.variant == name]
        variants[name] = {
            "runs": len(group),
            "seconds": [round(s.seconds, 3) for s in group],
            "median_seconds": round(_med(s.seconds for s in group), 3),
            "cpu_seconds": [round(s.cpu_seconds, 3) for s in group],
            "median_cpu_seconds": round(_med(s.cpu_seconds for s in group), 3),
            "median_rusage_user_seconds": round(_med(s.rusage_user for s in group), 3),
            "median_rusage_system_seconds": round(_med(s.rusage_system for s in group), 3),
            "median_rusage_cpu_seconds": round(_med(s.rusage_cpu for s in group), 3),
            "median_registry_cpu_seconds": {
                role: round(_med(s.registry_cpu_seconds[role] for s in group), 2) for role in ("source", "mirror")
            },
            "bytes_from_source": round(_med(s.bytes_from_source for s in group)),
            "bytes_to_mirror": round(_med(s.bytes_to_mirror for s in group)),
            "stored_bytes": round(_med(s.stored_bytes for s in group)),
            "uploaded_layer_bytes": round(_med(s.uploaded_layer_bytes for s in group)),
            "uploads_by_format": group[-1].uploads_by_format,
            "offline_matches": group[-1].offline_matches,
        }
    plain, zstd = variants.get("plain"), variants.get(f"zstd-{level}")
    out: dict[str, Any] = {"mode": MODE, "level": level, "uncompressed_bytes": raw_bytes, "variants": variants}
    if plain and zstd:
        extra = zstd["median_cpu_seconds"] - plain["median_cpu_seconds"]
        extra_ru = zstd["median_rusage_cpu_seconds"] - plain["median_rusage_cpu_seconds"]
        out["recompression"] = {
            "extra_cpu_seconds": round(extra, 3),
            "extra_rusage_cpu_seconds": round(extra_ru, 3),
            "extra_cpu_seconds_per_gib_uncompressed": round(extra / (raw_bytes / GiB), 3),
            "cpu_ratio": round(zstd["median_cpu_seconds"] / plain["median_cpu_seconds"], 3),
            "wall_ratio": round(zstd["median_seconds"] / plain["median_seconds"], 3),
            "bytes_to_mirror_ratio": round(zstd["bytes_to_mirror"] / plain["bytes_to_mirror"], 4),
        }
    return out


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Config:
    """What to run; ``None`` fields take the default of the mode (full or ``quick``)."""

    quick: bool = False
    scale: float | None = None
    content: str = "auto"
    levels: tuple[int, ...] = DEFAULT_LEVELS
    repeats: int | None = None
    runs: int | None = None
    mirror_level: int = MIRROR_LEVEL
    mirror: bool = True
    jobs: int | None = None
    workdir: Path | None = None
    output: Path | None = RESULTS
    command: str = "python -m benchmarks.compression"

    def resolved(self) -> Config:
        quick = self.quick
        return replace(
            self,
            scale=self.scale if self.scale is not None else (QUICK_SCALE if quick else DEFAULT_SCALE),
            repeats=self.repeats if self.repeats is not None else (QUICK_REPEATS if quick else DEFAULT_REPEATS),
            runs=self.runs if self.runs is not None else (QUICK_RUNS if quick else DEFAULT_RUNS),
        )


def result_rows(
    sizes: Mapping[str, Any], decompression: Mapping[str, Any], mirror: Mapping[str, Any] | None
) -> list[Row]:
    """The timed figures as result rows (the mirror's CPU also as a row of its own: ``compare`` judges times)."""
    rows = []
    for z in sizes["zstd"]:
        rows.append(
            Row(
                profile=OFFLINE,
                scenario=f"recompress zstd-{z['level']}",
                phase="all layers",
                seconds=[z["recompress_seconds"]],
            )
        )
    for f in decompression["formats"]:
        rows.append(
            Row(profile=OFFLINE, scenario=f"decompress {f['format']}", phase="all layers", seconds=f["seconds"])
        )
    for name, v in (mirror or {}).get("variants", {}).items():
        traffic = {"bytes_from_source": v["bytes_from_source"], "bytes_to_mirror": v["bytes_to_mirror"]}
        cpu = v["median_cpu_seconds"]
        rows.append(
            Row(
                profile=LOOPBACK,
                scenario=f"mirror {name}",
                phase="cold",
                seconds=v["seconds"],
                client_cpu_seconds=cpu,
                **traffic,
            )
        )
        rows.append(Row(profile=LOOPBACK, scenario=f"mirror {name} CPU", phase="cold", seconds=v["cpu_seconds"]))
    return rows


def build_document(
    config: Config,
    workload: Workload,
    sizes: dict[str, Any],
    decompression: dict[str, Any],
    mirror: dict[str, Any] | None,
    revision_at_start: str,
    load_at_start: Sequence[float] = (),
) -> Results:
    """The ``compression`` results document: rows of the timed figures, the three parts in ``details``.

    Other work on the machine skews every figure: the load averages at the start and the end of the run tell a
    quiet run from a busy one.
    """
    versions = {
        "zlib_version": zlib.ZLIB_RUNTIME_VERSION,
        "zstd_version": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "zstandard_version": zstandard.__version__,
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
    }
    settings = {
        "levels": list(config.levels),
        "repeats": config.repeats,
        "mirror_runs": config.runs if mirror is not None else 0,
        "mirror_level": config.mirror_level,
        "mirror_mode": MODE,
    }
    summary = workload.summary()
    profiles = [OFFLINE, LOOPBACK] if mirror is not None else [OFFLINE]
    return Results(
        benchmark="compression",
        command=config.command,
        timestamp=timestamp(),
        quick=config.quick,
        machine=machine_metadata(revision_at_start, **versions),
        workload=summary,
        profiles=[
            ProfileInfo(name=name, scale=workload.scale, unique_bytes=summary["unique_bytes"]) for name in profiles
        ],
        results=result_rows(sizes, decompression, mirror),
        details={"settings": settings, "sizes": sizes, "decompression": decompression, "mirror": mirror},
    )


def run_offline(
    layers: Sequence[LayerData], levels: Sequence[int], repeats: int, progress: Callable[[str], None] = log
) -> tuple[list[LevelResult], dict[str, Any], dict[str, Any]]:
    """Parts 1 and 2: (zstd blobs per level, the size summary, the decompression summary)."""
    recompress_all(layers[:1], levels[0])  # unmeasured: the worker thread pool and first-use costs
    results = []
    for level in levels:
        lv = recompress_all(layers, level)
        progress(f"zstd-{level}: {lv.total / MiB:.1f} MiB, recompressed in {lv.seconds:.2f} s")
        results.append(lv)
    timings = measure_decompression(layers, results, repeats, progress)
    return results, size_summary(layers, results), decompression_summary(timings, repeats)


def execute(config: Config, progress: Callable[[str], None] = log) -> Results:
    """Run the benchmark; returns (and writes to ``config.output`` unless None) the results document."""
    config = config.resolved()
    assert config.scale is not None and config.repeats is not None and config.runs is not None
    if config.mirror and not engine_recompresses():
        raise SystemExit("this ocicopy has no recompressing copy (plan setting mirror.compress): use --no-mirror")
    revision_at_start, load_at_start = git_revision(), os.getloadavg()
    progress(f"generating the workload (scale {config.scale:g}, content {config.content})")
    workload = build_workload(config.scale, config.content, config.jobs, progress)  # type: ignore[arg-type]
    layers = distinct_layers(workload.layers)
    progress(f"{len(layers)} distinct layers, {sum(x.size for x in layers) / MiB:.1f} MiB gzip ({workload.content})")
    levels, sizes, decompression = run_offline(layers, config.levels, config.repeats, progress)
    mirror = None
    if config.mirror:
        with tempfile.TemporaryDirectory(prefix="ocicopy-bench-compression-", dir=config.workdir) as tmp:
            samples = measure_mirror(workload, layers, levels, config.mirror_level, config.runs, Path(tmp), progress)
        mirror = mirror_summary(samples, sizes["uncompressed_bytes"], config.mirror_level)
        mirror["samples"] = [_sample_json(s) for s in samples]
    doc = build_document(config, workload, sizes, decompression, mirror, revision_at_start, load_at_start)
    if config.output is not None:
        doc.write(config.output)
        progress(f"written: {config.output}")
    return doc


def _sample_json(s: MirrorSample) -> dict[str, Any]:
    return {
        "variant": s.variant,
        "run": s.run,
        "seconds": round(s.seconds, 3),
        "cpu_seconds": round(s.cpu_seconds, 3),
        "rusage_user_seconds": round(s.rusage_user, 3),
        "rusage_system_seconds": round(s.rusage_system, 3),
        "registry_cpu_seconds": s.registry_cpu_seconds,
        "bytes_from_source": s.bytes_from_source,
        "bytes_to_mirror": s.bytes_to_mirror,
        "stored_bytes": s.stored_bytes,
        "uploads_by_format": s.uploads_by_format,
        "uploaded_layer_bytes": s.uploaded_layer_bytes,
        "offline_matches": s.offline_matches,
    }


# --------------------------------------------------------------------------- text output


def _mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def render(doc: Results) -> str:
    """The document as text tables: sizes, decompression, mirror CPU."""
    s, w, details = doc.details["sizes"], doc.workload, doc.details
    lines = [
        f"workload: scale {w['scale']:g} ({w['content']} content), {s['layers']} distinct layers, "
        f"{_mib(s['uncompressed_bytes'])} MiB uncompressed",
        "",
        "size of all distinct layers:",
        *_render_sizes(s),
        "",
        f"decompression of all layers, one thread (median of {details['decompression']['repeats']}):",
        *_render_decompression(details["decompression"]),
    ]
    if details.get("mirror"):
        lines += ["", *_render_mirror(details["mirror"])]
    return "\n".join(lines) + "\n"


def _render_sizes(s: Mapping[str, Any]) -> list[str]:
    gz = s["gzip"]
    rows = [[f"gzip-{gz['level']}", _mib(gz["bytes"]), "1.000", f"{gz['compression_ratio']:.2f}", "", ""]]
    for z in s["zstd"]:
        ratios = [f"{z['ratio_to_gzip']:.3f}", f"{z['compression_ratio']:.2f}"]
        cost = [f"{z['recompress_seconds']:.2f}", f"{z['recompress_mib_per_s']:.0f}"]
        rows.append([f"zstd-{z['level']}", _mib(z["bytes"]), *ratios, *cost])
    header = ("format", "MiB", "÷ gzip", "raw ÷ compressed", "recompress s (1 core)", "MiB/s (raw)")
    return format_table(header, rows)


def _render_decompression(d: Mapping[str, Any]) -> list[str]:
    rows = []
    for f in d["formats"]:
        spread = f"{f['min']:.3f}–{f['max']:.3f}"
        rows.append([f["format"], f"{f['median']:.3f}", spread, f"{f['mib_per_s']:.0f}", f"{f['gzip_time_ratio']:.2f}"])
    return format_table(("format", "median s", "min–max s", "MiB/s (raw)", "gzip time ÷ this"), rows)


def _render_mirror(m: Mapping[str, Any]) -> list[str]:
    runs = max(v["runs"] for v in m["variants"].values())
    lines = [f"mirror, {m['mode']} mode, cold, loopback registries, this process only (median of {runs}):"]
    header = ("variant", "wall s", "CPU s", "rusage user+sys s", "registries CPU s", "MiB sent", "MiB stored")
    rows = []
    for name, v in m["variants"].items():
        regs = v["median_registry_cpu_seconds"]
        cpu = [f"{v['median_cpu_seconds']:.2f}", f"{v['median_rusage_cpu_seconds']:.2f}"]
        traffic = [_mib(v["bytes_to_mirror"]), _mib(v["stored_bytes"])]
        rows.append(
            [name, f"{v['median_seconds']:.2f}", *cpu, f"{regs['source']:.2f} + {regs['mirror']:.2f}", *traffic]
        )
    lines += format_table(header, rows)
    r = m.get("recompression")
    if r:
        lines.append(
            f"recompression to zstd-{m['level']}: +{r['extra_cpu_seconds']:.2f} s CPU "
            f"(rusage +{r['extra_rusage_cpu_seconds']:.2f} s; CPU ×{r['cpu_ratio']:.2f}), "
            f"{r['extra_cpu_seconds_per_gib_uncompressed']:.2f} s per GiB uncompressed, "
            f"wall ×{r['wall_ratio']:.2f}, bytes sent ×{r['bytes_to_mirror_ratio']:.3f}"
        )
    return lines


# --------------------------------------------------------------------------- command line


def parse_levels(text: str) -> tuple[int, ...]:
    """``"1,3,9"`` → (1, 3, 9): distinct zstd levels from 1 to 19."""
    try:
        levels = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of levels: {text!r}") from None
    if not levels or any(not 1 <= level <= MAX_LEVEL for level in levels):
        raise argparse.ArgumentTypeError(f"levels must be 1 to {MAX_LEVEL}: {text!r}")
    return levels


def _level(text: str) -> int:
    levels = parse_levels(text)
    if len(levels) != 1:
        raise argparse.ArgumentTypeError(f"one level, not {text!r}")
    return levels[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compression", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="scale 0.2, 3 repeats, 2 mirror runs")
    parser.add_argument("--json", type=Path, default=RESULTS, metavar="PATH", help="results JSON (default %(default)s)")
    parser.add_argument("--levels", type=parse_levels, default=DEFAULT_LEVELS, help="zstd levels (default 1,3,9)")
    parser.add_argument(
        "--repeats", type=positive_int, default=None, metavar="N", help="timed decompressions (5; quick 3)"
    )
    parser.add_argument(
        "--runs", type=positive_int, default=None, metavar="N", help="mirror runs per variant (3; quick 2)"
    )
    parser.add_argument("--mirror-level", type=_level, default=MIRROR_LEVEL, metavar="L", help="zstd level mirrored")
    parser.add_argument("--no-mirror", action="store_true", help="sizes and decompression only (no registries)")
    parser.add_argument("--scale", type=float, default=None, help="workload size (1: about 255 MiB; quick 0.2)")
    parser.add_argument("--content", choices=["auto", "usr", "random"], default="auto", help="layer content")
    parser.add_argument("--jobs", type=positive_int, default=None, help="processes generating layers (default: CPUs)")
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary registries' directory")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.scale is not None and args.scale <= 0:
        parser.error("--scale must be positive")
    return Config(
        quick=args.quick,
        scale=args.scale,
        content=args.content,
        levels=args.levels,
        repeats=args.repeats,
        runs=args.runs,
        mirror_level=args.mirror_level,
        mirror=not args.no_mirror,
        jobs=args.jobs,
        workdir=args.workdir,
        output=args.json,
        command=" ".join(["python -m benchmarks compression", *args_list]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    doc = execute(parse_args(argv))
    sys.stdout.write(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
