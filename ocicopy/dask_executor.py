"""A run's work graph on a Dask distributed cluster (``pip install "ocicopy[dask]"``).

The deployments resolve where the run is (HEADs: :func:`ocicopy.mirroring.run_plan`); the copies they need,
as coarse tasks (:mod:`ocicopy.executor`: a blob fan-out per source digest, a manifest-and-tag chain per
(deployment, cluster)), go to the scheduler **once**, as one graph:

- keys are ``ocicopy/<run id>/<node key>``: identical work within a run is one task cluster-wide, and nothing
  is reused across runs;
- one layer per locality group, annotated with the group's worker resources (a mirror's ``dask_resources``),
  checked against the live workers before the run starts (a resource no worker offers is refused, not left
  pending);
- each worker process holds one long-lived ocicopy :class:`~ocicopy.Client` (:class:`OcicopyPlugin`) on an
  event loop of its own (a thread): pools and tokens are reused across tasks, and hashing and zstd run there,
  never on the worker's own event loop; blob bytes go straight from the source to the mirrors, never through
  the scheduler; a task's result is a few hundred bytes;
- per-registry limits hold across workers: a task takes a lease of ``ocicopy/<run id>/<registry>`` (a
  :class:`distributed.Semaphore` of ``blob_concurrency`` leases) for each registry it writes; and so does the
  adaptive limit (:mod:`ocicopy.ratelimit`): a worker throttled by a registry (429/503) halves its limit for
  that host and tells every worker of the run (``Client.run``, from a thread: the task is not held), which
  lowers its own to it; each grows back on its own successes. The workers' request counts, retries, throttled
  answers and lowest limits reach the run's report (:meth:`DaskExecutor.registry_stats`);
- credentials never travel: the plugin carries the client options without passwords and the plan's registry
  settings (environment variable *names*); each worker reads its passwords, docker config and credential
  helpers where it runs.

A worker that dies mid-task: the scheduler runs its tasks elsewhere (a blob task may read its source again);
tags are still last, in their chain. A lost scheduler: the run fails with an :class:`ExecutorError`; what
finished is in the mirrors and a rerun skips it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import distributed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from distributed.diagnostics.plugin import WorkerPlugin

import ocicopy
from ocicopy.errors import ExecutorError, InputError, OcicopyError
from ocicopy.executor import Outcome, PlacementResult, Task, failure, group_of, run_task
from ocicopy.options import ClientOptions, revalidated
from ocicopy.plan import Plan, RegistrySettings, registry_options
from ocicopy.ratelimit import merge_stats
from ocicopy.result import RegistryStats

if TYPE_CHECKING:
    from ocicopy.client import Client

_log = logging.getLogger("ocicopy.dask")

__all__ = ["DaskExecutor", "OcicopyPlugin", "local_cluster", "plugin_name", "semaphore_name"]


def plugin_name(run_id: str) -> str:
    """The worker plugin of one run: runs sharing a cluster (two pipelines) each keep their own client."""
    return f"ocicopy/{run_id}"


def semaphore_name(run_id: str, registry: str) -> str:
    """The lease of one run on one registry (``blob_concurrency`` leases across the workers)."""
    return f"ocicopy/{run_id}/{registry}"


def without_secrets(options: ClientOptions) -> ClientOptions:
    """``options`` as they may travel to workers: every password removed (workers read their own)."""
    registries = {h: revalidated(r, password=None) for h, r in options.registries.items()}
    return revalidated(options, registries=registries)


class OcicopyPlugin(WorkerPlugin):
    """One ocicopy :class:`~ocicopy.Client` per worker process, on an event loop thread of its own."""

    def __init__(
        self, options: ClientOptions, registries: Mapping[str, RegistrySettings], version: str, run_id: str = ""
    ) -> None:
        self.options = without_secrets(options)
        self.registries = dict(registries)
        self.version = version
        self.run_id = run_id
        self.semaphores: dict[str, distributed.Semaphore] = {}

    def setup(self, worker: distributed.Worker) -> None:
        if self.version != ocicopy.__version__:
            raise ExecutorError(
                f"worker {worker.address} runs ocicopy {ocicopy.__version__}, the run ocicopy {self.version}: "
                "install the same version on the workers"
            )
        self._lock = threading.Lock()  # the worker's task threads share the semaphores (made here: not pickled)
        options = registry_options(self.registries, self.options)  # passwords from this worker's environment
        # A registry's logs say which worker wrote: "ocicopy (dask worker NAME)".
        options = revalidated(options, user_agent=f"{options.user_agent} (dask worker {worker.name})")
        self._stack = ExitStack()
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        from ocicopy.client import Client

        self.client: Client = self.portal.call(lambda: Client(options))
        self.worker = worker
        self.client.transport.on_cut = self._tell_peers

    def _tell_peers(self, host: str, limit: int) -> None:
        """A cut of ``host``'s limit here (on the client's loop): every worker of the run lowers its own to it. Sent
        from a thread of its own, so that neither the loop nor the task waits for the scheduler."""

        def send() -> None:
            try:
                dask = self.worker._get_client()
                dask.run(_adopt, self.run_id, host, limit, self.worker.address, wait=False, on_error="ignore")
            except Exception as exc:  # a peer gone, a run ending: the cut stays local
                _log.warning("ocicopy: the cut of %s to %d was not sent to the other workers: %s", host, limit, exc)

        threading.Thread(target=send, name=f"ocicopy-cut-{host}", daemon=True).start()

    def adopt(self, host: str, limit: int) -> None:
        """A peer's cut of ``host`` (from :func:`_adopt`, on the worker's loop): applied on the client's loop."""
        with contextlib.suppress(Exception):  # tearing down
            self.portal.start_task_soon(self._adopt, host, limit)

    async def _adopt(self, host: str, limit: int) -> None:
        self.client.transport.adaptive(host).adopt(limit)

    def registry_stats(self) -> dict[str, RegistryStats]:
        """What this worker asked of each registry for the run (its client is the run's own)."""
        from ocicopy.transport import Stats

        stats: dict[str, RegistryStats] = self.portal.call(lambda: self.client.transport.registry_stats(Stats()))
        return stats

    def teardown(self, worker: distributed.Worker) -> None:
        if not hasattr(self, "client"):
            return  # setup failed: nothing was started
        try:
            self.portal.call(self.client.aclose)
        finally:
            self._stack.close()

    @contextmanager
    def leases(self, run_id: str, registries: Sequence[str], limit: int) -> Iterator[None]:
        """A lease on each registry's semaphore for this run, taken in one order (no two tasks wait on each other)."""
        with ExitStack() as held:
            for host in sorted(registries):
                name = semaphore_name(run_id, host)
                with self._lock:
                    if name not in self.semaphores:
                        self.semaphores[name] = distributed.Semaphore(max_leases=limit, name=name)
                    sem = self.semaphores[name]
                sem.acquire()
                held.callback(sem.release)
            yield


def _plugin(dask_worker: distributed.Worker, run_id: str) -> OcicopyPlugin | None:
    plugin = dask_worker.plugins.get(plugin_name(run_id))
    return plugin if isinstance(plugin, OcicopyPlugin) else None


async def _adopt(run_id: str, host: str, limit: int, origin: str, dask_worker: distributed.Worker) -> None:
    """On every worker (``Client.run``; a coroutine: distributed sends ``wait=False`` runs only to those): a
    peer's cut of ``host``'s limit (the run ended here: nothing)."""
    plugin = _plugin(dask_worker, run_id)
    if plugin is not None and dask_worker.address != origin:
        plugin.adopt(host, limit)


def _worker_stats(run_id: str, dask_worker: distributed.Worker) -> dict[str, dict[str, Any]]:
    plugin = _plugin(dask_worker, run_id)
    if plugin is None or not hasattr(plugin, "client"):
        return {}
    return {host: s.model_dump() for host, s in plugin.registry_stats().items()}


def _run(task: Task, run_id: str, limit: int, *done: object) -> PlacementResult | Outcome:
    """A task on a worker (``done``: its dependencies' results: a chain takes their placements as done)."""
    plugin = distributed.get_worker().plugins[plugin_name(run_id)]
    assert isinstance(plugin, OcicopyPlugin)
    with plugin.leases(run_id, task.registries, limit):
        result: PlacementResult | Outcome = plugin.portal.call(run_task, plugin.client, task, done)
    return result


class DaskExecutor:
    """Runs a run's tasks on the Dask cluster ``dask`` (a :class:`distributed.Client`, synchronous).
    ``shared_filesystem``: the workers see this machine's files (a local cluster), so OCI layouts may be written
    and read there; otherwise a plan with a layout mirror or source is refused (each worker would write its own)."""

    def __init__(self, dask: distributed.Client, shared_filesystem: bool = False) -> None:
        self.dask = dask
        self.shared_filesystem = shared_filesystem
        self.run_id = ""
        self.limit = 8
        self.workers_stats: dict[str, RegistryStats] = {}

    def key(self, node: str) -> str:
        return f"ocicopy/{self.run_id}/{node}"

    async def prepare(self, client: Client, plan: Plan, run_id: str) -> None:
        """Check the workers offer every mirror's resources; install the worker plugin (its client settings)."""
        self.run_id, self.limit = run_id, client.options.blob_concurrency
        await anyio.to_thread.run_sync(self._prepare, client.options, plan)

    def _prepare(self, options: ClientOptions, plan: Plan) -> None:
        where = self._address()
        try:
            workers = list(self.dask.scheduler_info(n_workers=-1)["workers"].values())
        except (OSError, distributed.TimeoutError) as exc:
            raise ExecutorError(f"the Dask scheduler at {where} does not answer: {exc}") from None
        if not workers:
            raise ExecutorError(f"the Dask scheduler at {where} has no workers")
        layouts = [d for d in plan.deployments if (d.image or "").startswith("oci:")]
        if layouts and not self.shared_filesystem:
            d = layouts[0]
            raise InputError(
                f"deployment {d.service}/{d.environment} reads an OCI layout ({d.image}): on a Dask cluster the "
                "workers may not see it; use a registry source, or a local cluster (--workers N)"
            )
        for name, sub in plan.cluster_plans():
            if not self.shared_filesystem and sub.target.layout is not None:
                raise InputError(
                    f"mirror {name!r} is an OCI layout ({sub.target.layout}): on a Dask cluster each worker would "
                    "write its own copy of it; use a registry mirror, or a local cluster (--workers N)"
                )
            wanted = sub.target.dask_resources
            if wanted and not any(_offers(w.get("resources") or {}, wanted) for w in workers):
                offered = sorted({k for w in workers for k in (w.get("resources") or {})})
                raise InputError(
                    f"mirror {name!r} asks for Dask worker resources {wanted}: no live worker of {where} offers them"
                    f" (offered: {', '.join(offered) or 'none'})"
                )
        plugin = OcicopyPlugin(options, plan.registries, ocicopy.__version__, self.run_id)
        try:
            self.dask.register_plugin(plugin, name=plugin_name(self.run_id))
        except OcicopyError as exc:  # raised by a worker's setup (its version, its environment)
            raise ExecutorError(f"on a Dask worker: {exc}") from None

    def _address(self) -> str:
        return str(getattr(self.dask.scheduler, "address", None) or "the scheduler")

    async def run(self, client: Client, tasks: Sequence[Task]) -> dict[str, PlacementResult | Outcome]:
        return await anyio.to_thread.run_sync(self._run, list(tasks), abandon_on_cancel=True)

    def graph(self, tasks: Sequence[Task], fn: Callable[..., Any] | None = None) -> tuple[HighLevelGraph, list[str]]:
        """The run's graph: a layer per locality group (annotated with its resources), a key per task; each task
        calls ``fn(task, run_id, limit, *dependency results)`` (default: runs it; a benchmark's no-op)."""
        layers: dict[str, dict[str, Any]] = {}
        resources: dict[str, Mapping[str, float]] = {}
        for task in tasks:
            group = group_of(task.resources) or "any"
            resources[group] = task.resources
            layers.setdefault(group, {})[self.key(task.key)] = (
                fn or _run,
                task,
                self.run_id,
                self.limit,
                *(self.key(d) for d in task.deps),
            )
        graph = HighLevelGraph(
            {
                f"ocicopy/{self.run_id}/{g}": MaterializedLayer(
                    dsk, annotations={"resources": dict(resources[g])} if resources[g] else None
                )
                for g, dsk in layers.items()
            },
            {f"ocicopy/{self.run_id}/{g}": set() for g in layers},  # a group's chains need only its own blobs
        )
        return graph, [self.key(t.key) for t in tasks]

    def _run(self, tasks: list[Task]) -> dict[str, PlacementResult | Outcome]:
        """Submit the graph once and gather each task's result. A lost scheduler: an :class:`ExecutorError`
        carrying the results gathered before (``results``: those copies are done)."""
        graph, keys = self.graph(tasks)
        by_key = {self.key(t.key): t for t in tasks}
        results: dict[str, PlacementResult | Outcome] = {}
        lost = ""
        try:
            futures = self.dask.get(graph, keys, sync=False)
            # the run's client, not the default one (a caller may hold several, set_as_default=False)
            for future in distributed.as_completed(futures, loop=self.dask.loop):
                task = by_key[future.key]
                try:
                    results[task.key] = future.result()
                except distributed.client.FutureCancelledError as exc:
                    lost = exc.reason or "cancelled"
                    break
                except OcicopyError as exc:
                    results[task.key] = failure(task, exc)
                except Exception as exc:  # a task that kept failing (KilledWorker) or met a bug
                    results[task.key] = failure(task, ExecutorError(f"{type(exc).__name__}: {exc}"))
        except (OSError, distributed.TimeoutError) as exc:
            lost = str(exc)
        if lost:
            error = ExecutorError(
                f"the Dask scheduler at {self._address()} was lost mid-run ({lost}): what finished is in the "
                "mirrors; run again to complete the rest"
            )
            error.results = results  # type: ignore[attr-defined]
            raise error
        self._close(tasks)
        return results

    def registry_stats(self) -> dict[str, RegistryStats]:
        """What the workers asked of each registry in the run (added up; gathered when the run ended)."""
        return self.workers_stats

    def _close(self, tasks: list[Task]) -> None:
        """The run's state off the cluster: the workers' stats gathered, then its client on every worker (pools,
        loop thread; a worker gone since took its own) and its semaphores on the scheduler."""
        with contextlib.suppress(Exception):  # a worker lost since: its counts are lost with it
            per_worker = self.dask.run(_worker_stats, self.run_id, on_error="ignore")
            self.workers_stats = merge_stats(
                {h: RegistryStats.model_validate(s) for h, s in part.items()}
                for part in per_worker.values()
                if isinstance(part, dict)
            )
        with contextlib.suppress(Exception):
            self.dask.unregister_worker_plugin(plugin_name(self.run_id))
        for host in sorted({h for t in tasks for h in t.registries}):
            name = semaphore_name(self.run_id, host)
            with contextlib.suppress(Exception):
                distributed.Semaphore(name=name, scheduler_rpc=self.dask.scheduler, loop=self.dask.loop).close()


def _offers(offered: Mapping[str, float], wanted: Mapping[str, float]) -> bool:
    return all(offered.get(k, 0) >= v for k, v in wanted.items())


@contextmanager
def local_cluster(workers: int, threads: int = 8) -> Iterator[distributed.Client]:
    """A Dask cluster of ``workers`` worker processes on this machine, for one run (``--workers N``)."""
    import logging

    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,  # tasks wait on the network: more threads than cores
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
