"""Fixtures for the whole suite.

Hosts run only pools a trusted operator signed (docs/security.md). Every agent the tests
start (loopback, network namespaces, real guests) inherits one test operator, trusted as
admin, and signs unsigned API submissions with its key (``api-signing-key``), so the tests
exercise the full signature path; tests of refusals configure their own trust stores.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sdmesh.testing.api import trusted_operator_env


@pytest.fixture(autouse=True, scope="session")
def trusted_test_operator() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sdmesh-operators-") as work:
        settings = trusted_operator_env(Path(work))
        saved = {name: os.environ.get(name) for name in settings}
        os.environ.update(settings)
        try:
            yield Path(settings["SDMESH_API_SIGNING_KEY"])
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
