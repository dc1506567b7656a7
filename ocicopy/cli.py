"""``ocicopy`` command line: copy, inspect, digest. Exit 0 ok, 1 failure, 2 usage error.

Errors are one line on stderr (``ocicopy: error: ...``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import anyio

from ocicopy import __version__
from ocicopy.client import Client
from ocicopy.credentials import Credentials
from ocicopy.display import TerminalProgress, copy_summary, human_bytes
from ocicopy.errors import InputError, OcicopyError
from ocicopy.models import Manifest
from ocicopy.options import ClientOptions
from ocicopy.platforms import parse_platform
from ocicopy.reference import parse_reference

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


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

    p = sub.add_parser("copy", help="copy an image, index or artifact", description="Copy SRC to DST.")
    p.add_argument("src", metavar="SRC", help="source reference, e.g. ghcr.io/acme/api:1.4.2")
    p.add_argument("dst", metavar="DST", help="destination reference (no tag: the source's tag)")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH[/VARIANT]",
        help="copy only this platform of an index; repeatable (one: that image; several: a new index)",
    )
    p.add_argument("--mount-from", action="append", default=[], metavar="REPO", help="also try mounting from REPO")
    p.add_argument("--src-creds", metavar="USER:PASSWORD", help="credentials for the source registry")
    p.add_argument("--dest-creds", metavar="USER:PASSWORD", help="credentials for the destination registry")
    p.add_argument("--concurrency", type=int, default=8, metavar="N", help="blobs in flight (default 8)")
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
    return parser


def _creds(value: str | None, ref: str) -> dict[str, Credentials]:
    if not value:
        return {}
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise InputError("credentials must be given as USER:PASSWORD")
    return {parse_reference(ref).registry: Credentials(user, password)}


def _client(args: argparse.Namespace, creds: dict[str, Credentials], **options: Any) -> Client:
    opts = ClientOptions(use_docker_config=not args.no_docker_config, **options)
    return Client(opts, plain_http=args.plain_http, credentials=creds or None)


async def _copy(args: argparse.Namespace) -> int:
    platforms = [parse_platform(p) for p in args.platform]
    creds = _creds(args.src_creds, args.src) | _creds(args.dest_creds, args.dst)
    if args.concurrency < 1:
        raise InputError("--concurrency must be at least 1")
    progress = TerminalProgress() if sys.stderr.isatty() and not (args.quiet or args.json) else None
    async with _client(args, creds, blob_concurrency=args.concurrency) as client:
        if progress is not None:
            client.progress = client.blobs.progress = client.trees.progress = progress
        try:
            result = await client.copy(args.src, args.dst, platforms=platforms, mount_from=args.mount_from)
        finally:
            if progress is not None:
                progress.close()
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


COMMANDS = {"copy": _copy, "inspect": _inspect, "digest": _digest}


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
