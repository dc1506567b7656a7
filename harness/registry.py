"""Run real CNCF distribution registries (``docker-registry serve``) and observe their requests.

Request observation parses the registry's JSON log (``log.formatter: json``). Distribution 2.8
writes one ``"msg": "response completed"`` record per request answered 2xx/3xx and one
``"msg": "response completed with error"`` record per request answered with an error code; both
carry ``http.request.method``, ``http.request.uri`` (path + raw query, ``&`` escaped as ``\\u0026``),
``http.response.status``, ``http.response.written`` (response body bytes) and, when the request had
one, ``http.request.contenttype``. Requests refused by the auth layer get no such record, only a
``"level": "warning", "msg": "error authorizing context: <reason>"`` record (method and URI, no
status); they are parsed as entries with ``status=401`` (what distribution answers) and
``bytes_written=0``. Requests to routes distribution does not know (e.g. ``/v2/<name>/referrers/``)
are not logged at all. Distribution does NOT log the request body length, so "no blob bytes were
uploaded" is proven by the absence of upload ``PUT``/``PATCH`` requests (:func:`blob_uploads`),
never by counting bytes. ``auth.user.name`` only appears on some records (``user`` is best effort).

Ordering: :meth:`RegistryServer.mark` and :meth:`RegistryServer.requests` bracket the observed
window with a sentinel request (``GET /v2/?ocitest-mark=<uuid>``) and wait until the sentinel's
log record appears, so records of requests answered before the call are never missed or misplaced.
Sentinels are filtered out of the results.

TLS: ``start_registry(..., tls=RegistryTLS(ca))`` serves https (distribution's ``http.tls.certificate``/``key``)
with a certificate for ``127.0.0.1``/``localhost`` issued by a :class:`CertAuthority` made in the test;
``RegistryTLS(ca, client_ca=other)`` also requires a client certificate issued by ``other``
(``http.tls.clientcas``). The harness's own requests trust ``ca`` and present such a certificate.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs

import bcrypt
import httpx2

if TYPE_CHECKING:
    from harness.tokenserver import TokenServer

AuthMode = Literal["none", "basic", "token"]

REGISTRY_BIN_ENV = "OCITEST_REGISTRY_BIN"
MARK_PARAM = "ocitest-mark"
AUTH_FAILURE_MSG = "error authorizing context"
START_DEADLINE = 15.0
_LOG_DEADLINE = 10.0


def find_registry_binary() -> str:
    """Path of the distribution binary (``$OCITEST_REGISTRY_BIN``, ``docker-registry`` or ``registry``)."""
    candidates = [os.environ.get(REGISTRY_BIN_ENV), "docker-registry", "registry"]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    raise RuntimeError(
        "CNCF distribution binary not found (looked for $OCITEST_REGISTRY_BIN, docker-registry, "
        "registry); install the Debian package `docker-registry`"
    )


def registry_version() -> str:
    """Version string of the distribution binary, e.g. ``2.8.2+ds1``."""
    out = subprocess.run([find_registry_binary(), "--version"], capture_output=True, text=True, timeout=30, check=True)
    return out.stdout.strip().split()[-1]


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPO_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_repo_counter = itertools.count(1)


def unique_repo_name(label: str, prefix: str = "t") -> str:
    """A fresh distribution-grammar-valid repository name ``<prefix>/<sanitised label>-<n>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:80].strip("-") or "repo"
    return f"{prefix}/{slug}-{next(_repo_counter)}"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (may race; callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- access log


@dataclass(frozen=True)
class AccessEntry:
    """One answered request, from a ``response completed[ with error]`` log record."""

    method: str
    uri: str
    status: int
    bytes_written: int
    request_content_type: str | None = None
    response_content_type: str | None = None
    user: str | None = None
    user_agent: str | None = None
    error_code: str | None = None
    request_id: str = ""
    message: str = ""
    remote: str = ""  # client address:port: one value per TCP connection

    @property
    def path(self) -> str:
        """The URI without its query string."""
        return self.uri.partition("?")[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """Decoded query parameters."""
        return parse_qs(self.uri.partition("?")[2], keep_blank_values=True)

    def param(self, name: str) -> str | None:
        """First value of query parameter ``name`` or None."""
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def repo(self) -> str | None:
        """Repository name for ``/v2/<name>/(blobs|manifests|tags)/...`` requests."""
        path = self.path
        if not path.startswith("/v2/"):
            return None
        for marker in ("/blobs/", "/manifests/", "/tags/"):
            name, sep, _ = path[4:].rpartition(marker)
            if sep:
                return name
        return None

    @property
    def is_sentinel(self) -> bool:
        """True for the harness's own mark requests."""
        return self.path == "/v2/" and MARK_PARAM in self.query

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> AccessEntry | None:
        """Build an entry from one decoded JSON log record, or None if it is not a response record."""
        msg = str(rec.get("msg", ""))
        if "http.request.method" not in rec:
            return None
        if msg.startswith("response completed") and "http.response.status" in rec:
            status = int(rec["http.response.status"])
        elif msg.startswith(AUTH_FAILURE_MSG):
            status = 401  # distribution answers every authorization failure with 401 and logs no status
        else:
            return None
        return cls(
            method=rec["http.request.method"],
            uri=rec.get("http.request.uri", ""),
            status=status,
            bytes_written=int(rec.get("http.response.written", 0)),
            request_content_type=rec.get("http.request.contenttype"),
            response_content_type=rec.get("http.response.contenttype"),
            user=rec.get("auth.user.name"),
            user_agent=rec.get("http.request.useragent"),
            error_code=rec.get("err.code"),
            request_id=rec.get("http.request.id", ""),
            message=msg,
            remote=rec.get("http.request.remoteaddr", ""),
        )


def parse_access_log(data: bytes) -> list[AccessEntry]:
    """Parse complete JSON log lines; non-JSON lines and non-response records are skipped."""
    entries = []
    for line in data.splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        entry = AccessEntry.from_record(rec)
        if entry is not None:
            entries.append(entry)
    return entries


# Predicates over entries. Each returns the matching entries in log order.


def _is_upload_path(e: AccessEntry) -> bool:
    return "/blobs/uploads/" in e.path


def blob_uploads(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """Requests that carry (or finish) blob bytes: ``PUT``/``PATCH`` on ``.../blobs/uploads/...``."""
    return [e for e in entries if e.method in ("PUT", "PATCH") and _is_upload_path(e)]


def upload_starts(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """``POST .../blobs/uploads/`` that opened an upload session (answered 202, mount or not)."""
    return [e for e in entries if e.method == "POST" and _is_upload_path(e) and e.status == 202]


def mounts(entries: Iterable[AccessEntry], digest: str | None = None) -> list[AccessEntry]:
    """Successful cross-repository mounts: ``POST .../blobs/uploads/?mount=<digest>`` answered 201."""
    return [
        e
        for e in entries
        if e.method == "POST"
        and _is_upload_path(e)
        and e.status == 201
        and e.param("mount") is not None
        and (digest is None or e.param("mount") == digest)
    ]


def uploaded_digests(entries: Iterable[AccessEntry]) -> list[str]:
    """Digests of uploads completed with ``PUT ...?digest=<d>`` answered 201."""
    return [d for e in blob_uploads(entries) if e.method == "PUT" and e.status == 201 and (d := e.param("digest"))]


def manifest_puts(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """``PUT /v2/<name>/manifests/<ref>`` requests (any status)."""
    return [e for e in entries if e.method == "PUT" and "/manifests/" in e.path]


def manifest_gets(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """``GET /v2/<name>/manifests/<ref>`` requests (any status)."""
    return [e for e in entries if e.method == "GET" and "/manifests/" in e.path]


def blob_gets(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """``GET /v2/<name>/blobs/<digest>`` downloads (any status)."""
    return [e for e in entries if e.method == "GET" and "/blobs/" in e.path and not _is_upload_path(e)]


def heads(entries: Iterable[AccessEntry]) -> list[AccessEntry]:
    """``HEAD`` requests on blobs or manifests (any status)."""
    return [e for e in entries if e.method == "HEAD"]


def for_repo(entries: Iterable[AccessEntry], repo: str) -> list[AccessEntry]:
    """Entries addressed to repository ``repo``."""
    return [e for e in entries if e.repo == repo]


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class CertAuthority:
    """A certificate authority made for a test (EC P-256: fast to make); :meth:`issue` signs leaf certificates.

    ``cert_path`` is its certificate (PEM), what a client adds to its trust; the key stays in memory.
    """

    name: str
    cert_path: Path
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    def issue(self, workdir: Path, stem: str, *, hosts: Iterable[str] = (), client: bool = False) -> tuple[Path, Path]:
        """A certificate for ``hosts`` (DNS names or IP literals), or a client certificate: ``(cert, key)`` files.

        Written as ``<stem>.crt`` and ``<stem>.key`` (PEM); the key file is not encrypted.
        """
        cert, key = _leaf_pem(self, stem, list(hosts), client)
        workdir.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = workdir / f"{stem}.crt", workdir / f"{stem}.key"
        cert_path.write_bytes(cert)
        key_path.write_bytes(key)
        return cert_path, key_path


def make_ca(workdir: Path, name: str = "ocitest CA") -> CertAuthority:
    """A fresh CA, its certificate written to ``workdir/<name>.crt`` (spaces as dashes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = _x509_name(name)
    cert = (
        _cert_builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _sha256())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    path = workdir / f"{name.replace(' ', '-')}.crt"
    path.write_bytes(cert_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertAuthority(name, path, cert_pem, key_pem)


def _leaf_pem(ca: CertAuthority, name: str, hosts: list[str], client: bool) -> tuple[bytes, bytes]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _cert_builder(_x509_name(name), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, _sha256())  # type: ignore[arg-type]
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _x509_name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert_builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    import datetime as dt

    from cryptography import x509

    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def _key_usage(*, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


@dataclass(frozen=True)
class RegistryTLS:
    """How a registry serves TLS: a server certificate issued by ``ca``; with ``client_ca``, it requires a client
    certificate issued by that CA (distribution's ``http.tls.clientcas``: ``RequireAndVerifyClientCert``)."""

    ca: CertAuthority
    client_ca: CertAuthority | None = None


# --------------------------------------------------------------------------- server


@dataclass
class RegistryServer:
    """A running distribution registry on 127.0.0.1; stop it with :meth:`stop` or ``with``."""

    host: str
    url: str
    root: Path
    auth: AuthMode
    username: str
    password: str
    log_path: Path
    process: subprocess.Popen[bytes]
    config_path: Path
    token_server: TokenServer | None = None
    tls: RegistryTLS | None = None
    #: the client certificate and key the harness presents (a ``client_ca`` registry), else None
    client_cert: tuple[Path, Path] | None = None
    _sentinel_auth: dict[str, str] = field(default_factory=dict, repr=False)

    def __enter__(self) -> RegistryServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the process (kill after 10 s); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def alive(self) -> bool:
        """True while the registry process runs."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """Last lines of the registry log, for error messages."""
        return _tail(self.log_path, lines)

    def verify(self) -> ssl.SSLContext | bool:
        """What the harness's own requests verify TLS with: the registry's CA (and client certificate), or False."""
        if self.tls is None:
            return False
        context = ssl.create_default_context(cafile=str(self.tls.ca.cert_path))
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context

    def credentials(self) -> tuple[str, str] | None:
        """``(username, password)`` for basic/token registries, None when anonymous."""
        return None if self.auth == "none" else (self.username, self.password)

    def mark(self) -> int:
        """Log position after every request answered so far; pass it to :meth:`requests`."""
        return self._sentinel()

    def requests(self, since: int = 0) -> list[AccessEntry]:
        """Requests answered after ``mark()`` returned ``since`` and before this call, in log order.

        Waits (via a sentinel request) until every request answered before the call is logged, so
        no extra polling is needed; the harness's sentinel requests are removed.
        """
        end = self._sentinel()
        with self.log_path.open("rb") as f:
            f.seek(since)
            data = f.read(end - since)
        return [e for e in parse_access_log(data) if not e.is_sentinel]

    def _sentinel(self) -> int:
        """Send a sentinel request and return the log offset just after its final record."""
        if not self.alive():
            raise RuntimeError(f"registry {self.url} is not running; log tail:\n{self.log_tail()}")
        token = uuid.uuid4().hex
        start = self.log_path.stat().st_size
        httpx2.get(
            f"{self.url}/v2/", params={MARK_PARAM: token}, headers=self._sentinel_auth, timeout=10, verify=self.verify()
        )
        needle = f"{MARK_PARAM}={token}".encode()
        deadline = time.monotonic() + _LOG_DEADLINE
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(start)
                data = f.read()
            offset = start
            for line in data.splitlines(keepends=True):
                offset += len(line)
                if line.endswith(b"\n") and needle in line and _is_final_record(line):
                    return offset
            time.sleep(0.01)
        raise RuntimeError(f"registry {self.url} never logged sentinel request; log tail:\n{self.log_tail()}")


def _is_final_record(line: bytes) -> bool:
    return b'"msg":"response completed' in line or f'"msg":"{AUTH_FAILURE_MSG}'.encode() in line


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _base_config(workdir: Path, port: int) -> dict[str, Any]:
    return {
        "version": "0.1",
        "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }


def _auth_config(workdir: Path, auth: AuthMode, user: str, pw: str, ts: TokenServer | None) -> dict[str, Any]:
    if auth == "none":
        return {}
    if auth == "basic":
        htpasswd = workdir / "htpasswd"
        hashed = bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{user}:{hashed}\n")
        return {"auth": {"htpasswd": {"realm": "ocitest-basic", "path": str(htpasswd)}}}
    if ts is None:
        raise ValueError("auth='token' needs token_server=")
    return {
        "auth": {
            "token": {
                "realm": ts.realm,
                "service": ts.service,
                "issuer": ts.issuer,
                "rootcertbundle": str(ts.cert_path),
            }
        }
    }


def start_registry(
    workdir: Path,
    auth: AuthMode = "none",
    *,
    username: str = "ocitest",
    password: str | None = None,
    token_server: TokenServer | None = None,
    tls: RegistryTLS | None = None,
    extra_config: dict[str, Any] | None = None,
) -> RegistryServer:
    """Start ``docker-registry serve`` under ``workdir`` and wait until ``/v2/`` answers.

    For ``auth="token"`` the credentials default to the token server's admin user. With ``tls`` the registry
    speaks https only (``server.url`` is ``https://...``). Raises ``RuntimeError`` (with the log tail) if the
    registry cannot start.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if auth == "token" and token_server is not None:
        username, password = token_server.admin_user, token_server.admin_password
    password = password or secrets.token_urlsafe(12)
    binary = find_registry_binary()
    tls_config, client_cert = _tls_config(workdir, tls)
    last_error = ""
    for _attempt in range(5):
        port = free_port()
        config = _deep_merge(_base_config(workdir, port), _auth_config(workdir, auth, username, password, token_server))
        config = _deep_merge(_deep_merge(config, tls_config), extra_config or {})
        server = _launch(binary, workdir, config, auth, username, password, token_server)
        server.tls, server.client_cert = tls, client_cert
        if tls is not None:
            server.url = f"https://{server.host}"
        try:
            _wait_ready(server)
        except RuntimeError as exc:
            server.stop()
            last_error = str(exc)
            if "address already in use" in last_error:
                continue
            raise
        atexit.register(server.stop)
        return server
    raise RuntimeError(f"registry could not bind a free port: {last_error}")


def _tls_config(workdir: Path, tls: RegistryTLS | None) -> tuple[dict[str, Any], tuple[Path, Path] | None]:
    """The ``http.tls`` section for ``tls`` (certificates issued into ``workdir/tls``), and the harness's client
    certificate when the registry requires one."""
    if tls is None:
        return {}, None
    cert, key = tls.ca.issue(workdir / "tls", "server", hosts=("127.0.0.1", "localhost"))
    section: dict[str, Any] = {"certificate": str(cert), "key": str(key)}
    client_cert = None
    if tls.client_ca is not None:
        section["clientcas"] = [str(tls.client_ca.cert_path)]
        client_cert = tls.client_ca.issue(workdir / "tls", "harness-client", client=True)
    return {"http": {"tls": section}}, client_cert


def _launch(
    binary: str,
    workdir: Path,
    config: dict[str, Any],
    auth: AuthMode,
    username: str,
    password: str,
    ts: TokenServer | None,
) -> RegistryServer:
    config_path = workdir / "config.yml"
    config_path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
    log_path = workdir / "registry.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    host = config["http"]["addr"]
    server = RegistryServer(
        host=host,
        url=f"http://{host}",
        root=Path(config["storage"]["filesystem"]["rootdirectory"]),
        auth=auth,
        username=username,
        password=password,
        log_path=log_path,
        process=process,
        config_path=config_path,
        token_server=ts,
    )
    if auth == "basic":
        server._sentinel_auth = {"Authorization": _basic_header(username, password)}
    return server


def _wait_ready(server: RegistryServer) -> None:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(
                f"registry exited with code {server.process.returncode} before answering; "
                f"log tail:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx2.TransportError):
            if httpx2.get(f"{server.url}/v2/", timeout=2, verify=server.verify()).status_code in (200, 401):
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"registry at {server.url} did not answer /v2/ within {START_DEADLINE}s; log tail:\n{server.log_tail()}"
    )


def _basic_header(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
