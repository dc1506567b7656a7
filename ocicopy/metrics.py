"""Prometheus metrics of a run (``--metrics FILE``, ``--metrics-push URL``; ``pip install "ocicopy[metrics]"``).

The numbers of the JSON report, as **gauges** (a run is a batch job: per-run counters would restart at each
run), in a fresh :class:`prometheus_client.CollectorRegistry` per run, with the well-kept ``prometheus-client``:

- ``--metrics FILE`` writes the text exposition for node exporter's textfile collector: a ``*.prom`` file
  (node exporter reads no other), replaced whole (a temp file in its directory, then a rename: the collector
  never reads half a file), no sample timestamps (the collector refuses them);
- ``--metrics-push URL`` sends them to a Pushgateway (short-lived pipeline pods have no textfile directory),
  job ``ocicopy``, grouped by ``command`` (and ``instance`` when given with ``--metrics-instance``), with
  ``pushadd`` (POST): metrics of this push replace theirs, others stay, so a failed run leaves the last
  success's ``ocicopy_last_success_timestamp_seconds`` in the gateway. A push that fails is a warning; the
  run's exit status stays its own.

Every metric has a ``command`` label (``mirror``, ``copy``, ``prune``: one textfile directory holds each
command's file). Per cluster (``cluster``; a copy's is ``""``): ``ocicopy_deployments{action}``,
``ocicopy_blobs{action}`` (copied, mounted, skipped, recompressed), ``ocicopy_bytes_from_source``,
``ocicopy_bytes_to_mirror``, ``ocicopy_requests``, ``ocicopy_failures``; for prune
``ocicopy_prune_tags_removed``, ``ocicopy_prune_manifests_deleted``, ``ocicopy_prune_bytes_freed``. Per
registry host (``registry``): ``ocicopy_registry_requests``, ``ocicopy_registry_retries``,
``ocicopy_registry_throttled``, ``ocicopy_registry_peer_cuts``, ``ocicopy_registry_lowest_concurrency``,
``ocicopy_rate_limit_remaining`` / ``ocicopy_rate_limit_limit`` / ``ocicopy_rate_limit_window_seconds`` (when
the registry announces a quota). The run: ``ocicopy_run_bytes_from_source`` (a fleet reads each blob once:
less than the clusters' sum), ``ocicopy_run_requests``, ``ocicopy_run_duration_seconds``,
``ocicopy_run_exit_code``, ``ocicopy_run_dry_run``, ``ocicopy_last_run_success``,
``ocicopy_last_run_timestamp_seconds``, ``ocicopy_last_success_timestamp_seconds`` (on a failed run: carried
over from the previous file at the same path, so "no success for a day" can be alerted on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ocicopy.errors import InputError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ocicopy.pruning import PruneReport
    from ocicopy.report import MirrorReport
    from ocicopy.result import CopyResult, RegistryStats

__all__ = ["Run", "check_targets", "metrics_of", "previous_success", "push_metrics", "render", "write_metrics"]

JOB = "ocicopy"
LAST_SUCCESS = "ocicopy_last_success_timestamp_seconds"
BLOB_ACTIONS = ("copied", "mounted", "skipped", "recompressed")
#: Every gauge and its help text.
HELP: Final[Mapping[str, str]] = {
    "ocicopy_run_duration_seconds": "how long the last run took (seconds)",
    "ocicopy_run_exit_code": "the last run's exit status (0 ok, 1 failed, 2 bad input)",
    "ocicopy_last_run_success": "1 if the last run succeeded",
    "ocicopy_last_run_timestamp_seconds": "when the last run ended (Unix time)",
    LAST_SUCCESS: "when a run last succeeded (Unix time)",
    "ocicopy_deployments": "deployments of the last run, by action",
    "ocicopy_blobs": "blobs of the last run, by action",
    "ocicopy_bytes_from_source": "bytes the cluster's copies read from sources",
    "ocicopy_bytes_to_mirror": "bytes sent to the cluster's mirror",
    "ocicopy_requests": "requests counted for the cluster (its report's totals)",
    "ocicopy_failures": "what failed in the last run (deployments, repositories)",
    "ocicopy_run_bytes_from_source": "bytes read from sources (each blob once per run)",
    "ocicopy_run_requests": "requests of the last run, every registry",
    "ocicopy_run_dry_run": "1 if the last run was a dry run",
    "ocicopy_prune_tags_removed": "mirror tags the last prune removed (would remove: dry run)",
    "ocicopy_prune_manifests_deleted": "manifests the last prune deleted (would delete: dry run)",
    "ocicopy_prune_bytes_freed": "bytes the registry's garbage collection can give back",
    "ocicopy_prune_refused": "1 if --max-delete refused the last prune",
    "ocicopy_registry_requests": "requests to the registry in the last run",
    "ocicopy_registry_retries": "requests sent again after a transient failure",
    "ocicopy_registry_throttled": "answers 429/503 (slow down) from the registry",
    "ocicopy_registry_peer_cuts": "on Dask: limit cuts taken from another worker",
    "ocicopy_registry_lowest_concurrency": "the lowest in-flight limit the registry's pressure caused",
    "ocicopy_rate_limit_remaining": "pulls left in the registry's quota (its last answer)",
    "ocicopy_rate_limit_limit": "the registry's pull quota",
    "ocicopy_rate_limit_window_seconds": "the quota's window",
}
_URL = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")


@dataclass(frozen=True)
class Run:
    """A command's run as the metrics see it: its report (None when it failed before making one), how it ended,
    when, and for how long."""

    command: str
    report: MirrorReport | CopyResult | PruneReport | None
    exit_code: int
    finished: float  # epoch seconds
    seconds: float
    previous_success: float | None = None  # the last success before this run (for a failed run)

    @property
    def success(self) -> bool:
        return self.exit_code == 0


def check_targets(metrics: str | None, push: str | None) -> None:
    """The flags checked before the run starts (exit 2 otherwise): prometheus-client installed, a ``*.prom``
    file in an existing directory, an http(s) Pushgateway URL."""
    if metrics is None and push is None:
        return
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise InputError(
            '--metrics and --metrics-push need prometheus-client: pip install "ocicopy[metrics]"'
        ) from None
    if metrics is not None:
        path = Path(metrics)
        if path.suffix != ".prom":
            raise InputError(f"--metrics {metrics}: name it *.prom (node exporter's textfile collector reads no other)")
        if path.is_dir():
            raise InputError(f"--metrics {metrics}: is a directory")
        if not path.parent.is_dir():
            raise InputError(f"--metrics {metrics}: no directory {path.parent}")
    if push is not None and not _URL.fullmatch(push):
        raise InputError(f"--metrics-push {push!r} is not an http(s) URL of a Pushgateway (http://HOST:9091)")


def previous_success(path: str | Path) -> float | None:
    """``ocicopy_last_success_timestamp_seconds`` in the file a previous run wrote (None: no file, unreadable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = Path(path).read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


class _Gauges:
    """Gauges made on first use in one registry, each with ``command`` first among its labels."""

    def __init__(self, command: str) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=True)
        self.command = command
        self._made: dict[str, Any] = {}

    def set(self, name: str, value: float, **labels: str) -> None:
        from prometheus_client import Gauge

        if name not in self._made:
            self._made[name] = Gauge(name, HELP[name], ["command", *labels], registry=self.registry)
        self._made[name].labels(command=self.command, **labels).set(value)


def metrics_of(run: Run, *, include_last_success: bool = True) -> CollectorRegistry:
    """The run's gauges (module docstring). ``include_last_success=False`` leaves the last success out of a
    failed run's push (the gateway keeps the one it holds)."""
    from ocicopy.pruning import PruneReport
    from ocicopy.report import MirrorReport
    from ocicopy.result import CopyResult

    g = _Gauges(run.command)
    report = run.report
    if isinstance(report, MirrorReport):
        _mirror(g, report)
    elif isinstance(report, CopyResult):
        _copy(g, report)
    elif isinstance(report, PruneReport):
        _prune(g, report)
    if report is not None:
        _registries(g, report.registries)
    g.set("ocicopy_run_duration_seconds", run.seconds)
    g.set("ocicopy_run_exit_code", run.exit_code)
    g.set("ocicopy_last_run_success", 1 if run.success else 0)
    g.set("ocicopy_last_run_timestamp_seconds", run.finished)
    last = run.finished if run.success else run.previous_success
    if include_last_success and last is not None:
        g.set(LAST_SUCCESS, last)
    return g.registry


def _mirror(g: _Gauges, report: MirrorReport) -> None:
    from ocicopy.report import MirrorAction

    for name, cluster in report.clusters.items():
        results = [d for d in report.deployments if d.cluster == name]
        for outcome in MirrorAction:
            count = sum(1 for d in results if d.action is outcome)
            g.set("ocicopy_deployments", count, cluster=name, action=outcome.value)
        t = cluster.totals
        for action in BLOB_ACTIONS:
            g.set("ocicopy_blobs", getattr(t, f"blobs_{action}"), cluster=name, action=action)
        g.set("ocicopy_bytes_from_source", t.bytes_from_source, cluster=name)
        g.set("ocicopy_bytes_to_mirror", t.bytes_to_mirror, cluster=name)
        g.set("ocicopy_requests", t.requests, cluster=name)
        failed = sum(1 for d in results if d.error is not None)
        g.set("ocicopy_failures", failed, cluster=name)
    g.set("ocicopy_run_bytes_from_source", report.totals.bytes_from_source)
    g.set("ocicopy_run_requests", report.totals.requests)
    g.set("ocicopy_run_dry_run", 1 if report.dry_run else 0)


def _copy(g: _Gauges, result: CopyResult) -> None:
    t = result.totals
    for action in BLOB_ACTIONS:
        g.set("ocicopy_blobs", getattr(t, f"blobs_{action}"), cluster="", action=action)
    read = sum(b.bytes_from_source for b in result.blobs)
    g.set("ocicopy_bytes_from_source", read, cluster="")
    g.set("ocicopy_bytes_to_mirror", t.bytes_sent, cluster="")
    g.set("ocicopy_failures", 0, cluster="")
    g.set("ocicopy_run_bytes_from_source", read)
    g.set("ocicopy_run_requests", result.requests)


def _prune(g: _Gauges, report: PruneReport) -> None:
    for name, cluster in report.clusters.items():
        g.set("ocicopy_prune_tags_removed", cluster.tags_removed, cluster=name)
        g.set("ocicopy_prune_manifests_deleted", cluster.manifests_deleted, cluster=name)
        g.set("ocicopy_prune_bytes_freed", cluster.bytes_freed, cluster=name)
        failed = (cluster.error is not None) + sum(1 for r in cluster.repositories if r.error is not None)
        g.set("ocicopy_failures", failed, cluster=name)
    g.set("ocicopy_prune_refused", 1 if report.refused else 0)
    g.set("ocicopy_run_requests", report.requests)
    g.set("ocicopy_run_dry_run", 1 if report.dry_run else 0)


def _registries(g: _Gauges, registries: Mapping[str, RegistryStats]) -> None:
    for host, s in registries.items():
        g.set("ocicopy_registry_requests", s.requests, registry=host)
        g.set("ocicopy_registry_retries", s.retries, registry=host)
        g.set("ocicopy_registry_throttled", s.throttled, registry=host)
        g.set("ocicopy_registry_peer_cuts", s.peer_cuts, registry=host)
        if s.lowest_concurrency is not None:
            g.set("ocicopy_registry_lowest_concurrency", s.lowest_concurrency, registry=host)
        if (quota := s.rate_limit) is not None:
            g.set("ocicopy_rate_limit_remaining", quota.remaining, registry=host)
            if quota.limit is not None:
                g.set("ocicopy_rate_limit_limit", quota.limit, registry=host)
            if quota.window_seconds is not None:
                g.set("ocicopy_rate_limit_window_seconds", quota.window_seconds, registry=host)


def render(registry: CollectorRegistry) -> str:
    """The text exposition format (version 0.0.4), no timestamps."""
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


def write_metrics(registry: CollectorRegistry, path: str | Path) -> None:
    """``path`` replaced whole (temp file + rename in its directory)."""
    from ocicopy.report import write_atomic

    write_atomic(path, render(registry))


def push_metrics(registry: CollectorRegistry, url: str, command: str, instance: str | None = None) -> None:
    """To the Pushgateway at ``url`` (job ``ocicopy``, grouped by command and instance), with POST (pushadd)."""
    from prometheus_client import pushadd_to_gateway

    grouping = {"command": command} | ({"instance": instance} if instance else {})
    pushadd_to_gateway(url, job=JOB, registry=registry, grouping_key=grouping, timeout=10)
