"""The cluster's DHT: the ``kademlia`` package on sdmesh's sealed transport, hardened.

Pool records live on the k nodes closest to their key's location, authenticated under the
cluster key and versioned so a stale or foreign write never replaces a newer one::

    dht = Dht(node_id=node_id_for(member_name))
    await dht.start(("0.0.0.0", 7947), security)      # its own port; gossip has another
    await dht.bootstrap([("10.0.0.5", 7947)])          # the membership peers, DHT port
    stored = await dht.put("pool/web", descriptor_bytes, generation=3)
    record = await dht.get("pool/web")                # newest authenticated version, or None
    dht.stop()

Sans-IO cores: ``records`` (the accept rule), ``rtt`` (adaptive timeouts), ``eviction``,
``storage``, ``lookup``, ``wire``; drivers: ``sealed``, ``routing``, ``protocol``, ``crawl``,
``server`` (subclasses of the package's classes), and ``dht``, the API.
"""

from sdmesh.dht.config import DhtConfig
from sdmesh.dht.counters import DhtCounters
from sdmesh.dht.dht import Dht
from sdmesh.dht.ids import location_of, node_id_for
from sdmesh.dht.lookup import Contact
from sdmesh.dht.records import Decision, DhtRecord, RecordAuthority, RecordError, accept
from sdmesh.dht.rtt import RttConfig
from sdmesh.dht.state import DhtState, StateError

__all__ = [
    "Contact",
    "Decision",
    "Dht",
    "DhtConfig",
    "DhtCounters",
    "DhtRecord",
    "DhtState",
    "RecordAuthority",
    "RecordError",
    "RttConfig",
    "StateError",
    "accept",
    "location_of",
    "node_id_for",
]
