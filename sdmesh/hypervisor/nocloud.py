"""cloud-init NoCloud seed ISOs, built in process, for guests that boot a disk image.

A disk-image guest learns its identity (hostname, ip/netmask/gateway) before it boots from a
small ISO labelled ``cidata`` holding ``meta-data``, ``user-data`` and ``network-config``
(cloud-init's NoCloud datasource). The documents are JSON, which is valid YAML, so no YAML
library is needed and every value is escaped. The ISO is built with pycdlib (no genisoimage
subprocess) and stored as a tagged volume, so the reaper removes it with the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path
from typing import Any

from sdmesh.hypervisor.spec import DiskBoot, DiskSpec, DomainSpec, GuestIdentity, SdmeshMetadata
from sdmesh.storage.defaults import DEFAULT_STATE_DIR, lock_dir_for
from sdmesh.storage.files import SUFFIXES, FileVolumeStore
from sdmesh.storage.locks import HostLocks
from sdmesh.storage.model import OwnerTag, Volume, VolumeRequest

VOLUME_LABEL = "cidata"
#: ISO 9660 name (upper case, level 3), and the Rock Ridge / Joliet name cloud-init reads.
_FILES = (
    ("META_DATA.;1", "meta-data"),
    ("USER_DATA.;1", "user-data"),
    ("NETWORK_CONFIG.;1", "network-config"),
)


def instance_id_for(metadata: SdmeshMetadata) -> str:
    """Changes with the generation, so cloud-init treats a redeployed guest as new."""
    key = f"{metadata.pool}\0{metadata.path}\0{metadata.generation}"
    return "sdm-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def network_config(identity: GuestIdentity, mac: str | None) -> dict[str, Any]:
    """Netplan-style (version 2) config: static when the identity has an ip, DHCP otherwise."""
    ethernet: dict[str, Any] = {}
    if mac is not None:
        ethernet["match"] = {"macaddress": mac}
        ethernet["set-name"] = identity.device or "eth0"
    else:
        ethernet["match"] = {"name": identity.device or "e*"}
    if identity.ip is None:
        ethernet["dhcp4"] = True
    else:
        ethernet["addresses"] = [f"{identity.address()}/{identity.prefixlen}"]
        if identity.gateway is not None:
            ethernet["routes"] = [{"to": "default", "via": identity.gateway}]
    if identity.nameservers:
        ethernet["nameservers"] = {"addresses": list(identity.nameservers)}
    return {"version": 2, "ethernets": {"primary": ethernet}}


def seed_documents(
    identity: GuestIdentity,
    *,
    instance_id: str,
    mac: str | None = None,
    ssh_authorized_keys: tuple[str, ...] = (),
    user_data: str | None = None,
) -> dict[str, bytes]:
    """The three NoCloud files. ``user_data`` replaces the generated cloud-config if given."""
    identity.validate()
    meta: dict[str, Any] = {"instance-id": instance_id}
    cloud_config: dict[str, Any] = {}
    if identity.hostname is not None:
        meta["local-hostname"] = identity.hostname
        cloud_config.update(hostname=identity.hostname.split(".")[0], preserve_hostname=False)
        if "." in identity.hostname:
            cloud_config["fqdn"] = identity.hostname
    if ssh_authorized_keys:
        cloud_config["ssh_authorized_keys"] = list(ssh_authorized_keys)
    if user_data is None:
        user = b"#cloud-config\n" + _dump(cloud_config)
    else:
        if not user_data.startswith(("#cloud-config", "#!", "Content-Type:")):
            raise ValueError("user_data must be a #cloud-config document, a script or MIME")
        user = user_data.encode()
    return {
        "meta-data": _dump(meta),
        "user-data": user,
        "network-config": _dump(network_config(identity, mac)),
    }


def build_seed_iso(documents: dict[str, bytes]) -> bytes:
    """An ISO 9660 image (Rock Ridge + Joliet names) labelled ``cidata``."""
    # Imported here, not at the top: most agents never build a seed, and pycdlib adds
    # megabytes to an idle agent's memory.
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    try:
        for iso_path, name in _FILES:
            data = documents[name]
            iso.add_fp(
                io.BytesIO(data), len(data), f"/{iso_path}", rr_name=name, joliet_path=f"/{name}"
            )
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def read_seed_iso(image: bytes) -> tuple[str, dict[str, bytes]]:
    """(volume label, files by name) of a seed ISO; for checks and tests."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for _, name in _FILES:
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            files[name] = out.getvalue()
        return label, files
    finally:
        iso.close()


class NoCloudSeedStore:
    """Seed ISOs as tagged files in ``<state_dir>/nocloud``; a VolumeKeeper for the reaper."""

    name = "nocloud"

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, *, lock_dir: Path | None = None):
        self.locks = HostLocks(lock_dir_for(state_dir, lock_dir))
        self.store = FileVolumeStore(state_dir / self.name, self.name, self.locks)

    async def write(
        self, owner: OwnerTag, documents: dict[str, bytes], *, name: str | None = None
    ) -> Volume:
        """Build and store the seed of one component (the one it has is kept if present)."""
        image = await asyncio.to_thread(build_seed_iso, documents)

        async def produce(target: Path) -> None:
            await asyncio.to_thread(target.write_bytes, image)

        request = VolumeRequest(owner=owner, base_image="", name=name)
        return await self.store.create(
            request, volume_format="raw", suffix=SUFFIXES["iso"], produce=produce
        )

    async def release(self, volume: Volume) -> bool:
        return await self.store.release(volume)

    async def list_owned(self, pool: str | None = None) -> list[Volume]:
        return await self.store.list_owned(pool)


async def attach_seed(
    store: NoCloudSeedStore,
    spec: DomainSpec,
    metadata: SdmeshMetadata,
    *,
    ssh_authorized_keys: tuple[str, ...] = (),
    user_data: str | None = None,
) -> tuple[DomainSpec, Volume | None]:
    """For a disk-boot guest with an identity: store its seed and add the CD-ROM to the spec.

    Direct-kernel guests get their identity through ``ip=`` instead and are returned as is.
    """
    if not isinstance(spec.boot, DiskBoot) or spec.identity is None:
        return spec, None
    documents = seed_documents(
        spec.identity,
        instance_id=instance_id_for(metadata),
        mac=spec.nics[0].mac if spec.nics else None,
        ssh_authorized_keys=ssh_authorized_keys,
        user_data=user_data,
    )
    owner = OwnerTag(metadata.pool, metadata.path, metadata.generation, metadata.node)
    volume = await store.write(owner, documents)
    # SATA (AHCI) exists on both QEMU machine types; Xen HVM emulates IDE.
    if spec.flavour == "xen":
        cdrom = DiskSpec.seed_cdrom(str(volume.path), target="hdc", bus="ide")
    else:
        cdrom = DiskSpec.seed_cdrom(str(volume.path))
    return spec.with_disk(cdrom), volume
