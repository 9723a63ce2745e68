"""The three roles a caller or a signing key can hold, ordered by what they allow.

``read`` sees (status, peers, events, metrics); ``operate`` also changes pools of VMs and
storage; ``admin`` also runs shell components, makes members leave, manages keys and reaches
the DHT routes. Each role includes the ones below it, as Nomad's and Consul's policies of
read/write/deny do for one resource.
"""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """A caller's or key's role; comparison follows privilege (``ADMIN > OPERATE > READ``)."""

    READ = 1
    OPERATE = 2
    ADMIN = 3

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` guards."""
        return self >= needed

    @property
    def label(self) -> str:
        """The role's name as written in configs, tokens and error messages."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``read``, ``operate`` or ``admin`` (any case); ValueError naming the choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: choose read, operate or admin") from None


ROLE_NAMES = tuple(role.label for role in Role)
