"""``ocicopy prune`` (issue 13) against real registries: what goes and what stays, the bytes coming back at the
registry's garbage collection, every kept image still copying out with skopeo, and the refusals."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from harness import images as im
from harness.oracle import docker_ref, skopeo_copy, skopeo_digest
from harness.registry import RegistryServer, find_registry_binary, start_registry
from ocicopy.pruning import PruneReport
from tests.test_mirror_cli import Run, ocicopy_run, stdout_report, write_plan
from tests.test_mirror_registry import MakeRepo, new_layer, new_prefix

__all__ = ["ocicopy_run"]


@pytest.fixture
def source(tmp_path: Path) -> Iterator[RegistryServer]:
    with start_registry(tmp_path / "source") as server:
        yield server


def _plan(source: RegistryServer, mirror: RegistryServer, prefix: str, image: str, **extra: Any) -> dict[str, Any]:
    return {
        "mirror": {"registry": mirror.host, "prefix": prefix, "mode": "service", "cluster": "c1"},
        "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
        "deployments": [{"service": "api", "environment": "prod", "image": image, **extra}],
    }


def _prune(run: Run, plan: str, *args: str) -> tuple[subprocess.CompletedProcess[bytes], PruneReport | None]:
    proc = run("prune", plan, "--json", "-", *args)
    report = PruneReport.model_validate_json(proc.stdout) if proc.stdout.strip() else None
    return proc, report


def _blob_bytes(server: RegistryServer) -> int:
    root = server.root / "docker" / "registry" / "v2" / "blobs"
    return sum(p.stat().st_size for p in root.rglob("data"))


def _mirror_tag(source: RegistryServer, repo: str, release: int) -> str:
    from ocicopy import mirror_tag, parse_reference

    return mirror_tag(parse_reference(f"{source.host}/{repo}:v{release}"))


def _tag_digest(server: RegistryServer, repo: str, tag: str) -> str | None:
    try:
        return skopeo_digest(docker_ref(server, repo, tag))
    except Exception:
        return None


def test_prune_removes_what_nothing_keeps_and_the_bytes_come_back(
    source: RegistryServer, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """Three releases mirrored in turn; a human's tag on the first, another tool's image in the repository. With
    the plan on the third and --keep-last 1: the second goes (its own layer's bytes come back at GC), the first
    stays (shared with the human's tag), the third (the plan's), the foreign image and the ledger stay."""
    mirror_dir = tmp_path / "mirror"
    mirror = start_registry(mirror_dir)
    repo, prefix = make_repo("api"), new_prefix("prune")
    base = new_layer(4000)
    big = new_layer(300_000)  # the second release's own layer: what must come back
    releases = [
        im.make_image([base, new_layer(2000)]),
        im.make_image([base, big]),
        im.make_image([base, new_layer(2000)]),
    ]
    pins = []
    for i, image in enumerate(releases, 1):
        im.push(source, repo, f"v{i}", image)
        plan = write_plan(tmp_path / "plan.json", _plan(source, mirror, prefix, f"{source.host}/{repo}:v{i}"))
        proc = ocicopy_run("mirror", plan, "--json", "-")
        assert proc.returncode == 0, proc.stderr.decode()
        pins.append(stdout_report(proc).deployments[0].pinned)
    mrepo = f"{prefix}/api"
    mirror_tags = [_mirror_tag(source, repo, i) for i in (1, 2, 3)]
    im.push(mirror, mrepo, "keepme", releases[0])  # a human's tag on release 1's digest
    foreign = im.make_image([new_layer(2500)])
    im.push(mirror, mrepo, "other-tool", foreign)

    proc, report = _prune(ocicopy_run, plan, "--keep-last", "1", "--dry-run")
    assert proc.returncode == 0, proc.stderr.decode()
    assert report is not None and report.dry_run
    (result,) = report.clusters["c1"].repositories
    removed = list(result.removed)
    assert removed == [mirror_tags[1]], result
    assert result.shared == {mirror_tags[0]: "keepme"}, result
    assert report.bytes_freed >= len(big) and report.tags_removed == 1
    assert _tag_digest(mirror, mrepo, removed[0]) is not None  # a dry run deletes nothing

    refused, stopped = _prune(ocicopy_run, plan, "--keep-last", "1", "--max-delete", "0")
    assert refused.returncode == 1 and stopped is not None and stopped.refused
    assert "more than --max-delete 0 allows" in refused.stderr.decode(), refused.stderr.decode()
    assert _tag_digest(mirror, mrepo, removed[0]) is not None

    pinned_lock = tmp_path / "lock.json"
    pinned_lock.write_text(
        json.dumps(
            {
                "version": 2,
                "deployments": [{"cluster": "c1", "service": "api", "environment": "old", "pinned": pins[1]}],
            }
        )
    )
    proc, kept = _prune(ocicopy_run, plan, "--keep-last", "1", "--lock", str(pinned_lock), "--dry-run")
    assert proc.returncode == 0 and kept is not None and kept.tags_removed == 0, proc.stderr.decode()

    mark = mirror.mark()
    proc, done = _prune(ocicopy_run, plan, "--keep-last", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert done is not None and done.tags_removed == 1 and done.manifests_deleted == 1
    deletes = [e for e in mirror.requests(mark) if e.method == "DELETE"]
    assert [e.path.rsplit("/", 1)[1] for e in deletes] == [pins[1].split("@")[1]]  # type: ignore[union-attr]
    assert _tag_digest(mirror, mrepo, removed[0]) is None
    kept = [mirror_tags[0], mirror_tags[2], "keepme", "other-tool"]
    for tag in kept:
        assert _tag_digest(mirror, mrepo, tag) is not None, tag

    # The bytes come back at the registry's garbage collection (registry stopped; no --delete-untagged).
    before = _blob_bytes(mirror)
    mirror.stop()
    gc = subprocess.run(
        [find_registry_binary(), "garbage-collect", str(mirror_dir / "config.yml")], capture_output=True, text=True
    )
    assert gc.returncode == 0, gc.stdout[-2000:] + gc.stderr[-2000:]
    after = _blob_bytes(mirror)
    assert before - after >= len(big), (before, after)
    with start_registry(mirror_dir) as again:  # the same storage, served again: every kept image copies out
        for n, tag in enumerate(kept):
            skopeo_copy(docker_ref(again, mrepo, tag), f"oci:{tmp_path / f'out{n}'}:x")
        warm = ocicopy_run(
            "mirror",
            write_plan(tmp_path / "again.json", _plan(source, again, prefix, f"{source.host}/{repo}:v3")),
            "--json",
            "-",
        )
        assert warm.returncode == 0 and stdout_report(warm).deployments[0].action.value == "skipped"


def test_a_registry_that_refuses_deletes_is_said_so(
    source: RegistryServer, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    with start_registry(tmp_path / "mirror", extra_config={"storage": {"delete": {"enabled": False}}}) as mirror:
        repo, prefix = make_repo("api"), new_prefix("noprune")
        for tag in ("v1", "v2"):
            im.push(source, repo, tag, im.make_image([new_layer(1500)]))
            plan = write_plan(tmp_path / "plan.json", _plan(source, mirror, prefix, f"{source.host}/{repo}:{tag}"))
            assert ocicopy_run("mirror", plan).returncode == 0
        proc, report = _prune(ocicopy_run, plan, "--max-delete", "100%")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "refuses to delete manifests" in err and "storage.delete.enabled" in err, err
    assert report is not None and report.tags_removed == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--older-than", "soon"), "--older-than 'soon' is not a duration"),
        (("--max-delete", "lots"), "--max-delete 'lots' is not a count"),
        (("--max-delete", "150%"), "--max-delete '150%' is not a count"),
        (("--keep-last", "-1"), "--keep-last must be 0 or more"),
        (("--lock", "missing.json"), "cannot read lock file missing.json"),
    ],
)
def test_bad_prune_input_is_one_line_and_exit_2(
    ocicopy_run: Run, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    plan = write_plan(
        tmp_path / "plan.json",
        {
            "mirror": {"registry": "127.0.0.1:9", "prefix": "m"},
            "deployments": [{"service": "x", "image": "127.0.0.1:9/x:v1"}],
        },
    )
    proc = ocicopy_run("prune", plan, *args)
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_an_index_goes_with_its_children_and_its_signature(
    source: RegistryServer, make_repo: MakeRepo, ocicopy_run: Run, tmp_path: Path
) -> None:
    """A signed two-platform index, then its next release: pruning the first removes the index, its children and
    the signature with its fallback tag (signature first, children last); the second release keeps all of its."""
    from ocicopy.digest import Digest
    from ocicopy.referrers import fallback_tag

    with start_registry(tmp_path / "mirror") as mirror:
        repo, prefix = make_repo("idx"), new_prefix("pidx")
        releases = []
        for tag in ("v1", "v2"):
            amd = im.make_image([new_layer(1500)], platform=("linux", "amd64", None))
            arm = im.make_image([new_layer(1500)], platform=("linux", "arm64", "v8"))
            index = im.make_index([amd, arm])
            im.push(source, repo, tag, index)
            sig = im.make_artifact(f"sig {tag}".encode(), artifact_type="application/vnd.example.sig", subject=index)
            im.push(source, repo, sig.digest, sig)
            entry = {**im.descriptor(sig.media_type, sig.manifest), "artifactType": sig.artifact_type}
            listing = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]}
            im.push(
                source, repo, fallback_tag(Digest(index.digest)), im.Index(im.dump(listing), listing["mediaType"], [])
            )
            releases.append((index, amd, arm, sig))
            data = _plan(source, mirror, prefix, f"{source.host}/{repo}:{tag}")
            data["mirror"]["referrers"] = True
            plan = write_plan(tmp_path / "plan.json", data)
            proc = ocicopy_run("mirror", plan, "--json", "-")
            assert proc.returncode == 0 and stdout_report(proc).deployments[0].referrers == 1, proc.stderr.decode()
        mark = mirror.mark()
        proc, report = _prune(ocicopy_run, plan, "--max-delete", "100%")
        assert proc.returncode == 0, proc.stderr.decode()
        deleted = [e.path.rsplit("/", 1)[1] for e in mirror.requests(mark) if e.method == "DELETE"]
        index, amd, arm, sig = releases[0]
        assert set(deleted) >= {index.digest, amd.digest, arm.digest, sig.digest}, deleted
        assert (
            deleted.index(sig.digest)
            < deleted.index(index.digest)
            < min(deleted.index(amd.digest), deleted.index(arm.digest))
        )
        assert report is not None and list(report.clusters["c1"].repositories[0].with_subject) == [
            fallback_tag(Digest(index.digest))
        ]
        mrepo = f"{prefix}/api"
        tags = json.loads(im.get_manifest(mirror, mrepo, releases[1][0].digest).content)  # the second release stays
        assert len(tags["manifests"]) == 2
        for kept in releases[1]:
            assert im.get_manifest(mirror, mrepo, kept.digest).content
        assert _tag_digest(mirror, mrepo, fallback_tag(Digest(releases[1][0].digest))) is not None


@pytest.mark.anyio
async def test_the_library_prunes_what_the_plan_moved_past(
    source: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """``Client.prune``: after the plan moves from v1 to v2, v1's mirror tag goes (a dry run first: it stays);
    a bad option is an :class:`InputError` before any request."""
    from ocicopy import Client, ClientOptions
    from ocicopy.errors import InputError
    from ocicopy.plan import parse_plan

    with start_registry(tmp_path / "mirror") as mirror:
        repo, prefix = make_repo("lib"), new_prefix("plib")
        for tag in ("v1", "v2"):
            im.push(source, repo, tag, im.make_image([new_layer(1200)]))
        async with Client(ClientOptions(use_docker_config=False)) as client:
            for tag in ("v1", "v2"):
                report = await client.mirror(parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:{tag}")))
                assert report.ok, report
            plan = parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:v2"))
            with pytest.raises(InputError, match="--older-than"):
                await client.prune(plan, older_than="later")
            gone = _mirror_tag(source, repo, 1)
            dry = await client.prune(plan, max_delete="100%", dry_run=True)
            assert dry.tags_removed == 1 and _tag_digest(mirror, f"{prefix}/api", gone) is not None
            done = await client.prune(plan, max_delete="100%")
        (result,) = done.clusters["c1"].repositories
        assert list(result.removed) == [gone] and _tag_digest(mirror, f"{prefix}/api", gone) is None
        assert _tag_digest(mirror, f"{prefix}/api", _mirror_tag(source, repo, 2)) is not None


@pytest.mark.anyio
async def test_a_mirror_run_during_the_prune_leaves_the_repository_alone(
    source: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    """Prune and mirror runs interleaving: after prune decided (``confirm`` is told what would go), a real
    ``ocicopy mirror`` process writes a new tag into the repository; prune checks the tags again and deletes
    nothing there, saying why (and keeps its decision in the report)."""
    import sys

    from ocicopy import Client, ClientOptions
    from ocicopy.plan import parse_plan

    with start_registry(tmp_path / "mirror") as mirror:
        repo, prefix = make_repo("race"), new_prefix("prace")
        for tag in ("v1", "v2", "v3"):
            im.push(source, repo, tag, im.make_image([new_layer(1100)]))
        async with Client(ClientOptions(use_docker_config=False)) as client:
            for tag in ("v1", "v2"):
                report = await client.mirror(parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:{tag}")))
                assert report.ok, report
            later = write_plan(tmp_path / "v3.json", _plan(source, mirror, prefix, f"{source.host}/{repo}:v3"))
            told: list[int] = []

            async def meanwhile(what: PruneReport) -> bool:
                told.append(what.tags_removed)
                proc = await anyio.run_process([sys.executable, "-m", "ocicopy", "mirror", later], check=False)
                assert proc.returncode == 0, proc.stderr.decode()
                return True

            plan = parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:v2"))
            done = await client.prune(plan, max_delete="100%", confirm=meanwhile)
        (result,) = done.clusters["c1"].repositories
        assert told == [1] and list(result.removed) == [_mirror_tag(source, repo, 1)], (told, result)
        assert result.error is not None and "changed during the prune" in result.error, result
        assert result.deleted == [] and done.tags_removed == 0
        assert _tag_digest(mirror, f"{prefix}/api", _mirror_tag(source, repo, 1)) is not None


@pytest.mark.anyio
async def test_an_unconfirmed_prune_deletes_nothing(
    source: RegistryServer, make_repo: MakeRepo, tmp_path: Path
) -> None:
    from ocicopy import Client, ClientOptions
    from ocicopy.plan import parse_plan

    with start_registry(tmp_path / "mirror") as mirror:
        repo, prefix = make_repo("no"), new_prefix("pno")
        for tag in ("v1", "v2"):
            im.push(source, repo, tag, im.make_image([new_layer(900)]))
        async with Client(ClientOptions(use_docker_config=False)) as client:
            for tag in ("v1", "v2"):
                await client.mirror(parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:{tag}")))

            async def no(what: PruneReport) -> bool:
                return what.tags_removed == 0

            plan = parse_plan(_plan(source, mirror, prefix, f"{source.host}/{repo}:v2"))
            done = await client.prune(plan, max_delete="100%", confirm=no)
        assert done.refused == "not confirmed: nothing was deleted" and done.tags_removed == 1
        assert _tag_digest(mirror, f"{prefix}/api", _mirror_tag(source, repo, 1)) is not None
