"""The one exception type users see.

Anything that is the user's fault (a bad path, a malformed file, an impossible option)
raises `PearError` with a message that names the file, field or value and what was
expected. The CLI prints the message and exits with code 2, no traceback.

`PearError` is a `ValueError`, so code written against the library's earlier contract
(`except ValueError`) still catches every user error; Pear itself raises only
`PearError` for them.
"""


class PearError(ValueError):
    """A user-facing error: the message alone must tell the user what to fix."""


class BackboneMismatch(PearError):
    """A task checkpoint was given a backbone with other weights than it was trained on."""
