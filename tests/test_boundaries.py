"""design.md rule 1: the harness and the bridge never import each other.

Two independent checks: import-linter's contract (pyproject.toml, follows
indirect imports through the import graph), and a plain AST scan that also
catches imports hidden inside functions, which a reviewer would expect to fail.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(pkg: str) -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((ROOT / pkg).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(str(path.relative_to(ROOT)), node.lineno, n) for n in names]
    return found


def test_simulator_never_imports_bridge():
    bad = [f for f in _imports("simulator") if f[2] == "bridge" or f[2].startswith("bridge.")]
    assert not bad, f"simulator/ imports bridge: {bad}"


def test_bridge_never_imports_simulator():
    bad = [f for f in _imports("bridge") if f[2] == "simulator" or f[2].startswith("simulator.")]
    assert not bad, f"bridge/ imports simulator: {bad}"


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_scan_would_catch_a_violation(tmp_path, monkeypatch):
    """The AST scan itself works: a planted import is found."""
    pkg = tmp_path / "simulator"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from bridge import app\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [f[2] for f in _imports("simulator")] == ["bridge"]
