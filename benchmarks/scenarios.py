"""The scenarios of the harness: what a scenario function sees (:class:`Context`), the registry, the built-ins.

Each scenario is measured ``cold`` (into an empty mirror registry) then ``warm`` (the same run again, everything
already there), in every network profile. The built-ins, in display order (:data:`SCENARIOS`):

- ``naive``: the "before": per deployment, one after the other, GET the manifests and stream every blob of every
  image (8 at a time) GET → PUT, then PUT the index children and the tag: no existence checks, no mounts, no
  dedupe (:func:`benchmarks.runners.run_naive`);
- ``service``: ``ocicopy mirror --mode service --no-mount --no-ledger`` (10 repositories, no cross-repo mounts);
- ``service+mount``: ``ocicopy mirror --mode service`` (shared layers mounted, the blob ledger kept);
- ``service-per-env``: service mode where every (service, environment) is its own service: 30 repositories, as
  platforms that key services per environment have (mounts and ledger on);
- ``cluster``: ``ocicopy mirror --mode cluster`` (one repository);
- ``cluster-library`` / ``service+mount-library`` (``warm``): the warm rerun in this process (``Client.mirror``)
  with a fresh client: how deployment tools embed the library, without interpreter start-up;
- ``one-change`` (``warm``): after the warm cluster runs, one service ships a new version (only its app layer
  differs); its deployments move to it and ``ocicopy mirror --mode cluster`` runs again;
- ``skopeo``: ``skopeo copy --all`` per deployment, to the cluster-mode destinations (when installed);
- ``floor`` (``cold``): each unique blob once by ``curl GET | curl -T - PUT`` 8 in parallel, then the manifests.

Your own::

    from benchmarks.scenarios import Context, register_scenario

    def crane(ctx: Context) -> None:
        for source, destination in ctx.cluster_destinations():
            subprocess.run(["crane", "copy", "--insecure", source, destination], check=True)

    register_scenario("crane", crane, requires=("crane",))   # phases cold and warm
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from benchmarks import runners
from benchmarks.workload import CLUSTER, PREFIX
from ocicopy import mirror_tag, parse_reference

if TYPE_CHECKING:
    from benchmarks.network import Profile
    from benchmarks.workload import Workload
    from harness.netem import LinkEmulator
    from harness.registry import RegistryServer

PHASES: Final = ("cold", "warm")


@dataclass
class Site:
    """A registry as the tools reach it: ``host`` is the emulator's address in a linked profile."""

    server: RegistryServer
    host: str
    emulator: LinkEmulator | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def emulator_cpu(self) -> float:
        """CPU seconds the link emulator's thread (in this process) has used; 0 without one."""
        return self.emulator.cpu_seconds if self.emulator is not None else 0.0


@dataclass
class Context:
    """What a scenario function gets: the workload, both registries (as addresses to use), the phase."""

    scenario: str
    phase: str  # "cold", "warm", or "prepare" (an unmeasured fill)
    repeat: int
    profile: Profile
    workload: Workload
    source: Site
    mirror: Site
    workdir: Path
    bytecode: Path  # PYTHONPYCACHEPREFIX of the tools' interpreters
    parallel: int = 8  # curl transfers of the floor, blobs in flight for naive
    changed_workload: Workload | None = None

    @property
    def changed(self) -> Workload:
        """The workload after one service shipped a new version (pushed to the source)."""
        if self.changed_workload is None:
            raise RuntimeError("the changed workload was not prepared (one-change not selected)")
        return self.changed_workload

    def plan(self, mode: str, workload: Workload | None = None, per_environment: bool = False) -> dict[str, Any]:
        """The mirroring plan (ocicopy's format) for every deployment, addressed through the links."""
        return (workload or self.workload).plan(
            self.source.host, self.mirror.host, mode=mode, per_environment=per_environment
        )

    def plan_file(self, mode: str, workload: Workload | None = None, per_environment: bool = False) -> Path:
        label = f"{mode}{'-per-env' if per_environment else ''}"
        path = self.workdir / f"plan-{label}-{self.mirror.host.replace(':', '_')}.json"
        path.write_text(json.dumps(self.plan(mode, workload, per_environment), indent=2))
        return path

    def cluster_destinations(self, workload: Workload | None = None) -> list[tuple[str, str]]:
        """``(source, destination)`` references per deployment, in plan order, named as cluster mode names them."""
        out = []
        for d in (workload or self.workload).deployments:
            source = d.image(self.source.host)
            out.append((source, f"{self.mirror.host}/{PREFIX}/{CLUSTER}:{mirror_tag(parse_reference(source))}"))
        return out

    @property
    def env(self) -> dict[str, str]:
        """The environment for ``python -m ocicopy``: bytecode cached in the work directory (as when installed).

        Like an installed package (pip compiles ``.pyc`` files), modules are not recompiled per run even where
        ``PYTHONDONTWRITEBYTECODE`` is set; nothing is written into the repository.
        """
        return tool_env(self.bytecode)


def tool_env(bytecode: Path) -> dict[str, str]:
    """This environment, with bytecode written to (and read from) ``bytecode``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(bytecode)}


class ScenarioFunction(Protocol):
    """Runs one scenario once against ``ctx.source`` / ``ctx.mirror``; the call is what is timed.

    It may return a dict of extra figures: ``report`` (an ocicopy report summary), ``peak_rss_mb``,
    ``cpu_seconds`` (the tool's own CPU; otherwise the CPU of the child processes reaped meanwhile is counted) and
    ``in_process`` (True: that CPU was spent in this process, so it is not the harness's), ``client_requests``
    (the tool's own request count), or anything else (kept in the samples file). It raises when the tool failed.
    """

    def __call__(self, ctx: Context) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Scenario:
    """A timed way of mirroring the workload.

    ``phases``: measured one after the other on one fresh mirror registry (``cold`` first). ``after``: run on the
    mirror that scenario's phases left (right after them, in the same repeat) when it is selected too; otherwise
    ``prepare`` fills a fresh mirror first, unmeasured. ``setup`` runs unmeasured before every phase.
    ``requires``: executables that must be on ``PATH`` (else the scenario is skipped). ``in_results``: a row of
    the results document (False: samples only).
    """

    name: str
    run: ScenarioFunction
    phases: tuple[str, ...] = PHASES
    after: str | None = None
    prepare: ScenarioFunction | None = None
    setup: ScenarioFunction | None = None
    requires: tuple[str, ...] = ()
    in_results: bool = True
    description: str = ""


#: Every known scenario by name, in run and display order (a scenario's ``after`` is registered before it).
SCENARIOS: dict[str, Scenario] = {}


def register_scenario(name: str, run: ScenarioFunction, *, phases: Sequence[str] = PHASES, **options: Any) -> Scenario:
    """Add (or replace) a scenario; ``options`` are the other :class:`Scenario` fields."""
    scenario = Scenario(name, run, tuple(phases), **options)
    SCENARIOS[name] = scenario
    return scenario


def chains(names: Sequence[str]) -> list[list[Scenario]]:
    """Selected scenarios grouped by shared mirror: each chain starts with a scenario that needs a fresh one."""
    out: list[list[Scenario]] = []
    chain_of: dict[str, list[Scenario]] = {}
    for name in names:
        scenario = SCENARIOS[name]
        chain = chain_of.get(scenario.after) if scenario.after else None
        if chain is None:
            chain = []
            out.append(chain)
        chain.append(scenario)
        chain_of[name] = chain
    return out


def _library_rerun(cli: str, mode: str, fill: ScenarioFunction) -> None:
    """``{cli}-library``: the warm rerun of the ``cli`` scenario in this process (``Client.mirror``)."""
    register_scenario(
        f"{cli}-library",
        lambda ctx: runners.ocicopy_library(ctx, mode),
        phases=("warm",),
        after=cli,
        prepare=fill,
        setup=runners.warm_library_once,
        description=f"the {mode}-mode warm rerun in this process (Client.mirror)",
    )


def _builtin_scenarios() -> None:
    register_scenario("naive", runners.run_naive, description="per deployment, every blob and manifest copied")
    register_scenario(
        "service",
        lambda ctx: runners.ocicopy_cli(ctx, "service", "--no-mount", "--no-ledger"),
        description="ocicopy mirror --mode service --no-mount --no-ledger (subprocess)",
    )
    register_scenario(
        "service+mount",
        lambda ctx: runners.ocicopy_cli(ctx, "service"),
        description="ocicopy mirror --mode service (mounts, ledger; subprocess)",
    )
    _library_rerun("service+mount", "service", runners.fill_service)
    register_scenario(
        "service-per-env",
        lambda ctx: runners.ocicopy_cli(ctx, "service", per_environment=True),
        description="ocicopy mirror --mode service, every (service, environment) its own service: 30 repositories",
    )
    register_scenario(
        "cluster", lambda ctx: runners.ocicopy_cli(ctx, "cluster"), description="ocicopy mirror --mode cluster"
    )
    _library_rerun("cluster", "cluster", runners.fill_cluster)
    register_scenario(
        "one-change",
        lambda ctx: runners.ocicopy_cli(ctx, "cluster", workload=ctx.changed),
        phases=("warm",),
        after="cluster",
        prepare=runners.fill_cluster,
        description="after the warm cluster runs, one service's deployments move to its new version",
    )
    register_scenario(
        "skopeo", runners.run_skopeo_loop, requires=("skopeo",), description="skopeo copy --all per deployment"
    )
    register_scenario(
        "floor",
        runners.run_floor,
        phases=("cold",),
        requires=("curl",),
        description="each unique blob once by curl GET | curl PUT, 8 in parallel, then the manifests",
    )


_builtin_scenarios()
