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

__version__ = "0.2.0"  # kept equal to pyproject.toml by tests/test_cli.py (importlib.metadata costs ~50 ms at start)

from ocicopy.client import Client, copy
from ocicopy.credentials import Credentials
from ocicopy.digest import Digest
from ocicopy.errors import (
    AuthenticationError,
    DigestMismatchError,
    InputError,
    ManifestError,
    NotFoundError,
    OcicopyError,
    PlanError,
    RegistryError,
    TransportError,
)
from ocicopy.layout import Layout
from ocicopy.location import LayoutReference, Location, parse_layout_reference, parse_location, pinned
from ocicopy.models import Descriptor, Manifest
from ocicopy.options import ClientOptions, Limits, Recompression, RegistryConfig, Timeouts
from ocicopy.plan import BuildSpec, Deployment, MirrorSettings, Mode, Plan, load_plan, parse_plan
from ocicopy.planner import build_key, mirror_tag
from ocicopy.reference import Reference, parse_reference
from ocicopy.report import DeploymentResult, MirrorAction, MirrorReport
from ocicopy.repository import Endpoint
from ocicopy.result import BlobAction, BlobResult, CopyAction, CopyResult
from ocicopy.retry import RetryPolicy
from ocicopy.store import Store
from ocicopy.subjects import fallback_tag

__all__ = [
    "AuthenticationError",
    "BlobAction",
    "BlobResult",
    "BuildSpec",
    "Client",
    "ClientOptions",
    "CopyAction",
    "CopyResult",
    "Credentials",
    "Deployment",
    "DeploymentResult",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "Endpoint",
    "InputError",
    "Layout",
    "LayoutReference",
    "Limits",
    "Location",
    "Manifest",
    "ManifestError",
    "MirrorAction",
    "MirrorReport",
    "MirrorSettings",
    "Mode",
    "NotFoundError",
    "OcicopyError",
    "Plan",
    "PlanError",
    "Recompression",
    "Reference",
    "RegistryConfig",
    "RegistryError",
    "RetryPolicy",
    "Store",
    "Timeouts",
    "TransportError",
    "__version__",
    "build_key",
    "copy",
    "fallback_tag",
    "load_plan",
    "mirror_tag",
    "parse_layout_reference",
    "parse_location",
    "parse_plan",
    "parse_reference",
    "pinned",
]
