"""Test rigs shared by ``tests/``, ``benchmarks/`` and ``tools/demo``: real CNCF distribution registries
(anonymous, htpasswd, token auth; access logs parsed), a token server, deterministic images, the skopeo oracle,
a scriptable fake registry (vendor quirks), a byte-level fault proxy and a WAN link emulator.

Deliberately independent of the ``ocicopy`` package under test: it talks to registries with plain
``httpx2`` and never imports ``ocicopy``. Not part of the installed package.
"""
