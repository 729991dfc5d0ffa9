"""The package as pip builds it from a clone: a wheel of the two packages and their command.

The wheel is built from a copy of the clone's files (git's list: tracked and not ignored), so a
stale build/ or egg-info folder in the clone can neither leak into it nor be left behind, and
installed with --target into a temporary folder; the commands then run from another temporary
folder with only that folder added to the path (the dependencies come from this environment).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def clone_files(root: Path) -> list[str]:
    """The clone's files as git lists them (tracked, and new ones that are not ignored)."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True)
    return [name for name in listed.stdout.decode().split("\0")
            if name and (root / name).is_file()]


def checked(argv: list[str]) -> None:
    """Run argv; a failure shows its command and output."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> SimpleNamespace:
    """The wheel built from a copy of the clone, and that wheel installed into a folder."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git clone (the wheel is built from git's list of files)")
    tmp = tmp_path_factory.mktemp("install")
    source, wheels, target = tmp / "source", tmp / "wheels", tmp / "site"
    for name in clone_files(ROOT):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # the build backend of this environment, no index: the build works offline
    checked([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
             str(source)])
    (wheel,) = wheels.glob("iaprune-*.whl")
    checked([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)])
    outside = tmp / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, not the clone's src/
    return SimpleNamespace(wheel=wheel, target=target, cwd=outside, env=env)


def run_installed(installed: SimpleNamespace, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=installed.cwd, env=installed.env, capture_output=True,
                          text=True, timeout=120)


def test_the_wheel_holds_only_the_two_packages(installed):
    """The wheel's top level is iaprune and iaprune_runtime (plus its metadata): no src, no
    deploy, no tests or benchmarks."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"iaprune", "iaprune_runtime"}
    assert "iaprune/__init__.py" in names and "iaprune_runtime/__init__.py" in names


def test_the_wheel_declares_the_iaprune_command(installed):
    """The wheel's entry points declare the console command iaprune = iaprune.commands:main."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
        text = wheel.read(entry_points).decode()
    section = text.split("[console_scripts]", 1)[1].split("[", 1)[0]
    assert "iaprune = iaprune.commands:main" in [line.strip() for line in section.splitlines()]


def test_the_installed_packages_import_from_outside_the_clone(installed):
    """Outside the clone, iaprune and iaprune_runtime import from the installed copy."""
    proc = run_installed(installed, [sys.executable, "-c", "import iaprune, iaprune_runtime; "
                                     "print(iaprune.__file__); print(iaprune_runtime.__file__)"])
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.splitlines():
        assert Path(line).is_relative_to(installed.target), line


def test_python_m_iaprune_help_runs_from_outside_the_clone(installed):
    """`python -m iaprune --help` lists the steps, and a step's --help runs (its imports work)."""
    listing = run_installed(installed, [sys.executable, "-m", "iaprune", "--help"])
    assert listing.returncode == 0, listing.stderr
    assert "iterativeprune" in listing.stdout and "deploy" in listing.stdout
    step = run_installed(installed, [sys.executable, "-m", "iaprune", "retain", "--help"])
    assert step.returncode == 0 and "usage:" in step.stdout, step.stderr


def test_the_iaprune_script_runs_from_outside_the_clone(installed):
    """The installed `iaprune` script runs: --help lists the steps, --version gives the
    version pyproject.toml declares."""
    script = installed.target / "bin" / "iaprune"
    assert script.is_file()
    listing = run_installed(installed, [str(script), "--help"])
    assert listing.returncode == 0 and "iterativeprune" in listing.stdout, listing.stderr
    version = run_installed(installed, [str(script), "--version"])
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(),
                         re.MULTILINE).group(1)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"iaprune {declared}"
