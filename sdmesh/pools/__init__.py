"""Pools across the mesh: placement, ownership (shepherds), and their records."""
