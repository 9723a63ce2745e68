"""Which leaves of a pool must share a host, and what each group asks of its host.

A pool's leaves are cut into *units*, the things placement moves around: a VirtualMachine and
the storage components it links to (``storageBackend LAZY ATTRIB loop``: the disk is an object
on the VM's host, so it must be created there). Leaves that belong to no VM (shells, scripts,
schedulers) run beside the shepherd. Each unit carries its demand (vCPUs, memory, disk, labels,
anti-affinity group, a pinned host from ``sfProcessHost``, the Scheduler's host list and
policy) and its ``restart`` policy. Pure: a resolved tree in, a layout out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sdmesh.components.policy import needs_shell
from sdmesh.ha.policy import IsolationError, IsolationResponse, isolation_response
from sdmesh.language.values import NULL, ComponentDescription, Reference
from sdmesh.lifecycle.behaviours import BEHAVIOURS, behaviour_for
from sdmesh.lifecycle.model import Node
from sdmesh.lifecycle.runtime import ResolutionError, resolve_attribute
from sdmesh.pools.placement import POLICIES, Demand, Policy
from sdmesh.storage.model import parse_size

VIRTUAL_MACHINE = "sdmesh.components.VirtualMachine"
SCHEDULER = "sdmesh.components.Scheduler"
STORAGE_CLASSES = frozenset(
    {
        "sdmesh.storage.Qcow2OverlayBackend",
        "sdmesh.storage.LoopbackStorageBackend",
        "sdmesh.storage.LVMStorageBackend",
    }
)
#: Storage whose disks are files on the host's filesystem (the agent's state dir), so they
#: count against its gossiped free disk. LVM snapshots live in a volume group instead.
FILE_STORAGE_CLASSES = frozenset(
    {"sdmesh.storage.Qcow2OverlayBackend", "sdmesh.storage.LoopbackStorageBackend"}
)
MIB = 1 << 20
RESTART_POLICIES = ("never", "on-failure", "always")


class LayoutError(ValueError):
    """The pool cannot be cut into units (e.g. two VMs claim one disk)."""


@dataclass(frozen=True)
class Unit:
    """A VM and the leaves it needs on its own host: placed, moved and restarted together."""

    path: str
    leaves: tuple[str, ...]
    demand: Demand
    restart: str = "never"
    isolation: IsolationResponse = "stop"  # what its host does on losing its lease (docs/ha.md)


@dataclass
class Layout:
    units: dict[str, Unit] = field(default_factory=dict)  # unit path -> unit (descriptor order)
    unit_of: dict[str, str] = field(default_factory=dict)  # leaf path -> unit path
    local: list[str] = field(default_factory=list)  # leaves that run beside the shepherd
    shell: list[str] = field(default_factory=list)  # local leaves that need allow-shell

    def demands(self) -> list[Demand]:
        return [unit.demand for unit in self.units.values()]


def skeleton(description: ComponentDescription, name: str = "sfConfig") -> Node:
    """Every component of the tree as a Node, created up front (the engine creates them as it
    deploys). Enough for run-time LAZY resolution wherever the tree is only partly here."""
    root = Node(name, description, None, behaviour_for(description))
    stack = [root]
    while stack:
        node = stack.pop()
        for child_name, child in node.description.children():
            child_node = Node(child_name, child, node, behaviour_for(child))
            node.children.append(child_node)
            stack.append(child_node)
    return root


def walk(root: Node) -> Iterator[Node]:
    """Nodes in declaration order (depth first)."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def is_leaf(node: Node) -> bool:
    sf_class = node.description.get("sfClass")
    return isinstance(sf_class, str) and sf_class not in BEHAVIOURS


def layout(description: ComponentDescription) -> Layout:
    """Cut a resolved ``sfConfig`` into units."""
    root = skeleton(description)
    result = Layout()
    nodes = {n.path: n for n in walk(root)}
    vms = [n for n in nodes.values() if n.description.get("sfClass") == VIRTUAL_MACHINE]
    claimed: dict[str, str] = {}
    for vm in vms:
        disks = _linked_storage(root, vm)
        for disk in disks:
            if disk in claimed:
                raise LayoutError(
                    f"{vm.path} and {claimed[disk]} both use the disk {disk}; "
                    "each VM needs its own storage component"
                )
            claimed[disk] = vm.path
        demand = _demand(root, vm, _disk_mib(root, [nodes[disk] for disk in disks]))
        try:
            isolation = isolation_response(vm)
        except IsolationError as error:
            raise LayoutError(str(error)) from None
        result.units[vm.path] = Unit(vm.path, (*disks, vm.path), demand, _restart(vm), isolation)
        for leaf in (*disks, vm.path):
            result.unit_of[leaf] = vm.path
    for node in walk(root):
        if is_leaf(node) and node.path not in result.unit_of:
            result.local.append(node.path)
            if needs_shell(node.description):
                result.shell.append(node.path)
    return result


def _linked_storage(root: Node, vm: Node) -> list[str]:
    """Storage leaves the VM reaches through its attributes (``storageBackend`` and any other
    link), in declaration order."""
    found: list[str] = []
    for name, attr in vm.description.attrs.items():
        if not isinstance(attr.value, Reference) or attr.value.data:
            continue
        try:
            target = resolve_attribute(root, vm, name)
        except ResolutionError:
            continue
        is_disk = isinstance(target, Node) and target.description.get("sfClass") in STORAGE_CLASSES
        if is_disk and isinstance(target, Node) and target.path not in found:
            found.append(target.path)
    return found


def _disk_mib(root: Node, disks: list[Node]) -> int:
    """MiB the unit's file-backed disks need on its host: the sum of their declared ``size``.

    Only what the descriptor declares counts. A disk without ``size`` counts 0: a qcow2
    overlay starts empty and grows as the guest writes, and a loopback copy is as large as its
    base image, which only the host can measure; so such disks are not refused here and their
    host's backend (or a full filesystem) is the check. LVM snapshots are not counted: they
    take space in a volume group, not in the filesystem the agent reports.
    """
    total = 0
    for node in disks:
        if node.description.get("sfClass") not in FILE_STORAGE_CLASSES:
            continue
        try:
            size = (
                resolve_attribute(root, node, "size") if "size" in node.description.attrs else None
            )
        except ResolutionError:
            continue  # known only at run time, on the host: like an undeclared size
        if size is None or size is NULL:
            continue
        if not isinstance(size, str):
            raise LayoutError(f'{node.path}: size must be a string such as "10G", not {size!r}')
        try:
            total += -(-parse_size(size) // MIB)  # rounded up to whole MiB
        except ValueError as error:
            raise LayoutError(f"{node.path}: {error}") from None
    return total


def _inherited(node: Node, name: str) -> object:
    """An attribute of the node or of the nearest container that sets it."""
    current: Node | None = node
    while current is not None:
        value = current.description.get(name, NULL)
        if value is not NULL and value is not None:
            return value
        current = current.parent
    return None


def _restart(vm: Node) -> str:
    """The VM's own ``restart``, unless it keeps the default and a container sets one."""
    own = vm.description.get("restart", "never")
    if own == "never":
        inherited = _inherited(vm.parent, "restart") if vm.parent else None
        if isinstance(inherited, str) and inherited in RESTART_POLICIES:
            return inherited
    return own if isinstance(own, str) and own in RESTART_POLICIES else "never"


def _demand(root: Node, vm: Node, disk_mib: int = 0) -> Demand:
    def integer(name: str, default: int) -> int:
        value = vm.description.get(name, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    labels = vm.description.get("labels", None)
    group = vm.description.get("antiAffinity", None)
    pinned = _inherited(vm, "sfProcessHost")
    hosts: tuple[str, ...] = ()
    policy: Policy = "spread"
    scheduler = _scheduler_of(root, vm)
    if scheduler is not None:
        listed = scheduler.description.get("hosts", [])
        hosts = tuple(str(h) for h in listed) if isinstance(listed, list) else ()
        wanted = scheduler.description.get("policy", "round-robin")
        for known in POLICIES:
            if wanted == known:
                policy = known
    return Demand(
        path=vm.path,
        vcpus=integer("vcpus", 1),
        memory_mib=integer("memory", 128),
        labels=frozenset(str(x) for x in labels) if isinstance(labels, list) else frozenset(),
        anti_affinity=group if isinstance(group, str) and group else None,
        pinned=pinned if isinstance(pinned, str) and pinned else None,
        hosts=hosts,
        policy=policy,
        disk_mib=disk_mib,
    )


def _scheduler_of(root: Node, vm: Node) -> Node | None:
    """The Scheduler of the nearest Schedulee above the VM (its ``scheduler`` link)."""
    current = vm.parent
    while current is not None:
        if "scheduler" in current.description.attrs:
            try:
                target = resolve_attribute(root, current, "scheduler")
            except ResolutionError:
                return None
            if isinstance(target, Node) and target.description.get("sfClass") == SCHEDULER:
                return target
            return None
        current = current.parent
    return None
