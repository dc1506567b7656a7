"""skopeo as an independent byte-exactness oracle.

References may be given as ``docker://host/repo:tag``, ``host/repo@sha256:...`` or built with
:func:`docker_ref`. Credentials are ``(user, password)``, a bearer token string, or None (anonymous,
``--no-creds``: the user's auth files are never consulted). Plain-http loopback registries need
``tls_verify=False`` (the default). Every failure raises :class:`SkopeoError` with skopeo's stderr.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.registry import RegistryServer

Creds = tuple[str, str] | str | None
TIMEOUT = 300


class SkopeoError(RuntimeError):
    """skopeo is missing or a skopeo command failed."""


def skopeo_binary() -> str:
    """Path of skopeo; raises :class:`SkopeoError` (tests fail, never skip) when it is missing."""
    path = shutil.which("skopeo")
    if path is None:
        raise SkopeoError("skopeo not found on PATH; install the Debian package `skopeo`")
    return path


def skopeo_version() -> str:
    """e.g. ``1.9.3``."""
    return _run(["--version"]).decode().split()[-1]


def docker_ref(registry: RegistryServer | str, repo: str, ref: str = "latest") -> str:
    """``docker://host/repo:tag`` or ``docker://host/repo@digest`` for a server or ``host:port``."""
    host = registry if isinstance(registry, str) else registry.host
    host = host.removeprefix("http://").removeprefix("https://")
    sep = "@" if ":" in ref else ":"
    return f"docker://{host}/{repo}{sep}{ref}"


def _transport(ref: str) -> str:
    return ref if "://" in ref or ref.startswith(("oci:", "dir:", "oci-archive:")) else f"docker://{ref}"


def _cred_args(creds: Creds, prefix: str = "") -> list[str]:
    if creds is None:
        return [f"--{prefix}no-creds"]
    if isinstance(creds, str):
        return [f"--{prefix}registry-token={creds}"]
    return [f"--{prefix}creds={creds[0]}:{creds[1]}"]


def _run(args: list[str]) -> bytes:
    cmd = [skopeo_binary(), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise SkopeoError(f"skopeo timed out after {TIMEOUT}s: {' '.join(args)}") from exc
    if proc.returncode != 0:
        raise SkopeoError(
            f"skopeo {' '.join(_redact(args))} failed (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def _redact(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] + "=***" if "creds=" in a or "token=" in a else a for a in args]


def skopeo_inspect_raw(ref: str, *, tls_verify: bool = False, creds: Creds = None) -> bytes:
    """Exact manifest bytes as skopeo fetches them (``skopeo inspect --raw``)."""
    return _run(["inspect", "--raw", f"--tls-verify={str(tls_verify).lower()}", *_cred_args(creds), _transport(ref)])


def skopeo_inspect(ref: str, *, tls_verify: bool = False, creds: Creds = None) -> dict[str, Any]:
    """What ``skopeo inspect`` says of an image (read from its config): Architecture, Os, Created, Labels..."""
    out = _run(["inspect", f"--tls-verify={str(tls_verify).lower()}", *_cred_args(creds), _transport(ref)])
    return dict(json.loads(out))


def skopeo_digest(ref: str, *, tls_verify: bool = False, creds: Creds = None) -> str:
    """``sha256:`` digest of the raw manifest skopeo fetches."""
    return "sha256:" + hashlib.sha256(skopeo_inspect_raw(ref, tls_verify=tls_verify, creds=creds)).hexdigest()


def skopeo_list_tags(repo_ref: str, *, tls_verify: bool = False, creds: Creds = None) -> list[str]:
    """Tags of ``docker://host/repo`` (``skopeo list-tags``)."""
    out = _run(["list-tags", f"--tls-verify={str(tls_verify).lower()}", *_cred_args(creds), _transport(repo_ref)])
    return list(json.loads(out).get("Tags") or [])


def skopeo_copy(
    src: str,
    dst: str,
    *,
    src_creds: Creds = None,
    dst_creds: Creds = None,
    tls_verify: bool = False,
    all_images: bool = True,
    preserve_digests: bool = True,
    extra_args: tuple[str, ...] = (),
) -> None:
    """``skopeo copy`` (``--all --preserve-digests`` by default; signature policy not enforced)."""
    tls = str(tls_verify).lower()
    args = ["--insecure-policy", "copy", "--quiet", f"--src-tls-verify={tls}", f"--dest-tls-verify={tls}"]
    args += _cred_args(src_creds, "src-") + _cred_args(dst_creds, "dest-")
    if all_images:
        args.append("--all")
    if preserve_digests:
        args.append("--preserve-digests")
    _run([*args, *extra_args, _transport(src), _transport(dst)])
