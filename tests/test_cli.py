"""The ``ocicopy`` command line, run as a real subprocess (``python -m ocicopy`` and the console script).

Exit codes: 0 ok, 1 failure, 2 usage error. Errors are one stderr line ``ocicopy: error: ...`` (argparse's
usage errors and every bad value of every subcommand included, refused before any request) without a
traceback unless ``--debug`` (before or after the command).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import images as im
from harness.oracle import docker_ref, skopeo_inspect, skopeo_inspect_raw
from harness.registry import RegistryServer, blob_uploads, manifest_puts

MakeRepo = Callable[[str], str]
_seeds = itertools.count(7000)
ROOT = Path(__file__).resolve().parents[1]


def _console_script() -> Path:
    """The ``ocicopy`` entry point installed next to the interpreter (the project's .venv/bin)."""
    for candidate in (Path(sys.executable).parent / "ocicopy", ROOT / ".venv" / "bin" / "ocicopy"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"console script `ocicopy` not found next to {sys.executable} nor in {ROOT}/.venv/bin")


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "REGISTRY_AUTH"))}
    env["HOME"] = str(tmp_path)  # no ~/.docker/config.json of the machine, even without --no-docker-config
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture
def ocicopy_run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run ``python -m ocicopy ARGS`` (or the console script with ``script=True``); bytes out, never raises."""

    def run(*args: str, script: bool = False) -> subprocess.CompletedProcess[bytes]:
        argv = [str(_console_script())] if script else [sys.executable, "-m", "ocicopy"]
        return subprocess.run(
            [*argv, *args], capture_output=True, cwd=tmp_path, env=_env(tmp_path), timeout=120, check=False
        )

    return run


Run = Callable[..., subprocess.CompletedProcess[bytes]]


def _image(n: int = 2) -> im.Image:
    return im.make_image([im.layer(next(_seeds), 1100 + 100 * i) for i in range(n)])


def _plain(*servers: RegistryServer) -> list[str]:
    return [arg for s in servers for arg in ("--plain-http", s.host)]


def _one_error_line(stderr: bytes) -> str:
    text = stderr.decode()
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{text}"
    assert lines[0].startswith("ocicopy: error: "), lines[0]
    assert "Traceback" not in text
    return lines[0]


# --------------------------------------------------------------------------- copy


def test_copy_prints_human_summary(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    src, dst = f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{dst_repo}:v1"

    proc = ocicopy_run("copy", src, dst, *_plain(registry, registry2), "--no-docker-config")

    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert out.startswith("copied ")
    assert src in out and dst in out
    assert img.digest in out
    assert f"{registry2.host}/{dst_repo}@{img.digest}" in out  # pinned
    assert "3 copied" in out  # config + two layers
    assert proc.stderr == b""
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == img.manifest

    again = ocicopy_run("copy", src, dst, *_plain(registry, registry2), "--no-docker-config")
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().startswith("skipped ")


def test_copy_json_parses(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image(n=3)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    mark = registry2.mark()

    proc = ocicopy_run(
        "copy",
        f"{registry.host}/{src_repo}:v1",
        f"{registry2.host}/{dst_repo}:v1",
        "--json",
        *_plain(registry, registry2),
        "--no-docker-config",
    )

    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["digest"] == doc["source_digest"] == img.digest
    assert doc["action"] == "copied"
    totals = doc["totals"]
    assert totals["blobs_copied"] == len(img.blobs()) == len(blob_uploads(registry2.requests(mark)))
    assert totals["bytes_sent"] == sum(len(b) for b in img.blobs().values())
    assert totals["manifests_pushed"] == 1
    assert {b["digest"] for b in doc["blobs"]} == set(img.blobs())


def test_copy_platform_subset_via_cli(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = im.make_index(
        [
            im.make_image([im.layer(next(_seeds), 900)], platform=p)
            for p in [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7")]
        ]
    )
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", index)
    proc = ocicopy_run(
        "copy",
        f"{registry.host}/{src_repo}:v1",
        f"{registry2.host}/{dst_repo}:v1",
        "--platform",
        "linux/arm64",
        "--json",
        *_plain(registry, registry2),
        "--no-docker-config",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["digest"] == index.images[1].digest
    assert doc["transformed"] is True
    assert skopeo_inspect_raw(docker_ref(registry2, dst_repo, "v1")) == index.images[1].manifest


def test_copy_unknown_platform_exits_1_and_pushes_nothing(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    index = im.make_index([_image(1)])
    src_repo = make_repo("src")
    im.push(registry, src_repo, "v1", index)
    mark = registry2.mark()
    proc = ocicopy_run(
        "copy",
        f"{registry.host}/{src_repo}:v1",
        f"{registry2.host}/{make_repo('dst')}:v1",
        "--platform",
        "windows/amd64",
        *_plain(registry, registry2),
        "--no-docker-config",
    )
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert "linux/amd64" in line
    assert manifest_puts(registry2.requests(mark)) == []


# --------------------------------------------------------------------------- inspect, digest


def test_inspect_raw_prints_exact_bytes(ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    index = im.make_index([_image(1), im.make_image([im.layer(next(_seeds), 800)], platform=("linux", "s390x", None))])
    im.push(registry, unique_repo, "v1", index)
    proc = ocicopy_run("inspect", "--raw", f"{registry.host}/{unique_repo}:v1", *_plain(registry), "--no-docker-config")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == index.manifest


def test_inspect_human(ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    img = im.make_image([im.layer(next(_seeds), 1000)], media="docker", platform=("linux", "arm64", "v8"))
    im.push(registry, unique_repo, "v1", img)
    proc = ocicopy_run("inspect", f"{registry.host}/{unique_repo}:v1", *_plain(registry), "--no-docker-config")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert im.DOCKER_MANIFEST in out
    assert img.digest in out
    assert str(len(img.manifest)) in out
    assert "platform    linux/arm64/v8" in out and "created     1970-01-01T00:00:00Z" in out
    for digest in img.blobs():
        assert digest in out


def test_inspect_human_index_lists_platforms(ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    arm = im.make_image([im.layer(next(_seeds), 700)], platform=("linux", "arm", "v7"))
    index = im.make_index([_image(1), arm])
    im.push(registry, unique_repo, "v1", index)
    proc = ocicopy_run("inspect", f"{registry.host}/{unique_repo}:v1", *_plain(registry), "--no-docker-config")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert im.OCI_INDEX in out
    assert arm.digest in out and "linux/arm/v7" in out


def test_inspect_json_says_what_skopeo_inspect_says_of_an_image(
    ocicopy_run: Run, registry: RegistryServer, unique_repo: str
) -> None:
    labels = {"org.opencontainers.image.source": "https://example.com/acme/api", "team": "platform"}
    img = im.make_image(
        [im.layer(next(_seeds), 900), im.layer(next(_seeds), 700)],
        platform=("linux", "arm64", "v8"),
        config_extra={"created": "2026-11-30T12:00:00Z", "config": {"Labels": labels}},
    )
    im.push(registry, unique_repo, "v1", img)
    proc = ocicopy_run(
        "inspect", "--json", f"{registry.host}/{unique_repo}:v1", *_plain(registry), "--no-docker-config"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = json.loads(proc.stdout)
    skopeo = skopeo_inspect(docker_ref(registry, unique_repo, "v1"))
    assert got["digest"] == skopeo["Digest"] == img.digest
    assert got["platform"] == {"os": skopeo["Os"], "architecture": skopeo["Architecture"], "variant": "v8"}
    assert got["created"] == "2026-11-30T12:00:00Z" and skopeo["Created"].startswith("2026-11-30T12:00:00")
    assert got["labels"] == skopeo["Labels"] == labels
    assert [layer["digest"] for layer in got["layers"]] == skopeo["Layers"]
    assert got["config"]["digest"] == im.sha256(img.config) and got["config"]["mediaType"] == im.OCI_CONFIG
    assert (got["media_type"], got["size"], got["subject"], got["manifests"]) == (
        im.OCI_MANIFEST,
        len(img.manifest),
        None,
        [],
    )
    assert got["artifact_type"] is None


def test_inspect_json_of_an_artifact_and_an_index(ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    arm = im.make_image([im.layer(next(_seeds), 700)], platform=("linux", "arm", "v7"))
    index = im.make_index([_image(1), arm])
    im.push(registry, unique_repo, "v1", index)
    sbom = im.make_artifact(b"{}", artifact_type="application/spdx+json", subject=index, annotations={"a": "b"})
    im.push(registry, unique_repo, sbom.digest, sbom)
    ref = f"{registry.host}/{unique_repo}"
    shown = ocicopy_run("inspect", "--json", f"{ref}@{sbom.digest}", *_plain(registry), "--no-docker-config")
    assert shown.returncode == 0, shown.stderr.decode()
    got = json.loads(shown.stdout)
    assert got["artifact_type"] == "application/spdx+json" and got["platform"] is None
    assert got["subject"] == {"mediaType": im.OCI_INDEX, "digest": index.digest, "size": len(index.manifest)}
    assert got["annotations"] == {"a": "b"} and got["config"]["mediaType"] == im.OCI_EMPTY

    listed = ocicopy_run("inspect", "--json", f"{ref}:v1", *_plain(registry), "--no-docker-config")
    assert listed.returncode == 0, listed.stderr.decode()
    got = json.loads(listed.stdout)
    assert [m["digest"] for m in got["manifests"]] == [c.digest for c in index.children]
    assert got["manifests"][1]["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}
    assert (got["config"], got["layers"], got["platform"]) == (None, [], None)

    human = ocicopy_run("inspect", f"{ref}@{sbom.digest}", *_plain(registry), "--no-docker-config")
    assert f"subject     {index.digest}" in human.stdout.decode()
    both = ocicopy_run("inspect", "--json", "--raw", f"{ref}:v1", *_plain(registry), "--no-docker-config")
    assert both.returncode == 2 and "not allowed with argument" in _one_error_line(both.stderr)


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "console-script"])
def test_digest_prints_the_digest(script: bool, ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    img = _image(1)
    im.push(registry, unique_repo, "v1", img)
    proc = ocicopy_run(
        "digest", f"{registry.host}/{unique_repo}:v1", *_plain(registry), "--no-docker-config", script=script
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode() == img.digest + "\n"


def test_console_script_copy_and_version(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image()
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    proc = ocicopy_run(
        "copy",
        f"{registry.host}/{src_repo}:v1",
        f"{registry2.host}/{dst_repo}:v1",
        "--quiet",
        *_plain(registry, registry2),
        "--no-docker-config",
        script=True,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    assert im.get_manifest(registry2, dst_repo, "v1").content == img.manifest
    version = ocicopy_run("--version", script=True)
    assert version.returncode == 0
    assert version.stdout.decode().startswith("ocicopy ")


# --------------------------------------------------------------------------- errors and exit codes


USAGE_ERRORS = {  # argparse's own refusals: still one line, naming the command whose --help to read
    "no-command": ([], "required: COMMAND", "ocicopy"),
    "unknown-command": (["frobnicate"], "invalid choice: 'frobnicate'", "ocicopy"),
    "unknown-root-flag": (["--bogus", "copy", "a", "b"], "unrecognized arguments: --bogus", "ocicopy"),
    "copy-no-args": (["copy"], "required: SRC, DST", "ocicopy copy"),
    "copy-one-arg": (["copy", "only-one-ref"], "required: DST", "ocicopy copy"),
    "copy-unknown-flag": (["copy", "a", "b", "--bogus"], "unrecognized arguments: --bogus", "ocicopy copy"),
    "copy-abbreviation": (["copy", "--ref", "a", "b"], "unrecognized arguments: --ref", "ocicopy copy"),
    "copy-not-a-number": (["copy", "--concurrency", "many", "a", "b"], "invalid int value: 'many'", "ocicopy copy"),
    "inspect-no-ref": (["inspect"], "required: REF", "ocicopy inspect"),
    "digest-two-refs": (["digest", "a", "b"], "unrecognized arguments: b", "ocicopy digest"),
    "referrers-abbreviation": (
        ["referrers", "--artifact", "x", "a"],
        "unrecognized arguments: --artifact",
        "ocicopy referrers",
    ),
    "mirror-abbreviation": (["mirror", "p.json", "--blob", "3"], "unrecognized arguments: --blob", "ocicopy mirror"),
    "mirror-bad-mode": (["mirror", "p.json", "--mode", "fleet"], "invalid choice: 'fleet'", "ocicopy mirror"),
    "build-key-abbreviation": (["build-key", "--repo", "r", "--commit", "c"], "--repository", "ocicopy build-key"),
    "lookup-abbreviation": (["lookup", "--cred", "u:p", "a"], "unrecognized arguments: --cred", "ocicopy lookup"),
}


@pytest.mark.parametrize(("args", "needle", "prog"), USAGE_ERRORS.values(), ids=USAGE_ERRORS.keys())
def test_usage_error_exits_2_with_one_line(args: list[str], needle: str, prog: str, ocicopy_run: Run) -> None:
    proc = ocicopy_run(*args)
    assert proc.returncode == 2, proc.stderr.decode()
    line = _one_error_line(proc.stderr)
    assert needle in line and line.endswith(f"(see '{prog} --help')"), line
    assert proc.stdout == b""


PLAN = {
    "mirror": {"registry": "127.0.0.1:1", "prefix": "m"},
    "registries": {"127.0.0.1:1": {"plain_http": True}},
    "deployments": [{"service": "api", "environment": "prod", "image": "127.0.0.1:1/api:v1"}],
}
REFS = ["--plain-http", "127.0.0.1:1", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1"]  # nothing listens: a request fails
COMMIT = "0123456789abcdef0123456789abcdef01234567"

BAD_VALUES = {  # refused by ocicopy before any request (one would fail with exit 1 here)
    "copy-concurrency-high": (
        ["copy", "--concurrency", "500", *REFS],
        "--concurrency must be between 1 and 128 (got 500)",
    ),
    "copy-concurrency-zero": (["copy", "--concurrency", "0", *REFS], "--concurrency must be between 1 and 128 (got 0)"),
    "copy-level": (
        ["copy", "--dest-compress", "zstd", "--dest-compress-level", "40", *REFS],
        "--dest-compress-level must be between 1 and 19 (got 40)",
    ),
    "copy-plain-http-url": (["copy", "--plain-http", "http://127.0.0.1:1", *REFS], "--plain-http takes HOST[:PORT]"),
    "copy-plain-http-port": (["copy", "--plain-http", "127.0.0.1:99999", *REFS], "between 1 and 65535"),
    "copy-platform": (["copy", "--platform", "linux", *REFS], "invalid platform 'linux'"),
    "copy-creds": (["copy", "--dest-creds", "nocolon", *REFS], "USER:PASSWORD"),
    "copy-cert-dir-plain": (
        ["copy", "--src-cert-dir", "{tmp}", *REFS],
        "--src-cert-dir is TLS trust, and 127.0.0.1:1 is marked --plain-http: drop one of them",
    ),
    "copy-cert-dir-layout": (
        ["copy", "--dest-cert-dir", "{tmp}", "127.0.0.1:1/a:v1", "oci:{tmp}/out:v1"],
        "--dest-cert-dir given for an OCI layout",
    ),
    "copy-cert-dir-missing": (
        ["copy", "--dest-cert-dir", "{tmp}/nowhere", "oci:{tmp}/in:v1", "127.0.0.1:1/b:v1"],
        "certificate directory {tmp}/nowhere does not exist",
    ),
    "copy-cert-dir-twice": (
        ["copy", "--src-cert-dir", "{tmp}", "--dest-cert-dir", "{tmp}/b", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1"],
        "--src-cert-dir and --dest-cert-dir name two directories for one registry, 127.0.0.1:1",
    ),
    "digest-cert-dir-file": (
        ["digest", "--cert-dir", "{plan}", "127.0.0.1:1/a:v1"],
        "cannot read certificate directory {plan}: Not a directory",
    ),
    "inspect-reference": (["inspect", "127.0.0.1:1/UPPER/case:v1"], "UPPER/case"),
    "inspect-creds": (["inspect", "--creds", ":pw", *REFS[:3]], "USER:PASSWORD"),
    "digest-tag": (["digest", "127.0.0.1:1/repo:" + "t" * 129], "invalid image reference"),
    "referrers-digest": (["referrers", "127.0.0.1:1/repo@sha256:../../x"], "invalid image reference"),
    "mirror-blob-concurrency": (
        ["mirror", "{plan}", "--blob-concurrency", "500"],
        "--blob-concurrency must be between 1 and 128 (got 500)",
    ),
    "mirror-concurrency": (
        ["mirror", "{plan}", "--concurrency", "0"],
        "--concurrency must be between 1 and 1024 (got 0)",
    ),
    "mirror-concurrency-high": (["mirror", "{plan}", "--concurrency", "5000"], "between 1 and 1024 (got 5000)"),
    "mirror-immutable-tags": (["mirror", "{plan}", "--immutable-tags", "v(1"], "--immutable-tags is not a regular"),
    "mirror-plain-http": (["mirror", "{plan}", "--plain-http", "a/b"], "--plain-http takes HOST[:PORT]"),
    "mirror-no-plan": (["mirror", "{tmp}/missing.json"], "cannot read plan"),
    "mirror-json-is-plan": (["mirror", "{plan}", "--json", "{plan}"], "--json {plan} is the plan file"),
    "mirror-lock-is-plan": (["mirror", "{plan}", "--lock", "{tmp}/../{tmp.name}/plan.json"], "is the plan file"),
    "mirror-lock-is-json": (
        ["mirror", "{plan}", "--json", "{tmp}/out.json", "--lock", "{tmp}/./out.json"],
        "--json {tmp}/out.json and --lock {tmp}/./out.json name one file",
    ),
    "copy-two-users": (
        ["copy", "--src-creds", "a:1", "--dest-creds", "b:2", *REFS],
        "--src-creds and --dest-creds give two different users for one registry, 127.0.0.1:1",
    ),
    "copy-layout-under-a-file": (
        ["copy", *REFS[:3], "oci:{plan}/out:v1"],
        "cannot write an OCI layout at {plan}/out: {plan} is a file, not a directory",
    ),
    "copy-empty-value": (["copy", "--dest-cert-dir", "", *REFS], "argument --dest-cert-dir: needs a value, not ''"),
    "copy-no-mount-and-mount-from": (["copy", "--no-mount", "--mount-from", "x/y", *REFS], "--no-mount turns them off"),
    "copy-mount-from-into-a-layout": (
        ["copy", "--mount-from", "x/y", *REFS[:3], "oci:{tmp}/out:v1"],
        "--mount-from names repositories of the destination registry, and oci:{tmp}/out:v1 is a layout",
    ),
    "mirror-empty-plan": (["mirror", ""], "argument PLAN: needs a value, not ''"),
    "copy-layout-foreign": (["copy", *REFS[:3], "oci:{tmp}:v1"], "not an OCI image layout: refusing to write there"),
    "build-key-short-commit": (["build-key", "--repository", "R", "--commit", "3f9c2ab"], "--commit: commit must be"),
    "build-key-env": (["build-key", "--repository", "R", "--commit", COMMIT, "--env", "X"], "--env must be NAME=VALUE"),
    "build-key-env-name": (["build-key", "--repository", "R", "--commit", COMMIT, "--env", "1X=2"], "--env: '1X'"),
    "lookup-reference": (["lookup", "127.0.0.1:1/a//b:v1"], "invalid image reference"),
    "build-key-empty-target": (["build-key", "--repository", "R", "--commit", COMMIT, "--target", ""], "--target"),
}


def _bad_value_args(args: list[str], tmp_path: Path) -> list[str]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    return [a.format(plan=plan, tmp=tmp_path) for a in args]


@pytest.mark.parametrize(("args", "needle"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_exits_2_with_one_line(args: list[str], needle: str, ocicopy_run: Run, tmp_path: Path) -> None:
    proc = ocicopy_run(*_bad_value_args(args, tmp_path))
    assert proc.returncode == 2, proc.stderr.decode()
    assert needle.format(plan=tmp_path / "plan.json", tmp=tmp_path) in _one_error_line(proc.stderr)
    assert "validation error" not in proc.stderr.decode().lower()  # pydantic's wording stays inside
    assert proc.stdout == b""


FIRST_OF_EACH_COMMAND = {args[0]: (args, needle) for args, needle in reversed(BAD_VALUES.values())}


@pytest.mark.parametrize("where", ["root", "command"])
@pytest.mark.parametrize(("args", "needle"), FIRST_OF_EACH_COMMAND.values(), ids=FIRST_OF_EACH_COMMAND.keys())
def test_bad_value_with_debug_shows_the_traceback(
    args: list[str], needle: str, where: str, ocicopy_run: Run, tmp_path: Path
) -> None:
    argv = _bad_value_args(args, tmp_path)
    proc = ocicopy_run(*(["--debug", *argv] if where == "root" else [*argv, "--debug"]))
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.startswith("Traceback (most recent call last)"), err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("ocicopy: error: ") and needle.format(plan=tmp_path / "plan.json", tmp=tmp_path) in last


def test_an_unexpected_pydantic_error_is_one_line_without_pydantic_dump(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocicopy import cli
    from ocicopy.models import Descriptor

    def broken(args: object) -> int:  # a command with a bug: a model built from an unchecked value
        Descriptor.model_validate({"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": "big"})
        return 0

    monkeypatch.setitem(cli.COMMANDS, "build-key", broken)  # type: ignore[index]
    assert cli.main(["build-key", "--repository", "r", "--commit", COMMIT]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ocicopy: error: unexpected ValidationError: invalid Descriptor size: "), err
    assert err.count("\n") == 1 and "errors.pydantic.dev" not in err and "validation error" not in err


def test_bad_value_sends_nothing(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    src_repo = make_repo("src")
    im.push(registry, src_repo, "v1", _image(1))
    marks = registry.mark(), registry2.mark()
    src, dst = f"{registry.host}/{src_repo}:v1", f"{registry2.host}/{make_repo('dst')}:v1"
    proc = ocicopy_run("copy", "--concurrency", "129", src, dst, *_plain(registry, registry2), "--no-docker-config")
    assert proc.returncode == 2
    assert "--concurrency must be between 1 and 128" in _one_error_line(proc.stderr)
    assert registry.requests(marks[0]) == [] and registry2.requests(marks[1]) == []


@pytest.mark.parametrize(
    "args",
    [
        ["copy", "127.0.0.1:1/UPPER/case:v1", "127.0.0.1:1/ok:v1"],
        ["copy", "127.0.0.1:1/ok:v1", "127.0.0.1:1/a//b:v1"],
        ["inspect", "127.0.0.1:1/repo@sha256:../../x"],
        ["digest", "127.0.0.1:1/repo:" + "t" * 129],
        ["copy", "127.0.0.1:1/ok:v1", "127.0.0.1:1/ok2:v1", "--platform", "nonsense"],
        ["copy", "127.0.0.1:1/ok:v1", "127.0.0.1:1/ok2:v1", "--src-creds", "no-colon"],
    ],
    ids=["upper-case", "empty-component", "path-in-digest", "tag-too-long", "bad-platform", "bad-creds"],
)
def test_bad_input_exits_2_with_one_line(args: list[str], ocicopy_run: Run) -> None:
    proc = ocicopy_run(*args, "--no-docker-config", "--plain-http", "127.0.0.1:1")
    assert proc.returncode == 2, proc.stderr.decode()
    _one_error_line(proc.stderr)
    assert proc.stdout == b""


def test_bad_reference_exit_2_via_console_script(ocicopy_run: Run) -> None:
    proc = ocicopy_run("digest", "127.0.0.1:1/UPPER/case:v1", "--no-docker-config", script=True)
    assert proc.returncode == 2
    assert "UPPER/case" in _one_error_line(proc.stderr)


def test_unknown_tag_exits_1_with_one_line(
    ocicopy_run: Run, registry: RegistryServer, registry2: RegistryServer, make_repo: MakeRepo
) -> None:
    src_repo = make_repo("src")
    im.push(registry, src_repo, "v1", _image(1))
    for args in (
        ["copy", f"{registry.host}/{src_repo}:nope", f"{registry2.host}/{make_repo('dst')}:v1"],
        ["inspect", f"{registry.host}/{src_repo}:nope"],
        ["digest", f"{registry.host}/{src_repo}:nope"],
    ):
        proc = ocicopy_run(*args, *_plain(registry, registry2), "--no-docker-config")
        assert proc.returncode == 1, (args, proc.stderr.decode())
        line = _one_error_line(proc.stderr)
        assert "nope" in line
        assert proc.stdout == b""


def test_debug_shows_traceback(ocicopy_run: Run, registry: RegistryServer, unique_repo: str) -> None:
    im.push(registry, unique_repo, "v1", _image(1))
    proc = ocicopy_run(
        "digest", f"{registry.host}/{unique_repo}:nope", *_plain(registry), "--no-docker-config", "--debug"
    )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Traceback (most recent call last)" in err
    assert "UnknownReferenceError" in err  # a NotFoundError: the reference does not resolve
    assert err.rstrip().splitlines()[-1].startswith("ocicopy: error: ")


def test_plain_http_registry_not_marked_exits_1_with_hint(
    ocicopy_run: Run, registry: RegistryServer, unique_repo: str
) -> None:
    im.push(registry, unique_repo, "v1", _image(1))
    proc = ocicopy_run("digest", f"{registry.host}/{unique_repo}:v1", "--no-docker-config")
    assert proc.returncode == 1
    assert f"--plain-http {registry.host}" in _one_error_line(proc.stderr)


def test_basic_auth_creds_flags(
    ocicopy_run: Run, registry: RegistryServer, basic_registry: RegistryServer, make_repo: MakeRepo
) -> None:
    img = _image(1)
    src_repo, dst_repo = make_repo("src"), make_repo("dst")
    im.push(registry, src_repo, "v1", img)
    user_pw = f"{basic_registry.username}:{basic_registry.password}"
    common = [*_plain(registry, basic_registry), "--no-docker-config"]
    dst = f"{basic_registry.host}/{dst_repo}:v1"

    denied = ocicopy_run("copy", f"{registry.host}/{src_repo}:v1", dst, *common)
    assert denied.returncode == 1
    assert basic_registry.host in _one_error_line(denied.stderr)

    wrong = ocicopy_run("copy", f"{registry.host}/{src_repo}:v1", dst, "--dest-creds", "ocitest:wrong-pw-xyz", *common)
    assert wrong.returncode == 1
    assert "wrong-pw-xyz" not in _one_error_line(wrong.stderr)

    ok = ocicopy_run("copy", f"{registry.host}/{src_repo}:v1", dst, "--dest-creds", user_pw, *common)
    assert ok.returncode == 0, ok.stderr.decode()
    got = ocicopy_run("digest", dst, "--creds", user_pw, *common)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout.decode().strip() == img.digest
    assert basic_registry.password.encode() not in ok.stdout + ok.stderr + got.stdout + got.stderr


def test_version_matches_the_project_metadata() -> None:
    import tomllib
    from pathlib import Path

    import ocicopy

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert ocicopy.__version__ == pyproject["project"]["version"]


# --------------------------------------------------------------------------- zstd, layouts, referrers


def test_copy_dest_compress_json(ocicopy_run: Run, registry: RegistryServer, make_repo: Callable[[str], str]) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    image = _image()
    im.push(registry, src, "v1", image)
    run = ocicopy_run(
        "copy", *_plain(registry), "--dest-compress", "zstd", "--dest-compress-level", "7", "--json",
        f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["compression"] == "zstd" and out["transformed"] and out["digest"] != image.digest
    assert out["totals"]["blobs_recompressed"] == 2
    assert {b["source_digest"] for b in out["blobs"] if b["action"] == "recompressed"} == {
        im.sha256(x) for x in image.layers
    }


def test_copy_summary_names_the_transformation(
    ocicopy_run: Run, registry: RegistryServer, make_repo: Callable[[str], str]
) -> None:
    src, dst = make_repo("src"), make_repo("dst")
    im.push(registry, src, "v1", _image())
    run = ocicopy_run(
        "copy", *_plain(registry), "--dest-compress", "zstd", f"{registry.host}/{src}:v1", f"{registry.host}/{dst}:v1"
    )
    assert run.returncode == 0, run.stderr
    assert b"layers recompressed to zstd" in run.stdout and b"2 recompressed" in run.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dest-compress-level", "5"], "needs --dest-compress"),
        (["--artifact-type", "application/x"], "add --referrers"),
        (["--dest-compress", "zstd", "--dest-compress-level", "40"], "--dest-compress-level must be between 1 and 19"),
        (["--dest-compress", "zstd", "--referrers"], "recompression"),
        (["--src-creds", "u:p"], "layouts are local directories"),
    ],
)
def test_copy_bad_combinations_one_line(ocicopy_run: Run, tmp_path: Path, args: list[str], needle: str) -> None:
    run = ocicopy_run("copy", *args, f"oci:{tmp_path}/a:v1", f"oci:{tmp_path}/b:v1")
    assert run.returncode == 2
    assert needle in _one_error_line(run.stderr)


def test_inspect_and_digest_of_a_layout(
    ocicopy_run: Run, registry: RegistryServer, make_repo: Callable[[str], str], tmp_path: Path
) -> None:
    src = make_repo("src")
    image = _image()
    im.push(registry, src, "v1", image)
    layout = tmp_path / "lay"
    assert ocicopy_run("copy", "-q", *_plain(registry), f"{registry.host}/{src}:v1", f"oci:{layout}:v1").returncode == 0
    digest = ocicopy_run("digest", f"oci:{layout}:v1")
    assert digest.stdout.decode().strip() == image.digest
    raw = ocicopy_run("inspect", "--raw", f"oci:{layout}")  # the layout's only image
    assert raw.stdout == image.manifest
    missing = ocicopy_run("lookup", f"oci:{layout}:nope")
    assert missing.returncode == 3


def test_referrers_command(ocicopy_run: Run, registry: RegistryServer, make_repo: Callable[[str], str]) -> None:
    repo, elsewhere = make_repo("signed"), make_repo("sigs")
    image = _image()
    sig = im.make_artifact(b"sig", artifact_type="application/vnd.example.sig", subject=image)
    im.push(registry, repo, "v1", image)
    im.push(registry, elsewhere, sig.digest, sig)
    run = ocicopy_run("referrers", *_plain(registry), f"{registry.host}/{repo}:v1")
    assert run.returncode == 0 and run.stdout == b""  # nothing yet
    # pushing the signature next to the image keeps the subject's fallback index (no referrers API here)
    src, dst = f"{registry.host}/{elsewhere}@{sig.digest}", f"{registry.host}/{repo}@{sig.digest}"
    copy = ocicopy_run("copy", "-q", *_plain(registry), src, dst)
    assert copy.returncode == 0, copy.stderr
    listed = ocicopy_run("referrers", "--json", *_plain(registry), f"{registry.host}/{repo}:v1")
    assert [d["digest"] for d in json.loads(listed.stdout)] == [sig.digest]
    text = ocicopy_run("referrers", *_plain(registry), f"{registry.host}/{repo}:v1")
    assert text.stdout.decode().split()[:2] == [sig.digest, "application/vnd.example.sig"]
    ref = f"{registry.host}/{repo}:v1"
    for types, expected in ((["application/vnd.example.sbom"], []), (["a/b", "application/vnd.example.sig"], [sig])):
        filtered = ocicopy_run("referrers", "--json", *_plain(registry), *_each("--artifact-type", types), ref)
        assert [d["digest"] for d in json.loads(filtered.stdout)] == [a.digest for a in expected], filtered.stderr


def _each(flag: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (flag, value)]
