"""Start-up: what a command-line run of ocicopy pays before its first request. Reported, never judged.

- :func:`time_commands`: wall times of ``python -c pass`` (the bare interpreter), ``python -m ocicopy --version``
  and the ``ocicopy`` console script's ``--version``, interleaved round by round after one unmeasured round;
  :meth:`Startup.of` keeps their medians and the overheads (command minus bare).
- :func:`parse_importtime`: the ``python -X importtime`` report (stderr) of a command, e.g. a warm
  ``ocicopy mirror`` run (every import it makes, the lazy ones included), as :class:`ImportTime` entries;
  :func:`heaviest` and :func:`by_package` sum them up.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, computed_field

IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S.*)$")
TOP_IMPORTS = 15
TOP_PACKAGES = 10


class ImportTime(BaseModel):
    """One import of a ``-X importtime`` report: its own and cumulative microseconds, nesting depth."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int = 0

    @property
    def package(self) -> str:
        return self.module.split(".", 1)[0]


class Startup(BaseModel):
    """Median start-up wall times (seconds) and the heaviest imports of the profiled command."""

    runs: int
    bare_seconds: float
    module_seconds: float
    script_seconds: float | None = None
    imports_command: str = ""
    imports_total_us: int = 0
    imports: list[ImportTime] = []  # the heaviest by own time
    packages: dict[str, int] = {}  # own microseconds per top-level package, heaviest first

    @computed_field  # type: ignore[prop-decorator]
    @property
    def module_overhead_seconds(self) -> float:
        """``python -m ocicopy --version`` minus ``python -c pass``."""
        return self.module_seconds - self.bare_seconds

    @computed_field  # type: ignore[prop-decorator]
    @property
    def script_overhead_seconds(self) -> float | None:
        """``ocicopy --version`` (the console script) minus ``python -c pass``."""
        return None if self.script_seconds is None else self.script_seconds - self.bare_seconds

    @classmethod
    def of(cls, times: Mapping[str, Sequence[float]], imports: Sequence[ImportTime] = (), command: str = "") -> Startup:
        """From :func:`time_commands`' samples (``bare``, ``module``, optional ``script``) and an import report."""
        script = times.get("script")
        return cls(
            runs=len(times["bare"]),
            bare_seconds=statistics.median(times["bare"]),
            module_seconds=statistics.median(times["module"]),
            script_seconds=statistics.median(script) if script else None,
            imports_command=command,
            imports_total_us=sum(i.self_us for i in imports),
            imports=heaviest(imports),
            packages=by_package(imports),
        )

    def describe(self) -> list[str]:
        ms = 1000
        lines = [
            f"start-up (median of {self.runs}): python -c pass {self.bare_seconds * ms:.0f} ms; "
            f"python -m ocicopy --version {self.module_seconds * ms:.0f} ms (+{self.module_overhead_seconds * ms:.0f})"
            + (
                f"; ocicopy --version {self.script_seconds * ms:.0f} ms (+{self.script_overhead_seconds * ms:.0f})"
                if self.script_seconds is not None and self.script_overhead_seconds is not None
                else ""
            )
        ]
        if self.imports:
            lines.append(f"imports of {self.imports_command}: {self.imports_total_us / ms:.0f} ms in all; by package:")
            lines.append("  " + ", ".join(f"{name} {us / ms:.1f}" for name, us in self.packages.items()) + " (ms)")
            lines.append("  heaviest: " + ", ".join(f"{i.module} {i.self_us / ms:.1f}" for i in self.imports) + " (ms)")
        return lines


def parse_importtime(stderr: str) -> list[ImportTime]:
    """The ``import time:`` lines of a ``-X importtime`` report (its header and other lines are skipped)."""
    out = []
    for line in stderr.splitlines():
        if match := IMPORT_LINE.match(line):
            own, cumulative, indent, module = match.groups()
            out.append(
                ImportTime(
                    module=module.strip(), self_us=int(own), cumulative_us=int(cumulative), depth=len(indent) // 2
                )
            )
    return out


def heaviest(imports: Sequence[ImportTime], n: int = TOP_IMPORTS) -> list[ImportTime]:
    """The ``n`` imports with the largest own time, heaviest first (ties in report order)."""
    return sorted(imports, key=lambda i: -i.self_us)[:n]


def by_package(imports: Sequence[ImportTime], n: int = TOP_PACKAGES) -> dict[str, int]:
    """Own microseconds summed per top-level package, the ``n`` heaviest, heaviest first."""
    totals: dict[str, int] = {}
    for i in imports:
        totals[i.package] = totals.get(i.package, 0) + i.self_us
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])[:n])


def startup_commands(python: str = sys.executable) -> dict[str, list[str]]:
    """``bare``, ``module`` and (when installed next to ``python``, or on PATH) ``script``."""
    commands = {"bare": [python, "-c", "pass"], "module": [python, "-m", "ocicopy", "--version"]}
    script = Path(python).parent / "ocicopy"
    found = str(script) if script.exists() else shutil.which("ocicopy")
    if found:
        commands["script"] = [found, "--version"]
    return commands


def run_timed(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall seconds of one run of ``cmd`` (which must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(list(cmd), env=dict(env or os.environ), cwd=cwd, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-1000:]}")
    return seconds


def time_commands(
    commands: Mapping[str, Sequence[str]], runs: int, run: Callable[[Sequence[str]], float]
) -> dict[str, list[float]]:
    """``runs`` timed rounds of every command, interleaved, after one unmeasured round (bytecode, page cache)."""
    for cmd in commands.values():
        run(cmd)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            times[name].append(run(cmd))
    return times


def profile_imports(cmd: Sequence[str], env: Mapping[str, str], cwd: Path | None = None) -> list[ImportTime]:
    """Run ``python -X importtime`` + ``cmd[1:]`` (``cmd[0]`` is the interpreter); its parsed report."""
    full = [cmd[0], "-X", "importtime", *cmd[1:]]
    done = subprocess.run(full, env=dict(env), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(full)} exited {done.returncode}: {done.stderr[-1000:]}")
    return parse_importtime(done.stderr)
