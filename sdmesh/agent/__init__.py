"""The per-host agent (``sdmesh join``): mesh membership, DHT and the control API."""
