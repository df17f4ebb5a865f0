"""Who may import what (docs/ARCHITECTURE.md, "Import rules").

    consensus/kernel/  codec, hashing, signatures, errors, limits: imports nothing of ours
    consensus/         the PBFT core: the kernel only
    sharding/          ledger, receipts, executor: the kernel and consensus/
    node/              the node shell: the three above, never the command line (scripts/)
    scripts/           the command line and tooling: anything

and the pure cores (kernel, consensus, sharding) import no event loop, socket or
storage library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_LIBRARIES = {"asyncio", "trio", "libp2p", "aiosqlite", "aiohttp", "sqlite3", "socket",
                "subprocess"}
OURS = {"consensus", "sharding", "node", "scripts", "tests"}

# package folder -> the modules of ours it may import (prefixes, dotted)
ALLOWED: dict[str, tuple[str, ...]] = {
    "consensus/kernel": ("consensus.kernel",),
    "consensus": ("consensus",),
    "sharding": ("consensus", "sharding"),
    "node": ("consensus", "sharding", "node"),
}
PURE = ("consensus/kernel", "consensus", "sharding")


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every absolute import in ``path`` (``from a.b import c`` gives
    ``a.b`` and ``a.b.c``: c may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files_of(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    if package == "consensus":  # the kernel has rules of its own
        files = [f for f in files if "kernel" not in f.relative_to(ROOT).parts]
    assert files, f"{package}/ has no modules"
    return files


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_of_ours_follow_the_layers(package: str) -> None:
    offenders = {}
    for path in files_of(package):
        ours = {m for m in imported_modules(path) if m.split(".")[0] in OURS}
        # ``from consensus import x`` names the package itself; judge the submodule.
        bad = sorted(m for m in ours if not allowed(m, ALLOWED[package])
                     and not any(allowed(o, ALLOWED[package]) for o in ours
                                 if o.startswith(m + ".")))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


@pytest.mark.parametrize("package", PURE)
def test_pure_cores_import_no_io(package: str) -> None:
    offenders = {}
    for path in files_of(package):
        bad = sorted({m.split(".")[0] for m in imported_modules(path)} & IO_LIBRARIES)
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def is_p2p_module(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return relative.name.startswith("p2p") or relative.parts[:2] == ("node", "p2p")


def test_only_the_p2p_modules_know_trio_or_libp2p() -> None:
    """py-libp2p lives behind the node's p2p facade; nothing else knows trio."""
    offenders = {}
    for folder in ("node", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = sorted({m.split(".")[0] for m in imported_modules(path)} & {"trio", "libp2p"})
            if bad and not is_p2p_module(path):
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_import_checker_sees_through_from_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom node.store import Store\nimport hashlib\n"
                      "from consensus import replica\n")
    assert imported_modules(sample) == {"asyncio", "node.store", "node.store.Store", "hashlib",
                                        "consensus", "consensus.replica"}
    assert not allowed("node.store", ALLOWED["sharding"])
    assert allowed("consensus.kernel.codec", ALLOWED["consensus/kernel"])
    assert not allowed("consensus.replica", ALLOWED["consensus/kernel"])


def is_simulation_module(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return relative.parts[:2] in {("consensus", "sim"), ("node", "sim")}


def test_production_code_never_imports_the_simulation_machinery() -> None:
    """The simulator's test doubles (consensus/sim/) and the whole-network simulator
    (node/sim/) stay off the production paths: only simulators, tests and tooling
    import them."""
    offenders = {}
    for folder in ("consensus", "sharding", "node"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad = sorted(m for m in imported_modules(path)
                         if allowed(m, ("consensus.sim", "node.sim")))
            if bad and not is_simulation_module(path):
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}
    assert is_simulation_module(ROOT / "node" / "sim" / "world.py")
    assert not is_simulation_module(ROOT / "consensus" / "replica.py")
