"""Shared pieces of the trust tests: descriptors, keys and trust stores on disk."""

from __future__ import annotations

import os
from pathlib import Path

from sdmesh.trust.keys import OperatorKey
from sdmesh.trust.roles import Role
from sdmesh.trust.store import TrustStore, trust_operator

VM_POOL = """#include "org/smartfrog/components.sf"
#include "ch/cern/openlab/smartdomains/components.sf"
sfConfig extends Compound {
  disk extends Qcow2OverlayBackend { baseImage "/var/lib/sdmesh/images/base.qcow2"; }
  vm extends VirtualMachine { storageBackend LAZY ATTRIB disk; }
}
"""
SHELL_POOL = """#include "org/smartfrog/components.sf"
#include "org/smartfrog/services/shellscript/components.sf"
sfConfig extends Compound {
  sh extends BashShell;
  s extends Script { shell LAZY ATTRIB sh; startScript "id"; }
}
"""
VM = "sdmesh.components.VirtualMachine"
SCRIPT = "org.smartfrog.services.shellscript.SFScriptImpl"
DIGEST = "ab" * 32


def trusted_dir(tmp_path: Path, *grants: tuple[OperatorKey, Role]) -> Path:
    """An operators.d under ``tmp_path`` trusting each (key, role)."""
    directory = tmp_path / "operators.d"
    directory.mkdir(mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    for key, role in grants:
        trust_operator(directory, key.public, role)
    return directory


def store_of(tmp_path: Path, *grants: tuple[OperatorKey, Role]) -> TrustStore:
    return TrustStore.load(trusted_dir(tmp_path, *grants))
