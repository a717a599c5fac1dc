"""The wearer's own privacy: objects by example, 3D volumes, places and zones (see layer.py)."""
