"""What prune removes (issue 13), pure: hypothesis over random repositories (indexes sharing children, tags of
several origins on shared digests, referrers, earlier revisions) and the safety rules that must hold in each."""

from __future__ import annotations

import graphlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ocicopy.digest import Digest
from ocicopy.history import TagRecord
from ocicopy.prune import Node, RepositoryView, Rules, freed_bytes, plan_repository, protected
from ocicopy.subjects import fallback_tag

REPO = "m/api"
NOW = 1_800_000_000.0


def dg(i: int) -> Digest:
    return Digest(f"sha256:{i:064x}")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[RepositoryView, dict[str, TagRecord], Rules]:
    n = draw(st.integers(1, 9))
    nodes: dict[Digest, Node] = {}
    for i in range(n):  # children only among later manifests: a DAG
        children = tuple(dg(j) for j in draw(st.sets(st.integers(i + 1, n + 1), max_size=2)) if j < n)
        blobs = tuple((dg(100 + b), 10 + b) for b in draw(st.sets(st.integers(0, 5), max_size=3)))
        nodes[dg(i)] = Node(dg(i), 100, children, blobs)
    tags: dict[str, Digest] = {}
    for t in range(draw(st.integers(0, 7))):
        tags[f"t{t}"] = dg(draw(st.integers(0, n - 1)))
    referrers: dict[Digest, tuple[Digest, ...]] = {}
    for i in range(n):
        if draw(st.booleans()) and i + 1 < n:
            referrers[dg(i)] = (dg(draw(st.integers(i + 1, n - 1))),)
    if draw(st.booleans()) and referrers:  # a cosign-style tag on a referrer of some subject
        subject, (sig, *_) = next(iter(referrers.items()))
        tags[fallback_tag(subject) + ".sig"] = sig
    history: dict[str, TagRecord] = {}
    for tag, digest in tags.items():
        if tag.startswith("t") and draw(st.booleans()):
            recorded = digest if draw(st.integers(0, 4)) else dg((int(digest.hex, 16) + 1) % n)  # sometimes moved
            previous = tuple(sorted({dg(i) for i in draw(st.sets(st.integers(0, n - 1), max_size=2))} - {recorded}))
            who = frozenset(draw(st.sets(st.sampled_from(["c/api/prod", "c/api/dev"]), max_size=2)))
            written = NOW - draw(st.integers(0, 100)) * 3600
            history[f"{REPO}:{tag}"] = TagRecord(REPO, tag, recorded, written, who, previous)
    current = frozenset((REPO, t) for t in draw(st.sets(st.sampled_from(sorted(tags) or ["none"]), max_size=2)))
    pinned = frozenset(dg(i) for i in draw(st.sets(st.integers(0, n - 1), max_size=2)))
    rules = Rules(
        current=current,
        pinned=pinned,
        keep_last=draw(st.integers(0, 2)),
        older_than=draw(st.sampled_from([None, 3600.0 * 24])),
        now=NOW,
    )
    return RepositoryView(REPO, tags, nodes, referrers), history, rules


def reach(view: RepositoryView, roots: set[Digest]) -> set[Digest]:
    """Every manifest under ``roots`` by index children (not referrers)."""
    out, todo = set(), list(roots)
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            node = view.nodes.get(d)
            todo += list(node.children) if node else []
    return out


@given(scenarios())
@settings(max_examples=400)
def test_prune_never_removes_what_is_kept(case: tuple[RepositoryView, dict[str, TagRecord], Rules]) -> None:
    view, history, rules = case
    keep = protected(history.values(), rules)
    plan = plan_repository(view, history, keep, rules)
    deleted = set(plan.deletes)
    assert len(plan.deletes) == len(deleted)
    gone_tags = set(plan.removed) | set(plan.with_subject)
    kept_tags = {t: d for t, d in view.tags.items() if t not in gone_tags}
    # A delete by digest untags every tag on it: no kept tag may name a deleted digest, nor reach one as a child.
    assert not deleted & reach(view, set(kept_tags.values()))
    assert not deleted & reach(view, set(rules.pinned))  # nor a pinned digest, or what it reaches
    for tag, digest in plan.removed.items():  # only ocicopy's own, as recorded, unprotected
        record = history[f"{REPO}:{tag}"]
        assert record.digest == digest == view.tags[tag] and digest in deleted
        assert (REPO, tag) not in keep and (REPO, tag) not in rules.current
        assert rules.older_than is None or NOW - record.written >= rules.older_than
    for tag in plan.with_subject:  # a referrer tag goes only with its subject
        assert tag.split(".")[0].split("-")[1] in {d.hex for d in deleted}
    for tag, other in plan.shared.items():
        assert view.tags[tag] not in deleted
        assert view.tags[tag] in reach(view, {kept_tags[other]} if other in kept_tags else set(rules.pinned))
    roots = set(plan.removed.values()) | set(plan.with_subject.values()) | set(plan.revisions)
    assert deleted <= below(view, roots)  # nothing from nowhere: a removed tag's digest, a revision, or under one
    before = {d: set() for d in deleted}  # the order: an index before its children, a referrer before its subject
    for d in deleted:
        node = view.nodes.get(d)
        for child in node.children if node else ():
            if child in deleted:
                before[child].add(d)
        for r in view.referrers.get(d, ()):
            if r in deleted:
                before[d].add(r)
    try:
        list(graphlib.TopologicalSorter(before).static_order())
    except graphlib.CycleError:
        return  # the rules contradict each other: no order satisfies both
    position = {d: i for i, d in enumerate(plan.deletes)}
    assert all(position[a] < position[d] for d, firsts in before.items() for a in firsts)


def below(view: RepositoryView, roots: set[Digest]) -> set[Digest]:
    """``roots`` and everything under them: index children and referrers."""
    out, todo = set(), list(roots)
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            node = view.nodes.get(d)
            todo += [*(node.children if node else ()), *view.referrers.get(d, ())]
    return out


@given(scenarios())
def test_freed_bytes_are_the_blobs_only_deleted_manifests_hold(
    case: tuple[RepositoryView, dict[str, TagRecord], Rules],
) -> None:
    view, history, rules = case
    plan = plan_repository(view, history, protected(history.values(), rules), rules)
    gone = set(plan.deletes)
    kept_blobs = {b for n in view.nodes.values() if n.digest not in gone for b, _ in n.blobs}
    expected = {b: s for n in view.nodes.values() if n.digest in gone for b, s in n.blobs if b not in kept_blobs}
    assert freed_bytes([view], {REPO: plan}) == sum(expected.values())


def test_the_most_recent_per_deployment_and_the_plan_s_tags_stay() -> None:
    """Five releases of one deployment, keep-last 2, the plan on the oldest (a rollback): the two newest and the
    plan's stay, the other two go with their index children; a foreign tag on one of them keeps it (shared)."""
    nodes = {dg(i): Node(dg(i), 100, (dg(10 + i),), ()) for i in range(5)}
    nodes |= {dg(10 + i): Node(dg(10 + i), 50, (), ((dg(100 + i), 1000),)) for i in range(5)}
    tags = {f"v{i}": dg(i) for i in range(5)} | {"latest": dg(1)}
    history = {
        f"{REPO}:v{i}": TagRecord(REPO, f"v{i}", dg(i), NOW - (5 - i) * 60, frozenset({"c/api/prod"})) for i in range(5)
    }
    rules = Rules(current=frozenset({(REPO, "v0")}), keep_last=2, now=NOW)
    view = RepositoryView(REPO, tags, nodes)
    plan = plan_repository(view, history, protected(history.values(), rules), rules)
    assert plan.removed == {"v2": dg(2)} and plan.shared == {"v1": "latest"}
    assert set(plan.kept) == {"v0", "v3", "v4"}
    assert plan.deletes == [dg(2), dg(12)]  # the index, then its child
    assert freed_bytes([view], {REPO: plan}) == 1000
