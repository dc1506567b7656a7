"""TLS trust against real https registries whose certificates come from a CA made here.

What docker and podman users expect: a private CA is trusted for its host through ``RegistryConfig.ca_file``,
``RegistryConfig.cert_dir`` (skopeo's ``--src-cert-dir``), a certs.d directory, or ``SSL_CERT_FILE``; a
registry that requires a client certificate gets the ``NAME.cert`` + ``NAME.key`` pair of its directory; a
redirect to another host gets none of the registry's trust; every failure says which host and what fixes it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import images as im
from harness.registry import CertAuthority, RegistryServer, RegistryTLS, make_ca, start_registry
from harness.tokenserver import TokenServer, start_token_server
from ocicopy import Client, ClientOptions, CopyAction, InputError, RegistryError, TLSError, TransportError, tls
from ocicopy.options import DEFAULT_CERT_DIR_ROOTS, RegistryConfig
from ocicopy.retry import RetryPolicy

pytestmark = pytest.mark.anyio

_seeds = itertools.count(7000)
MakeRepo = Callable[[str], str]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"), "ocitest private CA")


@pytest.fixture(scope="module")
def client_ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("client-ca"), "ocitest client CA")


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority) -> Iterator[RegistryServer]:
    """An https registry whose certificate the system store does not trust."""
    with start_registry(tmp_path_factory.mktemp("tls-registry"), tls=RegistryTLS(ca)) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_registry(
    tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority, client_ca: CertAuthority
) -> Iterator[RegistryServer]:
    """An https registry that requires a client certificate issued by ``client_ca``."""
    with start_registry(tmp_path_factory.mktemp("mtls-registry"), tls=RegistryTLS(ca, client_ca)) as server:
        yield server


def options(
    *plain: RegistryServer, roots: tuple[str, ...] = (), registries: dict[str, RegistryConfig] | None = None
) -> ClientOptions:
    """No docker config, no certs.d but ``roots``, one attempt (TLS failures are not retried anyway)."""
    return ClientOptions(
        use_docker_config=False,
        plain_http=frozenset(s.host for s in plain),
        cert_dir_roots=roots,
        registries=registries or {},
        retry=RetryPolicy(attempts=1),
    )


def seed(registry: RegistryServer, repo: str) -> tuple[str, str]:
    """An image pushed to the plain registry: its reference and digest."""
    image = im.make_image([im.layer(next(_seeds), 1200), im.layer(next(_seeds), 900)])
    digest = im.push(registry, repo, "v1", image)
    return f"{registry.host}/{repo}:v1", digest


async def copy(opts: ClientOptions, src: str, dst: str) -> Any:
    async with Client(opts) as client:
        return await client.copy(src, dst)


def cert_dir(tmp_path: Path, *files: Path, name: str = "certs") -> Path:
    """A certs.d-style directory holding copies of ``files`` (``.crt``, ``.cert``, ``.key`` as named)."""
    directory = tmp_path / name
    directory.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy(f, directory / f.name)
    return directory


def as_ca(tmp_path: Path, ca: CertAuthority) -> Path:
    """The CA's certificate as ``ca.crt`` (the certs.d name)."""
    path = tmp_path / "ca.crt"
    shutil.copy(ca.cert_path, path)
    return path


def client_pair(tmp_path: Path, issuer: CertAuthority, stem: str = "client") -> tuple[Path, Path]:
    """A client certificate issued by ``issuer`` as ``stem.cert`` + ``stem.key`` (docker's names)."""
    cert, key = issuer.issue(tmp_path / f"issued-{stem}", stem, client=True)
    return cert.rename(cert.with_suffix(".cert")), key


# --------------------------------------------------------------------------- an untrusted CA


async def test_an_untrusted_private_ca_fails_naming_the_host_and_the_ca_options(
    registry: RegistryServer, tls_registry: RegistryServer, unique_repo: str, tmp_path: Path
) -> None:
    src, _ = seed(registry, unique_repo)
    root = tmp_path / "certs.d"
    since = tls_registry.mark()
    with pytest.raises(TLSError) as push:
        await copy(options(registry, roots=(str(root),)), src, f"{tls_registry.host}/{unique_repo}:v1")
    with pytest.raises(TLSError) as pull:
        await copy(options(registry), f"{tls_registry.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:w")
    for message in (str(push.value), str(pull.value)):
        assert f"the TLS certificate of {tls_registry.host} is not trusted" in message
        assert "unable to get local issuer certificate" in message
        assert "--src-cert-dir/--dest-cert-dir DIR (or --cert-dir DIR)" in message
        assert f"set cert_dir or ca_file for {tls_registry.host} in a plan's registries" in message
        assert "plain" not in message.lower()  # never plain HTTP for an https registry
    assert f"{root}/{tls_registry.host}/" in str(push.value)  # the certs.d directory it would read
    assert tls_registry.requests(since) == []  # no request got through


async def test_plain_http_is_suggested_only_to_a_host_that_answered_tls_in_plain_text(
    registry: RegistryServer, tls_registry: RegistryServer
) -> None:
    async with Client(options()) as client:
        with pytest.raises(TransportError) as info:
            await client.digest(f"{registry.host}/anything:v1")
    message = str(info.value)
    assert f"{registry.host} did not answer TLS (wrong version number)" in message
    assert f"mark it with --plain-http {registry.host}" in message
    async with Client(options(tls_registry)) as client:  # the reverse: --plain-http to an https registry
        with pytest.raises(RegistryError, match=f"{tls_registry.host} speaks https: drop --plain-http"):
            await client.digest(f"{tls_registry.host}/anything:v1")


# --------------------------------------------------------------------------- ways to trust it


async def test_ca_file_trusts_the_private_ca_for_its_host_both_ways(
    registry: RegistryServer, tls_registry: RegistryServer, ca: CertAuthority, unique_repo: str
) -> None:
    src, digest = seed(registry, unique_repo)
    opts = options(registry, registries={tls_registry.host: RegistryConfig(ca_file=str(ca.cert_path))})
    pushed = await copy(opts, src, f"{tls_registry.host}/{unique_repo}:v1")
    pulled = await copy(opts, f"{tls_registry.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:back")
    assert pushed.action is CopyAction.COPIED and pulled.action is CopyAction.COPIED
    assert str(pushed.digest) == str(pulled.digest) == digest


async def test_cert_dir_trusts_the_private_ca(
    registry: RegistryServer, tls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    src, digest = seed(registry, unique_repo)
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca))
    opts = options(registry, registries={tls_registry.host: RegistryConfig(cert_dir=str(directory))})
    result = await copy(opts, src, f"{tls_registry.host}/{unique_repo}:v1")
    assert result.action is CopyAction.COPIED and str(result.digest) == digest


async def test_a_certs_d_directory_under_a_root_trusts_the_private_ca(
    registry: RegistryServer, tls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    src, digest = seed(registry, unique_repo)
    root = tmp_path / "containers" / "certs.d"
    cert_dir(root, as_ca(tmp_path, ca), name=tls_registry.host)  # ROOT/HOST:PORT/ca.crt, the default layout
    opts = options(registry, roots=(str(tmp_path / "nowhere"), str(root)))
    result = await copy(opts, src, f"{tls_registry.host}/{unique_repo}:v1")
    assert result.action is CopyAction.COPIED and str(result.digest) == digest


async def test_cert_dir_replaces_the_certs_d_directories_of_its_host(
    registry: RegistryServer, tls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    src, _ = seed(registry, unique_repo)
    root = tmp_path / "certs.d"
    cert_dir(root, as_ca(tmp_path, ca), name=tls_registry.host)
    empty = cert_dir(tmp_path, name="empty")
    opts = options(registry, roots=(str(root),), registries={tls_registry.host: RegistryConfig(cert_dir=str(empty))})
    with pytest.raises(TransportError, match="is not trusted"):
        await copy(opts, src, f"{tls_registry.host}/{unique_repo}:v1")


def test_ssl_cert_file_trusts_the_private_ca(
    registry: RegistryServer, tls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    """The CLI in a fresh process (the test's environment stays clean): SSL_CERT_FILE replaces the system store."""
    src, digest = seed(registry, unique_repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSL_CERT_", "DOCKER_", "XDG_"))}
    env["HOME"] = str(tmp_path)  # no ~/.config/containers/certs.d of the machine's user
    argv = [sys.executable, "-m", "ocicopy", "copy", "--plain-http", registry.host, "--no-docker-config", "-q"]
    argv += [src, f"{tls_registry.host}/{unique_repo}:v1"]
    refused = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert refused.returncode == 1, refused.stderr
    assert f"the TLS certificate of {tls_registry.host} is not trusted" in refused.stderr
    trusted = subprocess.run(
        argv, capture_output=True, text=True, env={**env, "SSL_CERT_FILE": str(ca.cert_path)}, timeout=120, check=False
    )
    assert trusted.returncode == 0, trusted.stderr
    digest_run = subprocess.run(
        [*argv[:3], "digest", f"{tls_registry.host}/{unique_repo}:v1"],
        capture_output=True,
        text=True,
        env={**env, "SSL_CERT_FILE": str(ca.cert_path)},
        timeout=120,
        check=False,
    )
    assert digest_run.stdout.strip() == digest, digest_run.stderr


# --------------------------------------------------------------------------- the command line and plans


def cli(tmp_path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ocicopy ARGS`` with an empty HOME (no certs.d or docker config of the machine's user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSL_CERT_", "DOCKER_", "XDG_"))}
    env["HOME"] = str(tmp_path)
    argv = [sys.executable, "-m", "ocicopy", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=120, check=False)


def test_cert_dir_flags_trust_each_registry_with_its_own_directory(
    registry: RegistryServer,
    tls_registry: RegistryServer,
    mtls_registry: RegistryServer,
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    """skopeo's flags: --dest-cert-dir for the push, --src-cert-dir and --dest-cert-dir for two https hosts
    (the mutual-TLS one gets the client certificate of its own directory), --cert-dir for the readers."""
    src, digest = seed(registry, unique_repo)
    tls_dir = cert_dir(tmp_path, as_ca(tmp_path, ca), name="tls")
    mtls_dir = cert_dir(tmp_path, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca), name="mtls")
    on_tls, on_mtls = f"{tls_registry.host}/{unique_repo}:v1", f"{mtls_registry.host}/{unique_repo}:v1"
    plain = ["--plain-http", registry.host, "--no-docker-config"]

    refused = cli(tmp_path, "copy", *plain, "-q", src, on_tls)
    assert refused.returncode == 1 and f"the TLS certificate of {tls_registry.host} is not trusted" in refused.stderr
    pushed = cli(tmp_path, "copy", *plain, "-q", "--dest-cert-dir", str(tls_dir), src, on_tls)
    assert pushed.returncode == 0, pushed.stderr
    across = cli(tmp_path, "copy", *plain, "-q", "--src-cert-dir", str(tls_dir), "--dest-cert-dir", str(mtls_dir),
                 on_tls, on_mtls)  # fmt: skip
    assert across.returncode == 0, across.stderr
    wrong = cli(tmp_path, "copy", *plain, "-q", "--src-cert-dir", str(mtls_dir), "--dest-cert-dir", str(tls_dir),
                on_tls, on_mtls)  # fmt: skip
    assert wrong.returncode == 1 and f"{mtls_registry.host} refused the TLS connection" in wrong.stderr

    for verb in ("digest", "lookup"):
        found = cli(tmp_path, verb, "--no-docker-config", "--cert-dir", str(mtls_dir), on_mtls)
        assert (found.returncode, found.stdout.strip()) == (0, digest), found.stderr
    shown = cli(tmp_path, "inspect", "--no-docker-config", "--raw", "--cert-dir", str(tls_dir), on_tls)
    assert shown.returncode == 0 and im.sha256(shown.stdout.encode()) == digest, shown.stderr
    untrusted = cli(tmp_path, "digest", "--no-docker-config", on_mtls)
    assert untrusted.returncode == 1 and "--src-cert-dir/--dest-cert-dir DIR (or --cert-dir DIR)" in untrusted.stderr


def test_a_plans_cert_dir_and_ca_file_are_read_beside_the_plan(
    registry: RegistryServer,
    tls_registry: RegistryServer,
    mtls_registry: RegistryServer,
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    """Relative paths in a plan's registries are the plan's directory's, whatever the working directory."""
    import json

    src, digest = seed(registry, unique_repo)
    plans = tmp_path / "plans"
    cert_dir(plans, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca), name="mtls-certs")
    shutil.copy(ca.cert_path, plans / "private-ca.pem")
    deployments = [{"service": "api", "environment": "prod", "image": src}]
    plan = {
        "mirror": {"registry": mtls_registry.host, "prefix": unique_repo, "mode": "service"},
        "registries": {
            registry.host: {"plain_http": True},
            mtls_registry.host: {"cert_dir": "mtls-certs"},
            tls_registry.host: {"ca_file": "private-ca.pem"},
        },
        "deployments": deployments,
    }
    (plans / "plan.json").write_text(json.dumps(plan))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mirrored = cli(tmp_path, "mirror", "--no-docker-config", "--json", "-", str(plans / "plan.json"), cwd=elsewhere)
    assert mirrored.returncode == 0, mirrored.stderr
    report = json.loads(mirrored.stdout)
    assert [d["source_digest"] for d in report["deployments"]] == [digest]

    assert [d["pinned"] for d in report["deployments"]] == [f"{mtls_registry.host}/{unique_repo}/api@{digest}"]

    plan["mirror"] = {**plan["mirror"], "registry": tls_registry.host}  # type: ignore[dict-item]
    (plans / "plan.json").write_text(json.dumps(plan))
    again = cli(tmp_path, "mirror", "--no-docker-config", "--json", "-", str(plans / "plan.json"), cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    assert [d["pinned"] for d in json.loads(again.stdout)["deployments"]] == [
        f"{tls_registry.host}/{unique_repo}/api@{digest}"
    ]


# --------------------------------------------------------------------------- client certificates


async def test_a_registry_that_requires_a_client_certificate_refuses_a_client_without_one(
    registry: RegistryServer, mtls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    src, _ = seed(registry, unique_repo)
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca))
    opts = options(registry, registries={mtls_registry.host: RegistryConfig(cert_dir=str(directory))})
    with pytest.raises(TransportError) as info:
        await copy(opts, src, f"{mtls_registry.host}/{unique_repo}:v1")
    message = str(info.value)
    assert f"{mtls_registry.host} refused the TLS connection (sslv3 alert bad certificate)" in message
    assert "it may require a client certificate, a NAME.cert + NAME.key pair in" in message
    assert "plain" not in message.lower()


async def test_a_client_certificate_in_the_cert_dir_is_presented_and_accepted(
    registry: RegistryServer,
    mtls_registry: RegistryServer,
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    src, digest = seed(registry, unique_repo)
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca))
    opts = options(registry, registries={mtls_registry.host: RegistryConfig(cert_dir=str(directory))})
    pushed = await copy(opts, src, f"{mtls_registry.host}/{unique_repo}:v1")
    pulled = await copy(opts, f"{mtls_registry.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:back")
    assert str(pushed.digest) == str(pulled.digest) == digest


async def test_ca_file_adds_to_a_certs_d_directory_holding_the_client_certificate(
    registry: RegistryServer,
    mtls_registry: RegistryServer,
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    src, digest = seed(registry, unique_repo)
    root = tmp_path / "docker" / "certs.d"
    cert_dir(root, *client_pair(tmp_path, client_ca), name=mtls_registry.host)
    opts = options(
        registry, roots=(str(root),), registries={mtls_registry.host: RegistryConfig(ca_file=str(ca.cert_path))}
    )
    result = await copy(opts, src, f"{mtls_registry.host}/{unique_repo}:v1")
    assert str(result.digest) == digest


async def test_a_client_certificate_from_another_ca_is_refused_by_name(
    registry: RegistryServer, mtls_registry: RegistryServer, ca: CertAuthority, unique_repo: str, tmp_path: Path
) -> None:
    src, _ = seed(registry, unique_repo)
    cert, key = client_pair(tmp_path, make_ca(tmp_path / "stranger", "stranger CA"))
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), cert, key)
    opts = options(registry, registries={mtls_registry.host: RegistryConfig(cert_dir=str(directory))})
    with pytest.raises(TransportError) as info:
        await copy(opts, src, f"{mtls_registry.host}/{unique_repo}:v1")
    # Go's server resets the connection about one time in three before its alert arrives (TLS 1.3): either
    # way the message names the certificate
    message = str(info.value)
    assert (
        f"{mtls_registry.host} refused the client certificate {directory / 'client.cert'}" in message
        or f"if {mtls_registry.host} refused the client certificate {directory / 'client.cert'}, TLS 1.3" in message
    ), message


# --------------------------------------------------------------------------- redirects to another host


@dataclass
class StorageServer:
    """An https file server over a registry's storage: where distribution's ``redirect`` middleware sends blob
    GETs. Records each GET's path and whether the client presented a certificate."""

    host: str
    gets: list[tuple[str, bool]] = field(default_factory=list)


def _serve_storage(root: Path, cert: tuple[Path, Path], client_ca: CertAuthority) -> tuple[StorageServer, Any]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    context.verify_mode = ssl.CERT_OPTIONAL  # asks for a client certificate: a client that has one sends it
    context.load_verify_locations(cafile=str(client_ca.cert_path))
    record = StorageServer("")

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            record.gets.append((self.path, bool(self.connection.getpeercert())))  # type: ignore[attr-defined]
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    record.host = f"localhost:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return record, httpd


@pytest.fixture(scope="module")
def redirecting(
    tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority, client_ca: CertAuthority
) -> Iterator[tuple[RegistryServer, RegistryServer, StorageServer]]:
    """A plain registry to seed, an mTLS registry over the same storage that redirects blob GETs to a
    :class:`StorageServer` on another host (``localhost``, a certificate from the same private CA)."""
    work = tmp_path_factory.mktemp("redirecting")
    storage = work / "storage"
    storage_cert = ca.issue(work / "storage-tls", "storage", hosts=["localhost"])
    record, httpd = _serve_storage(storage, storage_cert, client_ca)
    shared = {"storage": {"filesystem": {"rootdirectory": str(storage)}}}
    redirect = {"middleware": {"storage": [{"name": "redirect", "options": {"baseurl": f"https://{record.host}"}}]}}
    try:
        with (
            start_registry(work / "seed", extra_config=shared) as seeder,
            start_registry(
                work / "mtls", tls=RegistryTLS(ca, client_ca), extra_config={**shared, **redirect}
            ) as server,
        ):
            yield seeder, server, record
    finally:
        httpd.shutdown()
        httpd.server_close()


async def test_a_redirect_to_another_host_gets_none_of_the_registrys_trust(
    registry: RegistryServer,
    redirecting: tuple[RegistryServer, RegistryServer, StorageServer],
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    seeder, server, storage = redirecting
    _, digest = seed(seeder, unique_repo)
    src, dst = f"{server.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:v1"
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca))
    registry_only = {server.host: RegistryConfig(cert_dir=str(directory))}

    with pytest.raises(TransportError) as info:  # the registry's CA does not vouch for the storage host
        await copy(options(registry, registries=registry_only), src, dst)
    message = str(info.value)
    assert f"the TLS certificate of {storage.host} (a redirect from {server.host}) is not trusted" in message
    assert "--src-cert-dir" not in message  # the command line's options are the registry's
    assert f"set cert_dir or ca_file for {storage.host} in a plan's registries" in message

    both = {**registry_only, storage.host: RegistryConfig(ca_file=str(ca.cert_path))}
    result = await copy(options(registry, registries=both), src, dst)
    assert str(result.digest) == digest
    assert len(storage.gets) >= 3  # config and two layers came from the storage host
    assert all(path.endswith("/data") for path, _ in storage.gets)
    assert not any(presented for _, presented in storage.gets), "the registry's client certificate went elsewhere"


async def test_a_blob_whose_head_redirects_to_storage_is_present(
    registry: RegistryServer,
    redirecting: tuple[RegistryServer, RegistryServer, StorageServer],
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    """distribution's redirect middleware answers a HEAD of a present blob with a 307 to its storage (as S3
    and GCS backends, Docker Hub and ECR do): present, not an error, and the storage host is not asked."""
    seeder, server, storage = redirecting
    _, digest = seed(seeder, unique_repo)  # in the shared storage, linked into unique_repo
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca))
    opts = options(seeder, registries={server.host: RegistryConfig(cert_dir=str(directory))})
    since, asked = server.mark(), len(storage.gets)
    result = await copy(opts, f"{seeder.host}/{unique_repo}:v1", f"{server.host}/{unique_repo}:v2")
    log = server.requests(since)
    assert str(result.digest) == digest
    assert {b.action.value for b in result.blobs} == {"skipped"}, result.blobs
    heads = [e for e in log if e.method == "HEAD" and "/blobs/" in e.path]
    assert heads and {e.status for e in heads} == {307}
    assert not [e for e in log if e.method in ("POST", "PUT", "PATCH") and "/blobs/" in e.path]
    assert len(storage.gets) == asked  # nothing was read from the storage host


async def test_a_failed_handshake_is_not_asked_again(
    registry: RegistryServer,
    redirecting: tuple[RegistryServer, RegistryServer, StorageServer],
    ca: CertAuthority,
    client_ca: CertAuthority,
    unique_repo: str,
    tmp_path: Path,
) -> None:
    """Asking again cannot make a certificate trusted: each blob's redirect is followed once, whatever the
    retry policy (a TLSError is not a transient transport failure)."""
    seeder, server, storage = redirecting
    seed(seeder, unique_repo)
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), *client_pair(tmp_path, client_ca))
    opts = ClientOptions(
        use_docker_config=False,
        plain_http=frozenset({registry.host}),
        cert_dir_roots=(),
        registries={server.host: RegistryConfig(cert_dir=str(directory))},
        retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.02),
    )
    since = server.mark()
    with pytest.raises(TLSError, match=f"the TLS certificate of {storage.host}"):
        await copy(opts, f"{server.host}/{unique_repo}:v1", f"{registry.host}/{unique_repo}:v1")
    blob_gets = [e.path for e in server.requests(since) if e.method == "GET" and "/blobs/" in e.path]
    assert blob_gets, "no blob was asked for"
    assert len(blob_gets) == len(set(blob_gets)), f"a blob was asked for again: {blob_gets}"


# --------------------------------------------------------------------------- a token service on another host


@pytest.fixture(scope="module")
def tls_token_registry(
    tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority
) -> Iterator[tuple[RegistryServer, TokenServer]]:
    """An https token registry (127.0.0.1) whose token service is https on another host (localhost), both with
    certificates from the private CA."""
    work = tmp_path_factory.mktemp("tls-token")
    cert = ca.issue(work / "token-tls", "token", hosts=["localhost"])
    with (
        start_token_server(work / "token", tls=cert) as token_server,
        start_registry(work / "registry", "token", token_server=token_server, tls=RegistryTLS(ca)) as server,
    ):
        yield server, token_server


async def test_a_token_service_on_another_host_gets_its_own_trust(
    registry: RegistryServer,
    tls_token_registry: tuple[RegistryServer, TokenServer],
    ca: CertAuthority,
    unique_repo: str,
) -> None:
    """Unlike docker (which sends token requests with the registry's TLS settings), the registry's CA is not
    trusted for its token service's host: that host gets its own entry."""
    server, token_server = tls_token_registry
    src, digest = seed(registry, unique_repo)
    realm = token_server.url.removeprefix("https://")
    creds = {"username": token_server.admin_user, "password": token_server.admin_password}
    registry_only = {server.host: RegistryConfig(ca_file=str(ca.cert_path), **creds)}
    with pytest.raises(TransportError) as info:
        await copy(options(registry, registries=registry_only), src, f"{server.host}/{unique_repo}:v1")
    assert f"the TLS certificate of {realm} (the token service of {server.host}) is not trusted" in str(info.value)
    assert token_server.token_requests == []

    both = {**registry_only, realm: RegistryConfig(ca_file=str(ca.cert_path))}
    result = await copy(options(registry, registries=both), src, f"{server.host}/{unique_repo}:v1")
    assert str(result.digest) == digest and token_server.token_requests


# --------------------------------------------------------------------------- bad files


def _garbage(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("not a certificate\n")
    return path


def _bad_settings(tmp_path: Path, ca: CertAuthority) -> list[tuple[str, RegistryConfig, str]]:
    """(case, settings, the file the error must name)."""
    good_ca = as_ca(tmp_path, ca)
    cert, key = client_pair(tmp_path, ca)
    _, other_key = client_pair(tmp_path, ca, "other")
    garbage = cert_dir(tmp_path, _garbage(tmp_path / "g", "ca.crt"), name="garbage")
    lone_key = cert_dir(tmp_path, good_ca, key, name="lone-key")
    lone_cert = cert_dir(tmp_path, good_ca, cert, name="lone-cert")
    mismatched = cert_dir(tmp_path, good_ca, cert, name="mismatched")
    shutil.copy(other_key, mismatched / "client.key")
    return [
        ("missing ca_file", RegistryConfig(ca_file=str(tmp_path / "nope.crt")), str(tmp_path / "nope.crt")),
        ("garbage ca_file", RegistryConfig(ca_file=str(_garbage(tmp_path, "g.pem"))), str(tmp_path / "g.pem")),
        ("a key as ca_file", RegistryConfig(ca_file=str(key)), str(key)),
        ("missing cert_dir", RegistryConfig(cert_dir=str(tmp_path / "absent")), str(tmp_path / "absent")),
        ("garbage .crt", RegistryConfig(cert_dir=str(garbage)), str(garbage / "ca.crt")),
        ("key without cert", RegistryConfig(cert_dir=str(lone_key)), str(lone_key / "client.key")),
        ("cert without key", RegistryConfig(cert_dir=str(lone_cert)), str(lone_cert / "client.cert")),
        ("key of another cert", RegistryConfig(cert_dir=str(mismatched)), str(mismatched / "client.key")),
    ]


def test_bad_explicit_files_are_one_input_error_naming_the_file_before_any_request(
    ca: CertAuthority, tmp_path: Path
) -> None:
    for case, conf, named in _bad_settings(tmp_path, ca):
        with pytest.raises(InputError) as info:
            Client(options(registries={"registry.example:5000": conf}))  # nothing is sent: no such host is needed
        assert named in str(info.value), case
        assert "\n" not in str(info.value), case


async def test_a_bad_certs_d_file_is_an_input_error_before_the_first_request_to_its_host(
    ca: CertAuthority, tmp_path: Path
) -> None:
    root = tmp_path / "certs.d"
    host = "127.0.0.1:9"  # discard port: a request would be a connection error, not an InputError
    cert, _ = client_pair(tmp_path, ca)
    bad = cert_dir(root, cert, name=host)
    async with Client(options(roots=(str(root),))) as client:
        with pytest.raises(InputError, match=f"client certificate {bad / 'client.cert'} has no key client.key"):
            await client.digest(f"{host}/app:v1")


# --------------------------------------------------------------------------- pure: which files apply to a host


def test_roots_are_expanded_at_use() -> None:
    env = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/xdg"}
    roots = ["/etc/docker/certs.d", "~/.config/containers/certs.d", "$XDG_CONFIG_HOME/containers/certs.d"]
    assert tls.expand_roots(roots, env) == [
        Path("/etc/docker/certs.d"),
        Path("/home/u/.config/containers/certs.d"),
        Path("/xdg/containers/certs.d"),
    ]
    assert tls.expand_roots(roots, {"HOME": "/home/u", "XDG_CONFIG_HOME": ""}) == [
        Path("/etc/docker/certs.d"),
        Path("/home/u/.config/containers/certs.d"),
    ]  # an unset or empty variable: that root is left out
    xdg_is_default = {"HOME": "/home/u", "XDG_CONFIG_HOME": "/home/u/.config"}
    assert len(tls.expand_roots(roots, xdg_is_default)) == 2  # a repeat is read once
    assert ClientOptions().cert_dir_roots == DEFAULT_CERT_DIR_ROOTS  # kept as written: no home at import
    assert all("/root" not in r and "/home" not in r for r in DEFAULT_CERT_DIR_ROOTS)


def test_a_certs_d_directory_names_cas_and_client_pairs_like_docker(ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = client_pair(tmp_path, ca)
    directory = cert_dir(tmp_path, as_ca(tmp_path, ca), cert, key, name="host")
    shutil.copy(ca.cert_path, directory / "b-extra.crt")
    (directory / "README").write_text("ignored\n")
    (directory / "sub.crt").mkdir()  # a directory is not a file
    cas, pairs = tls.read_cert_dir(directory, explicit=True)
    assert cas == [directory / "b-extra.crt", directory / "ca.crt"]  # sorted, as docker reads them
    assert pairs == [tls.ClientCert(directory / "client.cert", directory / "client.key")]
    assert tls.read_cert_dir(tmp_path / "missing", explicit=False) == ([], [])


def test_certs_d_roots_add_up_cert_dir_replaces_them_and_ca_file_adds(ca: CertAuthority, tmp_path: Path) -> None:
    host = "reg.example:5000"
    docker, containers = tmp_path / "docker", tmp_path / "containers"
    cert, key = client_pair(tmp_path, ca)
    cert_dir(docker, as_ca(tmp_path, ca), cert, key, name=host)
    cert_dir(containers, cert, key, name=host)  # the same pair again: one certificate
    shutil.copy(ca.cert_path, containers / host / "other.crt")
    roots = [str(docker), str(tmp_path / "absent"), str(containers)]
    trust = tls.host_trust(host, roots)
    assert trust.ca_files == (docker / host / "ca.crt", containers / host / "other.crt")
    assert trust.client_cert == tls.ClientCert(docker / host / "client.cert", docker / host / "client.key")
    assert tls.host_trust("other.example", roots) == tls.HostTrust("other.example")  # per host, nothing else

    own = cert_dir(tmp_path, name="own")
    assert tls.host_trust(host, roots, cert_dir=str(own)) == tls.HostTrust(host)  # replaces certs.d
    extra = tls.host_trust(host, roots, ca_file=str(ca.cert_path))
    assert extra.ca_files == (*trust.ca_files, ca.cert_path) and extra.client_cert == trust.client_cert


def test_two_different_client_certificates_for_one_host_are_refused(ca: CertAuthority, tmp_path: Path) -> None:
    host = "reg.example"
    cert_dir(tmp_path / "a", *client_pair(tmp_path, ca, "one"), name=host)
    cert_dir(tmp_path / "b", *client_pair(tmp_path, ca, "two"), name=host)
    with pytest.raises(InputError, match=r"several client certificates apply to reg\.example .*one\.cert.*two\.cert"):
        tls.host_trust(host, [str(tmp_path / "a"), str(tmp_path / "b")])


def test_an_encrypted_key_is_refused_without_a_prompt(ca: CertAuthority, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = client_pair(tmp_path, ca)
    plain = serialization.load_pem_private_key(key.read_bytes(), password=None)
    key.write_bytes(
        plain.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    directory = cert_dir(tmp_path, cert, key, name="encrypted")
    with pytest.raises(InputError, match=f"key {directory / 'client.key'} is encrypted"):
        tls.check(tls.host_trust("h", [], cert_dir=str(directory)))


# --------------------------------------------------------------------------- pure: what a failure says


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message, error.reason = code, message, "CERTIFICATE_VERIFY_FAILED"
    return error


def _ssl_error(reason: str, text: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {text} (_ssl.c:1006)")
    error.reason = reason
    return error


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_verify_error(20, "unable to get local issuer certificate"), "untrusted"),
        (_verify_error(18, "self-signed certificate"), "untrusted"),
        (_verify_error(19, "self-signed certificate in certificate chain"), "untrusted"),
        (_verify_error(10, "certificate has expired"), "invalid"),
        (_verify_error(62, "Hostname mismatch, certificate is not valid for 'x'."), "invalid"),
        (_ssl_error("WRONG_VERSION_NUMBER", "wrong version number"), "plain-http"),
        (_ssl_error("RECORD_LAYER_FAILURE", "record layer failure"), "plain-http"),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE", "sslv3 alert bad certificate"), "client-cert"),
        (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED", "tlsv13 alert certificate required"), "client-cert"),
        (_ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE", "sslv3 alert handshake failure"), "other"),
    ],
)
def test_failure_kinds(error: ssl.SSLError, kind: str) -> None:
    assert tls.failure_kind(error) == kind
    text = tls.explain(error, "reg.example", tls.HostTrust("reg.example"), ["/etc/docker/certs.d"])
    assert "reg.example" in text and "_ssl.c" not in text and "[SSL" not in text
    assert ("--plain-http reg.example" in text) == (kind == "plain-http")
    assert ("--src-cert-dir" in text) == (kind in ("untrusted", "client-cert"))
    hop = tls.explain(error, "s3.example", tls.HostTrust("s3.example"), [], via="a redirect from reg.example")
    assert "--plain-http" not in hop and "--src-cert-dir" not in hop  # the registry's options are not the hop's


def test_the_ssl_error_is_found_behind_httpx2s_and_an_eof_is_a_broken_connection() -> None:
    cause = _verify_error(20, "unable to get local issuer certificate")
    try:
        try:
            raise cause
        except ssl.SSLError as exc:
            raise ConnectionError("wrapped") from exc
    except ConnectionError as outer:
        assert tls.find_ssl_error(outer) is cause
    assert tls.find_ssl_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")) is None
    assert tls.find_ssl_error(OSError("reset")) is None
