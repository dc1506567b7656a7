"""ocicopy: copy and mirror container images between OCI registries, byte-exact, streamed and verified.

Library use::

    import ocicopy

    async with ocicopy.Client(plain_http=["127.0.0.1:5000"]) as client:
        result = await client.copy("127.0.0.1:5000/app:1", "127.0.0.1:5000/mirror/app:1")
        print(result.pinned)

    ocicopy.copy("127.0.0.1:5000/app:1", "127.0.0.1:5000/mirror/app:1", plain_http=["127.0.0.1:5000"])

Either side may be an OCI image layout (``oci:PATH[:TAG]``); ``compress="zstd"`` recompresses gzip layers;
``referrers=True`` brings signatures, SBOMs and attestations along.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"  # kept equal to pyproject.toml by tests/test_cli.py (importlib.metadata costs ~50 ms at start)

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use (__getattr__)
    from ocicopy.client import Client, copy, mirror
    from ocicopy.credentials import Credentials
    from ocicopy.digest import Digest
    from ocicopy.errors import (
        AuthenticationError,
        ClosedClientError,
        CloudError,
        DigestMismatchError,
        InputError,
        LayoutError,
        ManifestError,
        NotFoundError,
        OcicopyError,
        PlanError,
        QuotaError,
        QuotaExhaustedError,
        RegistryError,
        SettingsError,
        TLSError,
        TransportError,
        UnknownReferenceError,
    )
    from ocicopy.layout import Layout
    from ocicopy.location import LayoutReference, Location, parse_layout_reference, parse_location, pinned
    from ocicopy.models import Descriptor, Manifest
    from ocicopy.options import (
        ClientOptions,
        EcrConfig,
        EcrRepositorySettings,
        Limits,
        Recompression,
        RegistryConfig,
        Timeouts,
    )
    from ocicopy.plan import BuildSpec, Deployment, MirrorSettings, Mode, Plan, load_plan, parse_plan
    from ocicopy.planner import build_key, mirror_tag
    from ocicopy.reference import Reference, parse_reference
    from ocicopy.report import DeploymentResult, MirrorAction, MirrorReport
    from ocicopy.repository import Endpoint
    from ocicopy.result import BlobAction, BlobResult, CopyAction, CopyResult, ManifestDescription
    from ocicopy.retry import RetryPolicy
    from ocicopy.store import Store
    from ocicopy.subjects import fallback_tag

#: Where each public name lives: ``import ocicopy`` stays cheap (no HTTP stack, no pydantic models) until one
#: is used. Kept equal to the imports above by tests/test_imports.py.
_LAZY: dict[str, str] = {
    "Client": "ocicopy.client",
    "mirror": "ocicopy.client",
    "copy": "ocicopy.client",
    "Credentials": "ocicopy.credentials",
    "Digest": "ocicopy.digest",
    "AuthenticationError": "ocicopy.errors",
    "DigestMismatchError": "ocicopy.errors",
    "InputError": "ocicopy.errors",
    "LayoutError": "ocicopy.errors",
    "ClosedClientError": "ocicopy.errors",
    "CloudError": "ocicopy.errors",
    "ManifestError": "ocicopy.errors",
    "NotFoundError": "ocicopy.errors",
    "OcicopyError": "ocicopy.errors",
    "PlanError": "ocicopy.errors",
    "QuotaError": "ocicopy.errors",
    "QuotaExhaustedError": "ocicopy.errors",
    "RegistryError": "ocicopy.errors",
    "SettingsError": "ocicopy.errors",
    "TLSError": "ocicopy.errors",
    "TransportError": "ocicopy.errors",
    "UnknownReferenceError": "ocicopy.errors",
    "Layout": "ocicopy.layout",
    "LayoutReference": "ocicopy.location",
    "Location": "ocicopy.location",
    "parse_layout_reference": "ocicopy.location",
    "parse_location": "ocicopy.location",
    "pinned": "ocicopy.location",
    "Descriptor": "ocicopy.models",
    "Manifest": "ocicopy.models",
    "ClientOptions": "ocicopy.options",
    "EcrConfig": "ocicopy.options",
    "EcrRepositorySettings": "ocicopy.options",
    "Limits": "ocicopy.options",
    "Recompression": "ocicopy.options",
    "RegistryConfig": "ocicopy.options",
    "Timeouts": "ocicopy.options",
    "BuildSpec": "ocicopy.plan",
    "Deployment": "ocicopy.plan",
    "MirrorSettings": "ocicopy.plan",
    "Mode": "ocicopy.plan",
    "Plan": "ocicopy.plan",
    "load_plan": "ocicopy.plan",
    "parse_plan": "ocicopy.plan",
    "build_key": "ocicopy.planner",
    "mirror_tag": "ocicopy.planner",
    "Reference": "ocicopy.reference",
    "parse_reference": "ocicopy.reference",
    "DeploymentResult": "ocicopy.report",
    "MirrorAction": "ocicopy.report",
    "MirrorReport": "ocicopy.report",
    "Endpoint": "ocicopy.repository",
    "BlobAction": "ocicopy.result",
    "BlobResult": "ocicopy.result",
    "CopyAction": "ocicopy.result",
    "CopyResult": "ocicopy.result",
    "ManifestDescription": "ocicopy.result",
    "RetryPolicy": "ocicopy.retry",
    "Store": "ocicopy.store",
    "fallback_tag": "ocicopy.subjects",
}

__all__ = [
    "AuthenticationError",
    "BlobAction",
    "BlobResult",
    "BuildSpec",
    "Client",
    "ClientOptions",
    "ClosedClientError",
    "CloudError",
    "CopyAction",
    "CopyResult",
    "Credentials",
    "Deployment",
    "DeploymentResult",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "EcrConfig",
    "EcrRepositorySettings",
    "Endpoint",
    "InputError",
    "Layout",
    "LayoutError",
    "LayoutReference",
    "Limits",
    "Location",
    "Manifest",
    "ManifestDescription",
    "ManifestError",
    "MirrorAction",
    "MirrorReport",
    "MirrorSettings",
    "Mode",
    "NotFoundError",
    "OcicopyError",
    "Plan",
    "PlanError",
    "QuotaError",
    "QuotaExhaustedError",
    "Recompression",
    "Reference",
    "RegistryConfig",
    "RegistryError",
    "RetryPolicy",
    "SettingsError",
    "Store",
    "TLSError",
    "Timeouts",
    "TransportError",
    "UnknownReferenceError",
    "__version__",
    "build_key",
    "copy",
    "fallback_tag",
    "load_plan",
    "mirror",
    "mirror_tag",
    "parse_layout_reference",
    "parse_location",
    "parse_plan",
    "parse_reference",
    "pinned",
]


if not TYPE_CHECKING:  # hidden from type checkers, which would otherwise accept any ``ocicopy.<name>``

    def __getattr__(name: str) -> object:
        """PEP 562: import the module holding ``name`` on first access, then keep the value here."""
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
