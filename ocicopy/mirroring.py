"""The mirroring engine: run a plan's deployments concurrently and report what each did.

Per image deployment: HEAD the mirror tag and HEAD the source (each at most once per run for the same
reference); equal digests → ``skipped``; a mirror tag that holds another digest → copy again, ``updated`` and a
warning that the source tag moved; absent → ``copied``. With ``immutable_tags`` a matching source tag whose
mirror tag exists is trusted without asking the source. The same destination (cluster mode: the same source
for several services or environments) is copied once; the others report ``skipped``. Per build deployment:
HEAD ``mirror-repository:build-key`` → ``build-cached`` (with the pinned reference) or ``build-needed``.

Blobs: one transfer per mirror registry and digest per run (the client's single flight), mounts from
repositories where this run or earlier runs placed a blob (the :class:`~ocicopy.ledger.Ledger`), manifests
after their blobs and children, tags last (the copier's guarantees). One failing deployment does not stop
the others; it is reported ``failed`` with its error.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from ocicopy.digest import Digest
from ocicopy.errors import InputError, OcicopyError, RemoteError, UnknownReferenceError, unwrap_group
from ocicopy.executor import (
    Chain,
    Executor,
    LocalExecutor,
    Outcome,
    PlacementResult,
    group_of,
    merge_placements,
    one_line,
    tasks_of,
    where,
)
from ocicopy.flight import SingleFlight
from ocicopy.graph import BlobRef, Copy, GraphSummary, ManifestRef, compile_graph
from ocicopy.history import TagRecord, deployment_key
from ocicopy.ledger import SHARD_PREFIX, Ledger, new_run_id
from ocicopy.location import LayoutReference, Location, parse_layout_reference, pinned
from ocicopy.models import Descriptor, Manifest, ManifestInfo
from ocicopy.options import recompression
from ocicopy.plan import Plan
from ocicopy.planner import Target, ledger_repository, plan_targets
from ocicopy.platforms import apply_selection, parse_platform
from ocicopy.ratelimit import merge_stats
from ocicopy.reference import Reference, api_host, validate_tag
from ocicopy.referrers import ReferrersOutcome
from ocicopy.report import (
    DEFAULT_CLUSTER,
    ClusterReport,
    DeploymentResult,
    MirrorAction,
    MirrorReport,
    MirrorTotals,
    totals_of,
)
from ocicopy.result import BlobAction, CopyAction, CopyResult
from ocicopy.transform import Conversion
from ocicopy.tree import check_platforms, destination_digest, fetch_child, get_manifest

if TYPE_CHECKING:  # avoids an import cycle: client.py imports this module
    from ocicopy.client import Client


class MirrorProgress(Protocol):
    def deployment_finished(self, result: DeploymentResult, done: int, total: int) -> None: ...


#: Deployments in flight at most: each holds a task, its HEADs and a manifest in memory (blobs are bounded apart).
MAX_MIRROR_CONCURRENCY = 1024


@dataclass(frozen=True)
class MirrorOptions:
    dry_run: bool = False
    immutable_tags: str | None = None  # regex, full match on the source tag
    concurrency: int = 32  # deployments in flight: mostly HEADs (blob transfers are bounded by the client)
    ledger: bool | None = None  # None: as the plan says
    run_id: str | None = None  # None: a new one (ledger.new_run_id)
    min_pull_quota: int | None = None  # a source GET that would leave fewer pulls than this is not sent

    def __post_init__(self) -> None:
        q = self.min_pull_quota
        if q is not None and (isinstance(q, bool) or not isinstance(q, int) or q < 0):
            raise InputError(f"--min-pull-quota must be a whole number, 0 or more (got {q!r})")
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_MIRROR_CONCURRENCY:
            raise InputError(f"mirror concurrency must be a whole number from 1 to {MAX_MIRROR_CONCURRENCY}, not {c!r}")
        if self.immutable_tags is not None:
            immutable_pattern(self.immutable_tags)
        if self.run_id is not None:
            validate_tag(SHARD_PREFIX + self.run_id)  # it names the run's ledger shard


def immutable_pattern(pattern: str) -> re.Pattern[str]:
    """The ``immutable_tags`` regex, compiled; a bad one is an :class:`InputError` naming it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"immutable tags pattern {pattern!r} is not a valid regular expression: {exc}") from None


@dataclass
class RunState:
    """What every cluster of one run shares: the run id, one HEAD and one GET per reference (a source is asked
    once, however many clusters need it), one copy per destination, and the progress count."""

    run_id: str
    total: int
    fleet: bool = False  # clusters may share a ledger repository: each writes its own shard
    done: int = 0
    heads: SingleFlight[ManifestInfo | None] = field(default_factory=lambda: SingleFlight(keep_results=True))
    copies: SingleFlight[CopyResult] = field(default_factory=lambda: SingleFlight(keep_results=True))
    referrer_copies: SingleFlight[ReferrersOutcome] = field(default_factory=lambda: SingleFlight(keep_results=True))
    manifests: SingleFlight[Manifest] = field(default_factory=lambda: SingleFlight(keep_results=True))
    probes: SingleFlight[bool] = field(default_factory=lambda: SingleFlight(keep_results=True))
    planned: list[Copy] = field(default_factory=list)  # a dry run: the copies the graph is compiled from
    deferred: Deferred | None = None  # a run on an executor: the copies parked until the graph runs


@dataclass
class Parked:
    """A copy resolved and waiting for the graph to run: the graph's view, the chain task's settings."""

    copy: Copy
    chain: Chain
    repo: str  # the destination store's name (executor.where)
    done: anyio.Event = field(default_factory=anyio.Event)
    result: CopyResult | None = None
    conversions: list[Conversion] = field(default_factory=list)
    error: str | None = None


class Slot:
    """A deployment's hold on its cluster's deployment limit: given back while its copy is parked."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self.limiter, self.held = limiter, False

    async def take(self) -> None:
        if not self.held:
            await self.limiter.acquire_on_behalf_of(self)
            self.held = True

    def give(self) -> None:
        if self.held:
            self.limiter.release_on_behalf_of(self)
            self.held = False


class Deferred:
    """A run on an executor: every deployment resolves (HEADs, skip decisions), each copy to make is parked, and
    once none is still resolving the parked copies are compiled into one graph and run (:func:`run_plan`)."""

    def __init__(self, total: int) -> None:
        self.pending = total  # deployments neither finished nor at their copy
        self.unparked = 0  # copies being resolved into a Parked (their manifests fetched)
        self.parked: list[Parked] = []
        self.ledgers: dict[str, Ledger] = {}  # mirror registry → its ledger (mount hints for the blob tasks)
        self._arrived: set[tuple[str, int]] = set()
        self._wake: anyio.Event | None = None

    def arrive(self, key: tuple[str, int]) -> None:
        """A deployment reached its copy (it leads it, or waits on the deployment that does)."""
        self._arrived.add(key)
        self.pending -= 1
        self.poke()

    def finished(self, key: tuple[str, int]) -> None:
        if key not in self._arrived:
            self.pending -= 1
            self.poke()

    def poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def ready(self) -> None:
        """Once every deployment has finished or parked its copy (or waits on one that has)."""
        while self.pending > 0 or self.unparked > 0:
            self._wake = anyio.Event()
            await self._wake.wait()


async def run_plan(
    client: Client,
    plan: Plan,
    options: MirrorOptions | None = None,
    progress: MirrorProgress | None = None,
    executor: Executor | None = None,
) -> MirrorReport:
    """Run every cluster of ``plan`` at once (one :class:`Mirror` each, sharing a :class:`RunState`): one report,
    one result per (deployment, cluster), totals per cluster and overall. One failing cluster does not stop the
    others; every destination layout is checked before any request.

    The deployments resolve here, and the copies they need run as one work graph (:func:`_execute`) on
    ``executor``: this process (:class:`~ocicopy.executor.LocalExecutor`, the default) or a Dask cluster
    (:class:`~ocicopy.dask_executor.DaskExecutor`). A dry run predicts the graph and runs nothing."""
    options = options or MirrorOptions()
    executor = executor or LocalExecutor()
    snapshot = client.transport.stats.snapshot()
    clusters = plan.cluster_plans()
    total = sum(len(sub.deployments) for _, sub in clusters)
    state = RunState(options.run_id or new_run_id(), total, plan.is_fleet)
    if not options.dry_run:
        state.deferred = Deferred(total)
    mirrors = [Mirror(client, sub, options, progress, state) for _, sub in clusters]
    for mirror in mirrors:
        await mirror.check()
    if state.deferred is not None:
        await executor.prepare(client, plan, state.run_id)
    started, before = time.monotonic(), dict(client.transport.stats.requests)
    reports: list[MirrorReport | None] = [None] * len(mirrors)

    async def one(i: int) -> None:
        reports[i] = await mirrors[i].run()

    async with anyio.create_task_group() as tg:
        for i in range(len(mirrors)):
            tg.start_soon(one, i)
        if state.deferred is not None:
            tg.start_soon(_execute, client, executor, state.deferred)
    done = [r for r in reports if r is not None]
    graph = compile_graph(state.planned).summary() if options.dry_run else None
    workers = executor.registry_stats()  # on Dask: the workers' requests (this client's are counted below)
    registries = merge_stats([client.transport.registry_stats(snapshot), workers])
    if not plan.is_fleet:
        report = done[0]
        worked = sum(s.requests for s in workers.values())
        totals = report.totals.model_copy(update={"requests": report.totals.requests + worked})
        alone = {name: c.model_copy(update={"totals": totals}) for name, c in report.clusters.items()}
        return report.model_copy(update={"graph": graph, "registries": registries, "totals": totals, "clusters": alone})
    after = dict(client.transport.stats.requests)
    for worked_on, stats in workers.items():
        after[worked_on] = after.get(worked_on, 0) + stats.requests
    results = [d for r in done for d in r.deployments]
    modes = {r.mode for r in done}
    per_cluster = {}
    for (name, sub), report in zip(clusters, done, strict=True):
        host = api_host(sub.target.registry) if sub.target.registry is not None else None
        sent = after.get(host, 0) - before.get(host, 0) if host is not None else 0
        per_cluster[name] = ClusterReport(
            mirror=sub.target.root,
            mode=sub.target.mode,
            totals=report.totals.model_copy(update={"requests": sent}),
        )
    return MirrorReport(
        run_id=state.run_id,
        mode=modes.pop() if len(modes) == 1 else None,
        dry_run=options.dry_run,
        seconds=round(time.monotonic() - started, 6),
        totals=_read_once(totals_of(results, sum(after.values()) - sum(before.values())), graph),
        clusters=per_cluster,
        graph=graph,
        deployments=results,
        warnings=[f"{name}: {w}" for (name, _), r in zip(clusters, done, strict=True) for w in r.warnings],
        registries=registries,
    )


async def _execute(client: Client, executor: Executor, deferred: Deferred) -> None:
    """Once every copy of the run is parked: one graph of them all, its coarse tasks on ``executor``, and each
    parked copy's result (its blobs' results from the tasks that placed them). An executor that fails (a lost
    Dask scheduler) fails every copy still parked, with its error."""
    await deferred.ready()
    parked = deferred.parked
    try:
        if not parked:
            return
        graph = compile_graph([p.copy for p in parked])
        chains = {f"tag:{p.copy.registry}/{p.copy.repository}:{p.copy.tag}": p for p in parked}
        hints: dict[tuple[str, str], tuple[str, ...]] = {}
        for node in graph.of_kind("upload"):
            ledger = deferred.ledgers.get(node.registry)
            if ledger is not None and node.digest is not None:
                found = await ledger.candidates(node.registry, node.digest)
                hints[(node.registry, node.digest)] = tuple(r for r in found if r != node.repository)
        groups = {p.copy.group: dict(p.chain.resources) for p in parked}
        fresh = {where(*key) for key in client.blobs.fresh}
        tasks = tasks_of(graph, {k: p.chain for k, p in chains.items()}, hints, groups, fresh)
        failure = None
        try:
            results = await executor.run(client, tasks)
        except OcicopyError as exc:  # the executor was lost: what it finished before still counts
            results, failure = getattr(exc, "results", None) or {}, one_line(exc)
        placements = [r for r in results.values() if isinstance(r, PlacementResult)]
        placed = {(name, blob.digest): blob for r in placements for name, blob in r.placed.items()}
        lost = {(name, r.digest): error for r in placements for name, error in r.errors.items()}
        for key, p in chains.items():
            outcome = results.get(key)
            if not isinstance(outcome, Outcome) or (outcome.copy_result is None and outcome.error is None):
                p.error = failure or "the executor returned no result for this copy"
            elif outcome.copy_result is None:
                p.error = outcome.error
            else:
                p.result = merge_placements(outcome.copy_result, p.repo, placed, lost)
                p.conversions = outcome.conversions
    finally:
        for p in parked:
            p.done.set()


def _read_once(totals: MirrorTotals, graph: GraphSummary | None) -> MirrorTotals:
    """A fleet dry run's bytes from the sources: each blob once (the graph's reads), not once per cluster."""
    return totals if graph is None else totals.model_copy(update={"bytes_from_source": graph.bytes_from_source})


class Mirror:
    """One cluster's part of a run (a single-``mirror`` plan) against a :class:`~ocicopy.client.Client`."""

    def __init__(
        self,
        client: Client,
        plan: Plan,
        options: MirrorOptions | None = None,
        progress: MirrorProgress | None = None,
        state: RunState | None = None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.options = options or MirrorOptions()
        self.progress = progress
        self.state = state or RunState(self.options.run_id or new_run_id(), len(plan.deployments))
        self.targets = plan_targets(plan)
        self.run_id = self.state.run_id
        pattern = self.options.immutable_tags or plan.immutable_tags
        self.immutable = immutable_pattern(pattern) if pattern else None
        self.heads = self.state.heads
        self.copies = self.state.copies
        self.referrer_copies = self.state.referrer_copies
        self.manifests = self.state.manifests
        self.probes = self.state.probes
        self.planned_blobs: set[Digest] = set()
        self.predicted: set[str] = set()
        use_ledger = plan.target.ledger if self.options.ledger is None else self.options.ledger
        self.ledger: Ledger | None = None
        if use_ledger and plan.target.registry is not None:  # layouts: no mounts; dry runs read it, never write
            registry = client.registry(api_host(plan.target.registry))
            shard = self.run_id
            if self.state.fleet:  # two clusters of one registry may share a ledger repository: a shard each
                shard += "-" + hashlib.sha256((plan.target.cluster or "").encode()).hexdigest()[:8]
            self.ledger = Ledger(registry, ledger_repository(plan), shard)
        self.compress = recompression(plan.target.compress, plan.target.compress_level)
        self.cluster = plan.target.cluster or DEFAULT_CLUSTER
        if self.state.deferred is not None and self.ledger is not None and plan.target.registry is not None:
            self.state.deferred.ledgers[api_host(plan.target.registry)] = self.ledger
        self._seeded = False
        self._seed_lock = anyio.Lock()
        self._slots: dict[int, Slot] = {}  # each deployment's hold on the deployment limit

    async def check(self) -> None:
        """A mirror.layout no deployment could write: refused (:class:`InputError`) before any request
        (:func:`run_plan` checks every cluster before any runs)."""
        targets = self.targets
        layouts = {t.destination.path: t.destination for t in targets if isinstance(t.destination, LayoutReference)}
        for layout in layouts.values():
            await self.client.layout(layout).check_writable()

    async def run(self) -> MirrorReport:
        started, requests_before = time.monotonic(), self.client.transport.stats.total_requests
        targets = self.targets
        results: list[DeploymentResult | None] = [None] * len(targets)
        limiter = anyio.CapacityLimiter(self.options.concurrency)  # per cluster: the clusters walk the plan abreast

        async def one(target: Target) -> None:
            slot = self._slots[target.index] = Slot(limiter)
            await slot.take()
            try:
                result = results[target.index] = await self._deployment(target)
            finally:
                slot.give()
            if self.state.deferred is not None:
                self.state.deferred.finished((self.cluster, target.index))
            self.state.done += 1
            if self.progress is not None:
                self.progress.deployment_finished(result, self.state.done, self.state.total)

        async with anyio.create_task_group() as tg:
            for target in targets:
                tg.start_soon(one, target)
        final = [r for r in results if r is not None]
        warnings = await self._save_ledger()
        totals = totals_of(final, self.client.transport.stats.total_requests - requests_before)
        cluster = self.plan.target.cluster or DEFAULT_CLUSTER
        return MirrorReport(
            run_id=self.run_id,
            mode=self.plan.target.mode,
            dry_run=self.options.dry_run,
            seconds=round(time.monotonic() - started, 6),
            totals=totals,
            clusters={cluster: ClusterReport(mirror=self.plan.target.root, mode=self.plan.target.mode, totals=totals)},
            deployments=final,
            warnings=warnings,
        )

    async def _save_ledger(self) -> list[str]:
        if self.ledger is None or self.options.dry_run:
            return []
        for conversion in self.client.trees.conversions.made_here():
            self.ledger.record_conversion(conversion)
        try:
            if self.plan.target.registry is not None and self.ledger.added:
                await self._ensure_repository(self.plan.target.registry, ledger_repository(self.plan))
            await self.ledger.save()
        except OcicopyError as exc:
            return [f"the blob ledger was not updated (mounts in later runs may upload instead): {exc}"]
        return []

    # -- one deployment ------------------------------------------------------------------------------------------

    async def _deployment(self, target: Target) -> DeploymentResult:
        started = time.monotonic()
        result = DeploymentResult(
            service=target.deployment.service,
            environment=target.deployment.environment,
            cluster=self.plan.target.cluster or DEFAULT_CLUSTER,
            source=str(target.source) if target.source is not None else None,
            destination=str(target.destination),
            build_key=target.build_key,
            action=MirrorAction.FAILED,
        )
        try:
            if target.build_key is not None:
                await self._build(target, result)
            else:
                await self._image(target, result)
        except BaseExceptionGroup as group:
            error = unwrap_group(group)
            if not isinstance(error, OcicopyError):
                raise error from None
            result.action, result.error = MirrorAction.FAILED, " ".join(str(error).split())
        except OcicopyError as exc:
            result.action, result.error = MirrorAction.FAILED, " ".join(str(exc).split())
        result.seconds = round(time.monotonic() - started, 6)
        return result

    async def _head(self, ref: Location) -> ManifestInfo | None:
        assert ref.identifier is not None
        store = self.client.endpoint(ref)
        info, _ = await self.heads.run(str(ref), lambda: store.manifest_head(ref.identifier or ""))
        return info

    async def _build(self, target: Target, result: DeploymentResult) -> None:
        found, pushed = await self._head(target.destination), False
        if found is None and not self.options.dry_run:
            found = await self._push_build_output(target, result)
            pushed = found is not None
        if found is None:
            result.action = MirrorAction.BUILD_NEEDED
            return
        result.action = MirrorAction.BUILD_PUSHED if pushed else MirrorAction.BUILD_CACHED
        result.source_digest = found.digest
        result.pinned = pinned(target.destination, found.digest)

    async def _push_build_output(self, target: Target, result: DeploymentResult) -> ManifestInfo | None:
        """A missing build the builder already wrote into ``build.output`` tagged with the build key: push it."""
        build = target.deployment.build
        if build is None or build.output is None or target.build_key is None:
            return None
        output = parse_layout_reference(build.output).with_tag(target.build_key)
        info = await self.client.endpoint(output).manifest_head(target.build_key)
        if info is None:
            return None
        if isinstance(target.destination, Reference):
            await self._ensure_repository(target.destination.registry, target.destination.repository)
        copy = await self.client.copy_resolved(output, target.destination, info.digest, check_destination=False)
        self._record_tag(target, copy.digest, None)
        _count(result, copy)
        result.warnings.append(f"pushed from the builder's layout {output}")
        return info

    async def _image(self, target: Target, result: DeploymentResult) -> None:
        assert target.source is not None
        source, dest = target.source, target.destination
        mirrored = await self._head(dest)
        if self._trusted(source) and mirrored is not None:
            result.action, result.source_digest = MirrorAction.SKIPPED, mirrored.digest
            result.pinned = pinned(dest, mirrored.digest)
            result.warnings.append(f"source tag {source.tag!r} trusted as immutable: source not checked")
            return
        specs = [parse_platform(p) for p in target.deployment.platforms]
        top: Manifest | None = None
        if source.digest is None and mirrored is None:  # cold: the manifest is needed anyway; its GET tells the digest
            top = await self._source_manifest_by_tag(source)
        source_digest = source.digest or (top.digest if top is not None else await self._source_digest(source))
        result.source_digest = source_digest
        if specs and top is None:
            top = await self._source_manifest(source, source_digest)
        if specs and top is not None:
            await check_platforms(self.client.endpoint(source), top, specs)
        # With a recompression not known yet, the copy finds out (reading the mirror tag back).
        await self._seed_conversions()
        conversions = self.client.trees.conversions
        expected = destination_digest(source_digest, top, specs, self.compress, conversions)
        if mirrored is not None and mirrored.digest == expected:
            result.action, result.pinned = MirrorAction.SKIPPED, pinned(dest, mirrored.digest)
            await self._referrers(target, mirrored.digest, result)
            return
        if self.options.dry_run:
            await self._predict(target, source_digest, top, mirrored, result)
            result.pinned = pinned(dest, expected) if expected is not None else None  # None: not predictable
            return
        check = expected is None and mirrored is not None
        assert self.state.deferred is not None  # park the copy until the run's graph runs
        slot = self._slots[target.index]
        slot.give()  # let the next deployment resolve: every one must, before the graph runs
        self.state.deferred.arrive((self.cluster, target.index))
        copy, leader = await self.copies.run(str(dest), lambda: self._defer(target, source_digest, top, check))
        await slot.take()  # the referrers and the report within the deployment limit again
        result.pinned = pinned(dest, copy.digest)
        if copy.action is not CopyAction.SKIPPED:  # this run wrote the tag (this deployment's copy, or another's)
            self._record_tag(target, copy.digest, mirrored.digest if mirrored is not None else None)
        await self._referrers(target, copy.digest, result)
        if not leader or copy.action is CopyAction.SKIPPED:
            result.action = MirrorAction.SKIPPED  # mirrored by another deployment of this run, or already there
            return
        _count(result, copy)
        result.action = MirrorAction.COPIED
        if mirrored is not None:
            result.action = MirrorAction.UPDATED
            result.warnings.append(
                f"source tag {source.tag!r} moved: the mirror had {mirrored.digest}, now {copy.digest} (mutable tag)"
            )

    def _record_tag(self, target: Target, digest: Digest, previous: Digest | None) -> None:
        """The mirror history (:mod:`ocicopy.history`): this run wrote ``digest`` at the target's mirror tag."""
        dest = target.destination
        if self.ledger is None or not isinstance(dest, Reference) or dest.tag is None:
            return
        d = target.deployment
        self.ledger.record_tag(
            TagRecord(
                dest.repository,
                dest.tag,
                digest,
                float(int(time.time())),
                frozenset({deployment_key(self.cluster, d.service, d.environment)}),
                (previous,) if previous is not None and previous != digest else (),
            )
        )

    def _trusted(self, source: Location) -> bool:
        return bool(self.immutable and source.digest is None and source.tag and self.immutable.fullmatch(source.tag))

    async def _source_digest(self, source: Location) -> Digest:
        info = await self._head(source)
        if info is None:
            raise UnknownReferenceError(str(source))
        return info.digest

    async def _source_manifest(self, source: Location, digest: Digest, reserve: bool = True) -> Manifest:
        """The source manifest at ``digest``, fetched once per run (``reserve``: its GET against the quota)."""
        endpoint = self.client.endpoint(source)
        key = (endpoint.host, endpoint.repository, digest)

        async def get() -> Manifest:
            async with self._pulls(source, 1 if reserve else 0):
                return await endpoint.manifest_get(str(digest))

        manifest, _ = await self.manifests.run(key, get)
        return manifest

    @asynccontextmanager
    async def _pulls(self, source: Location, count: int) -> AsyncIterator[None]:
        """``count`` manifest GETs of ``source`` reserved against its registry's announced quota while they run
        (``--min-pull-quota``; :class:`~ocicopy.ratelimit.QuotaError` before any is sent when too few are left)."""
        floor = self.options.min_pull_quota
        if floor is None or count == 0 or not isinstance(source, Reference):
            yield
            return
        quota = self.client.transport.quota(api_host(source.registry))
        if quota.last is None:  # a cold mirror's first source request would be this GET: learn the quota first
            await self._head(source)  # by a HEAD, which Docker Hub does not count (REGISTRY-QUIRKS.md)
        quota.reserve(count, floor)
        try:
            yield
        finally:
            quota.release(count)

    async def _tree(self, target: Target, top: Manifest) -> tuple[Manifest, list[Manifest]]:
        """What a copy of ``top`` pushes (``top``, or its platform selection) and it with the manifests under it:
        each fetched once per run (clusters share them), the children at once (their GETs reserved together)."""
        assert target.source is not None
        source = target.source
        chosen = apply_selection(top, [parse_platform(p) for p in target.deployment.platforms])
        manifest = chosen if isinstance(chosen, Manifest) else await self._child(source, chosen)
        children = manifest.children()
        fetched: list[Manifest | None] = [None] * len(children)
        endpoint = self.client.endpoint(source)
        new = sum(not self.manifests.has((endpoint.host, endpoint.repository, c.digest)) for c in children)

        async def one(i: int) -> None:
            fetched[i] = await self._child(source, children[i], reserve=False)

        async with self._pulls(source, new), anyio.create_task_group() as tg:
            for i in range(len(children)):
                tg.start_soon(one, i)
        return manifest, [manifest, *(m for m in fetched if m is not None)]

    async def _child(self, source: Location, desc: Descriptor, reserve: bool = True) -> Manifest:
        """An index child of the source, fetched once per run, its size checked against ``desc``."""
        manifest = await self._source_manifest(source, desc.digest, reserve)
        return await fetch_child(self.client.endpoint(source), desc, {desc.digest: manifest})

    async def _source_manifest_by_tag(self, source: Location) -> Manifest:
        """The manifest the source tag points at now, fetched once per run (its digest from its bytes); a GET that
        answers what a HEAD would, where the bytes are needed anyway (the mirror lacks the image)."""
        assert source.tag is not None
        endpoint, tag = self.client.endpoint(source), source.tag

        async def get() -> Manifest:
            async with self._pulls(source, 1):
                return await get_manifest(endpoint, tag, source)

        manifest, _ = await self.manifests.run(str(source), get)
        return manifest

    async def _seed_conversions(self) -> None:
        """With a recompression: the conversions earlier runs recorded in the ledger, read once per run."""
        if self.compress is None or self.ledger is None or self._seeded:
            return
        async with self._seed_lock:  # every deployment waits for the one read of the ledger
            if not self._seeded:
                self.client.trees.conversions.seed(await self.ledger.conversions())
                self._seeded = True

    async def _referrers(self, target: Target, digest: Digest, result: DeploymentResult) -> None:
        """With ``referrers: true``: bring the image's referrers into the mirror (once per destination)."""
        if not self.plan.target.referrers or target.source is None or self.options.dry_run:
            return
        source, dest, types = target.source, target.destination, self.plan.target.artifact_types
        outcome, _ = await self.referrer_copies.run(
            str(dest), lambda: self.client.copy_referrers(source, dest, digest, artifact_types=types)
        )
        result.referrers = len(outcome.manifests)
        result.warnings += outcome.warnings

    async def _defer(self, target: Target, source_digest: Digest, top: Manifest | None, check: bool) -> CopyResult:
        """Park this copy for the run's graph (its manifests fetched here: the graph needs its blobs, and its chain
        takes them along) and wait for the executor's result. With a recompression the chain task converts the
        blobs itself (the graph places none: the mirror's blobs are not the source's)."""
        deferred = self.state.deferred
        assert deferred is not None and target.source is not None and target.destination.tag is not None
        deferred.unparked += 1  # first, before any await: the graph must not start without this copy
        try:
            src, dst = self.client.endpoint(target.source), self.client.endpoint(target.destination)
            top = top or await self._source_manifest(target.source, source_digest)
            manifest, fetched = await self._tree(target, top)
            tree = _graph_ref(manifest, fetched) if self.compress is None else ManifestRef(source_digest, 0)
            await self._ensure_repository(dst.host, dst.repository)  # before the graph writes there
            await self._probe(target.destination)
            resources = self.plan.target.dask_resources or {}
            copy = Copy(
                src.host, dst.host, dst.repository, target.destination.tag, tree, group_of(resources), src.repository
            )
            chain = Chain(
                source=str(target.source.with_digest(source_digest)),
                destination=str(target.destination),
                source_digest=source_digest,
                platforms=tuple(target.deployment.platforms),
                compress=self.compress,
                check_destination=check,
                mount_from=await self._hints(dst.host, fetched),
                resources=resources,
                manifests=tuple((m.media_type, m.raw) for m in {m.digest: m for m in [top, *fetched]}.values()),
                fresh=(dst.host, dst.repository) in self.client.blobs.fresh,
            )
            parked = Parked(copy, chain, where(dst.host, dst.repository))
            deferred.parked.append(parked)
        finally:
            deferred.unparked -= 1
            deferred.poke()
        await parked.done.wait()
        if parked.result is None:
            raise RemoteError(parked.error or "the copy did not run")
        for conversion in parked.conversions:  # made on a worker too: recorded in this mirror's ledger
            self.client.trees.conversions.add(conversion)
        if self.ledger is not None:
            assert isinstance(target.destination, Reference)
            for blob in parked.result.blobs:
                self.ledger.record(blob.digest, target.destination.repository)
        return parked.result

    async def _ensure_repository(self, registry: str, repository: str) -> None:
        """``create_repositories``: the repository made first where the registry needs it (Amazon ECR)."""
        if self.plan.target.create_repositories:
            await self.client.ensure_repository(registry, repository, self.plan.target.ecr)

    async def _hints(self, host: str, manifests: list[Manifest]) -> dict[Digest, tuple[str, ...]]:
        """Where the ledger says a chain's blobs may be mounted from, by digest (with a recompression: by the
        converted digest, where the conversion is known)."""
        if self.ledger is None:
            return {}
        conversions, hints = self.client.trees.conversions, {}
        for m in manifests:
            for blob in m.blobs():
                digest: Digest | None = blob.digest
                if self.compress is not None:
                    converted = conversions.get(blob.digest)
                    digest = converted.digest if converted is not None else None
                if digest is not None and (found := await self.ledger.candidates(host, digest)):
                    hints[digest] = tuple(found)
        return hints

    async def _probe(self, dest: Location) -> None:
        """Once per run and mirror repository about to receive a copy: does the repository exist yet? A new one
        holds nothing, so the copy skips the HEAD of every blob and index child it places there (mounting first,
        uploading straight away). Known to exist when the ledger lists it; else one ``tags/list``."""
        if not isinstance(dest, Reference):
            return  # a layout: its checks are local
        key = (dest.api_host, dest.repository)
        await self.probes.run(key, lambda: self._is_new(*key))

    async def _is_new(self, host: str, repository: str) -> bool:
        if self.ledger is not None and repository in await self.ledger.repositories():
            return False
        try:
            new = await self.client.registry(host).tags(repository) is None
        except OcicopyError:
            return False  # unsure: the usual HEADs
        if new:
            self.client.blobs.fresh.add((host, repository))
        return new

    async def _predict(
        self,
        target: Target,
        source_digest: Digest,
        top: Manifest | None,
        mirrored: ManifestInfo | None,
        result: DeploymentResult,
    ) -> None:
        """Dry run: manifests only (HEAD/GET); predict the action, the bytes and the requests of a copy."""
        assert target.source is not None
        if str(target.destination) in self.predicted:
            result.action = MirrorAction.SKIPPED  # another deployment of this run copies it
            return
        self.predicted.add(str(target.destination))
        endpoint = self.client.endpoint(target.source)
        top = top or await self._source_manifest(target.source, source_digest)
        manifest, manifests = await self._tree(target, top)
        dest = self.client.endpoint(target.destination)
        assert target.destination.tag is not None
        self.state.planned.append(
            Copy(endpoint.host, dest.host, dest.repository, target.destination.tag, _graph_ref(manifest, manifests))
        )
        new_bytes, requests = 0, len(manifests)  # one PUT per manifest
        for m in manifests:
            for blob in m.blobs():
                requests += 4  # HEAD, POST, GET, PUT (a mount would be 2)
                if blob.digest not in self.planned_blobs:
                    self.planned_blobs.add(blob.digest)
                    new_bytes += blob.size
        result.action = MirrorAction.UPDATED if mirrored is not None else MirrorAction.COPIED
        result.bytes_from_source = result.bytes_to_mirror = new_bytes
        result.predicted_requests = requests


def _graph_ref(top: Manifest, fetched: list[Manifest]) -> ManifestRef:
    """``top`` (and, for an index, its children among ``fetched``) as the work graph sees it."""
    by_digest = {m.digest: m for m in fetched}

    def ref(m: Manifest) -> ManifestRef:
        kids = tuple(ref(by_digest[c.digest]) for c in m.children() if c.digest in by_digest)
        blobs = tuple(BlobRef(b.digest, b.size, b.media_type) for b in m.blobs())
        return ManifestRef(m.digest, m.size, blobs, kids)

    return ref(top)


def _count(result: DeploymentResult, copy: CopyResult) -> None:
    totals = copy.totals
    result.blobs_copied = totals.blobs_copied
    result.blobs_mounted = totals.blobs_mounted
    result.blobs_skipped = totals.blobs_skipped
    result.blobs_recompressed = totals.blobs_recompressed
    result.warnings += copy.warnings
    sent = sum(b.bytes_sent for b in copy.blobs if b.action in (BlobAction.COPIED, BlobAction.RECOMPRESSED))
    result.bytes_to_mirror, result.bytes_from_source = sent, sum(b.bytes_from_source for b in copy.blobs)
