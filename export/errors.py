"""The export package's error types: the CLI turns them into one line and an exit code.

`ExportError` (a ValueError) means bad input or an export that cannot be done (exit 2);
`ParityError` means the exported graph does not match PyTorch, so nothing was published (exit 1).
"""

from __future__ import annotations


class ExportError(ValueError):
    """The export cannot go on: a wrong flag, file, checkpoint or model. The message says the fix."""


class ParityError(ExportError):
    """The exported model does not match PyTorch; the message names the shape and the worst output."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report  # the ParityReport, for callers that want every number
