"""The one exception type a user's input can cause; command lines print it in one line and exit 2."""


class AttentionSamplingError(Exception):
    """Bad input from the user: a file, a folder or a flag. The message names it."""
