"""``python -m benchmarks.mirror [ARGS]`` = ``python -m benchmarks run [ARGS]``, and the names callers import.

The harness lives in :mod:`benchmarks.measure` (running), :mod:`benchmarks.scenarios` (the registry),
:mod:`benchmarks.targets` and :mod:`benchmarks.results`; this module keeps the entry point and the names that
``tools/demo.py`` and older scripts use.
"""

from __future__ import annotations

import sys

from benchmarks.cli import run_main
from benchmarks.measure import Config, execute, run_benchmark
from benchmarks.scenarios import SCENARIOS, Context, Scenario, register_scenario
from benchmarks.targets import format_targets

__all__ = [
    "SCENARIOS",
    "Config",
    "Context",
    "Scenario",
    "execute",
    "format_targets",
    "register_scenario",
    "run_benchmark",
]


def main(argv: list[str] | None = None) -> int:
    return run_main(sys.argv[1:] if argv is None else argv, prog="python -m benchmarks.mirror")


if __name__ == "__main__":
    sys.exit(main())
