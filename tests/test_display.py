"""Human output: the progress line and the copy summary."""

from __future__ import annotations

import io

from ocicopy.digest import Digest
from ocicopy.display import TerminalProgress, copy_summary, human_bytes
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
