"""Storage backend components: a guest disk made from ``baseImage``, released on termination."""

from __future__ import annotations

from sdmesh.components.context import HostContext, text
from sdmesh.components.policy import PolicyRefused
from sdmesh.lifecycle.model import Node, TerminationRecord
from sdmesh.runner.app import ComponentError
from sdmesh.storage import OwnerTag, StorageError, Volume, VolumeRequest, parse_size
from sdmesh.storage.lvm import parse_lv_ref

#: sfClass -> the storage backend that implements it.
STORAGE_CLASSES = {
    "sdmesh.storage.Qcow2OverlayBackend": "Qcow2OverlayBackend",
    "sdmesh.storage.LoopbackStorageBackend": "LoopbackStorageBackend",
    "sdmesh.storage.LVMStorageBackend": "LVMStorageBackend",
}


class StorageComponent:
    """Creates the disk in deploy, so a VM declared after it (Compound order) finds it."""

    def __init__(self, node: Node, root: Node, context: HostContext, backend: str) -> None:
        self.node = node
        self.root = root
        self.context = context
        self.backend_name = backend
        self.backend = context.storage(backend)
        self.volume: Volume | None = None

    async def deploy(self) -> None:
        base = text(self.root, self.node, "baseImage")
        if base is None:
            raise ComponentError("baseImage is not set")
        fmt = text(self.root, self.node, "baseFormat")
        try:
            base = self._allowed_base(base, fmt if fmt in ("qcow2", "raw") else None)
        except (PolicyRefused, StorageError) as error:
            raise ComponentError(str(error)) from None
        size = text(self.root, self.node, "size")
        try:
            size_bytes = parse_size(size) if size else None
        except ValueError as error:
            raise ComponentError(str(error)) from None
        request = VolumeRequest(
            owner=OwnerTag(
                self.context.pool, self.node.path, self.context.generation, self.context.node_name
            ),
            base_image=base,
            base_format=fmt if fmt in ("qcow2", "raw") else None,  # type: ignore[arg-type]
            size_bytes=size_bytes,
        )
        try:
            self.volume = await self.backend.prepare(request)
        except StorageError as error:  # its text carries the hint
            raise ComponentError(str(error)) from None

    def _allowed_base(self, base: str, declared_format: str | None) -> str:
        """The base this host lets the descriptor use: a logical volume in an allowed volume
        group, or a file under an allowed image directory (its real path, links resolved).
        A test-driver host opens no base at all, so it takes any name (the demo's)."""
        if self.context.simulated:
            return base
        policy = self.context.policy
        if self.backend_name == "LVMStorageBackend":
            volume_group, _ = parse_lv_ref(base)
            policy.check_volume_group(f"baseImage {base}", volume_group)
            return base
        return str(policy.base_image(base, declared_format))

    async def start(self) -> None:
        pass

    async def terminate(self, record: TerminationRecord) -> None:
        if self.volume is not None:
            try:
                await self.backend.release(self.volume)
            except StorageError as error:
                raise ComponentError(f"could not remove {self.volume.path}: {error}") from None
            self.volume = None
