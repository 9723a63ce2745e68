"""High availability without running a VM twice: leases, self-fencing, the fence guard.

* ``sdmesh.ha.timing``: the lease durations and the arithmetic that makes them safe.
* ``sdmesh.ha.lease``: the sans-IO lease core (holder, voter, reclaimer).
* ``sdmesh.ha.simulate``: a discrete-event check of the lease promise under faults.
"""
