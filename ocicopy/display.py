"""Human output: a live progress line on a TTY, and summaries of results.

The mirror's report types are imported only by the functions that show them: ``copy`` never loads them.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

from ocicopy.result import BlobAction

if TYPE_CHECKING:
    from ocicopy.digest import Digest
    from ocicopy.pruning import PruneReport
    from ocicopy.report import DeploymentResult, MirrorReport
    from ocicopy.result import BlobResult, CopyResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class TerminalProgress:
    """One self-rewriting status line on a TTY: blobs done, bytes sent, rate. Redraws at most 10 times/s."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self.sizes: dict[Digest, int] = {}
        self.sent = 0
        self.done = 0
        self.counts = {a: 0 for a in BlobAction}
        self._last = 0.0
        self._width = 0

    def blob_started(self, digest: Digest, size: int) -> None:
        self.sizes[digest] = size
        self._draw()

    def blob_advanced(self, digest: Digest, nbytes: int) -> None:
        self.sent += nbytes
        self._draw()

    def blob_finished(self, result: BlobResult) -> None:
        self.done += 1
        self.counts[result.action] += 1
        self._draw(force=True)

    def manifest_pushed(self, digest: Digest, reference: str) -> None:
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        line = self._line(now)
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def _line(self, now: float) -> str:
        rate = self.sent / max(now - self.started, 1e-6)
        return (
            f"blobs {self.done} done ({self.counts[BlobAction.COPIED]} copied, {self.counts[BlobAction.MOUNTED]} "
            f"mounted, {self.counts[BlobAction.SKIPPED]} skipped) · {human_bytes(self.sent)} of "
            f"{human_bytes(sum(self.sizes.values()))} streamed · {human_bytes(rate)}/s"
        )

    def close(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()


def copy_summary(result: CopyResult) -> str:
    t = result.totals
    lines = [
        f"{result.action.value} {result.source} -> {result.destination}",
        f"  digest     {result.digest} ({result.media_type})",
    ]
    if result.transformed:
        what = [f"platform subset {', '.join(result.platforms)}"] if result.platforms else []
        what += [f"layers recompressed to {result.compression}"] if result.compression else []
        lines.append(f"  note       new digest ({'; '.join(what)}) from {result.source_digest}")
    recompressed = f"{t.blobs_recompressed} recompressed, " if result.compression else ""
    lines += [
        f"  blobs      {t.blobs_copied} copied, {recompressed}{t.blobs_mounted} mounted, {t.blobs_skipped} skipped; "
        f"{human_bytes(t.bytes_sent)} sent",
        f"  manifests  {t.manifests_pushed} pushed, {t.manifests_skipped} already present",
        *([f"  referrers  {len(result.referrers)} (signatures, SBOMs, attestations)"] if result.referrers else []),
        f"  time       {result.seconds:.2f} s, {result.requests} requests",
        f"  pinned     {result.pinned}",
    ]
    return "\n".join(lines)


def deployment_line(d: DeploymentResult) -> str:
    """One line per deployment (non-TTY output, and the final table)."""
    from ocicopy.report import MirrorAction

    what = d.pinned or d.destination
    detail = ""
    if d.action in (MirrorAction.COPIED, MirrorAction.UPDATED):
        detail = (
            f" ({d.blobs_copied} copied, {d.blobs_mounted} mounted, {d.blobs_skipped} skipped, "
            f"{human_bytes(d.bytes_to_mirror)}, {d.seconds:.2f} s)"
        )
    if d.error:
        detail = f": {d.error}"
    label = f"{d.service}/{d.environment}"
    return f"{d.action.value:<12} {label:<24} {d.source or d.build_key} -> {what}{detail}"


class MirrorLines:
    """Non-TTY progress: one line per finished deployment."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def deployment_finished(self, result: DeploymentResult, done: int, total: int) -> None:
        print(deployment_line(result), file=self.stream, flush=True)


class MirrorTerminal(TerminalProgress):
    """TTY progress for a mirror run: deployments done/total and bytes, on one self-rewriting line."""

    def __init__(self, total: int, stream: TextIO | None = None, interval: float = 0.1) -> None:
        super().__init__(stream, interval)
        self.total = total
        self.deployments_done = 0
        self.failed = 0

    def deployment_finished(self, result: DeploymentResult, done: int, total: int) -> None:
        from ocicopy.report import MirrorAction

        self.deployments_done = done
        self.failed += result.action is MirrorAction.FAILED
        self._draw(force=True)

    def _line(self, now: float) -> str:
        rate = self.sent / max(now - self.started, 1e-6)
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"deployments {self.deployments_done}/{self.total} done{failed} · blobs {self.done} · "
            f"{human_bytes(self.sent)} sent · {human_bytes(rate)}/s"
        )


def _modes(report: MirrorReport) -> str:
    """``service mode``; for a fleet ``3 clusters, cluster mode`` or ``3 clusters: a cluster, b service``."""
    if len(report.clusters) <= 1 and report.mode is not None:
        return f"{report.mode.value} mode"
    if report.mode is not None:
        return f"{len(report.clusters)} clusters, {report.mode.value} mode"
    return f"{len(report.clusters)} clusters: " + ", ".join(f"{n} {c.mode.value}" for n, c in report.clusters.items())


def mirror_summary(report: MirrorReport) -> str:
    t = report.totals
    actions = ", ".join(f"{n} {a}" for a, n in t.deployments.items() if n)
    verb = "would send" if report.dry_run else "sent"
    return (
        f"{'dry run: ' if report.dry_run else ''}{len(report.deployments)} deployments in {report.seconds:.2f} s "
        f"({_modes(report)}): {actions}\n"
        f"blobs: {t.blobs_copied} copied, "
        + (f"{t.blobs_recompressed} recompressed, " if t.blobs_recompressed else "")
        + f"{t.blobs_mounted} mounted, {t.blobs_skipped} skipped; "
        f"{human_bytes(t.bytes_to_mirror)} {verb}; {t.requests} requests"
        + (_graph_line(report) if report.graph is not None else "")
    )


def _graph_line(report: MirrorReport) -> str:
    g = report.graph
    assert g is not None
    n = g.nodes
    return (
        f"\ngraph: {n['read']} source reads ({human_bytes(g.bytes_from_source)}), {n['upload']} uploads "
        f"({human_bytes(g.bytes_to_mirrors)}), {n['mount']} mounts, {n['manifest']} manifest PUTs, {n['tag']} tags"
    )


def prune_lines(report: PruneReport) -> list[str]:
    """What a prune removed (or, a dry run, would remove), per repository, then the totals."""
    lines = []
    would = "would go" if report.dry_run else "removed"
    for name, cluster in report.clusters.items():
        for repo in cluster.repositories:
            for tag, digest in sorted(repo.removed.items()):
                lines.append(f"{name}: {repo.repository}:{tag} {would} ({digest[:19]})")
            for tag, why in sorted(repo.shared.items()):
                lines.append(f"{name}: {repo.repository}:{tag} kept: its digest is also {why}'s")
            extra = len(repo.deletes) - len(set(repo.removed.values()))
            if extra > 0:
                lines.append(
                    f"{name}: {repo.repository}: {extra} more manifest(s) with them (children, referrers, revisions)"
                )
    lines.append(
        f"{'dry run: ' if report.dry_run else ''}{report.tags_removed} tags {would}, {report.manifests_deleted} "
        f"manifests {'to delete' if report.dry_run else 'deleted'}, {human_bytes(report.bytes_freed)} for the "
        f"registry's garbage collection; {report.requests} requests in {report.seconds:.2f} s"
    )
    return lines


class Log:
    """What the CLI says on stderr: ``ocicopy: error: ...`` lines, or with ``--log-format json`` one JSON object
    per line (``time``, ``level``, ``event``, ``message`` and the event's fields) for a pipeline's log system."""

    def __init__(self, format: str = "text", stream: TextIO | None = None) -> None:
        self.json = format == "json"
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr  # looked up at use: tests and redirections replace sys.stderr

    def error(self, message: str, **fields: object) -> None:
        self._say("error", message, fields)

    def warning(self, message: str, **fields: object) -> None:
        self._say("warning", message, fields)

    def event(self, event: str, **fields: object) -> None:
        """A structured event (a deployment finished, a run's summary): JSON logs only."""
        if self.json:
            self._emit("info", event, None, fields)

    def _say(self, level: str, message: str, fields: dict[str, object]) -> None:
        text = " ".join(message.split())
        if self.json:
            self._emit(level, level, text, fields)
        else:
            print(f"ocicopy: {level}: {text}", file=self.stream, flush=True)

    def _emit(self, level: str, event: str, message: str | None, fields: dict[str, object]) -> None:
        import json
        from datetime import UTC, datetime

        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record: dict[str, object] = {"time": now, "level": level, "event": event}
        if message is not None:
            record["message"] = message
        record.update(fields)
        print(json.dumps(record, default=str, separators=(",", ":")), file=self.stream, flush=True)


class MirrorJsonLines:
    """``--log-format json`` progress: one ``deployment`` event per finished deployment."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def deployment_finished(self, result: DeploymentResult, done: int, total: int) -> None:
        self.log.event("deployment", done=done, total=total, **result.model_dump(mode="json"))
