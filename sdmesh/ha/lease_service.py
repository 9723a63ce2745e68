"""The asyncio driver of the lease core: one per agent, next to the pool service.

It feeds the core with ``CLOCK_BOOTTIME`` (the fence guard's clock too), sends lease
requests and reclaim queries as stream RPCs (``rpc(member, payload)``, the agent's
``StreamClient.request`` to the member's address) and feeds the answers back, answers the
same RPCs from peers (``handle_rpc``), keeps the fence guard armed with each renewal, calls
``on_isolated`` when the lease runs out, and writes the voter's promises to the state
directory (``lease-voter.json``) so a restart keeps them, and the voter set
(``lease-voters.json``, sdmesh.ha.voters) so a restart does not start as a mesh of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from sdmesh.ha import lease as ls
from sdmesh.ha.guard import Fenceable
from sdmesh.ha.guard_client import GuardClient
from sdmesh.ha.guard_wire import boottime
from sdmesh.ha.lease_wire import LeaseWireError, decode, encode
from sdmesh.ha.timing import LeaseTiming
from sdmesh.ha.voters import VOTERS_FILE, VoterSet, decode_voters, encode_voters
from sdmesh.membership import Member, State
from sdmesh.safeio import read_private, write_private

log = logging.getLogger(__name__)

Rpc = Callable[[str, dict[str, object]], Awaitable[object]]
VOTER_FILE = "lease-voter.json"
VOTER_SET_FILE = VOTERS_FILE


def voters_of(members: Iterable[Member]) -> frozenset[str]:
    """Who votes: every member that has not left (dead ones may be alive across a cut),
    witnesses included; the same members the pools' majority rule counts."""
    return frozenset(m.name for m in members if m.state is not State.LEFT)


def load_voter_state(state_dir: Path) -> ls.VoterState:
    """What this agent promised as a voter before it restarted (nothing if unreadable)."""
    data = read_private(state_dir / VOTER_FILE)
    if data is None:
        return ls.VoterState()
    try:
        raw = json.loads(data)
        revoked = tuple((str(h), str(t)) for h, t in raw["revoked"])
        grants = tuple((str(h), float(r)) for h, r in raw["long_grants"])
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable: voter promises start empty", state_dir / VOTER_FILE)
        return ls.VoterState()
    return ls.VoterState(revoked, grants)


class LeaseService:
    def __init__(
        self,
        name: str,
        rpc: Rpc,
        state_dir: Path,
        *,
        timing: LeaseTiming | None = None,
        guard: GuardClient | None = None,
        fenceable: Callable[[], Fenceable] = frozenset,
        on_isolated: Callable[[str], None] = lambda reason: None,
        clock: Callable[[], float] = boottime,
        order_flight: float = 0.0,
    ) -> None:
        """``order_flight``: the longest an order may travel before it reaches this host (the
        shepherd's RPC timeout; past it the sender aborts the connection and its data). After
        a lease this host held ran out, it takes on no new fenceable VM for that long once it
        holds a lease again: an order sent before the cut could still arrive, for a VM the
        mesh has rebuilt elsewhere since."""
        self.name = name
        self.timing = timing or LeaseTiming()
        self.core = ls.LeaseCore(
            name, self.timing, load_voter_state(state_dir), secrets.token_hex(8)
        )
        self._rpc, self._state_dir, self._guard = rpc, state_dir, guard
        self._fenceable, self._on_isolated, self._clock = fenceable, on_isolated, clock
        self._loop = asyncio.get_running_loop()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reclaimed: dict[str, asyncio.Future[None]] = {}
        self._armed: tuple[float, float] | None = None
        self._voters: VoterSet | None = None
        self.inherited_fence_at: float | None = None
        """The previous agent's guard deadline (this clock): all that covers its VMs."""
        self._order_flight = order_flight
        self._lost_held_lease = False
        self._orders_settled_at: float | None = None
        self.lapses = 0
        """How many times the lease ran out: an operation that began under one count and
        ends under another must not leave a fenceable VM running (it began before a fence)."""

    # ------------------------------------------------------------ the agent's calls
    def start(
        self,
        members: Iterable[Member],
        inherited_fence_at: float | None,
        *,
        peers_configured: bool = True,
    ) -> None:
        """``members``: the membership view now (at start-up, often just this host);
        the voters are it plus those saved before a restart. ``inherited_fence_at``: the
        guard's deadline from before this agent started. ``peers_configured``: the agent
        joins a mesh (so it may not grant itself a lease until the mesh answers)."""
        path = self._state_dir / VOTER_SET_FILE
        saved = decode_voters(read_private(path))
        if saved is None and path.exists():
            log.warning("%s is unreadable: this host waits for its mesh to grant a lease", path)
            peers_configured = True
        self._voters = VoterSet(self.name, saved, peers_configured)
        if self._voters.update(members) or saved is None:
            self._save_voters()
        self.inherited_fence_at = inherited_fence_at
        voters = self._voters.current
        self._feed(ls.Start(voters.names, inherited_fence_at, voters.solo))

    def members_changed(self, members: Iterable[Member]) -> None:
        """The membership view changed: members joined (they vote from now on) or left
        (they vote no more). A member reaped from the view keeps its vote."""
        if self._voters is None or not self._voters.update(members):
            return
        self._save_voters()
        voters = self._voters.current
        self._feed(ls.VotersChanged(voters.names, voters.solo))

    def covered_at_start(self) -> bool:
        """Whether what a previous agent left running is still covered: only its guard's
        deadline says so (a lease this agent gets later may come after a reclaim), except
        in a mesh of one, where no other host could have rebuilt those VMs."""
        if self._voters is not None and self._voters.current.solo:
            return True
        inherited = self.inherited_fence_at
        return inherited is not None and self._clock() < inherited

    def may_run(self) -> bool:
        """Consult before starting, and while keeping, a fenceable VM."""
        return self.core.may_run(self._clock())

    def may_start(self) -> bool:
        """Consult before taking on or starting a fenceable VM: ``may_run``, and not within
        ``order_flight`` of regaining a lease this host lost (an order from before the cut
        could be for a VM rebuilt elsewhere)."""
        settled = self._orders_settled_at
        if settled is not None and self._clock() >= settled:
            self._orders_settled_at = settled = None
        return self.may_run() and settled is None

    def rearm(self) -> bool:
        """Tell the guard the fenceable set changed (call *before* starting such a VM).
        False when a guard is configured and was not armed (unreachable, or no lease of
        this agent's yet to arm it with): then the VM must not start, as the guard could
        not stop it should this agent die."""
        if self._guard is None:
            return True
        if self._armed is None or not self.may_run():
            return False
        return self._guard.arm_confirmed(*self._armed, self._fenceable())

    async def reclaim(self, holder: str) -> None:
        """Returns once ``holder``'s lease has surely ended: its VMs may be rebuilt."""
        future = self._reclaimed.get(holder)
        if future is None or future.done():
            future = self._reclaimed[holder] = self._loop.create_future()
            self._feed(ls.Reclaim(holder))
        await asyncio.shield(future)

    def cancel_reclaim(self, holder: str) -> None:
        future = self._reclaimed.pop(holder, None)
        if future is not None and not future.done():
            future.cancel()
        self._feed(ls.CancelReclaim(holder))

    async def leave(self, timeout: float = 2.0) -> None:
        """A planned stop (``sdmesh leave``, a restart, an upgrade): ask for a lease of the
        away grace so the guard, armed with it, keeps the VMs that long; with nothing
        fenceable here, disarm the guard instead. Never fences."""
        fenceable = self._fenceable()
        if not fenceable:
            if self._guard is not None:
                self._guard.disarm("planned stop: nothing fenceable on this host")
            return
        self._feed(ls.PlannedLeave())
        wanted = self._clock() + self.timing.leave_term - self.timing.isolation_timeout
        deadline = self._loop.time() + timeout
        while self._loop.time() < deadline:
            until = self.core.valid_until
            if until is not None and until >= wanted:
                return
            await asyncio.sleep(0.05)
        log.warning(
            "no majority granted the leave's lease: the fence guard stops this host's "
            "restartable VMs at the usual isolation timeout"
        )

    async def handle_rpc(
        self, request: object, sender: Callable[[str], bool] | None = None
    ) -> object:
        """A peer's lease request or reclaim query; the answer is the RPC's response.
        ``sender(name)``: whether the request really comes from that member (refused if not)."""
        try:
            message = decode(request)
        except LeaseWireError as error:
            log.debug("lease RPC refused: %s", error)
            return None
        if not isinstance(message, ls.LeaseRequest | ls.ReclaimQuery):
            return None
        asker = message.holder if isinstance(message, ls.LeaseRequest) else message.asker
        if sender is not None and not sender(asker):
            log.warning("lease RPC in the name of %s from another address: refused", asker)
            return None
        replies = [
            action.message
            for action in self._feed(ls.Received(message))
            if isinstance(action, ls.Send) and action.to == asker
        ]
        return encode(replies[0]) if replies else None

    async def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------ the core's I/O
    def _save_voters(self) -> None:
        if self._voters is None or not self._voters.worth_saving():
            return
        try:
            write_private(self._state_dir / VOTER_SET_FILE, encode_voters(self._voters.current))
        except OSError as error:
            log.error("cannot keep the lease voters in %s: %s", self._state_dir, error)

    def _feed(self, event: ls.Event) -> list[ls.Action]:
        actions = self.core.handle(event, self._clock())
        handled: list[ls.Action] = []
        for action in actions:
            if isinstance(action, ls.Send):
                if isinstance(action.message, ls.LeaseRequest | ls.ReclaimQuery):
                    self._spawn(self._ask(action.to, action.message))
                else:
                    handled.append(action)  # an answer: handle_rpc returns it
            else:
                self._execute(action)
        return handled

    def _execute(self, action: ls.Action) -> None:
        if isinstance(action, ls.SetTimer):
            old = self._timers.pop(action.name, None)
            if old is not None:
                old.cancel()
            delay = max(0.0, action.at - self._clock())
            self._timers[action.name] = self._loop.call_later(
                delay, self._feed, ls.TimerFired(action.name)
            )
        elif isinstance(action, ls.LeaseValid):
            if self._armed is None and self._lost_held_lease and self._order_flight > 0:
                self._lost_held_lease = False
                self._orders_settled_at = self._clock() + self._order_flight
                log.info(
                    "lease held again: new restartable VMs start in %.0f s (orders sent before "
                    "the cut may still arrive)",
                    self._order_flight,
                )
            elif self._armed is None:
                log.info("lease held: restartable VMs may run on this host")
            self._armed = (action.fence_at, action.until)
            if self._guard is not None:
                self._guard.arm(action.fence_at, action.until, self._fenceable())
        elif isinstance(action, ls.Isolated):
            level = logging.WARNING if self._armed is not None else logging.DEBUG
            log.log(level, "lease lost: %s; applying the isolation response", action.reason)
            self._lost_held_lease = self._lost_held_lease or self._armed is not None
            self._armed = None
            self.lapses += 1
            self._on_isolated(action.reason)
        elif isinstance(action, ls.Reclaimed):
            future = self._reclaimed.pop(action.holder, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif isinstance(action, ls.PersistVoterState):
            state = action.state
            data = {"revoked": [list(p) for p in state.revoked], "long_grants": state.long_grants}
            try:
                write_private(self._state_dir / VOTER_FILE, json.dumps(data).encode())
            except OSError as error:
                log.error("cannot keep voter promises in %s: %s", self._state_dir, error)

    async def _ask(self, member: str, message: ls.Message) -> None:
        try:
            answer = await self._rpc(member, encode(message))
        except Exception as error:  # unreachable: a missing grant is the whole point
            log.debug("lease RPC to %s failed: %s", member, error)
            return
        if answer is None:
            return
        with contextlib.suppress(LeaseWireError):
            self._feed(ls.Received(decode(answer)))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = self._loop.create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
