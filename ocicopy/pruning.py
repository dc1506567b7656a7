"""``ocicopy prune``: list, resolve, decide (:mod:`ocicopy.prune`), then delete by digest, per cluster of a plan.

Per mirror registry of the plan (each cluster of a fleet; OCI layout mirrors are left alone, with a warning):

1. the mirror's history from its ledger (:mod:`ocicopy.history`; no ledger, no history: nothing is removed);
2. per repository ocicopy wrote (the history's and the plan's): ``tags/list``, a GET of every tag's manifest, of
   the children of every index, and of the earlier digests the history records (a 404: gone already);
3. the decision per repository; then, for what would go, its referrers (the referrers API, else the fallback
   index, and cosign tags), and the decision again with them;
4. ``--max-delete`` (default :data:`DEFAULT_MAX_DELETE`, rounded up) over ocicopy's tags of the whole run: a
   prune that would remove more is refused before any DELETE (``PruneReport.refused``; what it would remove is
   listed): a plan that lost half its deployments in a bad merge does not empty the mirror;
5. unless a dry run: per repository, ``tags/list`` again and every tag's digest again (HEAD); when anything
   changed since step 2 (a mirror run wrote meanwhile) the repository is left alone and reported; otherwise one
   DELETE per digest, in the plan's order. A registry that refuses deletes (405, ``UNSUPPORTED``) is reported in
   one line with what to change.

Requests: 1 ``tags/list`` + 1 GET per tag (+ children, earlier digests, referrer lookups of what goes) per
repository, the ledger read (3 + 2 per unfolded shard), then per repository that loses something 1 ``tags/list`` +
1 HEAD per tag + 1 DELETE per digest. The bytes come back at the registry's garbage collection (distribution:
``registry garbage-collect``, registry stopped or read-only; without ``--delete-untagged``, which would also
delete the untagged children of kept indexes in distribution 2.8).

Prune and mirror runs into one mirror must not interleave: run prune when no pipeline mirrors into it (a
deployment's copy may HEAD a manifest prune then deletes). Step 5 detects a mirror run that wrote a tag during
the prune and leaves that repository alone.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import anyio
from pydantic import BaseModel

from ocicopy.digest import Digest
from ocicopy.errors import InputError, NotFoundError, OcicopyError, RegistryError
from ocicopy.history import TagRecord
from ocicopy.ledger import Ledger, new_run_id
from ocicopy.models import Manifest
from ocicopy.plan import Plan
from ocicopy.planner import ledger_repository, plan_targets
from ocicopy.prune import Node, RepositoryPlan, RepositoryView, Rules, freed_bytes, plan_repository, protected
from ocicopy.reference import Reference, api_host
from ocicopy.referrers import list_referrers
from ocicopy.registry import Registry
from ocicopy.repository import Endpoint
from ocicopy.result import RegistryStats
from ocicopy.subjects import fallback_tag, is_referrer_tag

if TYPE_CHECKING:
    from ocicopy.client import Client

__all__ = [
    "DEFAULT_MAX_DELETE",
    "ClusterPrune",
    "Confirm",
    "MaxDelete",
    "PruneOptions",
    "PruneReport",
    "RepositoryResult",
    "parse_duration",
    "parse_max_delete",
    "prune_options",
    "run_prune",
]

#: A prune removing more than this share of ocicopy's tags in the mirrors is refused unless told otherwise.
DEFAULT_MAX_DELETE: Final = "25%"
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FETCH_CONCURRENCY: Final = 16


class MaxDelete(BaseModel):
    count: int | None = None
    percent: float | None = None

    def limit(self, total: int) -> int:
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return math.ceil(total * self.percent / 100)  # 25% of 3 tags is 1, not 0

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


def parse_max_delete(text: str) -> MaxDelete:
    """``N`` (tags) or ``P%`` (of ocicopy's tags in the mirrors); a bad value is an :class:`InputError`."""
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100 or math.isnan(percent):
                raise ValueError
            return MaxDelete(percent=percent)
        count = int(value)
        if count < 0:
            raise ValueError
        return MaxDelete(count=count)
    except ValueError:
        raise InputError(f"--max-delete {text!r} is not a count (N) or a share (P%, 0 to 100)") from None


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s`` (or a sum: ``1d12h``) in seconds; a bad one: :class:`InputError`."""
    import re

    value = text.strip().lower()
    parts = re.findall(r"(\d+)([smhdw])", value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise InputError(f"--older-than {text!r} is not a duration (e.g. 90d, 12h, 30m, 2w, 1d12h)")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


class PruneOptions(BaseModel):
    locks: list[str] = []  # lock files whose pinned digests stay
    keep_last: int = 0
    older_than: float | None = None  # seconds
    max_delete: MaxDelete = parse_max_delete(DEFAULT_MAX_DELETE)
    dry_run: bool = False
    run_id: str | None = None


def prune_options(
    *,
    locks: Sequence[str] = (),
    keep_last: int = 0,
    older_than: float | str | None = None,
    max_delete: str = DEFAULT_MAX_DELETE,
    dry_run: bool = False,
) -> PruneOptions:
    """Checked options (every lock file read): a bad value is one :class:`InputError`, before any request."""
    from ocicopy.report import read_lock

    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise InputError(f"--keep-last must be 0 or more (got {keep_last!r})")
    age = parse_duration(older_than) if isinstance(older_than, str) else older_than
    if age is not None and (math.isnan(age) or age < 0):
        raise InputError(f"--older-than must be 0 or more seconds (got {older_than!r})")
    limit = parse_max_delete(max_delete)
    for lock in locks:
        read_lock(lock)
    return PruneOptions(locks=list(locks), keep_last=keep_last, older_than=age, max_delete=limit, dry_run=dry_run)


class RepositoryResult(BaseModel):
    repository: str
    removed: dict[str, str] = {}  # tag → digest
    with_subject: dict[str, str] = {}  # referrer tags that go with their subject
    shared: dict[str, str] = {}  # ocicopy's tag kept because another kept tag (or a pin) holds its digest
    kept: dict[str, str] = {}  # ocicopy's tag → why it stays
    deletes: list[str] = []  # digests, in order
    deleted: list[str] = []  # digests deleted (a dry run: none)
    revisions: list[str] = []  # untagged earlier digests among deletes
    error: str | None = None


class ClusterPrune(BaseModel):
    mirror: str
    repositories: list[RepositoryResult] = []
    tags_removed: int = 0
    manifests_deleted: int = 0
    bytes_freed: int = 0  # at most: what the registry's garbage collection can give back
    error: str | None = None
    warnings: list[str] = []


class PruneReport(BaseModel):
    run_id: str
    dry_run: bool
    seconds: float = 0.0
    requests: int = 0
    tags_removed: int = 0
    manifests_deleted: int = 0
    bytes_freed: int = 0
    refused: str | None = None  # --max-delete stopped it: what it would have removed is listed, nothing went
    clusters: dict[str, ClusterPrune] = {}
    registries: dict[str, RegistryStats] = {}

    @property
    def ok(self) -> bool:
        return self.refused is None and all(
            c.error is None and all(r.error is None for r in c.repositories) for c in self.clusters.values()
        )


#: Asked before any DELETE with what would go: True to go ahead (``Client.prune(confirm=...)``).
Confirm = Callable[[PruneReport], Awaitable[bool]]


class _Mirror:
    """One cluster's mirror, as prune sees it."""

    def __init__(self, name: str, plan: Plan, registry: Registry) -> None:
        self.name, self.plan, self.registry = name, plan, registry
        self.history: dict[str, TagRecord] = {}
        self.views: list[RepositoryView] = []
        self.plans: dict[str, RepositoryPlan] = {}
        self.report = ClusterPrune(mirror=plan.target.root)


async def run_prune(client: Client, plan: Plan, options: PruneOptions, confirm: Confirm | None = None) -> PruneReport:
    """Prune every registry mirror of ``plan`` (module docstring). ``confirm``: shown the report of what would go
    (as a dry run's) before any DELETE; False: nothing is deleted (``refused`` says so)."""
    started, snapshot = time.monotonic(), client.transport.stats.snapshot()
    report = PruneReport(run_id=options.run_id or new_run_id(), dry_run=options.dry_run)
    pinned = frozenset(_pins(options.locks))
    mirrors: list[_Mirror] = []
    for name, sub in plan.cluster_plans():
        if sub.target.registry is None:
            report.clusters[name] = ClusterPrune(
                mirror=sub.target.root, warnings=["an OCI layout mirror is not pruned (no history is kept there)"]
            )
            continue
        mirrors.append(_Mirror(name, sub, client.registry(api_host(sub.target.registry))))
    for m in mirrors:
        report.clusters[m.name] = m.report
    now = time.time()
    async with anyio.create_task_group() as tg:
        for m in mirrors:
            tg.start_soon(_survey, client, m, pinned, options, now)
    ours = sum(len(_ours(v, m.history)) for m in mirrors for v in m.views)
    removing = sum(len(p.removed) for m in mirrors for p in m.plans.values())
    limit = options.max_delete.limit(ours)
    if removing > limit:
        report.refused = (
            f"the prune would remove {removing} of ocicopy's {ours} mirror tags, more than --max-delete "
            f"{options.max_delete} allows ({limit}); nothing was deleted (check the plan, or raise --max-delete)"
        )
    elif not options.dry_run and confirm is not None:
        _sum(report, mirrors, predicted=True)
        if not await confirm(report):
            report.refused = "not confirmed: nothing was deleted"
    if not options.dry_run and report.refused is None:
        async with anyio.create_task_group() as tg:
            for m in mirrors:
                tg.start_soon(_delete, m)
    _sum(report, mirrors, predicted=options.dry_run or report.refused is not None)
    report.seconds = round(time.monotonic() - started, 6)
    report.registries = client.transport.registry_stats(snapshot)
    report.requests = sum(r.requests for r in report.registries.values())
    return report


def _sum(report: PruneReport, mirrors: list[_Mirror], predicted: bool) -> None:
    for m in mirrors:
        _totals(m, predicted)
    report.tags_removed = sum(c.tags_removed for c in report.clusters.values())
    report.manifests_deleted = sum(c.manifests_deleted for c in report.clusters.values())
    report.bytes_freed = sum(c.bytes_freed for c in report.clusters.values())


def _pins(locks: Sequence[str]) -> set[Digest]:
    from ocicopy.report import read_lock

    out = set()
    for path in locks:
        for entry in read_lock(path).deployments:
            if entry.pinned and "@" in entry.pinned:
                out.add(Digest(entry.pinned.rsplit("@", 1)[1]))
    return out


def _ours(view: RepositoryView, history: dict[str, TagRecord]) -> list[str]:
    return [t for t, d in view.tags.items() if (r := history.get(f"{view.repository}:{t}")) and r.digest == d]


async def _survey(client: Client, m: _Mirror, pinned: frozenset[Digest], options: PruneOptions, now: float) -> None:
    """Steps 1 to 3 for one mirror; a failure is the cluster's error (nothing of it is deleted)."""
    try:
        ledger = Ledger(m.registry, ledger_repository(m.plan))
        m.history = await ledger.history()
        targets = plan_targets(m.plan)
        current = frozenset(
            (t.destination.repository, t.destination.tag)
            for t in targets
            if isinstance(t.destination, Reference) and t.destination.tag is not None
        )
        repositories = sorted(
            ({r.repository for r in m.history.values()} | {repo for repo, _ in current}) - {ledger.repository}
        )
        rules = Rules(current, pinned, options.keep_last, options.older_than, now)
        keep = protected(m.history.values(), rules)
        for repo in repositories:
            view = await _view(m.registry, repo, m.history)
            if view is None:
                continue
            first = plan_repository(view, m.history, keep, rules)
            await _add_referrers(m.registry, view, set(first.deletes))
            m.views.append(view)
            m.plans[repo] = plan_repository(view, m.history, keep, rules)
            m.report.repositories.append(_result(m.plans[repo]))
    except OcicopyError as exc:
        m.report.error = " ".join(str(exc).split())
        m.views, m.plans, m.report.repositories = [], {}, []


async def _view(registry: Registry, repo: str, history: dict[str, TagRecord]) -> RepositoryView | None:
    tags = await registry.tags(repo)
    if tags is None:
        return None
    tags = [t for t in tags if t]
    view = RepositoryView(repo, {})
    limiter = anyio.CapacityLimiter(_FETCH_CONCURRENCY)

    async def by_tag(tag: str) -> None:
        async with limiter:
            try:
                manifest = await registry.manifest_get(repo, tag)
            except NotFoundError:
                return  # untagged meanwhile
        view.tags[tag] = manifest.digest
        _add(view, manifest)

    async with anyio.create_task_group() as tg:
        for tag in tags:
            tg.start_soon(by_tag, tag)
    earlier = {d for r in history.values() if r.repository == repo for d in r.previous}
    children = [c for n in list(view.nodes.values()) for c in n.children]
    await _fetch(registry, view, [*children, *earlier], limiter)
    return view


async def _fetch(
    registry: Registry, view: RepositoryView, digests: list[Digest], limiter: anyio.CapacityLimiter
) -> None:
    """Manifests by digest (absent ones skipped), and every index child under them."""
    batch = [d for d in dict.fromkeys(digests) if d not in view.nodes]
    if not batch:
        return

    async def one(digest: Digest) -> None:
        async with limiter:
            try:
                manifest = await registry.manifest_get(view.repository, str(digest))
            except NotFoundError:
                return
        _add(view, manifest)

    async with anyio.create_task_group() as tg:
        for d in batch:
            tg.start_soon(one, d)
    await _fetch(registry, view, [c for d in batch if d in view.nodes for c in view.nodes[d].children], limiter)


def _add(view: RepositoryView, manifest: Manifest) -> None:
    subject = manifest.view.subject
    view.nodes[manifest.digest] = Node(
        manifest.digest,
        manifest.size,
        tuple(c.digest for c in manifest.children()),
        tuple((b.digest, b.size) for b in manifest.blobs()),
        subject.digest if subject is not None else None,
    )


async def _add_referrers(registry: Registry, view: RepositoryView, going: set[Digest]) -> None:
    """The referrers of what would go, and theirs: the referrers API or the fallback index (its entries and the
    index itself), cosign tags, manifests naming a subject; each fetched (with its children) for the decision."""
    limiter = anyio.CapacityLimiter(_FETCH_CONCURRENCY)
    store = Endpoint(registry, view.repository)
    found: dict[Digest, list[Digest]] = {}
    asked: set[Digest] = set()
    frontier = set(going)
    while frontier:
        asked |= frontier
        for subject in frontier:
            for tag, digest in view.tags.items():
                if is_referrer_tag(tag) and tag.split(".")[0] == fallback_tag(subject):
                    found.setdefault(subject, []).append(digest)

        async def one(subject: Digest) -> None:
            async with limiter:
                try:
                    listed = await list_referrers(store, subject)
                except OcicopyError:
                    return  # no way to list them here: the fallback and cosign tags above still count
            found.setdefault(subject, []).extend(d.digest for d in listed)

        async with anyio.create_task_group() as tg:
            for subject in sorted(frontier):
                tg.start_soon(one, subject)
        await _fetch(registry, view, [d for ds in found.values() for d in ds], limiter)
        for node in view.nodes.values():
            if node.subject is not None:
                found.setdefault(node.subject, []).append(node.digest)
        frontier = {d for ds in found.values() for d in ds} - asked
    for subject, referrers in found.items():
        view.referrers[subject] = tuple(dict.fromkeys(r for r in referrers if r != subject))


def _result(plan: RepositoryPlan) -> RepositoryResult:
    return RepositoryResult(
        repository=plan.repository,
        removed={t: str(d) for t, d in plan.removed.items()},
        with_subject={t: str(d) for t, d in plan.with_subject.items()},
        shared=plan.shared,
        kept=plan.kept,
        deletes=[str(d) for d in plan.deletes],
        revisions=[str(d) for d in plan.revisions],
    )


async def _delete(m: _Mirror) -> None:
    """Step 5 for one mirror: per repository, tags checked again, then DELETE in order."""
    if m.report.error is not None:
        return
    results = {r.repository: r for r in m.report.repositories}
    for view in m.views:
        plan, result = m.plans[view.repository], results[view.repository]
        if not plan.deletes:
            continue
        try:
            if await _changed(m.registry, view):
                result.error = (
                    "its tags changed during the prune (a mirror run wrote meanwhile?): left alone; run prune again"
                )
                continue
            for digest in plan.deletes:
                with contextlib.suppress(NotFoundError):  # gone already (another prune, a child of two indexes)
                    await m.registry.manifest_delete(view.repository, digest)
                result.deleted.append(str(digest))
        except RegistryError as exc:
            result.error = _refusal(m.registry.host, exc)
            if exc.status == 405 or "UNSUPPORTED" in exc.codes:
                break  # the registry refuses every delete: the other repositories would say the same
        except OcicopyError as exc:
            result.error = " ".join(str(exc).split())


async def _changed(registry: Registry, view: RepositoryView) -> bool:
    tags = await registry.tags(view.repository) or []
    if set(tags) != set(view.tags):
        return True
    for tag, digest in view.tags.items():
        info = await registry.manifest_head(view.repository, tag)
        if info is None or info.digest != digest:
            return True
    return False


def _refusal(host: str, exc: RegistryError) -> str:
    if exc.status == 405 or "UNSUPPORTED" in exc.codes:
        return (
            f"{host} refuses to delete manifests ({exc.status} {'/'.join(exc.codes) or 'UNSUPPORTED'}): enable "
            "deletes there (CNCF distribution: storage.delete.enabled: true; REGISTRY_STORAGE_DELETE_ENABLED=true)"
        )
    return " ".join(str(exc).split())


def _totals(m: _Mirror, dry_run: bool) -> None:
    """The cluster's counts: what would go (a dry run), else what went (repositories left alone not counted)."""
    r = m.report
    finished = {x.repository for x in r.repositories if x.error is None}
    plans = m.plans if dry_run else {k: v for k, v in m.plans.items() if k in finished}
    r.tags_removed = sum(len(x.removed) for x in r.repositories if x.repository in plans)
    r.manifests_deleted = sum(len(x.deletes if dry_run else x.deleted) for x in r.repositories)
    r.bytes_freed = freed_bytes(m.views, plans)
