"""Running the harness: per profile, every chain of scenarios ``repeats`` times, each phase measured.

A measured run sits between marks of both registries' access logs: its wall time; requests by class, bytes from
the source and to the mirror (:mod:`benchmarks.traffic`); the CPU of the tool, of each registry and of this
process (the link emulators); the emulators' counters; the tool's own request count and report. The samples of
a ``(profile, scenario, phase)`` become a :class:`~benchmarks.results.Row` (:func:`row_of`), the rows a
:class:`~benchmarks.results.Results` with its targets (:func:`build_results`)::

    doc = run_benchmark(quick=True, scenarios=["naive", "cluster", "floor"], output=None)   # no files written
    doc, runs = execute(Config(profiles=["loopback"], repeats=5))                          # runs: every Sample
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import httpx2

from benchmarks import runners, startup
from benchmarks.network import Profile, link_floor, linked, make_profiles
from benchmarks.procs import children_cpu, cpu_seconds
from benchmarks.results import (
    PHASE_ORDER,
    ROOT,
    SCENARIO_ORDER,
    OneChange,
    ProfileInfo,
    Results,
    Row,
    git_revision,
    machine_metadata,
    timestamp,
)
from benchmarks.scenarios import SCENARIOS, Context, Scenario, Site, chains, tool_env
from benchmarks.startup import Startup
from benchmarks.targets import judge_targets
from benchmarks.traffic import Traffic, traffic
from benchmarks.workload import Workload, build_workload
from harness.registry import RegistryServer, start_registry

MiB: Final = 1024 * 1024
RESULTS: Final = ROOT / "benchmarks" / "results" / "harness.json"
CHART: Final = RESULTS.with_suffix(".svg")
DEFAULT_PROFILES: Final = ("loopback", "wan")
DEFAULT_SCALE, DEFAULT_LINK_SCALE, QUICK_SCALE, QUICK_LINK_SCALE = 1.0, 0.5, 0.2, 0.1
DEFAULT_REPEATS: Final = 3
DEFAULT_STARTUP_RUNS, QUICK_STARTUP_RUNS = 10, 5


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass
class Config:
    """What :func:`run_benchmark` runs. ``None`` fields take their defaults (smaller with ``quick``)."""

    quick: bool = False
    profiles: Sequence[str | Profile] = DEFAULT_PROFILES
    scenarios: Sequence[str] | None = None  # None: every registered scenario
    repeats: int | None = None  # default 3, quick 1
    scale: float | None = None  # profiles without links; default 1, quick 0.2
    link_scale: float | None = None  # profiles with links (wan); default 0.5, quick 0.1
    source_rtt: float | None = None  # seconds; overrides the profiles' source link
    source_bandwidth: float | None = None  # bits/s
    mirror_rtt: float | None = None
    mirror_bandwidth: float | None = None
    content: str = "auto"  # layer content: auto, usr, random
    jobs: int | None = None  # processes generating layers
    parallel: int = 8  # curl transfers of the floor, and blobs of one deployment for naive
    change_service: str = "api"  # who ships a new version in one-change
    startup_runs: int | None = None  # rounds of the start-up timing (10, quick 5); 0: no start-up figures
    workdir: Path | None = None  # parent of the temporary directory
    output: Path | None = RESULTS  # None: write no files
    chart: Path | None = CHART
    command: str = ""

    def resolved(self) -> Config:
        """Defaults filled in, profiles made, scenarios checked and put in registration order."""
        repeats = self.repeats or (1 if self.quick else DEFAULT_REPEATS)
        scale = self.scale or (QUICK_SCALE if self.quick else DEFAULT_SCALE)
        link_scale = self.link_scale or (QUICK_LINK_SCALE if self.quick else DEFAULT_LINK_SCALE)
        startup_runs = self.startup_runs
        if startup_runs is None:
            startup_runs = QUICK_STARTUP_RUNS if self.quick else DEFAULT_STARTUP_RUNS
        if repeats < 1 or scale <= 0 or link_scale <= 0 or self.parallel < 1 or startup_runs < 0:
            raise ValueError("repeats and parallel must be at least 1, scales positive, start-up runs not negative")
        links = (self.source_rtt, self.source_bandwidth), (self.mirror_rtt, self.mirror_bandwidth)
        made = iter(make_profiles([p for p in self.profiles if isinstance(p, str)], scale, link_scale, *links))
        wanted = list(SCENARIOS) if self.scenarios is None else list(dict.fromkeys(self.scenarios))
        if unknown := [s for s in wanted if s not in SCENARIOS]:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
        return replace(
            self,
            repeats=repeats,
            scale=scale,
            link_scale=link_scale,
            startup_runs=startup_runs,
            profiles=[next(made) if isinstance(p, str) else p for p in self.profiles],
            scenarios=[s for s in SCENARIOS if s in wanted],
            command=self.command or f"run_benchmark(quick={self.quick})",
        )


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One measured run of one scenario phase."""

    profile: str
    scenario: str
    phase: str
    repeat: int
    seconds: float
    tool_cpu_seconds: float
    harness_cpu_seconds: float  # this process (link emulators' threads, access-log reading) during the run
    source: Traffic
    mirror: Traffic
    registry_cpu_seconds: dict[str, float]
    links: dict[str, dict[str, int]] = field(default_factory=dict)  # emulator counters during the run
    client_requests: int | None = None  # the tool's own count (ocicopy's report, the naive copier's)
    peak_rss_mb: float | None = None
    report: dict[str, Any] | None = None  # ocicopy: seconds, totals
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        """Requests both registries answered (access logs)."""
        return self.source.requests + self.mirror.requests

    @property
    def cpu_ms_per_request(self) -> float | None:
        """The tool's CPU per request it made (its own count, else the registries')."""
        made = self.client_requests if self.client_requests is not None else self.requests
        return self.tool_cpu_seconds * 1000 / made if made else None

    def blobs_not_read_once(self, unique: Iterable[str]) -> int:
        """Unique blobs the source sent never, or more than once, in this run."""
        return sum(self.source.blob_gets.get(digest, 0) != 1 for digest in unique)


@dataclass(frozen=True)
class _Reading:
    """The counters a measured run is the difference of."""

    clock: float
    children_cpu: float
    process_cpu: float
    registries_cpu: tuple[float, float]
    links: dict[str, dict[str, int]]

    @classmethod
    def now(cls, ctx: Context) -> _Reading:
        sites = {"source": ctx.source, "mirror": ctx.mirror}
        return cls(
            clock=time.monotonic(),
            children_cpu=children_cpu(),
            process_cpu=time.process_time(),
            registries_cpu=(cpu_seconds(ctx.source.server.process.pid), cpu_seconds(ctx.mirror.server.process.pid)),
            links={role: dict(s.emulator.stats) for role, s in sites.items() if s.emulator is not None},
        )

    def until(self, after: _Reading, tool_cpu: float | None, in_process: bool) -> dict[str, Any]:
        """Sample fields from this reading to ``after``; ``tool_cpu`` None: the child processes' CPU."""
        process = after.process_cpu - self.process_cpu
        tool = tool_cpu if tool_cpu is not None else after.children_cpu - self.children_cpu
        return {
            "seconds": after.clock - self.clock,
            "tool_cpu_seconds": round(tool, 4),
            "harness_cpu_seconds": round(process - tool if in_process else process, 3),
            "registry_cpu_seconds": {
                role: round(after.registries_cpu[i] - self.registries_cpu[i], 2)
                for i, role in enumerate(("source", "mirror"))
            },
            "links": {
                role: {k: v - self.links.get(role, {}).get(k, 0) for k, v in counters.items()}
                for role, counters in after.links.items()
            },
        }


@dataclass
class ProfileRun:
    """One profile's run: its workload, source registry (behind its link), work directory and samples."""

    config: Config
    profile: Profile
    workload: Workload
    changed: Workload | None
    source: Site
    workdir: Path
    sizes: dict[str, int]
    progress: Callable[[str], None]
    steps: Iterator[int]
    total_steps: int
    samples: list[Sample] = field(default_factory=list)
    startup: Startup | None = None
    _mirrors: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def bytecode(self) -> Path:
        return self.workdir.parent / "pycache"

    def context(self, scenario: str, mirror: Site, phase: str, repeat: int) -> Context:
        return Context(
            scenario,
            phase,
            repeat,
            self.profile,
            self.workload,
            self.source,
            mirror,
            self.workdir,
            self.bytecode,
            self.config.parallel,
            self.changed,
        )

    @contextmanager
    def fresh_mirror(self, label: str) -> Iterator[Site]:
        """A new, empty mirror registry (behind its own link in a linked profile), removed afterwards."""
        root = self.workdir / f"mirror-{next(self._mirrors)}-{re.sub(r'[^a-z0-9]+', '-', label)}"
        server = start_registry(root)
        try:
            with linked(server, self.profile.mirror, "mirror") as (host, emulator):
                yield Site(server, host, emulator)
        finally:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)

    def measure(self, scenario: Scenario, ctx: Context) -> Sample:
        """Run one phase between marks of both access logs; CPU of the tool, the registries and this process."""
        marks = ctx.source.server.mark(), ctx.mirror.server.mark()
        before = _Reading.now(ctx)
        out = dict(scenario.run(ctx) or {})
        figures = before.until(_Reading.now(ctx), out.pop("cpu_seconds", None), bool(out.pop("in_process", False)))
        sample = Sample(
            profile=self.profile.name,
            scenario=scenario.name,
            phase=ctx.phase,
            repeat=ctx.repeat,
            source=traffic(ctx.source.server, marks[0]),
            mirror=traffic(ctx.mirror.server, marks[1]),
            client_requests=out.pop("client_requests", None),
            peak_rss_mb=out.pop("peak_rss_mb", None),
            report=out.pop("report", None),
            extra=out,
            **figures,
        )
        self._check(sample)
        self._learn_sizes(sample.mirror, ctx.mirror.server)
        self.samples.append(sample)
        self.progress(self._describe(sample))
        return sample

    def _describe(self, s: Sample) -> str:
        return (
            f"[{next(self.steps)}/{self.total_steps}] {s.profile} {s.scenario} {s.phase} (repeat {s.repeat + 1}): "
            f"{s.seconds:.2f} s, {s.requests} requests (source {s.source.requests}, mirror {s.mirror.requests}"
            + (f"; own count {s.client_requests}" if s.client_requests is not None else "")
            + f"), {s.source.bytes_out / MiB:.1f} MiB from source, "
            f"{s.mirror.uploaded_bytes(self.sizes) / MiB:.1f} MiB to mirror, CPU tool {s.tool_cpu_seconds:.2f} s, "
            f"registries {s.registry_cpu_seconds['source']:.2f} + {s.registry_cpu_seconds['mirror']:.2f} s, "
            f"harness {s.harness_cpu_seconds:.2f} s"
        )

    def _check(self, sample: Sample) -> None:
        """Every request reached the registries through the links (a tool that bypassed them is a bug here)."""
        for role, traffic_ in (("source", sample.source), ("mirror", sample.mirror)):
            counters = sample.links.get(role)
            if counters is not None and traffic_.requests and not counters.get("bytes_up"):
                raise RuntimeError(f"{sample.scenario}: the {role} registry was reached without its link emulator")
        if sample.source.errors or sample.mirror.errors:
            log(
                f"WARNING: {sample.scenario} {sample.phase}: error answers: source {sample.source.errors} "
                f"{sample.source.by_kind}, mirror {sample.mirror.errors} {sample.mirror.by_kind}"
            )

    def _learn_sizes(self, traffic_: Traffic, mirror: RegistryServer) -> None:
        """Sizes of uploaded blobs that are not the workload's (the ledger), from a HEAD on the mirror."""
        for digest, repo in traffic_.upload_repos.items():
            if digest not in self.sizes:
                response = httpx2.head(f"{mirror.url}/v2/{repo}/blobs/{digest}", timeout=30)
                self.sizes[digest] = int(response.headers.get("content-length", 0))

    def run_chain(self, chain: list[Scenario], repeat: int) -> None:
        """The chain's scenarios, one after the other, on one fresh mirror."""
        with self.fresh_mirror(chain[0].name) as mirror:
            for position, scenario in enumerate(chain):
                if position == 0 and scenario.prepare is not None:
                    scenario.prepare(self.context(scenario.name, mirror, "prepare", repeat))
                for phase in scenario.phases:
                    ctx = self.context(scenario.name, mirror, phase, repeat)
                    if scenario.setup is not None:
                        scenario.setup(ctx)
                    self.measure(scenario, ctx)

    def probe_startup(self, runs: int) -> Startup:
        """Start-up wall times, and the imports of a warm ``ocicopy mirror`` (on a mirror filled unmeasured)."""
        with self.fresh_mirror("startup") as mirror:
            ctx = self.context("startup", mirror, "prepare", 0)
            runners.fill_cluster(ctx)
            cmd, _ = runners.mirror_command(ctx, "cluster")
            imports = startup.profile_imports(cmd, ctx.env, ROOT)
        env = tool_env(self.bytecode)
        times = startup.time_commands(startup.startup_commands(), runs, lambda cmd: startup.run_timed(cmd, env, ROOT))
        result = Startup.of(times, imports, "a warm ocicopy mirror --mode cluster")
        for line in result.describe():
            self.progress(line)
        return result


def _missing_tools(scenario: Scenario) -> list[str]:
    return [tool for tool in scenario.requires if shutil.which(tool) is None]


def run_profile(
    config: Config,
    profile: Profile,
    workloads: tuple[Workload, Workload | None],
    workdir: Path,
    progress: Callable[[str], None],
    steps: tuple[Iterator[int], int],
    probe_startup: bool = False,
) -> ProfileRun:
    """Seed a source registry, put it behind the profile's link, and run every chain ``repeats`` times."""
    workload, changed = workloads
    names = [n for n in config.scenarios or () if not _missing_tools(SCENARIOS[n])]
    server = start_registry(workdir / "source")
    try:
        started = time.monotonic()
        workload.push(server)
        if changed is not None:
            changed.push(server, only=list(changed.shipped.items()))
        progress(f"{profile}: pushed the workload into the source registry in {time.monotonic() - started:.1f} s")
        with linked(server, profile.source, "source") as (host, emulator):
            sizes = {d: b.size for d, b in (changed or workload).blobs().items()}
            site = Site(server, host, emulator)
            run = ProfileRun(config, profile, workload, changed, site, workdir, sizes, progress, *steps)
            groups = chains(names)
            for repeat in range(config.repeats or 1):
                shift = repeat % len(groups)  # rotate so no chain always runs first
                for chain in groups[shift:] + groups[:shift]:
                    run.run_chain(chain, repeat)
            if probe_startup and config.startup_runs:
                run.startup = run.probe_startup(config.startup_runs)
        return run
    finally:
        server.stop()


def run_benchmark(config: Config | None = None, progress: Callable[[str], None] = log, **options: Any) -> Results:
    """Run the harness and return the results document; ``options`` are :class:`Config` fields.

    ``run_benchmark(quick=True)``; ``run_benchmark(profiles=["loopback"], scenarios=["cluster", "floor"])``.
    Writes ``config.output`` (JSON), its ``-samples`` companion and ``config.chart`` (SVG) unless they are None.
    Progress goes to ``progress`` (stderr by default).
    """
    return execute(config or Config(**options), progress)[0]


def execute(config: Config, progress: Callable[[str], None] = log) -> tuple[Results, list[ProfileRun]]:
    """:func:`run_benchmark`, also returning every profile's run (its samples)."""
    config = config.resolved()
    revision_at_start = git_revision()
    profiles = [p for p in config.profiles if isinstance(p, Profile)]
    for name in config.scenarios or []:
        if missing := _missing_tools(SCENARIOS[name]):
            progress(f"{name}: {', '.join(missing)} not installed: skipped")
    measured = [n for n in config.scenarios or [] if not _missing_tools(SCENARIOS[n])]
    total = len(profiles) * (config.repeats or 1) * sum(len(SCENARIOS[n].phases) for n in measured)
    progress(
        f"{total} measured runs: {', '.join(measured)} x {config.repeats} repeat(s) in {'; '.join(map(str, profiles))}"
    )
    steps = (iter(range(1, total + 1)), total)
    probe = next((i for i, p in enumerate(profiles) if not p.linked), 0)  # start-up: the first profile without links
    workloads: dict[float, Workload] = {}
    runs: list[ProfileRun] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ocicopy-bench-", dir=config.workdir) as tmp:
        _warm_bytecode(Path(tmp) / "pycache")
        for index, profile in enumerate(profiles):
            workload = _workload(workloads, profile.scale or 1, config, progress)
            changed = workload.ship(config.change_service, progress) if "one-change" in measured else None
            workdir = Path(tmp) / f"{index}-{profile.name}"
            runs.append(run_profile(config, profile, (workload, changed), workdir, progress, steps, index == probe))
    progress(f"finished in {time.monotonic() - started:.0f} s")
    doc = build_results(config, runs, revision_at_start)
    if config.output is not None:
        write_outputs(config, doc, runs, progress)
    return doc, runs


def _workload(cache: dict[float, Workload], scale: float, config: Config, progress: Callable[[str], None]) -> Workload:
    """The workload at ``scale``, generated once per run of the harness."""
    if scale not in cache:
        progress(f"generating the workload (scale {scale:g}, content {config.content})")
        w = cache[scale] = build_workload(scale, config.content, config.jobs, progress)  # type: ignore[arg-type]
        progress(
            f"{len(w.blobs())} unique blobs, {w.unique_bytes / MiB:.1f} MiB, {len(w.images)} source tags, "
            f"{len(w.deployments)} deployments; generated in {w.generation_seconds:.1f} s ({w.content} content)"
        )
    return cache[scale]


def _warm_bytecode(pycache: Path) -> None:
    """One unmeasured start of ocicopy and of the naive worker's imports: fills the bytecode cache."""
    env = tool_env(pycache)
    for cmd in (["-m", "ocicopy", "--version"], ["-c", "import benchmarks.runners, benchmarks.engine"]):
        subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, check=True, capture_output=True)


# --------------------------------------------------------------------------- results


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def row_of(samples: Sequence[Sample], deployments: int, sizes: dict[str, int], unique: Iterable[str]) -> Row:
    """The samples of one ``(profile, scenario, phase)`` as a results row (medians; the worst run for checks)."""
    first, unique = samples[0], list(unique)
    own = [s.client_requests for s in samples if s.client_requests is not None]
    per_request = [c for s in samples if (c := s.cpu_ms_per_request) is not None]
    requests = _median(s.requests for s in samples)
    return Row(
        profile=first.profile,
        scenario=first.scenario,
        phase=first.phase,
        seconds=[round(s.seconds, 3) for s in samples],
        requests=round(requests),
        source_requests=round(_median(s.source.requests for s in samples)),
        mirror_requests=round(_median(s.mirror.requests for s in samples)),
        client_requests=round(_median(own)) if len(own) == len(samples) else None,
        requests_per_deployment=round(requests / deployments, 3) if deployments else None,
        bytes_from_source=round(_median(s.source.bytes_out for s in samples)),
        bytes_to_mirror=round(_median(s.mirror.uploaded_bytes(sizes) for s in samples)),
        client_cpu_seconds=round(_median(s.tool_cpu_seconds for s in samples), 3),
        cpu_ms_per_request=round(_median(per_request), 3) if per_request else None,
        max_source_gets_per_blob=max(s.source.max_gets_per_blob for s in samples),
        blobs_not_read_once=max(s.blobs_not_read_once(unique) for s in samples) if first.phase == "cold" else None,
    )


def result_rows(run: ProfileRun) -> list[Row]:
    """The profile's rows in display order (scenarios with ``in_results`` only)."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for s in run.samples:
        if SCENARIOS[s.scenario].in_results:
            groups.setdefault((s.scenario, s.phase), []).append(s)
    order = {name: i for i, name in enumerate([*SCENARIO_ORDER, *SCENARIOS])}
    keys = sorted(groups, key=lambda k: (order[k[0]], PHASE_ORDER.index(k[1]) if k[1] in PHASE_ORDER else 9))
    unique = list(run.workload.blobs())
    return [row_of(groups[k], len(run.workload.deployments), run.sizes, unique) for k in keys]


def profile_info(config: Config, run: ProfileRun) -> ProfileInfo:
    """The profile as run: links, scale, the workload's size, its link floor, the one-change version."""
    w = run.workload
    one_change = None
    if run.changed is not None:
        version = run.changed.shipped[config.change_service]
        one_change = OneChange(
            service=config.change_service, version=version, new_bytes=run.changed.unique_bytes - w.unique_bytes
        )
    return ProfileInfo(
        **run.profile.model_dump(),
        deployments=len(w.deployments),
        unique_blobs=len(w.blobs()),
        unique_bytes=w.unique_bytes,
        fingerprint=w.fingerprint,
        content=w.content,
        link_floor=link_floor(run.profile, w.unique_bytes, index=w.has_index),
        one_change=one_change,
    )


def build_results(config: Config, runs: Sequence[ProfileRun], revision_at_start: str) -> Results:
    """The ``harness`` results document: machine, workload, profiles, rows, start-up and the targets."""
    extra = {}
    with contextlib.suppress(Exception):
        from harness.oracle import skopeo_version

        extra["skopeo_version"] = skopeo_version()
    summary = runs[0].workload.summary() if runs else {}
    doc = Results(
        benchmark="harness",
        command=config.command,
        timestamp=timestamp(),
        quick=config.quick,
        machine=machine_metadata(revision_at_start, **extra),
        workload=summary | {"repeats": config.repeats, "floor_parallelism": config.parallel},
        profiles=[profile_info(config, run) for run in runs],
        results=[row for run in runs for row in result_rows(run)],
        startup=next((run.startup for run in runs if run.startup is not None), None),
    )
    doc.targets = judge_targets(doc)
    return doc


def format_details(runs: Sequence[ProfileRun]) -> str:
    """What the results rows leave out: engine time, RSS, registries' CPU, connections, source blob GETs."""
    lines = ["details (medians):"]
    for run in runs:
        groups: dict[tuple[str, str], list[Sample]] = {}
        for s in run.samples:
            groups.setdefault((s.scenario, s.phase), []).append(s)
        for (scenario, phase), group in groups.items():

            def med(f: Callable[[Sample], float], group: list[Sample] = group) -> float:
                return _median(f(s) for s in group)

            rss = [s.peak_rss_mb for s in group if s.peak_rss_mb is not None]
            engine = [s.report["seconds"] for s in group if s.report]
            lines.append(
                f"  {run.profile.name:8s} {scenario:22s} {phase:4s} {med(lambda s: s.seconds):8.3f} s"
                + (f", engine {statistics.median(engine):.3f} s" if engine else "")
                + f", tool CPU {med(lambda s: s.tool_cpu_seconds):.2f} s"
                + f", registries CPU {med(lambda s: s.registry_cpu_seconds['source']):.2f} + "
                f"{med(lambda s: s.registry_cpu_seconds['mirror']):.2f} s"
                + f", connections {med(lambda s: s.source.connections):.0f} + {med(lambda s: s.mirror.connections):.0f}"
                + f", source blob GETs {med(lambda s: sum(s.source.blob_gets.values())):.0f}"
                + (f", RSS {max(rss):.0f} MB" if rss else "")
            )
    return "\n".join(lines) + "\n"


def log_phases(runs: Sequence[ProfileRun], progress: Callable[[str], None]) -> None:
    """Requests per class (last repeat of each scenario), on stderr: where the requests go."""
    progress("requests per class (last repeat), source | mirror:")
    for run in runs:
        last = {(s.scenario, s.phase): s for s in run.samples}
        for (scenario, phase), s in last.items():
            src = ", ".join(f"{k} {v}" for k, v in s.source.by_kind.items())
            dst = ", ".join(f"{k} {v}" for k, v in s.mirror.by_kind.items())
            progress(f"  {run.profile.name} {scenario} {phase}: {src} | {dst}")


def samples_document(doc: Results, runs: Sequence[ProfileRun]) -> dict[str, Any]:
    """Every sample (per-class request counts, connections, CPU, link counters, ocicopy report)."""
    return {
        "benchmark": "harness-samples",
        "command": doc.command,
        "timestamp": doc.timestamp,
        "profiles": [run.profile.model_dump(mode="json") for run in runs],
        "scenarios": {
            name: {f.name: getattr(s, f.name) for f in fields(s) if f.name in ("phases", "after", "description")}
            for name, s in SCENARIOS.items()
        },
        "samples": [
            {k: v for k, v in asdict(s).items() if k not in ("source", "mirror")}
            | {
                "seconds": round(s.seconds, 3),
                "source": s.source.as_json(run.sizes),
                "mirror": s.mirror.as_json(run.sizes),
            }
            for run in runs
            for s in run.samples
        ],
    }


def write_outputs(config: Config, doc: Results, runs: Sequence[ProfileRun], progress: Callable[[str], None]) -> None:
    """The results document, its ``-samples`` companion and the chart."""
    from benchmarks.chart import write_chart

    assert config.output is not None
    doc.write(config.output)
    samples_path = config.output.with_name(config.output.stem + "-samples.json")
    samples_path.write_text(json.dumps(samples_document(doc, runs), indent=2) + "\n")
    written = [config.output, samples_path]
    if config.chart is not None:
        write_chart(doc, config.chart)
        written.append(config.chart)
    progress("written: " + ", ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in written))
