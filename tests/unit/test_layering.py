"""The library's imports point only inward, as docs/architecture.md says: every module under
ledger/ is read with `ast` (imports inside functions included) and each import is checked
against the layer order. The deployable parts beside the library (consumers/, infra/) may
import the library, never each other, and the library never imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "ledger"

# Inner to outer; a module may import its own layer and the layers before it.
LAYERS = [
    ("errors",),
    ("domain",),
    ("config", "resources"),
    ("codecs",),
    ("sources", "sinks"),
    ("app", "generate", "testing"),
    ("store",),
    ("queries",),
    ("render",),
    ("http",),
    ("cli",),
]
# The one way the command line reaches into the HTTP edge: `ledger serve` starts the server.
CLI_STARTS_THE_SERVER = {
    "cli/serve.py": {"ledger.http.app", "ledger.http.auth", "ledger.http.limits"}
}
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# What the pure core may import besides the standard library's computation modules.
DOMAIN_THIRD_PARTY = {"phonenumbers", "pycountry", "langcodes"}
IO_MODULES = {"os", "io", "pathlib", "socket", "subprocess", "shutil", "tempfile", "sqlite3"}


def modules() -> list[Path]:
    return sorted(p for p in LEDGER.rglob("*.py") if "migrations" not in p.parts)


def layer_of(path: Path) -> str:
    return path.relative_to(LEDGER).parts[0].removesuffix(".py")


def imports(path: Path, root: Path = ROOT) -> list[str]:
    """Every module name `path` imports, resolved to absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(root).parent.parts)
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, node.module or ""]).rstrip("."))
            else:
                names.append(node.module or "")
    return names


def test_every_module_has_a_layer() -> None:
    assert {layer_of(p) for p in modules()} - {"__init__"} <= set(RANK)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(LEDGER)))
def test_imports_point_inward(path: Path) -> None:
    if path == LEDGER / "__init__.py":
        return
    own = RANK[layer_of(path)]
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in ("consumers", "infra"), f"the library imports {name}"
        if top != "ledger" or name == "ledger":
            continue
        layer = name.split(".")[1]
        assert RANK[layer] <= own, f"{layer_of(path)} imports the outer layer {name}"


@pytest.mark.parametrize(
    "path", [p for p in modules() if layer_of(p) == "cli"], ids=lambda p: p.name
)
def test_the_command_line_imports_the_http_edge_only_to_start_the_server(path: Path) -> None:
    allowed = CLI_STARTS_THE_SERVER.get(str(path.relative_to(LEDGER)), set())
    for name in imports(path):
        if name == "ledger.http" or name.startswith("ledger.http."):
            assert name in allowed, f"{path.name} imports the HTTP edge: {name}"


@pytest.mark.parametrize(
    "path",
    sorted([*(ROOT / "consumers").rglob("*.py"), *(ROOT / "infra").rglob("*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_the_deployable_parts_import_the_library_never_each_other(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    other = {"consumers": "infra", "infra": "consumers"}[own]
    for name in imports(path):
        top = name.split(".")[0]
        assert top != other, f"{path.relative_to(ROOT)} imports {name}"
        assert top != "tests", f"{path.relative_to(ROOT)} imports the tests: {name}"



@pytest.mark.parametrize(
    "path", sorted((ROOT / "tools").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_tools_never_import_the_tests(path: Path) -> None:
    """`make faults` and the load run work without the test suite's fixtures: what they
    share with the tests lives in tools/ and the tests import it from there."""
    for name in imports(path):
        assert name.split(".")[0] != "tests", f"{path.relative_to(ROOT)} imports {name}"

@pytest.mark.parametrize(
    "path", [p for p in modules() if layer_of(p) == "domain"], ids=lambda p: p.name
)
def test_the_domain_does_no_io(path: Path) -> None:
    for name in imports(path):
        top = name.split(".")[0]
        assert top not in IO_MODULES, f"{path.name} imports {name}"
        if top == "ledger":
            assert name.split(".")[1] in ("domain", "errors"), f"{path.name} imports {name}"
        elif top in DOMAIN_THIRD_PARTY or top in ("__future__",):
            continue
        else:
            # Anything else must be the standard library's pure computation modules.
            assert top in {
                "bisect",
                "collections",
                "dataclasses",
                "datetime",
                "functools",
                "hashlib",
                "hmac",
                "itertools",
                "json",
                "struct",  # packing numbers into bytes (the chain's binary encoding)
                "typing",
                "uuid",
            }, f"{path.name} imports {name}"


def test_only_config_reads_the_environment() -> None:
    readers = []
    for path in modules():
        text = path.read_text()
        if "os.environ" in text or "getenv(" in text:
            readers.append(str(path.relative_to(LEDGER)))
    assert readers == ["config.py"]


def test_sources_and_sinks_know_nothing_of_the_app() -> None:
    for path in [*(LEDGER / "sources").glob("*.py"), *(LEDGER / "sinks").glob("*.py")]:
        for name in imports(path):
            assert not name.startswith(("ledger.app", "ledger.store", "ledger.cli")), (
                f"{path.name} imports {name}"
            )
