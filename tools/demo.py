"""ocicopy end to end on two local CNCF distribution registries (run through ./tools/demo).

1. starts a "source" and a "mirror" registry on loopback (temp dirs, removed at the end);
2. seeds the source with a multi-layer OCI image and a two-platform index (Docker media types);
3. copies both to the mirror with ocicopy, then again (skipped by digest), then into another mirror
   repository (blobs mounted, not re-sent), then one platform of the index;
4. checks every destination digest with skopeo and prints what was copied, mounted, skipped and how long;
4b. signs the api image (an OCI 1.1 artifact with a subject), carries it across an "air gap" (registry → OCI
   layout → another repository) with its signature, and recompresses the web index to zstd (twice: the
   second run is a skip by digest), all checked with skopeo;
5. mirrors a plan (3 services x 3 environments + a build) in cluster mode, then service mode, each cold then
   warm; the service-mode run is a fresh client that mounts what the cluster run placed (the mirror's ledger);
6. concurrent pipelines: four ``ocicopy mirror`` processes started together (two in cluster mode, two in
   service mode, the same new release in shuffled orders) into one fresh mirror prefix; every deployment is then
   checked with skopeo, and the mirror's ledger lists every repository the four runs wrote;
7. a newcomer's day at the terminal: an https registry with a private CA is refused (naming the host and the CA
   options) until ``--dest-cert-dir`` trusts it; ``inspect --json`` shows the config's platform; ``--platform``
   of another architecture copies nothing; a plan with two services on one source, its trust relative to the
   plan file, writes a lock file with one entry per deployment, read back with one ``jq`` line;
8. a fleet: one plan for three clusters (three mirror registries, modes mixed), run by one ``ocicopy mirror``,
   then again on a local Dask cluster of 2 worker processes (``--workers 2``);
   each source blob is read once (the source's access log), every pin checked with skopeo;
9. runs the quick benchmark (benchmarks.mirror: loopback and emulated WAN) and prints its table and targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ocicopy  # noqa: E402
from harness import images  # noqa: E402
from harness.oracle import docker_ref, skopeo_digest  # noqa: E402
from harness.registry import RegistryServer, RegistryTLS, make_ca, start_registry  # noqa: E402
from ocicopy.display import human_bytes  # noqa: E402

MiB = 1024 * 1024


def say(text: str) -> None:
    print(text, flush=True)


def seed(source: RegistryServer, scale: float) -> dict[str, str]:
    """Push the demo images with the harness's own client (not ocicopy); returns name -> digest."""
    base = images.layer(1, int(24 * MiB * scale))
    runtime = images.layer(2, int(12 * MiB * scale))
    app = images.make_image([base, runtime, images.layer(3, int(3 * MiB * scale)), images.layer(4, 300_000)])
    amd64 = images.make_image([base, images.layer(5, int(6 * MiB * scale))], media="docker")
    arm64 = images.make_image(
        [images.layer(6, int(22 * MiB * scale)), images.layer(7, int(6 * MiB * scale))],
        media="docker",
        platform=("linux", "arm64", "v8"),
    )
    index = images.make_index([amd64, arm64], media="docker")
    return {
        "shop/api:1.0": images.push(source, "shop/api", "1.0", app),
        "shop/web:2.1": images.push(source, "shop/web", "2.1", index),
    }


def row(step: str, result: ocicopy.CopyResult) -> str:
    t = result.totals
    return (
        f"{step:<36} {result.action.value:<8} {t.blobs_copied:>6} {t.blobs_mounted:>7} {t.blobs_skipped:>7} "
        f"{human_bytes(t.bytes_sent):>11} {result.requests:>5} {result.seconds:>8.2f}s"
    )


async def run_copies(src: RegistryServer, dst: RegistryServer) -> list[tuple[str, ocicopy.CopyResult]]:
    s, m = src.host, dst.host
    plan = [
        ("api: source -> mirror", f"{s}/shop/api:1.0", f"{m}/mirror/shop/api:1.0", ()),
        ("web (2 platforms): source -> mirror", f"{s}/shop/web:2.1", f"{m}/mirror/shop/web:2.1", ()),
        ("api again (redeploy)", f"{s}/shop/api:1.0", f"{m}/mirror/shop/api:1.0", ()),
        ("web again (redeploy)", f"{s}/shop/web:2.1", f"{m}/mirror/shop/web:2.1", ()),
        ("api into another mirror repo", f"{m}/mirror/shop/api:1.0", f"{m}/team-b/api:1.0", ()),
        ("web, linux/arm64 only", f"{s}/shop/web:2.1", f"{m}/edge/web:2.1-arm64", ("linux/arm64",)),
    ]
    options = ocicopy.ClientOptions(use_docker_config=False)
    out = []
    async with ocicopy.Client(options, plain_http=[s, m]) as client:
        for step, a, b, platforms in plan:
            out.append((step, await client.copy(a, b, platforms=platforms)))
    return out


def seed_versions(source: RegistryServer, scale: float) -> None:
    """Version 2 of each service (dev runs it): only the app layer differs from version 1."""
    base = images.layer(1, int(24 * MiB * scale))
    runtime = images.layer(2, int(12 * MiB * scale))
    api2 = images.make_image([base, runtime, images.layer(3, int(3 * MiB * scale)), images.layer(40, 300_000)])
    images.push(source, "shop/api", "1.1", api2)
    worker = images.make_image([base, runtime, images.layer(50, 2_000_000)])
    worker2 = images.make_image([base, runtime, images.layer(51, 2_000_000)])
    images.push(source, "shop/worker", "3.0", worker)
    images.push(source, "shop/worker", "3.1", worker2)
    images.push(source, "shop/web", "2.2", images.make_index([images.make_image([base, images.layer(52, 1_000_000)])]))


def plan_for(source: RegistryServer, mirror: RegistryServer, mode: str) -> ocicopy.Plan:
    versions = {"api": ("1.0", "1.1"), "web": ("2.1", "2.2"), "worker": ("3.0", "3.1")}
    deployments = [
        {"service": svc, "environment": env, "image": f"{source.host}/shop/{svc}:{old if env != 'dev' else new}"}
        for svc, (old, new) in versions.items()
        for env in ("prod", "staging", "dev")
    ]
    build = {"repository": "https://git.example.com/shop/batch", "commit": "3f9c2ab4e1d0c8b7a6f5e4d3c2b1a09f8e7d6c5b"}
    deployments.append({"service": "batch", "environment": "prod", "build": build})
    return ocicopy.parse_plan(
        {
            "mirror": {"registry": mirror.host, "prefix": "plans", "mode": mode, "cluster": "prod-eu-1"},
            "registries": {source.host: {"plain_http": True}, mirror.host: {"plain_http": True}},
            "deployments": deployments,
        }
    )


async def run_mirrors(source: RegistryServer, mirror: RegistryServer) -> list[tuple[str, ocicopy.MirrorReport]]:
    out = []
    for mode in ("cluster", "service"):
        for run in ("cold", "warm"):
            async with ocicopy.Client(ocicopy.ClientOptions(use_docker_config=False)) as client:
                out.append((f"{mode} mode, {run}", await client.mirror(plan_for(source, mirror, mode))))
    return out


def concurrent_pipelines(source: RegistryServer, mirror: RegistryServer, tmp: Path) -> bool:
    """Four ``ocicopy mirror`` processes at once into one mirror prefix: all succeed, skopeo agrees, the ledger
    holds the union of what they wrote."""
    commands = []
    for p, mode in enumerate(("cluster", "service", "cluster", "service")):
        data = plan_for(source, mirror, mode).model_dump(mode="json", exclude_none=True)
        data["mirror"]["prefix"] = "pipelines"
        random.Random(p).shuffle(data["deployments"])
        path = tmp / f"pipeline-{p}.json"
        path.write_text(json.dumps(data))
        commands.append([sys.executable, "-m", "ocicopy", "mirror", str(path), "--json", str(tmp / f"report-{p}.json")])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for cmd in commands]
    codes = [(proc.wait(timeout=300), proc.stderr.read().decode() if proc.stderr else "") for proc in procs]
    seconds = time.monotonic() - started
    ok, placed = True, set()
    for p, (code, err) in enumerate(codes):
        report = ocicopy.MirrorReport.model_validate_json((tmp / f"report-{p}.json").read_text())
        for d in report.deployments:
            if d.pinned is None:
                continue
            ref = ocicopy.parse_reference(d.pinned, default_tag=None)
            placed.add(ref.repository)
            ok &= skopeo_digest(docker_ref(ref.registry, ref.repository, str(ref.digest))) == ref.digest
        acts = ", ".join(f"{n} {a}" for a, n in report.totals.deployments.items() if n)
        say(f"  pipeline {p} ({report.mode.value:<7}) exit {code}: {acts}; run {report.run_id}")
        ok &= code == 0 and report.ok
        if err.strip():
            say("    " + err.strip().splitlines()[-1])
    ledger = anyio.run(_ledger_repositories, mirror, "pipelines/ocicopy-ledger")
    union = placed <= ledger
    say(f"  4 processes in {seconds:.1f}s; every pinned digest checked with skopeo: {'ok' if ok else 'MISMATCH'};")
    say(f"  the ledger lists all {len(placed)} repositories they wrote: {'yes' if union else 'NO'}")
    return ok and union


async def _ledger_repositories(mirror: RegistryServer, repository: str) -> set[str]:
    from ocicopy.ledger import Ledger
    from ocicopy.registry import Registry
    from ocicopy.transport import Transport

    options = ocicopy.ClientOptions(plain_http=frozenset({mirror.host}), use_docker_config=False)
    async with Transport(options) as transport:
        return await Ledger(Registry(transport, mirror.host), repository).repositories()


def newcomer(source: RegistryServer, tmp: Path) -> bool:
    """The command line as a docker/skopeo user meets it, against an https registry with a private CA."""
    work = tmp / "newcomer"
    ca = make_ca(work / "ca", "demo private CA")
    certs = work / "plans" / "certs"
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(work)}  # no certs.d or docker config of this user

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ocicopy", *args, "--no-docker-config", "--plain-http", source.host]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=300, check=False)

    ok = True
    with start_registry(work / "registry", tls=RegistryTLS(ca)) as secure:
        src, dst = f"{source.host}/shop/api:1.0", f"{secure.host}/shop/api:1.0"
        say(f"  an https registry at {secure.host}, its certificate from a CA the system does not know")
        refused = cli("copy", "-q", src, dst)
        ok &= refused.returncode == 1 and "is not trusted" in refused.stderr
        say(f"  $ ocicopy copy {src} {dst}\n    exit {refused.returncode}:")
        say(
            textwrap.fill(
                refused.stderr.strip(), 112, initial_indent="    ", subsequent_indent="      ", break_on_hyphens=False
            )
        )
        trusted = cli("copy", "--dest-cert-dir", str(certs), src, dst)
        ok &= trusted.returncode == 0
        say(f"  $ ocicopy copy --dest-cert-dir {certs.relative_to(work)} ...\n    exit {trusted.returncode}: "
            + trusted.stdout.strip().splitlines()[0])  # fmt: skip
        shown = cli("inspect", "--json", "--cert-dir", str(certs), dst)
        described = json.loads(shown.stdout) if shown.returncode == 0 else {}
        platform = described.get("platform") or {}
        ok &= platform.get("architecture") == "amd64"
        say(f"  $ ocicopy inspect --json ... | jq .platform\n    {json.dumps(platform)}, "
            f"{len(described.get('layers', []))} layers")  # fmt: skip
        wrong = cli("copy", "--platform", "linux/arm64", "--dest-cert-dir", str(certs), src, f"{dst}-arm64")
        ok &= wrong.returncode == 1
        say(f"  $ ocicopy copy --platform linux/arm64 ...\n    exit {wrong.returncode}: {wrong.stderr.strip()}")
        plan = {
            "mirror": {"registry": secure.host, "prefix": "newcomer", "mode": "service"},
            "registries": {source.host: {"plain_http": True}, secure.host: {"cert_dir": "certs"}},
            "deployments": [{"service": svc, "environment": "prod", "image": src} for svc in ("checkout", "payments")],
        }
        (work / "plans" / "plan.json").write_text(json.dumps(plan))
        mirrored = cli("mirror", "-q", "plans/plan.json", "--lock", "deploy.lock")
        ok &= mirrored.returncode == 0
        lock = json.loads((work / "deploy.lock").read_text()) if mirrored.returncode == 0 else {"deployments": []}
        pins = {d["service"]: d["pinned"] for d in lock["deployments"]}
        ok &= len(pins) == 2 and all(pins.values())
        say("  two services on one source, cert_dir relative to the plan: mirror --lock deploy.lock, then")
        say("  $ jq -r '.deployments[] | select(.service == \"payments\") | .pinned' deploy.lock")
        say(f"    {pins.get('payments')}   (checkout: its own repository, {str(pins.get('checkout')).split('@')[0]})")
    return ok


def fleet(source: RegistryServer, mirror: RegistryServer, tmp: Path) -> bool:
    """One plan for three clusters (three mirror registries): each source blob leaves the source once."""
    from harness.registry import blob_gets

    work = tmp / "fleet"
    work.mkdir()
    with start_registry(work / "us") as us, start_registry(work / "staging") as staging:
        mirrors = {"prod-eu": (mirror, "service"), "prod-us": (us, "cluster"), "staging": (staging, "cluster")}
        plan = {
            "version": 2,
            "mirrors": {name: {"registry": r.host, "prefix": "fleet", "mode": m} for name, (r, m) in mirrors.items()},
            "registries": {r.host: {"plain_http": True} for r in (source, mirror, us, staging)},
            "deployments": [
                {"service": "api", "environment": "prod", "image": f"{source.host}/shop/api:1.0",
                 "clusters": ["prod-eu", "prod-us"]},
                {"service": "web", "environment": "prod", "image": f"{source.host}/shop/web:2.1"},
                {"service": "api", "environment": "staging", "image": f"{source.host}/shop/api:1.1",
                 "clusters": ["staging"]},
            ],
        }  # fmt: skip
        (work / "fleet.json").write_text(json.dumps(plan, indent=2))
        mark = source.mark()
        argv = [sys.executable, "-m", "ocicopy", "mirror", "fleet.json", "--json", "report.json", "--lock", "lock.json"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(work)}
        run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=600, check=False)
        if run.returncode != 0:
            say(f"  ocicopy mirror fleet.json failed (exit {run.returncode}): {run.stderr.strip()[-400:]}")
            return False
        report = ocicopy.MirrorReport.model_validate_json((work / "report.json").read_text())
        from_source = sum(e.bytes_written for e in blob_gets(source.requests(mark)))
        to_mirrors = report.totals.bytes_to_mirror
        say(f"  $ ocicopy mirror fleet.json --json report.json --lock lock.json   ({report.seconds:.2f} s)")
        say("  {:<10} {:<8} {:<28} {:>11} {:>5}".format("cluster", "mode", "deployments", "sent", "reqs"))
        for name, c in report.clusters.items():
            acts = ", ".join(f"{n} {a}" for a, n in c.totals.deployments.items() if n)
            say(f"  {name:<10} {c.mode.value:<8} {acts:<28} {human_bytes(c.totals.bytes_to_mirror):>11} "
                f"{c.totals.requests:>5}")  # fmt: skip
        say(f"  bytes read from the source: {human_bytes(from_source)}, written to the mirrors: "
            f"{human_bytes(to_mirrors)} (each blob left the source once)")  # fmt: skip
        ok = report.ok and from_source < to_mirrors
        for d in report.deployments:
            good = d.pinned is not None and skopeo_digest(_docker(d.pinned)) == d.source_digest
            ok &= good
        lock = json.loads((work / "lock.json").read_text())
        say(f"  lock.json: {len(lock['deployments'])} entries, one per (deployment, cluster); every pin checked "
            f"with skopeo: {'ok' if ok else 'MISMATCH'}")  # fmt: skip
        ok &= fleet_on_dask(plan, report, work, env)
        ok &= retention(plan, work, env)
    return ok


def retention(plan: dict, work: Path, env: dict[str, str]) -> bool:
    """api prod moves from 1.0 to 1.1; prune (a dry run, then for real) removes 1.0's mirror tags, nothing else."""
    plan = json.loads(json.dumps(plan))
    for m in plan["mirrors"].values():
        m["prefix"] = "fleet"
    plan["deployments"][0]["image"] = plan["deployments"][0]["image"].replace(":1.0", ":1.1")
    (work / "release.json").write_text(json.dumps(plan, indent=2))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "ocicopy", *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=600, check=False)

    run = cli("mirror", "release.json", "--lock", "release.lock", "-q", "--metrics", "ocicopy-mirror.prom")
    if run.returncode != 0:
        say(f"  ocicopy mirror release.json failed (exit {run.returncode}): {run.stderr.strip()[-400:]}")
        return False
    say("  api prod moves to 1.1: $ ocicopy mirror release.json --lock release.lock --metrics ocicopy-mirror.prom")
    ok = metrics_shown(work / "ocicopy-mirror.prom", ("ocicopy_deployments{", "ocicopy_last_success"))
    say("  then retention:")
    for args in (("--dry-run",), ("--max-delete", "100%")):
        step = ("prune", "release.json", "--lock", "release.lock", *args)
        run = cli(*step, "--json", "prune.json")
        say(f"  $ ocicopy {' '.join(step)}")
        for line in run.stdout.strip().splitlines():
            say(f"    {line}")
        if run.returncode != 0:
            say(f"  ocicopy prune failed (exit {run.returncode}): {run.stderr.strip()[-400:]}")
            return False
        report = json.loads((work / "prune.json").read_text())
        ok &= report["tags_removed"] == 2  # api:1.0 in prod-eu (its own repository) and in prod-us (shared)
    lock = json.loads((work / "release.lock").read_text())
    kept = all(skopeo_digest(_docker(e["pinned"])) == e["pinned"].split("@")[1] for e in lock["deployments"])
    say(f"  every pin of release.lock still pulls (skopeo): {'ok' if kept else 'NO'}")
    return ok and kept


def metrics_shown(path: Path, prefixes: tuple[str, ...]) -> bool:
    """Some samples of a run's Prometheus textfile (the ones that are not zero), as node exporter would read them."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith(prefixes) and not ln.endswith(" 0.0")]
    for line in lines:
        say(f"    {line}")
    return bool(lines)


def fleet_on_dask(plan: dict, local: ocicopy.MirrorReport, work: Path, env: dict[str, str]) -> bool:
    """The same fleet (new prefixes) on a local Dask cluster of 2 worker processes: the same digests."""
    for m in plan["mirrors"].values():
        m["prefix"] = "fleet-dask"
    (work / "fleet-dask.json").write_text(json.dumps(plan, indent=2))
    argv = [sys.executable, "-m", "ocicopy", "mirror", "fleet-dask.json", "--workers", "2", "--json", "dask.json"]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=work, timeout=600, check=False)
    if run.returncode != 0:
        say(f"  ocicopy mirror --workers 2 failed (exit {run.returncode}): {run.stderr.strip()[-400:]}")
        return False
    report = ocicopy.MirrorReport.model_validate_json((work / "dask.json").read_text())

    def pins(r: ocicopy.MirrorReport) -> dict[tuple[str, str, str], str | None]:
        return {(d.cluster, d.service, d.environment): (d.pinned or "@").split("@")[1] for d in r.deployments}

    same = report.ok and pins(report) == pins(local)
    say(f"  $ ocicopy mirror fleet-dask.json --workers 2   ({time.monotonic() - started:.2f} s with the cluster's "
        f"start; copies {report.seconds:.2f} s): {len(report.deployments)} results, the same digests as the "
        f"local run: {'yes' if same else 'NO'}")  # fmt: skip
    return same


def _docker(pinned: str) -> str:
    name, _, digest = pinned.partition("@")
    host, _, repo = name.partition("/")
    return docker_ref(host, repo, digest)


def mirror_row(step: str, report: ocicopy.MirrorReport) -> str:
    t = report.totals
    acts = ", ".join(f"{n} {a}" for a, n in t.deployments.items() if n)
    return (
        f"{step:<20} {acts:<42} {t.blobs_copied:>6} {t.blobs_mounted:>7} {human_bytes(t.bytes_to_mirror):>11} "
        f"{t.requests:>5} {report.seconds:>7.2f}s"
    )


async def run_extras(src: RegistryServer, dst: RegistryServer, tmp: Path) -> list[tuple[str, ocicopy.CopyResult]]:
    """Signatures across an air gap (OCI layout) and zstd recompression."""
    s, m = src.host, dst.host
    async with ocicopy.Client(ocicopy.ClientOptions(use_docker_config=False), plain_http=[s]) as client:
        api = await client.inspect(f"{s}/shop/api:1.0")
    signature = images.make_artifact(
        b'{"critical": {"image": {"docker-manifest-digest": "%s"}}}' % str(api.digest).encode(),
        artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json",
        subject={"mediaType": api.media_type, "digest": str(api.digest), "size": api.size},
    )
    images.push(src, "shop/signatures", signature.digest, signature)
    layout = tmp / "airgap"
    plan = [
        (
            "sign api (fallback index kept)",
            f"{s}/shop/signatures@{signature.digest}",
            f"{s}/shop/api@{signature.digest}",
            {},
        ),
        ("api + signature -> OCI layout", f"{s}/shop/api:1.0", f"oci:{layout}:api-1.0", {"referrers": True}),
        ("OCI layout -> mirror (air gap)", f"oci:{layout}:api-1.0", f"{m}/airgap/api:1.0", {"referrers": True}),
        ("web -> mirror, layers as zstd", f"{s}/shop/web:2.1", f"{m}/zstd/web:2.1", {"compress": "zstd"}),
        ("web as zstd again", f"{s}/shop/web:2.1", f"{m}/zstd/web:2.1", {"compress": "zstd"}),
    ]
    out = []
    async with ocicopy.Client(ocicopy.ClientOptions(use_docker_config=False), plain_http=[s, m]) as client:
        for step, a, b, extra in plan:
            out.append((step, await client.copy(a, b, **extra)))
    return out


def extras_note(result: ocicopy.CopyResult) -> str:
    notes = []
    if result.referrers:
        notes.append(f"{len(result.referrers)} referrer(s)")
    if result.compression:
        notes.append(f"zstd: {result.totals.blobs_recompressed} layers recompressed now, digest {result.digest.short}")
    return f"  ({'; '.join(notes)})" if notes else ""


def verify(results: list[tuple[str, ocicopy.CopyResult]]) -> bool:
    ok = True
    for step, result in results:
        if result.destination.startswith("oci:"):
            oracle = skopeo_digest(result.destination)
            same = oracle == result.digest
            ok &= same
            say(f"  {'ok ' if same else 'BAD'} {step:<36} skopeo sees {oracle[:19]}…")
            continue
        ref = ocicopy.parse_reference(result.destination, default_tag=None)
        oracle = skopeo_digest(docker_ref(ref.registry, ref.repository, ref.tag or str(result.digest)))
        same = oracle == result.digest
        ok &= same
        say(f"  {'ok ' if same else 'BAD'} {step:<36} skopeo sees {oracle[:19]}…")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="layer size multiplier (default 1.0, ~100 MiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ocicopy-demo-") as tmp:
        say("starting two local registries (CNCF distribution)…")
        with start_registry(Path(tmp) / "source") as source, start_registry(Path(tmp) / "mirror") as mirror:
            say(f"  source {source.url}   mirror {mirror.url}")
            t0 = time.monotonic()
            digests = seed(source, args.scale)
            say(f"seeded the source in {time.monotonic() - t0:.1f}s: " + ", ".join(digests))
            results = anyio.run(run_copies, source, mirror)
            say("")
            header = ("step", "action", "copied", "mounted", "skipped", "sent", "reqs", "time")
            say("{:<36} {:<8} {:>6} {:>7} {:>7} {:>11} {:>5} {:>9}".format(*header))
            for step, result in results:
                say(row(step, result))
            say("")
            say("checking every destination with skopeo (digest of the raw manifest):")
            ok = verify(results)
            say("")
            say("signatures across an air gap (OCI layout) and zstd recompression:")
            extras = anyio.run(run_extras, source, mirror, Path(tmp))
            say("{:<36} {:<8} {:>6} {:>7} {:>7} {:>11} {:>5} {:>9}".format(*header))
            for step, result in extras:
                say(row(step, result) + extras_note(result))
            ok &= verify(extras)
            seed_versions(source, args.scale)
            say("")
            say("mirroring a plan: 3 services x 3 environments (prod and staging share a version) + 1 build")
            reports = anyio.run(run_mirrors, source, mirror)
            header = ("run", "deployments", "copied", "mounted", "sent", "reqs", "time")
            say("{:<20} {:<42} {:>6} {:>7} {:>11} {:>5} {:>8}".format(*header))
            for step, report in reports:
                say(mirror_row(step, report))
                ok &= report.ok
            pinned = [d for d in reports[0][1].deployments if d.pinned][:2]
            for d in pinned:
                say(f"  deploy {d.service}/{d.environment} as {d.pinned}")
            say("")
            say("concurrent pipelines: 4 ocicopy mirror processes at once into one mirror (2 cluster, 2 service mode)")
            ok &= concurrent_pipelines(source, mirror, Path(tmp))
            say("")
            say("a newcomer's day: TLS trust, inspect --json, a wrong platform, a lock file per deployment")
            ok &= newcomer(source, Path(tmp))
            say("")
            say("a fleet: one plan, three clusters (three mirror registries), each source blob read once; then a prune")
            ok &= fleet(source, mirror, Path(tmp))
    say("")
    say("all destinations byte-identical to what ocicopy reported" if ok else "MISMATCH: see above")
    ok &= quick_benchmark()
    return 0 if ok else 1


def quick_benchmark() -> bool:
    """The benchmark harness's quick run (loopback scale 0.2, wan scale 0.1, once each; about 2 minutes)."""
    from benchmarks.chart import render_table
    from benchmarks.mirror import format_targets, run_benchmark

    say("")
    say("quick benchmark: naive copier, ocicopy (service, service+mount, cluster, one-change), skopeo and the")
    say("curl floor, cold and warm, on loopback and on an emulated WAN (progress on stderr, about 2 minutes)…")
    try:
        doc = run_benchmark(quick=True, output=None, chart=None, command="tools/demo.py: run_benchmark(quick=True)")
    except Exception as exc:
        say(f"the quick benchmark failed: {type(exc).__name__}: {exc}")
        return False
    say("")
    say(render_table(doc).rstrip())
    say(format_targets(doc).rstrip())
    say("")
    say("quick figures are small workloads run once; for the full benchmark (medians of 3, about 12 minutes):")
    say("  .venv/bin/python -m benchmarks run      (= python -m benchmarks.mirror; see benchmarks/README.md)")
    return True


if __name__ == "__main__":
    sys.exit(main())
