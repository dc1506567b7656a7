"""Settings, as frozen models: per-registry settings, in-memory caps, timeouts, concurrency."""

from __future__ import annotations

from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ocicopy.errors import InputError, SettingsError, validation_words
from ocicopy.retry import RetryPolicy

MiB = 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class _Settings(BaseModel):
    """A settings model whose bad values are a :class:`SettingsError` (an :class:`InputError`, one line), not
    pydantic's ``ValidationError``: ``ClientOptions(blob_concurrency=500)`` is the caller's input."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise settings_error(exc, type(self).__name__) from None

    # Still pydantic's own validation for a nested value (as RootModel marks its __init__): a bad nested field
    # fails the outer model, with the whole path (registries.HOST.plain_http), not this __init__ on its own.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise settings_error(exc, cls.__name__) from None


def settings_error(exc: ValidationError, model: str) -> SettingsError:
    """``ClientOptions: blob_concurrency: Input should be less than or equal to 128 (got 500)``; what was given
    for a password is never shown (nor kept in ``errors``)."""
    errors = []
    for err in exc.errors(include_url=False):
        if any("password" in str(part) for part in err["loc"]):
            err = {k: v for k, v in err.items() if k != "input"}  # type: ignore[assignment]
        errors.append(err)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    text = validation_words(first)
    shown = "input" in first and first["type"] not in ("missing", "extra_forbidden") and ", not " not in text
    got = f" (got {first['input']!r:.80})" if shown else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SettingsError(f"{model}: {where + ': ' if where else ''}{text}{got}{more}", errors)


class _Frozen(_Settings):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: An AWS region: ``eu-west-3``, ``us-gov-west-1``, ``cn-north-1``, ``us-iso-east-1``...
AWS_REGION = r"[a-z]{2}(-[a-z]+)+-\d{1,2}"


class EcrConfig(_Frozen):
    """An Amazon ECR registry (:mod:`ocicopy.ecr`): its region and account. Recognised from the host name
    (``ACCOUNT.dkr.ecr.REGION.amazonaws.com``), or given on a registry (a proxy, a loopback test)."""

    region: str = Field(pattern=f"^{AWS_REGION}$", description="the AWS region, e.g. eu-west-3")
    registry_id: str | None = Field(
        default=None, pattern=r"^\d{12}$", description="the AWS account id (default: the credentials' account)"
    )


class EcrRepositorySettings(_Frozen):
    """How ocicopy creates an ECR repository (``create_repositories``). Tags stay mutable: a mirror tag may be
    written again (a moved source tag, a rebuilt platform selection). No lifecycle policy unless given: an ECR
    lifecycle rule expires images by count or age, including ones that prune and the lock files keep."""

    scan_on_push: bool = Field(default=False, description="ECR's basic scan of each pushed image")
    lifecycle_policy: dict[str, Any] | None = Field(
        default=None, description="an ECR lifecycle policy document ({'rules': [...]}), set on creation"
    )
    kms_key: str | None = Field(
        default=None, min_length=1, description="encrypt with this KMS key (default: ECR's AES-256)"
    )


class RegistryConfig(_Frozen):
    """Settings for one registry host (``host[:port]``)."""

    plain_http: bool = Field(default=False, description="speak http:// to this host (never a silent fallback)")
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = Field(
        default=None,
        min_length=1,
        description="PEM bundle of CAs trusted for this host, beyond the system store and certs.d",
    )
    cert_dir: str | None = Field(
        default=None,
        min_length=1,
        description="a certs.d-style directory for this host (*.crt CAs, NAME.cert + NAME.key client certificate); "
        "replaces the certs.d directories (skopeo's --src-cert-dir)",
    )
    ecr: EcrConfig | None = Field(
        default=None, description="this host is Amazon ECR (beyond its host name): repositories and tokens via AWS"
    )


class Limits(_Frozen):
    """Caps on every body read into memory, and on what a registry may ask of us."""

    manifest_bytes: int = Field(default=4 * MiB, ge=1024, description="largest manifest accepted")
    error_body_bytes: int = Field(default=64 * 1024, ge=256)
    token_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_chunk_min_length: int = Field(
        default=64 * MiB, ge=1, description="cap on a registry's OCI-Chunk-Min-Length (we buffer one chunk)"
    )
    chunk_size: int = Field(default=16 * MiB, ge=1024, description="PATCH chunk size when chunks are needed")
    max_redirects: int = Field(default=5, ge=0, le=20)
    in_flight: int = Field(
        default=64, ge=1, le=1024, description="requests in flight to one host at most; halved on 429/503, regrown"
    )


class Timeouts(_Frozen):
    connect: float = Field(default=15.0, gt=0)
    read: float = Field(default=120.0, gt=0, description="inactivity timeout on a read or write")
    pool: float = Field(default=300.0, gt=0, description="wait for a free connection")
    request: float = Field(default=300.0, gt=0, description="overall deadline of one request read into memory")
    transfer_base: float = Field(default=120.0, gt=0, description="blob transfer deadline: this many seconds...")
    min_rate: int = Field(default=64 * 1024, gt=0, description="...plus the blob's size at this many bytes/s")

    def transfer_deadline(self, size: int) -> float:
        """Overall deadline of one blob transfer attempt: a source that trickles (slow-loris) cannot hold it."""
        return self.transfer_base + size / self.min_rate


#: Where docker and podman look for per-host trust (``ROOT/HOST[:PORT]/``); expanded when used, not at import.
DEFAULT_CERT_DIR_ROOTS = (
    "/etc/docker/certs.d",
    "/etc/containers/certs.d",
    "~/.config/containers/certs.d",
    "$XDG_CONFIG_HOME/containers/certs.d",
)


class ClientOptions(_Frozen):
    """Everything a :class:`ocicopy.Client` can be told."""

    registries: dict[str, RegistryConfig] = Field(default_factory=dict)
    plain_http: frozenset[str] = Field(default_factory=frozenset, description="hosts spoken to over http://")
    use_docker_config: bool = Field(default=True, description="read ~/.docker/config.json and helpers")
    blob_concurrency: int = Field(default=8, ge=1, le=128, description="blobs transferred at once into one registry")
    mounts: bool = Field(default=True, description="mount blobs across repositories of a registry (False: upload)")
    limits: Limits = Field(default_factory=Limits)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    user_agent: str = "ocicopy"
    cert_dir_roots: tuple[str, ...] = Field(
        default=DEFAULT_CERT_DIR_ROOTS,
        description="certs.d roots read for each https host (a leading ~ or $VAR expanded at use; () reads none)",
    )

    def registry(self, host: str) -> RegistryConfig:
        return self.registries.get(host) or RegistryConfig()

    def is_plain_http(self, host: str) -> bool:
        return host in self.plain_http or self.registry(host).plain_http


class Recompression(_Settings):
    """What ``--dest-compress`` asks for: the target format, its level, and bounds on untrusted input."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    format: Literal["zstd"] = "zstd"
    level: int = Field(default=3, ge=1, le=19, description="zstd level (3: zstd's default; 19: smallest, slow)")
    max_uncompressed: int = Field(
        default=64 * 1024**3, ge=1, description="largest uncompressed layer accepted (decompression bombs)"
    )


def recompression(value: Recompression | str | None, level: int | None = None) -> Recompression | None:
    """``"zstd"`` / a :class:`Recompression` / None, with an optional level override."""
    if value is None:
        return None
    if not isinstance(value, Recompression) and value != "zstd":
        raise InputError(f"unsupported destination compression {value!r}: only 'zstd' is supported")
    chosen = value if isinstance(value, Recompression) else Recompression()
    if level is None:
        return chosen
    if not 1 <= level <= 19:
        raise InputError(f"zstd level {level} is out of range 1-19")
    return revalidated(chosen, level=level)


def revalidated(model: M, **changes: object) -> M:
    """``model`` with ``changes``, validated as a new one would be (``model_copy(update=...)`` checks nothing).

    Nested models are kept as they are (already valid); a bad change raises :class:`SettingsError` for a settings
    model, pydantic's ``ValidationError`` for another.
    """
    return type(model).model_validate({**dict(model), **changes})
