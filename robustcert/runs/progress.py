"""Progress of a long command on stderr: a bar on a terminal, plain lines in a log.

On a terminal (stderr a TTY) :func:`progress_bar` is tqdm's bar (done/total, rate, ETA). When
stderr is a file or a pipe (``nohup``, a batch job's log, CI), a bar would be one endless line of
carriage returns, so a run prints a plain newline-ended line instead: at least
every :data:`INTERVAL` seconds while it works (also while one slow input is being certified: a
background thread writes the lines), and a final line (a run shorter than the interval prints
nothing, as a terminal's bar vanishes)::

    certify: 12/40 inputs (30%), 0.21 inputs/s, 2.1e+04 samples/s, elapsed 57 s, ETA 2 min 13 s
    certify: 40/40 inputs in 3 min 10 s (0.21 inputs/s)

``ROBUSTCERT_PROGRESS_SECONDS`` sets the interval (0: a line at every step). ``show=False`` (the
commands' ``--quiet``) prints nothing at all.
"""
from __future__ import annotations

import os
import sys
import threading
import time

#: Seconds between two progress lines in a log (``ROBUSTCERT_PROGRESS_SECONDS`` overrides it).
INTERVAL = 10.0


def progress_interval() -> float:
    """The interval between progress lines in a log: ``ROBUSTCERT_PROGRESS_SECONDS`` or :data:`INTERVAL`."""
    try:
        return max(0.0, float(os.environ.get("ROBUSTCERT_PROGRESS_SECONDS", INTERVAL)))
    except ValueError:
        return INTERVAL


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 10 s``, ``2 h 05 min``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogProgress:
    """tqdm's interface (``update``, ``set_postfix``, ``n``, a context manager) printing plain lines.

    Args:
        total: the work to do, in ``unit``s.
        unit: what is counted (``input``, ``step``, ``episode``).
        initial: work an earlier run did (resume): counted in done/total, not in the rate.
        what: the line's prefix (the command).
        interval: seconds between lines (0: one line per update).
        stream: where lines go (stderr).
    """

    def __init__(self, total: int, unit: str = "input", initial: int = 0, what: str = "progress",
                 interval: float | None = None, stream=None):
        self.total, self.unit, self.initial, self.n, self.what = total, unit, initial, initial, what
        self.interval = progress_interval() if interval is None else interval
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: dict = {}
        self.started = time.monotonic()
        self._stop, self._print_lock, self._closed, self.lines = threading.Event(), threading.Lock(), False, 0
        self._thread = None
        if self.interval > 0:
            self._thread = threading.Thread(target=self._tick, name="robustcert-progress", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def _line(self, text: str) -> None:
        with self._print_lock:
            self.lines += 1
            try:
                print(text, file=self.stream, flush=True)
            except (OSError, ValueError):  # a closed log: progress is not worth failing a run for
                pass

    def _rate(self) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return elapsed, (self.n - self.initial) / elapsed

    def report(self) -> None:
        """Print one progress line now (done/total, rate, the postfix, elapsed, ETA)."""
        elapsed, rate = self._rate()
        parts = [f"{self.what}: {self.n}/{self.total} {self.unit}s"
                 + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts.append(f"{rate:.3g} {self.unit}s/s" if rate > 0 else f"first {self.unit} running")
        parts += [f"{value} {key[:-len('_per_s')].replace('_', ' ')}/s" if key.endswith("_per_s") else f"{key} {value}"
                  for key, value in self.postfix.items()]
        parts.append(f"elapsed {duration(elapsed)}")
        if rate > 0 and self.total:
            parts.append(f"ETA {duration((self.total - self.n) / rate)}")
        self._line(", ".join(parts))

    def update(self, count: int = 1) -> None:
        self.n += count
        if self.interval == 0:
            self.report()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = {key: value for key, value in values.items()}

    def close(self, stopped: bool = False) -> None:
        """Stop the lines and print the final one (once), if any line was printed: a run shorter
        than the interval stays silent, as a terminal's bar would vanish."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        elapsed, rate = self._rate()
        if not self.lines:
            return
        if stopped:
            self._line(f"{self.what}: stopped at {self.n}/{self.total} {self.unit}s after {duration(elapsed)}")
        else:
            self._line(f"{self.what}: {self.n}/{self.total} {self.unit}s in {duration(elapsed)}"
                       + (f" ({rate:.3g} {self.unit}s/s)" if rate > 0 else ""))

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(stopped=kind is not None)


class NoProgress:
    """The progress of a quiet run: counts, prints nothing."""

    def __init__(self, total: int = 0, initial: int = 0):
        self.total, self.n = total, initial

    def update(self, count: int = 1) -> None:
        self.n += count

    def set_postfix(self, refresh: bool = True, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int, show: bool, unit: str = "input", initial: int = 0, what: str = "progress"):
    """Progress on stderr: tqdm's bar on a terminal, :class:`LogProgress` lines otherwise, nothing
    unless ``show``.

    Args:
        total: the work to do, in ``unit``s.
        show: False for ``--quiet``.
        unit: what is counted.
        initial: work done by an earlier run (resume), not counted in the rate and ETA.
        what: the command, prefixed to log lines.
    """
    if not show:
        return NoProgress(total, initial)
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return LogProgress(total, unit, initial, what)
