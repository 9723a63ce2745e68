"""Leaf components: what VirtualMachine, the storage backends, Shell and Scheduler do on a host.

Each class implements the runner's ``Component`` protocol (deploy, start, terminate) on top of
the hypervisor boundary (sdmesh.hypervisor) and the storage backends (sdmesh.storage).
"""
