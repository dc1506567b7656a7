"""Amazon ECR's control plane (``pip install "ocicopy[aws]"``: boto3, the AWS credential chain).

ECR refuses a push into a repository that does not exist (404 ``NAME_UNKNOWN``; REGISTRY-QUIRKS.md, "Amazon
ECR"), and its registry token comes from the ECR API, not from a token server. So, for a host that is ECR
(:func:`ecr_target`: ``ACCOUNT.dkr.ecr.REGION.amazonaws.com``, or an explicit ``ecr: {region, registry_id}`` on
the registry, :class:`~ocicopy.options.EcrConfig`):

- :meth:`EcrAccounts.ensure` creates a repository before the first push into it (``create_repositories``):
  ``DescribeRepositories`` first (ECR's API has per-account rate limits: one call per repository per process,
  then cached), ``CreateRepository`` when missing, with mutable tags, the plan's scan-on-push, KMS key and
  lifecycle policy (none unless given). ``RepositoryAlreadyExistsException`` is success: another pipeline made
  it meanwhile. Concurrent callers for one repository make one call.
- :meth:`EcrAccounts.credentials` answers the registry's Basic challenge with ``GetAuthorizationToken`` (user
  ``AWS``, valid 12 hours, cached until shortly before its expiry), when no docker credential covers the host
  (:class:`~ocicopy.transport.Transport` asks it last).

boto3 is imported on first use and every call runs in a worker thread (boto3 is synchronous). Credentials come
from the AWS chain (environment, profile, SSO, instance or pod role); endpoints too: ``AWS_ENDPOINT_URL_ECR``
(or ``AWS_ENDPOINT_URL``) points the API elsewhere (a VPC endpoint, moto in the tests).
"""

from __future__ import annotations

import base64
import json
import re
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

#: ECR's registry host names (commercial, FIPS, China partitions).
ECR_HOST: Final = re.compile(
    rf"(?P<account>\d{{12}})\.dkr\.ecr(?:-fips)?\.(?P<region>{AWS_REGION})\.amazonaws\.com(?:\.cn)?"
)
#: A token is used until this long before ECR says it expires (tokens last 12 hours).
TOKEN_MARGIN: Final = 300.0
#: ...and at least this long, whatever the expiry says (a skewed clock must not make every request ask again).
TOKEN_FLOOR: Final = 60.0


def ecr_target(host: str) -> EcrConfig | None:
    """The ECR registry ``host`` names (``123456789012.dkr.ecr.eu-west-3.amazonaws.com``), or None."""
    found = ECR_HOST.fullmatch(host.lower())
    if found is None:
        return None
    return EcrConfig(region=found["region"], registry_id=found["account"])


class EcrAccounts:
    """One boto3 ECR client per (region, account), the repositories already ensured, the tokens held; for one
    :class:`~ocicopy.Client` (its lifetime)."""

    def __init__(self, factory: Callable[[str], Any] | None = None) -> None:
        self._factory = factory or _boto3_client
        self._clients: dict[str, Any] = {}
        self._ensured: set[tuple[str | None, str, str]] = set()
        self._locks: dict[tuple[str | None, str, str], anyio.Lock] = {}
        self._tokens: dict[tuple[str | None, str], tuple[Credentials, float]] = {}
        self._token_lock = anyio.Lock()
        self.created: list[str] = []  # repositories this client created (``region/account/name``), in order

    async def ensure(self, config: EcrConfig, repository: str, settings: EcrRepositorySettings | None = None) -> bool:
        """``repository`` exists in the ECR registry ``config`` (made now if it was missing: True)."""
        validate_repository(repository)  # before any call: the name goes into the API request
        key = (config.registry_id, config.region, repository)
        if key in self._ensured:
            return False
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key in self._ensured:
                return False
            created = await anyio.to_thread.run_sync(
                self._ensure, config, repository, settings or EcrRepositorySettings()
            )
            self._ensured.add(key)
        if created:
            self.created.append(f"{config.region}/{config.registry_id or 'default'}/{repository}")
        return created

    def _ensure(self, config: EcrConfig, repository: str, settings: EcrRepositorySettings) -> bool:
        ecr = self._client(config.region)
        account = {"registryId": config.registry_id} if config.registry_id else {}
        try:
            ecr.describe_repositories(repositoryNames=[repository], **account)
            return False
        except Exception as exc:
            if _code(exc) != "RepositoryNotFoundException":
                raise _cloud_error("DescribeRepositories", repository, exc) from None
        create: dict[str, Any] = {
            "repositoryName": repository,
            "imageTagMutability": "MUTABLE",  # mirror tags are written again (a moved source tag)
            "imageScanningConfiguration": {"scanOnPush": settings.scan_on_push},
            **account,
        }
        if settings.kms_key is not None:
            create["encryptionConfiguration"] = {"encryptionType": "KMS", "kmsKey": settings.kms_key}
        try:
            ecr.create_repository(**create)
        except Exception as exc:
            if _code(exc) == "RepositoryAlreadyExistsException":
                return False  # made by another pipeline since our Describe: as good
            raise _cloud_error("CreateRepository", repository, exc) from None
        if settings.lifecycle_policy is not None:
            text = json.dumps(settings.lifecycle_policy, separators=(",", ":"))
            try:
                ecr.put_lifecycle_policy(repositoryName=repository, lifecyclePolicyText=text, **account)
            except Exception as exc:
                raise _cloud_error("PutLifecyclePolicy", repository, exc) from None
        return True

    async def credentials(self, config: EcrConfig) -> Credentials:
        """The registry token (user ``AWS``) from ``GetAuthorizationToken``, cached until shortly before expiry."""
        key = (config.registry_id, config.region)
        async with self._token_lock:
            held = self._tokens.get(key)
            if held is not None and held[1] > time.time():
                return held[0]
            creds, expires = await anyio.to_thread.run_sync(self._token, config)
            self._tokens[key] = (creds, max(expires - TOKEN_MARGIN, time.time() + TOKEN_FLOOR))
            return creds

    def _token(self, config: EcrConfig) -> tuple[Credentials, float]:
        ecr = self._client(config.region)
        account = {"registryIds": [config.registry_id]} if config.registry_id else {}
        try:
            data = ecr.get_authorization_token(**account)["authorizationData"][0]
            user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        except Exception as exc:
            raise _cloud_error("GetAuthorizationToken", config.registry_id or config.region, exc) from None
        expires = data.get("expiresAt")
        return Credentials(user, password), expires.timestamp() if hasattr(expires, "timestamp") else 0.0

    def _client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self._factory(region)
        return self._clients[region]


def _boto3_client(region: str) -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise SettingsError(
            'Amazon ECR repositories and tokens need boto3: pip install "ocicopy[aws]" (or a docker credential '
            "helper, docker-credential-ecr-login, for the token)"
        ) from None
    # A session of its own: boto3's default one is not thread-safe, and caches the credentials it first found.
    return boto3.session.Session().client("ecr", region_name=region)  # AWS_ENDPOINT_URL_ECR is boto3's own


def _code(exc: BaseException) -> str:
    """The AWS error code of a botocore error (``ClientError``), or the exception's class name."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _cloud_error(operation: str, what: str, exc: BaseException) -> CloudError:
    code = _code(exc)
    if code in ("NoCredentialsError", "PartialCredentialsError"):
        return CloudError(
            operation, "NoCredentials", f"ECR {operation} for {what}: no AWS credentials found (environment, "
            "profile, SSO, instance or pod role)",
        )  # fmt: skip
    text = " ".join(str(exc).split())
    return CloudError(operation, code, f"ECR {operation} for {what}: {code}: {text[:300]}")
