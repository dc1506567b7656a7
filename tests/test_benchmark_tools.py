"""The benchmarks package: the results model (and its format-1 reader), tables, chart, comparison, targets, access
log classes, network profiles and the link floor, start-up parsing, the scenario registry, the row maths, the CLI,
and small harness runs against real registries.

Documents and samples here are synthetic (built in the test) unless a test says otherwise; nothing is timed and no
test asserts a target's verdict (only that it is computed as its comparison says).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ocicopy
from benchmarks.chart import render_svg, render_table, table_rows, write_chart
from benchmarks.cli import main as cli_main
from benchmarks.cli import parse_run_args
from benchmarks.compare import NOISE_FLOOR, compare, compare_report, machine_warnings, render_compare, unmatched
from benchmarks.measure import Sample, row_of, run_benchmark
from benchmarks.network import Link, Profile, dependency_chain, link_floor, make_profiles, parse_bandwidth, parse_rtt
from benchmarks.results import SCENARIO_ORDER, VERSION, ProfileInfo, Results, ResultsError, Row, load, upgrade_v1
from benchmarks.scenarios import SCENARIOS, chains, register_scenario
from benchmarks.startup import Startup, by_package, heaviest, parse_importtime, time_commands
from benchmarks.targets import format_targets, judge_targets
from benchmarks.traffic import Traffic, classify
from benchmarks.workload import build_workload
from harness.registry import AccessEntry

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "benchmarks"
SVG = "{http://www.w3.org/2000/svg}"
MiB = 1024 * 1024
WAN_SOURCE = {"rtt_s": 0.04, "bandwidth_bps": 200e6}
WAN_MIRROR = {"rtt_s": 0.002, "bandwidth_bps": 2e9}

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
    **figures: Any,
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
        **figures,
    }


def document(
    results: list[dict[str, Any]], profiles: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """A format-2 document (as a dict, as it is on disk)."""
    names = list(dict.fromkeys(r["profile"] for r in results))
    doc = {
        "benchmark": "harness",
        "version": VERSION,
        "command": "python -m benchmarks run",
        "timestamp": "2026-11-27T10:11:12+0000",
        "quick": False,
        "machine": dict(MACHINE),
        "workload": {"deployments": 30, "unique_bytes": 100 * MiB},
        "profiles": profiles if profiles is not None else [{"name": n} for n in names],
        "results": results,
    }
    doc.update(extra)
    return doc


def wan_profile(unique: int = 100 * MiB) -> dict[str, Any]:
    info = ProfileInfo(name="wan", scale=0.5, source=Link(**WAN_SOURCE), mirror=Link(**WAN_MIRROR), unique_bytes=unique)
    return info.model_copy(update={"link_floor": link_floor(info, unique, index=True)}).model_dump()


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
    return document(loopback + wan, [{"name": "loopback", "scale": 1.0}, wan_profile()])


def section(text: str, profile: str) -> str:
    return text.split(f"[{profile}]", 1)[1].split("\n[", 1)[0]


def table_cells(text: str, profile: str, scenario: str, phase: str, table: int = 0) -> list[str]:
    """Cells of one row of ``render_table``'s ``table``-th table of a profile (columns: two spaces or more)."""
    part = section(text, profile).split("\n\n")[table]
    for line in part.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:2] == [scenario, phase]:
            return cells
    raise AssertionError(f"no row {scenario} {phase} in [{profile}]:\n{part}")


# --- the results model --------------------------------------------------------------------------------------


def test_the_v1_harness_reference_is_converted_on_load() -> None:
    doc = load(REFERENCE / "harness-2026-11-26.json")
    assert (doc.benchmark, doc.version, len(doc.results)) == ("harness", 2, 24)
    loopback, wan = doc.profiles
    assert (loopback.name, loopback.scale, loopback.source, loopback.link_floor) == ("loopback", 1.0, None, None)
    assert (wan.name, wan.scale, wan.unique_bytes, wan.deployments) == ("wan", 0.5, 134937583, 30)
    assert wan.source == Link(rtt_s=0.04, bandwidth_bps=200e6) and wan.mirror == Link(rtt_s=0.002, bandwidth_bps=2e9)
    assert wan.one_change is not None and wan.one_change.version == "1.0.2"
    # The link floor the old run's wan had: its bytes over 200 Mbit/s, plus 3 source and 3 mirror round trips.
    assert wan.link_floor is not None
    assert wan.link_floor.seconds == pytest.approx(134937583 * 8 / 200e6 + 3 * 0.04 + 3 * 0.002)
    cluster = doc.rows()[("loopback", "cluster", "cold")]
    assert (cluster.median, cluster.requests, cluster.requests_per_deployment) == (2.5, 405, 13.5)
    assert cluster.client_cpu_seconds is None  # not measured then
    first = doc.targets[0]
    assert (first.profile, first.name, first.at_most, first.passed) == (
        "loopback",
        "cluster cold >= 3x faster than naive cold",
        False,
        True,
    )
    assert sum(not t.passed for t in doc.targets) == 2  # the two loopback CLI warm targets of that run
    assert "machine" not in doc.details and doc.machine.skopeo_version == "1.9.3"  # type: ignore[attr-defined]


def test_the_v1_compression_reference_is_converted_on_load() -> None:
    doc = load(REFERENCE / "compression-2026-11-26.json")
    assert (doc.benchmark, [p.name for p in doc.profiles]) == ("compression", ["offline", "loopback"])
    assert set(doc.details) == {"settings", "sizes", "decompression", "mirror"}
    assert doc.details["settings"]["levels"] == [1, 3, 9]
    assert doc.rows()[("offline", "decompress gzip", "all layers")].median == 2.038
    assert doc.targets == [] and doc.machine.zstd_version == "1.5.7"  # type: ignore[attr-defined]
    assert all(r.verdict == "same" and not r.changed for r in compare(doc, doc))


def test_a_document_round_trips_and_says_its_version() -> None:
    doc = load(sample_doc())
    text = doc.dump()
    assert json.loads(text)["version"] == VERSION == 2
    assert load(json.loads(text)) == doc
    assert load(doc) is doc


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"benchmark": "harness", "version": 3, "results": []}, "version 3"),
        ({"benchmark": "harness"}, "no 'results' list"),
        ({"benchmark": "harness", "version": 2, "results": [{"scenario": "x"}]}, "not a valid"),
        (
            {"benchmark": "harness", "version": 1, "results": [{"scenario": "x", "phase": "cold", "seconds": "fast"}]},
            "valid",
        ),
        ([1, 2], "JSON object"),
    ],
)
def test_documents_that_are_not_results_are_refused(raw: Any, message: str) -> None:
    with pytest.raises(ResultsError, match=message):
        load(raw)


def test_rows_derive_their_figures_from_the_samples() -> None:
    row = Row(scenario="cluster", phase="cold", seconds=[3.0, 1.0, 2.0])
    assert (row.median, row.min, row.max) == (2.0, 1.0, 3.0)
    assert row.stats is not None and row.stats.runs == 3 and row.stats.spread == 1.0
    kept = Row(scenario="cluster", phase="cold", seconds=[3.0, 1.0], median=2.5)
    assert kept.median == 2.5
    assert Row(scenario="floor", phase="cold").stats is None


@pytest.mark.parametrize(
    ("name", "profile", "rest", "at_most"),
    [
        ("loopback: cluster cold <= 1.3x floor", "loopback", "cluster cold <= 1.3x floor", True),
        (
            "wan: cluster warm (CLI subprocess) >= 10x faster",
            "wan",
            "cluster warm (CLI subprocess) >= 10x faster",
            False,
        ),
        ("no profile here", "", "no profile here", True),
    ],
)
def test_v1_target_names_give_the_profile_and_the_direction(name: str, profile: str, rest: str, at_most: bool) -> None:
    [target] = upgrade_v1({"results": [], "targets": [{"name": name, "value": 1, "limit": 2, "pass": True}]})["targets"]
    assert (target["profile"], target["name"], target["at_most"]) == (profile, rest, at_most)


# --- table --------------------------------------------------------------------------------------------------


def test_table_speedups_and_ratios_are_hand_computed_values() -> None:
    text = render_table(sample_doc())
    # cluster cold: naive 10 / 2.5 = 4; 2.5 / skopeo 25 = 0.1; 2.5 / floor 2 = 1.25.
    assert table_cells(text, "loopback", "cluster", "cold") == [
        "cluster",
        "cold",
        "2.50 s",
        "2.40–2.70 s",
        "4.00×",
        "0.10×",
        "1.25×",
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
    ]
    assert table_cells(text, "loopback", "naive", "cold")[4:7] == ["1.00×", "0.40×", "5.00×"]
    assert table_cells(text, "loopback", "skopeo", "warm")[4:7] == ["1.25×", "1.00×", "–"]
    assert table_cells(text, "loopback", "floor", "cold")[4:7] == ["5.00×", "0.080×", "1.00×"]
    # wan: no skopeo; 30 / 7.5 = 4; 7.5 / 5 = 1.5; link floor 100 MiB * 8 / 200 Mbit/s + 0.126 s = 4.32 s.
    floor = 100 * MiB * 8 / 200e6 + 0.126
    assert table_cells(text, "wan", "cluster", "cold")[4:8] == ["4.00×", "–", "1.50×", f"{7.5 / floor:.2f}×"]
    assert table_cells(text, "wan", "cluster", "warm")[4:8] == ["–", "–", "–", "–"]
    assert "time ÷ link floor" not in section(text, "loopback")
    assert f"link floor {floor:.2f} s = 100.0 MiB through the source link" in section(text, "wan")
    assert "not measured in this profile: naive warm, one-change warm, skopeo cold, skopeo warm" in section(text, "wan")


def test_traffic_table_shows_requests_per_deployment_and_client_cpu() -> None:
    rows = [
        result("loopback", "cluster", "cold", [2.0], requests=405, source_requests=118, mirror_requests=287)
        | {
            "requests_per_deployment": 13.5,
            "client_requests": 404,
            "client_cpu_seconds": 0.9,
            "cpu_ms_per_request": 2.228,
        },
        result("loopback", "skopeo", "warm", [1.5], requests=384),
    ]
    text = render_table(document(rows))
    assert table_cells(text, "loopback", "cluster", "cold", table=1) == [
        "cluster",
        "cold",
        "10.0",
        "10.0",
        "405",
        "118 + 287",
        "13.50",
        "404",
        "0.90",
        "2.23",
    ]
    assert table_cells(text, "loopback", "skopeo", "warm", table=1)[4:] == ["384", "–", "–", "–", "–", "–"]


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
    assert cluster_cold["ratio_to_link_floor"] is None  # loopback has no links
    assert rows[3]["ratio_to_floor"] is None


def test_table_header_names_the_run_and_start_up_is_printed() -> None:
    startup = Startup(runs=5, bare_seconds=0.02, module_seconds=0.25, script_seconds=0.24, imports_command="x")
    text = render_table(load(sample_doc()).model_copy(update={"startup": startup}))
    assert "ocicopy harness benchmark · 2026-11-27 10:11:12+0000" in text
    assert "Test CPU @ 2.0GHz (2 cores)" in text
    assert "revision 0123456789ab" in text
    assert "0123456789abc" not in text  # the revision is shortened to 12 hex digits
    assert "python -c pass 20 ms; python -m ocicopy --version 250 ms (+230); ocicopy --version 240 ms (+220)" in text


def test_table_tolerates_missing_figures() -> None:
    doc = document(
        [
            {"profile": "loopback", "scenario": "cluster", "phase": "cold", "seconds": [3.0, 1.0, 2.0]},
            {"profile": "loopback", "scenario": "floor", "phase": "cold"},
        ]
    )
    text = render_table(doc)
    assert table_cells(text, "loopback", "cluster", "cold") == ["cluster", "cold", "2.00 s", "1.00–3.00 s"] + ["–"] * 3
    assert table_cells(text, "loopback", "floor", "cold")[2:4] == ["–", "–"]
    assert table_cells(text, "loopback", "cluster", "cold", table=1)[2:] == ["–"] * 8


# --- chart ------------------------------------------------------------------------------------------------


def parse_svg(svg: str) -> ET.Element:
    return ET.fromstring(svg.encode("utf-8"))  # noqa: S314 - our own output, not untrusted input


def bars(svg: str) -> list[ET.Element]:
    return [e for e in parse_svg(svg).iter(f"{SVG}rect") if "bar" in (e.get("class") or "").split()]


def bar_ends(svg: str) -> dict[str, float]:
    """``"profile · scenario · phase"`` -> x where its bar ends."""
    out = {}
    for group in parse_svg(svg).iter(f"{SVG}g"):
        title, rect = group.find(f"{SVG}title"), group.find(f"{SVG}rect")
        if title is not None and rect is not None:
            name = (title.text or "").split(":")[0]
            out[name] = float(rect.get("x", "0")) + float(rect.get("width", "0"))
    return out


def test_svg_is_standalone_xml_with_one_bar_per_result_and_the_link_floor() -> None:
    doc = sample_doc()
    svg = render_svg(doc)
    root = parse_svg(svg)
    assert root.tag == f"{SVG}svg"
    assert float(root.get("width", "0")) > 0 and float(root.get("height", "0")) > 0
    assert len(bars(svg)) == len(doc["results"])
    assert "href" not in svg and "@import" not in svg and "<script" not in svg
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert {"loopback", "wan", "2.50 s", "100 ms"} <= set(texts)
    assert any("log scale" in t for t in texts)
    assert any("0123456789ab" in t for t in texts)
    [floor] = [e for e in root.iter(f"{SVG}line") if e.get("class") == "link-floor"]  # wan only
    ends = bar_ends(svg)
    # The 4.32 s link floor sits between the ends of the 2.5 s and the 5 s bars (a logarithmic axis).
    assert ends["loopback · cluster · cold"] < float(floor.get("x1", "0")) < ends["wan · floor · cold"]


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
    texts = ["".join(t.itertext()) for t in parse_svg(svg).iter(f"{SVG}text")]
    assert "odd<&scenario" in texts
    assert "p<1>&q" in texts
    assert any('CPU <fast> & "cheap"' in t for t in texts)
    assert len(bars(svg)) == 1


def test_svg_is_deterministic_and_write_chart_writes_it(tmp_path: Path) -> None:
    doc = sample_doc()
    assert render_svg(doc) == render_svg(json.loads(json.dumps(doc))) == render_svg(load(doc))
    out = tmp_path / "chart.svg"
    write_chart(doc, out)
    assert out.read_text(encoding="utf-8") == render_svg(doc)


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
    assert (row.before, row.after, row.ratio) == (pytest.approx(1.05), pytest.approx(2.1), pytest.approx(2.0))
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


def test_compare_reads_a_v1_document_against_its_v2_form() -> None:
    v1 = dict(sample_doc(), version=1, profiles=["loopback", "wan"])
    assert [r.verdict for r in compare(v1, sample_doc())] == ["same"] * len(sample_doc()["results"])


def test_compare_warns_when_machines_differ() -> None:
    doc = sample_doc()
    assert machine_warnings(doc, sample_doc()) == []
    other = sample_doc()
    other["machine"]["cpu_model"] = "Other CPU"
    other["machine"]["cpu_cores"] = 8
    other["machine"]["git_revision"] = "f" * 40  # a new revision is the point of comparing: no warning
    [warning] = machine_warnings(doc, other)
    assert "cpu_model" in warning and "cpu_cores" in warning and "python" not in warning
    assert "WARNING" in compare_report(doc, other)
    assert "WARNING" not in compare_report(doc, sample_doc())


# --- targets ------------------------------------------------------------------------------------------------


def targets_doc(cluster_cold: float, wan_cluster_cold: float, warm_cli: float) -> Results:
    floor = 100 * MiB * 8 / 200e6 + 0.126
    loopback = [
        result("loopback", "naive", "cold", [9.0]),
        result("loopback", "cluster", "cold", [cluster_cold], blobs_not_read_once=0),
        result("loopback", "service+mount", "cold", [2.3], blobs_not_read_once=1),
        result("loopback", "floor", "cold", [2.0]),
        result("loopback", "skopeo", "warm", [1.5]),
        result("loopback", "cluster", "warm", [warm_cli], requests_per_deployment=1.33),
        result("loopback", "cluster-library", "warm", [0.09]),
    ]
    wan = [
        result("wan", "cluster", "cold", [wan_cluster_cold * floor]),
        result("wan", "skopeo", "warm", [8.0]),
        result("wan", "cluster", "warm", [warm_cli * 8.0 / 1.5], requests_per_deployment=2.5),
    ]
    return load(document(loopback + wan, [{"name": "loopback"}, wan_profile()]))


def verdicts(doc: Results) -> dict[str, tuple[float, bool]]:
    return {t.label: (t.value, t.passed) for t in judge_targets(doc)}


def test_targets_are_judged_per_profile_against_their_limits() -> None:
    got = verdicts(targets_doc(cluster_cold=2.0, wan_cluster_cold=1.05, warm_cli=0.15))
    assert got == {
        "loopback: cluster cold ≥ 3× faster than naive cold": (4.5, True),
        "loopback: cluster cold ≤ 1× the curl floor": (1.0, True),
        "loopback: service+mount cold ≤ 1.15× the curl floor": (1.15, True),
        "loopback: cluster warm (CLI) ≤ 0.1× the skopeo warm loop": (0.1, True),
        "loopback: cluster warm (library, in-process) ≤ 0.1× the skopeo warm loop": (0.06, True),
        "loopback: cluster cold: unique blobs not read exactly once from the source": (0.0, True),
        "loopback: service+mount cold: unique blobs not read exactly once from the source": (1.0, False),
        "loopback: cluster warm ≤ 2 requests per deployment": (1.33, True),
        "wan: cluster cold ≤ 1.1× the link floor": (1.05, True),
        "wan: cluster warm (CLI) ≤ 0.05× the skopeo warm loop": (0.1, False),
        "wan: cluster warm ≤ 2 requests per deployment": (2.5, False),
    }


@pytest.mark.parametrize(
    ("cold", "wan_cold", "warm", "failing"),
    [
        (2.01, 1.05, 0.15, {"loopback: cluster cold ≤ 1× the curl floor"}),
        (2.0, 1.11, 0.15, {"wan: cluster cold ≤ 1.1× the link floor"}),
        (
            3.1,
            1.0,
            0.16,
            {
                "loopback: cluster cold ≤ 1× the curl floor",
                "loopback: cluster cold ≥ 3× faster than naive cold",
                "loopback: cluster warm (CLI) ≤ 0.1× the skopeo warm loop",
            },
        ),
    ],
)
def test_targets_fail_just_past_their_limits(cold: float, wan_cold: float, warm: float, failing: set[str]) -> None:
    always = {
        "loopback: service+mount cold: unique blobs not read exactly once from the source",
        "wan: cluster warm (CLI) ≤ 0.05× the skopeo warm loop",
        "wan: cluster warm ≤ 2 requests per deployment",
    }
    got = verdicts(targets_doc(cold, wan_cold, warm))
    assert {name for name, (_, passed) in got.items() if not passed} == failing | always


def test_format_targets_prints_every_verdict() -> None:
    doc = targets_doc(2.0, 1.05, 0.15)
    doc.targets = judge_targets(doc)
    lines = format_targets(doc).splitlines()
    assert lines[0] == "targets:" and len(lines) == 1 + len(doc.targets)
    assert "  PASS  loopback: cluster cold ≥ 3× faster than naive cold: 4.5 (limit 3)" in lines
    assert "  FAIL  wan: cluster warm ≤ 2 requests per deployment: 2.5 (limit 2)" in lines


# --- access logs --------------------------------------------------------------------------------------------


D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("method", "uri", "status", "kind"),
    [
        ("GET", "/v2/", 200, "ping"),
        ("HEAD", f"/v2/acme/api/blobs/{D}", 200, "blob HEAD"),
        ("HEAD", f"/v2/acme/api/blobs/{D}", 404, "blob HEAD 404"),
        ("GET", f"/v2/acme/api/blobs/{D}", 200, "blob GET"),
        ("POST", f"/v2/m/b/blobs/uploads/?mount={D}&from=acme/api", 201, "mount"),
        ("POST", f"/v2/m/b/blobs/uploads/?mount={D}&from=acme/api", 202, "mount declined"),
        ("POST", "/v2/m/b/blobs/uploads/", 202, "upload POST"),
        ("PUT", f"/v2/m/b/blobs/uploads/u1?digest={D}", 201, "upload PUT"),
        ("HEAD", "/v2/m/b/manifests/t1", 404, "manifest HEAD 404"),
        ("PUT", "/v2/m/b/manifests/t1", 201, "manifest PUT"),
        ("GET", "/v2/m/b/tags/list", 200, "tags GET"),
        ("GET", "/debug", 200, "other"),
    ],
)
def test_requests_are_classified(method: str, uri: str, status: int, kind: str) -> None:
    assert classify(AccessEntry(method, uri, status, 0)) == kind


def test_traffic_adds_up_a_run() -> None:
    entries = [
        AccessEntry("GET", f"/v2/acme/api/blobs/{D}", 200, 1000),
        AccessEntry("GET", f"/v2/acme/web/blobs/{D}", 200, 1000),
        AccessEntry("GET", "/v2/acme/api/manifests/1.0", 200, 300),
        AccessEntry("HEAD", "/v2/acme/api/manifests/1.0", 404, 0),
        AccessEntry("PUT", f"/v2/m/b/blobs/uploads/u?digest={D}", 201, 0),
        AccessEntry("PUT", "/v2/m/b/manifests/t", 400, 0),
    ]
    t = Traffic.of(entries)
    assert (t.requests, t.bytes_out, t.max_gets_per_blob, t.errors) == (6, 2300, 2, 1)
    assert t.uploads == {D: 1} and t.upload_repos == {D: "m/b"} and t.uploaded_bytes({D: 7}) == 7
    assert t.by_kind["blob GET"] == 2 and t.by_kind["manifest HEAD 404"] == 1


# --- network profiles and the link floor ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("40ms", 0.04), ("0.04s", 0.04), ("0.04", 0.04), (" 2 ms ", 0.002), ("1e-3", 0.001)]
)
def test_rtt_parsing(text: str, seconds: float) -> None:
    assert parse_rtt(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bps"), [("200Mbit", 200e6), ("2Gbit", 2e9), ("500kbit", 5e5), ("200e6", 200e6), ("1Mbit/s", 1e6)]
)
def test_bandwidth_parsing(text: str, bps: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bps)


@pytest.mark.parametrize("text", ["", "fast", "-1ms", "1.2.3ms", "40 parsecs"])
def test_bad_round_trip_times_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a round-trip time"):
        parse_rtt(text)


@pytest.mark.parametrize("text", ["", "fast", "-1Mbit", "0Mbit", "1.2.3Mbit", "10 parsecs"])
def test_bad_bandwidths_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a bandwidth"):
        parse_bandwidth(text)


@given(st.floats(min_value=0.001, max_value=1e4), st.sampled_from(["k", "M", "G", ""]))
def test_bandwidth_round_trips(value: float, unit: str) -> None:
    text = f"{value!r}{unit}bit"
    assert parse_bandwidth(text) == pytest.approx(value * {"k": 1e3, "M": 1e6, "G": 1e9, "": 1}[unit])


def test_profiles_from_names_with_overrides() -> None:
    loopback, wan = make_profiles(["loopback", "wan"], 1.0, 0.5, source=(0.08, 100e6), mirror=(None, None))
    assert loopback == Profile(name="loopback", scale=1.0) and not loopback.linked
    assert wan.scale == 0.5 and wan.linked
    assert wan.source == Link(rtt_s=0.08, bandwidth_bps=100e6)
    assert wan.mirror == Link(rtt_s=0.002, bandwidth_bps=2e9)  # the profile's default
    with pytest.raises(ValueError, match="unknown profile"):
        make_profiles(["moon"], 1, 1)


@pytest.mark.parametrize(
    ("index", "token", "steps"),
    [
        (True, False, ["manifest", "children", "blob GET", "blob PUT", "manifest PUT", "tag"]),
        (False, False, ["manifest", "blob GET", "blob PUT", "tag"]),
        (True, True, ["token", "manifest", "children", "blob GET", "blob PUT", "manifest PUT", "tag"]),
    ],
)
def test_the_dependency_chain_follows_the_workload(index: bool, token: bool, steps: list[str]) -> None:
    assert [step for step, _, _ in dependency_chain(index, token)] == steps


def test_link_floor_is_bytes_through_the_slowest_link_plus_the_chain() -> None:
    wan = Profile(name="wan", source=Link(rtt_s=0.04, bandwidth_bps=200e6), mirror=Link(rtt_s=0.002, bandwidth_bps=2e9))
    floor = link_floor(wan, 25_000_000, index=True)
    assert floor is not None
    assert (floor.bottleneck, floor.transfer_seconds, floor.chain_seconds) == ("source", 1.0, pytest.approx(0.126))
    assert floor.seconds == pytest.approx(1.126)
    plain = link_floor(wan, 25_000_000, index=False)
    assert plain is not None and plain.chain_seconds == pytest.approx(0.084)
    slow_mirror = Profile(name="x", source=Link(rtt_s=0.01, bandwidth_bps=1e9), mirror=Link(rtt_s=0, bandwidth_bps=1e8))
    other = link_floor(slow_mirror, 25_000_000, index=False)
    assert other is not None and (other.bottleneck, other.transfer_seconds) == ("mirror", 2.0)
    only_source = link_floor(Profile(name="y", source=Link(rtt_s=0.05, bandwidth_bps=1e8)), 0, index=False)
    assert only_source is not None and only_source.chain_seconds == pytest.approx(0.1)  # a direct mirror costs 0
    assert link_floor(Profile(name="loopback"), 10**9, index=True) is None


# --- start-up -----------------------------------------------------------------------------------------------


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:      3000 |       3000 |     pydantic.main
import time:      2000 |       5000 |   pydantic
import time:       500 |        500 |     httpx2._models
import time:      4000 |       4500 |   httpx2
import time:      1000 |      11120 | ocicopy.cli
ocicopy 0.2.0
"""


def test_importtime_reports_are_parsed_and_summed() -> None:
    imports = parse_importtime(IMPORTTIME)
    assert [(i.module, i.self_us, i.cumulative_us, i.depth) for i in imports][:3] == [
        ("_io", 120, 120, 1),
        ("pydantic.main", 3000, 3000, 2),
        ("pydantic", 2000, 5000, 1),
    ]
    assert [i.module for i in heaviest(imports, 3)] == ["httpx2", "pydantic.main", "pydantic"]
    assert by_package(imports) == {"pydantic": 5000, "httpx2": 4500, "ocicopy": 1000, "_io": 120}
    assert by_package(imports, 1) == {"pydantic": 5000}


def test_start_up_times_are_interleaved_after_an_unmeasured_round() -> None:
    calls: list[str] = []
    clock = {"bare": 0.02, "module": 0.3, "script": 0.25}

    def run(cmd: Any) -> float:
        calls.append(cmd[0])
        return clock[cmd[0]]

    times = time_commands({name: [name] for name in clock}, 3, run)
    assert calls == ["bare", "module", "script"] * 4
    startup = Startup.of(times, parse_importtime(IMPORTTIME), "cmd")
    assert startup.runs == 3
    assert (startup.module_overhead_seconds, startup.script_overhead_seconds) == (
        pytest.approx(0.28),
        pytest.approx(0.23),
    )
    assert startup.imports_total_us == 10620 and startup.packages["pydantic"] == 5000
    dumped = json.loads(startup.model_dump_json())
    assert dumped["module_overhead_seconds"] == pytest.approx(0.28)
    assert Startup.of({"bare": [0.1], "module": [0.2]}).script_overhead_seconds is None


# --- rows from samples ----------------------------------------------------------------------------------------


def sample(
    seconds: float, cpu: float, own: int | None, gets: dict[str, int], source: int = 20, mirror: int = 20
) -> Sample:
    return Sample(
        profile="loopback",
        scenario="cluster",
        phase="cold",
        repeat=0,
        seconds=seconds,
        tool_cpu_seconds=cpu,
        harness_cpu_seconds=0.0,
        source=Traffic(requests=source, blob_gets=gets, bytes_out=1000),
        mirror=Traffic(requests=mirror, uploads={"a": 1}),
        registry_cpu_seconds={"source": 0.0, "mirror": 0.0},
        client_requests=own,
    )


def test_rows_are_medians_of_the_samples_and_the_worst_run_for_checks() -> None:
    samples = [
        sample(2.0, 0.8, 40, {"a": 1, "b": 1}),
        sample(3.0, 1.0, 50, {"a": 1, "b": 2}, source=30),  # b read twice
        sample(1.0, 0.6, 40, {"a": 1}),  # b never read
    ]
    row = row_of(samples, deployments=20, sizes={"a": 500}, unique=["a", "b"])
    assert (row.median, row.min, row.max, row.seconds) == (2.0, 1.0, 3.0, [2.0, 3.0, 1.0])
    assert (row.requests, row.source_requests, row.mirror_requests, row.client_requests) == (40, 20, 20, 40)
    assert row.requests_per_deployment == 2.0
    assert (row.bytes_from_source, row.bytes_to_mirror, row.client_cpu_seconds) == (1000, 500, 0.8)
    assert row.cpu_ms_per_request == 20.0  # medians of 0.8/40, 1.0/50, 0.6/40 s per request: 20, 20, 15 ms
    assert (row.max_source_gets_per_blob, row.blobs_not_read_once) == (2, 1)
    # Without the tool's own count, CPU per request is per request the registries answered.
    logs_only = row_of([sample(1.0, 0.5, None, {"a": 1}, source=10, mirror=15)], 20, {}, ["a"])
    assert (logs_only.client_requests, logs_only.cpu_ms_per_request) == (None, 20.0)


# --- scenarios and the workload ---------------------------------------------------------------------------------


def test_the_built_in_scenarios_and_their_chains() -> None:
    assert tuple(SCENARIOS)[: len(SCENARIO_ORDER)] == SCENARIO_ORDER  # registered in display order
    assert {"naive", "service-per-env", "cluster-library", "skopeo", "floor"} <= set(SCENARIO_ORDER)
    assert SCENARIOS["service-per-env"].phases == ("cold", "warm") and SCENARIOS["service-per-env"].after is None
    assert SCENARIOS["cluster-library"].phases == ("warm",) and SCENARIOS["cluster-library"].after == "cluster"
    grouped = chains(
        ["naive", "service+mount", "service+mount-library", "cluster", "cluster-library", "one-change", "floor"]
    )
    assert [[s.name for s in chain] for chain in grouped] == [
        ["naive"],
        ["service+mount", "service+mount-library"],
        ["cluster", "cluster-library", "one-change"],
        ["floor"],
    ]
    # Without its predecessor, a follower starts its own chain (on a mirror its prepare step fills).
    assert [[s.name for s in c] for c in chains(["one-change"])] == [["one-change"]]


def test_registering_a_scenario_puts_it_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("benchmarks.scenarios.SCENARIOS", dict(SCENARIOS))
    from benchmarks import scenarios

    made = register_scenario("crane", lambda ctx: None, requires=("crane",), after="cluster")
    assert scenarios.SCENARIOS["crane"] is made and made.phases == ("cold", "warm") and "crane" not in SCENARIOS
    assert [[s.name for s in c] for c in scenarios.chains(["cluster", "crane"])] == [["cluster", "crane"]]


def test_per_environment_plans_key_every_deployment_as_its_own_service() -> None:
    workload = build_workload(0.001, "random")
    plan = workload.plan("127.0.0.1:5000", "127.0.0.1:5001", mode="service", per_environment=True)
    services = [d["service"] for d in plan["deployments"]]
    assert len(services) == len(set(services)) == 30
    assert "api-prod" in services and "api-staging" in services and "scheduler-dev" in services
    parsed = ocicopy.parse_plan(plan)  # a plan ocicopy accepts
    assert len({d.service for d in parsed.deployments}) == 30
    shared = workload.plan("127.0.0.1:5000", "127.0.0.1:5001", mode="service")
    assert len({d["service"] for d in shared["deployments"]}) == 10
    assert [d["image"] for d in shared["deployments"]] == [d["image"] for d in plan["deployments"]]
    assert workload.has_index


def test_the_blob_throughput_document_has_a_row_per_tool_and_its_two_targets() -> None:
    from benchmarks import blob_throughput as bt

    size = 100 * MiB
    samples = [
        bt.Sample("curl", 0, 1.0, size, peak_rss_mb=10.0, command_seconds=1.0, cpu_seconds=1.2),
        bt.Sample("ocicopy", 0, 1.25, size, peak_rss_mb=160.0, command_seconds=1.5, cpu_seconds=2.5),
    ]
    summary = bt.summarise(samples)
    assert (summary["ratio"], summary["throughput_ok"], summary["rss_ok"]) == (0.8, True, False)
    doc = bt.results_document(bt.parse_args(["--quick"]), samples, summary)
    assert (doc.benchmark, doc.quick, doc.workload["size_bytes"]) == ("blob_throughput", True, 256 * MiB)
    assert [(r.scenario, r.seconds, r.client_cpu_seconds) for r in doc.results] == [
        ("curl", [1.0], 1.2),
        ("ocicopy", [1.25], 2.5),
    ]
    assert [(t.value, t.limit, t.passed) for t in doc.targets] == [(0.8, 0.7, True), (160.0, 150.0, False)]
    assert load(json.loads(doc.dump())) == doc


def test_the_fleet_benchmark_plans_are_ones_ocicopy_runs_and_its_document_judges_the_fleet() -> None:
    from benchmarks import fleet

    workload = build_workload(0.001, "random")
    mirrors = {"c0": "127.0.0.1:5001", "c1": "127.0.0.1:5002", "c2": "127.0.0.1:5003"}
    plan = ocicopy.parse_plan(fleet.fleet_plan(workload, "127.0.0.1:5000", mirrors, "m"))
    assert [name for name, sub in plan.cluster_plans()] == ["c0", "c1", "c2"]
    assert all(len(sub.deployments) == 30 for _, sub in plan.cluster_plans())
    one = ocicopy.parse_plan(fleet.cluster_plan(workload, "127.0.0.1:5000", "127.0.0.1:5002", "c1", "m"))
    assert one.target.cluster == "c1" and len(one.deployments) == 30
    samples = {
        "fleet": [{"seconds": 2.0, "bytes_from_source": 10, "max_source_gets_per_blob": 1, "blobs_not_read_once": 0,
                   "source_requests": 5}],
        "parallel": [{"seconds": 3.0, "bytes_from_source": 30, "max_source_gets_per_blob": 3,
                      "blobs_not_read_once": 9, "source_requests": 15}],
    }  # fmt: skip
    profile = fleet.Profile(name="wan", scale=0.001, source=fleet.Link(rtt_s=0.04, bandwidth_bps=200e6))
    doc = fleet.results(workload, profile, samples, floor=1.0, clusters=3, argv=["--quick"])
    assert [(t.value, t.passed) for t in doc.targets] == [(0, True), (2.0, False)]  # read once; 2x the floor
    assert [r.scenario for r in doc.results] == ["fleet", "parallel"] and doc.results[1].bytes_from_source == 30
    assert "parallel" in fleet.render(doc, 1.0) and load(json.loads(doc.dump())) == doc


def test_the_growth_figures_count_the_graph_of_a_fleet_plan() -> None:
    from benchmarks import fleet

    g = fleet.growth(deployments=40, clusters=3, layers=3, dask_workers=1, dask_tasks=10)  # 4 x 10, 3 clusters
    assert (g["copies"], g["nodes"]) == (120, {"read": 6, "upload": 18, "mount": 0, "manifest": 12, "tag": 12})
    assert g["local_tasks_per_second"] > 0 and g["graph_peak_mib"] >= 0
    assert g["coarse_tasks"] == 6 + 12  # a blob fan-out per read, a chain per tag
    assert g["dask_tasks"] == 10 and g["dask_tasks_per_second"] > 0  # 6 blob tasks, then 4 chains, on a worker


def test_the_subset_run_mirrors_a_small_fleet_for_real_against_fake_registries() -> None:
    from benchmarks import fleet

    s = fleet.subset_run(deployments=20, clusters=2, dask_workers=0)  # 2 services x 10 environments
    assert s["results"] == 40 and s["local"]["cold_seconds"] > 0
    assert s["local"]["warm_requests"] == 2 * 2 + 2  # each mirror tag and each source tag asked once


# --- command line -------------------------------------------------------------------------------------------------


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
    assert table_cells(comp.stdout, "loopback", "cluster", "cold")[4:7] == ["2.000", "12 %", "slower"]
    assert "1 slower" in comp.stdout
    noisy = cli("compare", str(before), str(after), "--noise", "1.5")
    assert table_cells(noisy.stdout, "loopback", "cluster", "cold")[6] == "same"


def test_cli_reads_the_reference_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["table", str(REFERENCE / "harness-2026-11-26.json")]) == 0
    text = capsys.readouterr().out
    assert table_cells(text, "wan", "cluster", "cold")[7] == "1.12×"  # 6.21 s ÷ the 5.52 s link floor
    assert "FAIL  loopback: cluster warm (CLI subprocess) >= 10x faster than the skopeo warm loop" in text
    harness, compression = (str(REFERENCE / f"{name}-2026-11-26.json") for name in ("harness", "compression"))
    assert cli_main(["compare", compression, compression]) == 0
    assert "time: 0 faster, 0 slower, 11 same; request/byte counts changed in 0 of 11 rows" in capsys.readouterr().out
    assert cli_main(["compare", harness, compression]) == 0
    assert "no (profile, scenario, phase) in common" in capsys.readouterr().out


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
        ("run", "--repeats", "0"),
        ("run", "--scenarios", "nonsense"),
        ("run", "--source-rtt", "fast"),
    ],
)
def test_cli_usage_errors_exit_2(args: tuple[str, ...], results_files: tuple[Path, Path], tmp_path: Path) -> None:
    not_results = tmp_path / "not_results.json"
    not_results.write_text('{"benchmark": "harness"}', encoding="utf-8")
    names = {"BEFORE": str(results_files[0]), "AFTER": str(results_files[1]), "NOT_RESULTS": str(not_results)}
    proc = cli(*(names.get(a, a) for a in args))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "usage:" in proc.stderr


def test_run_arguments_make_the_config() -> None:
    config, strict = parse_run_args(["--quick", "--profile", "wan", "--source-rtt", "80ms", "--strict", "--no-chart"])
    assert strict and config.quick and config.chart is None
    assert (config.repeats, config.scale, config.link_scale, config.startup_runs) == (1, 0.2, 0.1, 5)
    [wan] = config.profiles
    assert isinstance(wan, Profile) and wan.source == Link(rtt_s=0.08, bandwidth_bps=200e6) and wan.scale == 0.1
    assert config.scenarios == list(SCENARIOS)
    full, _ = parse_run_args(["--scenarios", "floor,cluster", "--startup-runs", "0"])
    assert (full.repeats, full.scale, full.startup_runs, full.scenarios) == (3, 1.0, 0, ["cluster", "floor"])
    assert full.command == "python -m benchmarks run --scenarios floor,cluster --startup-runs 0"


def test_run_help_and_the_mirror_entry_point() -> None:
    for args in (["-m", "benchmarks", "run", "--help"], ["-m", "benchmarks.mirror", "--help"]):
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "--startup-runs" in proc.stdout and "--wan-scale" in proc.stdout


# --- the harness against real registries ----------------------------------------------------------------------------


def consistent(doc: Results) -> None:
    """What holds for any measured document: the parts add up, every verdict is its comparison."""
    for row in doc.results:
        assert row.requests == (row.source_requests or 0) + (row.mirror_requests or 0), row
        assert row.requests_per_deployment == pytest.approx((row.requests or 0) / 30, abs=1e-3)
        assert row.client_cpu_seconds is not None and row.client_cpu_seconds > 0, row
    for t in doc.targets:
        assert t.passed == (t.value <= t.limit if t.at_most else t.value >= t.limit), t


@pytest.mark.registry
def test_a_small_loopback_run_measures_every_new_figure(tmp_path: Path) -> None:
    scenarios = ["naive", "service-per-env", "cluster", "cluster-library", "floor"]
    out = tmp_path / "harness.json"
    quiet: list[str] = []
    doc = run_benchmark(
        profiles=["loopback"],
        scenarios=scenarios,
        scale=0.005,
        content="random",
        repeats=1,
        startup_runs=1,
        output=out,
        chart=out.with_suffix(".svg"),
        progress=quiet.append,
        workdir=tmp_path,
    )
    assert load(out) == doc and out.with_suffix(".svg").exists()
    assert json.loads((tmp_path / "harness-samples.json").read_text())["samples"]
    consistent(doc)
    rows = doc.rows()
    assert sorted(k[1:] for k in rows) == sorted(
        [
            ("naive", "cold"),
            ("naive", "warm"),
            ("service-per-env", "cold"),
            ("service-per-env", "warm"),
            ("cluster", "cold"),
            ("cluster", "warm"),
            ("cluster-library", "warm"),
            ("floor", "cold"),
        ]
    )
    info = doc.profiles[0]
    assert info.unique_bytes and info.link_floor is None and info.deployments == 30
    for key in [("loopback", "cluster", "cold"), ("loopback", "floor", "cold"), ("loopback", "naive", "cold")]:
        assert (rows[key].bytes_to_mirror or 0) >= info.unique_bytes, key
    # The tools' own counts: ocicopy's report and the naive copier's; none for curl.
    assert rows[("loopback", "naive", "cold")].client_requests == rows[("loopback", "naive", "cold")].requests
    assert rows[("loopback", "cluster-library", "warm")].client_requests is not None
    assert rows[("loopback", "floor", "cold")].client_requests is None
    per_env, cluster = rows[("loopback", "service-per-env", "warm")], rows[("loopback", "cluster", "warm")]
    assert per_env.mirror_requests is not None and cluster.mirror_requests is not None
    assert per_env.mirror_requests > cluster.mirror_requests  # 30 mirror tags to look up instead of 20
    assert doc.startup is not None and doc.startup.runs == 1 and "ocicopy" in doc.startup.packages
    assert doc.targets and "start-up (median of 1)" in render_table(doc)


@pytest.mark.registry
def test_a_small_wan_run_has_its_link_floor_and_leaves_the_emulators_out(tmp_path: Path) -> None:
    doc = run_benchmark(
        profiles=["wan"],
        scenarios=["cluster", "cluster-library"],
        link_scale=0.005,
        content="random",
        repeats=1,
        startup_runs=0,
        output=None,
        progress=lambda _m: None,
        workdir=tmp_path,
    )
    consistent(doc)
    [info] = doc.profiles
    assert info.link_floor is not None and info.unique_bytes is not None
    assert info.link_floor.seconds == pytest.approx(info.unique_bytes * 8 / 200e6 + 0.126, abs=1e-6)
    assert doc.startup is None
    ratio = table_rows(doc, "wan")[0]["ratio_to_link_floor"]
    assert ratio == pytest.approx(doc.rows()[("wan", "cluster", "cold")].median / info.link_floor.seconds)
    assert not math.isnan(ratio)
