"""The one exception type serving raises: a message that says what is wrong and how to fix it.

The CLI edge (`serving/__main__.py`) turns it into one error line and a non-zero exit code.
"""


class ServingError(RuntimeError):
    """Starting, stopping, reloading or querying the Triton server failed."""
