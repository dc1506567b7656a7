"""Test harness: real CNCF distribution registries, a token server, deterministic images, skopeo oracle.

The harness is deliberately independent of the ``ocicopy`` package under test: it talks to the
registries with plain synchronous ``httpx2`` and never imports ``ocicopy``.
"""
