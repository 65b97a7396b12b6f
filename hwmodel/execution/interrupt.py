"""Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (what ``timeout``, CI runners and schedulers send).

The command line turns both signals into :class:`Interrupted` in the main process; whoever runs workers
(:func:`hwmodel.execution.jobs.worker_pool`) stops them on the way out, keeps what is finished and re-raises with a
message saying what was saved. The CLI prints that one line and exits with 128 + the signal number (130 or
143), without a traceback. Light on purpose: the CLI imports it before any command.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class Interrupted(Exception):
    """The run was stopped by a signal; ``str()`` says what was kept, ``exit_status`` is 128 + signal."""

    def __init__(self, signum: int, message: str = "interrupted"):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def with_message(self, message: str) -> "Interrupted":
        return Interrupted(self.signum, message)


def _raise_interrupted(signum: int, _frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise :class:`Interrupted` in the main thread."""
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt:  # a SIGINT delivered before the handler was installed, or re-raised by a library
        raise Interrupted(signal.SIGINT) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
