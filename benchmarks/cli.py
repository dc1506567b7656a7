"""``python -m benchmarks COMMAND`` (run from the repository root)::

    python -m benchmarks run [--quick] [--profile loopback,wan] [--scenarios a,b] [--strict] ...   # the harness
    python -m benchmarks table RESULTS.json                 # times, traffic and CPU per profile, start-up, targets
    python -m benchmarks chart RESULTS.json [-o chart.svg]
    python -m benchmarks compare BEFORE.json AFTER.json [--noise 0.1]
    python -m benchmarks startup [--runs N]                 # start-up wall times only (no registries)
    python -m benchmarks compression [ARGS...]              # gzip vs zstd (benchmarks.compression), ARGS as-is
    python -m benchmarks blob-throughput [ARGS...]          # one big blob vs curl (benchmarks.blob_throughput)
    python -m benchmarks fleet [ARGS...]                    # the workload to 3 clusters, source on the WAN

``table``, ``chart`` and ``compare`` read any results format version (older ones are converted on load).
``compare`` always exits 0 (it reports, it does not judge); usage errors and unreadable documents exit 2;
``run --strict`` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.network import parse_bandwidth, parse_rtt
from benchmarks.results import Results, ResultsError, load

if TYPE_CHECKING:
    from benchmarks.measure import Config

FORWARDED = {
    "compression": "benchmarks.compression",
    "blob-throughput": "benchmarks.blob_throughput",
    "fleet": "benchmarks.fleet",
}


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    return int(_checked(text, int, 1))


def count(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return int(_checked(text, int, 0))


def fraction(text: str) -> float:
    """An argparse type: a finite number of at least 0 (0.1 = ±10 %)."""
    return _checked(text, float, 0)


def _checked(text: str, kind: Callable[[str], float], minimum: float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum:g}: {text!r}")
    return value


# --------------------------------------------------------------------------- run: the harness


def run_parser(prog: str = "python -m benchmarks run") -> argparse.ArgumentParser:
    from benchmarks.measure import DEFAULT_PROFILES, RESULTS
    from benchmarks.scenarios import SCENARIOS

    parser = argparse.ArgumentParser(
        prog=prog, description="Mirror a 30-deployment workload: ocicopy vs naive, skopeo, curl."
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="scale 0.2 (wan 0.1), 1 repeat: about 2-3 minutes")
    add("--profile", default=",".join(DEFAULT_PROFILES), help="profiles, comma-separated (loopback,wan)")
    add("--scenarios", default=None, help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    add("--repeats", type=positive_int, default=None, metavar="N", help="runs of every scenario (3; quick 1)")
    add("--scale", type=float, default=None, help="workload size without links (1: 257 MiB; quick 0.2)")
    add("--wan-scale", type=float, default=None, help="workload size with links (0.5; quick 0.1)")
    add("--source-rtt", type=parse_rtt, default=None, metavar="RTT", help="e.g. 40ms (wan default)")
    add("--source-bandwidth", type=parse_bandwidth, default=None, metavar="BW", help="e.g. 200Mbit")
    add("--mirror-rtt", type=parse_rtt, default=None, metavar="RTT", help="e.g. 2ms (wan default)")
    add("--mirror-bandwidth", type=parse_bandwidth, default=None, metavar="BW", help="e.g. 2Gbit")
    add("--content", choices=["auto", "usr", "random"], default="auto", help="layer content")
    add("--jobs", type=positive_int, default=None, help="processes generating layers (default: CPUs)")
    add("--parallel", type=positive_int, default=8, help="floor curl transfers / naive blobs in flight (8)")
    add("--change-service", default="api", help="the service that ships a version in one-change")
    add("--startup-runs", type=count, default=None, metavar="N", help="start-up timing rounds (10; quick 5; 0: none)")
    add("--output", type=Path, default=RESULTS, help="results JSON (default benchmarks/results/harness.json)")
    add("--no-chart", action="store_true", help="do not write the SVG chart")
    add("--strict", action="store_true", help="exit 1 when a target is missed")
    add("--workdir", type=Path, default=None, help="parent of the temporary directory")
    return parser


def _names(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def parse_run_args(argv: Sequence[str], prog: str = "python -m benchmarks run") -> tuple[Config, bool]:
    """The harness's :class:`~benchmarks.measure.Config` (resolved) and ``--strict``."""
    from benchmarks.measure import Config

    parser = run_parser(prog)
    args = parser.parse_args(list(argv))
    config = Config(
        quick=args.quick,
        profiles=_names(args.profile) or [],
        scenarios=_names(args.scenarios),
        repeats=args.repeats,
        scale=args.scale,
        link_scale=args.wan_scale,
        source_rtt=args.source_rtt,
        source_bandwidth=args.source_bandwidth,
        mirror_rtt=args.mirror_rtt,
        mirror_bandwidth=args.mirror_bandwidth,
        content=args.content,
        jobs=args.jobs,
        parallel=args.parallel,
        change_service=args.change_service,
        startup_runs=args.startup_runs,
        workdir=args.workdir,
        output=args.output,
        chart=None if args.no_chart else args.output.with_suffix(".svg"),
        command=" ".join([prog, *argv]),
    )
    try:
        return config.resolved(), args.strict
    except ValueError as exc:
        parser.error(str(exc))


def run_main(argv: Sequence[str], prog: str = "python -m benchmarks run") -> int:
    """Run the harness; print the details, the table and the targets; 1 on a missed target with ``--strict``."""
    from benchmarks.chart import render_table
    from benchmarks.measure import execute, format_details, log, log_phases
    from benchmarks.targets import format_targets

    config, strict = parse_run_args(argv, prog)
    doc, runs = execute(config, log)
    log_phases(runs, log)
    print(format_details(runs))
    print(render_table(doc), end="")
    print(format_targets(doc), end="")
    return 1 if strict and not all(t.passed for t in doc.targets) else 0


# --------------------------------------------------------------------------- the other commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark tools: run the harness, chart, tabulate or compare results."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the mirror benchmark harness (see: run --help)", add_help=False)
    for name, module in FORWARDED.items():
        sub.add_parser(name, help=f"{module}; every further argument is passed to it", add_help=False)
    chart = sub.add_parser("chart", help="write an SVG chart of a results document")
    chart.add_argument("results", help="results JSON (e.g. benchmarks/results/harness.json)")
    chart.add_argument("-o", "--output", help="SVG path (default: the results path with .svg)")
    table = sub.add_parser("table", help="print a results document as text tables")
    table.add_argument("results", help="results JSON")
    comp = sub.add_parser("compare", help="compare two results documents (before, after)")
    comp.add_argument("before", help="results JSON before the change")
    comp.add_argument("after", help="results JSON after the change")
    comp.add_argument("--noise", type=fraction, default=None, help="relative noise band overriding the runs' spread")
    startup = sub.add_parser("startup", help="start-up wall times of ocicopy (no registries)")
    startup.add_argument("--runs", type=positive_int, default=10, help="timed rounds (10)")
    return parser


def _load(parser: argparse.ArgumentParser, path: str) -> Results:
    try:
        return load(path)
    except ResultsError as exc:
        parser.error(f"{path}: {exc}")


def _startup(runs: int) -> int:
    import tempfile

    from benchmarks import startup
    from benchmarks.scenarios import tool_env

    with tempfile.TemporaryDirectory(prefix="ocicopy-startup-") as tmp:
        env = tool_env(Path(tmp))
        times = startup.time_commands(startup.startup_commands(), runs, lambda cmd: startup.run_timed(cmd, env))
        imports = startup.profile_imports([sys.executable, "-m", "ocicopy", "--version"], env)
    print("\n".join(startup.Startup.of(times, imports, "python -m ocicopy --version").describe()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["run"]:
        return run_main(args_list[1:])  # its own parser: --help lists the harness's options
    if args_list[:1] and args_list[0] in FORWARDED:  # forwarded untouched, before argparse could claim any option
        return int(importlib.import_module(FORWARDED[args_list[0]]).main(args_list[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "chart":
        from benchmarks.chart import write_chart

        output = Path(args.output) if args.output else Path(args.results).with_suffix(".svg")
        try:
            write_chart(_load(parser, args.results), output)
        except OSError as exc:
            print(f"cannot write {output}: {exc}", file=sys.stderr)
            return 1
        print(output)
    elif args.command == "table":
        from benchmarks.chart import render_table
        from benchmarks.targets import format_targets

        doc = _load(parser, args.results)
        sys.stdout.write(render_table(doc) + (format_targets(doc) if doc.targets else ""))
    elif args.command == "compare":
        from benchmarks.compare import compare_report

        sys.stdout.write(compare_report(_load(parser, args.before), _load(parser, args.after), args.noise))
    elif args.command == "startup":
        return _startup(args.runs)
    return 0
