"""Progress of the benchmarks on stderr, their kernel warm-up, and the
pause before each timed sample.

On a terminal, one status line is redrawn in place (carriage return and an
erase-line escape). Anywhere else (stderr sent to a file or a pipe) those
would make the log one unreadable line, so there the live status is left
out and each finished step is a plain line of its own.
"""

from __future__ import annotations

import sys
import time

from .. import dispatch

_CLEAR = "\r\x1b[K"  # back to the start of the line, erase it

# Pause before each sample: thread pools (OpenMP in PyTorch and Numba, ONNX
# Runtime's) keep spinning for tens of milliseconds after a call, and would
# otherwise steal the cores from the next engine timed. 50 ms leaves every
# pool asleep; each sample then starts with one untimed call that wakes the
# engine's own threads, so every engine is timed warm, as in a serving loop.
PAUSE = 0.05


def is_terminal(stream):
    """Whether ``stream`` is a terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """``[done/total] text`` on stderr.

    Parameters
    ----------
    total : int
        Steps in all (0: no counter).
    enabled : bool
        False: print nothing (``--no-progress``).
    """

    def __init__(self, total=0, enabled=True):
        self.stream = sys.stderr  # read now: pytest's capsys replaces it per test
        self.total, self.done, self.enabled = total, 0, enabled
        self.live = enabled and is_terminal(self.stream)

    def _text(self, text):
        return f"[{self.done}/{self.total}] {text}" if self.total else text

    def show(self, text):
        """What runs now: the live line on a terminal; nothing in a log."""
        if self.live:
            self.stream.write(_CLEAR + self._text(text))
            self.stream.flush()

    def status(self, text):
        """A stage starting (e.g. compiling): the live line on a terminal, a
        plain line in a log."""
        if self.live:
            self.show(text)
        else:
            self.line(text)

    def step(self, text=""):
        """A step finished: the live line on a terminal, a plain line in a log."""
        self.done += 1
        if self.live:
            self.show(text)
        else:
            self.line(self._text(text))

    def line(self, text):
        """A line that stays (replacing the live one)."""
        if self.enabled:
            self.stream.write((_CLEAR if self.live else "") + text + "\n")
            self.stream.flush()

    def close(self):
        if self.live:
            self.stream.write(_CLEAR)
            self.stream.flush()


def warm(kinds, parallel, enabled=True):
    """Compile (or load from Numba's cache) the float32 ``cpu`` kernels of
    ``kinds`` (see :func:`fastrnn.dispatch.warmup`) before anything is
    timed, with a progress line saying so: on a cold cache this is most of
    a first run, and no timing waits for a compile. Returns the seconds it
    took."""
    progress = Progress(0, enabled)
    progress.status("compiling kernels (first run only) ...")
    t0 = time.perf_counter()
    dispatch.warmup(dtypes=("float32",), parallel=parallel, kinds=kinds)
    seconds = time.perf_counter() - t0
    progress.line(f"kernels ready in {seconds:.1f} s (a first run compiles them into Numba's "
                  "cache, later runs load them)")
    return seconds
