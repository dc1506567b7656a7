"""A small token server for distribution's ``auth: token`` flow, run in a background thread.

Protocol (https://distribution.github.io/distribution/spec/auth/token/): ``GET /token?service=S&
scope=repository:NAME:pull,push`` (``scope`` repeatable, or space separated) with optional HTTP
basic credentials; ``POST /token`` with the OAuth2 ``grant_type=password`` form is also accepted.
The answer is ``{"token", "access_token", "expires_in", "issued_at"}``; the token is an RS256 JWT
whose header carries ``x5c`` = [the self-signed certificate] — distribution 2.8 verifies that chain
against its ``rootcertbundle`` (the PEM written to :attr:`TokenServer.cert_path`) and needs no ``kid``.

Every request is recorded in :attr:`TokenServer.token_requests`. With ``tls=(cert, key)`` it serves https on
``localhost`` (a certificate for that name, e.g. from :class:`harness.registry.CertAuthority`): a token service on
another host than its registry.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

#: ``policy(user, type, name, asked_actions) -> granted_actions``; user is None when anonymous.
Policy = Callable[[str | None, str, str, list[str]], list[str]]


def grant_all(user: str | None, type_: str, name: str, actions: list[str]) -> list[str]:
    """Grant every action asked."""
    return list(actions)


def pull_only(user: str | None, type_: str, name: str, actions: list[str]) -> list[str]:
    """Grant ``pull`` only (if asked)."""
    return [a for a in actions if a == "pull"]


def grant_nothing(user: str | None, type_: str, name: str, actions: list[str]) -> list[str]:
    """Grant no action (a valid token with an empty ``access``, as registries give anonymous users)."""
    return []


@dataclass(frozen=True)
class Scope:
    """A parsed ``type:name:actions`` scope."""

    type: str
    name: str
    actions: list[str]

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse ``repository:foo/bar:pull,push`` (the name may itself contain ``:``)."""
        type_, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if not type_ or not name:
            raise ValueError(f"malformed scope {text!r}")
        return cls(type_, name, [a for a in actions.split(",") if a])


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered."""

    user: str | None
    scopes: list[str]
    service: str | None
    status: int
    granted: list[dict[str, Any]]
    time: float
    method: str = "GET"


@dataclass
class User:
    """A token-server account."""

    password: str
    policy: Policy = grant_all


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class TokenServer:
    """JWT token issuer on 127.0.0.1; construct, then :meth:`start` (or use :func:`start_token_server`)."""

    def __init__(
        self,
        workdir: Path,
        *,
        service: str = "ocitest-registry",
        issuer: str = "ocitest-token-issuer",
        expires_in: int = 300,
        lifetime: int | None = None,
        anonymous: Policy | None = grant_nothing,
        admin_user: str = "ocitest",
        reader_user: str = "reader",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        #: certificate and key files to serve https with (on ``localhost``), or None for http on 127.0.0.1
        self.tls = tls
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        #: seconds from issue to the JWT ``exp`` claim; None = ``expires_in``. May be negative.
        self.lifetime = lifetime
        #: policy for requests without credentials; None answers them 401.
        self.anonymous = anonymous
        self.admin_user = admin_user
        self.admin_password = secrets.token_urlsafe(12)
        self.reader_user = reader_user
        self.reader_password = secrets.token_urlsafe(12)
        self.users: dict[str, User] = {
            admin_user: User(self.admin_password, grant_all),
            reader_user: User(self.reader_password, pull_only),
        }
        self.token_requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._cert = _self_signed(self._key, issuer)
        self.cert_path = self.workdir / "token-cert.pem"
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` (``https://localhost:PORT`` with ``tls``)."""
        if self._httpd is None:
            raise RuntimeError("token server not started")
        host, port = self._httpd.server_address[:2]
        return f"https://localhost:{port}" if self.tls else f"http://{host!s}:{port}"

    @property
    def realm(self) -> str:
        """The token endpoint URL the registry advertises as ``realm``."""
        return f"{self.url}/token"

    def start(self) -> TokenServer:
        """Write the certificate and serve in a daemon thread."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            # the handshake runs in the handler's thread (not in accept: one bad client would stall the server)
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="ocitest-token", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the HTTP server down; idempotent."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self if self._httpd else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ tokens

    def add_user(self, name: str, password: str, policy: Policy = grant_all) -> None:
        """Add or replace an account."""
        self.users[name] = User(password, policy)

    def mint(self, scopes: list[str] | tuple[str, ...], ttl: int | None = None, *, user: str | None = None) -> str:
        """Issue a token directly (not recorded) for ``user`` (default admin) granting what its policy allows."""
        account = self.users[user or self.admin_user]
        access = self._access(user or self.admin_user, account.policy, list(scopes))
        return self._sign(user or self.admin_user, access, self.expires_in if ttl is None else ttl)

    def _access(self, user: str | None, policy: Policy, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for text in scopes:
            scope = Scope.parse(text)
            granted = policy(user, scope.type, scope.name, scope.actions)
            access.append({"type": scope.type, "name": scope.name, "actions": granted})
        return access

    def _sign(self, user: str | None, access: list[dict[str, Any]], lifetime: int) -> str:
        now = int(time.time())
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(12),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    def _policy_for(self, user: str | None, password: str | None) -> Policy | None:
        if user is None:
            return self.anonymous
        account = self.users.get(user)
        if account is None or not secrets.compare_digest(account.password, password or ""):
            return None
        return account.policy

    def issue(
        self, user: str | None, password: str | None, scopes: list[str], service: str | None, method: str
    ) -> tuple[int, dict[str, Any]]:
        """Authenticate, record and answer one token request: ``(status, json_body)``."""
        access: list[dict[str, Any]] = []
        body: dict[str, Any]
        policy = self._policy_for(user, password)
        try:
            if policy is None:
                status, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            else:
                access = self._access(user, policy, scopes)
                token = self._sign(user, access, self.expires_in if self.lifetime is None else self.lifetime)
                issued = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
                status = 200
                body = {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued}
        except ValueError as exc:
            status, body = 400, {"errors": [{"code": "INVALID_SCOPE", "message": str(exc)}]}
        record = TokenRequest(user, list(scopes), service, status, access, time.time(), method)
        with self._lock:
            self.token_requests.append(record)
        return status, body


def _make_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            pass

        def handle(self) -> None:
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except OSError:  # a client that does not trust us: nothing to answer
                    return
            super().handle()

        def _credentials(self) -> tuple[str | None, str | None]:
            header = self.headers.get("Authorization", "")
            if not header.lower().startswith("basic "):
                return None, None
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return "", ""
            return user, pw

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="ocitest-token"')
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/token":
                self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            query = parse_qs(parts.query)
            scopes = [s for value in query.get("scope", []) for s in value.split()]
            user, pw = self._credentials()
            self._answer(*server.issue(user, pw, scopes, query.get("service", [None])[0], "GET"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            if urlsplit(self.path).path != "/token" or form.get("grant_type") != ["password"]:
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            scopes = [s for value in form.get("scope", []) for s in value.split()]
            user, pw = form.get("username", [None])[0], form.get("password", [None])[0]
            self._answer(*server.issue(user, pw, scopes, form.get("service", [None])[0], "POST"))

    return Handler


def start_token_server(workdir: Path, **kwargs: Any) -> TokenServer:
    """Create and start a :class:`TokenServer` (keyword arguments as for its constructor)."""
    return TokenServer(workdir, **kwargs).start()


__all__ = [
    "Policy",
    "Scope",
    "TokenRequest",
    "TokenServer",
    "User",
    "grant_all",
    "grant_nothing",
    "pull_only",
    "start_token_server",
]
