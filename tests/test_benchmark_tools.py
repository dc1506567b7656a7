"""The benchmark tools: results table, SVG chart, before/after comparison and the ``python -m benchmarks`` CLI.

Every document here is synthetic (built in the test), so no registry is needed and nothing is timed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import main as cli_main
from benchmarks.chart import render_svg, render_table, table_rows, write_chart
from benchmarks.compare import NOISE_FLOOR, compare, compare_report, machine_warnings, render_compare, unmatched

ROOT = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"
MiB = 1024 * 1024

MACHINE = {
    "cpu_model": "Test CPU @ 2.0GHz",
    "cpu_cores": 2,
    "python": "3.11.7",
    "ocicopy_version": "0.1.0",
    "git_revision": "0123456789abcdef0123456789abcdef01234567",
    "registry_version": "3.0.0",
}


def result(
    profile: str,
    scenario: str,
    phase: str,
    seconds: list[float],
    *,
    requests: int = 100,
    from_source: int = 10 * MiB,
    to_mirror: int = 10 * MiB,
) -> dict[str, Any]:
    ordered = sorted(seconds)
    return {
        "profile": profile,
        "scenario": scenario,
        "phase": phase,
        "seconds": seconds,
        "median": ordered[len(ordered) // 2],
        "min": ordered[0],
        "max": ordered[-1],
        "bytes_from_source": from_source,
        "bytes_to_mirror": to_mirror,
        "requests": requests,
    }


def document(results: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    profiles = list(dict.fromkeys(r["profile"] for r in results))
    doc = {
        "benchmark": "harness",
        "version": 1,
        "command": "python -m benchmarks run",
        "timestamp": "2026-11-27T10:11:12+0000",
        "quick": False,
        "machine": dict(MACHINE),
        "workload": {"deployments": 30, "unique_bytes": 100 * MiB},
        "profiles": profiles,
        "results": results,
    }
    doc.update(extra)
    return doc


def sample_doc() -> dict[str, Any]:
    """Two profiles; ``wan`` has no skopeo rows (skopeo not installed) and the results are shuffled."""
    loopback = [
        result("loopback", "cluster", "warm", [0.09, 0.1, 0.12], requests=40, from_source=0, to_mirror=0),
        result("loopback", "naive", "cold", [9.0, 10.0, 11.0], requests=900, from_source=20 * MiB),
        result("loopback", "cluster", "cold", [2.4, 2.5, 2.7], requests=405, from_source=3 * MiB, to_mirror=3 * MiB),
        result("loopback", "naive", "warm", [4.5, 5.0, 5.5], requests=300, from_source=0, to_mirror=0),
        result("loopback", "skopeo", "cold", [24.0, 25.0, 26.0], requests=2000),
        result("loopback", "skopeo", "warm", [3.9, 4.0, 4.1], requests=1200, from_source=0, to_mirror=0),
        result("loopback", "floor", "cold", [1.9, 2.0, 2.1], requests=200),
        result("loopback", "one-change", "warm", [0.2, 0.25, 0.3], requests=50),
    ]
    wan = [
        result("wan", "naive", "cold", [30.0, 30.0, 33.0]),
        result("wan", "cluster", "cold", [6.0, 7.5, 8.0]),
        result("wan", "floor", "cold", [5.0, 5.0, 5.5]),
        result("wan", "cluster", "warm", [0.4, 0.5, 0.6]),
    ]
    return document(loopback + wan)


def table_cells(text: str, profile: str, scenario: str, phase: str) -> list[str]:
    """Cells of one row of ``render_table`` (columns are separated by at least two spaces)."""
    section = text.split(f"[{profile}]", 1)[1].split("\n[", 1)[0]
    for line in section.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:2] == [scenario, phase]:
            return cells
    raise AssertionError(f"no row {scenario} {phase} in [{profile}]:\n{section}")


# --- table ------------------------------------------------------------------------------------------------


def test_table_speedups_and_ratios_are_hand_computed_values() -> None:
    text = render_table(sample_doc())
    header = ["median", "min–max", "speedup vs naive", "time ÷ skopeo", "time ÷ floor"]
    # cluster cold: naive 10 / 2.5 = 4; 2.5 / skopeo 25 = 0.1; 2.5 / floor 2 = 1.25.
    assert table_cells(text, "loopback", "cluster", "cold") == [
        "cluster",
        "cold",
        "2.50 s",
        "2.40–2.70 s",
        "4.00×",
        "0.10×",
        "1.25×",
        "3.0",
        "3.0",
        "405",
    ]
    # cluster warm: naive warm 5 / 0.1 = 50; 0.1 / skopeo warm 4 = 0.025 (two significant digits); no floor ratio.
    assert table_cells(text, "loopback", "cluster", "warm") == [
        "cluster",
        "warm",
        "100 ms",
        "90–120 ms",
        "50.0×",
        "0.025×",
        "–",
        "0.0",
        "0.0",
        "40",
    ]
    # The references themselves.
    assert table_cells(text, "loopback", "naive", "cold")[4:7] == ["1.00×", "0.40×", "5.00×"]
    assert table_cells(text, "loopback", "skopeo", "warm")[4:7] == ["1.25×", "1.00×", "–"]
    assert table_cells(text, "loopback", "floor", "cold")[4:7] == ["5.00×", "0.080×", "1.00×"]
    # wan has no skopeo: no ratio, and the table says what is missing; 30 / 7.5 = 4; 7.5 / 5 = 1.5.
    assert table_cells(text, "wan", "cluster", "cold")[4:7] == ["4.00×", "–", "1.50×"]
    assert table_cells(text, "wan", "cluster", "warm")[4:7] == ["–", "–", "–"]  # no naive warm either
    assert (
        "not measured in this profile: naive warm, one-change warm, skopeo cold, skopeo warm" in text.split("[wan]")[1]
    )
    assert all(h in text for h in header)


def test_table_rows_order_and_raw_figures() -> None:
    rows = table_rows(sample_doc(), "loopback")
    assert [(r["scenario"], r["phase"]) for r in rows] == [
        ("naive", "cold"),
        ("naive", "warm"),
        ("cluster", "cold"),
        ("cluster", "warm"),
        ("one-change", "warm"),
        ("skopeo", "cold"),
        ("skopeo", "warm"),
        ("floor", "cold"),
    ]
    cluster_cold = rows[2]
    assert cluster_cold["speedup_vs_naive"] == pytest.approx(4.0)
    assert cluster_cold["ratio_to_skopeo"] == pytest.approx(0.1)
    assert cluster_cold["ratio_to_floor"] == pytest.approx(1.25)
    assert rows[3]["ratio_to_floor"] is None


def test_table_header_names_the_run() -> None:
    text = render_table(sample_doc())
    assert "2026-11-27 10:11:12+0000" in text
    assert "Test CPU @ 2.0GHz (2 cores)" in text
    assert "revision 0123456789ab" in text
    assert "0123456789abc" not in text  # the revision is shortened to 12 hex digits


def test_table_tolerates_missing_figures() -> None:
    doc = document(
        [
            {"profile": "loopback", "scenario": "cluster", "phase": "cold", "seconds": [3.0, 1.0, 2.0]},
            {"profile": "loopback", "scenario": "floor", "phase": "cold"},
        ]
    )
    text = render_table(doc)
    # median, min and max derived from the samples; no naive or skopeo; the floor row has no time.
    assert table_cells(text, "loopback", "cluster", "cold") == ["cluster", "cold", "2.00 s", "1.00–3.00 s"] + ["–"] * 6
    assert table_cells(text, "loopback", "floor", "cold")[2:4] == ["–", "–"]


# --- chart ------------------------------------------------------------------------------------------------


def parse_svg(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))  # noqa: S314 - our own output, not untrusted input


def bars(svg: str) -> list[ET.Element]:
    root = parse_svg(svg)
    return [e for e in root.iter(f"{SVG}rect") if "bar" in (e.get("class") or "").split()]


def test_svg_is_standalone_xml_with_one_bar_per_result() -> None:
    doc = sample_doc()
    svg = render_svg(doc)
    root = parse_svg(svg)
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width", "0")) > 0
    assert float(root.get("height", "0")) > 0
    assert len(bars(svg)) == len(doc["results"])
    assert "href" not in svg
    assert "@import" not in svg
    assert "<script" not in svg
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "loopback" in texts
    assert "wan" in texts
    assert "2.50 s" in texts  # loopback cluster cold median, printed after its bar
    assert "100 ms" in texts
    assert any("log scale" in t for t in texts)
    assert any("0123456789ab" in t for t in texts)


def test_svg_bars_grow_with_the_median_and_colour_by_phase() -> None:
    doc = sample_doc()
    loopback = [r for r in doc["results"] if r["profile"] == "loopback"]
    svg_bars = bars(render_svg(document(loopback)))
    # Bars follow display order: naive cold, naive warm, cluster cold, cluster warm, one-change warm, skopeo…, floor.
    widths = [float(b.get("width", "nan")) for b in svg_bars]
    medians = [10.0, 5.0, 2.5, 0.1, 0.25, 25.0, 4.0, 2.0]
    by_median = [w for _, w in sorted(zip(medians, widths, strict=True))]
    assert by_median == sorted(by_median)
    assert len(set(widths)) == len(widths)
    fills = [b.get("fill") for b in svg_bars]
    assert fills[0] == fills[2] == fills[5] == fills[7]  # cold
    assert fills[1] == fills[3] == fills[4] == fills[6]  # warm
    assert fills[0] != fills[1]


def test_svg_escapes_labels() -> None:
    doc = document(
        [result("p<1>&q", "odd<&scenario", "cold", [1.0, 1.0, 1.0])],
        machine=dict(MACHINE, cpu_model='CPU <fast> & "cheap"'),
    )
    svg = render_svg(doc)
    assert "odd&lt;&amp;scenario" in svg
    assert "odd<&" not in svg
    root = parse_svg(svg)
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "odd<&scenario" in texts
    assert "p<1>&q" in texts
    assert any('CPU <fast> & "cheap"' in t for t in texts)
    assert len(bars(svg)) == 1


def test_svg_is_deterministic_and_write_chart_writes_it(tmp_path: Path) -> None:
    doc = sample_doc()
    assert render_svg(doc) == render_svg(json.loads(json.dumps(doc)))
    out = tmp_path / "chart.svg"
    write_chart(doc, out)
    assert out.read_text(encoding="utf-8") == render_svg(doc)
    write_chart(doc, str(tmp_path / "chart2.svg"))
    assert (tmp_path / "chart2.svg").read_text(encoding="utf-8") == render_svg(doc)


def test_svg_handles_missing_rows_and_empty_documents() -> None:
    doc = document(
        [
            result("loopback", "cluster", "cold", [2.0]),
            {"profile": "loopback", "scenario": "skopeo", "phase": "cold"},  # no time at all
        ]
    )
    svg = render_svg(doc)
    assert len(bars(svg)) == 1
    assert "no data" in svg
    empty = render_svg(document([]))
    assert parse_svg(empty).tag == f"{SVG}svg"
    assert bars(empty) == []


# --- compare ----------------------------------------------------------------------------------------------


def one(seconds: list[float], **counts: int) -> dict[str, Any]:
    return document([result("loopback", "cluster", "cold", seconds, **counts)])


def test_compare_flags_a_2x_slowdown() -> None:
    [row] = compare(one([1.0, 1.05, 1.1]), one([2.0, 2.1, 2.2]))
    assert (row.profile, row.scenario, row.phase) == ("loopback", "cluster", "cold")
    assert row.before == pytest.approx(1.05)
    assert row.after == pytest.approx(2.1)
    assert row.ratio == pytest.approx(2.0)
    assert row.verdict == "slower"
    assert row.changed
    [back] = compare(one([2.0, 2.1, 2.2]), one([1.0, 1.05, 1.1]))
    assert back.verdict == "faster"


def test_compare_small_change_within_the_spread_is_the_same() -> None:
    # 10 % min–max spread, 2 % change of the median.
    [row] = compare(one([0.95, 1.0, 1.05]), one([0.97, 1.02, 1.07]))
    assert row.band == pytest.approx(0.1)
    assert row.ratio == pytest.approx(1.02)
    assert row.verdict == "same"
    assert not row.changed
    # The same change beyond a tighter band given by --noise.
    [tight] = compare(one([0.95, 1.0, 1.05]), one([0.97, 1.02, 1.07]), noise=0.01)
    assert tight.band == 0.01
    assert tight.verdict == "slower"


def test_compare_band_has_a_floor_for_single_runs() -> None:
    [row] = compare(one([1.0]), one([1.04]))
    assert row.band == NOISE_FLOOR
    assert row.verdict == "same"
    [row] = compare(one([1.0]), one([1.06]))
    assert row.verdict == "slower"
    [row] = compare(one([1.0]), one([0.94]))
    assert row.verdict == "faster"
    with pytest.raises(ValueError):
        compare(one([1.0]), one([1.0]), noise=-0.1)


def test_compare_request_and_byte_changes_are_changes() -> None:
    [row] = compare(one([1.0, 1.0, 1.0], requests=405), one([1.0, 1.0, 1.0], requests=410))
    assert row.verdict == "same"
    assert row.requests == (405, 410)
    assert row.count_changes == ["requests"]
    assert row.changed
    [row] = compare(one([1.0], from_source=100), one([1.0], from_source=101))
    assert row.count_changes == ["bytes_from_source"]
    assert row.changed
    text = render_compare(compare(one([1.0], requests=405), one([1.0], requests=410)))
    assert "405 → 410 (+5)" in text
    assert "counts changed" in text


def test_compare_only_rows_present_in_both() -> None:
    before = sample_doc()
    after = sample_doc()
    after["results"] = [r for r in after["results"] if r["scenario"] != "skopeo"]
    after["results"].append(result("loopback", "service", "cold", [3.0]))
    rows = compare(before, after)
    keys = [(r.profile, r.scenario, r.phase) for r in rows]
    assert len(keys) == len(before["results"]) - 2
    assert ("loopback", "skopeo", "cold") not in keys
    assert ("loopback", "service", "cold") not in keys
    assert all(r.verdict == "same" and not r.changed for r in rows)
    only_before, only_after = unmatched(before, after)
    assert only_before == [("loopback", "skopeo", "cold"), ("loopback", "skopeo", "warm")]
    assert only_after == [("loopback", "service", "cold")]
    report = compare_report(before, after)
    assert "only in before: loopback skopeo cold, loopback skopeo warm" in report
    assert "only in after: loopback service cold" in report


def test_compare_warns_when_machines_differ() -> None:
    doc = sample_doc()
    assert machine_warnings(doc, sample_doc()) == []
    other = sample_doc()
    other["machine"]["cpu_model"] = "Other CPU"
    other["machine"]["cpu_cores"] = 8
    other["machine"]["git_revision"] = "f" * 40  # a new revision is the point of comparing: no warning
    [warning] = machine_warnings(doc, other)
    assert "cpu_model" in warning
    assert "cpu_cores" in warning
    assert "python" not in warning
    assert "WARNING" in compare_report(doc, other)
    assert "WARNING" not in compare_report(doc, sample_doc())


# --- CLI --------------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def results_files(tmp_path: Path) -> tuple[Path, Path]:
    before = sample_doc()
    after = sample_doc()
    for r in after["results"]:
        if (r["profile"], r["scenario"], r["phase"]) == ("loopback", "cluster", "cold"):
            r.update(seconds=[4.8, 5.0, 5.4], median=5.0, min=4.8, max=5.4)
    paths = tmp_path / "before.json", tmp_path / "after.json"
    for path, doc in zip(paths, (before, after), strict=True):
        path.write_text(json.dumps(doc), encoding="utf-8")
    return paths


def test_cli_table_chart_compare(results_files: tuple[Path, Path], tmp_path: Path) -> None:
    before, after = results_files
    table = cli("table", str(before))
    assert table.returncode == 0, table.stderr
    assert table_cells(table.stdout, "loopback", "cluster", "cold")[4] == "4.00×"

    out = tmp_path / "out.svg"
    chart = cli("chart", str(before), "-o", str(out))
    assert chart.returncode == 0, chart.stderr
    assert len(bars(out.read_text(encoding="utf-8"))) == len(sample_doc()["results"])
    default = cli("chart", str(before))
    assert default.returncode == 0, default.stderr
    assert before.with_suffix(".svg").exists()

    comp = cli("compare", str(before), str(after))
    assert comp.returncode == 0, comp.stderr
    cluster = table_cells(comp.stdout, "loopback", "cluster", "cold")
    assert cluster[4:7] == ["2.000", "12 %", "slower"]
    assert "1 slower" in comp.stdout
    noisy = cli("compare", str(before), str(after), "--noise", "1.5")
    assert noisy.returncode == 0, noisy.stderr
    assert table_cells(noisy.stdout, "loopback", "cluster", "cold")[6] == "same"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("nonsense",),
        ("compare", "only-one.json"),
        ("table",),
        ("compare", "BEFORE", "AFTER", "--noise", "abc"),
        ("compare", "BEFORE", "AFTER", "--noise", "-1"),
        ("table", "missing.json"),
        ("table", "NOT_RESULTS"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], results_files: tuple[Path, Path], tmp_path: Path) -> None:
    not_results = tmp_path / "not_results.json"
    not_results.write_text('{"benchmark": "harness"}', encoding="utf-8")
    names = {"BEFORE": str(results_files[0]), "AFTER": str(results_files[1]), "NOT_RESULTS": str(not_results)}
    proc = cli(*(names.get(a, a) for a in args))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "usage:" in proc.stderr


def test_cli_run_forwards_to_the_harness(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_main(argv: list[str] | None = None) -> int:
        calls.append(list(argv or []))
        return 3

    monkeypatch.setitem(sys.modules, "benchmarks.mirror", types.SimpleNamespace(main=fake_main))
    assert cli_main(["run", "--quick", "--help", "x"]) == 3
    assert calls == [["--quick", "--help", "x"]]
