"""Deterministic discrete-event simulation of many membership cores on a lossy network."""

from sdmesh.sim.network import Network, NetworkConfig
from sdmesh.sim.simulator import Counters, Listener, SimNode, Simulator

__all__ = ["Counters", "Listener", "Network", "NetworkConfig", "SimNode", "Simulator"]
