"""The VirtualMachine component (XenDomain, KvmDomain, VM): one libvirt domain.

deploy builds the domain spec from the descriptor and runs every host-side check (nothing is
created); start defines and boots it; its death or a stop from outside sdmesh ends the
component abnormally; terminate destroys it and removes its seed. The guest learns its
identity before boot: ``ip=`` on the kernel command line for direct-kernel guests, a
cloud-init NoCloud seed for disk images.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sdmesh.components.context import HostContext, text, value
from sdmesh.components.policy import HostPolicy, PolicyRefused
from sdmesh.hypervisor import (
    DiskBoot,
    DiskSpec,
    DomainEvent,
    DomainSpec,
    GuestIdentity,
    HypervisorError,
    KernelBoot,
    NicSpec,
    SdmeshMetadata,
    derive_mac,
    disk_bus_for,
    disk_target_for,
    domain_name_for,
)
from sdmesh.hypervisor.nocloud import attach_seed
from sdmesh.hypervisor.spec import Flavour
from sdmesh.lifecycle.model import Node, TerminationRecord
from sdmesh.runner.app import ComponentError, EndedCallback
from sdmesh.safeio import UnsafeDirectory, ensure_private_dir
from sdmesh.storage import StorageError, Volume


class VirtualMachineComponent:
    def __init__(
        self,
        node: Node,
        root: Node,
        context: HostContext,
        components: dict[str, object],
        ended: EndedCallback,
    ) -> None:
        self.node = node
        self.root = root
        self.context = context
        self.components = components
        self.ended = ended
        self.domain = domain_name_for(context.pool, node.path)
        self.spec: DomainSpec | None = None
        self.seed: Volume | None = None
        self.started = False

    # ------------------------------------------------------------------------- deploy
    async def deploy(self) -> None:
        try:
            spec = self._spec()
        except PolicyRefused as error:  # before anything is created
            raise ComponentError(str(error)) from None
        metadata = self._metadata()
        try:
            spec.validate()  # cheap, and before the reachability check reads its paths
            if self.context.caps.driver == "qemu":
                self._check_reachable(spec)
            await self.context.driver.check(spec)
            if isinstance(spec.boot, DiskBoot):
                spec, self.seed = await attach_seed(self.context.seeds(), spec, metadata)
        except (HypervisorError, StorageError) as error:
            raise ComponentError(str(error)) from None
        self.spec = spec

    def _check_reachable(self, spec: DomainSpec) -> None:
        """QEMU runs as another user (libvirt-qemu): it needs to enter every directory
        above the files it opens. A private directory (mode 0700, like most temporary
        directories) fails deep inside libvirt; say so here, before anything is created."""
        files = [disk.path for disk in spec.disks]
        if isinstance(spec.boot, KernelBoot):
            files += [spec.boot.kernel] + ([spec.boot.initrd] if spec.boot.initrd else [])
        # Not the console log: virtlogd (root) opens it and hands QEMU the descriptor, so its
        # directory stays private (0700).
        for file in files:
            for directory in Path(file).parents:
                try:
                    mode = directory.stat().st_mode
                except OSError:
                    continue  # missing files are the storage backend's or libvirt's to report
                if not mode & 0o001:
                    raise ComponentError(
                        f"{directory} is not searchable by other users, so "
                        f"QEMU (user libvirt-qemu) cannot open {file}; use a --state-dir such "
                        f"as /var/lib/sdmesh, or chmod o+x {directory}"
                    )

    def _metadata(self) -> SdmeshMetadata:
        return SdmeshMetadata(
            pool=self.context.pool,
            path=self.node.path,
            generation=self.context.generation,
            descriptor_hash=self.context.descriptor_hash,
            node=self.context.node_name,
        )

    def _flavour(self) -> Flavour:
        wanted = text(self.root, self.node, "flavour") or "kvm"
        caps = self.context.caps
        if caps.driver == "test":
            return "test"
        if caps.driver == "xen":
            return "xen"
        if wanted == "xen":
            self.context.warn(
                self.node.path,
                "a XenDomain runs as a QEMU/KVM guest on this host (its kernel must boot there)",
            )
        if self.context.virt_type == "qemu" or not caps.kvm_accel:
            return "qemu"
        return "kvm"

    def _integer(self, name: str, default: int) -> int:
        found = value(self.root, self.node, name, default)
        if not isinstance(found, int) or isinstance(found, bool):
            raise ComponentError(f"'{name}' must be an Integer")
        return found

    def _spec(self) -> DomainSpec:
        flavour = self._flavour()
        kernel = text(self.root, self.node, "kernel")
        boot: KernelBoot | DiskBoot
        if kernel is not None:
            boot = KernelBoot(
                self._host_file("kernel", kernel),
                self._optional_host_file("initrd", text(self.root, self.node, "initrd")),
                text(self.root, self.node, "cmdline") or "",
            )
        else:
            boot = DiskBoot()
        identity = GuestIdentity(
            hostname=text(self.root, self.node, "hostname"),
            ip=text(self.root, self.node, "ip"),
            netmask=text(self.root, self.node, "netmask"),
            gateway=text(self.root, self.node, "gateway"),
        )
        if isinstance(boot, KernelBoot) and identity.hostname:
            # The kernel's ip= carries the host name only with an address; say it anyway.
            extra = f"hostname={identity.hostname} sdmesh.hostname={identity.hostname}"
            boot = KernelBoot(boot.kernel, boot.initrd, f"{boot.cmdline} {extra}".strip())
        disks: list[DiskSpec] = []
        volume = self._volume()
        if volume is not None:
            disks.append(
                DiskSpec.from_volume(
                    volume, target=disk_target_for(flavour, 0), bus=disk_bus_for(flavour)
                )
            )
        return DomainSpec(
            name=self.domain,
            memory_mib=self._integer("memory", 128),
            vcpus=self._integer("vcpus", 1),
            boot=boot,
            disks=tuple(disks),
            nics=self._nics(flavour),
            console_log=self._console_log(),
            flavour=flavour,
            identity=identity if (identity.ip or identity.hostname) else None,
        )

    def _host_file(self, what: str, path: str) -> str:
        """A kernel or initrd the host allows (its real path); a test-driver host never
        reads them, so it takes any name."""
        if self.context.simulated:
            return path
        return str(self.context.policy.host_file(what, path))

    def _optional_host_file(self, what: str, path: str | None) -> str | None:
        return None if path is None else self._host_file(what, path)

    def _volume(self) -> Volume | None:
        backend = value(self.root, self.node, "storageBackend")
        if backend is None:
            return None
        if not isinstance(backend, Node):
            raise ComponentError(
                "storageBackend must be a LAZY link to a storage component "
                "that is deployed before this VM (declare it first in a Compound)"
            )
        component = self.components.get(backend.path)
        volume = getattr(component, "volume", None)
        if volume is None:
            raise ComponentError(
                f"its storage backend {backend.path} has no disk yet; "
                "declare the backend before the VM in a Compound, so it is deployed first"
            )
        assert isinstance(volume, Volume)
        return volume

    def _nics(self, flavour: Flavour) -> tuple[NicSpec, ...]:
        mac = text(self.root, self.node, "mac") or derive_mac(self.context.pool, self.node.path)
        network = text(self.root, self.node, "network")
        bridge = text(self.root, self.node, "bridge")
        policy = self.context.policy
        if bridge is not None:
            if not self.context.simulated:
                policy.check_bridge(bridge)
            return (NicSpec.on_bridge(mac, bridge),)
        if network is not None:
            if not self.context.simulated:
                policy.check_network(network)
            return (NicSpec.on_network(mac, network),)
        if flavour in ("kvm", "qemu"):
            return (NicSpec.user_mode(mac),)  # no host setup needed
        return ()

    def _console_log(self) -> str | None:
        configured = text(self.root, self.node, "consoleLog")
        if configured is not None:  # checked on every host: the agent creates its directory
            return str(HostPolicy.console_log(self.context.console_dir, configured))
        if self.context.simulated:
            return None
        return str(HostPolicy.console_log(self.context.console_dir, f"{self.domain}.log"))

    # -------------------------------------------------------------------------- start
    async def start(self) -> None:
        assert self.spec is not None, "start before deploy"
        if self.spec.console_log:
            self._prepare_console_dir(self.spec.console_log)
        self.context.watch(self.domain, self._on_event)
        try:
            await self.context.driver.define_and_start(self.spec, self._metadata())
        except HypervisorError as error:
            self.context.unwatch(self.domain)
            raise ComponentError(str(error)) from None
        self.started = True

    def _prepare_console_dir(self, console_log: str) -> None:
        """Create the log's directory (0700, ours) and check the name again now that it
        exists: the check that counts is the one made at the moment of use."""
        try:
            ensure_private_dir(self.context.console_root, 0o700, what="console directory")
            ensure_private_dir(self.context.console_dir, 0o700, what="console directory")
            ensure_private_dir(Path(console_log).parent, 0o700, what="console directory")
            HostPolicy.console_log(self.context.console_dir, console_log)
        except (PolicyRefused, UnsafeDirectory) as error:
            raise ComponentError(str(error)) from None

    def _on_event(self, event: DomainEvent) -> None:
        if not self.started or event.by_us:
            return
        log = (
            f"; console log: {self.spec.console_log}" if self.spec and self.spec.console_log else ""
        )
        if event.is_failure:
            self.ended(
                TerminationRecord.abnormal(f"domain {self.domain} crashed{log}", self.node.path)
            )
        elif event.is_external_stop:
            self.ended(
                TerminationRecord.abnormal(
                    f"domain {self.domain} was stopped outside sdmesh ({event.detail}){log}",
                    self.node.path,
                )
            )

    # ---------------------------------------------------------------------- terminate
    async def terminate(self, record: TerminationRecord) -> None:
        self.context.unwatch(self.domain)
        self.started = False
        errors = []
        try:
            await self.context.driver.destroy(self.domain)
        except HypervisorError as error:
            errors.append(str(error))
        if self.seed is not None:
            try:
                await self.context.seeds().release(self.seed)
            except StorageError as error:
                errors.append(str(error))
            self.seed = None
        self._remove_console_log(record)
        if errors:
            raise ComponentError("; ".join(errors))

    def _remove_console_log(self, record: TerminationRecord) -> None:
        """Our default console log goes with the VM, unless this VM failed: then it is the
        first thing to read, and stays (its path is in the component's failure)."""
        if self.spec is None or self.spec.console_log is None:
            return
        if text(self.root, self.node, "consoleLog") is not None:
            return  # the user chose the file: theirs to keep
        if not record.normal and record.source == self.node.path:
            return
        Path(self.spec.console_log).unlink(missing_ok=True)
        with contextlib.suppress(OSError, PolicyRefused):  # the pool's directory goes with it
            os.rmdir(self.context.console_dir)
