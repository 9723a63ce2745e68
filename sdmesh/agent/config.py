"""Agent configuration: a TOML file, then ``SDMESH_*`` environment variables, then flags.

Each later source overrides the earlier ones, so a systemd unit can ship a file and an
operator can still override one value on the command line.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

Address = tuple[str, int]

DEFAULT_BIND = ("0.0.0.0", 7946)
DEFAULT_API = ("127.0.0.1", 7948)


class ConfigError(Exception):
    """A configuration value is wrong; the message names it and says why."""


def parse_address(text: str, default_port: int, what: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"{what}: port {port!r} in {text!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"{what}: port {number} is out of range")
    return host, number


@dataclass(frozen=True)
class AgentConfig:
    name: str = field(default_factory=socket.gethostname)
    bind: Address = DEFAULT_BIND
    advertise: Address | None = None
    peers: tuple[Address, ...] = ()
    key_file: str | None = None
    insecure: bool = False
    cluster: str = ""
    hypervisor: str = "test"
    state_dir: Path = Path("/var/lib/sdmesh")
    api: Address = DEFAULT_API
    labels: tuple[str, ...] = ()
    images_dir: Path | None = None
    # Securing the control API (sdmesh/agent/api_auth.py): a bearer token for any peer that
    # is not loopback, HTTPS, and the explicit opt-out for an exposed API without them.
    api_token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    api_insecure: bool = False
    # False: loopback peers present the token too (a reverse proxy or ssh -L tunnel on this
    # host makes remote requests come from loopback).
    api_trust_loopback: bool = True
    # Operator-signed descriptors (issue 11 item 3, track h11-sign; docs/security.md): the
    # trust store of operator public keys whose signatures this host runs, and an operator
    # key the agent signs unsigned API submissions with (unset: it signs nothing; set, any
    # caller allowed to submit through this agent's API signs as that operator).
    operators_dir: Path = Path("/etc/sdmesh/operators.d")
    api_signing_key: str | None = None
    # Host identities (issue 12 items 1 and 5, track h12-identity; docs/security.md): the
    # cluster CA's public key turns them on; this host's key and certificate default to
    # identity/host.key and identity/host.cert under the state directory; the revocation
    # list is optional (revocations also arrive by gossip).
    identity_ca: str | None = None
    identity_key: str | None = None
    identity_cert: str | None = None
    identity_crl: str | None = None

    @property
    def dht_bind(self) -> Address:
        """The DHT's UDP port: the gossip port + 1, on the same address."""
        return self.bind[0], self.bind[1] + 1 if self.bind[1] else 0

    def advertised(self) -> Address:
        """The address other members reach us at (never 0.0.0.0)."""
        if self.advertise is not None:
            return self.advertise
        host, port = self.bind
        if host not in ("0.0.0.0", "::", ""):
            return host, port
        return guess_local_ip(self.peers[0][0] if self.peers else "10.255.255.255"), port


def ip_address_of(address: Address, what: str) -> Address:
    """``address`` if its host is an IP address: the gossip port binds and is advertised by
    address, never by name (``--peer`` names are resolved, in ``resolve_peer``)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, address[0])
    except OSError:
        raise ConfigError(
            f"{what}: {address[0]!r} is not an IP address (e.g. 10.0.0.5:7946, or "
            "0.0.0.0:7946 for every interface)"
        ) from None
    return address


def resolve_peer(address: Address) -> Address:
    """Peers may be named; the transport sends to IP addresses only (no DNS on the loop),
    so names are resolved once, at start-up."""
    host, port = address
    try:
        socket.inet_aton(host)
        return address
    except OSError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as error:
        raise ConfigError(
            f"peer {host}:{port}: cannot resolve {host!r} ({error.strerror})"
        ) from None
    return str(infos[0][4][0]), port


def guess_local_ip(toward: str) -> str:
    """The source address the kernel would use toward a peer (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((toward, 9))
        return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def _coerce(name: str, value: Any) -> Any:
    if name in ("bind", "advertise"):
        return ip_address_of(parse_address(str(value), DEFAULT_BIND[1], name), name)
    if name == "api":
        return parse_address(str(value), DEFAULT_API[1], name)
    if name == "peers":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(
            resolve_peer(parse_address(str(p).strip(), DEFAULT_BIND[1], "peer"))
            for p in items
            if str(p).strip()
        )
    if name == "labels":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(str(label).strip() for label in items if str(label).strip())
    if name in ("state_dir", "images_dir"):
        return Path(str(value))
    # Operator-signed descriptors (track h11-sign).
    if name == "operators_dir":
        return Path(str(value))
    if name in ("insecure", "api_insecure", "api_trust_loopback"):
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes", "on")
    return str(value)


_FIELDS = {f.name for f in fields(AgentConfig)}


def load_config(
    path: Path | None, overrides: dict[str, Any], environ: dict[str, str] | None = None
) -> AgentConfig:
    """File, then environment (``SDMESH_BIND``, ``SDMESH_PEERS``...), then ``overrides``."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as error:
            raise ConfigError(f"cannot read {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                known = ", ".join(sorted(k.replace("_", "-") for k in _FIELDS))
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
            values[name] = value
    for name in _FIELDS:
        env = environ.get(f"SDMESH_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v not in (None, (), [])})
    config = AgentConfig()
    return replace(config, **{name: _coerce(name, value) for name, value in values.items()})
