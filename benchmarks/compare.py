"""Compare two results documents (before and after a change; any format version, see :func:`benchmarks.results.load`).

For every ``(profile, scenario, phase)`` present in both: the two medians, their ratio (after ÷ before) and a
verdict. A time is called ``faster`` or ``slower`` only when the ratio leaves the noise band; otherwise it is
``same``. The band comes from the runs' own spread: the larger relative min–max spread ``(max - min) / median``
of the two samples, at least :data:`NOISE_FLOOR` (5 %); ``noise=`` overrides it. The band is symmetric on a log
scale: with a band of 10 %, ``slower`` means a ratio above 1.10 and ``faster`` a ratio below 1 / 1.10 (0.909).

Request and byte counts are compared exactly: the workload is deterministic, so any difference is a real change
(``Comparison.count_changes``). :func:`machine_warnings` flags documents from different machines (CPU model, cores,
Python) or workloads, whose time ratios mislead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from benchmarks.chart import Doc, format_seconds, format_table, ordered_results
from benchmarks.results import Results, Stats, load

#: Smallest noise band when the runs' spread is smaller (or there is a single run).
NOISE_FLOOR: Final = 0.05

FASTER: Final = "faster"
SLOWER: Final = "slower"
SAME: Final = "same"
NO_DATA: Final = "n/a"

COUNTS: Final = ("requests", "bytes_from_source", "bytes_to_mirror")
MACHINE_KEYS: Final = ("cpu_model", "cpu_cores", "python")
WORKLOAD_KEYS: Final = ("deployments", "unique_bytes", "scale", "fingerprint")

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Comparison:
    """One ``(profile, scenario, phase)`` present in both documents."""

    profile: str
    scenario: str
    phase: str
    before: float | None  # median seconds
    after: float | None
    ratio: float | None  # after / before
    band: float  # relative noise band used for the verdict (0.1 = ±10 %)
    verdict: str  # faster | slower | same | n/a
    runs_before: int = 0
    runs_after: int = 0
    requests: tuple[int | None, int | None] = (None, None)
    bytes_from_source: tuple[int | None, int | None] = (None, None)
    bytes_to_mirror: tuple[int | None, int | None] = (None, None)

    @property
    def key(self) -> Key:
        return (self.profile, self.scenario, self.phase)

    @property
    def count_changes(self) -> list[str]:
        """Names of the exact figures (requests, bytes) that differ; a figure missing on one side is not compared."""
        out = []
        for name in COUNTS:
            old, new = getattr(self, name)
            if old is not None and new is not None and old != new:
                out.append(name)
        return out

    @property
    def changed(self) -> bool:
        """The time changed beyond the noise, or a request/byte count changed."""
        return self.verdict in (FASTER, SLOWER) or bool(self.count_changes)


def noise_band(before: Stats | None, after: Stats | None, noise: float | None = None) -> float:
    """``noise`` if given, else the larger relative min–max spread of the two samples, at least the floor."""
    if noise is not None:
        return noise
    return max([NOISE_FLOOR] + [s.spread for s in (before, after) if s is not None])


def verdict(ratio: float | None, band: float) -> str:
    if ratio is None:
        return NO_DATA
    if ratio > 1 + band:
        return SLOWER
    if ratio < 1 / (1 + band):
        return FASTER
    return SAME


def _order(before: Results, after: Results) -> list[Key]:
    """Keys in display order: the after document's order, then the before document's leftovers."""
    keys: list[Key] = []
    for doc in (after, before):
        for profile in doc.profile_names():
            keys += [r.key for r in ordered_results(doc, profile)]
    return list(dict.fromkeys(keys))


def compare(before: Doc, after: Doc, noise: float | None = None) -> list[Comparison]:
    """A :class:`Comparison` per ``(profile, scenario, phase)`` present in both documents, in display order."""
    if noise is not None and (not math.isfinite(noise) or noise < 0):
        raise ValueError(f"noise must be a non-negative number, not {noise!r}")
    before, after = load(before), load(after)
    old, new = before.rows(), after.rows()
    rows = []
    for key in _order(before, after):
        if key not in old or key not in new:
            continue
        b, a = old[key].stats, new[key].stats
        ratio = a.median / b.median if a is not None and b is not None and b.median > 0 else None
        band = noise_band(b, a, noise)
        rows.append(
            Comparison(
                *key,
                before=b.median if b else None,
                after=a.median if a else None,
                ratio=ratio,
                band=band,
                verdict=verdict(ratio, band),
                runs_before=b.runs if b else 0,
                runs_after=a.runs if a else 0,
                requests=(old[key].requests, new[key].requests),
                bytes_from_source=(old[key].bytes_from_source, new[key].bytes_from_source),
                bytes_to_mirror=(old[key].bytes_to_mirror, new[key].bytes_to_mirror),
            )
        )
    return rows


def unmatched(before: Doc, after: Doc) -> tuple[list[Key], list[Key]]:
    """Keys only in ``before`` and keys only in ``after``."""
    before, after = load(before), load(after)
    old, new = before.rows(), after.rows()
    keys = _order(before, after)
    return [k for k in keys if k in old and k not in new], [k for k in keys if k in new and k not in old]


def machine_warnings(before: Doc, after: Doc) -> list[str]:
    """Why the two documents' times may not be comparable: other machine, workload or quick mode."""
    before, after = load(before), load(after)
    out = []
    for name, keys, why in (
        ("machine", MACHINE_KEYS, "time ratios across machines mislead"),
        ("workload", WORKLOAD_KEYS, "time ratios across workloads mislead"),
    ):
        old, new = (_section(doc, name) for doc in (before, after))
        diffs = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
        if diffs:
            out.append(f"{name} differs ({'; '.join(diffs)}): {why}")
    if before.quick != after.quick:
        out.append(f"quick mode differs ({before.quick} → {after.quick})")
    return out


def _section(doc: Results, name: str) -> Mapping[str, Any]:
    return doc.machine.model_dump() if name == "machine" else doc.workload


def _format_pair(pair: tuple[int | None, int | None], mib: bool = False) -> str:
    old, new = pair

    def one(value: int | None) -> str:
        if value is None:
            return "–"
        return f"{value / (1024 * 1024):.1f}" if mib else str(value)

    if old is None or new is None or old == new:
        return one(new if new is not None else old)
    return f"{one(old)} → {one(new)} ({new - old:+,}{' B' if mib else ''})"


def _format_ratio(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio:.3f}"


def _verdict_cell(row: Comparison) -> str:
    text = row.verdict
    if row.count_changes:
        text += ", counts changed"
    return text


HEADER: Final = (
    "scenario",
    "phase",
    "before",
    "after",
    "after÷before",
    "noise ±",
    "verdict",
    "requests",
    "MiB from source",
    "MiB to mirror",
)


def render_compare(rows: Sequence[Comparison], warnings: Iterable[str] = (), notes: Iterable[str] = ()) -> str:
    """Text report of :func:`compare` rows, one table per profile, warnings first and a summary last."""
    lines = [f"WARNING: {w}" for w in warnings]
    by_profile: dict[str, list[Comparison]] = {}
    for row in rows:
        by_profile.setdefault(row.profile, []).append(row)
    for profile, group in by_profile.items():
        if lines:
            lines.append("")
        lines.append(f"[{profile}]")
        cells = [
            (
                row.scenario,
                row.phase,
                format_seconds(row.before) if row.before is not None else "–",
                format_seconds(row.after) if row.after is not None else "–",
                _format_ratio(row.ratio),
                f"{row.band * 100:.0f} %",
                _verdict_cell(row),
                _format_pair(row.requests),
                _format_pair(row.bytes_from_source, mib=True),
                _format_pair(row.bytes_to_mirror, mib=True),
            )
            for row in group
        ]
        lines += format_table(HEADER, cells, left=2)
    if lines:
        lines.append("")
    if not rows:
        lines.append("no (profile, scenario, phase) in common")
    else:
        tally = {v: sum(r.verdict == v for r in rows) for v in (FASTER, SLOWER, SAME, NO_DATA)}
        summary = ", ".join(f"{n} {v}" for v, n in tally.items() if n or v != NO_DATA)
        counted = sum(bool(r.count_changes) for r in rows)
        lines.append(f"time: {summary}; request/byte counts changed in {counted} of {len(rows)} rows")
        lines.append(
            "verdict: faster/slower only when after÷before leaves the noise band (runs' min–max spread, at least "
            f"{NOISE_FLOOR * 100:.0f} %, or --noise); counts are compared exactly"
        )
        if any(min(r.runs_before, r.runs_after) < 2 for r in rows):
            lines.append("note: some rows have a single run on one side: their band is only the floor or --noise")
    lines += list(notes)
    return "\n".join(lines) + "\n"


def compare_report(before: Doc, after: Doc, noise: float | None = None) -> str:
    """:func:`render_compare` of :func:`compare`, with machine warnings and the rows found on one side only."""
    before, after = load(before), load(after)
    only_before, only_after = unmatched(before, after)
    notes = []
    if only_before:
        notes.append("only in before: " + ", ".join(" ".join(k) for k in only_before))
    if only_after:
        notes.append("only in after: " + ", ".join(" ".join(k) for k in only_after))
    return render_compare(compare(before, after, noise), machine_warnings(before, after), notes)


__all__ = [
    "NOISE_FLOOR",
    "Comparison",
    "compare",
    "compare_report",
    "machine_warnings",
    "noise_band",
    "render_compare",
    "unmatched",
    "verdict",
]
