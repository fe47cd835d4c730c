"""Progress that suits where it goes.

On a terminal every long step shows a ``tqdm`` bar. Written to a file or a CI log (stderr is
not a terminal) a bar's carriage-return frames and cursor escapes would fill the log, so
there each bar becomes plain lines instead: one when it finishes (what ran, how many steps,
how long, its last values) and, for a step that runs long, at most one line a minute while
it runs. ``progress=False`` (``--quiet``) shows nothing either way.

``BUNLEARN_PROGRESS=bars`` or ``=lines`` overrides the choice (e.g. ``lines`` under a
terminal multiplexer that records its output).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TextIO

from tqdm.auto import tqdm

from .distributed import is_main_process

__all__ = ["LineProgress", "ProgressBar", "on_terminal", "progress_bar"]


class ProgressBar(Protocol):
    """What the library uses of a progress bar (``tqdm`` and :class:`LineProgress` have it)."""

    def update(self, n: float = 1) -> bool | None:
        """Count ``n`` more steps done."""
        ...

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        """Show ``name=value`` pairs beside the bar."""
        ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Show ``s`` beside the bar."""
        ...

    def close(self) -> None:
        """End the bar."""
        ...


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress written to ``stream`` (default: stderr) should be drawn as bars.

    True on a terminal and in a notebook (whose widgets are not text frames); false on a
    file, a pipe or a CI log. ``BUNLEARN_PROGRESS=bars`` / ``lines`` decides instead.

    Example:
        >>> import io
        >>> on_terminal(io.StringIO())
        False
    """
    forced = os.environ.get("BUNLEARN_PROGRESS", "").strip().lower()
    if forced in {"bars", "lines"}:
        return forced == "bars"
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed stream
        return False


class LineProgress:
    """A progress bar for a file or a log: plain lines, never carriage returns.

    One line when it closes (``bunlearn: DESC: N/TOTAL UNIT in S s, postfix``) and, while it
    runs, at most one line every ``every`` seconds. Iterating over it yields the iterable's
    items, counts them and closes it after the last.

    Args:
        iterable: the items to go through (or ``None``; then call :meth:`update`).
        desc: what runs.
        total: the number of steps (default: the iterable's length, when it has one).
        unit: what a step is.
        file: where the lines go (default: stderr at the time of writing).
        every: seconds between lines while it runs.

    Example:
        >>> import io
        >>> log = io.StringIO()
        >>> for _ in LineProgress(range(3), desc="counting", unit="item", file=log):
        ...     pass
        >>> log.getvalue().startswith("bunlearn: counting: 3/3 items in ")
        True
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str = "",
        total: float | None = None,
        unit: str = "it",
        file: TextIO | None = None,
        every: float = 60.0,
    ) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.file, self.every = file, every
        self.n: float = 0
        self.postfix = ""
        self.start = self.last_line = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()  # as tqdm does at the end of the items

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> bool | None:
        """Count ``n`` steps; write a line when the last one is ``every`` seconds old."""
        self.n += n
        now = time.perf_counter()
        if now - self.last_line >= self.every:
            self.last_line = now
            self._line("after")
        return None

    def set_postfix(self, ordered_dict: Any = None, refresh: bool = True, **kwargs: Any) -> None:
        """Remember ``name=value`` pairs for the next line."""
        values = {**dict(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Remember ``s`` for the next line."""
        self.postfix = str(s)

    def write(self, s: str, file: TextIO | None = None, end: str = "\n") -> None:
        """Write a message line (to stdout unless ``file`` is given, as ``tqdm.write``)."""
        print(s, end=end, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        """Write the closing line (once)."""
        if not self.closed:
            self.closed = True
            self._line("in")

    def _line(self, when: str) -> None:
        count = f"{self.n:g}" if self.total is None else f"{self.n:g}/{self.total:g}"
        unit = self.unit if self.unit.endswith("s") or self.n == 1 else f"{self.unit}s"
        seconds = time.perf_counter() - self.start
        rest = f", {self.postfix}" if self.postfix else ""
        text = f"bunlearn: {self.desc}: {count} {unit} {when} {seconds:.1f} s{rest}"
        print(text, file=self.file or sys.stderr, flush=True)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    show: bool = True,
    leave: bool = True,
) -> tqdm[Any] | LineProgress:
    """A bar on a terminal, plain lines on a file or log (:class:`LineProgress`), nothing
    when ``show`` is false or off the main process under torchrun.

    Args:
        iterable: the items to go through (or ``None``; then call ``update``).
        desc: what runs.
        total: the number of steps.
        unit: what a step is.
        show: whether to show progress at all (``--quiet`` turns it off).
        leave: whether a terminal bar stays on screen when done.

    Returns:
        An object with ``tqdm``'s ``update``, ``set_postfix``, ``set_postfix_str``, ``close``,
        iteration and ``with`` (see :class:`ProgressBar`).

    Example:
        >>> sum(progress_bar(range(4), desc="adding", show=False))
        6
    """
    if not show or not is_main_process():
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=True)
    if on_terminal():
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave)
    return LineProgress(iterable, desc=desc, total=total, unit=unit)
