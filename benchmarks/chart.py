"""Chart and table of a mirror benchmark results document (``benchmarks/results/mirror.json``).

``render_svg(doc)`` draws one panel per network profile with a horizontal bar per scenario and phase: bar length
is the median wall time on a logarithmic axis (warm runs are about 100 times shorter than cold ones), whiskers
span the min–max of the repeats, the median is printed after each bar. The SVG is standalone (no fonts, scripts
or links) and deterministic: the same document gives the same bytes. ``render_table(doc)`` prints the same
figures as plain text with speedups and ratios.

The helpers shared with :mod:`benchmarks.compare` (ordering, statistics of a result row, formatting) live here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape as _xml_escape

MiB: Final = 1024 * 1024

#: Display order of the scenarios; unknown scenarios follow, in order of first appearance.
SCENARIOS: Final = ("naive", "service", "service+mount", "cluster", "one-change", "skopeo", "floor")
#: Display order of the phases; unknown phases follow, in order of first appearance.
PHASES: Final = ("cold", "warm")

#: Bar colours (Okabe–Ito palette: distinguishable with the common colour-vision deficiencies).
PHASE_COLOURS: Final = {"cold": "#D55E00", "warm": "#0072B2"}
OTHER_COLOURS: Final = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#999999")

FONT: Final = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"


# --- reading a results document ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Wall-time figures of one result row: median, min, max (seconds) and the number of runs."""

    median: float
    low: float
    high: float
    runs: int

    @property
    def spread(self) -> float:
        """Relative min–max spread of the runs, ``(max - min) / median`` (0 for a single run)."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def result_stats(result: Mapping[str, Any]) -> Stats | None:
    """Median/min/max of a result row; missing figures are derived from ``seconds``; ``None`` without data."""
    raw = result.get("seconds")
    samples = [s for s in (_number(v) for v in raw) if s is not None] if isinstance(raw, list) else []
    median = _number(result.get("median"))
    if median is None:
        if not samples:
            return None
        median = statistics.median(samples)
    low = _number(result.get("min"))
    high = _number(result.get("max"))
    if low is None:
        low = min(samples) if samples else median
    if high is None:
        high = max(samples) if samples else median
    return Stats(median, min(low, median), max(high, median), len(samples) or 1)


def result_key(result: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(profile, scenario, phase)`` of a result row."""
    return (str(result.get("profile", "default")), str(result.get("scenario", "?")), str(result.get("phase", "?")))


def _results(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = doc.get("results")
    return [r for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []


def profiles(doc: Mapping[str, Any]) -> list[str]:
    """Profiles in display order: those listed in ``doc["profiles"]``, then any other found in the results."""
    listed = doc.get("profiles")
    out = [str(p) for p in listed] if isinstance(listed, list) else []
    for result in _results(doc):
        if (profile := result_key(result)[0]) not in out:
            out.append(profile)
    return list(dict.fromkeys(out))


def _rank(order: Sequence[str], seen: dict[str, int], name: str) -> int:
    if name in order:
        return order.index(name)
    return len(order) + seen.setdefault(name, len(seen))


def ordered_results(doc: Mapping[str, Any], profile: str) -> list[Mapping[str, Any]]:
    """The profile's result rows in display order (scenario order, then cold before warm); first of duplicates."""
    rows: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for result in _results(doc):
        key = result_key(result)
        if key[0] == profile:
            rows.setdefault(key, result)
    scenarios_seen: dict[str, int] = {}
    phases_seen: dict[str, int] = {}
    for _, scenario, phase in rows:
        _rank(SCENARIOS, scenarios_seen, scenario)
        _rank(PHASES, phases_seen, phase)
    return sorted(
        rows.values(),
        key=lambda r: (
            _rank(SCENARIOS, scenarios_seen, result_key(r)[1]),
            _rank(PHASES, phases_seen, result_key(r)[2]),
        ),
    )


def index_results(doc: Mapping[str, Any]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    """Result rows by ``(profile, scenario, phase)`` (the first row wins on duplicates)."""
    out: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for result in _results(doc):
        out.setdefault(result_key(result), result)
    return out


def missing_rows(doc: Mapping[str, Any], profile: str) -> list[str]:
    """``"scenario phase"`` of the rows some other profile has and this one lacks (e.g. skopeo not installed)."""
    everywhere = [result_key(r)[1:] for p in profiles(doc) for r in ordered_results(doc, p)]
    here = {result_key(r)[1:] for r in ordered_results(doc, profile)}
    return [" ".join(k) for k in dict.fromkeys(everywhere) if k not in here]


def count(result: Mapping[str, Any], name: str) -> int | None:
    """An integer figure of a result row (``requests``, ``bytes_from_source``, …), ``None`` when absent."""
    value = result.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- formatting ---------------------------------------------------------------------------------------------


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``2.41 s``, ``235 ms``, ``8.5 ms``."""
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.1f} ms"


def format_range(stats: Stats) -> str:
    """``2.30–2.50 s``, or the two values in their own units when these differ (``950 ms–1.20 s``)."""
    low, high = format_seconds(stats.low), format_seconds(stats.high)
    low_value, low_unit = low.split(" ")
    high_unit = high.split(" ")[1]
    return f"{low_value}–{high}" if low_unit == high_unit else f"{low}–{high}"


def format_ratio(ratio: float | None) -> str:
    """``4.00×``, ``12.5×``, ``150×``; ``–`` when there is no reference."""
    if ratio is None:
        return "–"
    if ratio >= 100:
        return f"{ratio:.0f}×"
    if ratio >= 10:
        return f"{ratio:.1f}×"
    if ratio >= 0.1 or ratio == 0:
        return f"{ratio:.2f}×"
    return f"{ratio:.{1 - math.floor(math.log10(ratio))}f}×"  # two significant digits: 0.0052×


def format_mib(value: int | None) -> str:
    return "–" if value is None else f"{value / MiB:.1f}"


def format_count(value: int | None) -> str:
    return "–" if value is None else str(value)


def short_revision(revision: str) -> str:
    """First 12 hex digits of a commit id, keeping a ``-dirty`` suffix."""
    head, dash, rest = revision.partition("-")
    if len(head) == 40 and all(c in "0123456789abcdef" for c in head.lower()):
        head = head[:12]
    return head + dash + rest


def describe_run(doc: Mapping[str, Any]) -> tuple[str, str, str]:
    """Three header lines: title with date, machine, workload and runs."""
    timestamp = str(doc.get("timestamp") or "undated").replace("T", " ")
    quick = " (quick)" if doc.get("quick") else ""
    title = f"ocicopy mirror benchmark{quick} · {timestamp}"

    machine = doc.get("machine") if isinstance(doc.get("machine"), Mapping) else {}
    parts = []
    if machine.get("cpu_model"):
        cores = machine.get("cpu_cores")
        parts.append(f"{machine['cpu_model']}" + (f" ({cores} cores)" if cores else ""))
    if machine.get("python"):
        parts.append(f"Python {machine['python']}")
    if machine.get("ocicopy_version"):
        parts.append(f"ocicopy {machine['ocicopy_version']}")
    if machine.get("git_revision"):
        parts.append(f"revision {short_revision(str(machine['git_revision']))}")
    if machine.get("registry_version"):
        parts.append(f"registry {machine['registry_version']}")
    machine_line = " · ".join(parts) or "machine unknown"

    workload = doc.get("workload") if isinstance(doc.get("workload"), Mapping) else {}
    bits = []
    if isinstance(workload.get("deployments"), int):
        bits.append(f"{workload['deployments']} deployments")
    if isinstance(workload.get("unique_bytes"), int) and not isinstance(workload.get("by_profile"), Mapping):
        bits.append(f"{workload['unique_bytes'] / MiB:.1f} MiB unique")
    runs = sorted({s.runs for s in (result_stats(r) for r in _results(doc)) if s is not None})
    if runs:
        counts = "/".join(str(n) for n in runs)
        bits.append(f"median of {counts} run{'s' if runs != [1] else ''}")
    return title, machine_line, " · ".join(bits)


# --- table --------------------------------------------------------------------------------------------------


def _reference(rows: Mapping[tuple[str, str, str], Mapping[str, Any]], key: tuple[str, str, str]) -> Stats | None:
    result = rows.get(key)
    return result_stats(result) if result is not None else None


def _floor_reference(rows: Mapping[tuple[str, str, str], Mapping[str, Any]], profile: str) -> Stats | None:
    """The floor's cold row, or its only row whatever the phase is called."""
    if (stats := _reference(rows, (profile, "floor", "cold"))) is not None:
        return stats
    floors = [r for (p, s, _), r in rows.items() if p == profile and s == "floor"]
    return result_stats(floors[0]) if len(floors) == 1 else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def table_rows(doc: Mapping[str, Any], profile: str) -> list[dict[str, Any]]:
    """The figures of :func:`render_table` for one profile, unformatted (``None`` where not applicable).

    ``speedup_vs_naive`` = naive median / this median (same phase); ``ratio_to_skopeo`` = this median / skopeo
    median (same phase); ``ratio_to_floor`` = this median / floor median, for cold rows only.
    """
    rows = index_results(doc)
    floor = _floor_reference(rows, profile)
    out = []
    for result in ordered_results(doc, profile):
        _, scenario, phase = result_key(result)
        stats = result_stats(result)
        median = stats.median if stats else None
        naive = _reference(rows, (profile, "naive", phase))
        skopeo = _reference(rows, (profile, "skopeo", phase))
        out.append(
            {
                "scenario": scenario,
                "phase": phase,
                "stats": stats,
                "speedup_vs_naive": _ratio(naive.median if naive else None, median),
                "ratio_to_skopeo": _ratio(median, skopeo.median if skopeo else None),
                "ratio_to_floor": _ratio(median, floor.median if floor else None) if phase == "cold" else None,
                "bytes_from_source": count(result, "bytes_from_source"),
                "bytes_to_mirror": count(result, "bytes_to_mirror"),
                "requests": count(result, "requests"),
            }
        )
    return out


def format_table(header: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> list[str]:
    """Aligned text columns: the first ``left`` columns left-aligned, the others right-aligned."""
    body = [list(r) for r in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    lines = []
    for cells in [list(header), *body]:
        padded = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        lines.append("  ".join(padded).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


TABLE_HEADER: Final = (
    "scenario",
    "phase",
    "median",
    "min–max",
    "speedup vs naive",
    "time ÷ skopeo",
    "time ÷ floor",
    "MiB from source",
    "MiB to mirror",
    "requests",
)


def render_table(doc: Mapping[str, Any]) -> str:
    """Plain-text table per profile: medians, ranges, speedup vs naive, ratios to skopeo and floor, traffic."""
    lines = [line for line in describe_run(doc) if line]
    for profile in profiles(doc):
        lines += ["", f"[{profile}]"]
        rows = table_rows(doc, profile)
        if not rows:
            lines.append("(no results)")
            continue
        cells = []
        for row in rows:
            stats: Stats | None = row["stats"]
            cells.append(
                (
                    row["scenario"],
                    row["phase"],
                    format_seconds(stats.median) if stats else "–",
                    format_range(stats) if stats else "–",
                    format_ratio(row["speedup_vs_naive"]),
                    format_ratio(row["ratio_to_skopeo"]),
                    format_ratio(row["ratio_to_floor"]),
                    format_mib(row["bytes_from_source"]),
                    format_mib(row["bytes_to_mirror"]),
                    format_count(row["requests"]),
                )
            )
        lines += format_table(TABLE_HEADER, cells, left=2)
        if missing := missing_rows(doc, profile):
            lines.append(f"not measured in this profile: {', '.join(missing)}")
    lines += [
        "",
        "speedup vs naive = naive median ÷ this median (same phase; > 1 is faster than naive)",
        "time ÷ skopeo = this median ÷ skopeo median (same phase); time ÷ floor = this median ÷ floor (cold rows)",
    ]
    return "\n".join(lines) + "\n"


# --- SVG ----------------------------------------------------------------------------------------------------

WIDTH: Final = 1000
LABEL_RIGHT: Final = 228  # right edge of the row labels
PLOT_LEFT: Final = 240
PLOT_RIGHT: Final = WIDTH - 100  # room for the value printed after the longest bar
ROW_HEIGHT: Final = 22
BAR_HEIGHT: Final = 14


def _esc(text: object) -> str:
    """Text and attribute value escaping (``<``, ``>``, ``&``, quotes)."""
    return _xml_escape(str(text), {'"': "&quot;", "'": "&apos;"})


def _num(value: float) -> str:
    """Coordinates with at most one decimal, no trailing zeros (stable, compact output)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _phase_colours(phases: Iterable[str]) -> dict[str, str]:
    colours = dict(PHASE_COLOURS)
    others = [p for p in dict.fromkeys(phases) if p not in colours]
    for i, phase in enumerate(others):
        colours[phase] = OTHER_COLOURS[i % len(OTHER_COLOURS)]
    return colours


@dataclass(frozen=True)
class _Scale:
    low: float  # axis minimum (a power of ten)
    high: float  # axis maximum (a power of ten)

    @property
    def decades(self) -> int:
        return round(math.log10(self.high / self.low))

    def x(self, seconds: float) -> float:
        seconds = min(max(seconds, self.low), self.high)
        fraction = math.log10(seconds / self.low) / math.log10(self.high / self.low)
        return PLOT_LEFT + fraction * (PLOT_RIGHT - PLOT_LEFT)

    def ticks(self) -> list[tuple[float, bool]]:
        """``(seconds, major)`` gridlines: every power of ten, plus 2× and 5× in between."""
        out = []
        exponent = round(math.log10(self.low))
        for step in range(self.decades + 1):
            decade = 10.0 ** (exponent + step)
            out.append((decade, True))
            if step < self.decades:
                out += [(decade * 2, False), (decade * 5, False)]
        return out


def _scale(all_stats: Iterable[Stats]) -> _Scale:
    values = [v for s in all_stats for v in (s.low, s.median, s.high) if v > 0]
    if not values:
        return _Scale(0.1, 10.0)
    low = 10.0 ** math.floor(math.log10(min(values)) + 1e-9)
    high = 10.0 ** math.ceil(math.log10(max(values)) - 1e-9)
    if high <= low:
        high = low * 10
    return _Scale(low, high)


def _tick_label(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"


def profile_note(doc: Mapping[str, Any], profile: str) -> str:
    """The profile's own workload size and links, when the document has ``workload.by_profile``."""
    workload = doc.get("workload") if isinstance(doc.get("workload"), Mapping) else {}
    by_profile = workload.get("by_profile") if isinstance(workload, Mapping) else None
    info = by_profile.get(profile) if isinstance(by_profile, Mapping) else None
    if not isinstance(info, Mapping):
        return ""
    bits = []
    if isinstance(info.get("unique_bytes"), int):
        bits.append(f"{info['unique_bytes'] / MiB:.1f} MiB unique")
    for side in ("source", "mirror"):
        link = info.get(f"{side}_link")
        if isinstance(link, Mapping) and isinstance(link.get("rtt_s"), int | float):
            bits.append(f"{side} {link['rtt_s'] * 1000:g} ms RTT, {link.get('bandwidth_bps', 0) / 1e6:g} Mbit/s")
    return ", ".join(bits)


def render_svg(doc: Mapping[str, Any]) -> str:
    """The chart as a standalone SVG document (see the module docstring)."""
    panel_profiles = profiles(doc) or ["(no results)"]
    panels = [(p, ordered_results(doc, p)) for p in panel_profiles]
    all_stats = [s for _, rows in panels for r in rows if (s := result_stats(r)) is not None]
    scale = _scale(all_stats)
    colours = _phase_colours(result_key(r)[2] for _, rows in panels for r in rows)
    phases_present = list(dict.fromkeys(result_key(r)[2] for _, rows in panels for r in rows))
    title, machine_line, workload_line = describe_run(doc)

    body: list[str] = []
    text = f'font-family="{FONT}"'
    body.append(f'<text x="16" y="30" font-size="18" font-weight="bold" {text}>{_esc(title)}</text>')
    body.append(f'<text x="16" y="50" font-size="12" fill="#333" {text}>{_esc(machine_line)}</text>')
    if workload_line:
        body.append(f'<text x="16" y="67" font-size="12" fill="#333" {text}>{_esc(workload_line)}</text>')

    # Legend: one swatch per phase, the whisker, the scale.
    x = 16.0
    y = 90
    for phase in phases_present:
        body.append(
            f'<rect x="{_num(x)}" y="{y - 10}" width="14" height="12" fill="{colours[phase]}"/>'
            f'<text x="{_num(x + 19)}" y="{y}" font-size="12" {text}>{_esc(phase)}</text>'
        )
        x += 19 + 7.5 * len(phase) + 18
    body.append(
        f'<line x1="{_num(x)}" y1="{y - 4}" x2="{_num(x + 24)}" y2="{y - 4}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{_num(x)}" y1="{y - 9}" x2="{_num(x)}" y2="{y + 1}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{_num(x + 24)}" y1="{y - 9}" x2="{_num(x + 24)}" y2="{y + 1}" stroke="#222" stroke-width="1.5"/>'
        f'<text x="{_num(x + 30)}" y="{y}" font-size="12" {text}>'
        "min–max of the runs · bar and label: median wall time · logarithmic axis</text>"
    )

    y = 112
    for profile, rows in panels:
        body.append(f'<text x="16" y="{y + 16}" font-size="15" font-weight="bold" {text}>{_esc(profile)}</text>')
        note = [profile_note(doc, profile)]
        if missing := missing_rows(doc, profile):
            note.append("not measured in this profile: " + ", ".join(missing))
        if any(note):
            body.append(
                f'<text x="{PLOT_LEFT}" y="{y + 16}" font-size="11" fill="#666" {text}>'
                f"{_esc(' · '.join(n for n in note if n))}</text>"
            )
        top = y + 26
        height = max(len(rows), 1) * ROW_HEIGHT
        bottom = top + height
        # Zebra stripes per scenario group, then the grid, then the bars on top.
        scenario_rows: dict[str, list[int]] = {}
        for i, result in enumerate(rows):
            scenario_rows.setdefault(result_key(result)[1], []).append(i)
        for n, indexes in enumerate(scenario_rows.values()):
            if n % 2 == 0:
                body.append(
                    f'<rect x="16" y="{top + indexes[0] * ROW_HEIGHT}" width="{WIDTH - 32}" '
                    f'height="{len(indexes) * ROW_HEIGHT}" fill="#f3f3f3"/>'
                )
        for seconds, major in scale.ticks():
            gx = _num(scale.x(seconds))
            style = 'stroke="#bbb"' if major else 'stroke="#ddd" stroke-dasharray="3,3"'
            body.append(f'<line x1="{gx}" y1="{top}" x2="{gx}" y2="{bottom}" {style}/>')
            if major or scale.decades <= 3:
                weight = "#333" if major else "#888"
                body.append(
                    f'<text x="{gx}" y="{bottom + 14}" font-size="11" fill="{weight}" text-anchor="middle" '
                    f"{text}>{_esc(_tick_label(seconds))}</text>"
                )
        body.append(
            f'<line x1="{PLOT_LEFT}" y1="{top}" x2="{PLOT_LEFT}" y2="{bottom}" stroke="#333"/>'
            f'<text x="{_num((PLOT_LEFT + PLOT_RIGHT) / 2)}" y="{bottom + 30}" font-size="11" fill="#333" '
            f'text-anchor="middle" {text}>median wall time, seconds (log scale)</text>'
        )
        if not rows:
            body.append(f'<text x="{PLOT_LEFT + 8}" y="{top + 15}" font-size="12" fill="#666" {text}>no results</text>')
        first_of_group = {indexes[0] for indexes in scenario_rows.values()}
        for i, result in enumerate(rows):
            _, scenario, phase = result_key(result)
            row_top = top + i * ROW_HEIGHT
            cy = row_top + ROW_HEIGHT / 2
            baseline = _num(cy + 4)
            if i in first_of_group:
                body.append(
                    f'<text x="{LABEL_RIGHT - 48}" y="{baseline}" font-size="12" text-anchor="end" {text}>'
                    f"{_esc(scenario)}</text>"
                )
            body.append(
                f'<text x="{LABEL_RIGHT}" y="{baseline}" font-size="11" fill="#555" text-anchor="end" {text}>'
                f"{_esc(phase)}</text>"
            )
            stats = result_stats(result)
            if stats is None:
                body.append(
                    f'<text x="{PLOT_LEFT + 6}" y="{baseline}" font-size="11" fill="#666" {text}>no data</text>'
                )
                continue
            bar_end = scale.x(stats.median)
            low, high = scale.x(stats.low), scale.x(stats.high)
            tooltip = (
                f"{profile} · {scenario} · {phase}: median {format_seconds(stats.median)}, "
                f"min–max {format_range(stats)}, {stats.runs} run{'s' if stats.runs != 1 else ''}"
            )
            if (requests := count(result, "requests")) is not None:
                tooltip += f", {requests} requests"
            body.append(
                f'<g class="result"><title>{_esc(tooltip)}</title>'
                f'<rect class="bar" x="{PLOT_LEFT}" y="{_num(cy - BAR_HEIGHT / 2)}" '
                f'width="{_num(max(bar_end - PLOT_LEFT, 1))}" height="{BAR_HEIGHT}" fill="{colours[phase]}"/>'
            )
            if high - low >= 1:
                whisker = 'stroke="#222" stroke-width="1.5"'
                body.append(
                    f'<line class="whisker" x1="{_num(low)}" y1="{_num(cy)}" x2="{_num(high)}" y2="{_num(cy)}" '
                    f"{whisker}/>"
                    f'<line x1="{_num(low)}" y1="{_num(cy - 5)}" x2="{_num(low)}" y2="{_num(cy + 5)}" {whisker}/>'
                    f'<line x1="{_num(high)}" y1="{_num(cy - 5)}" x2="{_num(high)}" y2="{_num(cy + 5)}" {whisker}/>'
                )
            body.append(
                f'<text class="value" x="{_num(max(bar_end, high) + 6)}" y="{baseline}" font-size="11" {text}>'
                f"{_esc(format_seconds(stats.median))}</text></g>"
            )
        y = bottom + 44

    total_height = y + 4
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_height}" '
        f'viewBox="0 0 {WIDTH} {total_height}" role="img">\n'
        f"<title>{_esc(title)}</title>\n"
        f'<rect x="0" y="0" width="{WIDTH}" height="{total_height}" fill="#ffffff"/>\n'
    )
    return head + "\n".join(body) + "\n</svg>\n"


def write_chart(doc: Mapping[str, Any], path: str | Path) -> None:
    """Write :func:`render_svg` of ``doc`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_svg(doc), encoding="utf-8")
