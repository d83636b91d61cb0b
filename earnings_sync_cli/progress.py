"""What a long command is doing, on one line of a terminal: shown while it works, wiped before results print."""

from __future__ import annotations

from typing import IO


class Progress:
    """A one-line progress display on a terminal; silent otherwise (a pipe or file gets only results)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None

    def show(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def done(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()
