"""Allow ``python -m sdmesh``."""

from sdmesh.cli.main import main

main()
