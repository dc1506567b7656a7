"""Tests for the pure half of ocicopy.auth: challenge parsing, scope algebra (with hypothesis laws), token
answers, realm checks (nothing secret in the messages) and the per-host token cache."""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx2
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ocicopy.auth import (
    DEFAULT_TOKEN_TTL,
    PULL,
    PUSH,
    REFRESH_MARGIN,
    HostAuthState,
    Scopes,
    Token,
    check_realm,
    parse_challenge,
    parse_token_response,
)
from ocicopy.errors import InsecureRequestError

HTTPS_REGISTRY = httpx2.URL("https://reg.example:5000/")
HTTP_REGISTRY = httpx2.URL("http://reg.example:5000/")

# --- parse_challenge ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "scheme", "params"),
    [
        pytest.param(
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/ubuntu:pull"',
            "bearer",
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/ubuntu:pull",
            },
            id="docker-hub",
        ),
        pytest.param(
            'Bearer realm="https://a/t",error="insufficient_scope",scope="repository:a:pull repository:b:pull,push"',
            "bearer",
            {
                "realm": "https://a/t",
                "error": "insufficient_scope",
                "scope": "repository:a:pull repository:b:pull,push",
            },
            id="insufficient-scope",
        ),
        pytest.param(
            'Bearer realm="https://a/t?x=1,2",service="svc \\"q\\" , x"',
            "bearer",
            {"realm": "https://a/t?x=1,2", "service": 'svc "q" , x'},
            id="commas-and-escaped-quotes",
        ),
        pytest.param('Bearer realm="a\\\\b"', "bearer", {"realm": "a\\b"}, id="escaped-backslash"),
        pytest.param('BASIC realm="Registry Realm"', "basic", {"realm": "Registry Realm"}, id="basic-upper"),
        pytest.param('Basic realm="x"', "basic", {"realm": "x"}, id="basic"),
        pytest.param("Basic", "basic", {}, id="basic-bare"),
        pytest.param(
            "Bearer realm=https://a/t, service=reg", "bearer", {"realm": "https://a/t", "service": "reg"}, id="unquoted"
        ),
        pytest.param('Bearer  realm = "a" ,  service = "b"', "bearer", {"realm": "a", "service": "b"}, id="spacing"),
        pytest.param('Bearer Realm="a",SERVICE="s"', "bearer", {"realm": "a", "service": "s"}, id="param-case"),
        pytest.param('  Bearer realm="a"  ', "bearer", {"realm": "a"}, id="surrounding-space"),
        pytest.param('Bearer realm="a", Basic realm="b"', "bearer", {"realm": "a"}, id="first-challenge-only"),
        pytest.param('Bearer realm="a",,service="b"', "bearer", {"realm": "a"}, id="stops-at-empty-item"),
        pytest.param('Bearer realm="abc\\"', "bearer", {}, id="unterminated-quote"),
        pytest.param('Bearer realm="a"junk,service="b"', "bearer", {}, id="junk-after-quote"),
        pytest.param("Bearer realm", "bearer", {}, id="name-without-value"),
        pytest.param("junk", "junk", {}, id="junk"),
    ],
)
def test_parse_challenge_table(header: str, scheme: str, params: dict[str, str]) -> None:
    c = parse_challenge(header)
    assert c is not None
    assert c.scheme == scheme
    assert dict(c.params) == params
    assert c.realm == params.get("realm")
    assert c.service == params.get("service")
    assert c.error == params.get("error")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        'Bearer realm="' + "a" * 5000 + '"',
        "Bearer " + "x" * 4100,
    ],
)
def test_parse_challenge_unusable(header: str | None) -> None:
    assert parse_challenge(header) is None


def test_parse_challenge_long_but_under_the_cap() -> None:
    realm = "https://auth.example/" + "a" * 3000
    c = parse_challenge(f'Bearer realm="{realm}"')
    assert c is not None
    assert c.realm == realm


_param_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True)
_param_values = st.text(st.characters(codec="utf-8"), max_size=40)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@given(st.dictionaries(_param_names, _param_values, max_size=6), st.sampled_from(["Bearer", "Basic", "bearer"]))
def test_parse_challenge_round_trips_quoted_params(params: dict[str, str], scheme: str) -> None:
    lowered = {k.lower(): v for k, v in params.items()}
    assume(len(lowered) == len(params))
    quoted = ", ".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in params.items()
    )
    header = f"{scheme} {quoted}".rstrip()
    assume(len(header) <= 4096)
    c = parse_challenge(header)
    assert c is not None
    assert c.scheme == scheme.lower()
    assert dict(c.params) == lowered


@given(st.text(max_size=300))
def test_parse_challenge_never_raises(header: str) -> None:
    c = parse_challenge(header)
    assert c is None or c.scheme == c.scheme.lower()


# --- Scopes ---------------------------------------------------------------------------------------------------


def test_pull_and_push() -> None:
    assert Scopes.pull("a/b").strings() == ["repository:a/b:pull"]
    assert Scopes.push("a/b").strings() == ["repository:a/b:pull,push"]
    assert PULL <= PUSH


def test_of_sorts_and_strings_sort_actions() -> None:
    s = Scopes.of({"z": ["push", "pull"], "a": {"pull"}})
    assert s.strings() == ["repository:a:pull", "repository:z:pull,push"]
    assert s == Scopes.of({"a": ["pull"], "z": ("pull", "push")})


def test_merge_accumulates_a_mount() -> None:
    # A mount needs pull on the source and pull,push on the destination: one token request.
    s = Scopes.push("dst").merge(Scopes.pull("src"))
    assert s.strings() == ["repository:dst:pull,push", "repository:src:pull"]
    assert s.merge(Scopes.pull("dst")) == s


@pytest.mark.parametrize(
    ("have", "need", "covers"),
    [
        (Scopes.push("a"), Scopes.pull("a"), True),
        (Scopes.pull("a"), Scopes.push("a"), False),
        (Scopes.pull("a"), Scopes.pull("b"), False),
        (Scopes.pull("a").merge(Scopes.pull("b")), Scopes.pull("b"), True),
        (Scopes(), Scopes(), True),
        (Scopes.pull("a"), Scopes(), True),
        (Scopes(), Scopes.pull("a"), False),
        (Scopes.of({"a": ["*"]}), Scopes.pull("a"), False),
    ],
)
def test_covers_table(have: Scopes, need: Scopes, covers: bool) -> None:
    assert have.covers(need) is covers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("repository:a/b:pull", {"a/b": {"pull"}}),
        ("repository:a:pull,push repository:b:pull", {"a": {"pull", "push"}, "b": {"pull"}}),
        ("repository:a:pull  repository:a:push", {"a": {"pull", "push"}}),
        ("repository:host:5000/a:pull", {"host:5000/a": {"pull"}}),
        ("registry:catalog:*", {}),
        ("repository:a", {}),
        ("repository::pull", {}),
        ("repository:a:", {"a": set()}),
        ("repository:a:pull,,push,", {"a": {"pull", "push"}}),
        ("", {}),
        ("garbage", {}),
    ],
)
def test_parse_table(text: str, expected: dict[str, set[str]]) -> None:
    assert Scopes.parse(text) == Scopes.of(expected)


# A small pool (so merges collide) plus generated distribution-grammar names.
_repos = st.one_of(
    st.sampled_from(["a", "b", "library/ubuntu", "org/team/app", "a.b-c__d", "host:5000/x"]),
    st.builds("/".join, st.lists(st.text("abcxyz019", min_size=1, max_size=5), min_size=1, max_size=3)),
)
_actions = st.frozensets(st.sampled_from(["pull", "push", "delete", "*"]), max_size=4)
scopes = st.dictionaries(_repos, _actions, max_size=4).map(Scopes.of)


@given(scopes, scopes)
def test_merge_is_commutative(a: Scopes, b: Scopes) -> None:
    assert a.merge(b) == b.merge(a)


@given(scopes, scopes, scopes)
def test_merge_is_associative(a: Scopes, b: Scopes, c: Scopes) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(scopes)
def test_merge_is_idempotent_with_empty_as_identity(a: Scopes) -> None:
    assert a.merge(a) == a
    assert a.merge(Scopes()) == a


@given(scopes, scopes)
def test_merge_covers_both_operands(a: Scopes, b: Scopes) -> None:
    m = a.merge(b)
    assert m.covers(a)
    assert m.covers(b)


@given(scopes)
def test_covers_is_reflexive(a: Scopes) -> None:
    assert a.covers(a)


@st.composite
def narrower(draw: st.DrawFn, base: Scopes) -> Scopes:
    """A Scopes that ``base`` covers: a subset of its repositories, each with a subset of its actions."""
    kept = draw(st.lists(st.sampled_from(base.items), unique=True)) if base.items else []
    return Scopes.of({repo: draw(st.sets(st.sampled_from(sorted(acts)))) if acts else set() for repo, acts in kept})


@given(st.data(), scopes)
def test_covers_is_transitive(data: st.DataObject, a: Scopes) -> None:
    b = data.draw(narrower(a))
    c = data.draw(narrower(b))
    assert a.covers(b)
    assert b.covers(c)
    assert a.covers(c)


@given(scopes, scopes, scopes)
def test_covers_implication_on_arbitrary_triples(a: Scopes, b: Scopes, c: Scopes) -> None:
    if a.covers(b) and b.covers(c):
        assert a.covers(c)
    # and a wider Scopes covers at least what a narrower one does
    assert a.merge(b).covers(c) or not (a.covers(c) or b.covers(c))


@given(scopes)
def test_strings_parse_round_trip(a: Scopes) -> None:
    assert Scopes.parse(" ".join(a.strings())) == a


@given(scopes)
def test_strings_are_sorted_and_canonical(a: Scopes) -> None:
    strings = a.strings()
    assert strings == sorted(strings, key=lambda s: s.rsplit(":", 1)[0])
    for s in strings:
        actions = s.rsplit(":", 1)[1]
        assert actions.split(",") == sorted(actions.split(",")) or actions == ""


# --- parse_token_response -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "value", "lifetime"),
    [
        pytest.param({"token": "abc", "expires_in": 300}, "abc", 300.0, id="token"),
        pytest.param({"access_token": "xyz", "expires_in": 120}, "xyz", 120.0, id="access-token"),
        pytest.param({"token": "t", "access_token": "a", "expires_in": 90}, "t", 90.0, id="token-preferred"),
        pytest.param({"token": "", "access_token": "a"}, "a", DEFAULT_TOKEN_TTL, id="empty-token-falls-back"),
        pytest.param({"token": "abc"}, "abc", DEFAULT_TOKEN_TTL, id="missing-expiry"),
        pytest.param({"token": "abc", "expires_in": 0}, "abc", DEFAULT_TOKEN_TTL, id="zero"),
        pytest.param({"token": "abc", "expires_in": -5}, "abc", DEFAULT_TOKEN_TTL, id="negative"),
        pytest.param({"token": "abc", "expires_in": True}, "abc", DEFAULT_TOKEN_TTL, id="bool"),
        pytest.param({"token": "abc", "expires_in": "300"}, "abc", DEFAULT_TOKEN_TTL, id="string"),
        pytest.param({"token": "abc", "expires_in": None}, "abc", DEFAULT_TOKEN_TTL, id="null"),
        pytest.param({"token": "abc", "expires_in": 30.5}, "abc", 30.5, id="float"),
        pytest.param({"token": "abc", "expires_in": 1}, "abc", REFRESH_MARGIN + 1, id="shorter-than-margin"),
        pytest.param({"token": "a" * 16384}, "a" * 16384, DEFAULT_TOKEN_TTL, id="longest"),
    ],
)
def test_token_response_table(body: dict[str, object], value: str, lifetime: float) -> None:
    scopes = Scopes.pull("a")
    t = parse_token_response(body, scopes, now=1000.0)
    assert t.value == value
    assert t.scopes == scopes
    assert t.expires_at == pytest.approx(1000.0 + lifetime)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([], id="array"),
        pytest.param("token", id="string"),
        pytest.param(None, id="null"),
        pytest.param({}, id="no-token"),
        pytest.param({"token": ""}, id="empty"),
        pytest.param({"token": None, "access_token": None}, id="nulls"),
        pytest.param({"token": 123}, id="number"),
        pytest.param({"token": ["a"]}, id="list"),
        pytest.param({"token": "ab c"}, id="space"),
        pytest.param({"token": "abc\r\nX-Injected: 1"}, id="crlf"),
        pytest.param({"token": "abc\t"}, id="tab"),
        pytest.param({"access_token": "abc\n"}, id="newline"),
        pytest.param({"token": "a" * 16385}, id="oversize"),
    ],
)
def test_token_response_rejects(body: object) -> None:
    with pytest.raises(ValueError):
        parse_token_response(body, Scopes.pull("a"), now=0.0)


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("t\u00f6ken", id="non-ascii"),
        pytest.param("abc\x00def", id="nul"),
        pytest.param("abc\x7f", id="del"),
        pytest.param("abc\x1bdef", id="escape"),
    ],
)
def test_token_response_rejects_values_that_cannot_be_an_http_header(token: str) -> None:
    # The value goes verbatim into "Authorization: Bearer <token>". httpx2 encodes header values as ASCII, so
    # a non-ASCII token raises UnicodeEncodeError inside Transport._send_once (not an OcicopyError), and control
    # characters are only refused by h11 when sending. RFC 6750 b64token is printable ASCII.
    with pytest.raises(ValueError):
        parse_token_response({"token": token}, Scopes.pull("a"), now=0.0)


def test_token_repr_hides_value() -> None:
    t = parse_token_response({"token": "s3cr3t-value"}, Scopes.pull("a"), now=0.0)
    assert "s3cr3t-value" not in repr(t)


@pytest.mark.parametrize(
    ("now", "fresh"),
    [(0.0, True), (100.0 - REFRESH_MARGIN - 0.001, True), (100.0 - REFRESH_MARGIN, False), (150.0, False)],
)
def test_token_fresh_keeps_a_margin(now: float, fresh: bool) -> None:
    assert Token("v", Scopes(), 100.0).fresh(now) is fresh


# --- check_realm --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "registry", "expected"),
    [
        ("https://auth.docker.io/token", HTTPS_REGISTRY, "https://auth.docker.io/token"),
        ("https://reg.example:5000/auth", HTTPS_REGISTRY, "https://reg.example:5000/auth"),
        ("https://auth.example/token?account=x", HTTPS_REGISTRY, "https://auth.example/token?account=x"),
        ("https://auth.example/token#frag", HTTPS_REGISTRY, "https://auth.example/token"),
        ("http://auth.example/token", HTTP_REGISTRY, "http://auth.example/token"),
        ("https://auth.example/token", HTTP_REGISTRY, "https://auth.example/token"),
        ("HTTPS://Auth.Example/token", HTTPS_REGISTRY, "https://auth.example/token"),
    ],
)
def test_check_realm_accepts(realm: str, registry: httpx2.URL, expected: str) -> None:
    assert str(check_realm(realm, registry)) == expected


@pytest.mark.parametrize(
    ("realm", "registry", "message"),
    [
        pytest.param("http://auth.example/token", HTTPS_REGISTRY, "plain http", id="http-from-https"),
        pytest.param("https://user:s3cr3t@auth.example/token", HTTPS_REGISTRY, "userinfo", id="userinfo"),
        pytest.param("https://s3cr3t@auth.example/token", HTTPS_REGISTRY, "userinfo", id="username-only"),
        pytest.param("http://user:s3cr3t@auth.example/token", HTTP_REGISTRY, "userinfo", id="userinfo-http"),
        pytest.param("/token", HTTPS_REGISTRY, "absolute", id="relative"),
        pytest.param("token", HTTPS_REGISTRY, "absolute", id="bare-word"),
        pytest.param("", HTTPS_REGISTRY, "absolute", id="empty"),
        pytest.param("ftp://auth.example/token", HTTPS_REGISTRY, "absolute", id="ftp"),
        pytest.param("file:///etc/passwd", HTTPS_REGISTRY, "absolute", id="file"),
        pytest.param("javascript:alert(1)", HTTPS_REGISTRY, "absolute", id="javascript"),
        pytest.param("https:///token", HTTPS_REGISTRY, "absolute", id="no-host"),
        pytest.param("//auth.example/token", HTTPS_REGISTRY, "absolute", id="scheme-relative"),
        pytest.param("https://user:s3cr3t@auth.example:abc/token", HTTPS_REGISTRY, "invalid", id="bad-port"),
        pytest.param("https://user:s3cr3t@exa\x00mple/token", HTTPS_REGISTRY, "invalid", id="nul"),
    ],
)
def test_check_realm_refuses(realm: str, registry: httpx2.URL, message: str) -> None:
    with pytest.raises(InsecureRequestError, match=message) as info:
        check_realm(realm, registry)
    assert "reg.example:5000" in str(info.value)
    assert "s3cr3t" not in str(info.value)
    assert "s3cr3t" not in repr(info.value.__cause__)


@given(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=6, max_size=30))
def test_check_realm_never_shows_the_password(password: str) -> None:
    secret = "Zq" + password
    realm = f"https://user:{quote(secret, safe='')}@auth.example/token"
    with pytest.raises(InsecureRequestError) as info:
        check_realm(realm, HTTPS_REGISTRY)
    shown = str(info.value)
    assert secret not in shown
    assert quote(secret, safe="") not in shown
    assert "Zq" not in shown


# --- HostAuthState ----------------------------------------------------------------------------------------------


def _token(value: str, scopes: Scopes, ttl: float) -> Token:
    return Token(value, scopes, time.monotonic() + ttl)


def test_empty_state_has_no_token() -> None:
    assert HostAuthState().token_for(Scopes.pull("a")) is None


def test_token_for_reuses_a_token_covering_a_superset() -> None:
    state = HostAuthState()
    wide = _token("wide", Scopes.push("a").merge(Scopes.pull("b")), 3600)
    state.remember(wide)
    assert state.token_for(Scopes.pull("a")) is wide
    assert state.token_for(Scopes.pull("b")) is wide
    assert state.token_for(Scopes.push("a")) is wide
    assert state.token_for(Scopes.push("b")) is None
    assert state.token_for(Scopes.pull("c")) is None


def test_token_for_drops_expired_tokens() -> None:
    state = HostAuthState()
    stale = _token("stale", Scopes.push("a"), REFRESH_MARGIN - 1)  # inside the refresh margin
    state.tokens.append(stale)
    assert state.token_for(Scopes.pull("a")) is None
    assert state.tokens == []


def test_token_for_skips_expired_and_finds_fresh() -> None:
    state = HostAuthState()
    stale = _token("stale", Scopes.push("a"), -1)
    fresh = _token("fresh", Scopes.pull("a"), 3600)
    state.tokens.extend([stale, fresh])
    assert state.token_for(Scopes.pull("a")) is fresh
    assert state.tokens == [fresh]


def test_remember_replaces_covered_tokens_only() -> None:
    state = HostAuthState()
    pull_a = _token("pull-a", Scopes.pull("a"), 3600)
    pull_b = _token("pull-b", Scopes.pull("b"), 3600)
    state.remember(pull_a)
    state.remember(pull_b)
    assert state.tokens == [pull_a, pull_b]
    push_a = _token("push-a", Scopes.push("a"), 3600)
    state.remember(push_a)
    assert state.tokens == [pull_b, push_a]
    assert state.token_for(Scopes.pull("a")) is push_a


def test_remember_narrower_token_keeps_the_wider_one() -> None:
    state = HostAuthState()
    wide = _token("wide", Scopes.push("a"), 3600)
    narrow = _token("narrow", Scopes.pull("a"), 3600)
    state.remember(wide)
    state.remember(narrow)
    assert wide in state.tokens
    assert narrow in state.tokens


def test_forget_removes_by_identity() -> None:
    state = HostAuthState()
    a = _token("same", Scopes.pull("a"), 3600)
    b = _token("same", Scopes.pull("b"), 3600)
    state.tokens.extend([a, b])
    state.forget(a)
    assert state.tokens == [b]
    assert state.token_for(Scopes.pull("a")) is None


@given(st.lists(scopes, min_size=1, max_size=6), scopes)
def test_token_for_returns_only_covering_tokens(remembered: list[Scopes], wanted: Scopes) -> None:
    state = HostAuthState()
    for i, s in enumerate(remembered):
        state.remember(_token(f"t{i}", s, 3600))
    got = state.token_for(wanted)
    if got is None:
        assert not any(t.scopes.covers(wanted) for t in state.tokens)
    else:
        assert got.scopes.covers(wanted)
    # remember never keeps a token another kept token covers, unless it came later (narrower and newer)
    for later_index, later in enumerate(state.tokens):
        for earlier in state.tokens[:later_index]:
            assert not later.scopes.covers(earlier.scopes)
