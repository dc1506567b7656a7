"""The HTTP stack is httpx2 (the maintained continuation of httpx): nothing of httpx is pulled or accepted."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

import httpx2
import pytest

import ocicopy


def _name(requirement: str) -> str:
    return re.split(r"[\s;\[<>=!~(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(dist: str) -> set[str]:
    """Names of the installed distributions ``dist`` needs, without extras, transitively."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            marker = req.partition(";")[2]
            if "extra" in marker:
                continue
            if "emscripten" in marker and "!=" not in marker:
                continue
            todo.append(_name(req))
    return seen


def test_installing_ocicopy_pulls_no_httpx() -> None:
    needed = _closure("ocicopy")
    assert "httpx2" in needed and "httpcore2" in needed
    assert not needed & {"httpx", "httpcore"}, needed


def test_importing_every_module_imports_no_httpx() -> None:
    code = (
        "import sys, pkgutil, importlib, ocicopy\n"
        "for m in pkgutil.iter_modules(ocicopy.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('ocicopy.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


class _LegacyAsyncClient:
    """Stands for an ``httpx.AsyncClient`` (httpx is not installed here); the check reads the type's module."""


_LegacyAsyncClient.__module__ = "httpx._client"
_LegacyAsyncClient.__qualname__ = "AsyncClient"


def test_an_httpx_client_is_refused_with_a_pointer_to_httpx2() -> None:
    with pytest.raises(TypeError, match=r"httpx2\.AsyncClient, not httpx\.AsyncClient.*0\.2 moved"):
        ocicopy.Client(http_client=_LegacyAsyncClient())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not builtins\.object"):
        ocicopy.Client(http_client=object())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_an_httpx2_client_is_used() -> None:
    given = httpx2.AsyncClient()
    async with ocicopy.Client(http_client=given) as client:
        assert client.transport._client(httpx2.URL("https://example.com/")) is given
    assert given.is_closed
