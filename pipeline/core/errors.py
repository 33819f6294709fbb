"""The one exception type for problems a user can fix (bad file, bad parameter)."""


class PipelineError(Exception):
    """A user-facing problem: its message is one line naming the file or parameter and the fault.

    The CLI prints the message alone on stderr and exits non-zero; any other exception is a bug
    and keeps its traceback.
    """
