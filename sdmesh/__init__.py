"""sdmesh: SmartDomains reborn as a peer-to-peer agent mesh over libvirt."""

__version__ = "0.1.0"
