"""A one-line live status on a terminal; nothing at all when stderr is not a TTY."""

from __future__ import annotations

import sys
from typing import Callable


class StatusLine:
    def __init__(self, render: Callable[[], str], enabled: bool = True, stream=None):
        self.render = render
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()

    def update(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K" + self.render())
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
