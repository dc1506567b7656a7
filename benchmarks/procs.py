"""Measuring processes: CPU seconds (of a running process, of a reaped child, of threads) and peak RSS."""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process, from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU of every child process reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_cpu(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Reap ``proc`` with wait4: (exit code, its own user + system CPU seconds)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


class PeakRss:
    """Polls ``VmHWM`` of processes until they exit: the peak RSS of the program they exec'd.

    ``ru_maxrss`` from wait4 is not used for the figure: Linux carries it across fork+exec, so it includes the
    (larger) benchmark process the child was forked from.
    """

    def __init__(self, *pids: int, interval: float = 0.005) -> None:
        self.peak_kb = dict.fromkeys(pids, 0)
        self._interval = interval
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        live = set(self.peak_kb)
        while live:
            for pid in list(live):
                hwm = _vm_hwm_kb(pid)
                if hwm is None:
                    live.discard(pid)
                else:
                    self.peak_kb[pid] = max(self.peak_kb[pid], hwm)
            time.sleep(self._interval)

    def result_mb(self, pid: int) -> float:
        self._thread.join(timeout=10)
        return self.peak_kb[pid] / 1024


def _vm_hwm_kb(pid: int) -> int | None:
    """``VmHWM`` in kB; None once the process is gone or a zombie (its memory released)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except (FileNotFoundError, ProcessLookupError):
        return None
