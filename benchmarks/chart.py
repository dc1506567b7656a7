"""Chart and tables of a results document (:class:`benchmarks.results.Results`, any format version).

``render_svg(doc)`` draws one panel per network profile with a horizontal bar per scenario and phase: bar length
is the median wall time on a logarithmic axis (warm runs are about 100 times shorter than cold ones), whiskers
span the min–max of the repeats, the median is printed after each bar, and a dashed line marks the profile's link
floor. The SVG is standalone (no fonts, scripts or links) and deterministic: the same document gives the same
bytes. ``render_table(doc)`` prints the figures as text: per profile a table of times (speedups and ratios) and
one of traffic and client CPU, then the start-up figures.

The helpers shared with :mod:`benchmarks.compare` (ordering, formatting) live here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape as _xml_escape

from benchmarks.results import PHASE_ORDER, SCENARIO_ORDER, Results, Row, Stats, load

MiB: Final = 1024 * 1024

#: Bar colours (Okabe–Ito palette: distinguishable with the common colour-vision deficiencies).
PHASE_COLOURS: Final = {"cold": "#D55E00", "warm": "#0072B2"}
OTHER_COLOURS: Final = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#999999")

FONT: Final = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"

Doc = Results | Mapping[str, Any]


# --- reading a results document ---------------------------------------------------------------------------


def _rank(order: Sequence[str], seen: dict[str, int], name: str) -> int:
    if name in order:
        return order.index(name)
    return len(order) + seen.setdefault(name, len(seen))


def ordered_results(doc: Results, profile: str) -> list[Row]:
    """The profile's rows in display order (scenario order, then cold before warm); first of duplicates."""
    rows = [r for k, r in doc.rows().items() if k[0] == profile]
    scenarios_seen: dict[str, int] = {}
    phases_seen: dict[str, int] = {}
    for row in rows:
        _rank(SCENARIO_ORDER, scenarios_seen, row.scenario)
        _rank(PHASE_ORDER, phases_seen, row.phase)
    return sorted(
        rows,
        key=lambda r: (_rank(SCENARIO_ORDER, scenarios_seen, r.scenario), _rank(PHASE_ORDER, phases_seen, r.phase)),
    )


def missing_rows(doc: Results, profile: str) -> list[str]:
    """``"scenario phase"`` of the rows some other profile has and this one lacks (e.g. skopeo not installed)."""
    everywhere = [r.key[1:] for p in doc.profile_names() for r in ordered_results(doc, p)]
    here = {r.key[1:] for r in ordered_results(doc, profile)}
    return [" ".join(k) for k in dict.fromkeys(everywhere) if k not in here]


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


def format_number(value: float | None, digits: int = 0) -> str:
    """``–`` for None, else the value with ``digits`` decimals (integers as they are)."""
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def short_revision(revision: str) -> str:
    """First 12 hex digits of a commit id, keeping a ``-dirty`` suffix."""
    head, dash, rest = revision.partition("-")
    if len(head) == 40 and all(c in "0123456789abcdef" for c in head.lower()):
        head = head[:12]
    return head + dash + rest


def describe_run(doc: Results) -> tuple[str, str, str]:
    """Three header lines: title with date, machine, workload and runs."""
    when = doc.timestamp.replace("T", " ") or "undated"
    title = f"ocicopy {doc.benchmark} benchmark{' (quick)' if doc.quick else ''} · {when}"
    m = doc.machine
    parts = []
    if m.cpu_model:
        parts.append(m.cpu_model + (f" ({m.cpu_cores} cores)" if m.cpu_cores else ""))
    for label, value in (("Python", m.python), ("ocicopy", m.ocicopy_version)):
        if value:
            parts.append(f"{label} {value}")
    if m.git_revision:
        parts.append(f"revision {short_revision(m.git_revision)}")
    if m.registry_version:
        parts.append(f"registry {m.registry_version}")
    bits = []
    if isinstance(deployments := doc.workload.get("deployments"), int):
        bits.append(f"{deployments} deployments")
    if isinstance(unique := doc.workload.get("unique_bytes"), int) and len(doc.profiles) <= 1:
        bits.append(f"{unique / MiB:.1f} MiB unique")
    runs = sorted({s.runs for r in doc.results if (s := r.stats) is not None})
    if runs:
        bits.append(f"median of {'/'.join(map(str, runs))} run{'s' if runs != [1] else ''}")
    return title, " · ".join(parts) or "machine unknown", " · ".join(bits)


def profile_note(doc: Results, profile: str) -> str:
    """The profile's own scale, workload size and links."""
    info = doc.profile(profile)
    if info is None:
        return ""
    bits = [f"scale {info.scale:g}"] if info.scale is not None else []
    if info.unique_bytes is not None:
        bits.append(f"{info.unique_bytes / MiB:.1f} MiB unique")
    bits += [f"{role} {link}" for role, link in (("source", info.source), ("mirror", info.mirror)) if link]
    return ", ".join(bits)


def link_floor_seconds(doc: Results, profile: str) -> float | None:
    info = doc.profile(profile)
    return info.link_floor.seconds if info is not None and info.link_floor is not None else None


# --- tables -------------------------------------------------------------------------------------------------


def _median(rows: Mapping[tuple[str, str, str], Row], key: tuple[str, str, str]) -> float | None:
    row = rows.get(key)
    return row.median if row is not None else None


def _floor_median(doc: Results, profile: str) -> float | None:
    """The floor's cold row, or its only row whatever the phase is called."""
    floors = [r for r in ordered_results(doc, profile) if r.scenario == "floor"]
    cold = [r for r in floors if r.phase == "cold"]
    chosen = cold or (floors if len(floors) == 1 else [])
    return chosen[0].median if chosen else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def table_rows(doc: Doc, profile: str) -> list[dict[str, Any]]:
    """The figures of :func:`render_table` for one profile: each row and its ratios (``None``: not applicable).

    ``speedup_vs_naive`` = naive median / this median (same phase); ``ratio_to_skopeo`` = this median / skopeo
    median (same phase); ``ratio_to_floor`` and ``ratio_to_link_floor`` = this median / the curl floor's median
    or the profile's link floor, for cold rows only.
    """
    doc = load(doc)
    rows = doc.rows()
    floor, link_floor = _floor_median(doc, profile), link_floor_seconds(doc, profile)
    out = []
    for row in ordered_results(doc, profile):
        cold = row.phase == "cold"
        out.append(
            {
                "row": row,
                "scenario": row.scenario,
                "phase": row.phase,
                "stats": row.stats,
                "speedup_vs_naive": _ratio(_median(rows, (profile, "naive", row.phase)), row.median),
                "ratio_to_skopeo": _ratio(row.median, _median(rows, (profile, "skopeo", row.phase))),
                "ratio_to_floor": _ratio(row.median, floor) if cold else None,
                "ratio_to_link_floor": _ratio(row.median, link_floor) if cold else None,
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


TIME_HEADER: Final = ("scenario", "phase", "median", "min–max", "speedup vs naive", "time ÷ skopeo", "time ÷ floor")
TRAFFIC_HEADER: Final = (
    "scenario",
    "phase",
    "MiB from source",
    "MiB to mirror",
    "requests",
    "source + mirror",
    "per deployment",
    "own count",
    "client CPU s",
    "CPU ms/request",
)
NOTES: Final = (
    "speedup vs naive = naive median ÷ this median (same phase; > 1 is faster than naive)",
    "time ÷ skopeo = this median ÷ skopeo median (same phase); time ÷ floor = this median ÷ the curl floor (cold)",
    "time ÷ link floor = this median ÷ the profile's link floor (cold; profiles with links)",
    "requests: both registries' access logs; own count: the tool's (ocicopy's report totals.requests)",
    "client CPU: the tool's process (CLI: its rusage; library: this process less the link emulators);"
    " per request: ÷ its own count, else the logs'",
)


def time_table(doc: Results, profile: str) -> list[str]:
    """Medians, ranges, speedup vs naive, ratios to skopeo, the curl floor and (with links) the link floor."""
    linked = link_floor_seconds(doc, profile) is not None
    header = (*TIME_HEADER, "time ÷ link floor") if linked else TIME_HEADER
    cells = []
    for t in table_rows(doc, profile):
        stats: Stats | None = t["stats"]
        ratios = ("speedup_vs_naive", "ratio_to_skopeo", "ratio_to_floor") + (
            ("ratio_to_link_floor",) if linked else ()
        )
        cells.append(
            (
                t["scenario"],
                t["phase"],
                format_seconds(stats.median) if stats else "–",
                format_range(stats) if stats else "–",
                *(format_ratio(t[k]) for k in ratios),
            )
        )
    return format_table(header, cells, left=2)


def traffic_table(doc: Results, profile: str) -> list[str]:
    """Bytes, requests (logs, per deployment, own count) and the tool's CPU per run and per request."""
    cells = []
    for r in ordered_results(doc, profile):
        split = f"{r.source_requests} + {r.mirror_requests}" if r.source_requests is not None else "–"
        cells.append(
            (
                r.scenario,
                r.phase,
                format_mib(r.bytes_from_source),
                format_mib(r.bytes_to_mirror),
                format_number(r.requests),
                split,
                format_number(r.requests_per_deployment, 2),
                format_number(r.client_requests),
                format_number(r.client_cpu_seconds, 2),
                format_number(r.cpu_ms_per_request, 2),
            )
        )
    return format_table(TRAFFIC_HEADER, cells, left=2)


def render_table(doc: Doc) -> str:
    """Per profile: a table of times and one of traffic and CPU; then the start-up figures and the notes."""
    doc = load(doc)
    lines = [line for line in describe_run(doc) if line]
    for profile in doc.profile_names():
        lines += ["", f"[{profile}]" + (f" {note}" if (note := profile_note(doc, profile)) else "")]
        info = doc.profile(profile)
        if info is not None and info.link_floor is not None:
            lines.append(info.link_floor.describe())
        if not ordered_results(doc, profile):
            lines.append("(no results)")
            continue
        lines += [*time_table(doc, profile), "", *traffic_table(doc, profile)]
        if missing := missing_rows(doc, profile):
            lines.append(f"not measured in this profile: {', '.join(missing)}")
    if doc.startup is not None:
        lines += ["", *doc.startup.describe()]
    lines += ["", *NOTES]
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


TEXT: Final = f'font-family="{FONT}"'


def _svg_header(doc: Results, phases: Sequence[str], colours: Mapping[str, str]) -> list[str]:
    """Title, machine and workload lines; the legend (a swatch per phase, the whisker, the scale)."""
    title, machine_line, workload_line = describe_run(doc)
    body = [
        f'<text x="16" y="30" font-size="18" font-weight="bold" {TEXT}>{_esc(title)}</text>',
        f'<text x="16" y="50" font-size="12" fill="#333" {TEXT}>{_esc(machine_line)}</text>',
    ]
    if workload_line:
        body.append(f'<text x="16" y="67" font-size="12" fill="#333" {TEXT}>{_esc(workload_line)}</text>')
    x, y = 16.0, 90
    for phase in phases:
        body.append(
            f'<rect x="{_num(x)}" y="{y - 10}" width="14" height="12" fill="{colours[phase]}"/>'
            f'<text x="{_num(x + 19)}" y="{y}" font-size="12" {TEXT}>{_esc(phase)}</text>'
        )
        x += 19 + 7.5 * len(phase) + 18
    body.append(
        f'<line x1="{_num(x)}" y1="{y - 4}" x2="{_num(x + 24)}" y2="{y - 4}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{_num(x)}" y1="{y - 9}" x2="{_num(x)}" y2="{y + 1}" stroke="#222" stroke-width="1.5"/>'
        f'<line x1="{_num(x + 24)}" y1="{y - 9}" x2="{_num(x + 24)}" y2="{y + 1}" stroke="#222" stroke-width="1.5"/>'
        f'<text x="{_num(x + 30)}" y="{y}" font-size="12" {TEXT}>'
        "min–max of the runs · bar and label: median wall time · logarithmic axis · dashed: link floor</text>"
    )
    return body


def _svg_grid(scale: _Scale, top: float, bottom: float) -> list[str]:
    """Gridlines with their labels, the axis and its title."""
    body = []
    for seconds, major in scale.ticks():
        gx = _num(scale.x(seconds))
        style = 'stroke="#bbb"' if major else 'stroke="#ddd" stroke-dasharray="3,3"'
        body.append(f'<line x1="{gx}" y1="{top}" x2="{gx}" y2="{bottom}" {style}/>')
        if major or scale.decades <= 3:
            body.append(
                f'<text x="{gx}" y="{bottom + 14}" font-size="11" fill="{"#333" if major else "#888"}" '
                f'text-anchor="middle" {TEXT}>{_esc(_tick_label(seconds))}</text>'
            )
    body.append(
        f'<line x1="{PLOT_LEFT}" y1="{top}" x2="{PLOT_LEFT}" y2="{bottom}" stroke="#333"/>'
        f'<text x="{_num((PLOT_LEFT + PLOT_RIGHT) / 2)}" y="{bottom + 30}" font-size="11" fill="#333" '
        f'text-anchor="middle" {TEXT}>median wall time, seconds (log scale)</text>'
    )
    return body


def _svg_bar(row: Row, cy: float, scale: _Scale, colour: str) -> str:
    """One row's bar, whiskers and value (``no data`` without a time)."""
    baseline = _num(cy + 4)
    stats = row.stats
    if stats is None:
        return f'<text x="{PLOT_LEFT + 6}" y="{baseline}" font-size="11" fill="#666" {TEXT}>no data</text>'
    bar_end, low, high = scale.x(stats.median), scale.x(stats.low), scale.x(stats.high)
    tooltip = (
        f"{row.profile} · {row.scenario} · {row.phase}: median {format_seconds(stats.median)}, "
        f"min–max {format_range(stats)}, {stats.runs} run{'s' if stats.runs != 1 else ''}"
    ) + (f", {row.requests} requests" if row.requests is not None else "")
    out = (
        f'<g class="result"><title>{_esc(tooltip)}</title>'
        f'<rect class="bar" x="{PLOT_LEFT}" y="{_num(cy - BAR_HEIGHT / 2)}" '
        f'width="{_num(max(bar_end - PLOT_LEFT, 1))}" height="{BAR_HEIGHT}" fill="{colour}"/>'
    )
    if high - low >= 1:
        whisker = 'stroke="#222" stroke-width="1.5"'
        out += (
            f'<line class="whisker" x1="{_num(low)}" y1="{_num(cy)}" x2="{_num(high)}" y2="{_num(cy)}" {whisker}/>'
            f'<line x1="{_num(low)}" y1="{_num(cy - 5)}" x2="{_num(low)}" y2="{_num(cy + 5)}" {whisker}/>'
            f'<line x1="{_num(high)}" y1="{_num(cy - 5)}" x2="{_num(high)}" y2="{_num(cy + 5)}" {whisker}/>'
        )
    return out + (
        f'<text class="value" x="{_num(max(bar_end, high) + 6)}" y="{baseline}" font-size="11" {TEXT}>'
        f"{_esc(format_seconds(stats.median))}</text></g>"
    )


def _svg_rows(rows: Sequence[Row], top: float) -> list[str]:
    """Zebra stripes per scenario, then each row's labels (scenario on its first row, phase on every row)."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.scenario, []).append(i)
    body = [
        f'<rect x="16" y="{top + indexes[0] * ROW_HEIGHT}" width="{WIDTH - 32}" '
        f'height="{len(indexes) * ROW_HEIGHT}" fill="#f3f3f3"/>'
        for n, indexes in enumerate(groups.values())
        if n % 2 == 0
    ]
    firsts = {indexes[0] for indexes in groups.values()}
    for i, row in enumerate(rows):
        cy = top + i * ROW_HEIGHT + ROW_HEIGHT / 2
        if i in firsts:
            body.append(
                f'<text x="{LABEL_RIGHT - 48}" y="{_num(cy + 4)}" font-size="12" text-anchor="end" {TEXT}>'
                f"{_esc(row.scenario)}</text>"
            )
        body.append(
            f'<text x="{LABEL_RIGHT}" y="{_num(cy + 4)}" font-size="11" fill="#555" text-anchor="end" {TEXT}>'
            f"{_esc(row.phase)}</text>"
        )
    return body


def _svg_panel(
    doc: Results, profile: str, y: float, scale: _Scale, colours: Mapping[str, str]
) -> tuple[list[str], float]:
    """One profile's panel from ``y``: its title and note, stripes, grid, link floor and bars; the next ``y``."""
    rows = ordered_results(doc, profile)
    body = [f'<text x="16" y="{y + 16}" font-size="15" font-weight="bold" {TEXT}>{_esc(profile)}</text>']
    notes = [n for n in (profile_note(doc, profile),) if n]
    if missing := missing_rows(doc, profile):
        notes.append("not measured in this profile: " + ", ".join(missing))
    if notes:
        body.append(
            f'<text x="{PLOT_LEFT}" y="{y + 16}" font-size="11" fill="#666" {TEXT}>{_esc(" · ".join(notes))}</text>'
        )
    top = y + 26
    bottom = top + max(len(rows), 1) * ROW_HEIGHT
    body += _svg_rows(rows, top) + _svg_grid(scale, top, bottom)
    if (floor := link_floor_seconds(doc, profile)) is not None:
        fx = _num(scale.x(floor))
        body.append(
            f'<line class="link-floor" x1="{fx}" y1="{top}" x2="{fx}" y2="{bottom}" stroke="#009E73" '
            f'stroke-width="1.5" stroke-dasharray="6,3"><title>link floor {_esc(format_seconds(floor))}</title></line>'
        )
    if not rows:
        body.append(f'<text x="{PLOT_LEFT + 8}" y="{top + 15}" font-size="12" fill="#666" {TEXT}>no results</text>')
    for i, row in enumerate(rows):
        body.append(_svg_bar(row, top + i * ROW_HEIGHT + ROW_HEIGHT / 2, scale, colours[row.phase]))
    return body, bottom + 44


def render_svg(doc: Doc) -> str:
    """The chart as a standalone SVG document (see the module docstring)."""
    doc = load(doc)
    profiles = doc.profile_names() or ["(no results)"]
    rows = [r for p in profiles for r in ordered_results(doc, p)]
    floors = [Stats(f, f, f, 1) for p in profiles if (f := link_floor_seconds(doc, p)) is not None]
    scale = _scale([s for r in rows if (s := r.stats) is not None] + floors)
    phases = list(dict.fromkeys(r.phase for r in rows))
    colours = _phase_colours(phases)
    body, y = _svg_header(doc, phases, colours), 112.0
    for profile in profiles:
        panel, y = _svg_panel(doc, profile, y, scale, colours)
        body += panel
    height = _num(y + 4)
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img">\n'
        f"<title>{_esc(describe_run(doc)[0])}</title>\n"
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>\n'
    )
    return head + "\n".join(body) + "\n</svg>\n"


def write_chart(doc: Doc, path: str | Path) -> None:
    """Write :func:`render_svg` of ``doc`` to ``path`` (UTF-8)."""
    Path(path).write_text(render_svg(doc), encoding="utf-8")
