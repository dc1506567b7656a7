"""Mirroring plans: the file format (pydantic models) and its loading. Pure apart from reading the file.

A plan names the mirror (registry, repository prefix, mode, cluster), per-registry settings, and the
deployments to mirror: each a service in an environment with either a source ``image`` or a ``build`` from
git. Everything is validated before any network call; an error names the entry, in one line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ocicopy.errors import InputError, InvalidReferenceError, PlanError, validation_words
from ocicopy.location import Location, parse_layout_reference, parse_location
from ocicopy.options import EcrConfig, EcrRepositorySettings
from ocicopy.platforms import parse_platform
from ocicopy.reference import api_host, parse_reference, validate_repository

if TYPE_CHECKING:
    from ocicopy.options import ClientOptions

_NAME: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_COMMIT: Final = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PLAN_BYTES: Final = 16 * 1024 * 1024
#: Plan format versions this ocicopy reads: 1, today's single ``mirror``; 2 adds ``mirrors`` (a fleet). A plan
#: without ``version`` is read as the newest format its fields fit.
PLAN_VERSIONS: Final = (1, 2)
#: The cluster of a plan whose single ``mirror`` names none (service mode): its lock entries and results say it.
DEFAULT_CLUSTER: Final = "default"


def _as_value_error(check: Callable[[str], object], value: str) -> str:
    """Run a check that raises :class:`InputError`; report it as a validation error of this field."""
    try:
        check(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    return value


def _layout_dir(value: str, without_identifier: str) -> str:
    """``oci:DIR`` validated and made absolute (relative paths are taken from the current directory)."""
    try:
        ref = parse_layout_reference(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if ref.identifier is not None:
        raise ValueError(without_identifier)
    return str(ref)


class Mode(StrEnum):
    SERVICE = "service"  # one repository per service: {registry}/{prefix}/{service}
    CLUSTER = "cluster"  # one repository per cluster: {registry}/{prefix}/{cluster}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value) or len(value) > 128:
        raise ValueError(f"{what} {_shown(value)} must be lower-case letters and digits, separated by . _ or -")
    if value == "ocicopy-ledger":
        raise ValueError(f"{what} 'ocicopy-ledger' is reserved for the blob ledger")
    return value


def registry_host(value: str) -> str:
    """A registry ``host[:port]`` as the reference grammar reads it (lower-case; Docker Hub → docker.io).

    It must name a registry by itself: a dot, a port, ``localhost`` or an IPv6 literal (``mirror`` alone
    would be a Docker Hub namespace).
    """
    if not value:
        raise ValueError("must not be empty: a registry host[:port]")
    try:
        ref = parse_reference(f"{value}/x/y", default_tag=None)
    except InvalidReferenceError as exc:  # its reason, not the made-up reference it was read in
        raise ValueError(f"{_shown(value)} is not a registry host[:port]: {exc.reason}") from None
    if ref.repository != "x/y":
        raise ValueError(f"{_shown(value)} is not a registry host[:port] (needs a dot, a port or localhost)")
    return ref.registry


def _shown(value: str, limit: int = 80) -> str:
    """A value fit for a one-line message: control characters escaped, long values cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return value


class MirrorSettings(_Strict):
    registry: str | None = Field(default=None, description="mirror registry host[:port]")
    layout: str | None = Field(
        default=None, description="mirror into OCI image layouts instead: oci:DIR (one layout per repository)"
    )
    prefix: str = Field(default="mirror", description="repository path prefix ('' for none)")
    mode: Mode = Mode.SERVICE
    cluster: str | None = Field(default=None, description="cluster name: the shared repository in cluster mode")
    ledger: StrictBool = Field(default=True, description="keep a blob-location ledger in the mirror (cross-run mounts)")
    ledger_repository: str | None = Field(
        default=None, description="where the ledger lives (default {prefix}/ocicopy-ledger); share it across prefixes"
    )

    compress: Literal["zstd"] | None = Field(default=None, description="recompress gzip layers (zstd)")
    compress_level: StrictInt | None = Field(
        default=None, ge=1, le=19, description="zstd level (default 3; with compress)"
    )
    referrers: StrictBool = Field(default=False, description="also copy signatures, SBOMs and attestations")
    artifact_types: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="only referrers of these artifactTypes"
    )
    create_repositories: StrictBool = Field(
        default=False,
        description="create each repository before the first push where the registry needs it (Amazon ECR)",
    )
    ecr: EcrRepositorySettings | None = Field(
        default=None, description="with create_repositories: how ECR repositories are made (scan on push...)"
    )
    dask_resources: dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[float, Field(gt=0)]] | None = (
        Field(
            default=None,
            description="on Dask: run this mirror's writes on workers offering these resources (e.g. region-eu: 1)",
        )
    )

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        return None if v is None else registry_host(v)

    @field_validator("layout")
    @classmethod
    def _layout(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return _layout_dir(v, "mirror.layout is a directory (oci:DIR), without a tag or digest")

    @model_validator(mode="after")
    def _one_target(self) -> MirrorSettings:
        if (self.registry is None) == (self.layout is None):
            raise ValueError("give exactly one of mirror.registry or mirror.layout")
        if self.compress is not None and self.referrers:
            raise ValueError("compress and referrers exclude each other: signatures name the source digests")
        if self.compress_level is not None and self.compress is None:
            raise ValueError("compress_level needs compress: zstd")
        if self.artifact_types and not self.referrers:
            raise ValueError("artifact_types filters referrers: add referrers: true")
        if self.ecr is not None and not self.create_repositories:
            raise ValueError("ecr sets how repositories are created: add create_repositories: true")
        if self.create_repositories and self.layout is not None:
            raise ValueError("create_repositories is for a registry mirror (a layout makes its own directories)")
        return self

    @property
    def root(self) -> str:
        """The registry host, or ``oci:DIR``."""
        root = self.registry or self.layout
        assert root is not None
        return root

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return _as_value_error(validate_repository, v) if v else v

    @field_validator("ledger_repository")
    @classmethod
    def _ledger_repository(cls, v: str | None) -> str | None:
        return None if v is None else _as_value_error(validate_repository, v)

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str | None) -> str | None:
        return None if v is None else _check_name(v, "cluster")


class RegistrySettings(_Strict):
    plain_http: StrictBool = False
    username: str | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the password")
    ca_file: str | None = Field(
        default=None, min_length=1, description="PEM bundle of CAs trusted for this host (relative: to the plan file)"
    )
    cert_dir: str | None = Field(
        default=None,
        min_length=1,
        description="certs.d-style directory for this host, replacing the certs.d roots (relative: to the plan file)",
    )
    ecr: EcrConfig | None = Field(
        default=None, description="this host is Amazon ECR (region, registry_id), beyond what its name says"
    )

    @field_validator("password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.fullmatch(v):
            raise ValueError(f"password_env {v!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _pair(self) -> RegistrySettings:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        if self.plain_http and (self.ca_file or self.cert_dir):
            raise ValueError("ca_file/cert_dir are TLS settings: they cannot apply with plain_http")
        return self

    def relative_to(self, base: Path) -> RegistrySettings:
        """These settings with relative ``ca_file``/``cert_dir`` taken from ``base`` (the plan file's directory)."""
        changes = {
            name: str(base / value)
            for name in ("ca_file", "cert_dir")
            if (value := getattr(self, name)) is not None and not Path(value).expanduser().is_absolute()
        }
        return self.model_copy(update=changes) if changes else self


class BuildSpec(_Strict):
    """The inputs of a build from git; their canonical hash is the build key."""

    repository: str = Field(min_length=1, max_length=2048)
    commit: str = Field(description="full commit id (40 or 64 hex)")
    env: dict[str, str] = Field(default_factory=dict)
    build_args: dict[str, str] = Field(default_factory=dict)
    dockerfile: str = "Dockerfile"
    target: str | None = None
    output: str | None = Field(
        default=None,
        description="oci:DIR where the builder writes its result tagged with the build key (pushed when needed)",
    )

    @field_validator("output")
    @classmethod
    def _output(cls, v: str | None) -> str | None:
        if v is None:
            return None
        return _layout_dir(v, "build.output is a layout directory (oci:DIR): the build key is its tag")

    @field_validator("commit")
    @classmethod
    def _commit(cls, v: str) -> str:
        v = v.lower()
        if not _COMMIT.fullmatch(v):
            raise ValueError("commit must be a full commit id (40 or 64 hex digits), not an abbreviation or a branch")
        return v

    @field_validator("env", "build_args")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"{_shown(key)} is not a variable name")
            _utf8(value)
        return v

    @field_validator("repository", "dockerfile", "target")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else _utf8(v)

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not v.strip().rstrip("/").removesuffix(".git"):
            raise ValueError("repository is empty")
        return v


class Deployment(_Strict):
    service: str
    environment: str
    image: str | None = None
    build: BuildSpec | None = None
    platforms: list[str] = Field(default_factory=list, description="copy only these platforms of an index")
    clusters: list[str] | None = Field(
        default=None, min_length=1, description="the clusters (keys of mirrors) it goes to; absent: every one"
    )

    @field_validator("service", "environment")
    @classmethod
    def _names(cls, v: str, info: Any) -> str:
        return _check_name(v, info.field_name)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None:
            _as_value_error(parse_location, v)
        return v

    @field_validator("clusters")
    @classmethod
    def _clusters(cls, v: list[str] | None) -> list[str] | None:
        for name in v or ():
            _check_name(name, "cluster")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"a cluster is named twice: {', '.join(v)}")
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: list[str]) -> list[str]:
        for p in v:
            _as_value_error(parse_platform, p)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Deployment:
        if (self.image is None) == (self.build is None):
            raise ValueError("give exactly one of 'image' or 'build'")
        return self

    @property
    def source(self) -> Location | None:
        return parse_location(self.image) if self.image is not None else None

    def goes_to(self, cluster: str) -> bool:
        """Whether it is mirrored for ``cluster`` (without ``clusters``: for every one)."""
        return self.clusters is None or cluster in self.clusters

    @property
    def label(self) -> str:
        return f"{self.service}/{self.environment}"


class Plan(_Strict):
    """A mirroring plan (see README "Mirroring"): one ``mirror``, or a fleet of ``mirrors`` keyed by cluster name.

    The engine runs one cluster at a time through :meth:`for_cluster`, a single-``mirror`` plan of the
    deployments that go there; :meth:`clusters` lists them, in plan order."""

    version: StrictInt | None = Field(default=None, description="plan format (1: one mirror; 2: mirrors)")
    mirror: MirrorSettings | None = Field(default=None, description="the one mirror (a plan for one cluster)")
    mirrors: dict[str, MirrorSettings] | None = Field(
        default=None, description="a fleet: the mirror of each cluster, keyed by cluster name"
    )
    registries: dict[str, RegistrySettings] = Field(default_factory=dict)
    deployments: list[Deployment] = Field(min_length=1)
    immutable_tags: str | None = Field(default=None, description="regex of source tags trusted never to move")

    @field_validator("registries")
    @classmethod
    def _hosts(cls, v: dict[str, RegistrySettings]) -> dict[str, RegistrySettings]:
        out: dict[str, RegistrySettings] = {}
        for key, settings in v.items():
            host = registry_host(key)
            if host in out:
                raise ValueError(f"registry {_shown(key)} is listed twice (as another spelling of {host})")
            out[host] = settings
        return out

    @field_validator("immutable_tags")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"immutable_tags is not a valid regular expression: {exc}") from None
        return v

    @field_validator("version")
    @classmethod
    def _version(cls, v: int | None) -> int | None:
        if v is not None and v not in PLAN_VERSIONS:
            raise ValueError(f"plan version {v} is not one this ocicopy reads ({', '.join(map(str, PLAN_VERSIONS))})")
        return v

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, v: dict[str, MirrorSettings] | None) -> dict[str, MirrorSettings] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("mirrors must name at least one cluster")
        out = {}
        for name, settings in v.items():
            _check_name(name, "cluster")
            if settings.cluster not in (None, name):
                raise ValueError(
                    f"{name}: cluster {settings.cluster!r} differs from its key: the key names the cluster"
                )
            out[name] = settings.model_copy(update={"cluster": name})  # validated already; the key is the name
        return out

    @model_validator(mode="after")
    def _checks(self) -> Plan:
        if (self.mirror is None) == (self.mirrors is None):
            raise ValueError(
                "give mirror (one cluster) or mirrors (a fleet, keyed by cluster name), not both"
                if self.mirror is not None
                else "give mirror (one cluster) or mirrors (a fleet)"
            )
        if self.mirrors is not None and self.version == 1:
            raise ValueError('mirrors is a version 2 field: say "version": 2 (or leave version out)')
        if self.mirror is not None and self.mirror.mode is Mode.CLUSTER and self.mirror.cluster is None:
            raise ValueError("mirror.cluster is required in cluster mode")
        clusters = self.clusters()
        seen: dict[tuple[str, str, str], int] = {}
        for i, d in enumerate(self.deployments):
            unknown = [c for c in d.clusters or () if c not in clusters]
            if unknown:
                raise ValueError(
                    f"deployments[{i}] ({d.label}): clusters: no mirror for {', '.join(map(repr, unknown))} "
                    f"(the plan's clusters: {', '.join(clusters)})"
                )
            for cluster in d.clusters or clusters:
                mirror = clusters[cluster]
                name = mirror.cluster if mirror.mode is Mode.CLUSTER else d.service
                full = "/".join(p for p in (mirror.registry, mirror.prefix, name) if p)
                if mirror.registry is not None and len(full) > 255:
                    raise ValueError(
                        f"deployments[{i}] ({d.label}): mirror repository {full[:60]}... is over 255 characters"
                    )
                key = (cluster, d.service, d.environment)
                if key in seen:
                    first, where = seen[key], f" in cluster {cluster}" if self.mirrors is not None else ""
                    raise ValueError(
                        f"deployments[{i}] ({d.label}): same service and environment as deployments[{first}]{where}"
                    )
                seen[key] = i
        return self

    def clusters(self) -> dict[str, MirrorSettings]:
        """Each cluster's mirror, in plan order; a single ``mirror`` is one cluster (its ``cluster``, else
        ``default``)."""
        if self.mirrors is not None:
            return dict(self.mirrors)
        assert self.mirror is not None
        return {self.mirror.cluster or DEFAULT_CLUSTER: self.mirror}

    @property
    def is_fleet(self) -> bool:
        """A plan of ``mirrors`` (even of one cluster): its results name each cluster."""
        return self.mirrors is not None

    @property
    def target(self) -> MirrorSettings:
        """The mirror of a single-``mirror`` plan (what :meth:`for_cluster` gives): the engine's view."""
        if self.mirror is None:
            raise PlanError("a fleet plan runs one cluster at a time: use plan.for_cluster(name)")
        return self.mirror

    def for_cluster(self, name: str) -> Plan | None:
        """The single-``mirror`` plan of cluster ``name``'s deployments (None when none goes there)."""
        clusters = self.clusters()
        if name not in clusters:
            raise PlanError(f"no cluster {name!r} in the plan (its clusters: {', '.join(clusters)})")
        if self.mirrors is None:
            return self
        deployments = [d.model_copy(update={"clusters": None}) for d in self.deployments if d.goes_to(name)]
        if not deployments:
            return None
        return self.model_copy(update={"mirror": clusters[name], "mirrors": None, "deployments": deployments})

    def cluster_plans(self) -> list[tuple[str, Plan]]:
        """``(cluster, single-mirror plan)`` for each cluster some deployment goes to, in plan order."""
        return [(name, sub) for name in self.clusters() if (sub := self.for_cluster(name)) is not None]

    def only_clusters(self, names: Sequence[str]) -> Plan:
        """The plan limited to ``names`` (``--cluster``): an unknown name, or a selection no deployment goes to, is
        a :class:`PlanError`."""
        clusters = self.clusters()
        unknown = [n for n in names if n not in clusters]
        if unknown:
            raise PlanError(
                f"no cluster {', '.join(map(repr, unknown))} in the plan (its clusters: {', '.join(clusters)})"
            )
        if not names or set(names) == set(clusters):
            return self
        if self.mirrors is None:
            return self
        kept = {n: m for n, m in self.mirrors.items() if n in names}
        deployments = [
            d.model_copy(update={"clusters": [c for c in d.clusters if c in kept]}) if d.clusters is not None else d
            for d in self.deployments
            if any(d.goes_to(c) for c in kept)
        ]
        if not deployments:
            raise PlanError(f"no deployment goes to {', '.join(names)}")
        return self.model_copy(update={"mirrors": kept, "deployments": deployments})

    def with_mode(self, mode: Mode | str | None) -> Plan:
        """The plan with ``mirror.mode`` overridden (``--mode``), re-validated."""
        if mode is None:
            return self
        try:
            chosen = Mode(mode)
        except ValueError:
            raise PlanError(f"mode {_shown(str(mode))} must be 'service' or 'cluster'") from None
        data = self.model_dump(mode="json", exclude_none=True)
        for mirror in [data["mirror"]] if "mirror" in data else data["mirrors"].values():
            mirror["mode"] = chosen.value
        return parse_plan(data)

    def with_created_repositories(self, create: bool = True) -> Plan:
        """The plan with ``create_repositories`` set on every registry mirror (``--create-repositories``)."""
        if not create:
            return self
        data = self.model_dump(mode="json", exclude_none=True)
        for mirror in [data["mirror"]] if "mirror" in data else data["mirrors"].values():
            if "registry" in mirror:
                mirror["create_repositories"] = True
        return parse_plan(data)

    def client_options(self, base: ClientOptions | None = None, env: Mapping[str, str] | None = None) -> ClientOptions:
        """Client settings for this plan's registries; passwords are read from the environment now."""
        return registry_options(self.registries, base, env)


def registry_options(
    settings_by_host: Mapping[str, RegistrySettings],
    base: ClientOptions | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientOptions:
    """``base`` with a plan's ``registries`` settings; passwords read from ``env`` (the environment) now: where
    the run is, or on each Dask worker (:mod:`ocicopy.dask_executor`)."""
    from ocicopy.options import ClientOptions, revalidated  # not needed to read a plan

    env = os.environ if env is None else env
    base = base or ClientOptions()
    registries = dict(base.registries)
    for host, settings in settings_by_host.items():
        password = None
        if (variable := settings.password_env) is not None:
            if variable not in env:
                raise PlanError(f"plan: registries: {host}: environment variable {variable} is not set")
            password = env[variable]
            if not password:
                raise PlanError(f"plan: registries: {host}: environment variable {variable} is empty")
        key = api_host(host)
        # What the caller said (the CLI's --cert-dir) stays unless the plan says otherwise for this host.
        given = base.registry(key)
        registries[key] = revalidated(
            given,
            plain_http=settings.plain_http or given.plain_http,
            username=settings.username if settings.username is not None else given.username,
            password=password if password is not None else given.password,
            ca_file=settings.ca_file or given.ca_file,
            cert_dir=settings.cert_dir or given.cert_dir,
            ecr=settings.ecr or given.ecr,
        )
    return revalidated(base, registries=registries)


def parse_plan(data: object) -> Plan:
    """Validate a decoded plan; raise :class:`PlanError` naming the first bad entry."""
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(_describe(exc, data)) from None


def load_plan(path: str | Path) -> Plan:
    """Read a plan file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is installed."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"cannot read plan {p}: {exc.strerror}") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(f"plan {p} is larger than {MAX_PLAN_BYTES} bytes")
    plan = parse_plan(_decode(raw, p))
    base = p.parent.absolute()
    if not any(s.ca_file or s.cert_dir for s in plan.registries.values()):
        return plan
    return plan.model_copy(update={"registries": {h: s.relative_to(base) for h, s in plan.registries.items()}})


def _decode(raw: bytes, path: Path) -> object:
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise PlanError(f"plan {path} is YAML: install PyYAML (pip install 'ocicopy[yaml]') or use JSON") from None
        try:
            return yaml.load(raw, Loader=_unique_keys_loader(yaml))  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as exc:
            raise PlanError(f"plan {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise PlanError(f"plan {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") from None
    except RecursionError:
        raise PlanError(f"plan {path} is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        said = str(exc)
        if "int_max_str_digits" in said:  # Python's advice on its own limit is not the plan author's
            said = "a number of over 4300 digits"
        raise PlanError(f"plan {path} is not valid JSON: {said}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (json's default keeps the last silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {_shown(key)} appears twice in one object")
        out[key] = value
    return out


def _unique_keys_loader(yaml: Any) -> Any:
    """PyYAML's safe loader, refusing a mapping key given twice (PyYAML keeps the last silently)."""

    class UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *anchor": keys merged in are overridden by the mapping's own (YAML's merge)
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _describe(exc: ValidationError, data: object) -> str:
    """One line naming the entry: ``deployments[3] (api/prod): image: invalid image reference ...``."""
    err = exc.errors()[0]
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "deployments" and isinstance(loc[1], int):
        where = f"deployments[{loc[1]}]{_deployment_label(data, loc[1])}"
        loc = loc[2:]
    elif loc:
        where = str(loc.pop(0))
    field = ".".join(p if isinstance(p, int) else _shown(p).strip("'\"") for p in map(_loc, loc))
    msg = validation_words(err)  # pydantic's wording names its classes ("a valid dictionary or instance of Plan")
    parts = [p for p in (where, field) if p]
    text = f"plan: {': '.join(parts)}: {msg}" if parts else f"plan: {msg}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:1000]


def _loc(part: object) -> str:
    return str(part)


def _deployment_label(data: object, index: int) -> str:
    try:
        entry = data["deployments"][index]  # type: ignore[index]
        label = f"{entry['service']}/{entry['environment']}"
        return f" ({label})" if len(label) <= 80 and label.isprintable() else f" ({_shown(label)})"
    except (TypeError, KeyError, IndexError):
        return ""
