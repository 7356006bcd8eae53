"""callsim installs like a tool: one ``callsim`` namespace, fixtures as package data.

The wheel test builds the wheel, installs it into a fresh venv outside the checkout and, from
a directory holding a ``bridge.py`` and a ``simulator/`` of its own (as the users we serve
have: they write bridges), runs ``callsim fixtures``, ``python -m callsim.bridge --help`` and
one demo scenario. The fresh venv gets callsim from the wheel only (``--no-deps``); its
third-party dependencies are borrowed from the test venv through a ``.pth`` file, because
this machine may not reach PyPI and resolving them is pip's job, not ours. A ``.pth`` in a
path added that way is not run, so the checkout's editable-install hook does not leak in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"bridge": "callsim.bridge", "simulator": "callsim.simulator", "fixtures": "callsim.fixtures"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_in_the_wheel_list():
    """A new room (a folder with an __init__.py) cannot be left out of the wheel."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert listed == found


def test_package_dir_maps_the_top_folders():
    assert _pyproject()["tool"]["setuptools"]["package-dir"] == {name: folder for folder, name in FOLDERS.items()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel .`` builds from a clean copy of the checkout.

    A copy, because setuptools reads the ``*.egg-info/SOURCES.txt`` and ``build/`` an earlier
    build left in the tree: a file missing from package-data would still reach the wheel here
    and be missing from the one a fresh clone builds."""
    base = tmp_path_factory.mktemp("wheel_build")
    src, dist = base / "src", base / "dist"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
        "callsim-report", "callsim-out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(dist), str(src)], check=True, capture_output=True, cwd=base)
    return next(dist.glob("callsim-*.whl"))


def test_wheel_ships_the_report_schema(wheel):
    """report.json's schema is package data of callsim.simulator.measure, byte for byte the checkout's."""
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("callsim/simulator/measure/report.schema.json")
    assert shipped == (ROOT / "simulator" / "measure" / "report.schema.json").read_bytes()


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    """A fresh venv with the wheel installed; returns (venv bin dir, a foreign work dir)."""
    base = tmp_path_factory.mktemp("wheel")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    work = base / "user_project"
    (work / "simulator").mkdir(parents=True)
    shadow = "raise SystemExit('the user\\'s own {} was imported instead of callsim\\'s')\n"
    (work / "bridge.py").write_text(shadow.format("bridge.py"))
    (work / "simulator" / "__init__.py").write_text(shadow.format("simulator/"))
    return env_dir / "bin", work


def _run(bin_dir: Path, work: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(work), "PYTHONPATH": str(work), "COLUMNS": "100"}
    return subprocess.run(list(argv), cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def test_wheel_holds_the_fixtures_and_no_top_level_bridge(installed):
    bin_dir, work = installed
    code = ("import callsim.bridge, callsim.simulator, importlib.util as u; "
            "from callsim.simulator.audio.fixtures import DEFAULT_FIXTURES_DIR as d; "
            "from callsim.simulator.scenario import DEFAULT_DIR as s; "
            "print(callsim.bridge.__file__); print(d); print(s); "
            "print(len(list(d.glob('*.wav'))), len(list(s.glob('*.toml'))))")
    proc = _run(bin_dir, work, str(bin_dir / "python"), "-c", code)
    assert proc.returncode == 0, proc.stderr
    bridge_file, fixtures, scenarios, counts = proc.stdout.splitlines()
    for path in (bridge_file, fixtures, scenarios):
        assert "site-packages" in path and str(ROOT) not in path
    wavs, tomls = map(int, counts.split())
    assert wavs == len(list((ROOT / "fixtures" / "audio").glob("*.wav"))) and wavs > 0
    assert tomls == len(list((ROOT / "fixtures" / "scenarios").glob("*.toml"))) and tomls > 0


def test_callsim_fixtures_and_the_bridge_entry_point_outside_the_checkout(installed):
    bin_dir, work = installed
    proc = _run(bin_dir, work, str(bin_dir / "callsim"), "fixtures")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "caller_greeting" in proc.stdout
    proc = _run(bin_dir, work, str(bin_dir / "python"), "-m", "callsim.bridge", "--help")
    assert proc.returncode == 0 and "usage" in proc.stdout, proc.stdout + proc.stderr


def test_one_demo_scenario_runs_from_the_wheel(installed):
    bin_dir, work = installed
    proc = _run(bin_dir, work, str(bin_dir / "callsim"), "demo", "--only", "greeting_two_turns",
                "--report", str(work / "report"), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "greeting_two_turns" in proc.stdout
    assert (work / "report" / "report.json").exists() and (work / "report" / "report.html").exists()
