"""``--log-format json`` (issue 13): what a pipeline's log system reads on stderr, one JSON object per line, with
the same facts as the JSON report; errors as JSON too, still one line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness import images
from harness.fake_registry import FakeRegistry
from ocicopy.report import MirrorReport


def _records(stderr: bytes) -> list[dict[str, object]]:
    lines = stderr.decode().splitlines()
    assert lines, "nothing logged"
    return [json.loads(line) for line in lines]  # every line is a JSON object


def test_a_mirror_run_logs_its_deployments_and_its_summary(tmp_path: Path) -> None:
    with FakeRegistry() as source, FakeRegistry() as mirror:
        source.seed("lib/app", "v1", images.make_image([images.layer(4701, 900)]))
        source.seed("lib/web", "v1", images.make_image([images.layer(4702, 900)]))
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({
            "mirror": {"registry": mirror.host, "prefix": "m"},
            "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
            "deployments": [
                {"service": "app", "environment": "prod", "image": f"{source.host}/lib/app:v1"},
                {"service": "web", "environment": "prod", "image": f"{source.host}/lib/web:v1"},
                {"service": "gone", "environment": "prod", "image": f"{source.host}/lib/gone:v1"},
            ],
        }))  # fmt: skip
        argv = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--log-format", "json"]
        proc = subprocess.run([*argv, "--json", "report.json"], capture_output=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1  # one deployment fails
    assert proc.stdout == b""  # the text lines and summary give way to the log
    report = MirrorReport.model_validate_json((tmp_path / "report.json").read_text())
    records = _records(proc.stderr)
    assert all({"time", "level", "event"} <= set(r) for r in records)
    done = {r["service"]: r for r in records if r["event"] == "deployment"}
    assert set(done) == {"app", "web", "gone"}
    for d in report.deployments:
        assert done[d.service]["pinned"] == d.pinned and done[d.service]["action"] == d.action.value
    (run,) = [r for r in records if r["event"] == "run"]
    assert run["run_id"] == report.run_id and run["ok"] is False
    assert run["totals"] == json.loads(report.totals.model_dump_json())
    (error,) = [r for r in records if r["level"] == "error"]
    assert error["service"] == "gone" and "gone" in str(error["message"])


def test_a_usage_error_is_one_json_line(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"mirror": {"registry": "127.0.0.1:9"}, "deployments": []}')
    argv = [sys.executable, "-m", "ocicopy", "mirror", str(plan), "--log-format", "json"]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    assert proc.returncode == 2
    (record,) = _records(proc.stderr)
    assert record["level"] == "error" and record["exit"] == 2 and "deployments" in str(record["message"])
