"""Agent configuration: a TOML file, then ``SDMESH_*`` environment variables, then flags.

Each later source overrides the earlier ones, so a systemd unit can ship a file and an
operator can still override one value on the command line.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdmesh.components.policy import HostPolicy


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
    # --- Host policy (issue 11 item 4, track h11-deny; sdmesh/components/policy.py) ---
    # What a descriptor may make this host do; deny by default. allowed_image_dirs None means
    # images-dir (if set) and <state-dir>/images (not /var/lib/libvirt/images: live disks).
    allow_shell: bool = False
    allowed_image_dirs: tuple[Path, ...] | None = None
    allowed_networks: tuple[str, ...] = ("default",)
    allowed_bridges: tuple[str, ...] = ()
    allowed_volume_groups: tuple[str, ...] = ()
    # --- end of host policy ---
    # h11-local: local control (sdmesh/agent/api_socket.py, api_access.py). The Unix socket
    # (default <state-dir>/api.sock), the group that owns it (0660; absent group: root only),
    # and the role each group's members get over it ("group=role" pairs).
    api_socket: Path | None = None
    api_socket_group: str = "sdmesh"
    api_socket_roles: tuple[tuple[str, str], ...] = (("sdmesh", "operate"),)
    # HA (issue 14, track h14-lease; docs/ha.md): a witness votes and holds leases but runs
    # no hypervisor; the isolation timeout is the lease term (sdmesh.ha.timing); the fence
    # guard's socket (none: the agent fences only while it lives); an opt-in watchdog device
    # the guard pets (sdmesh-fence-guard --watchdog; named here so the agent can report it).
    # ``leases``: hosts run restartable VMs only under a lease and the mesh rebuilds a lost
    # host's VMs only once its lease surely ended (track h14-wire); false: no fencing at all.
    leases: bool = True
    witness: bool = False
    isolation_timeout: float = 6.0
    fence_guard_socket: str | None = "/run/sdmesh-fence-guard/guard.sock"
    watchdog_device: str | None = None
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


# --- Host policy (track h11-deny): strict parsing, every refusal names the setting ---
_POLICY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_POLICY_SETTINGS = frozenset(
    {
        "allow_shell",
        "allowed_image_dirs",
        "allowed_networks",
        "allowed_bridges",
        "allowed_volume_groups",
    }
)


def _policy_list(name: str, value: Any) -> list[str]:
    setting = name.replace("_", "-")
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{setting} must be a list of strings (or a comma-separated string)")
    return [item.strip() for item in items if item.strip()]


def _coerce_policy(name: str, value: Any) -> Any:
    setting = name.replace("_", "-")
    if name == "allow_shell":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{setting} must be true or false, got {value!r}")
    items = _policy_list(name, value)
    if name == "allowed_image_dirs":
        for item in items:
            if not item.startswith("/"):
                raise ConfigError(f"{setting}: {item!r} is not an absolute path")
        return tuple(Path(item) for item in items)
    for item in items:
        if not _POLICY_NAME.fullmatch(item):
            raise ConfigError(f"{setting}: {item!r} is not a network, bridge or volume group name")
    return tuple(items)


def host_policy(config: AgentConfig, config_file: Path | None = None) -> HostPolicy:
    """The host policy the leaves of this agent run under; messages name ``config_file``."""
    # Imported here: `sdmesh join --help` and start-up must not pay for the component layer.
    from sdmesh.components.policy import DEFAULT_CONFIG_FILE, HostPolicy

    image_dirs = config.allowed_image_dirs
    if image_dirs is None:
        defaults = [config.state_dir / "images"]
        image_dirs = tuple(([config.images_dir] if config.images_dir else []) + defaults)
    return HostPolicy(
        allow_shell=config.allow_shell,
        image_dirs=image_dirs,
        networks=config.allowed_networks,
        bridges=config.allowed_bridges,
        volume_groups=config.allowed_volume_groups,
        config_file=str(config_file) if config_file else DEFAULT_CONFIG_FILE,
    )


# --- end of host policy ---


def _coerce_ha(name: str, value: Any) -> Any:
    """The HA block's settings (track h14-lease)."""
    if name in ("witness", "leases"):
        return (
            value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        )
    if name == "isolation_timeout":
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"isolation-timeout: {value!r} is not a number of seconds") from None
        if not 3.0 <= seconds <= 600.0:
            raise ConfigError(f"isolation-timeout: {seconds} s is outside 3-600 s")
        return seconds
    text = str(value).strip()
    if text and not text.startswith("/"):
        raise ConfigError(f"{name.replace('_', '-')}: {text!r} is not an absolute path")
    return text or None


_HA_FIELDS = ("leases", "witness", "isolation_timeout", "fence_guard_socket", "watchdog_device")


def _coerce(name: str, value: Any) -> Any:
    if name in _POLICY_SETTINGS:
        return _coerce_policy(name, value)
    if name in _HA_FIELDS:
        return _coerce_ha(name, value)
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
    # h11-local: the socket's settings
    if name == "api_socket":
        return Path(str(value))
    if name == "api_socket_roles":
        return _socket_roles(value)
    if name in ("insecure", "api_insecure", "api_trust_loopback"):
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("1", "true", "yes", "on")
    return str(value)


def _socket_roles(value: Any) -> tuple[tuple[str, str], ...]:
    """h11-local: ``api-socket-roles`` as a TOML table ``{sdmesh = "operate"}`` or the text
    ``sdmesh=operate,sdmesh-admin=admin``; ConfigError naming the bad entry."""
    from sdmesh.trust.roles import Role

    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = [part.strip() for part in str(value).split(",") if part.strip()]
        pairs = [(part.partition("=")[0], part.partition("=")[2]) for part in items]
    result: list[tuple[str, str]] = []
    for group, role in pairs:
        if not group.strip():
            raise ConfigError("api-socket-roles: a group name is empty")
        try:
            result.append((group.strip(), Role.parse(role).label))
        except ValueError as error:
            raise ConfigError(f"api-socket-roles: {group.strip()}: {error}") from None
    return tuple(result)


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
