"""The pure cores stay pure (ARCHITECTURE.md): no event loops, sockets or node shell."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_EVERYWHERE = {"asyncio", "trio", "libp2p", "aiosqlite", "aiohttp", "node"}
FORBIDDEN = {
    "consensus": FORBIDDEN_EVERYWHERE | {"sharding"},
    "sharding": FORBIDDEN_EVERYWHERE,
}


def imported_top_level_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_pure_core_imports_no_io_or_shell(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_level_modules(path) & FORBIDDEN[package])
        for path in files
    }
    offenders = {path: mods for path, mods in offenders.items() if mods}
    assert offenders == {}


def test_import_checker_detects_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom node.store import Store\nimport hashlib\n")
    assert imported_top_level_modules(sample) == {"asyncio", "node", "hashlib"}
