"""The harness's targets, judged from a results document's rows and profiles: printed PASS/FAIL, never asserted.

Per profile. Profiles without links are judged as loopback, profiles with links as the wan:

- ``cluster`` cold ≥ 3× faster than ``naive`` cold;
- cold against the floor: without links ``cluster`` ≤ 1.0× and ``service+mount`` ≤ 1.15× the curl floor; with
  links both ≤ 1.1× the link floor (unique bytes through the slowest link + the dependency chain's round trips);
- warm CLI (``cluster``, ``service+mount``, ``service-per-env``) ≤ 0.1× the skopeo warm loop without links,
  ≤ 0.05× with links (10× and 20× faster); warm library (in-process) ≤ 0.1× in both;
- cold: every unique blob read from the source exactly once; warm ≤ 2 requests per deployment.

Only what was measured is judged: a target whose rows are missing is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from benchmarks.results import ProfileInfo, Results, Row, Target, judge, load

NAIVE_SPEEDUP_MIN: Final = 3.0
CURL_FLOOR_MAX: Final = {"cluster": 1.0, "service+mount": 1.15}  # profiles without links
LINK_FLOOR_MAX: Final = 1.1  # profiles with links, for the modes of CURL_FLOOR_MAX
WARM_CLI_SKOPEO_MAX: Final = 0.1  # without links; with links WARM_CLI_SKOPEO_MAX_LINKED
WARM_CLI_SKOPEO_MAX_LINKED: Final = 0.05
WARM_LIBRARY_SKOPEO_MAX: Final = 0.1
WARM_REQUESTS_PER_DEPLOYMENT_MAX: Final = 2.0
WARM_MODES: Final = ("cluster", "service+mount", "service-per-env")
LIBRARY_MODES: Final = ("cluster", "service+mount")

Rows = dict[tuple[str, str, str], Row]


def _median(rows: Rows, profile: str, scenario: str, phase: str) -> float | None:
    row = rows.get((profile, scenario, phase))
    return row.median if row is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _add(out: list[Target], profile: str, name: str, value: float | None, limit: float, at_most: bool = True) -> None:
    if value is not None:
        out.append(judge(profile, name, value, limit, at_most=at_most))


def speed_targets(info: ProfileInfo, rows: Rows) -> list[Target]:
    """Against naive, the floors and the skopeo loop."""
    p, out = info.name, list[Target]()
    cold = {mode: _median(rows, p, mode, "cold") for mode in ("naive", *CURL_FLOOR_MAX)}
    _add(
        out,
        p,
        f"cluster cold ≥ {NAIVE_SPEEDUP_MIN:g}× faster than naive cold",
        _ratio(cold["naive"], cold["cluster"]),
        NAIVE_SPEEDUP_MIN,
        False,
    )
    for mode, limit in CURL_FLOOR_MAX.items():
        if info.linked:
            floor = info.link_floor.seconds if info.link_floor else None
            _add(out, p, f"{mode} cold ≤ {LINK_FLOOR_MAX:g}× the link floor", _ratio(cold[mode], floor), LINK_FLOOR_MAX)
        else:
            floor = _median(rows, p, "floor", "cold")
            _add(out, p, f"{mode} cold ≤ {limit:g}× the curl floor", _ratio(cold[mode], floor), limit)
    skopeo = _median(rows, p, "skopeo", "warm")
    cli_limit = WARM_CLI_SKOPEO_MAX_LINKED if info.linked else WARM_CLI_SKOPEO_MAX
    for mode in WARM_MODES:
        warm = _median(rows, p, mode, "warm")
        _add(out, p, f"{mode} warm (CLI) ≤ {cli_limit:g}× the skopeo warm loop", _ratio(warm, skopeo), cli_limit)
    for mode in LIBRARY_MODES:
        warm = _median(rows, p, f"{mode}-library", "warm")
        limit = WARM_LIBRARY_SKOPEO_MAX
        _add(
            out, p, f"{mode} warm (library, in-process) ≤ {limit:g}× the skopeo warm loop", _ratio(warm, skopeo), limit
        )
    return out


def traffic_targets(info: ProfileInfo, rows: Rows) -> list[Target]:
    """Each unique blob read once in cold runs; few requests per deployment in warm runs."""
    p, out = info.name, list[Target]()
    for mode in WARM_MODES:
        cold, warm = rows.get((p, mode, "cold")), rows.get((p, mode, "warm"))
        if cold is not None and cold.blobs_not_read_once is not None:
            _add(
                out, p, f"{mode} cold: unique blobs not read exactly once from the source", cold.blobs_not_read_once, 0
            )
        if warm is not None:
            limit = WARM_REQUESTS_PER_DEPLOYMENT_MAX
            _add(out, p, f"{mode} warm ≤ {limit:g} requests per deployment", warm.requests_per_deployment, limit)
    return out


def judge_targets(doc: Results) -> list[Target]:
    """Every target of every profile of ``doc`` that its rows allow judging."""
    rows = doc.rows()
    out: list[Target] = []
    for name in doc.profile_names():
        info = doc.profile(name) or ProfileInfo(name=name)
        out += speed_targets(info, rows) + traffic_targets(info, rows)
    return out


def format_targets(doc: Results | Mapping[str, Any]) -> str:
    """``targets:`` then one ``PASS``/``FAIL`` line per target of ``doc`` (a document of any version)."""
    lines = ["targets:"]
    for t in load(doc).targets:
        lines.append(f"  {'PASS' if t.passed else 'FAIL'}  {t.label}: {t.value:.3g} (limit {t.limit:g})")
    return "\n".join(lines) + "\n"
