"""The import graph of start-up: what ``import ocicopy`` and each command load (a guard, not a timing test).

Each probe is a fresh interpreter that imports ``ocicopy.cli``, runs ``main(ARGV)`` and reports
``sys.modules``. ``--help``/``--version``/``build-key`` must not load the HTTP stack; ``copy`` and the reading
commands must not load the mirror, the plan or zstandard; ``import ocicopy`` resolves its names lazily.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ocicopy

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"

HTTP_STACK = {"httpx2", "httpcore2", "h11", "ocicopy.client", "ocicopy.transport", "anyio._backends._asyncio"}
MIRROR_SIDE = {"ocicopy.mirroring", "ocicopy.plan", "ocicopy.planner", "ocicopy.report", "ocicopy.ledger"}

_PROBE = """
import json, sys
from pathlib import Path
code = sys.argv[1]
if code == "main":
    import ocicopy.cli
    try:
        status = ocicopy.cli.main(json.loads(sys.argv[3]))
    except SystemExit as exc:
        status = exc.code
else:
    exec(code)
    status = None
Path(sys.argv[2]).write_text(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def _probe(tmp_path: Path, code: str, argv: list[str] | None = None) -> tuple[int | None, set[str]]:
    """Run ``code`` (or ``main(argv)`` when code is "main") in a fresh interpreter; its status and modules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["HOME"] = str(tmp_path)
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, code, str(out), json.dumps(argv or [])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and out.exists(), proc.stderr
    found = json.loads(out.read_text())
    return found["status"], set(found["modules"])


def _main(tmp_path: Path, *argv: str) -> tuple[int | None, set[str]]:
    return _probe(tmp_path, "main", list(argv))


# --------------------------------------------------------------------------- import ocicopy


def test_import_ocicopy_loads_neither_the_http_stack_nor_pydantic(tmp_path: Path) -> None:
    _, modules = _probe(tmp_path, "import ocicopy; ocicopy.__version__")
    assert modules & (HTTP_STACK | MIRROR_SIDE | {"pydantic", "anyio"}) == set()


def test_a_public_name_loads_only_its_module(tmp_path: Path) -> None:
    _, modules = _probe(tmp_path, "from ocicopy import build_key, parse_reference")
    assert {"ocicopy.planner", "ocicopy.reference"} <= modules
    assert modules & HTTP_STACK == set()


def test_every_public_name_resolves_to_its_module_attribute() -> None:
    lazy = vars(ocicopy)["_LAZY"]
    assert set(ocicopy.__all__) == set(lazy) | {"__version__"}
    for name, module in lazy.items():
        assert getattr(ocicopy, name) is getattr(importlib.import_module(module), name), name
    assert set(ocicopy.__all__) <= set(dir(ocicopy))
    with pytest.raises(AttributeError, match="no_such_name"):
        ocicopy.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_the_type_checking_imports_match_the_lazy_table() -> None:
    """What type checkers see (``if TYPE_CHECKING:`` imports) is what ``__getattr__`` serves."""
    tree = ast.parse((ROOT / "ocicopy" / "__init__.py").read_text())
    blocks = [n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1
    seen = {
        alias.name: node.module for node in blocks[0].body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert seen == vars(ocicopy)["_LAZY"]


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_load_nothing_of_the_engine(tmp_path: Path, flag: str) -> None:
    status, modules = _main(tmp_path, flag)
    assert status == 0
    assert modules & (HTTP_STACK | MIRROR_SIDE | {"zstandard", "pydantic"}) == set()


def test_build_key_loads_no_http_stack(tmp_path: Path) -> None:
    status, modules = _main(tmp_path, "build-key", "--repository", "https://example.com/a.git", "--commit", COMMIT)
    assert status == 0
    assert "ocicopy.plan" in modules  # it did build the key
    assert modules & (HTTP_STACK | {"zstandard", "ocicopy.mirroring"}) == set()


@pytest.mark.parametrize("side", ["layout", "registry"])
def test_copy_loads_neither_the_mirror_nor_zstandard(tmp_path: Path, side: str) -> None:
    if side == "layout":  # a source layout that does not exist: fails at once
        refs = [f"oci:{tmp_path}/missing:v1", f"oci:{tmp_path}/out:v1"]
    else:  # nothing listens on port 1: fails once the connection retries give up
        refs = ["--plain-http", "127.0.0.1:1", "127.0.0.1:1/a:v1", "127.0.0.1:1/b:v1"]
    status, modules = _main(tmp_path, "copy", "--no-docker-config", *refs)
    assert status == 1
    assert {"ocicopy.client", "ocicopy.tree"} <= modules  # the copy did run
    assert modules & (MIRROR_SIDE | {"zstandard", "ocicopy.converter"}) == set()


@pytest.mark.parametrize("command", ["inspect", "digest", "referrers", "lookup"])
def test_reading_commands_load_neither_the_mirror_nor_zstandard(tmp_path: Path, command: str) -> None:
    status, modules = _main(tmp_path, command, f"oci:{tmp_path}/missing:v1")
    assert status in (1, 2, 3)
    assert "ocicopy.client" in modules
    assert modules & (MIRROR_SIDE | {"zstandard"}) == set()


def test_compression_imports_zstandard_only_when_it_compresses(tmp_path: Path) -> None:
    _, modules = _probe(tmp_path, "import ocicopy.compression")
    assert "zstandard" not in modules
    _, modules = _probe(tmp_path, "import ocicopy.compression as c; c._GzipToZstd(3, 1 << 20)")
    assert "zstandard" in modules
