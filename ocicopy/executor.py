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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio
from pydantic import BaseModel

from ocicopy.blobs import BlobCopier
from ocicopy.digest import Digest
from ocicopy.errors import OcicopyError, unwrap_group
from ocicopy.fanout import SourceReads
from ocicopy.graph import WorkGraph
from ocicopy.location import as_location, parse_layout_reference
from ocicopy.models import Descriptor
from ocicopy.options import Recompression
from ocicopy.platforms import parse_platform
from ocicopy.repository import Endpoint
from ocicopy.result import BlobAction, BlobResult, CopyResult
from ocicopy.store import Store

if TYPE_CHECKING:
    from ocicopy.client import Client
    from ocicopy.plan import Plan

__all__ = [
    "BlobTask",
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
    deps: tuple[str, ...] = ()

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(sorted({registry_of(p[0]) for p in self.placements}))


@dataclass(frozen=True)
class ChainTask:
    """Push ``source`` (pinned to ``source_digest``) to ``destination`` (``...:tag``): manifests, then the tag."""

    key: str
    source: str
    destination: str
    source_digest: str
    deps: tuple[str, ...] = ()
    platforms: tuple[str, ...] = ()
    compress: Recompression | None = None
    check_destination: bool = False
    mount_from: tuple[str, ...] = ()
    resources: Mapping[str, float] = field(default_factory=dict)
    registry: str = ""  # the destination store's registry as the blob tasks name it (its API host, or oci:DIR)

    @property
    def registries(self) -> tuple[str, ...]:
        return (self.registry or registry_of(self.destination),)


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
    placed: dict[str, BlobResult] = {}
    errors: dict[str, str] = {}  # repository → the error (its chain places the blob itself, or fails)


class Outcome(BaseModel):
    """A chain task's result: the copy, or the error that stopped it."""

    key: str
    copy_result: CopyResult | None = None
    error: str | None = None


class Executor(Protocol):
    async def prepare(self, client: Client, plan: Plan, run_id: str) -> None:
        """Before any deployment resolves: what the executor needs of the run (refuses what it cannot run)."""
        ...

    async def run(self, client: Client, tasks: Sequence[Task]) -> dict[str, PlacementResult | Outcome]:
        """Run ``tasks`` (each after its ``deps``); every task's result by key."""
        ...


@dataclass(frozen=True)
class Chain:
    """What a chain task needs beyond the graph: how the deployment's copy was resolved."""

    source: str
    destination: str
    source_digest: Digest
    platforms: tuple[str, ...] = ()
    compress: Recompression | None = None
    check_destination: bool = False
    mount_from: tuple[str, ...] = ()
    resources: Mapping[str, float] = field(default_factory=dict)


def tasks_of(
    graph: WorkGraph,
    chains: Mapping[str, Chain],
    mount_from: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
    resources: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Task]:
    """The coarse tasks of ``graph``: a :class:`BlobTask` per read node, a :class:`ChainTask` per tag node
    (``chains``: by tag node key). ``mount_from``: ledger hints per (registry, digest); ``resources``: each
    locality group's Dask resources."""
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
        tasks.append(
            ChainTask(
                key=tag.key,
                source=chain.source,
                destination=chain.destination,
                source_digest=str(chain.source_digest),
                deps=tuple(deps),
                platforms=chain.platforms,
                compress=chain.compress,
                check_destination=chain.check_destination,
                mount_from=chain.mount_from,
                resources=dict(chain.resources),
                registry=tag.registry,
            )
        )
    return tasks


# -- what a task does, against any client ----------------------------------------------------------------------


async def run_task(client: Client, task: Task) -> PlacementResult | Outcome:
    """Do ``task`` with ``client``; an :class:`OcicopyError` is the result's error, never raised."""
    try:
        if isinstance(task, BlobTask):
            return await _place(client, task)
        copy = await client.copy_resolved(
            as_location(task.source),
            as_location(task.destination),
            Digest(task.source_digest),
            [parse_platform(p) for p in task.platforms],
            task.mount_from,
            check_destination=task.check_destination,
            compress=task.compress,
        )
        return Outcome(key=task.key, copy_result=copy)
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
        return PlacementResult(key=task.key, errors={p: error for repos in task.placements for p in repos})
    return Outcome(key=task.key, error=error)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def group_of(resources: Mapping[str, float]) -> str:
    """A locality group's name: its resources, sorted (``region-eu=1``); ``""`` for none."""
    return ",".join(f"{k}={v:g}" for k, v in sorted(resources.items()))


async def _place(client: Client, task: BlobTask) -> PlacementResult:
    """One read of the source, streamed to each registry's first repository at once, then mounted into the
    rest of that registry. A copier of its own: its fan-out is this task's (other tasks on the client run apart)."""
    src = store_of(client, task.source)
    desc = Descriptor.model_validate({"mediaType": task.media_type, "digest": task.digest, "size": task.size})
    opts = client.options
    copier = BlobCopier(client.blobs.limiter, opts.retry, client.progress, mounts=opts.mounts, timeouts=opts.timeouts)
    result = PlacementResult(key=task.key)

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


def merge_placements(copy: CopyResult, repo: str, placed: dict[tuple[str, Digest], BlobResult]) -> CopyResult:
    """``copy`` (a chain's: it found its blobs placed) with each blob's result from the task that placed it in
    ``repo`` (a :func:`where` name; ``placed``: by ``(where, digest)``). Each placement is taken by one copy
    (removed from ``placed``): two copies into one repository do not both count its bytes."""
    blobs = [
        placed.pop((repo, b.digest), b) if b.action is BlobAction.SKIPPED else b  # a skip: placed by a blob task
        for b in copy.blobs
    ]
    return copy.model_copy(update={"blobs": blobs})


# -- local ---------------------------------------------------------------------------------------------------------


class LocalExecutor:
    """Runs the tasks in this process: each as soon as its dependencies are done (the client bounds transfers)."""

    async def prepare(self, client: Client, plan: Plan, run_id: str) -> None:
        return None

    async def run(self, client: Client, tasks: Sequence[Task]) -> dict[str, PlacementResult | Outcome]:
        done = {t.key: anyio.Event() for t in tasks}
        results: dict[str, PlacementResult | Outcome] = {}

        async def one(task: Task) -> None:
            for dep in task.deps:
                await done[dep].wait()
            try:
                results[task.key] = await run_task(client, task)
            finally:
                done[task.key].set()

        async with anyio.create_task_group() as tg:
            for task in tasks:
                tg.start_soon(one, task)
        return results
