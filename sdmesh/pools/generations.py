"""Bounds on pool generations arriving from the mesh (issue 12, item 2).

A generation orders the shepherds of one pool and the tombstones that end it. Every
generation a peer sends (orders, reports, records, rumors, tombstones, RPCs) is checked here,
in one place: an int in ``[0, MAX_GENERATION]`` (a huge one would fence every later shepherd,
or overflow msgpack when the name is submitted again at ``g + 1``). A termination may also
not reach more than ``TERMINATE_STEP`` above the newest generation this host knows of the
pool: a tombstone covers every generation up to its own, so a forged one far ahead would
poison the name for every resubmission to come.
"""

from __future__ import annotations

from typing import Final, TypeGuard

#: The largest generation accepted from the mesh: a signed 32-bit int, far above what any
#: pool reaches (one bump per takeover or unit moved) and far below msgpack's limits.
MAX_GENERATION: Final = 2**31 - 1
#: How far above the newest generation a host knows of a pool a termination may reach: room
#: for the bumps this host has not heard of yet, not for poisoning the name.
TERMINATE_STEP: Final = 1024


def is_generation(value: object) -> TypeGuard[int]:
    """An int (not a bool) in ``[0, MAX_GENERATION]``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GENERATION


def generation_refusal(value: object) -> str | None:
    """Why ``value`` is no generation, or None."""
    if is_generation(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return f"generation out of range (0 to {MAX_GENERATION})"
    return "generation is not an integer"


def termination_refusal(value: object, known: int) -> str | None:
    """Why a termination (RPC or tombstone) up to ``value`` is refused on a host whose
    newest generation of the pool is ``known`` (0: it knows nothing of it), or None."""
    problem = generation_refusal(value)
    if problem is not None:
        return problem
    assert isinstance(value, int)
    if value > max(known, 0) + TERMINATE_STEP:
        return (
            f"termination up to generation {value} is more than {TERMINATE_STEP} above "
            f"the newest this host knows ({known})"
        )
    return None
