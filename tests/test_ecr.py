"""Amazon ECR (issue 13): repositories made before the first push, and the registry token from the AWS chain.

The control plane is moto's server mode (a real process, reached through ``AWS_ENDPOINT_URL_ECR`` as in
production: boto3 reads it); the data plane is the fake registry playing ECR (a repository exists only where
moto holds it: NAME_UNKNOWN otherwise, pushes included; Basic auth with the token moto hands out), marked ECR by
an explicit ``ecr: {region, registry_id}`` (loopback has no ECR host name). Host names with hypothesis."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ocicopy
from harness import images as im
from harness.fake_registry import FakeRegistry, Request, Response
from harness.moto_server import ACCOUNT, REGION, MotoServer
from harness.registry import free_port
from ocicopy import ecr as ecr_module
from ocicopy.ecr import EcrAccounts, ecr_target
from ocicopy.errors import CloudError, InvalidReferenceError, SettingsError
from ocicopy.options import EcrConfig, EcrRepositorySettings

# --------------------------------------------------------------------------- pure

regions = st.from_regex(r"(eu|us|ap|sa|ca|me|af|cn)-(west|east|north|south|central|southeast|gov-west|iso-east"
                        r"|isob-east|isoe-west)-[1-9]", fullmatch=True)  # fmt: skip
accounts = st.from_regex(r"\d{12}", fullmatch=True)
#: every (service label, domain) ECR answers on: IPv4 names per partition, and the dual-stack (IPv6) names
ECR_NAMES = [
    *((service, domain) for service in ("dkr.ecr", "dkr.ecr-fips")
      for domain in ("amazonaws.com", "amazonaws.com.cn", "c2s.ic.gov", "sc2s.sgov.gov", "cloud.adc-e.uk",
                     "csp.hci.ic.gov")),
    ("dkr-ecr", "on.aws"), ("dkr-ecr-fips", "on.aws"), ("dkr-ecr", "on.amazonwebservices.com.cn"),
]  # fmt: skip
ecr_hosts = st.builds(lambda a, r, n: f"{a}.{n[0]}.{r}.{n[1]}", accounts, regions, st.sampled_from(ECR_NAMES))


@given(accounts, regions, st.sampled_from(ECR_NAMES), st.booleans())
def test_an_ecr_host_names_its_region_and_account(
    account: str, region: str, name: tuple[str, str], upper: bool
) -> None:
    host = f"{account}.{name[0]}.{region}.{name[1]}"
    assert ecr_target(host.upper() if upper else host) == EcrConfig(region=region, registry_id=account)


@given(ecr_hosts, st.integers(min_value=0, max_value=65535))
def test_an_ecr_host_with_a_port_is_not_ecr(host: str, port: int) -> None:
    assert ecr_target(host) is not None and ecr_target(f"{host}:{port}") is None


@given(ecr_hosts, st.sampled_from(["", "x.", "-", "1"]), st.sampled_from(["", ".", ".evil.example", "/v2/", "x"]))
def test_an_ecr_host_inside_another_name_is_not_ecr(host: str, before: str, after: str) -> None:
    if before or after:
        assert ecr_target(before + host + after) is None


@given(st.text(max_size=80))
def test_other_hosts_are_not_ecr(text: str) -> None:
    if ".dkr.ecr" not in text and ".dkr-ecr" not in text:
        assert ecr_target(text) is None


@pytest.mark.parametrize(
    "host",
    [
        "123456789012.dkr.ecr.eu-west-3.amazonaws.com:443",  # a port: not ECR's name
        "12345678901.dkr.ecr.eu-west-3.amazonaws.com",  # 11 digits
        "123456789012.dkr.ecr.eu-west-3.amazonaws.com.evil.example",
        "123456789012.dkr.ecr.eu-west-3.on.aws",  # the dual-stack name is dkr-ecr
        "123456789012.dkr-ecr.eu-west-3.amazonaws.com",
        "123456789012.dkr.ecr.Europe.amazonaws.com",  # not a region
        "api.ecr.eu-west-3.amazonaws.com",  # the API, not the registry
        "public.ecr.aws",  # ECR Public: anonymous pulls, another API
        "ghcr.io",
    ],
)
def test_near_misses_are_not_ecr(host: str) -> None:
    assert ecr_target(host) is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"region": "Europe"}, "region"),
        ({"region": "eu-west-3", "registry_id": "12"}, "registry_id"),
        ({"region": "eu-west-3", "account": ACCOUNT}, "account"),
    ],
)
def test_bad_ecr_settings_are_one_line(data: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        EcrConfig(**data)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("mirror", "message"),
    [
        ({"registry": "r.example", "ecr": {"scan_on_push": True}}, "add create_repositories: true"),
        ({"layout": "oci:/tmp/x", "create_repositories": True}, "create_repositories is for a registry mirror"),
        ({"registry": "r.example", "create_repositories": True, "ecr": {"scan": True}}, "scan"),
    ],
)
def test_bad_plan_settings_name_the_entry(mirror: dict[str, Any], message: str) -> None:
    plan = {"mirror": mirror, "deployments": [{"service": "a", "environment": "p", "image": "r.example/a:1"}]}
    with pytest.raises(ocicopy.PlanError) as caught:
        ocicopy.parse_plan(plan)
    assert message in str(caught.value), caught.value


# --------------------------------------------------------------------------- the control plane (moto)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with MotoServer(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    for key, value in moto.env().items():
        monkeypatch.setenv(key, value)
    return moto


class Counting:
    """A real boto3 ECR client whose calls are counted (and, for a race, preceded by ``before[name]``)."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, []  # type: ignore[var-annotated]
        self.before: dict[str, Any] = {}
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(**kwargs: Any) -> Any:
            with self.lock:
                self.calls.append(name)
            if name in self.before:
                self.before.pop(name)()
            return method(**kwargs)

        return call


def counting(moto: MotoServer) -> tuple[EcrAccounts, Counting]:
    import boto3

    spy = Counting(boto3.client("ecr", region_name=REGION))  # the endpoint from AWS_ENDPOINT_URL_ECR
    return EcrAccounts(lambda region: spy), spy


ECR = EcrConfig(region=REGION, registry_id=ACCOUNT)


def test_a_repository_is_made_once_with_the_settings(aws: MotoServer) -> None:
    accounts, spy = counting(aws)
    policy = {"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
              "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]}  # fmt: skip
    settings = EcrRepositorySettings(scan_on_push=True, lifecycle_policy=policy)
    assert anyio.run(accounts.ensure, ECR, "made/api", settings) is True
    assert anyio.run(accounts.ensure, ECR, "made/api", settings) is False  # known: no call
    assert spy.calls == ["describe_repositories", "create_repository", "put_lifecycle_policy"]
    ecr = aws.client()
    (repo,) = ecr.describe_repositories(repositoryNames=["made/api"])["repositories"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True} and repo["imageTagMutability"] == "MUTABLE"
    assert json.loads(ecr.get_lifecycle_policy(repositoryName="made/api")["lifecyclePolicyText"]) == policy
    assert accounts.created == [f"{REGION}/{ACCOUNT}/made/api"]

    again, spy2 = counting(aws)  # another process: the repository is there, nothing made, no policy put
    assert anyio.run(again.ensure, ECR, "made/api", None) is False
    assert spy2.calls == ["describe_repositories"]

    plain, spy3 = counting(aws)  # no lifecycle policy unless given
    assert anyio.run(plain.ensure, ECR, "made/web", None) is True
    assert "put_lifecycle_policy" not in spy3.calls
    with pytest.raises(Exception, match="LifecyclePolicyNotFound"):
        ecr.get_lifecycle_policy(repositoryName="made/web")


def test_concurrent_callers_make_one_call_and_a_racing_pipeline_is_fine(aws: MotoServer) -> None:
    accounts, spy = counting(aws)

    async def five() -> list[bool]:
        out: list[bool] = []

        async def one() -> None:
            out.append(await accounts.ensure(ECR, "race/api"))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
        return out

    assert sorted(anyio.run(five)) == [False, False, False, False, True]
    assert spy.calls.count("create_repository") == 1 and spy.calls.count("describe_repositories") == 1

    # another pipeline makes the repository between our Describe and our Create: AlreadyExists is success
    racing, spy2 = counting(aws)
    spy2.before["create_repository"] = lambda: aws.client().create_repository(repositoryName="race/web")
    assert anyio.run(racing.ensure, ECR, "race/web") is False
    assert spy2.calls == ["describe_repositories", "create_repository"]


def test_bad_names_and_missing_credentials_are_clear(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    accounts, spy = counting(aws)
    with pytest.raises(InvalidReferenceError):
        anyio.run(accounts.ensure, ECR, "Bad/Name")
    assert spy.calls == []  # refused before any call

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(CloudError) as caught:
        anyio.run(EcrAccounts().ensure, ECR, "nocreds/api")
    assert caught.value.code == "NoCredentials" and "no AWS credentials found" in str(caught.value)


def test_the_token_comes_from_get_authorization_token(aws: MotoServer) -> None:
    accounts, spy = counting(aws)
    creds = anyio.run(accounts.credentials, ECR)
    data = aws.client().get_authorization_token(registryIds=[ACCOUNT])["authorizationData"][0]
    assert f"{creds.username}:{creds.password}" == base64.b64decode(data["authorizationToken"]).decode()
    assert creds.username == "AWS" and creds.password not in repr(creds)
    anyio.run(accounts.credentials, ECR)
    assert spy.calls == ["get_authorization_token"]  # cached (moto's expiry is in the past: the floor holds)


def test_known_repositories_are_not_asked_again_by_that_client_only(aws: MotoServer) -> None:
    """Shown by moto's state, not by counting: deleted behind the client's back, a repository it ensured is not
    made again by it (it does not ask); a new client (another run) asks and makes it again."""
    accounts, ecr = EcrAccounts(), aws.client()
    assert anyio.run(accounts.ensure, ECR, "cache/api") is True
    ecr.delete_repository(repositoryName="cache/api")
    assert anyio.run(accounts.ensure, ECR, "cache/api") is False
    assert "cache/api" not in names(ecr)
    assert anyio.run(EcrAccounts().ensure, ECR, "cache/api") is True
    assert "cache/api" in names(ecr)


def names(ecr: Any) -> set[str]:
    return {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_ECR", "AWS_ENDPOINT_URL", None])
def test_the_endpoint_comes_from_boto3s_own_settings_or_is_given(
    aws: MotoServer, monkeypatch: pytest.MonkeyPatch, variable: str | None
) -> None:
    """boto3 reads AWS_ENDPOINT_URL_ECR (and AWS_ENDPOINT_URL) itself; ``endpoint_url`` is the explicit form.
    Without any of them the client would go to AWS (and fail: the test credentials are fake)."""
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECR")
    if variable is not None:
        monkeypatch.setenv(variable, aws.url)
    accounts = EcrAccounts() if variable else EcrAccounts(endpoint_url=aws.url)
    name = f"endpoint/{(variable or 'given').lower().replace('_', '-')}"
    assert anyio.run(accounts.ensure, ECR, name) is True
    assert name in names(aws.client())
    assert anyio.run(accounts.credentials, ECR).username == "AWS"


def test_a_refused_or_failed_call_is_one_clear_line(aws: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore refuses a lifecycle policy under 100 characters: the repository just made is removed again (still
    # empty), so the next run makes it with its policy instead of finding it and setting nothing
    accounts = EcrAccounts()
    with pytest.raises(CloudError) as caught:
        anyio.run(accounts.ensure, ECR, "refused/api", EcrRepositorySettings(lifecycle_policy={"rules": []}))
    message = str(caught.value)
    assert caught.value.operation == "PutLifecyclePolicy" and caught.value.code == "ParamValidationError"
    assert "refused/api" in message and "removed again" in message and "\n" not in message
    assert "refused/api" not in names(aws.client())
    policy = {"rules": [{"rulePriority": 1, "description": "untagged after 14 days", "action": {"type": "expire"},
                         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed",
                                       "countUnit": "days", "countNumber": 14}}]}  # fmt: skip
    assert anyio.run(accounts.ensure, ECR, "refused/api", EcrRepositorySettings(lifecycle_policy=policy)) is True
    got = aws.client().get_lifecycle_policy(repositoryName="refused/api")["lifecyclePolicyText"]
    assert json.loads(got) == policy

    # a pipeline pushed into it between our CreateRepository and the failed policy: it is kept, the error says so
    racing, spy = counting(aws)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                                      "digest": "sha256:" + "4" * 64}, "layers": []})  # fmt: skip
    spy.before["put_lifecycle_policy"] = lambda: aws.client().put_image(
        repositoryName="pushed/api", imageManifest=manifest, imageTag="v1"
    )
    with pytest.raises(CloudError, match="created without it: set it with aws ecr put-lifecycle-policy"):
        anyio.run(racing.ensure, ECR, "pushed/api", EcrRepositorySettings(lifecycle_policy={"rules": []}))
    assert spy.calls[-1] == "delete_repository" and "pushed/api" in names(aws.client())

    closed = free_port()  # nothing listens there: botocore's connection error, after one attempt
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", f"http://127.0.0.1:{closed}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for call in (lambda a: a.ensure(ECR, "down/api"), lambda a: a.credentials(ECR)):
        with pytest.raises(CloudError) as failed:
            anyio.run(call, EcrAccounts())
        assert failed.value.code == "EndpointConnectionError", failed.value
        assert str(closed) in str(failed.value) and "\n" not in str(failed.value)


def test_without_boto3_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # ``import boto3`` raises ImportError
    for call in (lambda a: a.ensure(ECR, "any/api"), lambda a: a.credentials(ECR)):
        with pytest.raises(SettingsError, match=r"pip install \"ocicopy\[aws\]\""):
            anyio.run(call, EcrAccounts())


class Tokens:
    """An ECR client that hands out ``AWS:secret-N`` tokens expiring at ``expires`` (None: no expiry given)."""

    def __init__(self, expires: datetime | None, token: str | None = None) -> None:
        self.expires, self.token, self.calls = expires, token, 0

    def get_authorization_token(self, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        token = self.token or base64.b64encode(f"AWS:secret-{self.calls}".encode()).decode()
        data: dict[str, Any] = {"authorizationToken": token}
        if self.expires is not None:
            data["expiresAt"] = self.expires
        return {"authorizationData": [data]}


def test_a_token_is_kept_until_shortly_before_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr(ecr_module, "time", SimpleNamespace(time=lambda: now[0]))
    tokens = Tokens(datetime.fromtimestamp(now[0] + 3600, UTC))
    accounts = EcrAccounts(lambda region: tokens)
    assert anyio.run(accounts.credentials, ECR).password == "secret-1"
    now[0] += 3600 - ecr_module.TOKEN_MARGIN - 1
    assert anyio.run(accounts.credentials, ECR).password == "secret-1" and tokens.calls == 1
    now[0] += 2  # within the margin: asked again
    assert anyio.run(accounts.credentials, ECR).password == "secret-2" and tokens.calls == 2


@pytest.mark.parametrize(
    "token", ["not base64!", base64.b64encode(b"no-colon").decode(), base64.b64encode(b"\xff:x").decode()]
)
def test_a_malformed_token_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(CloudError) as caught:
        anyio.run(EcrAccounts(lambda region: Tokens(None, token)).credentials, ECR)
    assert caught.value.code == "MalformedToken" and token not in str(caught.value)
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # nothing holds the token's bytes


# --------------------------------------------------------------------------- the data plane: the fake as ECR


def as_ecr(fake: FakeRegistry, moto: MotoServer) -> str:
    """The fake plays ECR: repositories only where moto holds them; Basic auth with moto's token. Returns the
    Authorization header it accepts."""
    ecr = moto.client()
    token = ecr.get_authorization_token(registryIds=[ACCOUNT])["authorizationData"][0]["authorizationToken"]
    accepted = f"Basic {token}"

    def exists(name: str) -> bool:
        try:
            ecr.describe_repositories(repositoryNames=[name])
            return True
        except ecr.exceptions.RepositoryNotFoundException:
            return False

    def auth(req: Request) -> Response | None:
        if req.headers.get("authorization") == accepted:
            return None
        challenge = {"WWW-Authenticate": f'Basic realm="http://{fake.host}/",service="ecr.amazonaws.com"'}
        return Response.error(401, "UNAUTHORIZED", "Not Authorized", challenge)

    fake.quirks.ecr_repositories = exists
    fake.before(auth)
    return accepted


def run_cli(moto: MotoServer, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "AWS_"))}
    env |= moto.env() | {"HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "ocicopy", *args], capture_output=True, env=env, cwd=tmp_path,
                          timeout=120, check=False)  # fmt: skip


def test_a_mirror_into_ecr_makes_its_repositories_and_uses_the_aws_token(moto: MotoServer, tmp_path: Path) -> None:
    """A service-mode mirror into the fake ECR: every repository (each service's, the ledger's) made through
    moto before its first push, with scan on push; every request to the registry authenticated with the token
    GetAuthorizationToken gave (no docker credential exists); the pins are the sources' digests. Without
    create_repositories the push fails saying what to set."""
    with FakeRegistry() as source, FakeRegistry() as mirror:
        accepted = as_ecr(mirror, moto)
        digests = {s: source.seed(f"lib/{s}", "v1", im.make_image([im.layer(9300 + i, 1500)]))
                   for i, s in enumerate(("api", "web"))}  # fmt: skip

        def plan(prefix: str, create: bool) -> str:
            target: dict[str, Any] = {"registry": mirror.host, "prefix": prefix, "mode": "service"}
            if create:
                target |= {"create_repositories": True, "ecr": {"scan_on_push": True}}
            data = {
                "mirror": target,
                "registries": {
                    source.host: {"plain_http": True},
                    mirror.host: {"plain_http": True, "ecr": {"region": REGION, "registry_id": ACCOUNT}},
                },
                "deployments": [
                    {"service": s, "environment": "prod", "image": f"{source.host}/lib/{s}:v1"} for s in digests
                ],
            }
            path = tmp_path / f"{prefix}.json"
            path.write_text(json.dumps(data))
            return str(path)

        proc = run_cli(moto, tmp_path, "mirror", plan("ecr", create=True), "--json", "-")
        assert proc.returncode == 0, proc.stderr.decode()
        report = ocicopy.MirrorReport.model_validate_json(proc.stdout)
        ecr = moto.client()
        repos = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
        assert {"ecr/api", "ecr/web", "ecr/ocicopy-ledger"} <= set(repos), sorted(repos)
        assert all(repos[n]["imageScanningConfiguration"] == {"scanOnPush": True} for n in ("ecr/api", "ecr/web"))
        for d in report.deployments:
            assert d.action is ocicopy.MirrorAction.COPIED and d.pinned is not None, d.error
            assert d.source_digest == digests[d.service] and d.pinned.endswith(digests[d.service])
        writes = [r for r in mirror.requests if r.method in ("PUT", "POST", "PATCH") and r.status < 400]
        assert writes and all(r.headers.get("authorization") == accepted for r in writes)
        assert mirror.tags("ecr/api") != []

        refused = run_cli(moto, tmp_path, "mirror", plan("bare", create=False), "--json", "-")
        assert refused.returncode == 1
        failed = ocicopy.MirrorReport.model_validate_json(refused.stdout).deployments
        assert all(d.error and "ECR creates no repository on push: set create_repositories" in d.error
                   for d in failed), [d.error for d in failed]  # fmt: skip
        assert not [n for n in repos if n.startswith("bare/")]

        flagged = run_cli(moto, tmp_path, "mirror", plan("flag", create=False), "--create-repositories", "--json", "-")
        assert flagged.returncode == 0, flagged.stderr.decode()  # the flag sets create_repositories
        made = {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}
        assert {"flag/api", "flag/web"} <= made, sorted(made)


def test_the_library_creates_the_repository_of_a_copy(aws: MotoServer) -> None:
    """Client.copy(create_repository=...) with the registry marked ECR in the client options."""
    with FakeRegistry() as source, FakeRegistry() as mirror:
        accepted = as_ecr(mirror, aws)
        digest = source.seed("lib/job", "v1", im.make_image([im.layer(9400, 1500)]))
        options = ocicopy.ClientOptions(
            use_docker_config=False,
            plain_http=frozenset({source.host, mirror.host}),
            registries={mirror.host: ocicopy.RegistryConfig(ecr=ECR)},
        )

        async def main() -> ocicopy.CopyResult:
            async with ocicopy.Client(options) as client:
                return await client.copy(f"{source.host}/lib/job:v1", f"{mirror.host}/lib-copy/job:v1",
                                         create_repository=EcrRepositorySettings(scan_on_push=True))  # fmt: skip

        result = anyio.run(main)
        assert result.digest == digest and mirror.tags("lib-copy/job") == ["v1"]
        (repo,) = aws.client().describe_repositories(repositoryNames=["lib-copy/job"])["repositories"]
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert all(r.headers.get("authorization") == accepted for r in mirror.requests if r.method == "PUT")


def test_a_repository_removed_after_it_was_made_says_so(aws: MotoServer) -> None:
    """create_repositories on, the repository made, then deleted by someone else before the push: the push's
    NAME_UNKNOWN says the repository went away (not "set create_repositories", which is set)."""
    with FakeRegistry() as source, FakeRegistry() as mirror:
        as_ecr(mirror, aws)
        source.seed("lib/job", "v1", im.make_image([im.layer(9500, 1500)]))
        options = ocicopy.ClientOptions(
            use_docker_config=False,
            plain_http=frozenset({source.host, mirror.host}),
            registries={mirror.host: ocicopy.RegistryConfig(ecr=ECR)},
        )

        async def main() -> None:
            async with ocicopy.Client(options) as client:
                assert await client.ensure_repository(mirror.host, "gone/job") is True
                aws.client().delete_repository(repositoryName="gone/job")
                await client.copy(f"{source.host}/lib/job:v1", f"{mirror.host}/gone/job:v1", create_repository=True)

        with pytest.raises(ocicopy.NotFoundError) as caught:
            anyio.run(main)
        assert "removed meanwhile" in str(caught.value) and "set create_repositories" not in str(caught.value)
        assert mirror.tags("gone/job") == []
