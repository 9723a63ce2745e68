"""The built-in library travels with the package: a wheel built from the repository and
installed into a fresh virtualenv finds it from outside the checkout (issue 13).

No network: the wheel is built without build isolation (setuptools and wheel come from the
test environment) and installed with ``--no-deps --no-index``; the new virtualenv sees the
test environment's dependencies through a ``.pth`` line (a directory named in a ``.pth`` file
has its own ``.pth`` files ignored, so the editable sdmesh there stays out of sight).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", "build", "dist", ".make", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtualenv holding only the built wheel."""
    pytest.importorskip("wheel", reason="building the wheel offline needs the 'wheel' package")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(
        REPOSITORY,
        source,
        symlinks=True,
        ignore=lambda _dir, names: [n for n in names if n in SKIP or n.endswith(".egg-info")],
    )
    wheels = work / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([*build, "-w", str(wheels), str(source)], work)
    (wheel,) = wheels.glob("sdmesh-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], work)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], work
    )
    Path(purelib.strip(), "test-deps.pth").write_text("".join(f"{d}\n" for d in _dependency_dirs()))
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], work)
    shutil.rmtree(source)  # nothing may come from the checkout any more
    return venv / "bin"


def _dependency_dirs() -> list[str]:
    """The test environment's site directories (its dependencies), none holding sdmesh."""
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    dirs = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if not path.is_dir() or path.is_relative_to(stdlib) or (path / "sdmesh").exists():
            continue
        dirs.append(str(path))
    return dirs


def _environment() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("SDMESH_LIBRARY", "SDMESH_PATH", "PYTHONPATH")
    }


def test_the_installed_wheel_validates_a_tutorial_descriptor(
    installed: Path, tmp_path: Path
) -> None:
    descriptor = tmp_path / "pool.sf"
    shutil.copy(REPOSITORY / "descriptors" / "examples" / "haPool.sf", descriptor)
    location = _run(
        [str(installed / "python"), "-c", "import sdmesh; print(sdmesh.__file__)"],
        tmp_path,
        _environment(),
    )
    assert not Path(location.strip()).resolve().is_relative_to(REPOSITORY)
    _run([str(installed / "sdmesh"), "validate", str(descriptor)], tmp_path, _environment())


def test_the_installed_wheel_describes_its_components(installed: Path, tmp_path: Path) -> None:
    listing = _run([str(installed / "sdmesh"), "describe"], tmp_path, _environment())
    assert "Compound" in listing
    _run([str(installed / "sdmesh"), "describe", "Compound"], tmp_path, _environment())


def test_the_installed_wheel_carries_smartfrogs_include_names(
    installed: Path, tmp_path: Path
) -> None:
    descriptor = tmp_path / "old.sf"
    descriptor.write_text(
        '#include "org/smartfrog/components.sf"\n'
        '#include "org/smartfrog/sfcore/workflow/components.sf"\n'
        "sfConfig extends Compound { idle extends DoNothing; }\n"
    )
    _run([str(installed / "sdmesh"), "validate", str(descriptor)], tmp_path, _environment())
