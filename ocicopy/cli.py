"""``ocicopy`` command line: copy, inspect, digest, referrers, mirror, build-key, lookup.

Exit 0 ok, 1 failure, 2 usage error (bad arguments, references, plans), 3 not found (``lookup``).

Errors are one line on stderr (``ocicopy: error: ...``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import anyio
from pydantic import ValidationError

from ocicopy import __version__
from ocicopy.client import Client
from ocicopy.credentials import Credentials
from ocicopy.display import (
    MirrorLines,
    MirrorTerminal,
    TerminalProgress,
    copy_summary,
    deployment_line,
    human_bytes,
    mirror_summary,
)
from ocicopy.errors import InputError, OcicopyError
from ocicopy.location import is_layout_reference
from ocicopy.models import Manifest
from ocicopy.options import ClientOptions, recompression
from ocicopy.plan import BuildSpec, load_plan
from ocicopy.planner import build_inputs, build_key
from ocicopy.platforms import parse_platform
from ocicopy.reference import parse_reference
from ocicopy.report import MirrorReport, write_atomic, write_lock

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plain-http",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain HTTP (no TLS) to HOST[:PORT]; repeatable. Never a silent fallback",
    )
    parser.add_argument("--no-docker-config", action="store_true", help="ignore ~/.docker/config.json")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocicopy",
        description="Copy container images between OCI registries, byte-exact, streamed and verified.",
    )
    parser.add_argument("--version", action="version", version=f"ocicopy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "copy",
        help="copy an image, index or artifact",
        description="Copy SRC to DST. Either may be a registry reference or an OCI image layout "
        "(oci:PATH[:TAG] or oci:PATH@DIGEST).",
    )
    p.add_argument("src", metavar="SRC", help="source, e.g. ghcr.io/acme/api:1.4.2 or oci:./build:1.4.2")
    p.add_argument("dst", metavar="DST", help="destination (no tag: the source's tag)")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH[/VARIANT]",
        help="copy only this platform of an index; repeatable (one: that image; several: a new index)",
    )
    p.add_argument("--mount-from", action="append", default=[], metavar="REPO", help="also try mounting from REPO")
    p.add_argument("--no-mount", action="store_true", help="never mount blobs across repositories (upload instead)")
    p.add_argument("--src-creds", metavar="USER:PASSWORD", help="credentials for the source registry")
    p.add_argument("--dest-creds", metavar="USER:PASSWORD", help="credentials for the destination registry")
    p.add_argument("--concurrency", type=int, default=8, metavar="N", help="blobs in flight (default 8)")
    p.add_argument(
        "--dest-compress",
        choices=["zstd"],
        metavar="FORMAT",
        help="recompress gzip layers to FORMAT (zstd); a new digest, manifests become OCI",
    )
    p.add_argument("--dest-compress-level", type=int, metavar="N", help="zstd level 1-19 (default 3)")
    p.add_argument("--referrers", action="store_true", help="also copy signatures, SBOMs, attestations (recursive)")
    p.add_argument(
        "--artifact-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="with --referrers: only referrers of this artifactType; repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    _common(p)

    p = sub.add_parser("inspect", help="show a manifest", description="Show the manifest REF points at.")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--raw", action="store_true", help="print the exact manifest bytes")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    _common(p)

    p = sub.add_parser("digest", help="print the digest REF resolves to", description="Print REF's digest.")
    p.add_argument("ref", metavar="REF")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    _common(p)

    p = sub.add_parser(
        "referrers",
        help="list the manifests that refer to REF (signatures, SBOMs...)",
        description="List REF's referrers: the referrers API, else the fallback tag (<alg>-<hex>).",
    )
    p.add_argument("ref", metavar="REF")
    p.add_argument("--artifact-type", metavar="TYPE", help="only referrers of this artifactType")
    p.add_argument("--json", action="store_true", help="print the descriptors as JSON")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    _common(p)
    _mirror_parsers(sub)
    return parser


def _mirror_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "mirror",
        help="mirror every deployment of a plan",
        description="Mirror the images of a plan into the mirror registry; exit 0 when every deployment "
        "succeeded (build-needed included), 1 otherwise.",
    )
    p.add_argument("plan", metavar="PLAN", help="plan file (JSON; YAML with PyYAML installed)")
    p.add_argument("--mode", choices=["service", "cluster"], help="override the plan's mode")
    p.add_argument("--json", metavar="REPORT", help="write the report as JSON to REPORT ('-' for stdout)")
    p.add_argument("--lock", metavar="LOCK", help="write a lock file: source reference -> pinned mirror reference")
    p.add_argument("--dry-run", action="store_true", help="manifests only (HEAD/GET): predict actions and bytes")
    p.add_argument("--immutable-tags", metavar="REGEX", help="trust existing mirror tags for matching source tags")
    p.add_argument("--concurrency", type=int, default=32, metavar="N", help="deployments in flight (default 32)")
    p.add_argument("--blob-concurrency", type=int, default=8, metavar="N", help="blobs in flight (default 8)")
    p.add_argument("--no-ledger", action="store_true", help="do not read or write the blob ledger")
    p.add_argument("--no-mount", action="store_true", help="never mount blobs across repositories (upload instead)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    _common(p)

    p = sub.add_parser(
        "build-key",
        help="print the build key of build inputs",
        description="Print the build key (the mirror tag of a build) for the given inputs.",
    )
    p.add_argument("--repository", required=True, metavar="URL", help="git repository URL")
    p.add_argument("--commit", required=True, metavar="SHA", help="full commit id")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable")
    p.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE", help="build argument")
    p.add_argument("--dockerfile", default="Dockerfile", metavar="PATH")
    p.add_argument("--target", metavar="STAGE")
    p.add_argument("--json", action="store_true", help="print the key with its canonical inputs")

    p = sub.add_parser(
        "lookup",
        help="is REF in the registry? (exit 0 found, 3 not found)",
        description="Look REF up with one HEAD. Exit 0 and print the digest when found; exit 3 when not found; "
        "1 on other failures; 2 on usage errors.",
    )
    p.add_argument("ref", metavar="REF")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    _common(p)


def _creds(value: str | None, ref: str) -> dict[str, Credentials]:
    if not value:
        return {}
    if is_layout_reference(ref):
        raise InputError(f"credentials given for an OCI layout ({ref}): layouts are local directories")
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise InputError("credentials must be given as USER:PASSWORD")
    return {parse_reference(ref.removeprefix("docker://")).registry: Credentials(user, password)}


def _client(args: argparse.Namespace, creds: dict[str, Credentials], **options: Any) -> Client:
    opts = ClientOptions(use_docker_config=not args.no_docker_config, **options)
    return Client(opts, plain_http=args.plain_http, credentials=creds or None)


async def _copy(args: argparse.Namespace) -> int:
    platforms = [parse_platform(p) for p in args.platform]
    creds = _creds(args.src_creds, args.src) | _creds(args.dest_creds, args.dst)
    if args.concurrency < 1:
        raise InputError("--concurrency must be at least 1")
    progress = TerminalProgress() if sys.stderr.isatty() and not (args.quiet or args.json) else None
    async with _client(args, creds, blob_concurrency=args.concurrency, mounts=not args.no_mount) as client:
        if progress is not None:
            client.set_progress(progress)
        if args.dest_compress_level is not None and args.dest_compress is None:
            raise InputError("--dest-compress-level needs --dest-compress zstd")
        if args.artifact_type and not args.referrers:
            raise InputError("--artifact-type filters referrers: add --referrers")
        try:
            result = await client.copy(
                args.src,
                args.dst,
                platforms=platforms,
                mount_from=args.mount_from,
                compress=recompression(args.dest_compress, args.dest_compress_level),
                referrers=args.referrers,
                artifact_types=args.artifact_type,
            )
        finally:
            if progress is not None:
                progress.close()
    for warning in result.warnings:
        print(f"ocicopy: warning: {warning}", file=sys.stderr)
    if args.json:
        print(result.model_dump_json(indent=2))
    elif not args.quiet:
        print(copy_summary(result))
    return EXIT_OK


def _describe(manifest: Manifest) -> str:
    lines = [f"media type  {manifest.media_type}", f"digest      {manifest.digest}", f"size        {manifest.size}"]
    if manifest.view.artifact_type:
        lines.append(f"artifact    {manifest.view.artifact_type}")
    for child in manifest.children():
        lines.append(f"manifest    {child.digest}  {child.platform or '-'}  {child.media_type}")
    for blob in manifest.blobs():
        lines.append(f"blob        {blob.digest}  {human_bytes(blob.size):>10}  {blob.media_type}")
    return "\n".join(lines)


async def _inspect(args: argparse.Namespace) -> int:
    async with _client(args, _creds(args.creds, args.ref)) as client:
        manifest = await client.inspect(args.ref)
    if args.raw:
        sys.stdout.buffer.write(manifest.raw)
        sys.stdout.flush()
    else:
        print(_describe(manifest))
    return EXIT_OK


async def _digest(args: argparse.Namespace) -> int:
    async with _client(args, _creds(args.creds, args.ref)) as client:
        print(await client.digest(args.ref))
    return EXIT_OK


async def _referrers(args: argparse.Namespace) -> int:
    async with _client(args, _creds(args.creds, args.ref)) as client:
        found = await client.referrers(args.ref, args.artifact_type)
    if args.json:
        print(json.dumps([d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in found], indent=2))
    else:
        for d in found:
            print(f"{d.digest}  {d.artifact_type or '-'}  {human_bytes(d.size)}")
    return EXIT_OK


async def _mirror(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan).with_mode(args.mode)
    if args.concurrency < 1 or args.blob_concurrency < 1:
        raise InputError("--concurrency and --blob-concurrency must be at least 1")
    options = plan.client_options(ClientOptions(use_docker_config=not args.no_docker_config))
    options = options.model_copy(
        update={
            "blob_concurrency": args.blob_concurrency,
            "plain_http": options.plain_http | set(args.plain_http),
            "mounts": not args.no_mount,
        }
    )
    lines_to = sys.stderr if args.json == "-" else sys.stdout
    live = sys.stderr.isatty() and not args.quiet
    progress: Any = MirrorTerminal(len(plan.deployments)) if live else None if args.quiet else MirrorLines(lines_to)
    async with Client(options, progress=progress if live else None) as client:
        try:
            report = await client.mirror(
                plan,
                dry_run=args.dry_run,
                immutable_tags=args.immutable_tags,
                concurrency=args.concurrency,
                ledger=False if args.no_ledger else None,
                progress=progress,
            )
        finally:
            if live:
                progress.close()
    _mirror_output(args, report, lines_to, live)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _mirror_output(args: argparse.Namespace, report: MirrorReport, out: Any, live: bool) -> None:
    if args.json == "-":
        print(report.model_dump_json(indent=2))
    elif args.json:
        write_atomic(args.json, report.model_dump_json(indent=2) + "\n")
    if args.lock and not args.dry_run:
        write_lock(report, args.lock)
    for d in report.deployments:
        if live and not args.quiet:
            print(deployment_line(d), file=out)
        for warning in d.warnings:
            print(f"ocicopy: warning: {d.service}/{d.environment}: {warning}", file=sys.stderr)
    for warning in report.warnings:
        print(f"ocicopy: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        print(mirror_summary(report), file=out)


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, val = value.partition("=")
        if not sep or not name:
            raise InputError(f"{what} must be NAME=VALUE, got {value!r}")
        out[name] = val
    return out


async def _build_key(args: argparse.Namespace) -> int:
    data = {
        "repository": args.repository,
        "commit": args.commit,
        "env": _pairs(args.env, "--env"),
        "build_args": _pairs(args.build_arg, "--build-arg"),
        "dockerfile": args.dockerfile,
        "target": args.target,
    }
    try:
        spec = BuildSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{'.'.join(map(str, err['loc']))}: {str(err['msg']).removeprefix('Value error, ')}") from None
    key = build_key(spec)
    if args.json:
        print(json.dumps({"key": key, "inputs": build_inputs(spec)}, indent=2))
    else:
        print(key)
    return EXIT_OK


async def _lookup(args: argparse.Namespace) -> int:
    async with _client(args, _creds(args.creds, args.ref)) as client:
        info = await client.resolve(args.ref)
    if info is None:
        print(f"not found: {args.ref}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(info.digest)
    return EXIT_OK


COMMANDS = {
    "copy": _copy,
    "inspect": _inspect,
    "digest": _digest,
    "referrers": _referrers,
    "mirror": _mirror,
    "build-key": _build_key,
    "lookup": _lookup,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return anyio.run(COMMANDS[args.command], args)
    except KeyboardInterrupt:
        print("ocicopy: interrupted", file=sys.stderr)
        return 130
    except OcicopyError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ocicopy: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, InputError) else EXIT_FAILURE
    except Exception as exc:  # an unexpected failure still gets one line (and the traceback with --debug)
        if args.debug:
            traceback.print_exc()
        print(f"ocicopy: error: unexpected {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE


def _one_line(text: str) -> str:
    return " ".join(text.split())
