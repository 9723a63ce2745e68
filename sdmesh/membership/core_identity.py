"""What host identities allow the membership core to believe.

With an ``IdentityChecker`` (sdmesh/membership/identity.py), alive claims must carry the
member's own signature, dead and left reports are bounded by what only the member may say,
and members whose certificate was revoked are expelled. Without one, every key holder is
trusted and these checks pass everything.
"""

from __future__ import annotations

from sdmesh.membership.actions import MemberEventKind
from sdmesh.membership.core_base import CoreBase
from sdmesh.membership.member import State
from sdmesh.membership.messages import Alive, Dead
from sdmesh.membership.table import Record


class IdentityChecks(CoreBase):
    """The identity checks the state rules consult."""

    def _signed(self, message: Alive) -> bool:
        """Whether an alive claim we would act on is the member's own word."""
        identity = self.identity
        if identity is None:
            return True
        return identity.check_alive(
            message.name, message.incarnation, message.addr, message.meta, message.proof
        )

    def _vetted_dead(self, message: Dead, record: Record) -> Dead | None:
        """A dead or left report as identities allow it, or None to ignore it.

        A member's own leave is signed and checked. An unsigned ``left`` (an operator's
        force-leave, from another member) only counts for a member already held dead. Any
        other report names at most the incarnation we know: only the member raises it, so a
        higher one is not news but a forgery (2**64-1 would leave the member nothing to
        refute with). Suspicions are bounded the same way.
        """
        identity = self.identity
        assert identity is not None
        if message.left and message.sender == message.name and message.proof:
            if identity.check_leave(message.name, message.incarnation, message.proof):
                return message
            return None
        if message.left and record.state.live:
            identity.refuse_unsigned()
            return None
        if message.incarnation > record.incarnation:
            return Dead(message.name, record.incarnation, message.sender, message.left)
        return message

    def _expel_revoked(self) -> None:
        """Drop members whose certificate was revoked: every member learns the revocation
        itself, so this is local (no gossip), and their later claims are refused."""
        if self.identity is None:
            return
        for name in self.identity.take_expelled():
            record = self._table.get(name)
            if record is None or name == self._name or record.state is State.LEFT:
                continue
            record.proof = b""  # its alive proof is no leave: push-pull it unsigned
            old = self._transition(record, State.LEFT)
            self._emit(MemberEventKind.LEFT, record, old)
