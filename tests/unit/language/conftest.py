"""Helpers: resolve descriptor text written to a temporary directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sdmesh.language import DescriptorError, ResolvedDescriptor, resolve_file

Resolve = Callable[..., ResolvedDescriptor]


@pytest.fixture
def resolve(tmp_path: Path) -> Resolve:
    """resolve(text, **other_files) -> ResolvedDescriptor (files relative to tmp_path)."""

    def run(text: str, **files: str) -> ResolvedDescriptor:
        for name, content in files.items():
            target = tmp_path / name.replace("__", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        main = tmp_path / "main.sf"
        main.write_text(text)
        return resolve_file(main)

    return run


@pytest.fixture
def errors(resolve: Resolve) -> Callable[..., list[str]]:
    """errors(text) -> ["LINE:COL: message", ...] for a descriptor that must fail."""

    def run(text: str, **files: str) -> list[str]:
        with pytest.raises(DescriptorError) as info:
            resolve(text, **files)
        return [
            f"{d.location.line}:{d.location.col}: {d.message}" if d.location else d.message
            for d in info.value.errors
        ]

    return run
