"""``ocicopy mirror``, ``build-key`` and ``lookup`` as real subprocesses against real registries.

Each run is a fresh process, so what one run leaves in the mirror (images, the blob ledger) is all the next
one knows. The module starts its own source and mirror registries; every test uses its own mirror prefix.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import ocicopy
from harness import images as im
from harness.oracle import skopeo_digest
from harness.registry import (
    RegistryServer,
    blob_gets,
    blob_uploads,
    for_repo,
    manifest_puts,
    mounts,
    start_registry,
)
from ocicopy import BuildSpec, MirrorReport, build_key
from ocicopy.report import read_lock
from tests.test_mirror_registry import (
    CLUSTER,
    Fleet,
    MakeRepo,
    Pair,
    Window,
    fleet_deployments,
    ledger_repo,
    new_image,
    new_prefix,
    outside,
    pinned_ref,
    plan_data,
    seed_fleet,
    upload_puts_201,
    writes,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with (
        start_registry(tmp_path_factory.mktemp("mirror-cli-source")) as source,
        start_registry(tmp_path_factory.mktemp("mirror-cli-mirror")) as mirror,
    ):
        yield Pair(source, mirror)


@pytest.fixture
def ocicopy_run(tmp_path: Path) -> Run:
    """``python -m ocicopy ARGS`` in a fresh process with an empty HOME; bytes out, never raises."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "REGISTRY_AUTH"))}
    env["HOME"] = str(tmp_path)
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "ocicopy", *args],
            capture_output=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )

    return run


def write_plan(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def stdout_report(proc: subprocess.CompletedProcess[bytes]) -> MirrorReport:
    return MirrorReport.model_validate_json(proc.stdout)


def plain(*servers: RegistryServer) -> list[str]:
    return [arg for s in servers for arg in ("--plain-http", s.host)]


def one_error_line(stderr: bytes) -> str:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr.decode()}"
    assert lines[0].startswith("ocicopy: error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------- 4. cross-run mounts


def test_second_process_mounts_everything_via_the_ledger(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("cross-run")

    def plan(path: str, services: dict[str, str]) -> str:
        deployments = [
            {"service": new, "environment": "prod", "image": fleet.ref(old, "v1")} for new, old in services.items()
        ]
        return write_plan(tmp_path / path, plan_data(pair, prefix, deployments, mode="service"))

    first = ocicopy_run("mirror", plan("a.json", {"alpha": "api", "beta": "web"}), "--json", "-")
    assert first.returncode == 0, first.stderr.decode()
    assert {d.action.value for d in stdout_report(first).deployments} == {"copied"}

    # a new process, new services (new mirror repositories), the same source images
    window = Window(pair)
    second = ocicopy_run("mirror", plan("b.json", {"gamma": "api", "delta": "web"}), "--json", "-")
    src_log, mirror_log = window.close()

    assert second.returncode == 0, second.stderr.decode()
    report = stdout_report(second)
    assert {d.action.value for d in report.deployments} == {"copied"}
    assert blob_gets(src_log) == [], "the second run read blobs from the source"
    ledger = ledger_repo(prefix)
    assert outside(blob_uploads(mirror_log), ledger) == [], "the second run uploaded image blobs"
    assert len(blob_uploads(for_repo(mirror_log, ledger))) <= 2  # its own JSON blob (+ the empty config if new)
    for service, source_service in (("gamma", "api"), ("delta", "web")):
        repo = f"{prefix}/{service}"
        mounted = {e.param("mount") for e in mounts(for_repo(mirror_log, repo))}
        assert mounted == set(fleet.images[(source_service, "v1")].blobs()), f"{repo} did not mount every blob"
    assert report.totals.blobs_mounted == len(mounts(mirror_log))
    assert report.totals.blobs_copied == 0
    for d in report.deployments:
        assert skopeo_digest(pinned_ref(d.pinned)) == d.source_digest

    # control: the same again without the ledger uploads (so the ledger is what made the mounts possible)
    window = Window(pair)
    third = ocicopy_run("mirror", plan("c.json", {"epsilon": "api", "zeta": "web"}), "--json", "-", "--no-ledger")
    src_log, mirror_log = window.close()

    assert third.returncode == 0, third.stderr.decode()
    control = stdout_report(third)
    assert {d.action.value for d in control.deployments} == {"copied"}
    assert for_repo(mirror_log, ledger) == [], "--no-ledger touched the ledger"
    uploads = upload_puts_201(mirror_log)
    own_layers = {im.sha256(b) for img in fleet.images.values() if isinstance(img, im.Image) for b in img.layers[1:]}
    assert len(own_layers) == 2 and own_layers <= {e.param("digest") for e in uploads}
    assert control.totals.blobs_copied == len(uploads) > 0
    assert blob_gets(src_log) != []


# --------------------------------------------------------------------------- 7. build cache


def test_build_needed_then_cached(ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path) -> None:
    build: dict[str, Any] = {
        "repository": "https://github.com/acme/worker.git",
        "commit": COMMIT,
        "env": {"NODE_ENV": "production"},
        "build_args": {"VERSION": "1.4.2"},
        "dockerfile": "./Dockerfile",
        "target": "runtime",
    }
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("build")
    deployments: list[dict[str, Any]] = [
        {"service": "worker", "environment": "prod", "build": build},
        {"service": "api", "environment": "prod", "image": fleet.ref("api", "v1")},
    ]
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments))
    key = build_key(BuildSpec.model_validate(build))
    destination = f"{pair.mirror.host}/{prefix}/worker:{key}"

    cli_key = ocicopy_run(
        "build-key",
        "--repository",
        build["repository"],
        "--commit",
        COMMIT,
        "--env",
        "NODE_ENV=production",
        "--build-arg",
        "VERSION=1.4.2",
        "--dockerfile",
        "./Dockerfile",
        "--target",
        "runtime",
    )
    assert cli_key.returncode == 0, cli_key.stderr.decode()
    assert cli_key.stdout.decode().strip() == key

    window = Window(pair)
    needed = ocicopy_run("mirror", plan, "--json", "-")
    _, mirror_log = window.close()
    assert needed.returncode == 0, needed.stderr.decode()
    worker = stdout_report(needed).deployments[0]
    assert worker.action.value == "build-needed"
    assert worker.destination == destination
    assert worker.build_key == key and worker.pinned is None
    assert [(e.method, e.status) for e in for_repo(mirror_log, f"{prefix}/worker")] == [("HEAD", 404)]

    missing = ocicopy_run("lookup", destination, *plain(pair.mirror), "--no-docker-config")
    assert missing.returncode == 3, missing.stderr.decode()
    assert missing.stdout == b""

    # the CI builds and pushes to exactly that destination
    built = new_image()
    im.push(pair.mirror, f"{prefix}/worker", key, built)

    cached = ocicopy_run("mirror", plan, "--json", "-", "--lock", "lock.json")
    assert cached.returncode == 0, cached.stderr.decode()
    worker = stdout_report(cached).deployments[0]
    assert worker.action.value == "build-cached"
    assert worker.pinned == f"{pair.mirror.host}/{prefix}/worker@{built.digest}"
    assert worker.source_digest == built.digest
    lock = json.loads((tmp_path / "lock.json").read_text())
    builds = [(e["build_key"], e["pinned"]) for e in lock["deployments"] if e["build_key"] is not None]
    assert builds == [(key, worker.pinned)]

    found = ocicopy_run("lookup", destination, *plain(pair.mirror), "--no-docker-config")
    assert found.returncode == 0, found.stderr.decode()
    assert found.stdout.decode().strip() == built.digest
    other = ocicopy_run("lookup", f"{pair.mirror.host}/{prefix}/worker:no-such-key", *plain(pair.mirror))
    assert other.returncode == 3


# --------------------------------------------------------------------------- 9. a dry run writes nothing but its lock


def test_dry_run_writes_nothing(ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("cli-dry-run")
    deployments = fleet_deployments(fleet, ("api", "web"), {"prod": "v1"})
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments))

    window = Window(pair)
    proc = ocicopy_run("mirror", plan, "--dry-run", "--lock", "lock.json", "--json", "-")
    src_log, mirror_log = window.close()

    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert report.dry_run is True
    assert [d.action.value for d in report.deployments] == ["copied", "copied"]
    lock = json.loads((tmp_path / "lock.json").read_text())  # the predicted lock: what the run would pin
    assert lock["dry_run"] is True
    assert {e["service"]: e["pinned"] for e in lock["deployments"]} == {
        s: f"{pair.mirror.host}/{prefix}/{s}@{fleet.digest(s, 'v1')}" for s in ("api", "web")
    }
    assert writes(mirror_log) == [] and writes(src_log) == []
    assert blob_gets(src_log) == []


# --------------------------------------------------------------------------- 10. lock file and JSON report


def test_lock_file_pins_every_source(ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web", "worker"), tags=("v1", "v2"))
    prefix = new_prefix("lock")
    deployments = fleet_deployments(fleet, ("api", "web", "worker"), {"dev": "v2", "prod": "v1"})
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments, mode="cluster"))

    proc = ocicopy_run("mirror", plan, "--lock", "lock.json", "--json", "report.json")

    assert proc.returncode == 0, proc.stderr.decode()
    report = MirrorReport.model_validate_json((tmp_path / "report.json").read_text())
    assert len(report.deployments) == len(deployments) and report.ok
    lock = json.loads((tmp_path / "lock.json").read_text())
    assert lock["version"] == 2 and lock["run_id"] == report.run_id
    by_source = fleet.by_source()
    entries = lock["deployments"]
    assert {(e["service"], e["environment"]) for e in entries} == {
        (d["service"], d["environment"]) for d in deployments
    }
    for entry in entries:
        assert entry["cluster"] == CLUSTER and entry["build_key"] is None
        assert entry["pinned"].startswith(f"{pair.mirror.host}/{prefix}/{CLUSTER}@")
        assert skopeo_digest(pinned_ref(entry["pinned"])) == by_source[entry["source"]].digest
    assert {(d.service, d.environment): d.pinned for d in report.deployments} == {
        (e["service"], e["environment"]): e["pinned"] for e in entries
    }


# --------------------------------------------------------------------------- 11. failures


def test_one_failing_deployment_exit_1(ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("failing")
    missing = fleet.ref("api", "no-such-tag")
    deployments = fleet_deployments(fleet, ("api", "web"), {"prod": "v1"})
    deployments.insert(1, {"service": "ghost", "environment": "prod", "image": missing})
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments))

    proc = ocicopy_run("mirror", plan, "--json", "-")

    assert proc.returncode == 1, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    report = stdout_report(proc)
    api, ghost, web = report.deployments
    assert ghost.action.value == "failed"
    assert ghost.error is not None and missing in ghost.error, ghost.error
    assert ghost.pinned is None
    assert (api.action.value, web.action.value) == ("copied", "copied")
    assert skopeo_digest(pinned_ref(api.pinned)) == fleet.digest("api", "v1")
    assert skopeo_digest(pinned_ref(web.pinned)) == fleet.digest("web", "v1")
    assert report.totals.deployments["failed"] == 1
    assert f"ocicopy: error: ghost/prod: {missing}" in proc.stderr.decode()  # the reason for exit 1, on stderr too


def test_invalid_plan_exit_2_without_a_request(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    deployments = [
        {"service": "api", "environment": "prod", "image": fleet.ref("api", "v1")},
        {"service": "Bad Name", "environment": "prod", "image": fleet.ref("api", "v1")},
    ]
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, new_prefix("invalid"), deployments))

    window = Window(pair)
    proc = ocicopy_run("mirror", plan, "--json", "-")
    src_log, mirror_log = window.close()

    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "deployments[1]" in line and "service" in line, line
    assert proc.stdout == b""
    assert src_log == [] and mirror_log == []


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--blob-concurrency", "500"], "--blob-concurrency must be between 1 and 128 (got 500)"),
        (["--blob-concurrency", "0"], "--blob-concurrency must be between 1 and 128 (got 0)"),
        (["--concurrency", "0"], "--concurrency must be between 1 and 1024"),
        (["--immutable-tags", "v[0-"], "--immutable-tags is not a regular expression"),
    ],
    ids=["blob-concurrency-high", "blob-concurrency-zero", "concurrency-zero", "immutable-tags"],
)
def test_bad_flag_exit_2_without_a_request(
    flags: list[str], needle: str, ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    deployments = [{"service": "api", "environment": "prod", "image": fleet.ref("api", "v1")}]
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, new_prefix("bad-flag"), deployments))

    window = Window(pair)
    proc = ocicopy_run("mirror", plan, "--json", "-", *flags)
    src_log, mirror_log = window.close()

    assert proc.returncode == 2, proc.stderr.decode()
    assert needle in one_error_line(proc.stderr)
    assert proc.stdout == b""
    assert src_log == [] and mirror_log == []


# --------------------------------------------------------------------------- 12. --mode


def test_mode_service_overrides_a_cluster_plan(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet: Fleet = seed_fleet(pair.source, make_repo, services=("api", "web"), tags=("v1",))
    prefix = new_prefix("mode-override")
    deployments = fleet_deployments(fleet, ("api", "web"), {"prod": "v1"})
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments, mode="cluster"))

    window = Window(pair)
    proc = ocicopy_run("mirror", plan, "--mode", "service", "--json", "-")
    _, mirror_log = window.close()

    assert proc.returncode == 0, proc.stderr.decode()
    report = stdout_report(proc)
    assert report.mode.value == "service"
    for d in report.deployments:
        assert d.destination.startswith(f"{pair.mirror.host}/{prefix}/{d.service}:"), d.destination
        assert d.pinned is not None and d.pinned.startswith(f"{pair.mirror.host}/{prefix}/{d.service}@")
        assert skopeo_digest(pinned_ref(d.pinned)) == fleet.digest(d.service, "v1")
    assert for_repo(mirror_log, f"{prefix}/{CLUSTER}") == [], "the cluster repository was used"
    put_repos = {e.repo for e in manifest_puts(mirror_log)}
    assert put_repos == {f"{prefix}/api", f"{prefix}/web", ledger_repo(prefix)}


# --------------------------------------------------------------------------- 12. the lock file, by deployment


def test_two_services_on_one_source_get_a_lock_entry_each(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """Service mode, two services deploying the same source: each has its own repository, so its own pin (the
    format-1 lock kept one entry per source, pointing at whichever service came last)."""
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("lock-by-deployment")
    image = fleet.ref("api", "v1")
    deployments = [
        {"service": "api", "environment": "prod", "image": image},
        {"service": "api-canary", "environment": "prod", "image": image},
    ]
    plan = write_plan(tmp_path / "plan.json", plan_data(pair, prefix, deployments))
    proc = ocicopy_run("mirror", plan, "--lock", "-", "-q")
    assert proc.returncode == 0, proc.stderr.decode()
    lock = json.loads(proc.stdout)  # --lock -: the lock on stdout, nothing else there
    pins = {e["service"]: e["pinned"] for e in lock["deployments"]}
    digest = fleet.digest("api", "v1")
    assert pins == {s: f"{pair.mirror.host}/{prefix}/{s}@{digest}" for s in ("api", "api-canary")}
    assert {e["cluster"] for e in lock["deployments"]} == {"default"}  # a service-mode plan names no cluster
    (tmp_path / "lock.json").write_bytes(proc.stdout)
    jq = subprocess.run(
        ["jq", "-r", '.deployments[] | select(.service == "api-canary" and .environment == "prod") | .pinned'],
        stdin=(tmp_path / "lock.json").open("rb"),
        capture_output=True,
        check=True,
    )
    assert jq.stdout.decode().strip() == pins["api-canary"]


def test_a_lock_file_of_either_format_is_read(tmp_path: Path) -> None:
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"version": 1, "images": {"a/b:1": "m/x@sha256:" + "1" * 64}, "builds": {"k": None}}))
    lock = read_lock(old)
    assert lock.version == 1
    assert [(e.source, e.build_key, e.pinned) for e in lock.deployments] == [
        ("a/b:1", None, "m/x@sha256:" + "1" * 64),
        (None, "k", None),
    ]
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 7}')
    with pytest.raises(ocicopy.InputError, match="not an ocicopy lock file"):
        read_lock(bad)


@pytest.mark.parametrize("where", ["missing-dir", "a-directory", "under-a-file"])
@pytest.mark.parametrize("flag", ["--lock", "--json"])
def test_output_paths_are_checked_before_anything_is_sent(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path, flag: str, where: str
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("paths")
    plan = write_plan(
        tmp_path / "plan.json", plan_data(pair, prefix, fleet_deployments(fleet, ("api",), {"prod": "v1"}))
    )
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-directory").mkdir()
    target = {"missing-dir": "no/such/dir/out.json", "a-directory": "a-directory", "under-a-file": "a-file/out.json"}
    window = Window(pair)
    proc = ocicopy_run("mirror", plan, flag, target[where])
    _, mirror_log = window.close()
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert flag in line and "unexpected" not in line
    assert mirror_log == []  # checked before the run


def test_files_are_written_with_the_umask_permissions(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("perms")
    plan = write_plan(
        tmp_path / "plan.json", plan_data(pair, prefix, fleet_deployments(fleet, ("api",), {"prod": "v1"}))
    )
    old = os.umask(0o022)
    try:
        proc = ocicopy_run("mirror", plan, "--lock", "lock.json", "--json", "report.json", "-q")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr.decode()
    for name in ("lock.json", "report.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_failing_quiet_mirror_still_says_why(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    prefix = new_prefix("quiet-failure")
    missing = fleet.ref("api", "no-such-tag")
    plan = write_plan(
        tmp_path / "plan.json", plan_data(pair, prefix, [{"service": "api", "environment": "prod", "image": missing}])
    )
    proc = ocicopy_run("mirror", plan, "-q")
    assert proc.returncode == 1
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert f"api/prod: {missing}: manifest unknown" in err, err


def test_a_lock_named_by_a_symbolic_link_is_written_through_it(
    ocicopy_run: Run, pair: Pair, make_repo: MakeRepo, tmp_path: Path
) -> None:
    fleet = seed_fleet(pair.source, make_repo, services=("api",), tags=("v1",))
    plan = write_plan(
        tmp_path / "plan.json",
        plan_data(pair, new_prefix("symlink"), fleet_deployments(fleet, ("api",), {"prod": "v1"})),
    )
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "prod.json").write_text("{}")
    (tmp_path / "lock.json").symlink_to(Path("locks") / "prod.json")
    proc = ocicopy_run("mirror", plan, "--lock", "lock.json", "--dry-run", "-q")
    assert proc.returncode == 0, proc.stderr.decode()
    assert (tmp_path / "lock.json").is_symlink()  # was: replaced by a file, the link's target left as it was
    lock = read_lock(tmp_path / "locks" / "prod.json")
    assert [e.source for e in lock.deployments] == [fleet.ref("api", "v1")]
