"""``ocicopy`` command line: copy, inspect, digest, referrers, mirror, build-key, lookup.

Exit 0 ok, 1 failure, 2 usage error (bad arguments, values, references, plans), 3 not found (``lookup``),
130 interrupted (Ctrl-C), 143 stopped by SIGTERM (cleaned up as after Ctrl-C).

Every error is one line on stderr, ``ocicopy: error: ...`` (argparse's usage errors too); ``--debug`` (before
or after the command) adds the traceback. Every value is checked before anything is sent.

Start-up is kept small: this module imports only argparse; each command imports what it needs when it runs
(``--help``, ``--version`` and ``build-key`` never load the HTTP stack; ``copy`` never loads the mirror, the
plan models or zstandard unless it recompresses). ``tests/test_imports.py`` holds this.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ocicopy import __version__

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ocicopy.client import Client
    from ocicopy.credentials import Credentials
    from ocicopy.display import Log
    from ocicopy.errors import InputError
    from ocicopy.options import ClientOptions, Recompression, RegistryConfig
    from ocicopy.plan import Plan
    from ocicopy.report import MirrorReport
    from ocicopy.result import ManifestDescription

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND = 0, 1, 2, 3
M = TypeVar("M", bound="BaseModel")


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--ref`` is not ``--referrers``), usage errors on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ocicopy: error: {_one_line(message)} (see '{self.prog} --help')\n")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """An argument that takes text refuses an empty one (``--dest-cert-dir ''`` was taken as not given)."""
        if kwargs.get("action", "store") in ("store", "append") and "type" not in kwargs and "choices" not in kwargs:
            kwargs["type"] = _text
        return super().add_argument(*args, **kwargs)


def _text(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("needs a value, not ''")
    return value


class _Command(_Parser):
    """A subcommand's parser: an unknown argument is reported against it, not against ``ocicopy``."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _debug(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # SUPPRESS on subcommands: their absent flag must not reset a root ``ocicopy --debug COMMAND``
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks on errors")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plain-http",
        action="append",
        default=[],
        metavar="HOST",
        help="speak plain HTTP (no TLS) to HOST[:PORT]; repeatable. Never a silent fallback",
    )
    parser.add_argument(
        "--no-docker-config",
        action="store_true",
        help="ignore the docker config ($DOCKER_CONFIG/config.json, else ~/.docker/config.json)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr as 'ocicopy: error: ...' lines (text), or one JSON object per line (json: events, for pipelines)",
    )
    _debug(parser)


def _metrics_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        metavar="FILE",
        help="write the run's Prometheus metrics to FILE (*.prom, for node exporter's textfile collector; needs "
        "ocicopy[metrics])",
    )
    parser.add_argument(
        "--metrics-push", metavar="URL", help="push the run's metrics to the Pushgateway at URL (http://HOST:9091)"
    )
    parser.add_argument(
        "--metrics-instance",
        metavar="NAME",
        help="with --metrics-push: the 'instance' grouping key (one group per pipeline; default: none)",
    )


def _creds_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--creds", metavar="USER:PASSWORD", help="credentials for the registry")
    parser.add_argument(
        "--cert-dir", metavar="DIR", help="trust for the registry: *.crt CAs, NAME.cert + NAME.key client certificate"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ocicopy",
        description="Copy container images between OCI registries, byte-exact, streamed and verified.",
    )
    parser.add_argument("--version", action="version", version=f"ocicopy {__version__}")
    _debug(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Command)
    _copy_parser(sub)

    p = sub.add_parser(
        "inspect",
        help="show a manifest",
        description="Show the manifest REF points at: what it lists, and for a single image the platform, "
        "creation time and labels of its config.",
    )
    p.add_argument("ref", metavar="REF")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--raw", action="store_true", help="print the exact manifest bytes")
    shown.add_argument("--json", action="store_true", help="print the description as JSON")
    _creds_flag(p)
    _common(p)

    p = sub.add_parser(
        "digest",
        help="print the digest REF resolves to",
        description="Print REF's digest, asked with one HEAD (REF@DIGEST too: a digest the registry lacks fails).",
    )
    p.add_argument("ref", metavar="REF")
    _creds_flag(p)
    _common(p)

    p = sub.add_parser(
        "referrers",
        help="list the manifests that refer to REF (signatures, SBOMs...)",
        description="List REF's referrers: the referrers API, else the fallback tag (<alg>-<hex>).",
    )
    p.add_argument("ref", metavar="REF")
    p.add_argument(
        "--artifact-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="only referrers of this artifactType; repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the descriptors as JSON")
    _creds_flag(p)
    _common(p)
    _mirror_parsers(sub)
    return parser


def _copy_parser(sub: Any) -> None:
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
    p.add_argument(
        "--mount-from",
        action="append",
        default=[],
        metavar="REPO",
        help="also try mounting blobs from REPO, a repository of the destination registry; repeatable",
    )
    p.add_argument("--no-mount", action="store_true", help="never mount blobs across repositories (upload instead)")
    p.add_argument("--src-creds", metavar="USER:PASSWORD", help="credentials for the source registry")
    p.add_argument("--dest-creds", metavar="USER:PASSWORD", help="credentials for the destination registry")
    p.add_argument("--src-cert-dir", metavar="DIR", help="trust for the source registry (*.crt, NAME.cert + NAME.key)")
    p.add_argument(
        "--dest-cert-dir", metavar="DIR", help="trust for the destination registry (*.crt, NAME.cert + NAME.key)"
    )
    p.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="blobs in flight per mirror registry (default 8)"
    )
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
    p.add_argument(
        "--create-repositories",
        action="store_true",
        help="make the destination repository first where the registry needs it (Amazon ECR; needs ocicopy[aws])",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    _metrics_flags(p)
    _common(p)


def _mirror_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "mirror",
        help="mirror every deployment of a plan",
        description="Mirror the images of a plan into the mirror registry; exit 0 when every deployment "
        "succeeded (build-needed included), 1 otherwise.",
    )
    p.add_argument("plan", metavar="PLAN", help="plan file: JSON, or YAML when named .yaml/.yml (needs PyYAML)")
    p.add_argument("--mode", choices=["service", "cluster"], help="override the plan's mode (every cluster's)")
    p.add_argument(
        "--cluster", action="append", default=[], metavar="NAME", help="only this cluster of the plan; repeatable"
    )
    p.add_argument("--json", metavar="REPORT", help="write the report as JSON to REPORT ('-' for stdout)")
    p.add_argument(
        "--lock",
        metavar="LOCK",
        help="write the lock file: each deployment's pinned mirror reference ('-' for stdout; a dry run: predicted)",
    )
    p.add_argument("--dry-run", action="store_true", help="manifests only (HEAD/GET): predict actions and bytes")
    p.add_argument("--immutable-tags", metavar="REGEX", help="trust existing mirror tags for matching source tags")
    p.add_argument(
        "--min-pull-quota",
        type=int,
        metavar="N",
        help="do not start a deployment whose manifest GETs would leave a source's announced pull quota below N",
    )
    p.add_argument("--concurrency", type=int, default=32, metavar="N", help="deployments in flight (default 32)")
    p.add_argument(
        "--blob-concurrency", type=int, default=8, metavar="N", help="blobs in flight per mirror registry (default 8)"
    )
    p.add_argument(
        "--create-repositories",
        action="store_true",
        help="make repositories before the first push where the registry needs it (Amazon ECR; needs ocicopy[aws])",
    )
    p.add_argument("--no-ledger", action="store_true", help="do not read or write the blob ledger")
    p.add_argument("--no-mount", action="store_true", help="never mount blobs across repositories (upload instead)")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument(
        "--dask", metavar="ADDRESS", help="run the copies on this Dask scheduler (tcp://HOST:8786; needs ocicopy[dask])"
    )
    dask.add_argument(
        "--workers", type=int, metavar="N", help="run the copies on a local Dask cluster of N worker processes"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress, no summary")
    _metrics_flags(p)
    _common(p)

    p = sub.add_parser(
        "prune",
        help="remove mirror tags ocicopy made that nothing keeps",
        description="Remove, from the plan's mirror repositories, the mirror tags ocicopy recorded writing that no "
        "deployment, lock file, --keep-last or --older-than keeps (deleted by digest, children after their index, "
        "referrers with their subject). Tags ocicopy did not make are never touched. Exit 0 when done, 1 when a "
        "mirror or repository failed or --max-delete refused the prune, 2 on usage errors.",
    )
    p.add_argument("plan", metavar="PLAN", help="plan file: JSON, or YAML when named .yaml/.yml (needs PyYAML)")
    p.add_argument(
        "--lock", action="append", default=[], metavar="LOCK", help="keep every digest this lock file pins; repeatable"
    )
    p.add_argument("--keep-last", type=int, default=0, metavar="N", help="keep the N most recent tags per deployment")
    p.add_argument("--older-than", metavar="DURATION", help="remove only tags written longer ago (90d, 12h, 2w)")
    p.add_argument(
        "--max-delete",
        default=None,
        metavar="N|P%",
        help="refuse a prune removing more tags than this (default 25%% of ocicopy's tags in the mirrors)",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would go and the bytes it frees; delete nothing")
    p.add_argument("--json", metavar="REPORT", help="write the report as JSON to REPORT ('-' for stdout)")
    p.add_argument(
        "--cluster", action="append", default=[], metavar="NAME", help="only this cluster of the plan; repeatable"
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")
    _metrics_flags(p)
    _common(p)

    p = sub.add_parser(
        "build-key",
        help="print the build key of build inputs",
        description="Print the build key (the mirror tag of a build) for the given inputs.",
    )
    p.add_argument("--repository", required=True, metavar="URL", help="git repository URL")
    p.add_argument("--commit", required=True, metavar="SHA", help="full commit id")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable; repeatable")
    p.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE", help="build argument; repeatable")
    p.add_argument("--dockerfile", default="Dockerfile", metavar="PATH", help="the Dockerfile (default Dockerfile)")
    p.add_argument("--target", metavar="STAGE", help="the build stage")
    p.add_argument("--json", action="store_true", help="print the key with its canonical inputs")
    _debug(p)

    p = sub.add_parser(
        "lookup",
        help="is REF in the registry? (exit 0 found, 3 not found)",
        description="Look REF up with one HEAD. Exit 0 and print the digest when found; exit 3 when not found; "
        "1 on other failures; 2 on usage errors.",
    )
    p.add_argument("ref", metavar="REF")
    _creds_flag(p)
    _common(p)


# --------------------------------------------------------------------------- values, checked before any request


def _validated(model: type[M], flags: Mapping[str, str], **values: Any) -> M:
    """``model`` built from ``values``; a validation error becomes one :class:`InputError` naming the flag."""
    from pydantic import ValidationError

    from ocicopy.errors import SettingsError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise _in_flag_terms(exc.errors()[0], model, flags) from None
    except SettingsError as exc:  # a settings model's own (ocicopy.options)
        raise _in_flag_terms(exc.errors[0], model, flags) from None


def _in_flag_terms(err: Mapping[str, Any], model: type[BaseModel], flags: Mapping[str, str]) -> InputError:
    """A validation error said with the option's name: ``--concurrency must be between 1 and 128``."""
    from ocicopy.errors import InputError, validation_words

    loc = [str(part) for part in err["loc"]]
    flag = flags.get(loc[0], loc[0]) if loc else model.__name__
    if len(loc) == 1 and err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return InputError(f"{flag} {_bounds(model, loc[0])} (got {err['input']!r})")
    return InputError(f"{' '.join([flag, *loc[1:]])}: {validation_words(err)}")


def _bounds(model: type[BaseModel], field: str) -> str:
    """``must be between 1 and 128``, read from the field's own constraints (so it follows the model)."""
    found = {
        name: value
        for meta in model.model_fields[field].metadata
        for name in ("ge", "gt", "le", "lt")
        if (value := getattr(meta, name, None)) is not None
    }
    if "ge" in found and "le" in found:
        return f"must be between {found['ge']} and {found['le']}"
    words = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}
    return "must be " + " and ".join(f"{words[name]} {value}" for name, value in found.items())


def _plain_http_host(value: str) -> str:
    """``--plain-http HOST[:PORT]`` checked and normalised like a reference's registry (what requests use)."""
    from ocicopy.errors import InputError, InvalidReferenceError
    from ocicopy.reference import api_host

    if "://" in value or "/" in value:
        raise InputError(f"--plain-http takes HOST[:PORT], not a URL or a path: {value!r}")
    try:
        return api_host(value)
    except InvalidReferenceError as exc:
        raise InputError(f"--plain-http {exc.reference}: {exc.reason}") from None


def _client_options(args: argparse.Namespace, flags: Mapping[str, str], **values: Any) -> ClientOptions:
    """The client settings of a command: its flags validated (``--plain-http``, ``--no-docker-config``...)."""
    from ocicopy.options import ClientOptions

    values.update(plain_http={_plain_http_host(host) for host in args.plain_http})
    return _validated(ClientOptions, flags, use_docker_config=not args.no_docker_config, **values)


def _cert_dirs(args: argparse.Namespace, *given: tuple[str, str | None, str]) -> dict[str, RegistryConfig]:
    """``--cert-dir DIR`` style flags as per-host settings: ``(flag, DIR, REF)``, each for REF's registry.

    A certs.d-style directory replaces the certs.d roots for that host (skopeo's ``--src-cert-dir``); its files
    are read when the client opens (a bad file: one line naming it).
    """
    from ocicopy.errors import InputError
    from ocicopy.location import is_layout_reference
    from ocicopy.options import RegistryConfig
    from ocicopy.reference import api_host, parse_reference

    plain = {_plain_http_host(host) for host in args.plain_http}
    chosen: dict[str, tuple[str, str]] = {}
    for flag, directory, ref in given:
        if not directory:
            continue
        if is_layout_reference(ref):
            raise InputError(f"{flag} given for an OCI layout ({ref}): layouts are local directories")
        host = api_host(parse_reference(ref.removeprefix("docker://")).registry)
        if host in plain:
            raise InputError(f"{flag} is TLS trust, and {host} is marked --plain-http: drop one of them")
        if host in chosen and chosen[host][1] != directory:
            raise InputError(f"{chosen[host][0]} and {flag} name two directories for one registry, {host}")
        chosen.setdefault(host, (flag, directory))
    return {host: RegistryConfig(cert_dir=directory) for host, (_, directory) in chosen.items()}


def _creds(flag: str, value: str | None, ref: str) -> dict[str, Credentials]:
    if not value:
        return {}
    from ocicopy.credentials import Credentials
    from ocicopy.errors import InputError
    from ocicopy.location import is_layout_reference
    from ocicopy.reference import parse_reference

    if is_layout_reference(ref):
        raise InputError(f"{flag} given for an OCI layout ({ref}): layouts are local directories")
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise InputError(f"{flag} must be USER:PASSWORD")
    return {parse_reference(ref.removeprefix("docker://")).registry: Credentials(user, password)}


def _compression(args: argparse.Namespace) -> Recompression | None:
    from ocicopy.errors import InputError

    if args.dest_compress is None:
        if args.dest_compress_level is not None:
            raise InputError("--dest-compress-level needs --dest-compress zstd")
        return None
    from ocicopy.options import Recompression

    level = {} if args.dest_compress_level is None else {"level": args.dest_compress_level}
    return _validated(Recompression, {"level": "--dest-compress-level"}, format=args.dest_compress, **level)


def _run(command: Callable[..., Awaitable[int]], *args: Any) -> int:
    import anyio

    return anyio.run(command, *args)


# --------------------------------------------------------------------------- copy


def _copy(args: argparse.Namespace) -> int:
    from ocicopy.errors import InputError
    from ocicopy.location import is_layout_reference
    from ocicopy.platforms import parse_platform

    platforms = [parse_platform(p) for p in args.platform]
    src_creds, dest_creds = (
        _creds("--src-creds", args.src_creds, args.src),
        _creds("--dest-creds", args.dest_creds, args.dst),
    )
    for host in src_creds.keys() & dest_creds.keys():
        if src_creds[host] != dest_creds[host]:  # credentials are per registry: one would be dropped
            raise InputError(f"--src-creds and --dest-creds give two different users for one registry, {host}")
    creds = src_creds | dest_creds
    registries = _cert_dirs(
        args, ("--src-cert-dir", args.src_cert_dir, args.src), ("--dest-cert-dir", args.dest_cert_dir, args.dst)
    )
    flags = {"blob_concurrency": "--concurrency"}
    options = _client_options(
        args, flags, blob_concurrency=args.concurrency, mounts=not args.no_mount, registries=registries
    )
    compress = _compression(args)
    if args.artifact_type and not args.referrers:
        raise InputError("--artifact-type filters referrers: add --referrers")
    if args.mount_from and args.no_mount:
        raise InputError("--mount-from asks for mounts and --no-mount turns them off: drop one")
    if args.mount_from and is_layout_reference(args.dst):
        raise InputError(f"--mount-from names repositories of the destination registry, and {args.dst} is a layout")
    return _run(_copy_session, args, options, creds, platforms, compress)


async def _copy_session(
    args: argparse.Namespace,
    options: ClientOptions,
    creds: dict[str, Credentials],
    platforms: list[Any],
    compress: Recompression | None,
) -> int:
    from ocicopy.client import Client
    from ocicopy.display import TerminalProgress, copy_summary

    live = sys.stderr.isatty() and not (args.quiet or args.json or _log(args).json)
    progress = TerminalProgress() if live else None
    async with Client(options, credentials=creds or None, progress=progress) as client:
        try:
            result = await client.copy(
                args.src,
                args.dst,
                platforms=platforms,
                mount_from=args.mount_from,
                compress=compress,
                referrers=args.referrers,
                artifact_types=args.artifact_type,
                create_repository=args.create_repositories,
            )
        finally:
            if progress is not None:
                progress.close()
    args.report = result
    log = _log(args)
    for warning in result.warnings:
        log.warning(warning)
    log.event("copy", **result.model_dump(mode="json", exclude={"blobs", "manifests", "referrers"}))
    if args.json:
        print(result.model_dump_json(indent=2))
    elif not (args.quiet or log.json):
        print(copy_summary(result))
    return EXIT_OK


# --------------------------------------------------------------------------- inspect, digest, referrers, lookup

Reader = Callable[["Client", argparse.Namespace], Awaitable[int]]


def _reader(read: Reader) -> Callable[[argparse.Namespace], int]:
    """A command that reads ``REF``: its flags checked first, then ``read`` with a client open."""

    def command(args: argparse.Namespace) -> int:
        options = _client_options(args, {}, registries=_cert_dirs(args, ("--cert-dir", args.cert_dir, args.ref)))
        creds = _creds("--creds", args.creds, args.ref)
        return _run(_read_session, read, args, options, creds)

    return command


async def _read_session(
    read: Reader, args: argparse.Namespace, options: ClientOptions, creds: dict[str, Credentials]
) -> int:
    from ocicopy.client import Client

    async with Client(options, credentials=creds or None) as client:
        return await read(client, args)


async def _inspect(client: Client, args: argparse.Namespace) -> int:
    if args.raw:
        manifest = await client.inspect(args.ref)
        sys.stdout.buffer.write(manifest.raw)
        sys.stdout.flush()
        return EXIT_OK
    described = await client.describe(args.ref)
    print(described.model_dump_json(indent=2) if args.json else _describe(described))
    return EXIT_OK


def _describe(d: ManifestDescription) -> str:
    from ocicopy.display import human_bytes

    lines = [f"media type  {d.media_type}", f"digest      {d.digest}", f"size        {d.size}"]
    lines += [f"artifact    {d.artifact_type}"] if d.artifact_type else []
    lines += [f"platform    {d.platform}"] if d.platform else []
    lines += [f"created     {d.created}"] if d.created else []
    lines += [f"label       {k}={v}" for k, v in sorted(d.labels.items())]
    lines += [f"subject     {d.subject.digest}  {d.subject.media_type}"] if d.subject else []
    for child in d.manifests:
        lines.append(f"manifest    {child.digest}  {child.platform or '-'}  {child.media_type}")
    for blob in [d.config] if d.config else []:
        lines.append(f"config      {blob.digest}  {human_bytes(blob.size):>10}  {blob.media_type}")
    for blob in d.layers:
        lines.append(f"layer       {blob.digest}  {human_bytes(blob.size):>10}  {blob.media_type}")
    return "\n".join(lines)


async def _digest(client: Client, args: argparse.Namespace) -> int:
    print(await client.digest(args.ref))
    return EXIT_OK


async def _referrers(client: Client, args: argparse.Namespace) -> int:
    import json

    from ocicopy.display import human_bytes

    types = args.artifact_type
    found = await client.referrers(args.ref, types[0] if len(types) == 1 else None)
    found = [d for d in found if not types or d.artifact_type in types]
    if args.json:
        print(json.dumps([d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in found], indent=2))
    else:
        for d in found:
            print(f"{d.digest}  {d.artifact_type or '-'}  {human_bytes(d.size)}")
    return EXIT_OK


async def _lookup(client: Client, args: argparse.Namespace) -> int:
    info = await client.resolve(args.ref)
    if info is None:
        print(f"ocicopy: not found: {args.ref}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(info.digest)
    return EXIT_OK


# --------------------------------------------------------------------------- prune


def _prune(args: argparse.Namespace) -> int:
    from ocicopy.plan import load_plan
    from ocicopy.pruning import DEFAULT_MAX_DELETE, prune_options

    _check_output("--json", args.json, args.plan)
    args.max_delete = args.max_delete if args.max_delete is not None else DEFAULT_MAX_DELETE
    prune_options(  # the flags first: a bad one is exit 2 before the plan is read
        locks=args.lock, keep_last=args.keep_last, older_than=args.older_than, max_delete=args.max_delete
    )
    plan = load_plan(args.plan).only_clusters(args.cluster)
    return _run(_prune_session, args, plan, plan.client_options(_client_options(args, {})))


async def _prune_session(args: argparse.Namespace, plan: Plan, options: ClientOptions) -> int:
    from ocicopy.client import Client
    from ocicopy.display import prune_lines
    from ocicopy.report import write_atomic

    async with Client(options) as client:
        report = await client.prune(
            plan,
            locks=args.lock,
            keep_last=args.keep_last,
            older_than=args.older_than,
            max_delete=args.max_delete,
            dry_run=args.dry_run,
        )
    args.report = report
    if args.json == "-":
        print(report.model_dump_json(indent=2))
    elif args.json:
        write_atomic(args.json, report.model_dump_json(indent=2) + "\n")
    out = sys.stderr if args.json == "-" else sys.stdout
    log = _log(args)
    if report.refused:
        log.error(report.refused)
    for name, cluster in report.clusters.items():
        for warning in cluster.warnings:
            log.warning(f"{name}: {warning}", cluster=name)
        if cluster.error:
            log.error(f"{name}: {cluster.error}", cluster=name)
        for repo in cluster.repositories:
            if repo.error:
                log.error(f"{name}: {repo.repository}: {repo.error}", cluster=name, repository=repo.repository)
    log.event("prune", **report.model_dump(mode="json", exclude={"clusters"}), ok=report.ok)
    if not (args.quiet or log.json):
        for line in prune_lines(report):
            print(line, file=out)
    return EXIT_OK if report.ok else EXIT_FAILURE


# --------------------------------------------------------------------------- mirror, build-key


def _mirror(args: argparse.Namespace) -> int:
    import re

    from ocicopy.errors import InputError
    from ocicopy.mirroring import MAX_MIRROR_CONCURRENCY
    from ocicopy.plan import load_plan

    if not 1 <= args.concurrency <= MAX_MIRROR_CONCURRENCY:
        raise InputError(f"--concurrency must be between 1 and {MAX_MIRROR_CONCURRENCY} (got {args.concurrency})")
    if args.min_pull_quota is not None and args.min_pull_quota < 0:
        raise InputError(f"--min-pull-quota must be 0 or more (got {args.min_pull_quota})")
    if args.immutable_tags is not None:
        try:
            re.compile(args.immutable_tags)
        except re.error as exc:
            raise InputError(f"--immutable-tags is not a regular expression: {exc}") from None
    if args.json == "-" and args.lock == "-":
        raise InputError("--json - and --lock - would both write to stdout: give one of them a file")
    for flag, path in (("--json", args.json), ("--lock", args.lock)):
        _check_output(flag, path, args.plan)
    if args.json not in (None, "-") and args.lock not in (None, "-") and _same_file(args.json, args.lock):
        raise InputError(f"--json {args.json} and --lock {args.lock} name one file: give each its own")
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise InputError(f"--workers must be between 1 and 64 (got {args.workers})")
    flags = {"blob_concurrency": "--blob-concurrency"}
    base = _client_options(args, flags, blob_concurrency=args.blob_concurrency, mounts=not args.no_mount)
    plan = load_plan(args.plan).with_mode(args.mode).only_clusters(args.cluster)
    options = plan.client_options(base)
    if (args.dask is None and args.workers is None) or args.dry_run:  # a dry run runs nothing: no cluster
        return _run(_mirror_session, args, plan, options, None)
    with _dask_client(args) as dask:
        return _run(_mirror_session, args, plan, options, dask)


@contextlib.contextmanager
def _dask_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask cluster of ``--dask ADDRESS`` (connected) or ``--workers N`` (started here, stopped after)."""
    from ocicopy.errors import ExecutorError, InputError

    try:
        import distributed

        from ocicopy.dask_executor import local_cluster
    except ImportError:
        raise InputError('--dask and --workers need Dask: pip install "ocicopy[dask]"') from None
    if args.workers is not None:
        with local_cluster(args.workers, threads=max(args.blob_concurrency, 4)) as client:
            yield client
        return
    import re

    if not re.fullmatch(r"(tcp|tls|ws|wss|inproc|ucx)://[^\s/]+", args.dask):
        raise InputError(f"--dask {args.dask!r} is not a scheduler address (tcp://HOST:PORT)")
    try:
        client = distributed.Client(args.dask, timeout=30)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler at {args.dask}: {exc}") from None
    with client:
        yield client


async def _mirror_session(args: argparse.Namespace, plan: Plan, options: ClientOptions, dask: Any) -> int:
    from ocicopy.client import Client
    from ocicopy.display import MirrorJsonLines, MirrorLines, MirrorTerminal

    lines_to = sys.stderr if "-" in (args.json, args.lock) else sys.stdout  # stdout is the JSON's
    log = _log(args)
    live = sys.stderr.isatty() and not args.quiet and not log.json
    total = sum(len(sub.deployments) for _, sub in plan.cluster_plans())
    progress: Any = (
        MirrorJsonLines(log)
        if log.json
        else MirrorTerminal(total)
        if live
        else None
        if args.quiet
        else MirrorLines(lines_to)
    )
    async with Client(options, progress=progress if live else None) as client:
        try:
            report = await client.mirror(
                plan,
                dry_run=args.dry_run,
                immutable_tags=args.immutable_tags,
                concurrency=args.concurrency,
                ledger=False if args.no_ledger else None,
                min_pull_quota=args.min_pull_quota,
                create_repositories=args.create_repositories,
                progress=progress,
                dask=dask,
                dask_shared_filesystem=args.workers is not None,
            )
        finally:
            if live:
                progress.close()
    args.report = report
    _mirror_output(args, report, lines_to, live)
    return EXIT_OK if report.ok else EXIT_FAILURE


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (links and ``..`` resolved; either may not exist yet)."""
    import os

    return os.path.realpath(a) == os.path.realpath(b)


def _check_output(flag: str, path: str | None, plan: str) -> None:
    """An output file must be writable where it is named, checked before anything is sent: its directory exists
    (and is one), it is not a directory itself, nor the plan it would overwrite."""
    import os
    from pathlib import Path

    from ocicopy.errors import InputError

    if path is None or path == "-":
        return
    if not path:
        raise InputError(f"{flag} needs a file name ('-' for stdout)")
    target = Path(path)
    parent = target.parent
    if plan != "-" and _same_file(path, plan):
        raise InputError(f"{flag} {path} is the plan file: the run would overwrite its own plan")
    if target.is_dir():
        raise InputError(f"{flag} {path}: is a directory")
    if not parent.is_dir():
        raise InputError(
            f"{flag} {path}: {parent} is not a directory"
            if parent.exists()
            else f"{flag} {path}: no directory {parent}"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write into {parent}")


def _mirror_output(args: argparse.Namespace, report: MirrorReport, out: Any, live: bool) -> None:
    from ocicopy.display import deployment_line, mirror_summary
    from ocicopy.report import lock_document, write_atomic, write_lock

    if args.json == "-":
        print(report.model_dump_json(indent=2))
    elif args.json:
        write_atomic(args.json, report.model_dump_json(indent=2) + "\n")
    if args.lock == "-":
        print(lock_document(report).model_dump_json(indent=2))
    elif args.lock:
        write_lock(report, args.lock)
    fleet = len(report.clusters) > 1
    log = _log(args)
    for d in report.deployments:
        label = f"{d.service}/{d.environment}" + (f" in {d.cluster}" if fleet else "")
        where = {"cluster": d.cluster, "service": d.service, "environment": d.environment}
        if live and not args.quiet:
            print(deployment_line(d), file=out)
        if d.error:  # on stderr too: progress may be hidden (-q) or on stdout, never the reason for exit 1
            log.error(f"{label}: {d.error}", **where)
        for warning in d.warnings:
            log.warning(f"{label}: {warning}", **where)
    for warning in report.warnings:
        log.warning(warning)
    log.event("run", **report.model_dump(mode="json", exclude={"deployments", "graph"}), ok=report.ok)
    if not (args.quiet or log.json):
        print(mirror_summary(report), file=out)


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    from ocicopy.errors import InputError

    out = {}
    for value in values:
        name, sep, val = value.partition("=")
        if not sep or not name:
            raise InputError(f"{what} must be NAME=VALUE, got {value!r}")
        out[name] = val
    return out


_BUILD_FLAGS: Mapping[str, str] = {
    "repository": "--repository",
    "commit": "--commit",
    "env": "--env",
    "build_args": "--build-arg",
    "dockerfile": "--dockerfile",
    "target": "--target",
}


def _build_key(args: argparse.Namespace) -> int:
    """Pure: no client, no event loop."""
    import json

    from ocicopy.plan import BuildSpec
    from ocicopy.planner import build_inputs, build_key

    spec = _validated(
        BuildSpec,
        _BUILD_FLAGS,
        repository=args.repository,
        commit=args.commit,
        env=_pairs(args.env, "--env"),
        build_args=_pairs(args.build_arg, "--build-arg"),
        dockerfile=args.dockerfile,
        target=args.target,
    )
    key = build_key(spec)
    if args.json:
        print(json.dumps({"key": key, "inputs": build_inputs(spec)}, indent=2))
    else:
        print(key)
    return EXIT_OK


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "copy": _copy,
    "inspect": _reader(_inspect),
    "digest": _reader(_digest),
    "referrers": _reader(_referrers),
    "mirror": _mirror,
    "prune": _prune,
    "build-key": _build_key,
    "lookup": _reader(_lookup),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit status. Errors: one stderr line, after the traceback with ``--debug``."""
    args = build_parser().parse_args(argv)
    if all(getattr(args, flag, None) is None for flag in ("metrics", "metrics_push", "metrics_instance")):
        return _main(args)
    import time

    from ocicopy.errors import OcicopyError

    try:
        _check_metrics(args)
    except OcicopyError as exc:
        return _failed(args, str(exc), EXIT_USAGE)
    started = time.monotonic()
    status = 130
    try:
        status = _main(args)
    finally:
        _send_metrics(args, status, time.monotonic() - started)
    return status


def _check_metrics(args: argparse.Namespace) -> None:
    from ocicopy.errors import InputError
    from ocicopy.metrics import check_targets

    if args.metrics_instance is not None and args.metrics_push is None:
        raise InputError("--metrics-instance is the Pushgateway's grouping key: add --metrics-push URL")
    check_targets(args.metrics, args.metrics_push)
    if args.metrics is None:
        return
    for flag in ("--json", "--lock"):
        given = getattr(args, flag[2:], None)
        for other in given if isinstance(given, list) else [given]:  # prune's --lock: several lock files
            if isinstance(other, str) and other != "-" and _same_file(args.metrics, other):
                raise InputError(f"--metrics {args.metrics} and {flag} {other} name one file: give each its own")


def _send_metrics(args: argparse.Namespace, status: int, seconds: float) -> None:
    """The run's metrics written and pushed, whatever its end (a failed run says so, its last success kept).
    A metrics file or push that fails is a warning: the run's status stays its own."""
    import time

    from ocicopy import metrics

    report = getattr(args, "report", None)
    # a failed run carries the last success over from the file it replaces (a success is its own)
    previous = metrics.previous_success(args.metrics) if args.metrics is not None and status != 0 else None
    run = metrics.Run(args.command, report, status, time.time(), round(seconds, 6), previous)
    if args.metrics is not None:
        try:
            metrics.write_metrics(metrics.metrics_of(run), args.metrics)
        except OSError as exc:
            _log(args).warning(f"--metrics {args.metrics}: not written: {exc}")
    if args.metrics_push is not None:
        try:
            registry = metrics.metrics_of(run, include_last_success=run.success)
            metrics.push_metrics(registry, args.metrics_push, args.command, args.metrics_instance)
        except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
            _log(args).warning(f"--metrics-push {args.metrics_push}: not pushed: {_one_line(str(exc))}")


def _main(args: argparse.Namespace) -> int:
    from ocicopy.errors import InputError, OcicopyError, unwrap_group

    try:
        with _sigterm_stops() as terminated:
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if terminated:
            print("ocicopy: interrupted by SIGTERM", file=sys.stderr)
            return 128 + 15
        print("ocicopy: interrupted", file=sys.stderr)
        return 130
    except Exception as caught:  # one line each (and the traceback with --debug), a task group's error unwrapped
        exc = unwrap_group(caught)
        if isinstance(exc, OcicopyError):
            return _failed(args, str(exc), EXIT_USAGE if isinstance(exc, InputError) else EXIT_FAILURE)
        return _failed(args, f"unexpected {type(exc).__name__}: {_unexpected(exc)}", EXIT_FAILURE)


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[list[int]]:
    """While the command runs, SIGTERM (``kill``, a cancelled CI job, Kubernetes stopping a pod) stops it as
    Ctrl-C does: the copy is cancelled, upload sessions are ended, temporary files are removed, nothing is
    tagged. The list yielded gets the signal's number once it arrived; a second SIGTERM kills at once."""
    import signal
    import threading

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield got
        return

    def on_sigterm(signum: int, frame: object) -> None:
        got.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)  # asyncio's runner cancels the main task on SIGINT; else KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failed(args: argparse.Namespace, message: str, status: int) -> int:
    """Report the exception being handled: the traceback with ``--debug``, then one line."""
    if args.debug:
        import traceback

        traceback.print_exc()
    _log(args).error(message, exit=status)
    return status


def _log(args: argparse.Namespace) -> Log:
    """The command's stderr voice (``--log-format``)."""
    from ocicopy.display import Log

    log: Log | None = getattr(args, "log", None)
    if log is None:
        log = args.log = Log(getattr(args, "log_format", "text"))
    return log


def _unexpected(exc: BaseException) -> str:
    """An unexpected exception in one line; a pydantic error as its first entry, not pydantic's dump."""
    pydantic_core = sys.modules.get("pydantic_core")
    if pydantic_core is not None and isinstance(exc, pydantic_core.ValidationError):
        err = exc.errors()[0]
        return f"invalid {exc.title} {'.'.join(map(str, err['loc']))}: {err['msg']}"
    return str(exc)


def _one_line(text: str) -> str:
    return " ".join(text.split())
