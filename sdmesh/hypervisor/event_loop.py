"""Routing libvirt's event loop through asyncio with ``libvirtaio``.

libvirt accepts one event-loop implementation per process, for the life of the process
(``virEventRegisterImpl`` refuses a second one), and libvirtaio binds it to one asyncio
loop. An agent has one loop, so that is fine; but a process that runs several loops one
after another (tests, a CLI that calls ``asyncio.run`` twice) would leave libvirt attached
to a dead loop. So: bind on first use; later, move the binding to the running loop if the
old loop has stopped and libvirtaio holds nothing of it (every connection closed and
drained); otherwise report False and let the caller poll instead of listening.

Threads: libvirt calls the event implementation from whichever thread makes a libvirt
call, so with blocking calls on a thread pool, libvirtaio schedules timers and readers
from those threads. That is benign in CPython (every pool job ends by waking the loop
through ``call_soon_threadsafe``, which then runs what was scheduled), but it is the one
place where asyncio's "loop objects from the loop thread only" rule is bent. Should it
ever bite, the fallback is libvirt's own thread-safe loop (``virEventRegisterDefaultImpl``
run in a thread) forwarding callbacks with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import libvirt
import libvirtaio

_log = logging.getLogger(__name__)


def bind_libvirt_events(loop: asyncio.AbstractEventLoop) -> bool:
    """Make libvirt deliver events on ``loop``; False when that is impossible right now."""
    impl = libvirtaio.getCurrentImpl()
    if impl is None:
        try:
            libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        except (RuntimeError, libvirt.libvirtError) as exc:
            # Another event implementation (e.g. libvirt's default one) owns the process.
            _log.warning("libvirt events unavailable (%s); falling back to polling", exc)
            return False
        return True
    if impl.loop is loop:
        return True
    if not impl.loop.is_running() and impl.is_idle():
        impl.loop = loop
        return True
    _log.warning("libvirt events are bound to another running event loop; this driver will poll")
    return False


async def drain_libvirt_events(timeout_s: float = 2.0) -> None:
    """Let libvirtaio finish its pending cleanups, so the binding can move to a new loop."""
    impl = libvirtaio.getCurrentImpl()
    if impl is None or impl.loop is not asyncio.get_running_loop() or impl.callbacks:
        return  # not ours, or other connections still use it: the last one out drains
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(impl.drain(), timeout_s)


_quiet = False


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; sdmesh reports them itself."""
    global _quiet
    if not _quiet:
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _quiet = True
