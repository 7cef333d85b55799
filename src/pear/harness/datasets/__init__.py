"""The data a run reads: VTAB-1k task folders (`vtab`) and the built-in datasets written into
that format offline (`builders`)."""
