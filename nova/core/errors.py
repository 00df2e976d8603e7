"""The one exception type the CLI turns into a single sentence instead of a traceback."""


class NovaError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do, in one sentence."""
