"""TLS trust per registry host, read the way docker and podman read it.

For a registry ``HOST[:PORT]``, each certs.d root (``ClientOptions.cert_dir_roots``) may hold a directory
``HOST[:PORT]/`` (docker: https://docs.docker.com/engine/security/certificates/; podman: containers-certs.d(5)):

- every ``*.crt`` in it is a CA certificate (PEM) trusted for that host, added to the system trust;
- a ``NAME.cert`` + ``NAME.key`` pair (PEM) is a client certificate presented to that host.

Every such directory that exists applies (docker reads ``/etc/docker/certs.d`` only, podman the first one that
exists; ocicopy takes their union). ``RegistryConfig.cert_dir`` is such a directory for one host and replaces the
certs.d directories (skopeo's ``--src-cert-dir``); ``RegistryConfig.ca_file`` (a PEM bundle) adds to whatever
else applies. Trust never crosses hosts: a redirect hop or a token realm on another host gets that host's own.

The system trust is httpx2's default context: on Linux the OpenSSL default paths (the distribution's store),
truststore (the OS store) on macOS and Windows; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` replace it when set.

Everything here reads files and builds :class:`ssl.SSLContext` objects; nothing touches the network. Bad files
are :class:`InputError` naming the file.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ocicopy.errors import InputError

__all__ = [
    "ClientCert",
    "HostTrust",
    "check",
    "context",
    "describe",
    "expand_roots",
    "explain",
    "failure_kind",
    "find_ssl_error",
    "host_trust",
    "read_cert_dir",
    "reset_hint",
    "system_context",
]


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its private key (PEM files, the key unencrypted)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class HostTrust:
    """What one host is trusted with beyond the system store: CA files, and a client certificate to present."""

    host: str
    ca_files: tuple[Path, ...] = ()
    client_cert: ClientCert | None = None

    @property
    def key(self) -> tuple[tuple[Path, ...], ClientCert | None]:
        """What the TLS context depends on (hosts with the same key share a context; ``((), None)``: the system)."""
        return self.ca_files, self.client_cert


def expand_roots(roots: Iterable[str], env: Mapping[str, str] | None = None) -> list[Path]:
    """The certs.d roots as paths, expanded now (not at import): a leading ``~`` is ``$HOME``, a leading ``$VAR``
    that variable; a root whose variable is unset or empty (``$XDG_CONFIG_HOME/...``) is left out, as is a repeat."""
    env = os.environ if env is None else env
    out: list[Path] = []
    for root in roots:
        head, sep, rest = root.partition("/")
        if head.startswith("$"):
            if not env.get(head[1:]):
                continue
            root = env[head[1:]] + sep + rest
        elif head == "~":
            root = (env.get("HOME") or os.path.expanduser("~")) + sep + rest
        path = Path(root)
        if path not in out:
            out.append(path)
    return out


def host_trust(
    host: str, roots: Iterable[str], *, ca_file: str | None = None, cert_dir: str | None = None
) -> HostTrust:
    """The extra trust that applies to ``host``: its ``cert_dir`` (else its certs.d directories), plus ``ca_file``.

    Raises :class:`InputError` for an explicit ``cert_dir``/``ca_file`` that is missing, a key without its
    certificate (or the reverse), or two different client certificates (one can be presented).
    """
    cas: list[Path] = []
    pairs: list[ClientCert] = []
    if cert_dir is not None:
        cas, pairs = read_cert_dir(Path(cert_dir).expanduser(), explicit=True)
    else:
        for root in expand_roots(roots):
            found_cas, found_pairs = read_cert_dir(root / host, explicit=False)
            cas += found_cas
            pairs += found_pairs
    if ca_file is not None:
        path = Path(ca_file).expanduser()
        if not path.is_file():
            raise InputError(f"CA file {path} for {host} {'is not a file' if path.exists() else 'does not exist'}")
        cas.append(path)
    return HostTrust(host, tuple(dict.fromkeys(cas)), _one_client_cert(host, pairs))


def read_cert_dir(directory: Path, *, explicit: bool) -> tuple[list[Path], list[ClientCert]]:
    """The CA files (``*.crt``) and client certificate pairs (``NAME.cert`` + ``NAME.key``) of one directory,
    sorted by name (docker's order). A missing certs.d directory holds nothing; a missing ``explicit`` one is an
    :class:`InputError`, and so is an unreadable one."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        if explicit:
            raise InputError(f"certificate directory {directory} does not exist") from None
        return [], []
    except OSError as exc:
        raise InputError(f"cannot read certificate directory {directory}: {exc.strerror or exc}") from None
    present = set(names)
    cas = [directory / n for n in names if n.endswith(".crt")]
    pairs = []
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext == ".cert" and f"{stem}.key" not in present:
            raise InputError(
                f"client certificate {directory / name} has no key {stem}.key beside it "
                "(a CA certificate must end in .crt)"
            )
        if ext == ".key" and f"{stem}.cert" not in present:
            raise InputError(f"key {directory / name} has no client certificate {stem}.cert beside it")
        if ext == ".cert":
            pairs.append(ClientCert(directory / name, directory / f"{stem}.key"))
    return cas, pairs


def _one_client_cert(host: str, pairs: list[ClientCert]) -> ClientCert | None:
    """The client certificate for ``host``: copies of one pair in several certs.d roots are one; two different
    pairs are refused (Python's TLS presents one certificate, it cannot choose by the server's CA list)."""
    distinct: dict[tuple[bytes, bytes], ClientCert] = {}
    for pair in pairs:
        distinct.setdefault((_read(pair.cert, "client certificate"), _read(pair.key, "key")), pair)
    if len(distinct) > 1:
        shown = ", ".join(str(p.cert) for p in distinct.values())
        raise InputError(f"several client certificates apply to {host} ({shown}): keep one pair")
    return next(iter(distinct.values()), None)


def check(trust: HostTrust) -> None:
    """Load ``trust``'s files into a bare context (no system store: cheap), so a bad file is an
    :class:`InputError` before any request."""
    _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), trust)


def system_context() -> ssl.SSLContext:
    """A verifying context with the system trust (httpx2's default, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured).

    Not truststore on Linux: there it reads the same OpenSSL paths, and re-adds them on every handshake, which
    OpenSSL < 3.4 accumulates (sethmlarson/truststore#212); httpcore2 uses truststore on macOS and Windows.
    """
    import httpx2

    return httpx2.create_ssl_context(verify=True, trust_env=True)


def context(trust: HostTrust) -> ssl.SSLContext:
    """The system trust plus ``trust``'s CA files and client certificate (loads the system store: ~50 ms)."""
    return _load(system_context(), trust)


def _load(ctx: ssl.SSLContext, trust: HostTrust) -> ssl.SSLContext:
    for path in trust.ca_files:
        _load_cas(ctx, path)
    if trust.client_cert is not None:
        _load_client_cert(ctx, trust.client_cert)
    return ctx


def _load_cas(ctx: ssl.SSLContext, path: Path) -> None:
    text = _read(path, "CA file").decode("ascii", errors="replace")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise InputError(f"CA file {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        ctx.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise InputError(f"CA file {path} is not a valid PEM certificate bundle: {_reason(exc)}") from None


def _load_client_cert(ctx: ssl.SSLContext, pair: ClientCert) -> None:
    _load_cas(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), pair.cert)  # the certificate parses, alone
    key = _read(pair.key, "key").decode("ascii", errors="replace")
    if "PRIVATE KEY-----" not in key:
        raise InputError(f"key {pair.key} holds no PEM private key")
    if "ENCRYPTED" in key:
        raise InputError(f"key {pair.key} is encrypted: ocicopy needs it unencrypted")

    def no_password() -> NoReturn:  # never OpenSSL's prompt on the terminal
        raise InputError(f"key {pair.key} is encrypted: ocicopy needs it unencrypted")

    try:
        ctx.load_cert_chain(pair.cert, pair.key, password=no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InputError(f"key {pair.key} does not belong to client certificate {pair.cert}") from None
        raise InputError(f"cannot load client certificate {pair.cert} with key {pair.key}: {_reason(exc)}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else (str(exc.args[-1]) if exc.args else type(exc).__name__)


# -- classifying a failed handshake ----------------------------------------------------------------------------

#: OpenSSL reasons of a TLS client answered in plain text (OpenSSL 3.0: WRONG_VERSION_NUMBER; 3.2+ may say
#: RECORD_LAYER_FAILURE; a server that reads our ClientHello as HTTP answers "400", read as PACKET_LENGTH_TOO_LONG).
_PLAIN_HTTP = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST"})
#: The server refused our certificate, or the lack of one (Go's registry: bad certificate; TLS 1.3: certificate
#: required; unknown CA: it does not trust our certificate's issuer).
_CLIENT_CERT = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
#: Verification codes the CA options fix (X509_V_ERR_*: issuer unknown, self-signed leaf or chain).
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})


def find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The :class:`ssl.SSLError` behind ``exc`` (httpx2 and httpcore2 chain it), unless it is an EOF (a dropped
    connection, retried like any other)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return None if isinstance(seen, ssl.SSLEOFError | ssl.SSLZeroReturnError) else seen
        seen = seen.__cause__ or seen.__context__
    return None


def failure_kind(error: ssl.SSLError) -> str:
    """``untrusted`` (the CA options help), ``invalid`` (expired, wrong name...), ``plain-http`` (the host answered
    TLS in plain text), ``client-cert`` (the host refused our certificate or its absence) or ``other``."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return "untrusted" if error.verify_code in _UNTRUSTED else "invalid"
    reason = str(error.reason or "")
    if reason in _PLAIN_HTTP:
        return "plain-http"
    if reason in _CLIENT_CERT:
        return "client-cert"
    return "other"


def describe(error: ssl.SSLError) -> str:
    """OpenSSL's words for ``error``, without the ``[SSL: REASON]`` head or the ``(_ssl.c:1006)`` tail."""
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    text = str(error.args[1]) if len(error.args) > 1 else str(error)
    return re.sub(r"^\[[A-Z0-9_: ]+\]\s*", "", text.split(" (_ssl.c:")[0]) or str(error.reason)


def explain(error: ssl.SSLError, host: str, trust: HostTrust, roots: Iterable[str], *, via: str = "") -> str:
    """What a failed handshake with ``host`` means and what fixes it, in one line.

    ``via`` says how ``host`` was reached when it is not the registry asked (``"a redirect from R"``, ``"the token
    service of R"``): the command line's certificate options are for registries, so only the host's own places
    are suggested. Plain HTTP is suggested only to a registry that answered TLS in plain text.
    """
    kind, why = failure_kind(error), describe(error)
    where = f"{host} ({via})" if via else host
    if kind == "untrusted":
        added = f"; trusted for it beyond the system store: {_files(trust.ca_files)}" if trust.ca_files else ""
        places = _places(host, roots, via, "cert_dir or ca_file")
        return (
            f"the TLS certificate of {where} is not trusted ({why}{added}): "
            f"to trust a private CA for {host}, put its certificate as ca.crt in {places}"
        )
    if kind == "invalid":
        return f"the TLS certificate of {where} is not valid ({why})"
    if kind == "plain-http":
        if via:
            return f"{where} did not answer TLS ({why})"
        return (
            f"{host} did not answer TLS ({why}): if it speaks plain HTTP only, mark it with --plain-http {host} "
            "(or plain_http: true for it in a plan's registries)"
        )
    if kind == "client-cert":
        if trust.client_cert is not None:
            return f"{where} refused the client certificate {trust.client_cert.cert} ({why})"
        places = _places(host, roots, via, "cert_dir")
        return (
            f"{where} refused the TLS connection ({why}): it may require a client certificate, "
            f"a NAME.cert + NAME.key pair in {places}"
        )
    return f"TLS handshake with {where} failed ({why})"


def reset_hint(host: str, cert: ClientCert) -> str:
    """What a connection reset right after the handshake may mean when a client certificate was presented."""
    return (
        f"if {host} refused the client certificate {cert.cert}, TLS 1.3 can report it as a reset: "
        f"check that it is issued by a CA {host} trusts"
    )


def _places(host: str, roots: Iterable[str], via: str, fields: str) -> str:
    """Where trust for ``host`` can go: the command line's directory (registries only), its certs.d
    directories, a plan's ``registries`` entry."""
    options = [] if via else ["a directory given with --src-cert-dir/--dest-cert-dir DIR (or --cert-dir DIR)"]
    options += [f"{root}/{host}/" for root in expand_roots(roots)]
    return f"{' or '.join(options) or 'a certs.d directory'}, or set {fields} for {host} in a plan's registries"


def _files(paths: Iterable[Path]) -> str:
    return ", ".join(str(p) for p in paths)
