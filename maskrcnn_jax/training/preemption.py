"""Stopping on SIGTERM (preemption) or SIGINT (Ctrl-C) at a step every process agrees on, so the
loop can save a checkpoint and return normally (exit code 0).

One process: the first signal sets a flag the loop reads after each step; the handlers are then
reset, so a second Ctrl-C interrupts at once. Several processes: jax.distributed's preemption
sync manager catches SIGTERM and agrees with the other processes on the step to stop at
(`multihost_utils.reached_preemption_sync_point`); a SIGINT is turned into a SIGTERM for it.
"""

import os
import signal
import threading

import jax
from absl import logging
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Use as a context manager around the training loop; ask `should_stop(step)` after every step."""

    def __init__(self):
        self.received = None  # the signal number, once one arrived
        self.previous_handlers = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            logging.warning("not on the main thread: SIGTERM / SIGINT will not save a checkpoint")
            return self
        if jax.process_count() == 1:
            for signum in SIGNALS:
                self.previous_handlers[signum] = signal.signal(signum, self._on_signal)
        else:
            self.previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward_as_sigterm)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)
        self.previous_handlers = {}

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
        logging.warning("%s received: saving a checkpoint after this step, then stopping (again to abort)",
                        signal.Signals(signum).name)
        self._restore_handlers()

    def _forward_as_sigterm(self, signum, frame) -> None:
        self.received = signum
        logging.warning("SIGINT received: stopping every process at an agreed step after a checkpoint")
        self._restore_handlers()
        os.kill(os.getpid(), signal.SIGTERM)

    def should_stop(self, step: int) -> bool:
        """True when the loop must save and stop after `step` (the same answer on every process).

        With several processes it must be called at every step, by all of them.
        """
        if jax.process_count() == 1:
            return self.received is not None
        return multihost_utils.reached_preemption_sync_point(step)
