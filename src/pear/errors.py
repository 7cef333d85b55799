"""The one exception type users see.

Anything that is the user's fault (a bad path, a malformed file, an impossible option)
raises `PearError` with a message that names the file, field or value and what was
expected. The CLI prints the message and exits with code 2, no traceback.
"""


class PearError(Exception):
    """A user-facing error: the message alone must tell the user what to fix."""
