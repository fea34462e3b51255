"""The one exception type a user's input can cause; command lines print it in one line and exit 2."""


class AttentionSamplingError(Exception):
    """Bad input from the user: a file, a folder or a flag. The message names it."""


def one_line(error):
    """An exception as 'Type: message' on one line (decoders put newlines in their messages)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
