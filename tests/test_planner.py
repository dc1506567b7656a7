"""The planner (:mod:`ocicopy.planner`): mirror tags, build keys (with test vectors), targets."""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.plan import BuildSpec, Deployment, Mode, PlanError, load_plan, parse_plan
from ocicopy.planner import (
    Target,
    build_inputs,
    build_key,
    canonical_json,
    ledger_repository,
    mirror_repository,
    mirror_tag,
    plan_targets,
)
from ocicopy.reference import Reference, parse_reference, validate_tag

TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
BUILD_KEY_RE = re.compile(r"build-v1-[0-9a-f]{64}")
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# --- strategies ------------------------------------------------------------------------------------------------

LOWER_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"
HEX = "0123456789abcdef"
TAG_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_"
TAG_REST = TAG_FIRST + ".-"

labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hosts = st.one_of(
    st.lists(labels, min_size=2, max_size=4).map(".".join),  # a dot: a registry
    st.just("localhost"),
    st.sampled_from(["docker.io", "index.docker.io", "registry-1.docker.io", "DOCKER.IO", "GHCR.io"]),
)
ports = st.integers(min_value=1, max_value=65535).map(str)
ipv6 = st.sampled_from(["[::1]", "[2001:db8::1]", "[fe80::1:2]", "[2001:DB8::A]"])
named_registries = st.one_of(
    hosts,
    st.builds(lambda h, p: f"{h}:{p}", hosts | labels, ports),  # a port makes even a bare label a registry
)
registries = named_registries | ipv6 | st.builds(lambda h, p: f"{h}:{p}", ipv6, ports)
separators = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def components(draw: st.DrawFn, max_parts: int = 3, max_run: int = 8) -> str:
    runs = draw(st.lists(st.text(LOWER_DIGITS, min_size=1, max_size=max_run), min_size=1, max_size=max_parts))
    out = runs[0]
    for run in runs[1:]:
        out += draw(separators) + run
    return out


paths = st.lists(components(), min_size=1, max_size=4).map("/".join)
tags = st.builds(lambda a, b: a + b, st.sampled_from(TAG_FIRST), st.text(TAG_REST, max_size=127))
digests = st.one_of(
    st.text(HEX, min_size=64, max_size=64).map(lambda h: Digest("sha256:" + h)),
    st.text(HEX, min_size=128, max_size=128).map(lambda h: Digest("sha512:" + h)),
)


@st.composite
def references(draw: st.DrawFn, ipv6: bool = True) -> Reference:
    """Valid references: any registry, multi-component paths, with tag, digest, both or neither.

    ``ipv6=False`` leaves out IPv6 registries, whose mirror tags are invalid (test_mirror_tag_is_a_valid_tag),
    for the tests that need a valid destination.
    """
    tag = draw(st.none() | tags)
    digest = draw(st.none() | digests)
    return Reference(draw(registries if ipv6 else named_registries), draw(paths), tag, digest)


@st.composite
def long_references(draw: st.DrawFn) -> Reference:
    """References at the limits: a name of exactly 255 characters, long tags, sha512 digests."""
    registry = draw(st.sampled_from(["ghcr.io", "registry.example.com:5000", "localhost", "docker.io"]))
    budget = 255 - len(registry) - 1
    parts: list[str] = []
    while budget - sum(len(p) + 1 for p in parts) > 70:
        parts.append(draw(components(max_parts=4, max_run=16)))
    path = "/".join(parts)
    room = budget - len(path) - (1 if parts else 0)
    last = draw(st.text(LOWER_DIGITS, min_size=room, max_size=room))
    path = f"{path}/{last}" if parts else last
    assert len(registry) + 1 + len(path) == 255
    tag = draw(
        st.none()
        | st.builds(lambda a, b: a + b, st.sampled_from(TAG_FIRST), st.text(TAG_REST, min_size=100, max_size=127))
    )
    digest = draw(st.none() | digests)
    return Reference(registry, path, tag, digest)


def readable(ref: Reference) -> str:
    """The readable part as documented: name[:tag][@alg-hex12], unsafe characters to '-', leading '-' and '.'
    dropped (a tag starts with a word character), cut to fit."""
    text = ref.name
    if ref.tag is not None:
        text += f":{ref.tag}"
    if ref.digest is not None:
        algorithm, hex_part = ref.digest.split(":")
        text += f"@{algorithm}-{hex_part[:12]}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text).lstrip("-.")[: 128 - 24 - 2] or "_"


# --- mirror_tag ---------------------------------------------------------------------------------------------------


def check_tag(tag: str) -> None:
    assert TAG_RE.fullmatch(tag), tag
    assert len(tag) <= 128
    assert validate_tag(tag) == tag


@given(references())
@example(parse_reference("[::1]:5000/foo:1"))
@example(parse_reference("[2001:db8::1]/team/app@sha256:" + "0" * 64))
@settings(max_examples=500)
def test_mirror_tag_is_a_valid_tag(ref: Reference) -> None:
    check_tag(mirror_tag(ref))


@given(references())
def test_mirror_tag_follows_the_documented_form(ref: Reference) -> None:
    tag = mirror_tag(ref)
    assert tag == f"{readable(ref)}--{hashlib.sha256(str(ref).encode()).hexdigest()[:24]}"


PLATFORMS = st.lists(st.sampled_from(["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64"]), max_size=4)


@given(references(), PLATFORMS, PLATFORMS)
def test_a_platform_selection_has_its_own_tag(ref: Reference, one: list[str], other: list[str]) -> None:
    """A selection is another image: tags equal exactly when the selected sets are (order and repeats aside);
    no selection keeps the source's tag. (Was: one tag for both, so the second deployment pinned the first's.)"""
    assert (mirror_tag(ref, one) == mirror_tag(ref, other)) == (set(one) == set(other))
    assert mirror_tag(ref, [*reversed(one), *one]) == mirror_tag(ref, one)
    assert mirror_tag(ref, []) == mirror_tag(ref)
    check_tag(mirror_tag(ref, one))
    assert mirror_tag(ref, one).rsplit("--", 1)[0] == mirror_tag(ref).rsplit("--", 1)[0]  # the same readable part


@given(references())
def test_mirror_tag_is_deterministic(ref: Reference) -> None:
    again = parse_reference(str(ref), default_tag=None)
    assert again == ref
    assert mirror_tag(ref) == mirror_tag(ref) == mirror_tag(again)


@given(st.lists(references(), unique_by=str, min_size=2, max_size=60))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_distinct_sources_give_distinct_tags(refs: list[Reference]) -> None:
    assert len({mirror_tag(r) for r in refs}) == len(refs)


@given(st.lists(long_references(), unique_by=str, min_size=1, max_size=20))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_long_references(refs: list[Reference]) -> None:
    for ref in refs:
        assert len(ref.name) == 255
        assert len(mirror_tag(ref)) <= 128
        check_tag(mirror_tag(ref))
    assert len({mirror_tag(r) for r in refs}) == len(refs)


def test_long_references_differing_only_at_the_end() -> None:
    path = "team/" + "a" * 240
    tag = "v" * 128
    refs = [
        Reference("ghcr.io", path[:-1] + "b", tag),
        Reference("ghcr.io", path[:-1] + "c", tag),
        Reference("ghcr.io", path, tag[:-1] + "w"),
        Reference("ghcr.io", path, tag),
        Reference("ghcr.io", path, tag, Digest("sha256:" + "0" * 64)),
        Reference("ghcr.io", path, tag, Digest("sha256:" + "0" * 63 + "1")),
        Reference("ghcr.io", path, None, Digest("sha512:" + "0" * 128)),
        Reference("ghcr.io", path, None, None),
    ]
    result = [mirror_tag(r) for r in refs]
    assert len(set(result)) == len(refs)
    assert len({t.rsplit("--", 1)[0] for t in result}) == 1  # the same readable part: the hash decides
    for t in result:
        check_tag(t)
        assert len(t) == 128


@pytest.mark.parametrize(
    ("source", "prefix"),
    [
        ("ghcr.io/acme/api:1.4.2", "ghcr.io-acme-api-1.4.2--"),
        ("nginx", "docker.io-library-nginx-latest--"),
        ("nginx:1.27-alpine", "docker.io-library-nginx-1.27-alpine--"),
        ("user/app:V1_x", "docker.io-user-app-V1_x--"),
        ("localhost:5000/team/app:dev", "localhost-5000-team-app-dev--"),
        ("quay.io/org/app@sha256:" + "0123456789abcdef" * 4, "quay.io-org-app-sha256-0123456789ab--"),
        ("quay.io/org/app:v2@sha512:" + "ab" * 64, "quay.io-org-app-v2-sha512-abababababab--"),
        ("Registry.Example.COM/a__b/c--d", "registry.example.com-a__b-c--d-latest--"),
    ],
)
def test_mirror_tag_readable_prefix(source: str, prefix: str) -> None:
    tag = mirror_tag(parse_reference(source))
    assert tag.startswith(prefix)
    assert len(tag) == len(prefix) + 24
    assert re.fullmatch(r"[0-9a-f]{24}", tag[len(prefix) :])


# Test vectors: these tags are stable across releases and machines (mirrors already hold them).
MIRROR_TAG_VECTORS = [
    ("ghcr.io/acme/api:1.4.2", "ghcr.io-acme-api-1.4.2--5fab8ae4f9cfeb58893805d6"),
    ("nginx", "docker.io-library-nginx-latest--86cee2c10898a48ff47a0626"),
    (
        "localhost:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "localhost-5000-team-app-sha256-0123456789ab--6bde0b35ac76c3470ef3b2a6",
    ),
    ("quay.io/org/app:v2@sha512:" + "ab" * 64, "quay.io-org-app-v2-sha512-abababababab--47aa303f2e5dc0e090177db2"),
]


@pytest.mark.parametrize(("source", "expected"), MIRROR_TAG_VECTORS)
def test_mirror_tag_vectors(source: str, expected: str) -> None:
    assert mirror_tag(parse_reference(source)) == expected


@pytest.mark.parametrize(
    "spellings",
    [
        ["nginx", "nginx:latest", "library/nginx", "docker.io/library/nginx:latest", "index.docker.io/nginx"],
        ["registry-1.docker.io/library/nginx:latest", "DOCKER.IO/library/nginx"],
        ["GHCR.IO/acme/api:1", "ghcr.io/acme/api:1"],
    ],
)
def test_equivalent_spellings_share_a_tag(spellings: list[str]) -> None:
    assert len({mirror_tag(parse_reference(s)) for s in spellings}) == 1


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ghcr.io/a/b:c", Reference("ghcr.io", "a/b-c", None, None)),  # both read ghcr.io-a-b-c
        ("a.io:5000/x:1", "a.io/5000/x:1"),  # both read a.io-5000-x-1
        ("x.io/a@sha256:" + "ab" * 32, "x.io/a:sha256-abababababab"),  # digest vs a look-alike tag
        ("x.io/a:1@sha256:" + "ab" * 32, "x.io/a:1@sha256:" + "ab" * 31 + "cd"),  # same 12-hex digest prefix
        ("x.io/a:1", "x.io/a:1@sha256:" + "ab" * 32),
        ("x.io/a_b:1", "x.io/a-b:1"),
    ],
)
def test_look_alike_sources_get_distinct_tags(a: str | Reference, b: str | Reference) -> None:
    ra = a if isinstance(a, Reference) else parse_reference(a)
    rb = b if isinstance(b, Reference) else parse_reference(b)
    assert str(ra) != str(rb)
    assert mirror_tag(ra) != mirror_tag(rb)


# --- build_key --------------------------------------------------------------------------------------------------

VECTORS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "repository": "https://github.com/acme/worker.git",
            "commit": COMMIT,
            "env": {"NODE_ENV": "production"},
            "build_args": {"VERSION": "1.4.2"},
            "dockerfile": "./Dockerfile",
            "target": "runtime",
        },
        "build-v1-f9efe8f32cb67bde0c9b2cd4eba951c97b7ef7748f971c6aa05d98c5e002eef5",
    ),
    (
        {"repository": "https://github.com/acme/api", "commit": "a" * 40},
        "build-v1-17af76df81f01ee7dce693dc5b234570b4d9a59ed1b9f90bee8428df22487ed5",
    ),
    (
        {
            "repository": "git@github.com:acme/tools.git/",
            "commit": "0123456789abcdef" * 4,
            "env": {"GREETING": "h\u00e9llo w\u00f6rld", "EMPTY": ""},
            "build_args": {"B": "x y", "A": '"quoted"\\'},
            "dockerfile": "docker/prod/Dockerfile",
        },
        "build-v1-3237989c9fd2b5947f41cd860b926d47e0cb34bf0d03ccc8eeb4dcb86da229e6",
    ),
    (
        {
            "repository": " https://gitlab.example.com/group/sub/repo/ ",
            "commit": "DEADBEEF" * 5,
            "build_args": {"PIP_INDEX_URL": "https://pypi.example.com/simple"},
            "target": "",
        },
        "build-v1-430699b0c323cbced5509db71ea81b68794e8e87e3f51c1dae8dff8dce2e415a",
    ),
]

VECTOR_0_CANONICAL = (
    b'{"build_args":{"VERSION":"1.4.2"},"commit":"0123456789abcdef0123456789abcdef01234567",'
    b'"dockerfile":"Dockerfile","env":{"NODE_ENV":"production"},"repository":"https://github.com/acme/worker",'
    b'"target":"runtime","v":1}'
)
VECTOR_2_CANONICAL = (
    b'{"build_args":{"A":"\\"quoted\\"\\\\","B":"x y"},'
    b'"commit":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","dockerfile":"docker/prod/Dockerfile",'
    b'"env":{"EMPTY":"","GREETING":"h\xc3\xa9llo w\xc3\xb6rld"},"repository":"git@github.com:acme/tools",'
    b'"target":null,"v":1}'
)


@pytest.mark.parametrize(("fields", "expected"), VECTORS)
def test_build_key_vectors(fields: dict[str, Any], expected: str) -> None:
    assert build_key(BuildSpec(**fields)) == expected


@pytest.mark.parametrize(("index", "canonical"), [(0, VECTOR_0_CANONICAL), (2, VECTOR_2_CANONICAL)])
def test_build_key_canonical_bytes(index: int, canonical: bytes) -> None:
    fields, expected = VECTORS[index]
    spec = BuildSpec(**fields)
    assert canonical_json(build_inputs(spec)) == canonical
    assert expected == "build-v1-" + hashlib.sha256(canonical).hexdigest()


def test_canonical_json() -> None:
    assert (
        canonical_json({"b": [1, {"d": None, "c": "é"}], "a": True}) == b'{"a":true,"b":[1,{"c":"\xc3\xa9","d":null}]}'
    )


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
values = st.text(max_size=20)
variables = st.dictionaries(names, values, max_size=6)
commits = st.text(HEX, min_size=40, max_size=40) | st.text(HEX, min_size=64, max_size=64)
repositories = st.text(min_size=1, max_size=40).filter(lambda r: r.strip().rstrip("/").removesuffix(".git") != "")
dockerfiles = st.sampled_from(["Dockerfile", "./Dockerfile", "docker/Dockerfile", "Containerfile", "a/../b/Dockerfile"])
targets = st.none() | st.text(max_size=10)


@st.composite
def specs(draw: st.DrawFn) -> BuildSpec:
    return BuildSpec(
        repository=draw(repositories),
        commit=draw(commits),
        env=draw(variables),
        build_args=draw(variables),
        dockerfile=draw(dockerfiles),
        target=draw(targets),
    )


def replace(spec: BuildSpec, **changes: Any) -> BuildSpec:
    return BuildSpec(**{**spec.model_dump(), **changes})


def normal_repository(repository: str) -> str:
    return repository.strip().rstrip("/").removesuffix(".git")


@given(specs())
@settings(max_examples=300)
def test_build_key_form(spec: BuildSpec) -> None:
    key = build_key(spec)
    assert BUILD_KEY_RE.fullmatch(key)
    assert validate_tag(key) == key
    assert key == build_key(BuildSpec.model_validate(json.loads(spec.model_dump_json())))


@given(specs(), st.randoms(use_true_random=False))
def test_build_key_ignores_order(spec: BuildSpec, rnd: Any) -> None:
    env = list(spec.env.items())
    args = list(spec.build_args.items())
    rnd.shuffle(env)
    rnd.shuffle(args)
    assert build_key(replace(spec, env=dict(env), build_args=dict(args))) == build_key(spec)
    assert build_key(replace(spec, env=dict(reversed(env)), build_args=dict(reversed(args)))) == build_key(spec)


@pytest.mark.parametrize(
    "dockerfiles_",
    [
        ["Dockerfile", "./Dockerfile", "././Dockerfile", " Dockerfile ", "x/../Dockerfile"],
        ["docker/Dockerfile", "./docker/Dockerfile", "docker//Dockerfile", "docker/./Dockerfile"],
    ],
)
def test_build_key_dockerfile_normalised(dockerfiles_: list[str]) -> None:
    base = BuildSpec(repository="https://github.com/acme/api", commit=COMMIT)
    assert len({build_key(replace(base, dockerfile=d)) for d in dockerfiles_}) == 1


@pytest.mark.parametrize(
    "repos",
    [
        ["https://github.com/acme/api", "https://github.com/acme/api.git", "https://github.com/acme/api/"],
        ["https://github.com/acme/api.git/", " https://github.com/acme/api ", "https://github.com/acme/api//"],
        ["git@github.com:acme/api.git", "git@github.com:acme/api"],
    ],
)
def test_build_key_repository_normalised(repos: list[str]) -> None:
    assert len({build_key(BuildSpec(repository=r, commit=COMMIT)) for r in repos}) == 1


@given(specs())
def test_build_key_commit_case_insensitive(spec: BuildSpec) -> None:
    assert build_key(replace(spec, commit=spec.commit.upper())) == build_key(spec)


def test_build_key_target_empty_is_none() -> None:
    base = BuildSpec(repository="r", commit=COMMIT)
    assert build_key(replace(base, target="")) == build_key(base)
    assert build_key(replace(base, target="runtime")) != build_key(base)


@given(specs(), commits)
def test_build_key_changes_with_commit(spec: BuildSpec, commit: str) -> None:
    assume(commit.lower() != spec.commit.lower())
    assert build_key(replace(spec, commit=commit)) != build_key(spec)


@given(specs(), repositories)
def test_build_key_changes_with_repository(spec: BuildSpec, repository: str) -> None:
    assume(normal_repository(repository) != normal_repository(spec.repository))
    assert build_key(replace(spec, repository=repository)) != build_key(spec)


@given(specs(), st.sampled_from(["env", "build_args"]), names, values, values)
def test_build_key_changes_with_a_variable(spec: BuildSpec, field: str, name: str, old: str, new: str) -> None:
    assume(old != new)
    before = replace(spec, **{field: {**getattr(spec, field), name: old}})
    after = replace(spec, **{field: {**getattr(spec, field), name: new}})
    assert build_key(before) != build_key(after)
    removed = {k: v for k, v in getattr(spec, field).items() if k != name}
    assert build_key(replace(spec, **{field: removed})) != build_key(before)


@given(specs(), names, values)
def test_build_key_env_and_build_args_are_distinct(spec: BuildSpec, name: str, value: str) -> None:
    env = {k: v for k, v in spec.env.items() if k != name}
    args = {k: v for k, v in spec.build_args.items() if k != name}
    as_env = replace(spec, env={**env, name: value}, build_args=args)
    as_arg = replace(spec, env=env, build_args={**args, name: value})
    assert build_key(as_env) != build_key(as_arg)


@given(specs(), st.text(min_size=1, max_size=30))
def test_build_key_changes_with_dockerfile(spec: BuildSpec, dockerfile: str) -> None:
    assume(posixpath.normpath(dockerfile.strip()) != posixpath.normpath(spec.dockerfile.strip()))
    assert build_key(replace(spec, dockerfile=dockerfile)) != build_key(spec)


@given(specs(), targets)
def test_build_key_changes_with_target(spec: BuildSpec, target: str | None) -> None:
    assume((target or None) != (spec.target or None))
    assert build_key(replace(spec, target=target)) != build_key(spec)


@given(st.lists(specs(), min_size=2, max_size=10))
def test_build_keys_distinct_iff_inputs_differ(spec_list: list[BuildSpec]) -> None:
    inputs = {canonical_json(build_inputs(s)) for s in spec_list}
    assert len({build_key(s) for s in spec_list}) == len(inputs)


# --- plan_targets -----------------------------------------------------------------------------------------------


def make_plan(
    deployments: list[dict[str, Any]],
    mode: str = "service",
    prefix: str = "mirror",
    cluster: str | None = "prod-eu-1",
    registry: str = "mirror.example.com",
) -> Any:
    mirror: dict[str, Any] = {"registry": registry, "prefix": prefix, "mode": mode}
    if cluster is not None:
        mirror["cluster"] = cluster
    return parse_plan({"mirror": mirror, "deployments": deployments})


def image(service: str, environment: str, source: str) -> dict[str, Any]:
    return {"service": service, "environment": environment, "image": source}


def built(service: str, environment: str, **fields: Any) -> dict[str, Any]:
    return {
        "service": service,
        "environment": environment,
        "build": {"repository": "https://g.io/a", "commit": COMMIT, **fields},
    }


def test_service_mode_targets() -> None:
    plan = make_plan([image("api", "prod", "ghcr.io/acme/api:1.4.2"), image("web", "prod", "nginx")])
    targets = plan_targets(plan)
    assert [str(t.destination) for t in targets] == [
        "mirror.example.com/mirror/api:" + mirror_tag(parse_reference("ghcr.io/acme/api:1.4.2")),
        "mirror.example.com/mirror/web:" + mirror_tag(parse_reference("nginx")),
    ]
    assert targets[0] == Target(
        0,
        plan.deployments[0],
        Reference("mirror.example.com", "mirror/api", "ghcr.io-acme-api-1.4.2--5fab8ae4f9cfeb58893805d6"),
        parse_reference("ghcr.io/acme/api:1.4.2"),
    )
    assert [t.index for t in targets] == [0, 1]
    assert all(t.build_key is None for t in targets)
    assert targets[1].source == parse_reference("docker.io/library/nginx:latest")


def test_cluster_mode_targets() -> None:
    plan = make_plan([image("api", "prod", "ghcr.io/acme/api:1.4.2"), image("web", "prod", "nginx")], mode="cluster")
    assert [str(t.destination) for t in plan_targets(plan)] == [
        "mirror.example.com/mirror/prod-eu-1:ghcr.io-acme-api-1.4.2--5fab8ae4f9cfeb58893805d6",
        "mirror.example.com/mirror/prod-eu-1:docker.io-library-nginx-latest--86cee2c10898a48ff47a0626",
    ]


def test_cluster_mode_same_source_is_mirrored_once() -> None:
    plan = make_plan(
        [
            image("api", "prod", "ghcr.io/acme/api:1.4.2"),
            image("api", "staging", "ghcr.io/acme/api:1.4.2"),
            image("gateway", "prod", "ghcr.io/acme/api:1.4.2"),
            image("web", "prod", "nginx"),
            image("web", "staging", "docker.io/library/nginx:latest"),  # the same source, spelled differently
        ],
        mode="cluster",
    )
    destinations = [t.destination for t in plan_targets(plan)]
    assert destinations[0] == destinations[1] == destinations[2]
    assert destinations[3] == destinations[4]
    assert destinations[0] != destinations[3]
    assert {d.repository for d in destinations} == {"mirror/prod-eu-1"}


def test_service_mode_separates_services() -> None:
    plan = make_plan(
        [
            image("api", "prod", "ghcr.io/acme/api:1.4.2"),
            image("api", "staging", "ghcr.io/acme/api:1.4.2"),
            image("gateway", "prod", "ghcr.io/acme/api:1.4.2"),
        ]
    )
    api_prod, api_staging, gateway = (t.destination for t in plan_targets(plan))
    assert api_prod == api_staging  # the same service and source: one copy
    assert api_prod.repository == "mirror/api"
    assert gateway.repository == "mirror/gateway"
    assert api_prod.tag == gateway.tag


def test_with_mode_changes_the_targets() -> None:
    plan = make_plan([image("api", "prod", "nginx")], mode="cluster")
    assert plan_targets(plan)[0].destination.repository == "mirror/prod-eu-1"
    assert plan_targets(plan.with_mode("service"))[0].destination.repository == "mirror/api"


def test_build_targets() -> None:
    plan = make_plan([built("worker", "prod", env={"A": "1"}), built("worker", "staging", env={"A": "2"})])
    first, second = plan_targets(plan)
    for target in (first, second):
        assert target.deployment.build is not None
        assert target.source is None
        assert target.build_key == build_key(target.deployment.build)
        assert target.destination == Reference("mirror.example.com", "mirror/worker", target.build_key)
    assert first.build_key != second.build_key


def test_mixed_targets_keep_plan_order() -> None:
    plan = make_plan([image("a", "prod", "nginx"), built("b", "prod"), image("c", "prod", "redis")], mode="cluster")
    targets = plan_targets(plan)
    assert [t.index for t in targets] == [0, 1, 2]
    assert [t.deployment.service for t in targets] == ["a", "b", "c"]
    assert [t.source is None for t in targets] == [False, True, False]


@pytest.mark.parametrize("mode", ["service", "cluster"])
def test_empty_prefix(mode: str) -> None:
    plan = make_plan([image("api", "prod", "nginx"), built("worker", "prod")], mode=mode, prefix="")
    name = "api" if mode == "service" else "prod-eu-1"
    targets = plan_targets(plan)
    assert targets[0].destination.repository == name
    assert str(targets[0].destination).startswith(f"mirror.example.com/{name}:")
    assert "//" not in str(targets[1].destination)
    assert mirror_repository(plan, plan.deployments[0]) == name
    assert ledger_repository(plan) == "ocicopy-ledger"


@pytest.mark.parametrize(
    ("prefix", "mode", "repository", "ledger"),
    [
        ("mirror", "service", "mirror/api", "mirror/ocicopy-ledger"),
        ("mirror", "cluster", "mirror/prod-eu-1", "mirror/ocicopy-ledger"),
        ("team/mirrors", "service", "team/mirrors/api", "team/mirrors/ocicopy-ledger"),
        ("", "service", "api", "ocicopy-ledger"),
        ("", "cluster", "prod-eu-1", "ocicopy-ledger"),
    ],
)
def test_mirror_and_ledger_repository(prefix: str, mode: str, repository: str, ledger: str) -> None:
    plan = make_plan([image("api", "prod", "nginx")], mode=mode, prefix=prefix)
    assert plan.mirror.mode is Mode(mode)
    assert mirror_repository(plan, plan.deployments[0]) == repository
    assert ledger_repository(plan) == ledger


def test_registry_is_normalised_in_destinations() -> None:
    plan = make_plan([image("api", "prod", "nginx")], registry="Mirror.Example.COM:5000")
    assert plan_targets(plan)[0].destination.registry == "mirror.example.com:5000"


@given(
    st.lists(
        st.tuples(st.sampled_from(["api", "web", "db"]), st.sampled_from(["prod", "dev"]), references(ipv6=False)),
        max_size=6,
    )
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_destinations_are_shared_exactly_when_sources_are(rows: list[tuple[str, str, Reference]]) -> None:
    """Cluster mode: one repository, tags equal iff sources equal. Service mode: also split by service."""
    rows = list({(s, e): (s, e, r) for s, e, r in rows}.values())
    assume(rows)
    deployments = [image(s, e, str(r)) for s, e, r in rows]
    for mode in ("cluster", "service"):
        targets = plan_targets(make_plan(deployments, mode=mode))
        for (sa, _, ra), ta in zip(rows, targets, strict=True):
            assert ta.source == parse_reference(str(ra))
            for (sb, _, _), tb in zip(rows, targets, strict=True):
                same = ta.source == tb.source and (mode == "cluster" or sa == sb)
                assert (ta.destination == tb.destination) == same


# --- every accepted plan can be planned ----------------------------------------------------------------------------


def accepted_plan_plans(data: dict[str, Any]) -> None:
    """A plan parse_plan accepts must plan without error (else parse_plan must refuse it, naming the entry)."""
    try:
        plan = parse_plan(data)
    except PlanError:
        return
    for target in plan_targets(plan):
        validate_tag(target.destination.tag or "")


BASE: dict[str, Any] = {
    "mirror": {"registry": "mirror.example.com", "prefix": "mirror"},
    "deployments": [image("api", "prod", "nginx"), built("worker", "prod")],
}


def with_changes(**mirror: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["mirror"].update(mirror)
    return data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(with_changes(prefix="a" * 250), id="long-prefix-service"),
        pytest.param(with_changes(prefix="a" * 200, mode="cluster", cluster="c" * 100), id="long-prefix-cluster"),
        pytest.param({**BASE, "deployments": [image("api", "prod", "[::1]:5000/app:1")]}, id="ipv6-source"),
        pytest.param({**BASE, "deployments": [built("w", "prod", env={"A": "\ud800"})]}, id="surrogate-env"),
        pytest.param({**BASE, "deployments": [built("w", "prod", build_args={"A": "x\udcff"})]}, id="surrogate-arg"),
    ],
)
def test_accepted_plan_can_be_planned(data: dict[str, Any]) -> None:
    accepted_plan_plans(data)


def test_lone_surrogate_from_a_json_file(tmp_path: Path) -> None:
    """JSON may spell a lone surrogate (``"\\ud800"``): load_plan must refuse it or build_key must cope."""
    path = tmp_path / "plan.json"
    path.write_text(
        '{"mirror": {"registry": "m.io"}, "deployments": [{"service": "w", "environment": "prod", '
        '"build": {"repository": "r", "commit": "' + COMMIT + '", "env": {"A": "\\ud800"}}}]}',
        encoding="ascii",
    )
    try:
        plan = load_plan(path)
    except PlanError:
        return
    assert BUILD_KEY_RE.fullmatch(plan_targets(plan)[0].build_key or "")


# Mirror hosts of the shapes parse_plan's host check lets through; bad ones must be refused there, as
# test_plan.py's mirror-* cases spell out one by one.
@given(st.from_regex(r"[a-z0-9.-]{1,12}(?::[0-9]{1,5})?|\[[0-9a-f:]{1,12}\](?::[0-9]{1,5})?", fullmatch=True))
@settings(max_examples=300)
def test_any_accepted_mirror_registry_can_be_planned(registry: str) -> None:
    accepted_plan_plans(with_changes(registry=registry))


def test_deployment_model_is_what_targets_carry() -> None:
    plan = make_plan([image("api", "prod", "nginx")])
    assert isinstance(plan_targets(plan)[0].deployment, Deployment)
