"""The data a run reads: VTAB-1k task folders (`vtab`), images as the model sees them
(`images`), and the built-in datasets written into that format offline (`builders`)."""
