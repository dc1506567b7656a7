"""Retention (pure): which mirror tags and manifests ``ocicopy prune`` removes, and in which order.

What is ocicopy's to remove: a tag with a history record (:mod:`ocicopy.history`) that still holds the digest
the record says; any other tag (another tool's, a human's, one moved since) is never touched and keeps what it
reaches. Of ocicopy's tags, kept (:func:`protected`): every tag a deployment of the plan resolves to now, the
``keep_last`` most recent per deployment (``cluster/service/environment``, by the records' times), every tag
written less than ``older_than`` ago, and every tag on a digest a lock file pins.

The registry deletes manifests by digest, and deleting a digest untags every tag on it (distribution answers 400
to a DELETE by tag). So a digest goes only when every tag on it goes, when no kept manifest reaches it (an index
a kept tag names, a pinned digest) and when it is not pinned; a removable tag on a digest another tag keeps stays
(reported as shared). Earlier digests of ocicopy's tags (the untagged revisions a moved source tag left) go by the
same rules once older than ``older_than``. With a manifest go: the children of an index that nothing kept still
reaches (after the index: a tag never names an index with children missing), and its referrers (signatures,
SBOMs, attestations: the referrers API, the fallback index and cosign tags, before their subject).

:func:`plan_repository` decides for one repository from what was listed and fetched (:class:`RepositoryView`);
:func:`freed_bytes` counts the blobs no kept manifest references, per registry. I/O and the CLI are in
:mod:`ocicopy.pruning`.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ocicopy.digest import Digest
from ocicopy.history import TagRecord
from ocicopy.subjects import is_referrer_tag

__all__ = ["Node", "RepositoryPlan", "RepositoryView", "Rules", "freed_bytes", "plan_repository", "protected"]


@dataclass(frozen=True)
class Node:
    """A manifest of the repository, as fetched: its size, its index children, its blobs (config and layers)."""

    digest: Digest
    size: int
    children: tuple[Digest, ...] = ()
    blobs: tuple[tuple[Digest, int], ...] = ()
    subject: Digest | None = None


@dataclass
class RepositoryView:
    """What prune saw in one repository: every tag's digest, the manifests fetched (every tagged one, their
    children, the recorded earlier digests still there, referrers), and each manifest's referrers."""

    repository: str
    tags: dict[str, Digest]
    nodes: dict[Digest, Node] = field(default_factory=dict)
    referrers: dict[Digest, tuple[Digest, ...]] = field(default_factory=dict)  # subject → referrer manifests


@dataclass(frozen=True)
class Rules:
    """What prune keeps of ocicopy's tags beyond the ones no record names."""

    current: frozenset[tuple[str, str]] = frozenset()  # (repository, tag) the plan's deployments resolve to now
    pinned: frozenset[Digest] = frozenset()  # digests the lock files pin
    keep_last: int = 0
    older_than: float | None = None  # seconds; None: no age protects a tag
    now: float = 0.0


@dataclass
class RepositoryPlan:
    repository: str
    removed: dict[str, Digest] = field(default_factory=dict)  # ocicopy's tags that go (with their digest)
    shared: dict[str, str] = field(default_factory=dict)  # removable tag → the kept tag on its digest
    with_subject: dict[str, Digest] = field(default_factory=dict)  # referrer tags (cosign, fallback) that go
    kept: dict[str, str] = field(default_factory=dict)  # ocicopy's tag → why it stays
    deletes: list[Digest] = field(default_factory=list)  # in order: referrers, manifests, then index children
    revisions: list[Digest] = field(default_factory=list)  # untagged earlier digests among ``deletes``


def protected(history: Iterable[TagRecord], rules: Rules) -> dict[tuple[str, str], str]:
    """ocicopy's tags the rules keep, with the reason: the plan's, the most recent per deployment, the young."""
    records = list(history)
    keep: dict[tuple[str, str], str] = {}
    for r in records:
        where = (r.repository, r.tag)
        if where in rules.current:
            keep[where] = "a deployment of the plan resolves to it"
        elif rules.older_than is not None and rules.now - r.written < rules.older_than:
            keep[where] = "younger than --older-than"
    if rules.keep_last > 0:
        by_deployment: dict[str, list[TagRecord]] = {}
        for r in records:
            for d in r.deployments:
                by_deployment.setdefault(d, []).append(r)
        for name, mine in by_deployment.items():
            for r in sorted(mine, key=lambda r: (r.written, r.tag), reverse=True)[: rules.keep_last]:
                keep.setdefault((r.repository, r.tag), f"one of the {rules.keep_last} most recent of {name}")
    return keep


def plan_repository(
    view: RepositoryView, history: Mapping[str, TagRecord], keep: Mapping[tuple[str, str], str], rules: Rules
) -> RepositoryPlan:
    """What goes from one repository (module docstring). ``history``: records by ``repository:tag``; ``keep``:
    :func:`protected`."""
    repo = view.repository
    plan = RepositoryPlan(repo)
    ours = {t: d for t, d in view.tags.items() if (r := history.get(f"{repo}:{t}")) is not None and r.digest == d}
    removable = set()
    for tag, digest in ours.items():
        if (repo, tag) in keep:
            plan.kept[tag] = keep[(repo, tag)]
        elif digest in rules.pinned:
            plan.kept[tag] = "a lock file pins its digest"
        else:
            removable.add(tag)
    candidates = {ours[t] for t in removable}
    revisions = {
        d
        for t, r in history.items()
        if r.repository == repo and (rules.older_than is None or rules.now - r.written >= rules.older_than)
        for d in r.previous
        if d in view.nodes and d not in view.tags.values()
    }
    # A fixed point: what goes takes its referrer tags along (fallback index, cosign tags), so the kept tags
    # shrink as the deleted digests grow.
    while True:
        going = _going(view, candidates | revisions, removable, rules.pinned)
        subjects = {f"{d.algorithm}-{d.hex[:64]}" for d in going}
        freed = {t for t in view.tags if is_referrer_tag(t) and t.split(".")[0] in subjects and t not in removable}
        if not freed:
            break
        removable |= freed
    for tag in sorted(removable):
        digest = view.tags[tag]
        if tag not in ours:
            if digest in going:
                plan.with_subject[tag] = digest
        elif digest in going:
            plan.removed[tag] = digest
        else:
            plan.shared[tag] = _keeper(view, digest, removable, rules.pinned)
    plan.deletes = _ordered(view, going)
    plan.revisions = sorted(revisions & going)
    return plan


def _going(
    view: RepositoryView, candidates: set[Digest], removable: set[str], pinned: frozenset[Digest]
) -> set[Digest]:
    """The digests that go: candidates no kept tag names, nothing kept reaches and no lock pins, with their
    children and referrers under the same conditions."""
    kept_roots = {d for t, d in view.tags.items() if t not in removable} | (pinned & view.nodes.keys())
    reached = set(_walk(view, kept_roots, referrers=False))  # a kept manifest's children (its referrers may go)
    reached |= pinned
    going = {d for d in candidates if d not in reached}
    todo = list(going)
    while todo:
        d = todo.pop()
        node = view.nodes.get(d)
        below = [*(node.children if node is not None else ()), *view.referrers.get(d, ())]
        for child in below:
            if child not in going and child not in reached:
                going.add(child)
                todo.append(child)
    return going


def _keeper(view: RepositoryView, digest: Digest, removable: set[str], pinned: frozenset[Digest]) -> str:
    """What keeps ``digest``: a kept tag on it, else a kept tag whose index reaches it, else a lock's pin."""
    kept = sorted((t, d) for t, d in view.tags.items() if t not in removable)
    for t, d in kept:
        if d == digest:
            return t
    for t, d in kept:
        if digest in _walk(view, [d], referrers=False):
            return t
    return "a digest a lock file pins"


def _ordered(view: RepositoryView, going: set[Digest]) -> list[Digest]:
    """``going`` in delete order: an index before its children (a tag never names an index whose children are
    gone), a referrer before its subject (an interruption leaves no orphan signature). Where the two rules
    contradict each other (not a valid image graph), by digest."""
    before: dict[Digest, set[Digest]] = {d: set() for d in sorted(going)}  # node → what must go before it
    for d in going:
        node = view.nodes.get(d)
        for child in node.children if node is not None else ():
            if child in going and child != d:
                before[child].add(d)
        for r in view.referrers.get(d, ()):
            if r in going and r != d:
                before[d].add(r)
    try:
        return list(graphlib.TopologicalSorter(before).static_order())
    except graphlib.CycleError:
        return sorted(going)


def _walk(view: RepositoryView, roots: Iterable[Digest], referrers: bool = True) -> list[Digest]:
    """``roots`` and every manifest under them (children; with ``referrers``, referrers too), parents first."""
    seen: dict[Digest, None] = {}
    todo = list(roots)
    while todo:
        d = todo.pop(0)
        if d in seen:
            continue
        seen[d] = None
        node = view.nodes.get(d)
        todo += list(node.children) if node is not None else []
        if referrers:
            todo += list(view.referrers.get(d, ()))
    return list(seen)


def freed_bytes(views: Iterable[RepositoryView], plans: Mapping[str, RepositoryPlan]) -> int:
    """Bytes of the blobs (config, layers) that the deleted manifests reference and no kept manifest of these
    repositories does: what a garbage collection can give back (at most: a repository not looked at may share a
    blob; manifests themselves are not counted)."""
    deleted: dict[Digest, int] = {}
    kept: set[Digest] = set()
    for view in views:
        gone = set(plans[view.repository].deletes) if view.repository in plans else set()
        for node in view.nodes.values():
            for digest, size in node.blobs:
                if node.digest in gone:
                    deleted[digest] = size
                else:
                    kept.add(digest)
    return sum(size for digest, size in deleted.items() if digest not in kept)
