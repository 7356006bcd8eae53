"""design.md rule 1 and the rooms' rules, as import-linter contracts (pyproject.toml).

- the harness and the bridge never import each other;
- measurement reads call results, never a driver or the network room;
- the sans-IO cores import neither trio nor the network room;
- the bridge's call driver never imports the app (the app implements the driver's hooks).

import-linter reads packages from the file system, and in a checkout the ``callsim``
namespace exists only through the editable install's import hook, so the test lays the
sources out as installed (``callsim/bridge``, ``callsim/simulator``) in a temporary folder and
points import-linter at it. A plain AST scan backs the first rule up: it also sees imports
hidden inside functions and relative imports that climb out of the package.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"bridge": "callsim.bridge", "simulator": "callsim.simulator"}


def _imports(pkg: str, root: Path = ROOT) -> list[tuple[str, int, str]]:
    """Every module ``pkg`` imports, relative imports resolved against its installed name."""
    found = []
    base = root / pkg
    for path in sorted(base.rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = [PACKAGES.get(pkg, pkg)] + [p for p in rel.parts if p != "__init__"]
        package = parts if path.name == "__init__.py" else parts[:-1]
        package = ".".join(package).split(".")
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = package[: len(package) - (node.level - 1)]
                    names = [".".join(anchor + ([node.module] if node.module else []))]
                else:
                    names = [node.module or ""]
            else:
                continue
            found += [(str(path.relative_to(root)), node.lineno, n) for n in names]
    return found


def _within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_simulator_never_imports_bridge():
    bad = [f for f in _imports("simulator") if _within(f[2], "bridge", "callsim.bridge")]
    assert not bad, f"simulator/ imports the bridge: {bad}"


def test_bridge_never_imports_simulator():
    bad = [f for f in _imports("bridge") if _within(f[2], "simulator", "callsim.simulator")]
    assert not bad, f"bridge/ imports the simulator: {bad}"


def _installed_layout(dest: Path) -> Path:
    """The checkout's sources as pip installs them: dest/callsim/{bridge,simulator}."""
    for folder in PACKAGES:
        shutil.copytree(ROOT / folder, dest / "callsim" / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "assets"))
    return dest


def _lint(tree: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency"
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tree)})


def test_import_linter_contracts_hold(tmp_path):
    proc = _lint(_installed_layout(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 broken" in proc.stdout and "BROKEN" not in proc.stdout


@pytest.mark.parametrize("victim, planted", [
    ("simulator/measure/metrics.py", "from ..caller import trio_driver\n"),
    ("simulator/caller/core.py", "import trio\n"),
    ("simulator/mock/session.py", "from ..net import wsconn\n"),
    ("bridge/call.py", "from .. import simulator\n"),
    ("bridge/driver.py", "from . import app\n"),
    ("bridge/wsframes.py", "import socket\n"),
    ("simulator/net/wsframes.py", "import trio\n"),
])
def test_contracts_catch_a_planted_import(tmp_path, victim, planted):
    """Each contract can fail: one forbidden import planted in a copy breaks it."""
    tree = _installed_layout(tmp_path)
    path = tree / "callsim" / victim
    path.write_text(path.read_text() + "\n" + planted)
    proc = _lint(tree)
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout


def test_scan_would_catch_a_violation(tmp_path):
    """The AST scan itself works: a planted import, absolute or relative, is found."""
    pkg = tmp_path / "simulator"
    pkg.mkdir()
    (pkg / "x.py").write_text("def f():\n    from bridge import app\n    from ..bridge import call\n")
    assert [f[2] for f in _imports("simulator", tmp_path)] == ["bridge", "callsim.bridge"]
