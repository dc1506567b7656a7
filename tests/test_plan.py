"""The plan file model (:mod:`ocicopy.plan`): parsing, one-line errors naming the entry, loading, options."""

from __future__ import annotations

import copy
import importlib.util
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ocicopy.errors import InputError
from ocicopy.options import ClientOptions, RegistryConfig
from ocicopy.plan import MAX_PLAN_BYTES, BuildSpec, Mode, Plan, PlanError, load_plan, parse_plan
from ocicopy.reference import parse_reference

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "0123456789abcdef" * 4

#: The example plan of the issue: a cluster-mode mirror, per-registry settings, an image and a build.
EXAMPLE: dict[str, Any] = {
    "mirror": {"registry": "mirror.example.com", "prefix": "mirror", "mode": "cluster", "cluster": "prod-eu-1"},
    "registries": {
        "mirror.example.com": {"plain_http": True},
        "ghcr.io": {"username": "ci-bot", "password_env": "GHCR_TOKEN"},
    },
    "deployments": [
        {
            "service": "api",
            "environment": "prod",
            "image": "ghcr.io/acme/api:1.4.2",
            "platforms": ["linux/amd64", "linux/arm64/v8"],
        },
        {
            "service": "worker",
            "environment": "staging",
            "build": {
                "repository": "https://github.com/acme/worker.git",
                "commit": COMMIT,
                "env": {"NODE_ENV": "production"},
                "build_args": {"VERSION": "1.4.2"},
                "dockerfile": "./Dockerfile",
                "target": "runtime",
            },
        },
    ],
    "immutable_tags": r"^v?\d+\.\d+\.\d+$",
}

Mutation = Callable[[dict[str, Any]], None]


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def mutated(mutation: Mutation) -> dict[str, Any]:
    data = example()
    mutation(data)
    return data


def plan_error(data: object) -> str:
    """The message of the PlanError parse_plan raises; checks it is one line."""
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    message = str(info.value)
    assert message.splitlines() == [message], f"not one line: {message!r}"
    assert message.strip() == message
    return message


def api(data: dict[str, Any]) -> dict[str, Any]:
    return data["deployments"][0]  # type: ignore[no-any-return]


def build(data: dict[str, Any]) -> dict[str, Any]:
    return data["deployments"][1]["build"]  # type: ignore[no-any-return]


def ghcr(data: dict[str, Any]) -> dict[str, Any]:
    return data["registries"]["ghcr.io"]  # type: ignore[no-any-return]


# --- the example ---------------------------------------------------------------------------------------------


def test_example_plan_parses() -> None:
    plan = parse_plan(example())
    assert plan.mirror.registry == "mirror.example.com"
    assert plan.mirror.prefix == "mirror"
    assert plan.mirror.mode is Mode.CLUSTER
    assert plan.mirror.cluster == "prod-eu-1"
    assert plan.mirror.ledger is True
    assert plan.registries["mirror.example.com"].plain_http is True
    assert plan.registries["mirror.example.com"].username is None
    assert plan.registries["ghcr.io"].username == "ci-bot"
    assert plan.registries["ghcr.io"].password_env == "GHCR_TOKEN"
    assert plan.registries["ghcr.io"].plain_http is False
    assert plan.immutable_tags == r"^v?\d+\.\d+\.\d+$"

    image, built = plan.deployments
    assert (image.service, image.environment, image.label) == ("api", "prod", "api/prod")
    assert image.image == "ghcr.io/acme/api:1.4.2"
    assert image.source == parse_reference("ghcr.io/acme/api:1.4.2")
    assert image.build is None
    assert image.platforms == ["linux/amd64", "linux/arm64/v8"]

    assert built.label == "worker/staging"
    assert built.image is None
    assert built.source is None
    assert built.build == BuildSpec(
        repository="https://github.com/acme/worker.git",
        commit=COMMIT,
        env={"NODE_ENV": "production"},
        build_args={"VERSION": "1.4.2"},
        dockerfile="./Dockerfile",
        target="runtime",
    )


def test_defaults() -> None:
    plan = parse_plan(
        {
            "mirror": {"registry": "localhost:5000"},
            "deployments": [{"service": "api", "environment": "prod", "image": "nginx"}],
        }
    )
    assert plan.mirror.prefix == "mirror"
    assert plan.mirror.mode is Mode.SERVICE
    assert plan.mirror.cluster is None
    assert plan.mirror.ledger is True
    assert plan.registries == {}
    assert plan.immutable_tags is None
    deployment = plan.deployments[0]
    assert deployment.platforms == []
    assert deployment.source == parse_reference("docker.io/library/nginx:latest")


@pytest.mark.parametrize(
    ("mutation", "check"),
    [
        (lambda d: d["mirror"].update(prefix=""), lambda p: p.mirror.prefix == ""),
        (lambda d: d["mirror"].update(prefix="a/b-c/d"), lambda p: p.mirror.prefix == "a/b-c/d"),
        (lambda d: d["mirror"].update(registry="localhost"), lambda p: p.mirror.registry == "localhost"),
        (lambda d: d["mirror"].update(registry="[::1]:5000"), lambda p: p.mirror.registry == "[::1]:5000"),
        (lambda d: d["mirror"].update(ledger=False), lambda p: p.mirror.ledger is False),
        (lambda d: d["mirror"].update(mode="service", cluster=None), lambda p: p.mirror.mode is Mode.SERVICE),
        (lambda d: d.pop("registries"), lambda p: p.registries == {}),
        (lambda d: d.pop("immutable_tags"), lambda p: p.immutable_tags is None),
        (lambda d: api(d).update(image="ghcr.io/acme/api@" + DIGEST), lambda p: p.deployments[0].source.tag is None),
        (lambda d: api(d).update(service="a.b_c__d--e"), lambda p: p.deployments[0].service == "a.b_c__d--e"),
        (lambda d: build(d).update(commit=COMMIT.upper()), lambda p: p.deployments[1].build.commit == COMMIT),
        (lambda d: build(d).update(commit="ab" * 32), lambda p: p.deployments[1].build.commit == "ab" * 32),
        (lambda d: build(d).update(env={"_x1": "", "lower": "ä"}), lambda p: "_x1" in p.deployments[1].build.env),
        (lambda d: d["deployments"][1].update(environment="prod"), lambda p: len(p.deployments) == 2),
    ],
    ids=[
        "empty-prefix",
        "nested-prefix",
        "localhost",
        "ipv6",
        "no-ledger",
        "service-mode",
        "no-registries",
        "no-immutable-tags",
        "digest-only",
        "separators",
        "upper-case-commit-normalised",
        "sha256-commit",
        "env-names",
        "two-services-one-environment",
    ],
)
def test_valid_variations(mutation: Mutation, check: Callable[[Plan], bool]) -> None:
    assert check(parse_plan(mutated(mutation)))


# --- validation errors: one line, naming the entry -----------------------------------------------------------

API = "deployments[0] (api/prod)"
WORKER = "deployments[1] (worker/staging)"

INVALID: list[tuple[str, Mutation, list[str]]] = [
    # unknown fields, at every level
    ("unknown-top-level", lambda d: d.update(mirrorz={}), ["mirrorz", "unknown field"]),
    ("unknown-mirror", lambda d: d["mirror"].update(tag="x"), ["mirror", "tag", "unknown field"]),
    ("unknown-deployment", lambda d: api(d).update(tags=["1"]), [API, "tags", "unknown field"]),
    ("unknown-build", lambda d: build(d).update(branch="main"), [WORKER, "build", "branch", "unknown field"]),
    ("unknown-registry", lambda d: ghcr(d).update(password="hunter2"), ["registries", "ghcr.io", "unknown field"]),
    ("missing-mirror", lambda d: d.pop("mirror"), ["give mirror (one cluster) or mirrors"]),
    ("missing-service", lambda d: api(d).pop("service"), ["deployments[0]", "service", "required field missing"]),
    ("missing-commit", lambda d: build(d).pop("commit"), [WORKER, "commit", "required field missing"]),
    # image references
    ("image-upper-case", lambda d: api(d).update(image="ghcr.io/Acme/api:1"), [API, "image", "lower case"]),
    ("image-empty-component", lambda d: api(d).update(image="a//b"), [API, "image", "'a//b'", "empty component"]),
    ("image-short-digest", lambda d: api(d).update(image="a@sha256:abc"), [API, "image", "64 hex"]),
    ("image-digest-algorithm", lambda d: api(d).update(image="a@md5:" + "0" * 32), [API, "image", "md5"]),
    ("image-digest-case", lambda d: api(d).update(image="a@sha256:" + "A" * 64), [API, "image", "lower case"]),
    ("image-empty", lambda d: api(d).update(image=""), [API, "image", "empty"]),
    ("image-scheme", lambda d: api(d).update(image="https://ghcr.io/a/b"), [API, "image", "scheme"]),
    ("image-newline", lambda d: api(d).update(image="ghcr.io/a/b\nc"), [API, "image", "whitespace"]),
    ("image-bad-tag", lambda d: api(d).update(image="a:-1"), [API, "image", "tag"]),
    # service / environment / cluster names
    ("service-upper-case", lambda d: api(d).update(service="Api"), ["deployments[0]", "service", "'Api'"]),
    ("service-empty", lambda d: api(d).update(service=""), ["deployments[0]", "service"]),
    ("service-slash", lambda d: api(d).update(service="a/b"), ["deployments[0]", "service", "'a/b'"]),
    ("service-too-long", lambda d: api(d).update(service="a" * 129), ["deployments[0]", "service"]),
    ("environment-space", lambda d: api(d).update(environment="pr od"), ["deployments[0]", "environment"]),
    ("environment-trailing-dash", lambda d: api(d).update(environment="prod-"), ["deployments[0]", "environment"]),
    ("cluster-upper-case", lambda d: d["mirror"].update(cluster="Prod"), ["mirror", "cluster", "'Prod'"]),
    # image xor build
    ("image-and-build", lambda d: api(d).update(build=build(d)), [API, "exactly one of 'image' or 'build'"]),
    ("neither-image-nor-build", lambda d: api(d).pop("image"), [API, "exactly one of 'image' or 'build'"]),
    (
        "duplicate-deployment",
        lambda d: d["deployments"].append({"service": "api", "environment": "prod", "image": "nginx"}),
        ["deployments[2] (api/prod)", "deployments[0]", "same service and environment"],
    ),
    ("cluster-mode-without-cluster", lambda d: d["mirror"].pop("cluster"), ["mirror.cluster", "cluster mode"]),
    ("cluster-mode-null-cluster", lambda d: d["mirror"].update(cluster=None), ["mirror.cluster", "cluster mode"]),
    ("mode-unknown", lambda d: d["mirror"].update(mode="region"), ["mirror", "mode", "'service' or 'cluster'"]),
    # the mirror registry and prefix
    ("mirror-url", lambda d: d["mirror"].update(registry="https://m.io"), ["mirror", "registry", "host[:port]"]),
    ("mirror-path", lambda d: d["mirror"].update(registry="m.io/x"), ["mirror", "registry", "host[:port]"]),
    ("mirror-empty", lambda d: d["mirror"].update(registry=""), ["mirror", "registry", "host[:port]"]),
    ("mirror-empty-port", lambda d: d["mirror"].update(registry="m.io:"), ["mirror", "registry"]),
    ("mirror-long-port", lambda d: d["mirror"].update(registry="m.io:123456"), ["mirror", "registry"]),
    ("mirror-bad-ipv6-chars", lambda d: d["mirror"].update(registry="[zz]"), ["mirror", "registry"]),
    # hosts _HOST lets through but no reference can use: plan_targets then fails with an InvalidReferenceError
    ("mirror-empty-label", lambda d: d["mirror"].update(registry="a..b"), ["mirror", "registry"]),
    ("mirror-dot", lambda d: d["mirror"].update(registry="."), ["mirror", "registry"]),
    ("mirror-leading-dash", lambda d: d["mirror"].update(registry="-m.io"), ["mirror", "registry"]),
    ("mirror-port-0", lambda d: d["mirror"].update(registry="m.io:0"), ["mirror", "registry"]),
    ("mirror-port-99999", lambda d: d["mirror"].update(registry="m.io:99999"), ["mirror", "registry"]),
    ("mirror-hub-namespace", lambda d: d["mirror"].update(registry="mirror"), ["mirror", "registry"]),
    ("mirror-bad-ipv6", lambda d: d["mirror"].update(registry="[1:2]"), ["mirror", "registry"]),
    ("prefix-upper-case", lambda d: d["mirror"].update(prefix="Mirror"), ["mirror", "prefix", "lower case"]),
    ("prefix-leading-slash", lambda d: d["mirror"].update(prefix="/m"), ["mirror", "prefix", "'/'"]),
    ("prefix-trailing-slash", lambda d: d["mirror"].update(prefix="m/"), ["mirror", "prefix", "'/'"]),
    ("prefix-double-slash", lambda d: d["mirror"].update(prefix="a//b"), ["mirror", "prefix", "'//'"]),
    ("prefix-too-long", lambda d: d["mirror"].update(prefix="a" * 256), ["mirror", "prefix", "255"]),
    # registry keys and credentials
    ("registry-key-path", lambda d: d["registries"].update({"ghcr.io/acme": {}}), ["registries", "'ghcr.io/acme'"]),
    ("registry-key-url", lambda d: d["registries"].update({"https://x.io": {}}), ["registries", "'https://x.io'"]),
    ("registry-key-empty", lambda d: d["registries"].update({"": {}}), ["registries", "host[:port]"]),
    ("registry-key-space", lambda d: d["registries"].update({"a b.io": {}}), ["registries", "'a b.io'"]),
    ("registry-key-empty-label", lambda d: d["registries"].update({"a..io": {}}), ["registries", "'a..io'"]),
    ("registry-key-bad-port", lambda d: d["registries"].update({"a.io:99999": {}}), ["registries", "'a.io:99999'"]),
    ("username-without-password-env", lambda d: ghcr(d).pop("password_env"), ["ghcr.io", "go together"]),
    ("password-env-without-username", lambda d: ghcr(d).pop("username"), ["ghcr.io", "go together"]),
    ("password-env-dash", lambda d: ghcr(d).update(password_env="GHCR-TOKEN"), ["ghcr.io", "password_env", "'GHCR-"]),
    ("password-env-digit", lambda d: ghcr(d).update(password_env="1TOKEN"), ["ghcr.io", "password_env", "'1TOKEN'"]),
    ("password-env-empty", lambda d: ghcr(d).update(password_env=""), ["ghcr.io", "password_env"]),
    ("password-env-dollar", lambda d: ghcr(d).update(password_env="$TOKEN"), ["ghcr.io", "password_env", "'$TOKEN'"]),
    # build specs
    ("env-name-dash", lambda d: build(d)["env"].update({"NODE-ENV": "x"}), [WORKER, "build.env", "'NODE-ENV'"]),
    ("env-name-digit", lambda d: build(d)["env"].update({"1X": "x"}), [WORKER, "build.env", "'1X'"]),
    ("env-name-empty", lambda d: build(d)["env"].update({"": "x"}), [WORKER, "build.env", "''"]),
    ("build-arg-space", lambda d: build(d)["build_args"].update({"A B": "x"}), [WORKER, "build.build_args", "'A B'"]),
    ("build-arg-equals", lambda d: build(d)["build_args"].update({"A=B": "x"}), [WORKER, "build_args", "'A=B'"]),
    ("commit-abbreviated", lambda d: build(d).update(commit=COMMIT[:7]), [WORKER, "build.commit", "full commit"]),
    ("commit-39", lambda d: build(d).update(commit=COMMIT[:39]), [WORKER, "build.commit", "full commit"]),
    ("commit-41", lambda d: build(d).update(commit=COMMIT + "0"), [WORKER, "build.commit", "full commit"]),
    ("commit-non-hex", lambda d: build(d).update(commit="g" * 40), [WORKER, "build.commit", "full commit"]),
    ("commit-branch", lambda d: build(d).update(commit="main"), [WORKER, "build.commit", "full commit"]),
    ("commit-spaces", lambda d: build(d).update(commit=f" {COMMIT} "), [WORKER, "build.commit", "full commit"]),
    ("repository-empty", lambda d: build(d).update(repository=""), [WORKER, "build.repository"]),
    # platforms
    ("platform-os-only", lambda d: api(d).update(platforms=["linux"]), [API, "platforms", "'linux'"]),
    ("platform-upper-case", lambda d: api(d).update(platforms=["Linux/amd64"]), [API, "platforms", "'Linux'"]),
    ("platform-four-parts", lambda d: api(d).update(platforms=["linux/arm/v7/x"]), [API, "platforms"]),
    ("platform-empty-part", lambda d: api(d).update(platforms=["linux//v7"]), [API, "platforms"]),
    ("platform-empty", lambda d: api(d).update(platforms=[""]), [API, "platforms"]),
    # immutable_tags
    ("immutable-tags-unbalanced", lambda d: d.update(immutable_tags="(v"), ["immutable_tags", "regular expression"]),
    ("immutable-tags-bad-class", lambda d: d.update(immutable_tags="[z-a]"), ["immutable_tags", "regular expression"]),
    ("immutable-tags-multiline", lambda d: d.update(immutable_tags="(\nx"), ["immutable_tags", "regular expression"]),
    # deployments list
    ("no-deployments", lambda d: d.update(deployments=[]), ["deployments", "at least 1"]),
    ("deployments-missing", lambda d: d.pop("deployments"), ["deployments", "required field missing"]),
    # wrong JSON types
    ("mirror-string", lambda d: d.update(mirror="mirror.example.com"), ["mirror", "dictionary"]),
    ("registries-list", lambda d: d.update(registries=["ghcr.io"]), ["registries", "dictionary"]),
    ("registry-settings-string", lambda d: d["registries"].update({"x.io": "plain"}), ["registries", "x.io"]),
    ("deployments-object", lambda d: d.update(deployments={"api": {}}), ["deployments", "list"]),
    ("deployment-string", lambda d: d["deployments"].insert(0, "api"), ["deployments[0]", "dictionary"]),
    ("deployment-null", lambda d: d["deployments"].append(None), ["deployments[2]", "dictionary"]),
    ("service-number", lambda d: api(d).update(service=7), ["deployments[0]", "service", "string"]),
    ("image-number", lambda d: api(d).update(image=1), [API, "image", "string"]),
    ("image-list", lambda d: api(d).update(image=["nginx"]), [API, "image", "string"]),
    ("platforms-string", lambda d: api(d).update(platforms="linux/amd64"), [API, "platforms", "list"]),
    ("platform-number", lambda d: api(d).update(platforms=[1]), [API, "platforms", "string"]),
    ("build-string", lambda d: d["deployments"][1].update(build="."), [WORKER, "build", "dictionary"]),
    ("env-list", lambda d: build(d).update(env=["A=1"]), [WORKER, "build.env", "dictionary"]),
    ("env-value-number", lambda d: build(d)["env"].update(PORT=8080), [WORKER, "build.env.PORT", "string"]),
    ("build-arg-null", lambda d: build(d)["build_args"].update(X=None), [WORKER, "build.build_args.X", "string"]),
    ("commit-number", lambda d: build(d).update(commit=1234567), [WORKER, "build.commit", "string"]),
    ("target-number", lambda d: build(d).update(target=1), [WORKER, "build.target", "string"]),
    ("plain-http-list", lambda d: ghcr(d).update(plain_http=[]), ["ghcr.io", "plain_http", "boolean"]),
    ("plain-http-word", lambda d: ghcr(d).update(plain_http="maybe"), ["ghcr.io", "plain_http", "boolean"]),
    ("username-number", lambda d: ghcr(d).update(username=5), ["ghcr.io", "username", "string"]),
    ("ledger-string", lambda d: d["mirror"].update(ledger="sometimes"), ["mirror", "ledger", "boolean"]),
    ("prefix-null", lambda d: d["mirror"].update(prefix=None), ["mirror", "prefix", "string"]),
    ("immutable-tags-number", lambda d: d.update(immutable_tags=1), ["immutable_tags", "string"]),
]


@pytest.mark.parametrize(("mutation", "fragments"), [pytest.param(m, f, id=i) for i, m, f in INVALID])
def test_invalid_plan_names_the_entry(mutation: Mutation, fragments: list[str]) -> None:
    message = plan_error(mutated(mutation))
    assert message.startswith("plan: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_first_bad_entry_is_named() -> None:
    data = example()
    data["deployments"] += [
        {"service": "web", "environment": "prod", "image": "nginx"},
        {"service": "db", "environment": "prod", "image": "Postgres"},
        {"service": "cache", "environment": "prod", "image": "Redis"},
    ]
    message = plan_error(data)
    assert "deployments[3] (db/prod): image:" in message
    assert "Redis" not in message


@pytest.mark.parametrize("top", [None, [], "plan", 1, 1.5, True], ids=repr)
def test_plan_must_be_an_object(top: object) -> None:
    assert "dictionary" in plan_error(top)


def test_plan_error_is_an_input_error() -> None:
    assert issubclass(PlanError, InputError)


# Everything below puts a line break into a name, a field or a key: the message must still be one line.
MULTILINE: list[tuple[str, Mutation]] = [
    ("service-newline", lambda d: api(d).update(service="api\nx")),
    ("environment-newline", lambda d: api(d).update(environment="prod\r\nx")),
    ("service-line-separator", lambda d: api(d).update(service="api\u2028x")),
    ("unknown-field-newline", lambda d: api(d).update({"ta\ngs": 1})),
    ("unknown-top-level-newline", lambda d: d.update({"mir\nror": 1})),
    ("registry-key-newline", lambda d: d["registries"].update({"a\n.io": {"extra": 1}})),
    ("env-key-newline", lambda d: build(d)["env"].update({"A\nB": 1})),
]


@pytest.mark.parametrize("mutation", [pytest.param(m, id=i) for i, m in MULTILINE])
def test_message_is_one_line_whatever_the_input(mutation: Mutation) -> None:
    plan_error(mutated(mutation))


# --- load_plan ---------------------------------------------------------------------------------------------


def test_load_json(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(EXAMPLE), encoding="utf-8")
    assert load_plan(path) == parse_plan(example())
    assert load_plan(str(path)) == parse_plan(example())


def test_load_json_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(EXAMPLE).encode())
    assert load_plan(path) == parse_plan(example())


def test_load_validation_error_is_a_plan_error(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(mutated(lambda d: api(d).update(image="a//b"))), encoding="utf-8")
    with pytest.raises(PlanError, match=r"deployments\[0\] \(api/prod\): image:"):
        load_plan(path)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "plan.json"
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value)
    assert "No such file" in str(info.value)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"{'mirror': 1}", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000, b"mirror: {}"],
    ids=["empty", "truncated", "single-quotes", "not-utf8", "deep-nesting", "yaml-in-json"],
)
def test_load_invalid_json(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(raw)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value)
    assert "not valid JSON" in str(info.value) or "not UTF-8 text" in str(info.value)


@pytest.mark.parametrize("name", ["plan.yaml", "plan.yml", "PLAN.YAML"])
def test_load_yaml(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(json.dumps(EXAMPLE), encoding="utf-8")  # JSON is YAML
    if importlib.util.find_spec("yaml") is None:
        with pytest.raises(PlanError) as info:
            load_plan(path)
        message = str(info.value)
        assert "PyYAML" in message
        assert "install" in message
        assert str(path) in message
        assert message.splitlines() == [message]
    else:
        assert load_plan(path) == parse_plan(example())


def test_load_oversize(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    with path.open("wb") as f:  # sparse: no 16 MiB written
        f.truncate(MAX_PLAN_BYTES + 1)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(path) in str(info.value)
    assert "larger than" in str(info.value)


def test_load_exactly_the_limit_is_not_oversize(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    text = json.dumps(EXAMPLE).encode()
    path.write_bytes(text + b" " * (MAX_PLAN_BYTES - len(text)))
    assert load_plan(path) == parse_plan(example())


def test_load_oversize_does_not_read_the_whole_file(tmp_path: Path) -> None:
    """The size cap protects memory: a huge file must be refused after reading at most the cap (plus one)."""
    path = tmp_path / "huge.json"
    with path.open("wb") as f:
        f.truncate(8 * MAX_PLAN_BYTES)  # 128 MiB, sparse
    tracemalloc.start()
    try:
        with pytest.raises(PlanError, match="larger than"):
            load_plan(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MAX_PLAN_BYTES, f"peak {peak} bytes allocated to refuse a {8 * MAX_PLAN_BYTES} byte plan"


# --- with_mode ---------------------------------------------------------------------------------------------


def test_with_mode_service_overrides_cluster() -> None:
    plan = parse_plan(example())
    service = plan.with_mode("service")
    assert service.mirror.mode is Mode.SERVICE
    assert plan.mirror.mode is Mode.CLUSTER  # frozen: the original is untouched
    assert service.deployments == plan.deployments
    assert service.registries == plan.registries
    assert service.immutable_tags == plan.immutable_tags
    assert plan.with_mode(Mode.SERVICE) == service
    assert service.with_mode("cluster") == plan


def test_with_mode_none_is_the_same_plan() -> None:
    plan = parse_plan(example())
    assert plan.with_mode(None) is plan


def test_with_mode_cluster_needs_a_cluster() -> None:
    plan = parse_plan(mutated(lambda d: d["mirror"].update(mode="service", cluster=None)))
    with pytest.raises(PlanError, match=r"mirror\.cluster is required in cluster mode"):
        plan.with_mode("cluster")


@pytest.mark.parametrize("mode", ["bogus", "Service", ""])
def test_with_mode_unknown(mode: str) -> None:
    """An unknown ``--mode`` is bad input like any other plan error: a PlanError (an InputError) naming it."""
    plan = parse_plan(example())
    with pytest.raises(PlanError) as info:
        plan.with_mode(mode)
    assert repr(mode) in str(info.value)
    assert "service" in str(info.value)
    assert "cluster" in str(info.value)


# --- client_options -------------------------------------------------------------------------------------------

SECRET = "s3cr3t-Pa55word-do-not-print"


def test_client_options() -> None:
    options = parse_plan(example()).client_options(env={"GHCR_TOKEN": SECRET, "OTHER": "x"})
    mirror = options.registries["mirror.example.com"]
    assert mirror.plain_http is True
    assert mirror.username is None
    assert mirror.password is None
    assert options.is_plain_http("mirror.example.com")
    ghcr_config = options.registries["ghcr.io"]
    assert ghcr_config.plain_http is False
    assert not options.is_plain_http("ghcr.io")
    assert ghcr_config.username == "ci-bot"
    assert ghcr_config.password is not None
    assert ghcr_config.password.get_secret_value() == SECRET


def test_client_options_password_is_never_shown() -> None:
    options = parse_plan(example()).client_options(env={"GHCR_TOKEN": SECRET})
    for text in (
        repr(options),
        str(options),
        repr(options.registries),
        options.model_dump_json(),
        repr(options.registries["ghcr.io"]),
    ):
        assert SECRET not in text


def test_client_options_missing_variable() -> None:
    plan = parse_plan(example())
    with pytest.raises(PlanError) as info:
        plan.client_options(env={"GHCR": SECRET})
    message = str(info.value)
    assert "ghcr.io" in message
    assert "GHCR_TOKEN" in message
    assert message.splitlines() == [message]


def test_client_options_empty_variable() -> None:
    with pytest.raises(PlanError, match="environment variable GHCR_TOKEN is empty"):  # was: an empty password sent
        parse_plan(example()).client_options(env={"GHCR_TOKEN": ""})


def test_client_options_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHCR_TOKEN", SECRET)
    options = parse_plan(example()).client_options()
    assert options.registries["ghcr.io"].password is not None
    assert options.registries["ghcr.io"].password.get_secret_value() == SECRET
    monkeypatch.delenv("GHCR_TOKEN")
    with pytest.raises(PlanError, match="GHCR_TOKEN"):
        parse_plan(example()).client_options()


def test_client_options_keeps_the_base() -> None:
    base = ClientOptions(
        blob_concurrency=3,
        user_agent="test",
        registries={"other.io": RegistryConfig(username="u", password="p")},
    )
    options = parse_plan(example()).client_options(base, env={"GHCR_TOKEN": SECRET})
    assert options.blob_concurrency == 3
    assert options.user_agent == "test"
    assert options.registries["other.io"] == base.registries["other.io"]
    assert set(options.registries) == {"other.io", "mirror.example.com", "ghcr.io"}
    assert base.registries.keys() == {"other.io"}  # the base is not modified


def test_tls_settings_are_taken_from_the_plans_directory(tmp_path: Path) -> None:
    data = mutated(lambda d: d["registries"]["ghcr.io"].update(cert_dir="certs/ghcr", ca_file="/abs/ca.pem"))
    data["registries"]["quay.io"] = {"ca_file": "~/ca.pem"}
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "plan.json").write_text(json.dumps(data))
    plan = load_plan(tmp_path / "plans" / "plan.json")
    assert plan.registries["ghcr.io"].cert_dir == str(tmp_path / "plans" / "certs" / "ghcr")
    assert plan.registries["ghcr.io"].ca_file == "/abs/ca.pem"  # absolute: as written
    assert plan.registries["quay.io"].ca_file == "~/ca.pem"  # the user's home, expanded when read
    options = plan.client_options(env={"GHCR_TOKEN": SECRET})
    assert options.registries["ghcr.io"].cert_dir == str(tmp_path / "plans" / "certs" / "ghcr")
    assert options.registries["ghcr.io"].username == "ci-bot"
    assert parse_plan(data).registries["ghcr.io"].cert_dir == "certs/ghcr"  # a dict has no directory


def test_the_plan_adds_to_what_the_caller_set_for_a_host() -> None:
    base = ClientOptions(registries={"ghcr.io": RegistryConfig(cert_dir="/etc/ghcr-certs", username="x", password="y")})
    options = parse_plan(example()).client_options(base, env={"GHCR_TOKEN": SECRET})
    ghcr_config = options.registries["ghcr.io"]
    assert ghcr_config.cert_dir == "/etc/ghcr-certs"  # the plan says nothing of it
    assert ghcr_config.username == "ci-bot" and ghcr_config.password is not None  # the plan's credentials win
    assert ghcr_config.password.get_secret_value() == SECRET


@pytest.mark.parametrize("setting", [{"ca_file": "ca.pem"}, {"cert_dir": "certs"}])
def test_tls_settings_with_plain_http_are_refused(setting: dict[str, str]) -> None:
    message = plan_error(mutated(lambda d: d["registries"]["mirror.example.com"].update(setting)))
    assert "mirror.example.com" in message and "cannot apply with plain_http" in message


def test_client_options_without_registries() -> None:
    plan = parse_plan(mutated(lambda d: d.pop("registries")))
    assert plan.client_options(env={}) == ClientOptions()


@pytest.mark.parametrize(
    ("key", "image"),
    [("docker.io", "nginx"), ("GHCR.io", "ghcr.io/acme/api:1"), ("index.docker.io", "library/nginx")],
)
def test_client_options_reach_the_host_the_client_asks_for(key: str, image: str) -> None:
    """The client looks settings up by ``Reference.api_host``: a plan's key for that registry must match it."""
    plan = parse_plan(
        mutated(lambda d: d.update(registries={key: {"plain_http": True, "username": "u", "password_env": "PW"}}))
    )
    options = plan.client_options(env={"PW": SECRET})
    host = parse_reference(image).api_host
    assert options.registry(host).username == "u", f"plan key {key!r} does not reach host {host!r}"
    assert options.is_plain_http(host)


def test_load_yaml_syntax_and_yaml_errors(tmp_path: Path) -> None:
    """With the yaml extra (part of the test extra), real YAML loads and broken YAML is one clear line."""
    path = tmp_path / "plan.yaml"
    path.write_text(
        "mirror:\n  registry: mirror.example.com\n  mode: service\n"
        "deployments:\n  - service: api\n    environment: prod\n    image: ghcr.io/acme/api:1.4.2\n",
        encoding="utf-8",
    )
    plan = load_plan(path)
    assert plan.deployments[0].image == "ghcr.io/acme/api:1.4.2"
    path.write_text("mirror: [unclosed\n", encoding="utf-8")
    with pytest.raises(PlanError, match="not valid YAML") as info:
        load_plan(path)
    assert len(str(info.value).splitlines()) == 1
