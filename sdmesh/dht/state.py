"""What a node keeps across restarts: its id and some contacts to bootstrap from, as JSON.

The stock ``Server.save_state`` pickles this; unpickling a file is running code from it, so
a state file anyone could write would be a way in. JSON with a strict reader instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sdmesh.dht.ids import ID_SIZE

STATE_FORMAT = 1
MAX_NEIGHBORS = 256
_MAX_FILE_SIZE = 1 << 20


class StateError(ValueError):
    """A state file that cannot be used (the node should start fresh and say why)."""


@dataclasses.dataclass(frozen=True)
class DhtState:
    node_id: bytes
    neighbors: tuple[tuple[str, int], ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "node_id": self.node_id.hex(),
                "neighbors": [[ip, port] for ip, port in self.neighbors],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> DhtState:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StateError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateError(f"not a format-{STATE_FORMAT} DHT state")
        node_id = _parse_node_id(data.get("node_id"))
        neighbors = data.get("neighbors")
        if not isinstance(neighbors, list) or len(neighbors) > MAX_NEIGHBORS:
            raise StateError(f"neighbors must be a list of at most {MAX_NEIGHBORS}")
        return cls(node_id, tuple(_parse_address(item) for item in neighbors))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (a crash leaves the old file or the new one)."""
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(self.to_json())
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DhtState:
        try:
            with open(path, "rb") as handle:
                data = handle.read(_MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise StateError(f"{os.fspath(path)}: cannot read: {exc.strerror}") from None
        if len(data) > _MAX_FILE_SIZE:
            raise StateError(f"{os.fspath(path)}: too large for a state file")
        try:
            return cls.from_json(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise StateError(f"{os.fspath(path)}: not UTF-8") from None
        except StateError as exc:
            raise StateError(f"{os.fspath(path)}: {exc}") from None


def _parse_node_id(value: Any) -> bytes:
    try:
        node_id = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        node_id = b""
    if len(node_id) != ID_SIZE:
        raise StateError(f"node_id must be {ID_SIZE * 2} hex digits")
    return node_id


def _parse_address(item: Any) -> tuple[str, int]:
    if not isinstance(item, list) or len(item) != 2:
        raise StateError("each neighbor must be [ip, port]")
    ip, port = item
    try:
        ipaddress.ip_address(ip)
    except (ValueError, TypeError):
        raise StateError(f"neighbor address {ip!r} is not an IP address") from None
    if type(port) is not int or not 0 < port < 65536:
        raise StateError(f"neighbor port {port!r} out of range")
    return (ip, port)
