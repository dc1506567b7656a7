"""ocicopy's benchmarks: ``python -m benchmarks run|table|chart|compare|startup|compression|blob-throughput``.

Modules: :mod:`~benchmarks.cli` (the command line), :mod:`~benchmarks.results` (the typed, versioned results
document), :mod:`~benchmarks.workload`, :mod:`~benchmarks.network` (profiles, the link floor),
:mod:`~benchmarks.traffic` (access logs), :mod:`~benchmarks.scenarios` (the registry and the built-ins),
:mod:`~benchmarks.runners` (the tools), :mod:`~benchmarks.measure` (running the harness), :mod:`~benchmarks.targets`,
:mod:`~benchmarks.startup`, :mod:`~benchmarks.chart`, :mod:`~benchmarks.compare`, :mod:`~benchmarks.procs`,
:mod:`~benchmarks.engine` (the only user of ocicopy's internals), :mod:`~benchmarks.blob_throughput`,
:mod:`~benchmarks.compression`; :mod:`~benchmarks.mirror` keeps the older entry point. See ``benchmarks/README.md``.
"""
