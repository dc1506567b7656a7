"""Running a work graph: its coarse tasks (pure), what each does against a client, and the local executor.

A :class:`~ocicopy.graph.WorkGraph` has a node per read, placement, manifest and tag; scheduling each node on
a distributed engine would cost more than most of them do (Dask: about a millisecond per task). :func:`tasks_of`
groups them into two coarse kinds, the same for every executor:

:class:`BlobTask`   one read node and every placement it feeds: read the source once, stream it to the first
                    repository of each destination registry at once (:mod:`ocicopy.fanout`), mount it into the
                    other repositories of that registry.
:class:`ChainTask`  one (deployment, cluster): its manifests, children first, then its tag
                    (:meth:`ocicopy.Client.copy_resolved`, which finds its blobs placed and checks each by HEAD);
                    after the blob tasks of its blobs.

Tasks hold names, digests and settings only (no credentials: a worker reads its own), and results are small
(:class:`PlacementResult`, :class:`~ocicopy.result.CopyResult`). A task never raises for a registry's answer:
an :class:`OcicopyError` is its result's ``error`` (one destination failing does not fail the blob for the others,
and its chain reports it). :class:`LocalExecutor` runs the tasks in this process with anyio;
:mod:`ocicopy.dask_executor` on a Dask cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
from pydantic import BaseModel

from ocicopy.digest import Digest
from ocicopy.errors import OcicopyError, unwrap_group
from ocicopy.fanout import SourceReads
from ocicopy.graph import WorkGraph
from ocicopy.location import as_location, parse_layout_reference
from ocicopy.models import Descriptor, Manifest, parse_manifest
from ocicopy.options import Recompression
from ocicopy.platforms import parse_platform
from ocicopy.repository import Endpoint
from ocicopy.result import BlobAction, BlobResult, CopyResult, RegistryStats
from ocicopy.store import Store
from ocicopy.transform import Conversion

if TYPE_CHECKING:
    from ocicopy.client import Client
    from ocicopy.plan import Plan

__all__ = [
    "BlobTask",
    "Chain",
    "ChainTask",
    "Executor",
    "LocalExecutor",
    "Outcome",
    "PlacementResult",
    "Task",
    "failure",
    "group_of",
    "merge_placements",
    "one_line",
    "registry_of",
    "run_task",
    "store_of",
    "tasks_of",
    "where",
]


@dataclass(frozen=True)
class BlobTask:
    """Read ``digest`` from ``source`` (a repository: ``host/repo`` or ``oci:DIR``) once and place it:
    ``placements`` holds, per destination registry, its repositories (``host/repo``), the first uploaded to."""

    key: str
    source: str
    digest: str
    size: int
    media_type: str
    placements: tuple[tuple[str, ...], ...]
    mount_from: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # registry → ledger hints
    resources: Mapping[str, float] = field(default_factory=dict)  # the locality group's Dask resources
    fresh: tuple[str, ...] = ()  # placements new in this run (nothing there: no HEAD before placing)
    deps: tuple[str, ...] = ()

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(sorted({registry_of(p[0]) for p in self.placements}))


@dataclass(frozen=True)
class Chain:
    """How a deployment's copy was resolved: what its chain task needs beyond the graph."""

    source: str
    destination: str
    source_digest: Digest
    platforms: tuple[str, ...] = ()
    compress: Recompression | None = None
    check_destination: bool = False
    mount_from: Mapping[Digest, tuple[str, ...]] = field(default_factory=dict)  # blob digest → ledger hints
    resources: Mapping[str, float] = field(default_factory=dict)
    #: the source manifests the run fetched to resolve the copy, (media type, raw bytes): not fetched again
    manifests: tuple[tuple[str, bytes], ...] = ()
    fresh: bool = False  # the destination repository is new in this run

    def known(self) -> dict[Digest, Manifest]:
        """:attr:`manifests` parsed again, each checked against its bytes' digest."""
        parsed = (parse_manifest(raw, media_type) for media_type, raw in self.manifests)
        return {m.digest: m for m in parsed}


@dataclass(frozen=True)
class ChainTask:
    """Push ``chain.source`` to ``chain.destination``: manifests (children first), then the tag; into ``store``
    (a :func:`where` name), after the blob tasks ``deps`` (whose placements there it takes as done)."""

    key: str
    chain: Chain
    store: str
    deps: tuple[str, ...] = ()

    @property
    def resources(self) -> Mapping[str, float]:
        return self.chain.resources

    @property
    def registries(self) -> tuple[str, ...]:
        return (registry_of(self.store),)


Task = BlobTask | ChainTask


def where(registry: str, repository: str) -> str:
    """A store's name in a task: ``host/repository``, or ``oci:DIR`` (a layout: one per repository)."""
    return f"{registry}/{repository}" if repository else registry


def registry_of(name: str) -> str:
    """The registry (or layout) of a :func:`where` name, or of a reference string in a registry."""
    return name if name.startswith("oci:") else name.split("/", 1)[0]


def store_of(client: Client, name: str) -> Store:
    """The client's store for a :func:`where` name."""
    if name.startswith("oci:"):
        return client.layout(parse_layout_reference(name))
    host, repository = name.split("/", 1)
    return Endpoint(client.registry(host), repository)


class PlacementResult(BaseModel):
    """What a blob task did in each repository (``host/repo`` → its blob result), and where it failed."""

    key: str
    digest: str = ""
    placed: dict[str, BlobResult] = {}
    errors: dict[str, str] = {}  # repository → the error (its chain places the blob itself, or fails)


class Outcome(BaseModel):
    """A chain task's result: the copy (and the recompressions it made or used, for the mirror's ledger), or the
    error that stopped it."""

    key: str
    copy_result: CopyResult | None = None
    conversions: list[Conversion] = []
    error: str | None = None


class Executor(Protocol):
    async def prepare(self, client: Client, plan: Plan, run_id: str) -> None:
        """Before any deployment resolves: what the executor needs of the run (refuses what it cannot run)."""
        ...

    async def run(self, client: Client, tasks: Sequence[Task]) -> dict[str, PlacementResult | Outcome]:
        """Run ``tasks`` (each after its ``deps``); every task's result by key."""
        ...

    def registry_stats(self) -> dict[str, RegistryStats]:
        """After :meth:`run`: what other processes (workers) asked of each registry; the client's own not included."""
        ...


def tasks_of(
    graph: WorkGraph,
    chains: Mapping[str, Chain],
    mount_from: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
    resources: Mapping[str, Mapping[str, float]] | None = None,
    fresh: Collection[str] = frozenset(),
) -> list[Task]:
    """The coarse tasks of ``graph``: a :class:`BlobTask` per read node, a :class:`ChainTask` per tag node
    (``chains``: by tag node key). ``mount_from``: ledger hints per (registry, digest); ``resources``: each
    locality group's Dask resources; ``fresh``: repositories (:func:`where` names) new in this run."""
    mount_from = mount_from or {}
    resources = resources or {}
    feeds: dict[str, list[str]] = {}  # read/upload key → the placements depending on it
    for node in graph.nodes.values():
        if node.kind in ("upload", "mount"):
            feeds.setdefault(node.deps[0], []).append(node.key)
    blob_of: dict[str, str] = {}  # placement key → its blob task's key
    tasks: list[Task] = []
    for read in graph.of_kind("read"):
        assert read.digest is not None
        per_registry: list[tuple[str, ...]] = []
        hints: dict[str, tuple[str, ...]] = {}
        for up_key in feeds.get(read.key, ()):
            up = graph.nodes[up_key]
            repos = [where(up.registry, up.repository)]
            blob_of[up_key] = read.key
            for m_key in feeds.get(up_key, ()):
                blob_of[m_key] = read.key
                repos.append(where(up.registry, graph.nodes[m_key].repository))
            per_registry.append(tuple(repos))
            if found := mount_from.get((up.registry, read.digest)):
                hints[up.registry] = found
        tasks.append(
            BlobTask(
                key=read.key,
                source=where(read.registry, read.repository),
                digest=str(read.digest),
                size=read.size,
                media_type=read.media_type,
                placements=tuple(per_registry),
                mount_from=hints,
                resources=dict(resources.get(read.group, {})),
                fresh=tuple(p for repos in per_registry for p in repos if p in fresh),
            )
        )
    for tag in graph.of_kind("tag"):
        chain = chains[tag.key]
        deps: dict[str, None] = {}
        todo, seen = list(tag.deps), set()
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            if key in blob_of:
                deps[blob_of[key]] = None
            elif graph.nodes[key].kind == "manifest":
                todo.extend(graph.nodes[key].deps)
        tasks.append(ChainTask(tag.key, chain, where(tag.registry, tag.repository), tuple(deps)))
    return tasks


# -- what a task does, against any client ----------------------------------------------------------------------


async def run_task(client: Client, task: Task, done: Sequence[object] = ()) -> PlacementResult | Outcome:
    """Do ``task`` with ``client`` (``done``: its dependencies' results); an :class:`OcicopyError` is the result's
    error, never raised."""
    try:
        if isinstance(task, BlobTask):
            return await _place(client, task)
        return await _chain(client, task, done)
    except BaseExceptionGroup as group:
        error = unwrap_group(group)
        if not isinstance(error, OcicopyError):
            raise error from None
        return failure(task, error)
    except OcicopyError as exc:
        return failure(task, exc)


def failure(task: Task, exc: BaseException) -> PlacementResult | Outcome:
    """``task``'s result when it failed as a whole with ``exc`` (a blob task: every placement; each chain there
    places its blobs itself, or fails)."""
    error = one_line(exc)
    if isinstance(task, BlobTask):
        errors = {p: error for repos in task.placements for p in repos}
        return PlacementResult(key=task.key, digest=task.digest, errors=errors)
    return Outcome(key=task.key, error=error)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def group_of(resources: Mapping[str, float]) -> str:
    """A locality group's name: its resources, sorted (``region-eu=1``); ``""`` for none."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


async def _chain(client: Client, task: ChainTask, done: Sequence[object]) -> Outcome:
    """The chain's copy: its source manifests as the run fetched them, its blobs' placements in its repository
    taken as done (the blob tasks placed them: no request), each other blob placed here."""
    chain = task.chain
    placed = {
        (b.digest, b.size)
        for r in done
        if isinstance(r, PlacementResult)
        for n, b in r.placed.items()
        if n == task.store
    }
    known = chain.known()
    dst = store_of(client, task.store)
    if chain.fresh:
        client.blobs.fresh.add((dst.host, dst.repository))
    hints = chain.mount_from

    async def mount_from(host: str, digest: Digest) -> Sequence[str]:
        return hints.get(digest, ())

    copy = await client.copy_resolved(
        as_location(chain.source),
        as_location(chain.destination),
        chain.source_digest,
        [parse_platform(p) for p in chain.platforms],
        mount_from,
        check_destination=chain.check_destination,
        compress=chain.compress,
        known=known,
        placed=placed,
    )
    conversions = client.trees.conversions
    made = [c for d in [*known, *(b.source_digest for b in copy.blobs)] if d and (c := conversions.conversion(d))]
    return Outcome(key=task.key, copy_result=copy, conversions=made if chain.compress is not None else [])


async def _place(client: Client, task: BlobTask) -> PlacementResult:
    """One read of the source, streamed to each registry's first repository at once, then mounted into the
    rest of that registry. A copier of its own: its fan-out is this task's (other tasks on the client run apart)."""
    src = store_of(client, task.source)
    desc = Descriptor.model_validate({"mediaType": task.media_type, "digest": task.digest, "size": task.size})
    copier = client.blobs.fork()
    for name in task.fresh:
        fresh = store_of(client, name)
        copier.fresh.add((fresh.host, fresh.repository))
    result = PlacementResult(key=task.key, digest=task.digest)

    async def one_registry(repos: tuple[str, ...]) -> None:
        for i, name in enumerate(repos):
            try:
                first, dst = store_of(client, repos[0]), store_of(client, name)
                hints = task.mount_from.get(first.host, ()) if i == 0 else (first.repository,)
                result.placed[name] = await copier.copy(src, dst, desc, hints)
            except OcicopyError as exc:
                result.errors[name] = one_line(exc)
                if i == 0:  # nothing to mount from: each chain there places the blob itself
                    for rest in repos[1:]:
                        result.errors[rest] = result.errors[name]
                    return

    async with anyio.create_task_group() as readers:
        if len(task.placements) > 1:
            copier.reads = SourceReads(readers)
        try:
            async with anyio.create_task_group() as tg:
                for repos in task.placements:
                    tg.start_soon(one_registry, repos)
        finally:
            readers.cancel_scope.cancel()
    return result


def merge_placements(
    copy: CopyResult,
    repo: str,
    placed: dict[tuple[str, Digest], BlobResult],
    failed: Mapping[tuple[str, str], str] | None = None,
) -> CopyResult:
    """``copy`` (a chain's: it found its blobs placed) with each blob's result from the task that placed it in
    ``repo`` (a :func:`where` name; ``placed``: by ``(where, digest)``). Each placement is taken by one copy
    (removed from ``placed``): two copies into one repository do not both count its bytes. ``failed``: the blob
    tasks' errors by ``(where, digest)``; a blob the chain then placed itself is a warning."""
    blobs = [
        placed.pop((repo, b.digest), b) if b.action is BlobAction.SKIPPED else b  # a skip: placed by a blob task
        for b in copy.blobs
    ]
    warnings = [
        f"blob {b.digest}: its shared transfer failed ({error}); this copy placed it itself"
        for b in copy.blobs
        if (error := (failed or {}).get((repo, b.digest)))
    ]
    return copy.model_copy(update={"blobs": blobs, "warnings": copy.warnings + warnings})


# -- local ---------------------------------------------------------------------------------------------------------


class LocalExecutor:
    """Runs the tasks in this process: each as soon as its dependencies are done (the client bounds transfers)."""

    async def prepare(self, client: Client, plan: Plan, run_id: str) -> None:
        return None

    def registry_stats(self) -> dict[str, RegistryStats]:
        return {}  # the tasks ran on the run's own client: its stats are the run's

    async def run(self, client: Client, tasks: Sequence[Task]) -> dict[str, PlacementResult | Outcome]:
        done = {t.key: anyio.Event() for t in tasks}
        results: dict[str, PlacementResult | Outcome] = {}

        async def one(task: Task) -> None:
            for dep in task.deps:
                await done[dep].wait()
            try:
                results[task.key] = await run_task(client, task, [results.get(d) for d in task.deps])
            finally:
                done[task.key].set()

        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
        return results
