"""One exception type for bad input: its message is one line naming the problem and the fix."""


class HarnessError(Exception):
    """A user-facing error; CLIs print `error: <message>` and exit with status 2."""
