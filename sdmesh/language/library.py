"""Where the built-in component library (``descriptors/``) lives.

Old SmartDomains descriptors include SmartFrog class-path names such as
``org/smartfrog/components.sf``; those resolve to files of this library, so they run unchanged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_MARKER = Path("org/smartfrog/components.sf")


def library_dir() -> Path:
    """The built-in library: ``$SDMESH_LIBRARY``, the source tree, or ``<prefix>/share``."""
    override = os.environ.get("SDMESH_LIBRARY")
    if override:
        return Path(override)
    candidates = [
        Path(__file__).resolve().parents[2] / "descriptors",  # source tree / editable install
        Path(sys.prefix) / "share" / "sdmesh" / "descriptors",  # wheel install
    ]
    for candidate in candidates:
        if (candidate / _MARKER).is_file():
            return candidate
    return candidates[0]


def env_search_path() -> list[Path]:
    """Roots named by ``SDMESH_PATH`` (colon-separated, like ``PATH``)."""
    value = os.environ.get("SDMESH_PATH", "")
    return [Path(item) for item in value.split(os.pathsep) if item]
