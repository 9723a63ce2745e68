"""High availability without running a VM twice (docs/ha.md).

* ``timing``: the lease durations and the arithmetic that makes them safe.
* ``lease``: the sans-IO lease core (holder, voter, reclaimer); ``lease_wire`` its RPC
  messages; ``lease_service`` its asyncio driver in the agent.
* ``policy``: which VMs a lease protects (``restart``, ``isolation "stop"|"keep"``).
* ``guard``: the fence guard's sans-IO core; ``guard_main`` the ``sdmesh-fence-guard``
  process, ``guard_wire`` and ``guard_client`` its socket protocol.
* ``simulate``: a discrete-event check of the lease promise under cuts, kills and drift.
"""
