"""Credential sources: explicit values, docker's config.json and docker-credential-* helpers."""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicopy.credentials import (
    DOCKER_HUB,
    DOCKER_HUB_SERVER_URL,
    ChainCredentials,
    Credentials,
    DockerConfigCredentials,
    StaticCredentials,
    default_credentials,
    normalize_host,
)
from ocicopy.errors import CredentialError

SECRET = "s3cr3t:XYZZY-hunter2"
NOT_FOUND = "credentials not found in native keychain\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def assert_no_secret(exc: BaseException, secret: str = SECRET) -> None:
    """Neither the error nor anything chained to it carries the secret."""
    seen: BaseException | None = exc
    while seen is not None:
        assert secret not in str(seen)
        assert secret not in repr(seen)
        assert all(secret not in repr(arg) for arg in seen.args)
        for attr in ("doc", "object", "stdout", "stderr", "output"):
            assert secret not in repr(getattr(seen, attr, ""))
        seen = seen.__cause__ or seen.__context__


@dataclass
class Docker:
    """A hermetic docker setup: a config dir, a bin dir of fake helpers and the environment to use."""

    config_dir: Path
    bin_dir: Path
    log: Path

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": str(self.bin_dir), "DOCKER_CONFIG": str(self.config_dir), "HOME": "/nonexistent"}

    def write_config(self, config: Mapping[str, Any] | str | bytes) -> Path:
        path = self.config_dir / "config.json"
        if isinstance(config, bytes):
            path.write_bytes(config)
        else:
            path.write_text(config if isinstance(config, str) else json.dumps(config))
        return path

    def source(self, **kwargs: Any) -> DockerConfigCredentials:
        return DockerConfigCredentials(env=self.env, **kwargs)

    def helper(
        self,
        name: str,
        answers: Mapping[str, tuple[int, str, str]] | None = None,
        default: tuple[int, str, str] = (1, NOT_FOUND, ""),
        sleep: float = 0,
    ) -> None:
        """A ``docker-credential-<name>`` that logs its argv/stdin and answers per server URL."""
        script = f"""#!{sys.executable}
import json, os, sys, time
ANSWERS = json.loads({json.dumps(dict(answers or {}))!r})
url = sys.stdin.read()
with open({str(self.log)!r}, "a") as log:
    log.write(json.dumps({{"helper": {name!r}, "argv": sys.argv[1:], "url": url,
                          "marker": os.environ.get("MARKER")}}) + "\\n")
time.sleep({sleep!r})
code, out, err = ANSWERS.get(url, {list(default)!r})
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(code)
"""
        path = self.bin_dir / f"docker-credential-{name}"
        path.write_text(script)
        path.chmod(0o755)

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def docker(tmp_path: Path) -> Docker:
    config_dir, bin_dir = tmp_path / "docker-config", tmp_path / "bin"
    config_dir.mkdir()
    bin_dir.mkdir()
    return Docker(config_dir, bin_dir, tmp_path / "helper-calls.log")


def helper_json(username: str, secret: str, url: str = "") -> str:
    return json.dumps({"ServerURL": url, "Username": username, "Secret": secret})


# --- Credentials ------------------------------------------------------------------------------------------


def test_credentials_repr_and_str_hide_secrets() -> None:
    creds = Credentials("alice", SECRET)
    token = Credentials("", "", identity_token=SECRET)
    for value in (creds, token):
        assert SECRET not in repr(value)
        assert SECRET not in str(value)
        assert SECRET not in f"{value!r} {value}"
    assert "alice" in repr(creds)
    assert not creds.is_identity_token
    assert token.is_identity_token


def test_credentials_are_frozen_values() -> None:
    creds = Credentials("alice", SECRET)
    assert creds == Credentials("alice", SECRET)
    with pytest.raises(AttributeError):
        creds.password = "other"  # type: ignore[misc]


# --- host normalisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("docker.io", DOCKER_HUB),
        ("index.docker.io", DOCKER_HUB),
        ("registry-1.docker.io", DOCKER_HUB),
        ("https://index.docker.io/v1/", DOCKER_HUB),
        ("https://registry-1.docker.io/v2/", DOCKER_HUB),
        ("Registry.Example.COM", "registry.example.com"),
        ("http://host:5000", "host:5000"),
        ("host:5000/v2/", "host:5000"),
        ("HTTPS://ghcr.io/", "ghcr.io"),
        ("localhost", "localhost"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("[::1]:5000", "[::1]:5000"),
        ("https://[fe80::1]/v2/", "[fe80::1]"),
    ],
)
def test_normalize_host(value: str, expected: str) -> None:
    assert normalize_host(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "host name", "a;rm -rf /", "host:port", "host:5000:1", "::1", "[::1", "ho$t", "a\nb", "x" * 300],
)
def test_normalize_host_rejects_garbage(value: str) -> None:
    with pytest.raises(CredentialError, match="invalid registry host"):
        normalize_host(value)


def test_normalize_host_error_hides_userinfo() -> None:
    with pytest.raises(CredentialError) as info:
        normalize_host(f"https://alice:{SECRET}@registry.example")
    assert_no_secret(info.value)


@given(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True),
    st.none() | st.integers(min_value=1, max_value=65535),
)
def test_normalize_host_is_idempotent(name: str, port: int | None) -> None:
    host = name if port is None else f"{name}:{port}"
    once = normalize_host(host)
    assert normalize_host(once) == once
    assert normalize_host(f"https://{host}/v2/") == once


# --- StaticCredentials / ChainCredentials / default_credentials -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_SERVER_URL])
async def test_static_credentials_docker_hub_aliases(key: str) -> None:
    creds = Credentials("alice", SECRET)
    source = StaticCredentials({key: creds, "ghcr.io": Credentials("bob", "pw")})
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_SERVER_URL):
        assert await source.get(alias) == creds
    assert await source.get("GHCR.io") == Credentials("bob", "pw")
    assert await source.get("quay.io") is None
    assert SECRET not in repr(source)


def test_static_credentials_conflicting_aliases() -> None:
    with pytest.raises(CredentialError, match=r"docker\.io") as info:
        StaticCredentials({"docker.io": Credentials("a", SECRET), "index.docker.io": Credentials("b", "x")})
    assert_no_secret(info.value)
    same = Credentials("a", SECRET)
    StaticCredentials({"docker.io": same, "index.docker.io": same})  # identical: fine


def test_static_credentials_rejects_bad_keys() -> None:
    with pytest.raises(CredentialError):
        StaticCredentials({"not a host": Credentials("a", "b")})


class Recording:
    def __init__(self, answer: Credentials | None) -> None:
        self.answer = answer
        self.asked: list[str] = []

    async def get(self, host: str) -> Credentials | None:
        self.asked.append(host)
        return self.answer


@pytest.mark.anyio
async def test_chain_first_non_none_wins() -> None:
    first, second, third = (
        Recording(None),
        Recording(Credentials("b", "pw")),
        Recording(Credentials("c", "x")),
    )
    chain = ChainCredentials(first, second, third)
    assert await chain.get("ghcr.io") == Credentials("b", "pw")
    assert first.asked == second.asked == ["ghcr.io"]
    assert third.asked == []
    assert await ChainCredentials(Recording(None)).get("ghcr.io") is None
    assert await ChainCredentials().get("ghcr.io") is None


@pytest.mark.anyio
async def test_default_credentials_explicit_then_docker_config(docker: Docker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker.config_dir))
    docker.write_config({"auths": {"ghcr.io": {"auth": b64("file:pw")}, "quay.io": {"auth": b64("q:pw")}}})
    explicit = Credentials("explicit", SECRET)
    source = default_credentials({"ghcr.io": explicit})
    assert await source.get("ghcr.io") == explicit
    assert await source.get("quay.io") == Credentials("q", "pw")
    assert await default_credentials().get("ghcr.io") == Credentials("file", "pw")
    assert await default_credentials({}).get("quay.io") == Credentials("q", "pw")


# --- config.json location ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_config_means_no_credentials(docker: Docker) -> None:
    assert await docker.source().get("ghcr.io") is None
    assert await docker.source().get("docker.io") is None


@pytest.mark.anyio
async def test_docker_config_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, custom = tmp_path / "home", tmp_path / "custom"
    (home / ".docker").mkdir(parents=True)
    custom.mkdir()
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"auth": b64("home:pw")}}}))
    (custom / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"auth": b64("custom:pw")}}}))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    assert await DockerConfigCredentials().get("ghcr.io") == Credentials("home", "pw")
    monkeypatch.setenv("DOCKER_CONFIG", str(custom))
    assert await DockerConfigCredentials().get("ghcr.io") == Credentials("custom", "pw")
    assert DockerConfigCredentials().config_path == custom / "config.json"
    # An explicit directory beats $DOCKER_CONFIG; an explicit env beats os.environ.
    assert await DockerConfigCredentials(config_dir=home / ".docker").get("ghcr.io") == Credentials("home", "pw")
    env = {"HOME": str(home)}
    assert await DockerConfigCredentials(env=env).get("ghcr.io") == Credentials("home", "pw")


@pytest.mark.anyio
async def test_config_is_read_lazily_and_once(docker: Docker) -> None:
    path = docker.write_config("{ not json")
    source = docker.source()  # constructing never touches the file
    path.write_text(json.dumps({"auths": {"ghcr.io": {"auth": b64("a:1")}}}))
    assert await source.get("ghcr.io") == Credentials("a", "1")
    path.write_text(json.dumps({"auths": {"quay.io": {"auth": b64("b:2")}}}))
    assert await source.get("quay.io") is None  # still the first reading


# --- auths shapes -----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"auth": b64(f"alice:{SECRET}")}, Credentials("alice", SECRET)),
        ({"username": "alice", "password": SECRET}, Credentials("alice", SECRET)),
        ({"auth": b64("alice:pw"), "username": "other", "password": "other"}, Credentials("alice", "pw")),
        ({"auth": b64("alice:"), "identitytoken": SECRET}, Credentials("alice", "", identity_token=SECRET)),
        ({"identitytoken": SECRET}, Credentials("", "", identity_token=SECRET)),
        ({"auth": b64("alice:pw"), "email": "a@example.com"}, Credentials("alice", "pw")),
        ({}, None),
        ({"auth": "", "identitytoken": ""}, None),
    ],
)
async def test_auths_entry_shapes(docker: Docker, entry: dict[str, str], expected: Credentials | None) -> None:
    docker.write_config({"auths": {"registry.example:5000": entry}})
    assert await docker.source().get("registry.example:5000") == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "asked"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("https://index.docker.io/v1/", "registry-1.docker.io"),
        ("index.docker.io", "docker.io"),
        ("docker.io", "index.docker.io"),
        ("http://host:5000", "host:5000"),
        ("host:5000/v2/", "host:5000"),
        ("https://Registry.Example/v2/", "registry.example"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
async def test_auths_url_shaped_keys(docker: Docker, key: str, asked: str) -> None:
    docker.write_config({"auths": {"unrelated.example": {"auth": b64("no:no")}, key: {"auth": b64("u:p")}}})
    assert await docker.source().get(asked) == Credentials("u", "p")


@pytest.mark.anyio
async def test_auths_port_and_host_are_distinct(docker: Docker) -> None:
    docker.write_config({"auths": {"host:5000": {"auth": b64("u:p")}}})
    source = docker.source()
    assert await source.get("host") is None
    assert await source.get("host:5001") is None


@pytest.mark.anyio
async def test_auths_prefers_dockers_own_hub_key(docker: Docker) -> None:
    docker.write_config(
        {
            "auths": {
                "docker.io": {"auth": b64("alias:pw")},
                "https://index.docker.io/v1/": {"auth": b64("canonical:pw")},
            }
        }
    )
    assert await docker.source().get("registry-1.docker.io") == Credentials("canonical", "pw")


@pytest.mark.anyio
async def test_auths_ignores_unparseable_keys(docker: Docker) -> None:
    docker.write_config({"auths": {"not a host!": {"auth": b64("x:y")}, "ghcr.io": {"auth": b64("u:p")}}})
    assert await docker.source().get("ghcr.io") == Credentials("u", "p")


@settings(max_examples=60, deadline=None)
@given(
    username=st.text(st.characters(codec="utf-8", exclude_characters=":"), max_size=20),
    password=st.text(st.characters(codec="utf-8"), max_size=40),
)
def test_auth_base64_round_trip(username: str, password: str) -> None:
    """docker splits ``auth`` on the first colon: passwords keep theirs."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "config.json").write_text(
            json.dumps({"auths": {"registry.example": {"auth": b64(f"{username}:{password}")}}})
        )
        source = DockerConfigCredentials(config_dir=Path(tmp), env={})
        got = anyio.run(source.get, "registry.example")
    expected = Credentials(username, password) if (username or password) else None
    assert got == expected


# --- malformed config.json --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (f'{{"auths": {{"ghcr.io": {{"auth": "{SECRET}"', "invalid JSON"),
        (f'["{SECRET}"]', "top level"),
        ({"auths": [SECRET]}, "'auths'"),
        ({"auths": {"ghcr.io": SECRET}}, "'auths'"),
        ({"credHelpers": {"ghcr.io": [SECRET]}}, "'credHelpers'"),
        ({"credsStore": {"x": SECRET}}, "'credsStore'"),
        ({"auths": {"ghcr.io": {"auth": SECRET}}}, "'auth' is not base64"),
        ({"auths": {"ghcr.io": {"auth": b64(SECRET.replace(":", ""))}}}, "user:password"),
        ({"auths": {"ghcr.io": {"auth": base64.b64encode(b"\xff\xfe" + SECRET.encode()).decode()}}}, "UTF-8"),
        ({"auths": {"ghcr.io": {"username": "u", "password": [SECRET]}}}, "'password'"),
        (b"\xff\xfe" + SECRET.encode(), "not UTF-8"),
    ],
)
async def test_malformed_config_names_file_not_contents(docker: Docker, content: Any, reason: str) -> None:
    path = docker.write_config(content)
    with pytest.raises(CredentialError) as info:
        await docker.source().get("ghcr.io")
    message = str(info.value)
    assert str(path) in message
    assert reason in message
    assert_no_secret(info.value)
    assert_no_secret(info.value, SECRET.replace(":", ""))


@pytest.mark.anyio
async def test_unreadable_config_is_an_error(docker: Docker) -> None:
    (docker.config_dir / "config.json").mkdir()
    with pytest.raises(CredentialError, match="cannot read docker config"):
        await docker.source().get("ghcr.io")


@pytest.mark.anyio
async def test_config_with_bom_and_nulls(docker: Docker) -> None:
    docker.write_config(b"\xef\xbb\xbf" + json.dumps({"auths": None, "credHelpers": None, "credsStore": ""}).encode())
    assert await docker.source().get("ghcr.io") is None


# --- credential helpers -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cred_helper_gets_server_url_on_stdin(docker: Docker) -> None:
    docker.helper("reg", {"registry.example:5000": (0, helper_json("alice", SECRET), "")})
    docker.write_config({"credHelpers": {"registry.example:5000": "reg"}})
    assert await docker.source().get("REGISTRY.example:5000") == Credentials("alice", SECRET)
    assert docker.calls() == [{"helper": "reg", "argv": ["get"], "url": "registry.example:5000", "marker": None}]


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "index.docker.io"])
async def test_cred_helper_for_docker_hub_gets_index_url(docker: Docker, key: str) -> None:
    docker.helper("hub", {DOCKER_HUB_SERVER_URL: (0, helper_json("alice", SECRET), "")})
    docker.write_config({"credHelpers": {key: "hub"}})
    assert await docker.source().get("registry-1.docker.io") == Credentials("alice", SECRET)
    assert [call["url"] for call in docker.calls()] == [DOCKER_HUB_SERVER_URL]


@pytest.mark.anyio
async def test_creds_store_is_used_for_every_host(docker: Docker) -> None:
    docker.helper(
        "store",
        {
            "ghcr.io": (0, helper_json("g", "gpw"), ""),
            DOCKER_HUB_SERVER_URL: (0, helper_json("d", "dpw"), ""),
        },
    )
    docker.write_config({"credsStore": "store", "auths": {"ghcr.io": {}, DOCKER_HUB_SERVER_URL: {}}})
    source = docker.source()
    assert await source.get("ghcr.io") == Credentials("g", "gpw")
    assert await source.get("docker.io") == Credentials("d", "dpw")
    assert await source.get("quay.io") is None
    assert [call["url"] for call in docker.calls()] == ["ghcr.io", DOCKER_HUB_SERVER_URL, "quay.io"]


@pytest.mark.anyio
async def test_precedence_cred_helpers_then_store_then_auths(docker: Docker) -> None:
    docker.helper("specific", default=(0, helper_json("specific", "1"), ""))
    docker.helper("store", default=(0, helper_json("store", "2"), ""))
    docker.write_config(
        {
            "credHelpers": {"ghcr.io": "specific", "opted-out.example": ""},
            "credsStore": "store",
            "auths": {"ghcr.io": {"auth": b64("auths:3")}, "opted-out.example": {"auth": b64("auths:4")}},
        }
    )
    source = docker.source()
    assert await source.get("ghcr.io") == Credentials("specific", "1")
    assert await source.get("quay.io") == Credentials("store", "2")
    # An empty credHelpers entry opts the host out of credsStore, as in docker.
    assert await source.get("opted-out.example") == Credentials("auths", "4")
    assert [call["helper"] for call in docker.calls()] == ["specific", "store"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [(1, NOT_FOUND, ""), (1, "", NOT_FOUND), (1, "Credentials Not Found In Native Keychain", "")],
)
async def test_helper_not_found_means_none_without_fallback(docker: Docker, answer: tuple[int, str, str]) -> None:
    docker.helper("store", default=answer)
    docker.write_config({"credsStore": "store", "auths": {"ghcr.io": {"auth": b64("stale:pw")}}})
    # docker ignores auths once a store is configured: the store's "not found" is the answer.
    assert await docker.source().get("ghcr.io") is None


@pytest.mark.anyio
async def test_helper_token_username_means_identity_token(docker: Docker) -> None:
    docker.helper("store", default=(0, helper_json("<token>", SECRET), ""))
    docker.write_config({"credsStore": "store"})
    creds = await docker.source().get("myregistry.azurecr.io")
    assert creds == Credentials("", "", identity_token=SECRET)
    assert creds is not None and creds.is_identity_token


@pytest.mark.anyio
async def test_helper_empty_secret_means_none(docker: Docker) -> None:
    docker.helper("store", default=(0, helper_json("", ""), ""))
    docker.write_config({"credsStore": "store"})
    assert await docker.source().get("ghcr.io") is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((1, f"boom {SECRET}", f"stderr {SECRET}"), "exit status 1"),
        ((3, helper_json("u", SECRET), ""), "exit status 3"),
        ((0, f"not json {SECRET}", ""), "malformed output"),
        ((0, json.dumps({"Username": "u", "Secret": [SECRET]}), ""), "malformed output"),
        ((0, json.dumps([SECRET]), ""), "malformed output"),
    ],
)
async def test_helper_failures_are_secret_free_errors(
    docker: Docker, answer: tuple[int, str, str], reason: str
) -> None:
    docker.helper("store", default=answer)
    docker.write_config({"credsStore": "store"})
    with pytest.raises(CredentialError) as info:
        await docker.source().get("ghcr.io")
    assert "docker-credential-store" in str(info.value)
    assert reason in str(info.value)
    assert_no_secret(info.value)


@pytest.mark.anyio
async def test_missing_helper_is_a_clear_error(docker: Docker) -> None:
    docker.write_config({"credHelpers": {"ghcr.io": "nope"}})
    with pytest.raises(CredentialError, match=r"docker-credential-nope .*not found on PATH"):
        await docker.source().get("ghcr.io")


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["../evil", "/bin/sh", "a b", "-x"])
async def test_helper_names_cannot_escape(docker: Docker, name: str) -> None:
    (docker.bin_dir / "evil").write_text("#!/bin/sh\ntouch pwned\n")
    docker.write_config({"credsStore": name})
    with pytest.raises(CredentialError, match="invalid credential helper"):
        await docker.source().get("ghcr.io")


@pytest.mark.anyio
async def test_invalid_host_never_reaches_helper(docker: Docker) -> None:
    docker.helper("store", default=(0, helper_json("u", "p"), ""))
    docker.write_config({"credsStore": "store"})
    with pytest.raises(CredentialError, match="invalid registry host"):
        await docker.source().get("ghcr.io\nevil.example")
    assert docker.calls() == []


@pytest.mark.anyio
async def test_helper_answers_are_cached_per_host(docker: Docker) -> None:
    docker.helper("store", {"ghcr.io": (0, helper_json("u", "p"), "")})
    docker.write_config({"credsStore": "store"})
    source = docker.source()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(source.get, "ghcr.io")
    assert await source.get("GHCR.IO") == Credentials("u", "p")
    assert await source.get("quay.io") is None
    assert await source.get("quay.io") is None  # "not found" is cached too
    assert [call["url"] for call in docker.calls()] == ["ghcr.io", "quay.io"]
    source.invalidate("ghcr.io")
    assert await source.get("ghcr.io") == Credentials("u", "p")
    source.invalidate()
    assert await source.get("quay.io") is None
    assert [call["url"] for call in docker.calls()] == ["ghcr.io", "quay.io", "ghcr.io", "quay.io"]


@pytest.mark.anyio
async def test_helper_errors_are_not_cached(docker: Docker) -> None:
    docker.write_config({"credsStore": "later"})
    source = docker.source()
    with pytest.raises(CredentialError):
        await source.get("ghcr.io")
    docker.helper("later", default=(0, helper_json("u", "p"), ""))
    assert await source.get("ghcr.io") == Credentials("u", "p")


@pytest.mark.anyio
async def test_helper_timeout(docker: Docker) -> None:
    docker.helper("slow", default=(0, helper_json("u", "p"), ""), sleep=30)
    docker.write_config({"credsStore": "slow"})
    with anyio.fail_after(10):
        with pytest.raises(CredentialError, match=r"docker-credential-slow did not answer within 0\.5 s"):
            await docker.source(helper_timeout=0.5).get("ghcr.io")


@pytest.mark.anyio
async def test_helper_runs_with_the_given_environment(docker: Docker) -> None:
    docker.helper("store", default=(0, helper_json("u", "p"), ""))
    docker.write_config({"credsStore": "store"})
    source = DockerConfigCredentials(env={**docker.env, "MARKER": "from-env"})
    assert await source.get("ghcr.io") == Credentials("u", "p")
    assert docker.calls()[0]["marker"] == "from-env"


@pytest.mark.anyio
async def test_helper_found_through_process_path(docker: Docker, monkeypatch: pytest.MonkeyPatch) -> None:
    docker.helper("store", default=(0, helper_json("u", SECRET), ""))
    docker.write_config({"credsStore": "store"})
    monkeypatch.setenv("PATH", str(docker.bin_dir), prepend=":")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker.config_dir))
    source = DockerConfigCredentials()
    assert await source.get("ghcr.io") == Credentials("u", SECRET)
    assert SECRET not in repr(source)


def test_reprs_are_secret_free(docker: Docker) -> None:
    creds = Credentials("alice", SECRET)
    chain = ChainCredentials(StaticCredentials({"ghcr.io": creds}), docker.source())
    assert SECRET not in repr(chain)
    assert "ghcr.io" in repr(chain)
