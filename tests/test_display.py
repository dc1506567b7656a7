"""Human output: the progress line and the copy summary."""

from __future__ import annotations

import io

from ocicopy.digest import Digest
from ocicopy.display import (
    MirrorLines,
    MirrorTerminal,
    TerminalProgress,
    copy_summary,
    deployment_line,
    human_bytes,
    mirror_summary,
)
from ocicopy.plan import Mode
from ocicopy.report import DeploymentResult, MirrorAction, MirrorReport, totals_of
from ocicopy.result import BlobAction, BlobResult, CopyAction, CopyResult, ManifestResult

D1 = Digest("sha256:" + "1" * 64)
D2 = Digest("sha256:" + "2" * 64)


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 5 * 1024 * 1024, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


def test_progress_line_counts_bytes_and_actions_and_clears_itself() -> None:
    out = io.StringIO()
    progress = TerminalProgress(out, interval=0.0)
    progress.blob_started(D1, 2048)
    progress.blob_advanced(D1, 1024)
    progress.blob_advanced(D1, 1024)
    progress.blob_finished(BlobResult(digest=D1, size=2048, media_type="x", action=BlobAction.COPIED, bytes_sent=2048))
    progress.blob_finished(BlobResult(digest=D2, size=10, media_type="x", action=BlobAction.MOUNTED))
    last = out.getvalue().split("\r")[-1]
    assert "blobs 2 done (1 copied, 1 mounted, 0 skipped)" in last
    assert "2.0 KiB of 2.0 KiB streamed" in last
    progress.close()
    assert out.getvalue().endswith("\r") and out.getvalue().split("\r")[-2].strip() == ""


def test_copy_summary_reports_counts_and_pinned_reference() -> None:
    result = CopyResult(
        source="127.0.0.1:5000/a:1",
        destination="127.0.0.1:5001/m/a:1",
        source_digest=D1,
        digest=D2,
        media_type="application/vnd.oci.image.manifest.v1+json",
        action=CopyAction.COPIED,
        transformed=True,
        platforms=["linux/arm64"],
        blobs=[
            BlobResult(digest=D1, size=100, media_type="x", action=BlobAction.COPIED, bytes_sent=100),
            BlobResult(digest=D2, size=5, media_type="x", action=BlobAction.SKIPPED),
        ],
        manifests=[ManifestResult(digest=D2, media_type="x", size=3, action=BlobAction.COPIED, reference="1")],
        seconds=1.5,
        requests=9,
    )
    text = copy_summary(result)
    assert "1 copied, 0 mounted, 1 skipped; 100 B sent" in text
    assert "platform subset linux/arm64" in text
    assert f"pinned     127.0.0.1:5001/m/a@{D2}" in text
    assert result.totals.manifests_pushed == 1 and result.totals.bytes_sent == 100


def _deployment(action: MirrorAction, **kw: object) -> DeploymentResult:
    base: dict[str, object] = {
        "service": "api",
        "environment": "prod",
        "source": "ghcr.io/acme/api:1",
        "destination": "m.example/mirror/api:t",
        "action": action,
    }
    return DeploymentResult.model_validate(base | kw)


def test_deployment_lines_say_action_target_and_counts() -> None:
    copied = _deployment(
        MirrorAction.COPIED, pinned=f"m.example/mirror/api@{D1}", blobs_copied=2, blobs_mounted=1, bytes_to_mirror=2048
    )
    line = deployment_line(copied)
    assert line.startswith("copied") and "api/prod" in line and f"@{D1}" in line
    assert "(2 copied, 1 mounted, 0 skipped, 2.0 KiB" in line
    failed = deployment_line(_deployment(MirrorAction.FAILED, error="HEAD x: HTTP 404"))
    assert failed.startswith("failed") and failed.endswith(": HEAD x: HTTP 404")


def test_mirror_progress_outputs() -> None:
    lines = io.StringIO()
    MirrorLines(lines).deployment_finished(_deployment(MirrorAction.SKIPPED), 1, 3)
    assert lines.getvalue().count("\n") == 1 and lines.getvalue().startswith("skipped")
    tty = io.StringIO()
    live = MirrorTerminal(3, tty, interval=0.0)
    live.blob_advanced(D1, 4096)
    live.deployment_finished(_deployment(MirrorAction.FAILED), 2, 3)
    assert "deployments 2/3 done, 1 failed" in tty.getvalue().split("\r")[-1]
    assert "4.0 KiB sent" in tty.getvalue().split("\r")[-1]


def test_mirror_summary_counts_actions() -> None:
    results = [_deployment(MirrorAction.COPIED, bytes_to_mirror=10), _deployment(MirrorAction.SKIPPED)]
    report = MirrorReport(mode=Mode.CLUSTER, seconds=1.0, totals=totals_of(results, 7), deployments=results)
    text = mirror_summary(report)
    assert "2 deployments" in text and "1 copied, 1 skipped" in text and "7 requests" in text and "10 B sent" in text
