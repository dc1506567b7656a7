"""Benchmark tools: ``python -m benchmarks {run,compression,chart,table,compare}`` (run from the repository root).

::

    .venv/bin/python -m benchmarks run [ARGS...]                        # the harness (benchmarks.mirror), ARGS as-is
    .venv/bin/python -m benchmarks compression [ARGS...]                # gzip vs zstd (benchmarks.compression)
    .venv/bin/python -m benchmarks table benchmarks/results/mirror.json  # medians, speedups, ratios, traffic
    .venv/bin/python -m benchmarks chart benchmarks/results/mirror.json [-o chart.svg]
    .venv/bin/python -m benchmarks compare BEFORE.json AFTER.json [--noise 0.1]

``compare`` always exits 0 (it reports, it does not judge); usage errors and unreadable documents exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _run(argv: list[str], module: str = "benchmarks.mirror") -> int:
    # Imported lazily: the harness pulls in registries, the workload builder and the client.
    return int(importlib.import_module(module).main(argv) or 0)


def _load(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        parser.error(f"cannot read results document {path}: {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        parser.error(f"{path} is not a benchmark results document (no 'results' list)")
    return doc


def _noise(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative fraction (0.1 = ±10 %), not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmark tools: run the harness, chart, tabulate or compare results."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "run",
        help="run the mirror benchmark harness (benchmarks.mirror); every further argument is passed to it",
        add_help=False,
    )
    sub.add_parser(
        "compression",
        help="gzip vs zstd: sizes, decompression, recompression CPU (benchmarks.compression); arguments passed on",
        add_help=False,
    )
    chart = sub.add_parser("chart", help="write an SVG chart of a results document")
    chart.add_argument("results", help="results JSON (e.g. benchmarks/results/mirror.json)")
    chart.add_argument("-o", "--output", help="SVG path (default: the results path with .svg)")
    table = sub.add_parser("table", help="print a results document as text tables")
    table.add_argument("results", help="results JSON")
    comp = sub.add_parser("compare", help="compare two results documents (before, after)")
    comp.add_argument("before", help="results JSON before the change")
    comp.add_argument("after", help="results JSON after the change")
    comp.add_argument(
        "--noise",
        type=_noise,
        default=None,
        help="relative noise band overriding the runs' own spread (0.1 = ±10 %%)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["run"]:
        # Forwarded untouched (including --help), before argparse could claim any option.
        return _run(args_list[1:])
    if args_list[:1] == ["compression"]:
        return _run(args_list[1:], "benchmarks.compression")
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command == "chart":
        from benchmarks.chart import write_chart

        doc = _load(parser, args.results)
        output = Path(args.output) if args.output else Path(args.results).with_suffix(".svg")
        try:
            write_chart(doc, output)
        except OSError as exc:
            print(f"cannot write {output}: {exc}", file=sys.stderr)
            return 1
        print(output)
    elif args.command == "table":
        from benchmarks.chart import render_table

        sys.stdout.write(render_table(_load(parser, args.results)))
    elif args.command == "compare":
        from benchmarks.compare import compare_report

        before, after = _load(parser, args.before), _load(parser, args.after)
        sys.stdout.write(compare_report(before, after, args.noise))
    return 0


if __name__ == "__main__":
    sys.exit(main())
