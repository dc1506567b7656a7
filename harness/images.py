"""Deterministic test images, and seeding/reading them with plain synchronous httpx2.

Manifests and configs are serialised with ``json.dumps(indent=3) + "\\n"``: deterministic, but not a
form any re-serialiser produces by chance, so a copier that re-encodes a manifest changes its
digest and byte-exactness tests catch it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

import httpx2

if TYPE_CHECKING:
    from harness.registry import RegistryServer

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
EMPTY_JSON = b"{}"

Media = Literal["oci", "docker"]
Platform = tuple[str, str, str | None]  # (os, architecture, variant)


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dump(obj: Any) -> bytes:
    """The harness's deliberately non-canonical deterministic JSON encoding."""
    return (json.dumps(obj, indent=3) + "\n").encode()


# --------------------------------------------------------------------------- layers


class Layer(bytes):
    """A gzip-compressed tar blob; ``bytes`` with ``digest`` and ``diff_id`` attributes."""

    digest: str
    diff_id: str

    def __new__(cls, blob: bytes, diff_id: str) -> Layer:
        obj = super().__new__(cls, blob)
        obj.digest = sha256(blob)
        obj.diff_id = diff_id
        return obj


def layer(seed: int, size: int, *, compresslevel: int = 1) -> Layer:
    """Deterministic ``tar+gzip`` holding one file of ``size`` pseudo-random (incompressible) bytes."""
    payload = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(f"ocitest/seed-{seed}.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue()
    return Layer(gzip.compress(raw, compresslevel=compresslevel, mtime=0), sha256(raw))


def diff_id(blob: bytes) -> str:
    """Uncompressed digest of a layer blob (gzip is decompressed, anything else taken as is)."""
    if isinstance(blob, Layer):
        return blob.diff_id
    return sha256(gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob)


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """A content descriptor ``{mediaType, digest, size, ...extra}`` for ``data``."""
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


# --------------------------------------------------------------------------- manifests


class _OneManifest:
    """What an image and an artifact share: a manifest with a config and layers, no children."""

    manifest: bytes
    config: bytes
    layers: list[bytes]

    @property
    def digest(self) -> str:
        """Digest of the exact manifest bytes."""
        return sha256(self.manifest)

    @property
    def children(self) -> list[Image | Artifact]:
        """No child manifests."""
        return []

    def blobs(self) -> dict[str, bytes]:
        """Config and layer blobs by digest."""
        return {sha256(b): b for b in [self.config, *self.layers]}


@dataclass(frozen=True)
class Image(_OneManifest):
    """A single-platform image manifest (OCI or Docker schema 2) with its config and layers."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: list[bytes]
    platform: Platform = ("linux", "amd64", None)


@dataclass(frozen=True)
class Artifact(_OneManifest):
    """An OCI 1.1 artifact: image manifest with ``artifactType``, empty config, optional ``subject``."""

    manifest: bytes
    artifact_type: str
    layers: list[bytes]
    subject: dict[str, Any] | None = None
    media_type: str = OCI_MANIFEST
    config: bytes = EMPTY_JSON


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list; ``children`` are the referenced manifests."""

    manifest: bytes
    media_type: str
    children: list[Image | Artifact] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """Digest of the exact manifest bytes."""
        return sha256(self.manifest)

    @property
    def images(self) -> list[Image]:
        """The child images (artifacts excluded)."""
        return [c for c in self.children if isinstance(c, Image)]

    def blobs(self) -> dict[str, bytes]:
        """All blobs of all children by digest."""
        out: dict[str, bytes] = {}
        for child in self.children:
            out.update(child.blobs())
        return out


Manifest = Image | Index | Artifact


def _platform_json(platform: Platform) -> dict[str, str]:
    os_, arch, variant = platform
    out = {"architecture": arch, "os": os_}
    if variant:
        out["variant"] = variant
    return out


def make_image(
    layers: Sequence[bytes],
    *,
    media: Media = "oci",
    platform: Platform = ("linux", "amd64", None),
    annotations: dict[str, str] | None = None,
    config_extra: dict[str, Any] | None = None,
) -> Image:
    """Build an image manifest over ``layers``; the config carries platform and ``rootfs.diff_ids``."""
    oci = media == "oci"
    config_obj: dict[str, Any] = {
        **_platform_json(platform),
        "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id(b) for b in layers]},
        **(config_extra or {}),
    }
    config = dump(config_obj)
    layer_type = OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
        "config": descriptor(OCI_CONFIG if oci else DOCKER_CONFIG, config),
        "layers": [descriptor(layer_type, b) for b in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Image(dump(manifest), manifest["mediaType"], config, list(layers), platform)


def make_index(
    images: Sequence[Image | Artifact], *, media: Media = "oci", annotations: dict[str, str] | None = None
) -> Index:
    """Build an OCI index / Docker manifest list; image entries carry their ``platform``."""
    entries = []
    for child in images:
        extra: dict[str, Any] = {}
        if isinstance(child, Image):
            extra["platform"] = _platform_json(child.platform)
        elif media == "oci":
            extra["artifactType"] = child.artifact_type
        entries.append(descriptor(child.media_type, child.manifest, **extra))
    media_type = OCI_INDEX if media == "oci" else DOCKER_LIST
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    if annotations:
        index["annotations"] = dict(annotations)
    return Index(dump(index), media_type, list(images))


def make_artifact(
    payload: bytes = b"ocitest artifact payload\n",
    *,
    artifact_type: str = "application/vnd.ocitest.artifact.v1",
    layer_media_type: str = "application/vnd.ocitest.payload.v1",
    subject: Manifest | dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> Artifact:
    """Build an OCI 1.1 artifact manifest with one blob; ``subject`` may be a manifest or a descriptor."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, EMPTY_JSON),
        "layers": [descriptor(layer_media_type, payload)],
    }
    subject_desc = None
    if subject is not None:
        subject_desc = dict(subject) if isinstance(subject, dict) else descriptor(subject.media_type, subject.manifest)
        manifest["subject"] = subject_desc
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Artifact(dump(manifest), artifact_type, [payload], subject_desc)


# --------------------------------------------------------------------------- registry I/O

#: ``None`` | ``(user, password)`` | ``callable(scopes) -> bearer token``
Auth = tuple[str, str] | Callable[[list[str]], str] | None


@dataclass(frozen=True)
class Fetched:
    """A manifest as served: exact bytes, ``Content-Type`` and ``Docker-Content-Digest``."""

    content: bytes
    media_type: str
    digest: str | None


class RegistryClient:
    """Minimal synchronous distribution API client for seeding and reading back (not the code under test)."""

    def __init__(self, target: RegistryServer | str, repo: str, *, auth: Auth = None, actions: str = "pull,push"):
        url = target if isinstance(target, str) else target.url
        self.base = url.rstrip("/")
        self.repo = repo
        if auth is None and not isinstance(target, str):
            auth = _default_auth(target)
        headers = {}
        if callable(auth):
            headers["Authorization"] = "Bearer " + auth([f"repository:{repo}:{actions}"])
        self.http = httpx2.Client(
            base_url=self.base,
            auth=auth if isinstance(auth, tuple) else None,
            headers=headers,
            timeout=60,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _check(self, resp: httpx2.Response, *expected: int) -> httpx2.Response:
        if resp.status_code not in expected:
            raise RuntimeError(
                f"{resp.request.method} {resp.request.url} -> {resp.status_code} (expected {expected}): {resp.text}"
            )
        return resp

    def blob_exists(self, digest: str) -> bool:
        """``HEAD`` the blob."""
        return self.http.head(f"/v2/{self.repo}/blobs/{digest}").status_code == 200

    def push_blob(self, data: bytes) -> str:
        """Monolithic upload (``POST`` then ``PUT ?digest=``) unless the blob exists; returns its digest."""
        digest = sha256(data)
        if self.blob_exists(digest):
            return digest
        start = self._check(self.http.post(f"/v2/{self.repo}/blobs/uploads/"), 202)
        location = httpx2.URL(urljoin(self.base + "/", start.headers["Location"]))
        put = self.http.put(
            location.copy_add_param("digest", digest),  # keep the session's own query (_state)
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(put, 201)
        return digest

    def push_manifest(self, ref: str, content: bytes, media_type: str) -> str:
        """``PUT`` exact manifest bytes at ``ref``; verifies the registry's digest."""
        resp = self.http.put(f"/v2/{self.repo}/manifests/{ref}", content=content, headers={"Content-Type": media_type})
        self._check(resp, 201)
        if resp.headers.get("Docker-Content-Digest") not in (None, sha256(content)):
            raise RuntimeError(f"registry digest {resp.headers['Docker-Content-Digest']} != {sha256(content)}")
        return sha256(content)

    def push(self, ref: str, obj: Manifest) -> str:
        """Push blobs, children (by digest) and then ``obj`` at ``ref``; returns ``obj.digest``."""
        if isinstance(obj, Index):
            for child in obj.children:
                self.push(child.digest, child)
        else:
            for data in obj.blobs().values():
                self.push_blob(data)
        return self.push_manifest(ref, obj.manifest, obj.media_type)

    def get_manifest(self, ref: str, accept: Iterable[str] = MANIFEST_TYPES) -> Fetched:
        """``GET`` a manifest with its exact bytes."""
        resp = self._check(
            self.http.get(f"/v2/{self.repo}/manifests/{ref}", headers={"Accept": ", ".join(accept)}), 200
        )
        return Fetched(resp.content, resp.headers.get("Content-Type", ""), resp.headers.get("Docker-Content-Digest"))

    def get_blob(self, digest: str) -> bytes:
        """``GET`` a blob (follows redirects)."""
        return self._check(self.http.get(f"/v2/{self.repo}/blobs/{digest}", follow_redirects=True), 200).content

    def tags(self) -> list[str]:
        """Tag list of the repository (empty if unknown)."""
        resp = self.http.get(f"/v2/{self.repo}/tags/list")
        return [] if resp.status_code == 404 else list(self._check(resp, 200).json().get("tags") or [])

    def delete_manifest(self, digest: str) -> None:
        """``DELETE`` a manifest by digest (storage.delete is enabled by the harness)."""
        self._check(self.http.delete(f"/v2/{self.repo}/manifests/{digest}"), 202)


def _default_auth(server: RegistryServer) -> Auth:
    if server.auth == "basic":
        return (server.username, server.password)
    if server.auth == "token" and server.token_server is not None:
        return server.token_server.mint
    return None


def push(target: RegistryServer | str, repo: str, ref: str, obj: Manifest, *, auth: Auth = None) -> str:
    """Seed ``obj`` (image, index or artifact) into ``repo`` at tag/digest ``ref``; returns its digest.

    ``auth=None`` with a :class:`RegistryServer` uses its own credentials (basic) or its token server's
    ``mint`` (token); with a URL string it means anonymous.
    """
    with RegistryClient(target, repo, auth=auth) as client:
        return client.push(ref, obj)


def get_manifest(target: RegistryServer | str, repo: str, ref: str, *, auth: Auth = None) -> Fetched:
    """Read a manifest's exact bytes back."""
    with RegistryClient(target, repo, auth=auth, actions="pull") as client:
        return client.get_manifest(ref)


def get_blob(target: RegistryServer | str, repo: str, digest: str, *, auth: Auth = None) -> bytes:
    """Read a blob back."""
    with RegistryClient(target, repo, auth=auth, actions="pull") as client:
        return client.get_blob(digest)
