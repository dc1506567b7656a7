"""Fleet plans (issue 12), pure: ``mirrors`` keyed by cluster, ``clusters`` per deployment, ``version``, and the
single-mirror plans the engine runs one cluster at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocicopy import PlanError, parse_plan
from ocicopy.plan import DEFAULT_CLUSTER, Mode, Plan

FLEET: dict[str, Any] = {  # the example
    "mirrors": {
        "staging": {"registry": "registry.staging.example.com", "prefix": "mirror", "mode": "cluster"},
        "prod-eu": {"registry": "123456789012.dkr.ecr.eu-west-3.amazonaws.com", "prefix": "mirror", "mode": "service"},
        "prod-us": {"registry": "registry.us.example.com", "prefix": "mirror", "mode": "cluster"},
    },
    "deployments": [
        {
            "service": "api",
            "environment": "prod",
            "image": "ghcr.io/acme/api:1.4.2",
            "clusters": ["prod-eu", "prod-us"],
        },
        {"service": "api", "environment": "staging", "image": "ghcr.io/acme/api:1.5.0-rc1", "clusters": ["staging"]},
    ],
}


def fleet(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(FLEET)
    data.update(changes)
    return data


def test_the_fleet_example_reads_as_three_clusters() -> None:
    plan = parse_plan(FLEET)
    assert plan.is_fleet and list(plan.clusters()) == ["staging", "prod-eu", "prod-us"]
    assert plan.clusters()["prod-us"].cluster == "prod-us"  # the key names the cluster (its repository in cluster mode)
    by_cluster = {name: [d.label for d in sub.deployments] for name, sub in plan.cluster_plans()}
    assert by_cluster == {"staging": ["api/staging"], "prod-eu": ["api/prod"], "prod-us": ["api/prod"]}
    sub = plan.for_cluster("prod-eu")
    assert (
        sub is not None and not sub.is_fleet and sub.target.registry == "123456789012.dkr.ecr.eu-west-3.amazonaws.com"
    )
    assert sub.target.mode is Mode.SERVICE and sub.target.cluster == "prod-eu"


def test_a_deployment_without_clusters_goes_to_every_mirror() -> None:
    data = fleet()
    del data["deployments"][0]["clusters"]
    plan = parse_plan(data)
    assert [name for name, sub in plan.cluster_plans() if "api/prod" in [d.label for d in sub.deployments]] == [
        "staging",
        "prod-eu",
        "prod-us",
    ]


def test_a_single_mirror_plan_is_one_cluster() -> None:
    plain = [{k: v for k, v in d.items() if k != "clusters"} for d in FLEET["deployments"]]
    single = parse_plan({"mirror": {"registry": "m.example.com"}, "deployments": plain})
    assert not single.is_fleet and list(single.clusters()) == [DEFAULT_CLUSTER]
    with pytest.raises(PlanError, match="no mirror for 'prod-eu', 'prod-us'"):  # its clusters must name its mirror
        parse_plan({"mirror": {"registry": "m.example.com"}, "deployments": FLEET["deployments"]})
    named = parse_plan(
        {
            "mirror": {"registry": "m.example.com", "mode": "cluster", "cluster": "prod-eu"},
            "deployments": [{"service": "api", "environment": "prod", "image": "a.io/x:1", "clusters": ["prod-eu"]}],
        }
    )
    assert list(named.clusters()) == ["prod-eu"] and named.for_cluster("prod-eu") is named


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({**fleet(), "mirror": {"registry": "m.example.com"}}, "give mirror (one cluster) or mirrors"),
        (fleet(mirrors={}), "mirrors: mirrors must name at least one cluster"),
        (fleet(version=3), "plan version 3 is not one this ocicopy reads (1, 2)"),
        (fleet(version=1), "mirrors is a version 2 field"),
        (fleet(version="2"), "version: must be a whole number, not a string"),
        (fleet(mirrors={"Prod": {"registry": "m.example.com"}}), "cluster 'Prod' must be lower-case"),
        (
            fleet(mirrors={"eu": {"registry": "m.example.com", "cluster": "us"}}),
            "eu: cluster 'us' differs from its key",
        ),
        (fleet(mirrors={"eu": {"prefix": "m"}}), "give exactly one of mirror.registry or mirror.layout"),
        (fleet(mirrors={"eu": "m.example.com"}), "mirrors: eu: must be an object"),
    ],
)
def test_a_malformed_fleet_plan_is_one_clear_error(data: dict[str, Any], said: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert said in str(info.value), str(info.value)
    assert str(info.value).startswith("plan: ") and len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize(
    ("clusters", "said"),
    [
        (["prod-eu", "nowhere"], "deployments[0] (api/prod): clusters: no mirror for 'nowhere' (the plan's clusters:"),
        ([], "deployments[0] (api/prod): clusters: must have at least 1 entry"),
        (["prod-eu", "prod-eu"], "a cluster is named twice"),
        ("prod-eu", "clusters: must be a list, not a string"),
    ],
)
def test_a_deployments_clusters_must_name_the_plans(clusters: object, said: str) -> None:
    data = fleet()
    data["deployments"][0]["clusters"] = clusters
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    assert said in str(info.value), str(info.value)


def test_one_service_and_environment_once_per_cluster() -> None:
    data = fleet()
    second = {"service": "api", "environment": "prod", "image": "ghcr.io/acme/api:1.5.0", "clusters": ["staging"]}
    data["deployments"].append(second)  # another cluster: another release of api/prod, a canary region
    assert len(parse_plan(data).deployments) == 3
    second["clusters"] = ["prod-us"]
    with pytest.raises(
        PlanError,
        match=r"deployments\[2\] \(api/prod\): same service and environment as "
        r"deployments\[0\] in cluster prod-us",
    ):
        parse_plan(data)


def test_only_clusters_limits_the_run() -> None:
    plan = parse_plan(FLEET)
    eu = plan.only_clusters(["prod-eu"])
    assert list(eu.clusters()) == ["prod-eu"] and [d.label for d in eu.deployments] == ["api/prod"]
    assert eu.deployments[0].clusters == ["prod-eu"]
    assert plan.only_clusters([]) is plan
    with pytest.raises(PlanError, match="no cluster 'mars' in the plan"):
        plan.only_clusters(["mars"])
    lonely = fleet()
    lonely["mirrors"]["idle"] = {"registry": "idle.example.com"}
    for d in lonely["deployments"]:
        d.setdefault("clusters", ["staging"])
    with pytest.raises(PlanError, match="no deployment goes to idle"):
        parse_plan(lonely).only_clusters(["idle"])


def test_mode_overrides_every_cluster() -> None:
    plan = parse_plan(FLEET).with_mode("cluster")
    assert {m.mode for m in plan.clusters().values()} == {Mode.CLUSTER}
    assert plan.clusters()["prod-eu"].cluster == "prod-eu"


def test_the_engine_view_of_a_fleet_is_refused() -> None:
    with pytest.raises(PlanError, match="runs one cluster at a time"):
        parse_plan(FLEET).target  # noqa: B018


_names = st.sampled_from(["a", "b", "c", "d"])


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_names, min_size=1, max_size=4, unique=True))
    mirrors = {
        n: {"registry": f"{n}.example.com", "mode": draw(st.sampled_from(["service", "cluster"]))} for n in names
    }
    deployments = []
    for i in range(draw(st.integers(1, 6))):
        d: dict[str, Any] = {"service": f"s{i}", "environment": "prod", "image": f"src.example.com/s{i}:1"}
        chosen = draw(st.none() | st.lists(st.sampled_from(names), min_size=1, unique=True))
        if chosen is not None:
            d["clusters"] = chosen
        deployments.append(d)
    return {"version": 2, "mirrors": mirrors, "deployments": deployments}


@given(fleets())
def test_each_deployment_runs_once_in_each_of_its_clusters(data: dict[str, Any]) -> None:
    plan: Plan = parse_plan(data)
    runs = {(name, d.service) for name, sub in plan.cluster_plans() for d in sub.deployments}
    expected = {(name, d["service"]) for d in data["deployments"] for name in d.get("clusters", list(data["mirrors"]))}
    assert runs == expected
    for name, sub in plan.cluster_plans():
        assert not sub.is_fleet and sub.target.cluster == name and sub.target.registry == f"{name}.example.com"
        assert all(d.clusters is None for d in sub.deployments)  # a cluster's plan is today's single-mirror plan
    for names in ([n] for n in plan.clusters()):
        try:
            limited = plan.only_clusters(names)
        except PlanError:
            assert not any(c == names[0] for c, _ in runs)
            continue
        assert {(n, s) for n, sub in limited.cluster_plans() for s in (d.service for d in sub.deployments)} == {
            r for r in runs if r[0] == names[0]
        }
