"""Session-wide real registries for the test suite.

Fixtures never skip: if a registry or the token server cannot start, the fixture raises and every
test using it errors with the reason (and the registry log tail).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness.registry import RegistryServer, start_registry, unique_repo_name
from harness.tokenserver import TokenServer, start_token_server

REGISTRY_FIXTURES = frozenset({"registry", "registry2", "basic_registry", "token_registry", "token_server"})


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """The suite runs ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Anonymous registry shared by the session."""
    with start_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def registry2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A second anonymous registry, for cross-registry copies."""
    with start_registry(tmp_path_factory.mktemp("registry2")) as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Registry with htpasswd basic auth; credentials in ``.username`` / ``.password``."""
    with start_registry(tmp_path_factory.mktemp("basic-registry"), "basic") as server:
        yield server


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """Token server (admin user grants all, ``reader`` user gets pull only)."""
    with start_token_server(tmp_path_factory.mktemp("token-server")) as server:
        yield server


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[RegistryServer]:
    """Registry with ``auth: token`` trusting ``token_server``; credentials are the token server's admin."""
    with start_registry(tmp_path_factory.mktemp("token-registry"), "token", token_server=token_server) as server:
        yield server


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test uses, e.g. ``t/test-copy-index-oci-7``."""
    return unique_repo_name(request.node.name)


@pytest.fixture
def make_repo(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Factory for more unique repository names in one test: ``make_repo("src")``."""

    def make(suffix: str = "") -> str:
        return unique_repo_name(f"{request.node.name}-{suffix}")

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests that use a registry fixture with ``registry``."""
    for item in items:
        if REGISTRY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.registry)
