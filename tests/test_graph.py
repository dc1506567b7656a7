"""The work graph (ocicopy.graph), pure: hypothesis over random runs of copies."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.graph import BlobRef, Copy, ManifestRef, WorkGraph, compile_graph


def dg(n: int) -> Digest:
    return Digest("sha256:" + hashlib.sha256(str(n).encode()).hexdigest())


def manifest(blobs: Sequence[BlobRef], children: Sequence[ManifestRef] = ()) -> ManifestRef:
    """A manifest whose digest is its content's (the same digest always names the same blobs and children)."""
    bs, kids = tuple(dict.fromkeys(blobs)), tuple(dict.fromkeys(children))
    return ManifestRef(Digest.of(repr((bs, kids)).encode()), 300 + len(bs), bs, kids)


blobs = st.builds(lambda n: BlobRef(dg(n), 100 + n), st.integers(0, 12))
images = st.builds(manifest, st.lists(blobs, max_size=4))
tops = images | st.builds(lambda kids: manifest([], kids), st.lists(images, min_size=1, max_size=3))
copies = st.builds(
    Copy,
    source=st.sampled_from(["src.example.com", "other.example.com"]),
    registry=st.sampled_from(["eu.example.com", "us.example.com", "staging.example.com"]),
    repository=st.sampled_from(["m/a", "m/b", "m/c"]),
    tag=st.sampled_from(["t1", "t2", "t3", "t4"]),
    top=tops,
    group=st.sampled_from(["", "", "region-eu"]),
)


def closure(graph: WorkGraph, key: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.nodes[key].deps)
    while todo:
        k = todo.pop()
        if k not in seen:
            seen.add(k)
            todo.extend(graph.nodes[k].deps)
    return seen


def manifests_of(m: ManifestRef) -> list[ManifestRef]:
    return [m, *(c for child in m.children for c in manifests_of(child))]


@given(st.lists(copies, max_size=12))
def test_the_graph_orders_and_dedupes_every_run(run: list[Copy]) -> None:
    graph = compile_graph(run)
    order = graph.order()
    position = {n.key: i for i, n in enumerate(order)}
    assert len(order) == len(graph.nodes)
    for n in order:  # everything after what it depends on
        assert all(position[d] < position[n.key] for d in n.deps)
    uploads = [(n.registry, n.digest) for n in graph.of_kind("upload")]
    assert len(uploads) == len(set(uploads))  # each (registry, digest) uploaded by one node at most
    reads = [(n.group, n.registry, n.digest) for n in graph.of_kind("read")]
    assert len(reads) == len(set(reads))  # each source digest read once per locality group
    for c in run:
        tag = f"tag:{c.registry}/{c.repository}:{c.tag}"
        before_tag = closure(graph, tag)
        if graph.nodes[tag].digest != c.top.digest:
            continue  # another copy to the same tag came first (cluster mode: one image per mirror tag)
        for m in manifests_of(c.top):
            node = f"manifest:{c.registry}/{c.repository}:{m.digest}"
            assert node in before_tag  # no tag before its manifests
            placed = {graph.nodes[k].digest for k in closure(graph, node) if graph.nodes[k].kind in ("upload", "mount")
                      and graph.nodes[k].registry == c.registry}  # fmt: skip
            assert {b.digest for b in m.blobs} <= placed  # no manifest before its blobs are in its registry
    for n in graph.of_kind("mount"):  # a mount follows the upload into its registry
        (first,) = n.deps
        assert graph.nodes[first].kind == "upload" and graph.nodes[first].registry == n.registry


def test_a_fleet_reads_once_uploads_once_per_registry_and_mounts_within_one() -> None:
    layer, config = BlobRef(dg(1), 1000), BlobRef(dg(2), 10)
    image = ManifestRef(dg(3), 300, (config, layer))
    run = [
        Copy("src", "eu", "m/api", "t", image),
        Copy("src", "eu", "m/web", "t", image),  # service mode: another repository of eu
        Copy("src", "us", "m/c1", "t", image),
        Copy("src", "us", "m/c1", "t", image),  # cluster mode: the same destination again
    ]
    graph = compile_graph(run)
    summary = graph.summary()
    assert summary.nodes == {"read": 2, "upload": 4, "mount": 2, "manifest": 3, "tag": 3}
    assert summary.bytes_from_source == 1010  # once, for two registries
    assert summary.bytes_to_mirrors == 2020 and summary.uploads_by_registry == {"eu": 2, "us": 2}
    assert graph.key("run-1", "tag:us/m/c1:t") == "run-1/tag:us/m/c1:t"


def test_blobs_a_destination_holds_are_not_placed() -> None:
    layer = BlobRef(dg(1), 1000)
    image = ManifestRef(dg(3), 300, (layer,))
    graph = compile_graph([Copy("src", "eu", "m/a", "t", image)], present=[("eu", "m/a", layer.digest)])
    assert graph.summary().nodes["read"] == 0 and graph.nodes["manifest:eu/m/a:" + dg(3)].deps == ()


def test_locality_groups_each_read_the_source() -> None:
    image = ManifestRef(dg(3), 300, (BlobRef(dg(1), 1000),))
    graph = compile_graph([Copy("src", "eu", "m", "t", image, "region-eu"), Copy("src", "us", "m", "t", image, "us")])
    assert graph.summary().bytes_from_source == 2000  # one read per group (the issue: read once per group)


@given(st.lists(copies, max_size=12))
def test_the_coarse_tasks_cover_the_graph_and_order_chains_after_their_blobs(run: list[Copy]) -> None:
    """A blob task per read with every placement it feeds once; a chain per tag, after the blob task of every
    blob its manifests need placed; each task in its locality group's resources."""
    from ocicopy.executor import BlobTask, Chain, ChainTask, tasks_of, where

    graph = compile_graph(run)
    chains = {n.key: Chain("s/x@" + str(n.digest), f"{n.registry}/{n.repository}:t", n.digest or dg(0))
              for n in graph.of_kind("tag")}  # fmt: skip
    resources = {"region-eu": {"region-eu": 1.0}}
    fresh = {where(n.registry, n.repository) for n in graph.of_kind("tag")[::2]}  # some repositories new
    tasks = tasks_of(graph, chains, resources=resources, fresh=fresh)
    blob_tasks = [t for t in tasks if isinstance(t, BlobTask)]
    chain_tasks = [t for t in tasks if isinstance(t, ChainTask)]
    assert len(blob_tasks) == len(graph.of_kind("read")) and len(chain_tasks) == len(graph.of_kind("tag"))
    placed = [p for t in blob_tasks for repos in t.placements for p in repos]
    nodes = [where(n.registry, n.repository) + "@" + str(n.digest) for n in graph.nodes.values()
             if n.kind in ("upload", "mount")]  # fmt: skip
    assert sorted(f"{p}@{t.digest}" for t in blob_tasks for repos in t.placements for p in repos) == sorted(nodes)
    assert len(placed) == len(nodes)
    for t in blob_tasks:
        read = graph.nodes[t.key]
        assert dict(t.resources) == resources.get(read.group, {})
        assert len({r[0].split("/", 1)[0] for r in t.placements}) == len(t.placements)  # one entry per registry
        assert set(t.fresh) == {p for repos in t.placements for p in repos} & fresh
    by_key = {t.key: t for t in blob_tasks}
    for chain in chain_tasks:
        tag = graph.nodes[chain.key]
        assert chain.store == where(tag.registry, tag.repository) and chain.chain is chains[chain.key]
        assert all(d in by_key for d in chain.deps)
        needed = {graph.nodes[k] for k in closure(graph, chain.key) if graph.nodes[k].kind in ("upload", "mount")}
        for node in needed:  # every placement the tag waits for is done by one of the chain's blob tasks
            name = where(node.registry, node.repository)
            assert any(name in repos for d in chain.deps for repos in by_key[d].placements)
