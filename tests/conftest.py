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


@pytest.fixture(autouse=True, scope="session")
def trusted_test_operator() -> Iterator[Path]:
    from sdmesh.safeio import write_private
    from sdmesh.trust.keys import OperatorKey
    from sdmesh.trust.roles import Role
    from sdmesh.trust.store import trust_operator

    names = ("SDMESH_OPERATORS_DIR", "SDMESH_API_SIGNING_KEY")
    saved = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="sdmesh-operators-") as work:
        root = Path(work)
        key = OperatorKey.generate("test-admin")
        key_file = root / "test-admin.key"
        write_private(key_file, key.file_text().encode(), 0o600)
        trusted = root / "operators.d"
        trusted.mkdir(mode=0o700)
        trust_operator(trusted, key.public, Role.ADMIN, "the test suite's operator")
        os.environ["SDMESH_OPERATORS_DIR"] = str(trusted)
        os.environ["SDMESH_API_SIGNING_KEY"] = str(key_file)
        try:
            yield key_file
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
