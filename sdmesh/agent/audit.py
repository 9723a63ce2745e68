"""The audit trail: one JSON line per state-changing API request, refused ones included.

Written at INFO through the logger ``sdmesh.audit`` (enabled by default, whatever
``--log-level``), so it lands in the agent's log (the journal under systemd) and a log shipper
can pick it out by logger name: ``journalctl -u sdmesh | grep sdmesh.audit``. Each line says
who (``uid:1000(alice)`` over the socket, ``token:NAME`` over TCP, ``anonymous``), how
(``socket``/``tcp`` and the peer), what (method, route, pool or member) and the result (the
HTTP status). Values the caller chose (a path, a pool name) are JSON-escaped and cut short,
so a line cannot be forged or made huge.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping

AUDIT_LOGGER = "sdmesh.audit"
#: Longest value copied from a request into a line.
MAX_FIELD_CHARS = 200
#: Methods that change nothing: not audited (unless refused: see ``should_audit``).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

log = logging.getLogger(AUDIT_LOGGER)


def should_audit(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def _short(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
        return value[:MAX_FIELD_CHARS] + "..."
    return value


def audit_line(
    *,
    who: str,
    via: str,
    peer: str,
    method: str,
    route: str,
    status: int,
    role: str | None = None,
    needed: str | None = None,
    target: Mapping[str, str] | None = None,
    now: float | None = None,
) -> str:
    """The JSON text of one audit record (sorted keys, one line)."""
    record: dict[str, object] = {
        "audit": "api",
        "time": round(time.time() if now is None else now, 3),
        "who": who,
        "via": via,
        "peer": peer,
        "method": method,
        "route": route,
        "status": status,
        "result": "ok" if status < 400 else "refused" if status in (401, 403) else "error",
    }
    if role is not None:
        record["role"] = role
    if needed is not None:
        record["needed"] = needed
    for key, value in (target or {}).items():
        record[key] = value
    return json.dumps({k: _short(v) for k, v in record.items()}, sort_keys=True)


def audit(**fields: object) -> None:
    """Log one audit record (``audit_line``'s fields) at INFO on ``sdmesh.audit``."""
    log.info("%s", audit_line(**fields))  # type: ignore[arg-type]


def enable_audit_logging() -> None:
    """Make sure audit lines are written even when the agent logs warnings only."""
    log.setLevel(logging.INFO)


__all__ = ["AUDIT_LOGGER", "audit", "audit_line", "enable_audit_logging", "should_audit"]
