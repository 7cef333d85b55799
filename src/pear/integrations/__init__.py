"""Pear in other libraries' training loops; each integration imports its library only when imported itself."""
