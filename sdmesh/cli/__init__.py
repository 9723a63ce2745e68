"""The ``sdmesh`` command line (click)."""
