"""Which VMs a lease protects, from the descriptor: ``restart`` and ``isolation``.

A VM with a ``restart`` policy (``always``, ``on-failure``) is one the mesh would rebuild
elsewhere when its host is lost, so its host may run it only under a lease. ``isolation``
says what that host does when it loses its lease:

* ``stop`` (the default): it stops the VM, which the mesh then rebuilds elsewhere once the
  lease has surely ended. The VM is *fenceable* (the fence guard stops it too).
* ``keep``: it keeps the VM running, and the mesh does *not* rebuild it while its host is
  lost (a database that must never run twice and would rather wait for its host).

``isolation`` is read like ``restart``: the VM's own value, else the nearest container's.
"""

from __future__ import annotations

from typing import Literal

from sdmesh.lifecycle.model import Node

IsolationResponse = Literal["stop", "keep"]
ISOLATION_RESPONSES: tuple[IsolationResponse, ...] = ("stop", "keep")
DEFAULT_ISOLATION: IsolationResponse = "stop"


class IsolationError(ValueError):
    """A descriptor's ``isolation`` is neither ``stop`` nor ``keep``; says which component."""


def isolation_response(vm: Node) -> IsolationResponse:
    """The VM's isolation response; ``IsolationError`` for a value that is not one."""
    current: Node | None = vm
    while current is not None:
        value = current.description.get("isolation", None)
        if value is not None:
            for known in ISOLATION_RESPONSES:
                if value == known:
                    return known
            raise IsolationError(
                f'{current.path}: isolation must be "stop" or "keep" (default "stop")'
            )
        current = current.parent
    return DEFAULT_ISOLATION


def fenceable(restart: str, isolation: IsolationResponse) -> bool:
    """Stopped by its host (and by the fence guard) when the host loses its lease."""
    return restart != "never" and isolation == "stop"


def rebuildable(restart: str, isolation: IsolationResponse) -> bool:
    """May be rebuilt elsewhere when its host is lost (after the lease surely ended)."""
    return fenceable(restart, isolation)
