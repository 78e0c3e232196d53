"""SIGTERM and Ctrl-C stop the in-process command at a safe point, not in whatever line runs.

Python's default for SIGTERM (`docker stop`, a service manager) ends the process at once and
leaves its MLflow run RUNNING. Ctrl-C's KeyboardInterrupt lands in any line, also inside an
MLflow store's commit, whose SQLite lock then blocks marking the run. With `on_signals(defer=True)`
a signal only asks to stop: the trainer stops between two steps (`requested`), the pipeline between
two steps (`check`), and a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from vae_model.errors import Stopped

_asked: signal.Signals | None = None
_defer = False


def requested() -> bool:
    """Whether a signal asked the command to stop."""
    return _asked is not None


def check() -> None:
    """Raise Stopped where a signal asked to stop."""
    if _asked is not None:
        raise Stopped(_asked.name)


def stopped_by() -> signal.Signals:
    """The signal that stopped the command (Ctrl-C's SIGINT when none was caught here)."""
    return _asked or signal.SIGINT


def _ask(signum: int, frame: Any) -> None:
    global _asked
    now = _asked is not None or not _defer
    _asked = signal.Signals(signum)
    if now:
        raise Stopped(_asked.name)


@contextlib.contextmanager
def on_signals(defer: bool) -> Iterator[None]:
    """SIGTERM and SIGINT stop the command for the duration: at the next `check` or trainer step
    where `defer`, else at once (as Ctrl-C does by default)."""
    global _asked, _defer
    _asked, _defer = None, defer
    previous = {sig: signal.signal(sig, _ask) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
