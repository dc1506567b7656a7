"""The gzip → zstd benchmark (``benchmarks.compression``): sizes and decompression on tiny real layers, the results
document, the command line, and the mirror part against real registries.

Nothing here asserts a time: the figures must be consistent (every zstd blob decodes to its layer's ``diff_id``,
totals add up, the document has its keys), not fast.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from benchmarks import compression as bench
from benchmarks.__main__ import main as cli_main
from benchmarks.compare import compare_report
from benchmarks.results import load
from benchmarks.workload import build_workload
from harness.images import Layer

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": lambda _message: None}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def text(seed: int, lines: int) -> bytes:
    """Compressible, not trivially so: lines of words drawn from a small vocabulary."""
    rng = random.Random(seed)
    words = [f"w{rng.randrange(10**6)}" for _ in range(300)]
    return "\n".join(" ".join(rng.choices(words, k=8)) for _ in range(lines)).encode()


def tar_gzip_layer(seed: int, lines: int = 3000, members: int = 1) -> tuple[Layer, bytes]:
    """A real ``tar+gzip`` layer (a text file and a few random bytes), in ``members`` gzip members; (layer, tar)."""
    raw = tar_of({f"etc/text-{seed}.txt": text(seed, lines), f"bin/blob-{seed}": random.Random(seed).randbytes(4096)})
    cut = [len(raw) * i // members for i in range(members + 1)]
    blob = b"".join(gzip.compress(raw[a:b], compresslevel=6, mtime=0) for a, b in itertools.pairwise(cut))
    return Layer(blob, sha256(raw)), raw


@pytest.fixture(scope="module")
def layers() -> list[bench.LayerData]:
    lay_a, _ = tar_gzip_layer(1)
    lay_b, _ = tar_gzip_layer(2, lines=5000, members=3)
    # The same layer under two keys (a base shared by two images) counts once.
    return bench.distinct_layers({"os/amd64": lay_a, "deps/api": lay_b, "os/copy": lay_a})


# --------------------------------------------------------------------------- decoding and layers


def test_decoders_stream_every_member_and_frame() -> None:
    _, raw = tar_gzip_layer(3, members=4)
    lay, _ = tar_gzip_layer(3, members=4)
    assert bench.decoded_digest(bytes(lay), bench.inflate) == (sha256(raw), len(raw))
    frames = b"".join(zstandard.ZstdCompressor(level=3).compress(raw[i : i + 5000]) for i in range(0, len(raw), 5000))
    assert bench.decoded_digest(frames, bench.unzstd) == (sha256(raw), len(raw))
    pieces: list[bytes] = []
    assert bench.inflate(bytes(lay), pieces.append) == len(raw)
    assert b"".join(pieces) == raw


def test_decoders_refuse_truncated_streams() -> None:
    lay, raw = tar_gzip_layer(4)
    with pytest.raises(ValueError, match="truncated gzip"):
        bench.inflate(bytes(lay)[:-20], bench._drop)
    with pytest.raises(ValueError, match="truncated zstd"):
        bench.unzstd(zstandard.ZstdCompressor().compress(raw)[:-20], bench._drop)


def test_distinct_layers_counts_each_digest_once_with_its_uncompressed_size(layers: list[bench.LayerData]) -> None:
    assert [lay.key for lay in layers] == ["deps/api", "os/amd64"]
    for lay in layers:
        assert bench.decoded_digest(lay.blob, bench.inflate) == (lay.diff_id, lay.raw_size)
        assert lay.digest == sha256(lay.blob)


def test_distinct_layers_refuses_a_layer_whose_diff_id_is_wrong() -> None:
    lay, _ = tar_gzip_layer(5)
    with pytest.raises(RuntimeError, match="diff_id"):
        bench.distinct_layers({"bad": Layer(bytes(lay), sha256(b"something else"))})


# --------------------------------------------------------------------------- parts 1 and 2


def test_sizes_and_decompression_are_consistent(layers: list[bench.LayerData]) -> None:
    levels, sizes, decompression = bench.run_offline(layers, (1, 3, 9), repeats=2, **QUIET)
    gzip_total, raw_total = sum(lay.size for lay in layers), sum(lay.raw_size for lay in layers)
    assert sizes["layers"] == 2
    assert sizes["gzip"]["bytes"] == gzip_total
    assert sizes["uncompressed_bytes"] == raw_total == decompression["uncompressed_bytes"]
    assert [z["level"] for z in sizes["zstd"]] == [lv.level for lv in levels] == [1, 3, 9]
    for lv, row in zip(levels, sizes["zstd"], strict=True):
        # Every zstd blob decodes (with a decoder independent of the benchmark's) to its layer's diff_id.
        for lay, blob, digest in zip(layers, lv.blobs, lv.digests, strict=True):
            assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read() == gzip.decompress(lay.blob)
            assert sha256(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob)).read()) == lay.diff_id
            assert digest == sha256(blob)
        assert row["bytes"] == lv.total == sum(len(b) for b in lv.blobs)
        assert row["bytes"] == sum(p[f"zstd_{lv.level}"] for p in sizes["per_layer"])
        assert row["ratio_to_gzip"] == round(row["bytes"] / gzip_total, 4)
        assert row["saved_bytes"] == gzip_total - row["bytes"]
        assert row["recompress_seconds"] > 0 and row["recompress_cpu_seconds"] >= 0
    assert sum(p["gzip"] for p in sizes["per_layer"]) == gzip_total
    assert sum(p["uncompressed"] for p in sizes["per_layer"]) == raw_total
    assert all(z["bytes"] < raw_total / 2 for z in sizes["zstd"])  # the text compresses at every level
    formats = decompression["formats"]
    assert [f["format"] for f in formats] == ["gzip", "zstd-1", "zstd-3", "zstd-9"]
    for f in formats:
        assert len(f["seconds"]) == 2 and f["min"] <= f["median"] <= f["max"]
        assert f["mib_per_s"] > 0 and f["gzip_time_ratio"] > 0
    assert formats[0]["gzip_time_ratio"] == 1.0


def test_a_timed_pass_cannot_measure_garbage(layers: list[bench.LayerData]) -> None:
    wrong = [zstandard.ZstdCompressor().compress(b"not the layer") for _ in layers]
    with pytest.raises(RuntimeError, match="decodes to"):
        bench.verify_decoding(wrong, layers, bench.unzstd, "zstd-3")
    blobs = [lay.blob for lay in layers]
    with pytest.raises(RuntimeError, match="expected"):
        bench.time_decoding("gzip", blobs, bench.inflate, 1, raw_bytes=sum(lay.raw_size for lay in layers) + 1)


# --------------------------------------------------------------------------- the document


def test_document_has_its_schema_and_reads_in_the_compare_tool(layers: list[bench.LayerData]) -> None:
    workload = build_workload(0.001, "random")
    config = bench.Config(levels=(1, 3), mirror=False, output=None).resolved()
    _, sizes, decompression = bench.run_offline(layers, config.levels, repeats=1, **QUIET)
    doc = bench.build_document(config, workload, sizes, decompression, None, "0" * 40)
    assert doc.benchmark == "compression" and doc.version == 2
    for key in ("cpu_model", "cpu_cores", "python", "zlib_version", "zstd_version"):
        assert getattr(doc.machine, key), key
    for key in ("scale", "deployments", "unique_bytes", "fingerprint"):
        assert key in doc.workload
    assert [p.name for p in doc.profiles] == ["offline"]
    assert doc.details["settings"]["levels"] == [1, 3] and doc.details["mirror"] is None
    assert doc.details["sizes"] == sizes and doc.details["decompression"] == decompression
    rows = doc.rows()
    assert rows[("offline", "recompress zstd-3", "all layers")].seconds == [sizes["zstd"][1]["recompress_seconds"]]
    gzip_row = rows[("offline", "decompress gzip", "all layers")]
    assert gzip_row.seconds == decompression["formats"][0]["seconds"] and gzip_row.median is not None
    assert load(json.loads(doc.dump())) == doc  # serialisable, and read back by the table/compare tools
    text_out = bench.render(doc)
    assert "decompression of all layers" in text_out and "zstd-3" in text_out
    assert "decompress zstd-1" in compare_report(doc, doc)


def test_mirror_summary_computes_the_extra_cpu() -> None:
    def sample(variant: str, run: int, seconds: float, cpu: float, sent: int) -> bench.MirrorSample:
        return bench.MirrorSample(
            variant=variant,
            run=run,
            seconds=seconds,
            cpu_seconds=cpu,
            rusage_user=cpu * 0.75,
            rusage_system=cpu * 0.25,
            registry_cpu_seconds={"source": 0.5, "mirror": 0.4},
            bytes_from_source=1000,
            bytes_to_mirror=sent,
            stored_bytes=sent + 10,
            uploads_by_format={"gzip": 0, "zstd": 2, "none": 1},
            uploaded_layer_bytes=sent,
            offline_matches=2,
        )

    samples = [
        sample("plain", 0, 2.0, 1.0, 1000),
        sample("zstd-3", 0, 3.0, 3.0, 900),
        sample("zstd-3", 1, 5.0, 4.0, 900),
        sample("plain", 1, 2.0, 2.0, 1000),
        sample("plain", 2, 9.0, 1.5, 1000),
        sample("zstd-3", 2, 4.0, 3.5, 900),
    ]
    summary = bench.mirror_summary(samples, raw_bytes=2 * bench.GiB, level=3)
    plain, zstd = summary["variants"]["plain"], summary["variants"]["zstd-3"]
    assert (plain["median_seconds"], plain["median_cpu_seconds"]) == (2.0, 1.5)
    assert (zstd["median_seconds"], zstd["median_cpu_seconds"]) == (4.0, 3.5)
    r = summary["recompression"]
    assert r["extra_cpu_seconds"] == 2.0
    assert r["extra_cpu_seconds_per_gib_uncompressed"] == 1.0
    assert r["extra_rusage_cpu_seconds"] == 2.0
    assert r["wall_ratio"] == 2.0 and r["bytes_to_mirror_ratio"] == 0.9


def test_check_uploads_refuses_a_run_that_did_not_do_what_it_says() -> None:
    bench.check_uploads(bench.Variant(None), {"gzip": 4, "zstd": 0, "none": 3}, 4)
    bench.check_uploads(bench.Variant(3), {"gzip": 0, "zstd": 4, "none": 3}, 4)
    with pytest.raises(RuntimeError, match="zstd-3"):
        bench.check_uploads(bench.Variant(3), {"gzip": 1, "zstd": 3, "none": 3}, 4)
    with pytest.raises(RuntimeError, match="plain"):
        bench.check_uploads(bench.Variant(None), {"gzip": 3, "zstd": 1, "none": 3}, 4)


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("text_in", ["0", "20", "a", "", "1,x"])
def test_levels_are_validated(text_in: str) -> None:
    with pytest.raises(Exception, match="level"):
        bench.parse_levels(text_in)


def test_parse_args_quick_and_explicit() -> None:
    config = bench.parse_args(["--quick", "--levels", "9,1,9", "--json", "/tmp/x.json"]).resolved()
    assert (config.scale, config.repeats, config.runs, config.levels) == (0.2, 3, 2, (9, 1))
    assert config.output == Path("/tmp/x.json") and config.mirror
    full = bench.parse_args(["--no-mirror"]).resolved()
    assert (full.scale, full.repeats, full.runs, full.mirror) == (1.0, 5, 3, False)


def test_cli_runs_end_to_end_without_registries(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    args = ["--scale", "0.001", "--content", "random", "--levels", "1,3", "--repeats", "1", "--no-mirror"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compression", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["version"] == 2 and doc["quick"] is False and doc["details"]["settings"]["levels"] == [1, 3]
    assert doc["details"]["sizes"]["layers"] == doc["workload"]["unique_layers"]
    assert "decompression of all layers" in proc.stdout


def test_benchmarks_cli_dispatches_compression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    args = ["--scale", "0.001", "--content", "random", "--levels", "3", "--repeats", "1", "--no-mirror"]
    assert cli_main(["compression", *args, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["command"].startswith("python -m benchmarks compression --scale 0.001")
    assert "zstd-3" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main(["compression", "--levels", "0"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- the mirror part (real registries)


@pytest.mark.registry
def test_cli_with_the_mirror_part_against_real_registries(tmp_path: Path) -> None:
    """Needs the recompressing copy engine (plan setting ``mirror.compress``); fails, not skips, without it."""
    out = tmp_path / "c.json"
    args = ["--scale", "0.002", "--content", "random", "--levels", "1,3", "--repeats", "1", "--runs", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compression", *args, "--json", str(out), "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    details = doc["details"]
    layers = details["sizes"]["layers"]
    mirror = details["mirror"]
    plain, zstd = mirror["variants"]["plain"], mirror["variants"]["zstd-3"]
    assert plain["uploads_by_format"]["gzip"] == layers and plain["uploads_by_format"]["zstd"] == 0
    assert zstd["uploads_by_format"]["zstd"] == layers and zstd["uploads_by_format"]["gzip"] == 0
    assert plain["uploaded_layer_bytes"] == details["sizes"]["gzip"]["bytes"]
    assert plain["bytes_to_mirror"] >= plain["uploaded_layer_bytes"]
    assert zstd["bytes_to_mirror"] >= zstd["uploaded_layer_bytes"] > 0
    assert zstd["bytes_from_source"] >= plain["bytes_from_source"] >= details["sizes"]["gzip"]["bytes"]
    assert set(mirror["recompression"]) >= {"extra_cpu_seconds", "extra_cpu_seconds_per_gib_uncompressed", "wall_ratio"}
    assert [s["variant"] for s in mirror["samples"]] == ["plain", "zstd-3"]
    rows = {(r["profile"], r["scenario"]): r for r in doc["results"]}
    assert rows[("loopback", "mirror zstd-3")]["client_cpu_seconds"] == zstd["median_cpu_seconds"]
    assert "recompression to zstd-3" in proc.stdout
