"""Who may do what: roles of people and keys, operator signatures, host identities.

A low layer (it imports nothing from the agent, pools or CLI) so that the API, the CLI, the
pool service and the mesh all share one vocabulary of trust.
"""

from pathlib import Path

#: Where a host's trust store of operator keys lives (sdmesh.trust.store).
DEFAULT_OPERATORS_DIR = Path("/etc/sdmesh/operators.d")
