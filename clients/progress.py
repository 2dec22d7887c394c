"""One progress line on stderr for long jobs (train, infer, eval).

On a terminal it redraws in place at most 4 times a second; elsewhere (CI logs) it writes a line
every 10 s and a final one, so a log shows progress without thousands of lines.
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """`desc 120/500 [#####...........] 24% 3.40 img/s failed 2 loss 0.31`."""

    def __init__(self, total: int, desc: str, unit: str = "img", stream: Optional[TextIO] = None,
                 enabled: bool = True, width: int = 20) -> None:
        self.total, self.desc, self.unit, self.width = total, desc, unit, width
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.done = self.failed = 0
        self.first: Optional[int] = None  # items done before this run (a resume) are not in the rate
        self.postfix = ""
        self.start = time.monotonic()
        self.last_draw = 0.0

    def update(self, ok: bool = True, postfix: str = "") -> None:
        """One more item finished."""
        self.set(self.done + 1, self.failed + (not ok), postfix)

    def set(self, done: int, failed: int = 0, postfix: str = "") -> None:
        """Absolute progress: `done` of `total` items, `failed` of them failed."""
        if self.first is None:
            self.first = done - 1 if done > 0 else 0
        self.done, self.failed, self.postfix = done, failed, postfix
        now = time.monotonic()
        final = done >= self.total
        if not self.enabled or (not final and now - self.last_draw < (0.25 if self.tty else 10.0)):
            return
        self.last_draw = now
        line = self.line(now)
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()

    def __call__(self, done: int, total: int, failed: int = 0) -> None:
        """The (accounted, total, failed) callback form the eval harness reports through."""
        self.total = total
        self.set(done, failed)

    def line(self, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        frac = self.done / max(self.total, 1)
        fill = int(self.width * frac)
        rate = (self.done - (self.first or 0)) / max(now - self.start, 1e-9)
        text = (f"{self.desc} {self.done}/{self.total} [{'#' * fill}{'.' * (self.width - fill)}] "
                f"{100 * frac:3.0f}% {rate:.2f} {self.unit}/s")
        if self.failed:
            text += f" failed {self.failed}"
        return text + (f" {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        """Write the final line if it was not written yet (e.g. a job that stopped early)."""
        if self.enabled and self.done < self.total:
            line = self.line()
            self.stream.write(("\r" + line + "\n") if self.tty else line + "\n")
            self.stream.flush()
