"""Metrics (issue 13): ``--metrics FILE`` (node exporter's textfile collector) and ``--metrics-push URL`` (a real
Pushgateway process) on ``mirror``, ``copy`` and ``prune``, run as real processes against real registries; every
value compared with the JSON report of the same run. The builder, pure, with hypothesis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from harness import images as im
from harness.pushgateway import Pushgateway
from ocicopy.metrics import LAST_SUCCESS, Run, metrics_of, render
from ocicopy.pruning import PruneReport
from ocicopy.report import ClusterReport, DeploymentResult, MirrorAction, MirrorReport, totals_of
from ocicopy.result import CopyResult
from tests.test_fleet import Fleet, deployments_of, fleet, fleet_plan
from tests.test_mirror_cli import Run as Proc
from tests.test_mirror_cli import ocicopy_run, one_error_line, pair, write_plan
from tests.test_mirror_registry import MakeRepo, Pair, new_image, new_prefix, plan_data, seed_fleet

__all__ = ["fleet", "ocicopy_run", "pair"]  # the fixtures, shared

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition: (name, labels) → value; samples with a timestamp refused."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert s.timestamp is None, f"{s.name} has a timestamp: the textfile collector refuses it"
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no {name}{labels} in {sorted(k for k in found if k[0] == name)}"
    return found[key]


def check_mirror(found: Samples, report: MirrorReport, **extra: str) -> None:
    """Every per-cluster and per-registry number of ``report`` is in ``found`` as it is in the JSON."""
    labels = {"command": "mirror", **extra}
    assert report.clusters
    for name, cluster in report.clusters.items():
        mine = [d for d in report.deployments if d.cluster == name]
        for action in MirrorAction:
            want = sum(1 for d in mine if d.action is action)
            assert value(found, "ocicopy_deployments", **labels, cluster=name, action=action.value) == want
        t = cluster.totals
        for action in ("copied", "mounted", "skipped", "recompressed"):
            got = value(found, "ocicopy_blobs", **labels, cluster=name, action=action)
            assert got == getattr(t, f"blobs_{action}")
        assert value(found, "ocicopy_bytes_from_source", **labels, cluster=name) == t.bytes_from_source
        assert value(found, "ocicopy_bytes_to_mirror", **labels, cluster=name) == t.bytes_to_mirror
        assert value(found, "ocicopy_requests", **labels, cluster=name) == t.requests
        assert value(found, "ocicopy_failures", **labels, cluster=name) == sum(1 for d in mine if d.error)
    assert value(found, "ocicopy_run_bytes_from_source", **labels) == report.totals.bytes_from_source
    assert value(found, "ocicopy_run_requests", **labels) == report.totals.requests
    for host, stats in report.registries.items():
        assert value(found, "ocicopy_registry_requests", **labels, registry=host) == stats.requests
        assert value(found, "ocicopy_registry_retries", **labels, registry=host) == stats.retries
        assert value(found, "ocicopy_registry_throttled", **labels, registry=host) == stats.throttled


# --------------------------------------------------------------------------- textfile


def test_a_fleet_mirror_writes_the_reports_numbers(
    fleet: Fleet, make_repo: MakeRepo, ocicopy_run: Proc, tmp_path: Path
) -> None:
    images = seed_fleet(fleet.source, make_repo, services=("api", "web"), tags=("v1", "v2"))
    plan = write_plan(tmp_path / "plan.json", fleet_plan(fleet, new_prefix("met"), deployments_of(images)))
    out = tmp_path / "textfile"
    out.mkdir()
    before = time.time()
    proc = ocicopy_run("mirror", plan, "--json", "report.json", "--metrics", str(out / "ocicopy-mirror.prom"))
    assert proc.returncode == 0, proc.stderr.decode()
    report = MirrorReport.model_validate_json((tmp_path / "report.json").read_text())
    text = (out / "ocicopy-mirror.prom").read_text()
    assert text.endswith("\n") and "# TYPE ocicopy_deployments gauge" in text
    assert sorted(p.name for p in out.iterdir()) == ["ocicopy-mirror.prom"]  # written via a rename: no temp left
    found = samples(text)
    check_mirror(found, report)
    assert len(report.clusters) == 3 and report.totals.deployments["copied"] == len(report.deployments)
    assert value(found, "ocicopy_last_run_success", command="mirror") == 1
    assert value(found, "ocicopy_run_exit_code", command="mirror") == 0
    assert value(found, "ocicopy_run_dry_run", command="mirror") == 0
    success = value(found, LAST_SUCCESS, command="mirror")
    assert before <= success <= time.time() and success == value(found, "ocicopy_last_run_timestamp_seconds",
                                                                  command="mirror")  # fmt: skip
    assert value(found, "ocicopy_run_duration_seconds", command="mirror") > 0


def good_and_bad(pair: Pair, make_repo: MakeRepo, tmp_path: Path, label: str) -> tuple[str, str]:
    """Two plans of one deployment into one mirror prefix: its source tag exists (good), or does not (bad)."""
    repo = make_repo(f"{label}-src")
    im.push(pair.source, repo, "v1", new_image())
    prefix = new_prefix(label)
    plans = []
    for name, tag in (("good", "v1"), ("bad", "nope")):
        deployment = {"service": "app", "environment": "prod", "image": f"{pair.source.host}/{repo}:{tag}"}
        plans.append(write_plan(tmp_path / f"{name}.json", plan_data(pair, prefix, [deployment])))
    return plans[0], plans[1]


def test_a_failed_run_keeps_the_last_success(
    pair: Pair, make_repo: MakeRepo, ocicopy_run: Proc, tmp_path: Path
) -> None:
    """Exit 1 (a source tag that does not exist): the run says it failed, which cluster, and the previous
    success's time stays in the file. A bad plan (exit 2) is a failed run too."""
    good, bad = good_and_bad(pair, make_repo, tmp_path, "metfail")
    prom = str(tmp_path / "m.prom")
    assert ocicopy_run("mirror", good, "--metrics", prom).returncode == 0
    success = value(samples(Path(prom).read_text()), LAST_SUCCESS, command="mirror")

    failed = ocicopy_run("mirror", bad, "--metrics", prom, "--json", "-")
    assert failed.returncode == 1, failed.stderr.decode()
    report = MirrorReport.model_validate_json(failed.stdout)
    found = samples(Path(prom).read_text())
    check_mirror(found, report)
    assert value(found, "ocicopy_last_run_success", command="mirror") == 0
    assert value(found, "ocicopy_run_exit_code", command="mirror") == 1
    assert value(found, "ocicopy_failures", command="mirror", cluster=report.deployments[0].cluster) == 1
    assert value(found, LAST_SUCCESS, command="mirror") == success
    assert value(found, "ocicopy_last_run_timestamp_seconds", command="mirror") > success

    (tmp_path / "broken.json").write_text("{not json")
    broken = ocicopy_run("mirror", str(tmp_path / "broken.json"), "--metrics", prom)
    assert broken.returncode == 2, broken.stderr.decode()
    found = samples(Path(prom).read_text())
    assert value(found, "ocicopy_run_exit_code", command="mirror") == 2
    assert value(found, LAST_SUCCESS, command="mirror") == success
    assert not [k for k in found if k[0] == "ocicopy_deployments"]  # no report: no made-up counts


def test_copy_and_prune_write_theirs(pair: Pair, make_repo: MakeRepo, ocicopy_run: Proc, tmp_path: Path) -> None:
    src, dst = make_repo("met-copy"), make_repo("met-copy-dst")
    im.push(pair.source, src, "v1", new_image())
    hosts = ["--plain-http", pair.source.host, "--plain-http", pair.mirror.host]
    copied = ocicopy_run("copy", f"{pair.source.host}/{src}:v1", f"{pair.mirror.host}/{dst}:v1", *hosts, "--json",
                         "--metrics", "copy.prom")  # fmt: skip
    assert copied.returncode == 0, copied.stderr.decode()
    result = CopyResult.model_validate_json(copied.stdout)
    found = samples((tmp_path / "copy.prom").read_text())
    assert value(found, "ocicopy_blobs", command="copy", cluster="", action="copied") == result.totals.blobs_copied
    assert result.totals.blobs_copied == 2  # config and layer
    assert value(found, "ocicopy_bytes_to_mirror", command="copy", cluster="") == result.totals.bytes_sent > 0
    assert value(found, "ocicopy_run_requests", command="copy") == result.requests
    for host, stats in result.registries.items():
        assert value(found, "ocicopy_registry_requests", command="copy", registry=host) == stats.requests

    # prune: v1 mirrored, the plan moved to v2: a dry run says v1's tag would go
    repo = make_repo("met-prune")
    for tag in ("v1", "v2"):
        im.push(pair.source, repo, tag, new_image())
    prefix = new_prefix("metprune")

    def plan(tag: str) -> str:
        return write_plan(tmp_path / f"{tag}.json", plan_data(pair, prefix, [
            {"service": "app", "environment": "prod", "image": f"{pair.source.host}/{repo}:{tag}"}]))  # fmt: skip

    for tag in ("v1", "v2"):
        assert ocicopy_run("mirror", plan(tag)).returncode == 0
    pruned = ocicopy_run("prune", plan("v2"), "--dry-run", "--max-delete", "100%", "--json", "-", "--metrics",
                         "prune.prom")  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr.decode()
    report = PruneReport.model_validate_json(pruned.stdout)
    found = samples((tmp_path / "prune.prom").read_text())
    ((name, cluster),) = report.clusters.items()
    assert value(found, "ocicopy_prune_tags_removed", command="prune", cluster=name) == cluster.tags_removed == 1
    got = value(found, "ocicopy_prune_manifests_deleted", command="prune", cluster=name)
    assert got == cluster.manifests_deleted
    assert value(found, "ocicopy_prune_bytes_freed", command="prune", cluster=name) == cluster.bytes_freed > 0
    assert value(found, "ocicopy_prune_refused", command="prune") == 0
    assert value(found, "ocicopy_run_dry_run", command="prune") == 1
    assert value(found, "ocicopy_run_requests", command="prune") == report.requests


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metrics", "/no/such/dir/m.prom"], "--metrics /no/such/dir/m.prom: no directory /no/such/dir"),
        (["--metrics", "m.txt"], "name it *.prom"),
        (["--metrics", "."], "name it *.prom"),
        (["--metrics-push", "ftp://gateway:9091"], "is not an http(s) URL of a Pushgateway"),
        (["--metrics-instance", "ci"], "add --metrics-push URL"),
        (["--metrics", "r.prom", "--json", "r.prom"], "name one file"),
    ],
)
def test_bad_metrics_flags_are_exit_2_before_anything(
    pair: Pair, ocicopy_run: Proc, tmp_path: Path, flags: list[str], message: str
) -> None:
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, new_prefix("metbad"), [
        {"service": "app", "environment": "prod", "image": f"{pair.source.host}/none/such:v1"}]))  # fmt: skip
    marks = (pair.source.mark(), pair.mirror.mark())
    proc = ocicopy_run("mirror", plan, *flags)
    assert proc.returncode == 2, proc.stderr.decode()
    assert message in one_error_line(proc.stderr)
    assert pair.source.requests(marks[0]) == [] and pair.mirror.requests(marks[1]) == []
    assert not list(tmp_path.glob("*.prom"))


# --------------------------------------------------------------------------- Pushgateway


def gateway_samples(gateway: Pushgateway, instance: str) -> Samples:
    """The gateway's samples of ocicopy's group ``instance``, without the labels the gateway adds."""
    out: Samples = {}
    for (name, labels), v in samples(gateway.metrics()).items():
        d = dict(labels)
        if name.startswith("ocicopy_") and d.get("job") == "ocicopy" and d.get("instance") == instance:
            del d["job"], d["instance"]
            out[(name, frozenset(d.items()))] = v
    return out


def test_a_run_pushes_to_a_pushgateway(pair: Pair, make_repo: MakeRepo, ocicopy_run: Proc, tmp_path: Path) -> None:
    """A real gateway: the pushed values are the report's; a failed run's push keeps the gateway's last success
    (pushadd), and an unreachable gateway is a warning, not a failed run."""
    good, bad = good_and_bad(pair, make_repo, tmp_path, "metpush")
    with Pushgateway(tmp_path) as gateway:
        push = ["--metrics-push", gateway.url, "--metrics-instance", "ci-1"]
        proc = ocicopy_run("mirror", good, *push, "--json", "-")
        assert proc.returncode == 0, proc.stderr.decode()
        found = gateway_samples(gateway, "ci-1")
        check_mirror(found, MirrorReport.model_validate_json(proc.stdout))
        success = value(found, LAST_SUCCESS, command="mirror")
        assert value(found, "ocicopy_last_run_success", command="mirror") == 1

        failed = ocicopy_run("mirror", bad, *push)
        assert failed.returncode == 1, failed.stderr.decode()
        found = gateway_samples(gateway, "ci-1")
        assert value(found, "ocicopy_last_run_success", command="mirror") == 0
        assert value(found, LAST_SUCCESS, command="mirror") == success
        url = gateway.url
    unreachable = ocicopy_run("mirror", good, "--metrics-push", url)  # the gateway is gone
    assert unreachable.returncode == 0, unreachable.stderr.decode()
    assert f"ocicopy: warning: --metrics-push {url}: not pushed" in unreachable.stderr.decode()


# --------------------------------------------------------------------------- pure


def deployment(cluster: str, action: MirrorAction, n: int) -> DeploymentResult:
    failed = action is MirrorAction.FAILED
    return DeploymentResult(service=f"s{n}", environment="prod", cluster=cluster, source=f"r.example/s{n}:v1",
                            destination=f"m.example/s{n}:t", action=action, blobs_copied=n % 3,
                            blobs_mounted=n % 2, bytes_from_source=n * 100, bytes_to_mirror=n * 90,
                            error="it failed" if failed else None)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["eu", "us", "staging"]), st.sampled_from(list(MirrorAction))),
        min_size=1,
        max_size=30,
    )
)
def test_the_gauges_add_up_per_cluster(rows: list[tuple[str, MirrorAction]]) -> None:
    results = [deployment(c, a, i) for i, (c, a) in enumerate(rows)]
    clusters = {c: ClusterReport(mirror="m.example", mode="service",
                                                totals=totals_of([d for d in results if d.cluster == c], 0))
                for c in dict.fromkeys(c for c, _ in rows)}  # fmt: skip
    report = MirrorReport(mode=None, seconds=1.0, totals=totals_of(results, 7), clusters=clusters, deployments=results)
    found = samples(render(metrics_of(Run("mirror", report, 0 if report.ok else 1, 1e9, 1.0))))
    check_mirror(found, report)
    assert sum(v for (n, _), v in found.items() if n == "ocicopy_deployments") == len(results)
    assert value(found, "ocicopy_last_run_success", command="mirror") == (1 if report.ok else 0)
    assert ((LAST_SUCCESS, frozenset({("command", "mirror")})) in found) == report.ok  # no earlier success given


def test_a_run_without_a_report() -> None:
    found = samples(render(metrics_of(Run("copy", None, 1, 2e9, 0.5, previous_success=1e9))))
    assert {n for n, _ in found} == {"ocicopy_run_duration_seconds", "ocicopy_run_exit_code", LAST_SUCCESS,
                                     "ocicopy_last_run_success", "ocicopy_last_run_timestamp_seconds"}  # fmt: skip
    assert value(found, LAST_SUCCESS, command="copy") == 1e9
    assert value(found, "ocicopy_run_exit_code", command="copy") == 1
    assert value(found, "ocicopy_last_run_success", command="copy") == 0
