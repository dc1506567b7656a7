"""Amazon ECR's control plane (``pip install "ocicopy[aws]"``: boto3, the AWS credential chain).

ECR refuses a push into a repository that does not exist (404 ``NAME_UNKNOWN``; REGISTRY-QUIRKS.md, "Repositories
that must exist first"), and its registry token comes from the ECR API, not from a token server. So, for a host
that is ECR (:func:`ecr_target`: ``ACCOUNT.dkr.ecr.REGION.amazonaws.com`` and the other partitions' names, or an
explicit ``ecr: {region, registry_id}`` on the registry, :class:`~ocicopy.options.EcrConfig`):

- :meth:`EcrAccounts.ensure` creates a repository before the first push into it (``create_repositories``):
  ``DescribeRepositories`` first (ECR's API has per-account rate limits: one call per repository per process,
  then cached), ``CreateRepository`` when missing, with mutable tags, the plan's scan-on-push, KMS key and
  lifecycle policy (none unless given; set only on a repository made here, which is removed again, if still empty,
  when its policy is refused). ``RepositoryAlreadyExistsException``
  is success: another pipeline made it meanwhile. Concurrent callers for one repository make one call.
- :meth:`EcrAccounts.credentials` answers the registry's Basic challenge with ``GetAuthorizationToken`` (user
  ``AWS``, valid 12 hours, cached until shortly before its expiry), when no docker credential covers the host
  (:class:`~ocicopy.transport.Transport` asks it last, as ``ChainCredentials(docker, ecr)`` would).

boto3 is imported on first use and every call runs in a worker thread (boto3 is synchronous). Credentials come
from the AWS chain (environment, profile, SSO, instance or pod role); endpoints too: ``AWS_ENDPOINT_URL_ECR``
(or ``AWS_ENDPOINT_URL``) points the API elsewhere (a VPC endpoint, moto in the tests): boto3 reads them itself.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.to_thread

from ocicopy.credentials import Credentials
from ocicopy.errors import CloudError, SettingsError
from ocicopy.options import AWS_REGION, EcrConfig, EcrRepositorySettings
from ocicopy.reference import validate_repository

__all__ = ["EcrAccounts", "ecr_target"]

#: ECR's registry host names: ``ACCOUNT.dkr.ecr[-fips].REGION.SUFFIX`` in the commercial, China, GovCloud and
#: ISO partitions, and the dual-stack (IPv6) ``ACCOUNT.dkr-ecr.REGION.on.aws``. The suffixes are those of
#: AWS's own ECR credential providers (kubernetes/cloud-provider-aws, cmd/ecr-credential-provider) and of
#: docs.aws.amazon.com/AmazonECR/latest/userguide/ecr-requests.html (dual-stack). No port: ECR has none.
ECR_HOST: Final = re.compile(
    rf"(?P<account>\d{{12}})\."
    rf"(?:dkr\.ecr(?:-fips)?\.(?P<region>{AWS_REGION})"
    r"\.(?:amazonaws\.com(?:\.cn)?|c2s\.ic\.gov|sc2s\.sgov\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)"
    rf"|dkr-ecr(?:-fips)?\.(?P<dual>{AWS_REGION})\.on\.(?:aws|amazonwebservices\.com\.cn))"
)
#: A token is used until this long before ECR says it expires (tokens last 12 hours).
TOKEN_MARGIN: Final = 300.0
#: ...and at least this long, whatever the expiry says (a skewed clock must not make every request ask again).
TOKEN_FLOOR: Final = 60.0

_Repo = tuple[str | None, str, str]  # (account, region, repository)
_Account = tuple[str | None, str]  # (account, region)


def ecr_target(host: str) -> EcrConfig | None:
    """The ECR registry ``host`` names (``123456789012.dkr.ecr.eu-west-3.amazonaws.com``), or None (any other
    host, one with a port, ECR Public's ``public.ecr.aws``)."""
    found = ECR_HOST.fullmatch(host.lower())
    if found is None:
        return None
    return EcrConfig(region=found["region"] or found["dual"], registry_id=found["account"])


class EcrAccounts:
    """One boto3 ECR client per region, the repositories already ensured and the tokens held, per account; for
    one :class:`~ocicopy.Client` (its lifetime). ``endpoint_url`` overrides boto3's (which honours
    ``AWS_ENDPOINT_URL_ECR``); ``factory(region)`` replaces boto3's client altogether (tests)."""

    def __init__(self, factory: Callable[[str], Any] | None = None, *, endpoint_url: str | None = None) -> None:
        self._factory = factory or functools.partial(_boto3_client, endpoint_url=endpoint_url)
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()  # clients are made in worker threads
        self._ensured: set[_Repo] = set()
        self._locks: dict[_Repo, anyio.Lock] = {}
        self._tokens: dict[_Account, tuple[Credentials, float]] = {}
        self._token_locks: dict[_Account, anyio.Lock] = {}
        self.created: list[str] = []  # repositories this client created (``region/account/name``), in order

    async def ensure(self, config: EcrConfig, repository: str, settings: EcrRepositorySettings | None = None) -> bool:
        """``repository`` exists in the ECR registry ``config`` (made now if it was missing: True). Known ones are
        not asked again; a failure is not remembered (the next call asks)."""
        validate_repository(repository)  # before any call: the name goes into the API request
        key = (config.registry_id, config.region, repository)
        if key in self._ensured:
            return False
        async with self._locks.setdefault(key, anyio.Lock()):
            if key in self._ensured:
                return False
            made = settings or EcrRepositorySettings()
            created = await anyio.to_thread.run_sync(self._ensure, config, repository, made)
            self._ensured.add(key)
        if created:
            self.created.append(f"{config.region}/{config.registry_id or 'default'}/{repository}")
        return created

    def ensured_any(self, config: EcrConfig) -> bool:
        """Some repository of the registry ``config`` was made or found by this client (``create_repositories``)."""
        return any(
            (registry_id, region) == (config.registry_id, config.region) for registry_id, region, _ in self._ensured
        )

    def _ensure(self, config: EcrConfig, repository: str, settings: EcrRepositorySettings) -> bool:
        ecr = self._client(config.region)
        errors = _aws_errors()
        account = {"registryId": config.registry_id} if config.registry_id else {}
        try:
            ecr.describe_repositories(repositoryNames=[repository], **account)
            return False
        except errors as exc:
            if _code(exc) != "RepositoryNotFoundException":
                raise _cloud_error("DescribeRepositories", repository, exc) from None
        try:
            ecr.create_repository(**_create_request(repository, settings), **account)
        except errors as exc:
            if _code(exc) == "RepositoryAlreadyExistsException":
                return False  # made by another pipeline since our Describe: as good
            raise _cloud_error("CreateRepository", repository, exc) from None
        if settings.lifecycle_policy is not None:
            text = json.dumps(settings.lifecycle_policy, separators=(",", ":"))
            try:
                ecr.put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText=text, **account)
            except errors as exc:
                raise _cloud_error(
                    "PutLifecyclePolicy", repository, exc, self._undo(ecr, repository, account)
                ) from None
        return True

    @staticmethod
    def _undo(ecr: Any, repository: str, account: dict[str, str]) -> str:
        """Remove a repository made a moment ago whose policy failed, so the next run makes it whole (a later run
        finds an existing repository and sets nothing on it). Without ``force`` ECR deletes only an empty one: a
        pipeline that pushed into it meanwhile keeps it. What happened, for the error."""
        try:
            ecr.delete_repository(repositoryName=repository, **account)
        except _aws_errors():
            return " (the repository was created without it: set it with aws ecr put-lifecycle-policy)"
        return " (the repository was removed again: the next run makes it with its policy)"

    async def credentials(self, config: EcrConfig) -> Credentials:
        """The registry token (user ``AWS``) from ``GetAuthorizationToken``, cached until shortly before expiry."""
        key = (config.registry_id, config.region)
        async with self._token_locks.setdefault(key, anyio.Lock()):
            held = self._tokens.get(key)
            if held is not None and held[1] > time.time():
                return held[0]
            creds, expires = await anyio.to_thread.run_sync(self._token, config)
            self._tokens[key] = (creds, max(expires - TOKEN_MARGIN, time.time() + TOKEN_FLOOR))
            return creds

    def _token(self, config: EcrConfig) -> tuple[Credentials, float]:
        ecr = self._client(config.region)
        what = config.registry_id or config.region
        account = {"registryIds": [config.registry_id]} if config.registry_id else {}
        try:
            answer = ecr.get_authorization_token(**account)
        except _aws_errors() as exc:
            raise _cloud_error("GetAuthorizationToken", what, exc) from None
        data = (answer.get("authorizationData") or [{}])[0]
        creds = _decode_token(data.get("authorizationToken"))
        if creds is None:  # raised here, outside ``except``: a decoding error would hold the token's bytes
            raise CloudError("GetAuthorizationToken", "MalformedToken", f"ECR GetAuthorizationToken for {what}: "
                             "the answer holds no base64 user:password token")  # fmt: skip
        expires = data.get("expiresAt")
        return creds, expires.timestamp() if hasattr(expires, "timestamp") else 0.0

    def _client(self, region: str) -> Any:
        with self._clients_lock:
            if region not in self._clients:
                self._clients[region] = self._factory(region)
            return self._clients[region]


def _create_request(repository: str, settings: EcrRepositorySettings) -> dict[str, Any]:
    """``CreateRepository``'s arguments: tags mutable (a mirror tag is written again: a moved source tag, a new
    platform selection), the scan and encryption settings given."""
    request: dict[str, Any] = {
        "repositoryName": repository,
        "imageTagMutability": "MUTABLE",
        "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
    }
    if settings.kms_key is not None:
        request["encryptionConfiguration"] = {"encryptionType": "KMS", "kmsKey": settings.kms_key}
    return request


def _decode_token(token: object) -> Credentials | None:
    """``AWS:password`` from the base64 ``authorizationToken``, or None when it is not that."""
    if not isinstance(token, str):
        return None
    try:
        text: str | None = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        text = None
    user, colon, password = (text or "").partition(":")
    return Credentials(user, password) if colon and user and password else None


def _boto3_client(region: str, endpoint_url: str | None = None) -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise SettingsError(
            'Amazon ECR repositories and tokens need boto3: pip install "ocicopy[aws]" (or a docker credential '
            "helper, docker-credential-ecr-login, for the token)"
        ) from None
    # A session of its own: boto3's default one is not thread-safe, and caches the credentials it first found.
    # Without endpoint_url, boto3 honours AWS_ENDPOINT_URL_ECR / AWS_ENDPOINT_URL itself (botocore >= 1.31).
    return boto3.session.Session().client("ecr", region_name=region, endpoint_url=endpoint_url)


@functools.cache
def _aws_errors() -> tuple[type[Exception], ...]:
    """What botocore raises for a refused or failed call (boto3 is installed once a client exists)."""
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    return ClientError, BotoCoreError


def _code(exc: BaseException) -> str:
    """The AWS error code of a botocore error (``ClientError``), or the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _cloud_error(operation: str, what: str, exc: BaseException, after: str = "") -> CloudError:
    """One line: the operation, the repository (or account), the service's code and message (no secrets)."""
    code = _code(exc)
    if code in ("NoCredentialsError", "PartialCredentialsError"):
        return CloudError(
            operation, "NoCredentials", f"ECR {operation} for {what}: no AWS credentials found (environment, "
            f"profile, SSO, instance or pod role){after}",
        )  # fmt: skip
    text = " ".join(str(exc).split())
    return CloudError(operation, code, f"ECR {operation} for {what}: {code}: {text[:300]}{after}")
