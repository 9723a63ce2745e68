"""Where the built-in component library (``sdmesh/descriptors/``) lives.

Old SmartDomains descriptors include SmartFrog class-path names such as
``org/smartfrog/components.sf``; those resolve to files of this library, so they run unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path


def library_dir() -> Path:
    """The built-in library: ``$SDMESH_LIBRARY``, else the package's own ``descriptors``.

    The library is package data, so an installed wheel carries it as the source tree does
    (the repository's top-level ``descriptors`` is a link to it)."""
    override = os.environ.get("SDMESH_LIBRARY")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "descriptors"


def env_search_path() -> list[Path]:
    """Roots named by ``SDMESH_PATH`` (colon-separated, like ``PATH``)."""
    value = os.environ.get("SDMESH_PATH", "")
    return [Path(item) for item in value.split(os.pathsep) if item]
